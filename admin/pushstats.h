/* Push figures as /api/push shows them (admin.md): per worker and pool-wide
 * S = {"routed", ..., "failed", "latency_ms": {"p50","p90","p99","max"}},
 * the counters in the order of RT_PUSH_RESULTS (router/rt_push.h) and the
 * latency summary by nearest rank over commit -> PUSH_ACK samples in ms.
 * Pure (jansson only); the Redis side is in api_push.c. */
#ifndef ADM_PUSHSTATS_H
#define ADM_PUSHSTATS_H

#include "gateway/counters.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A growable list of latency samples (ms). Zero-initialise. */
struct adm_latencies {
	double *v;
	size_t n, cap;
	int failed; /* an allocation failed: some samples are missing */
};

void adm_lat_add(struct adm_latencies *l, double ms);
void adm_lat_add_all(struct adm_latencies *l, const struct adm_latencies *from);
void adm_lat_free(struct adm_latencies *l);

/* The nearest-rank percentile p (1..100) of n ascending samples: the
 * smallest sample with at least p% of the samples at or below it. n > 0. */
double adm_percentile(const double *sorted, size_t n, int p);

/* {"p50","p90","p99","max"} of l (sorted in place), each null when l is
 * empty. Whole milliseconds are written as integers. */
json_t *adm_latency_json(struct adm_latencies *l);

/* S for these counters and samples; l may be NULL (latencies all null). */
json_t *adm_push_stats_json(const uint64_t counts[RT_PUSH_N], struct adm_latencies *l);

/* Reads the counters of a P pushstats:NAME hash (a JSON object of strings,
 * see redis_json.h) into counts; a missing or bad field counts 0. */
void adm_push_counts_from_hash(const json_t *hash, uint64_t counts[RT_PUSH_N]);

/* A number for JSON: an integer when ms is whole, else a real. */
json_t *adm_json_ms(double ms);

#endif
