/* GET /metrics: the Prometheus text exposition of every worker's counters,
 * gauges and histograms, rendered from the tables of gateway/counters.h
 * (GW_COUNTERS, GW_GAUGES, GW_HISTOGRAMS, GW_HIST_BUCKETS), proto/qs_codec.h
 * (QS_ERRORS) and router/rt_push.h (RT_PUSH_RESULTS), so a metric is
 * declared once and rendered from one place.
 * adm_metrics_render is pure (atomics loaded relaxed) and unit-tested. */
#ifndef ADM_METRICS_H
#define ADM_METRICS_H

#include "gateway/counters.h"

#include <stdint.h>

struct evbuffer;
struct adm_req;

/* One worker as the renderer sees it. */
struct adm_metrics_worker {
	const char *name;
	const struct gw_counters *counters;
	const struct gw_gauges *gauges;
};

/* Node-level gauges: store_up and redis_up are 1 only while the main
 * thread's own connection and every local worker's are up (what /healthz
 * checks); listeners_paused counts the listeners (workers' and the admin
 * port's) whose accept is paused for want of descriptors (accept_guard.h). */
struct adm_metrics_node {
	int store_up;
	int redis_up;
	int64_t started_ms;
	int listeners_paused;
	int64_t backlog_pending;   /* -1: not read yet */
	int64_t backlog_oldest_ms; /* created_ms of the oldest pending message; 0: none */
	int64_t now_ms;            /* wall clock, for the age */
};

/* Appends the exposition of n workers and the node to out. Returns 0, or -1
 * when out could not grow. */
int adm_metrics_render(struct evbuffer *out, const struct adm_metrics_worker *w, int n,
                       const struct adm_metrics_node *node) __attribute__((warn_unused_result));

void adm_get_metrics(struct adm_req *r);

#endif
