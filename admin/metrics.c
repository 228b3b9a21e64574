/* Prometheus exposition; see metrics.h.
 *
 * Every family is written whole (HELP, TYPE, then all its samples) before the
 * next one begins, as the text format requires: GW_COUNTERS entries that share
 * a metric name (qagw_ignored_total) are adjacent in their table, and the
 * renderer writes HELP/TYPE only when the name changes. */
#include "admin/metrics.h"

#include "admin/http.h"
#include "common/clock.h"
#include "gateway/node.h"
#include "proto/qs_codec.h"

#include <event2/buffer.h>
#include <stdatomic.h>
#include <string.h>

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* Worker names are [a-z0-9._-] (config.c); escape anyway, per the format. */
static void label_value(struct evbuffer *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			evbuffer_add_printf(out, "\\%c", *v);
		else if (*v == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, v, 1);
	}
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{worker="W"[,extra]} and a space; extra is "" or `key="value"`. */
static void sample(struct evbuffer *out, const char *name, const char *worker, const char *extra)
{
	evbuffer_add_printf(out, "%s{worker=\"", name);
	label_value(out, worker);
	evbuffer_add_printf(out, "\"%s%s} ", *extra ? "," : "", extra);
}

static void counters(struct evbuffer *out, const struct adm_metrics_worker *w, int n)
{
	const char *last = "";
#define ADM_COUNTER(f, metric, label, help)                                                        \
	if (strcmp(last, metric) != 0)                                                             \
		family(out, metric, "counter", help);                                              \
	last = metric;                                                                             \
	for (int i = 0; i < n; i++) {                                                              \
		sample(out, metric, w[i].name, label);                                             \
		evbuffer_add_printf(out, "%llu\n", (unsigned long long)LOAD(w[i].counters->f));    \
	}
	GW_COUNTERS(ADM_COUNTER)
#undef ADM_COUNTER

	family(out, "qagw_errors_total", "counter", "ERROR frames sent, by error name");
	for (int i = 0; i < n; i++)
		for (int code = QS_OK + 1; code < QS_E_END; code++) {
			char label[64];
			snprintf(label, sizeof(label), "code=\"%s\"", qs_err_name(code));
			sample(out, "qagw_errors_total", w[i].name, label);
			evbuffer_add_printf(out, "%llu\n",
			                    (unsigned long long)LOAD(w[i].counters->errors[code]));
		}

	family(out, "qagw_push_total", "counter",
	       "Pushes by result: routed, then one of coalesced, sent, suppressed_off_primary, "
	       "no_session, failed; acked when a sent PUSH is answered");
	for (int i = 0; i < n; i++)
		for (int res = 0; res < RT_PUSH_N; res++) {
			char label[64];
			snprintf(label, sizeof(label), "result=\"%s\"", rt_push_result_names[res]);
			sample(out, "qagw_push_total", w[i].name, label);
			evbuffer_add_printf(out, "%llu\n",
			                    (unsigned long long)LOAD(w[i].counters->push[res]));
		}
}

static void gauges(struct evbuffer *out, const struct adm_metrics_worker *w, int n)
{
#define ADM_GAUGE(f, metric, help)                                                                 \
	family(out, metric, "gauge", help);                                                        \
	for (int i = 0; i < n; i++) {                                                              \
		sample(out, metric, w[i].name, "");                                                \
		evbuffer_add_printf(out, "%d\n", LOAD(w[i].gauges->f));                            \
	}
	GW_GAUGES(ADM_GAUGE)
#undef ADM_GAUGE
}

static void histogram(struct evbuffer *out, const char *name, const char *worker,
                      const struct gw_histogram *h)
{
	char metric[128], le[48];
	uint64_t cum = 0;
	snprintf(metric, sizeof(metric), "%s_bucket", name);
	for (int b = 0; b < GW_HIST_N; b++) {
		cum += LOAD(h->bucket[b]);
		snprintf(le, sizeof(le), "le=\"%g\"", gw_hist_bounds[b]);
		sample(out, metric, worker, le);
		evbuffer_add_printf(out, "%llu\n", (unsigned long long)cum);
	}
	/* Observations above the last bound are only in count; with relaxed
	 * loads count may also lag a bucket: +Inf never goes below cum. */
	uint64_t count = LOAD(h->count);
	if (count < cum)
		count = cum;
	sample(out, metric, worker, "le=\"+Inf\"");
	evbuffer_add_printf(out, "%llu\n", (unsigned long long)count);
	snprintf(metric, sizeof(metric), "%s_sum", name);
	sample(out, metric, worker, "");
	evbuffer_add_printf(out, "%.6f\n", (double)LOAD(h->sum_us) / 1e6);
	snprintf(metric, sizeof(metric), "%s_count", name);
	sample(out, metric, worker, "");
	evbuffer_add_printf(out, "%llu\n", (unsigned long long)count);
}

static void histograms(struct evbuffer *out, const struct adm_metrics_worker *w, int n)
{
#define ADM_HIST(f, metric, help)                                                                  \
	family(out, metric, "histogram", help);                                                    \
	for (int i = 0; i < n; i++)                                                                \
		histogram(out, metric, w[i].name, &w[i].counters->f);
	GW_HISTOGRAMS(ADM_HIST)
#undef ADM_HIST
}

int adm_metrics_render(struct evbuffer *out, const struct adm_metrics_worker *w, int n,
                       const struct adm_metrics_node *node)
{
	size_t before = evbuffer_get_length(out);
	family(out, "qagw_build_info", "gauge", "This node's qagw version (the value is 1)");
	evbuffer_add_printf(out, "qagw_build_info{version=\"%s\"} 1\n", QAGW_VERSION);
	if (node->backlog_pending >= 0) {
		family(out, "qagw_pending_messages", "gauge",
		       "Messages pending in the store, for every recipient (as the lifecycle job "
		       "last read it, once a run)");
		evbuffer_add_printf(out, "qagw_pending_messages %lld\n",
		                    (long long)node->backlog_pending);
		int64_t age =
		    node->backlog_oldest_ms > 0 ? node->now_ms - node->backlog_oldest_ms : 0;
		family(out, "qagw_oldest_pending_age_seconds", "gauge",
		       "Age of the oldest pending message in the store (0: none pending)");
		evbuffer_add_printf(out, "qagw_oldest_pending_age_seconds %.3f\n",
		                    (double)(age > 0 ? age : 0) / 1000.0);
	}
	family(out, "qagw_store_up", "gauge",
	       "1 while this node's store connections (admin and every worker) are up");
	evbuffer_add_printf(out, "qagw_store_up %d\n", node->store_up ? 1 : 0);
	family(out, "qagw_redis_up", "gauge",
	       "1 while this node's Redis connections (admin and every worker) are up");
	evbuffer_add_printf(out, "qagw_redis_up %d\n", node->redis_up ? 1 : 0);
	family(out, "qagw_listeners_paused", "gauge",
	       "Listeners (workers' and the admin port's) not accepting because descriptors or "
	       "memory ran out (EMFILE, ENFILE, ENOBUFS, ENOMEM); retried every 250 ms");
	evbuffer_add_printf(out, "qagw_listeners_paused %d\n", node->listeners_paused);
	if (node->started_ms > 0) {
		family(out, "qagw_start_time_seconds", "gauge",
		       "When this node started (Unix time)");
		evbuffer_add_printf(out, "qagw_start_time_seconds %lld.%03lld\n",
		                    (long long)(node->started_ms / 1000),
		                    (long long)(node->started_ms % 1000));
	}
	gauges(out, w, n);
	counters(out, w, n);
	histograms(out, w, n);
	/* evbuffer_add_printf fails silently: an exposition that did not grow
	 * at all is the sign that memory ran out. */
	return evbuffer_get_length(out) > before ? 0 : -1;
}

void adm_get_metrics(struct adm_req *r)
{
	struct gw_node *node = r->node;
	struct adm_metrics_worker w[GW_MAX_WORKERS];
	struct adm_metrics_node nm = {adm_store_up(node),
	                              adm_redis_up(node),
	                              node->started_ms,
	                              r->srv ? LOAD(r->srv->listener_paused) : 0,
	                              -1,
	                              0,
	                              gw_wall_ms()};
	for (int i = 0; i < node->n_workers; i++) {
		w[i].name = node->workers[i]->wc->name;
		w[i].counters = &node->workers[i]->counters;
		w[i].gauges = &node->workers[i]->gauges;
		nm.store_up &= LOAD(w[i].gauges->store_up) != 0;
		nm.redis_up &= LOAD(w[i].gauges->redis_up) != 0;
		nm.listeners_paused += LOAD(w[i].gauges->listener_paused) != 0;
		int64_t pending = LOAD(w[i].gauges->backlog_pending);
		if (pending >= 0 && nm.backlog_pending < 0) { /* the lifecycle job's worker */
			nm.backlog_pending = pending;
			nm.backlog_oldest_ms = LOAD(w[i].gauges->backlog_oldest_ms);
		}
	}
	struct evbuffer *out = evbuffer_new();
	if (!out || adm_metrics_render(out, w, node->n_workers, &nm) != 0) {
		if (out)
			evbuffer_free(out);
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	size_t len = evbuffer_get_length(out);
	adm_reply_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8", evbuffer_pullup(out, -1),
	              len);
	evbuffer_free(out);
}
