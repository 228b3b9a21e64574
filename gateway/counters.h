/* Per-worker counters, gauges and histograms, declared once here (X-macros)
 * so that the admin port renders /metrics from these tables; the counters by
 * ERROR code and by push result are sized and labelled from their own tables
 * (proto/qs_codec.h QS_ERRORS, router/rt_push.h RT_PUSH_RESULTS).
 * Workers update their own with relaxed atomics; other threads only load. */
#ifndef GW_COUNTERS_H
#define GW_COUNTERS_H

#include "proto/qs_codec.h"
#include "router/rt_push.h"

#include <stdatomic.h>
#include <stdint.h>

/* Counters: X(field, metric name, label ("" or key="value"), help).
 * Each renders as NAME{worker="W"[,label]} VALUE. */
#define GW_COUNTERS(X)                                                                             \
	X(messages_stored, "qagw_messages_stored_total", "", "Messages committed to the store")    \
	X(messages_duplicate, "qagw_messages_duplicate_total", "", "Uploads answered duplicate")   \
	X(messages_refused, "qagw_messages_refused_total", "",                                     \
	  "Uploads refused (invalid, expired, too_large, quota, conflict)")                        \
	X(messages_delivered, "qagw_messages_delivered_total", "",                                 \
	  "Messages sent in DELIVER frames")                                                       \
	X(messages_acked, "qagw_messages_acked_total", "",                                         \
	  "Messages acknowledged by their recipient")                                              \
	X(ignored_deliver_ack, "qagw_ignored_total", "kind=\"deliver_ack\"",                       \
	  "DELIVER_ACK and STATUS entries ignored (not this agent's, or already final)")           \
	X(ignored_status, "qagw_ignored_total", "kind=\"status\"",                                 \
	  "DELIVER_ACK and STATUS entries ignored (not this agent's, or already final)")           \
	X(statuses_applied, "qagw_statuses_applied_total", "", "STATUS entries recorded")          \
	X(sessions_accepted, "qagw_sessions_accepted_total", "", "Connections accepted")           \
	X(refused_pending_hello, "qagw_hello_refused_total", "reason=\"max_pending_hello\"",       \
	  "Connections and HELLOs answered ERROR overloaded, by the limit that refused them")      \
	X(refused_pending_hello_per_ip, "qagw_hello_refused_total",                                \
	  "reason=\"max_pending_hello_per_ip\"",                                                   \
	  "Connections and HELLOs answered ERROR overloaded, by the limit that refused them")      \
	X(refused_max_sessions, "qagw_hello_refused_total", "reason=\"max_sessions\"",             \
	  "Connections and HELLOs answered ERROR overloaded, by the limit that refused them")      \
	X(refused_auth_backoff, "qagw_hello_refused_total", "reason=\"auth_backoff\"",             \
	  "Connections and HELLOs answered ERROR overloaded, by the limit that refused them")      \
	X(hello_auth_failures, "qagw_hello_auth_failures_total", "",                               \
	  "HELLOs answered ERROR auth (unknown agent or wrong token)")                             \
	X(auth_backoffs, "qagw_hello_auth_backoffs_total", "",                                     \
	  "Source addresses put in back-off for spending their failed-HELLO budget")               \
	X(sessions_revoked, "qagw_sessions_revoked_total", "",                                     \
	  "Live sessions ended ERROR auth because their agent's token was removed")                \
	X(store_failures, "qagw_store_failures_total", "", "Requests answered store_unavailable")  \
	X(requests, "qagw_requests_total", "", "Agent requests answered (the load signal)")        \
	X(uploads_pipelined, "qagw_uploads_pipelined_total", "",                                   \
	  "UPLOADs read while the same session's earlier UPLOADs were still committing")           \
	X(reassigned, "qagw_reassign_total", "", "REASSIGN sent to agents the router moved")       \
	X(messages_expired, "qagw_messages_expired_total", "",                                     \
	  "Pending messages expired by the lifecycle job (status 30, sender told)")                \
	X(messages_purged, "qagw_messages_purged_total", "",                                       \
	  "Final messages older than keep_days deleted by the lifecycle job")                      \
	X(store_groups, "qagw_store_groups_total", "kind=\"upload\"",                              \
	  "Group statements sent: one transaction for the requests of several sessions")           \
	X(store_group_parts, "qagw_store_group_parts_total", "kind=\"upload\"",                    \
	  "Requests carried by group statements (parts / groups: the mean group size)")            \
	X(retention_runs, "qagw_retention_runs_total", "",                                         \
	  "Runs of the lifecycle job (expiry, then purge) that completed")                         \
	X(retention_failures, "qagw_retention_failures_total", "",                                 \
	  "Runs of the lifecycle job cut short by a store error (retried at the next run)")

/* Histogram buckets (seconds), shared by every histogram: X(upper bound). */
#define GW_HIST_BUCKETS(X)                                                                         \
	X(0.001)                                                                                   \
	X(0.0025)                                                                                  \
	X(0.005)                                                                                   \
	X(0.01)                                                                                    \
	X(0.025)                                                                                   \
	X(0.05)                                                                                    \
	X(0.1)                                                                                     \
	X(0.25)                                                                                    \
	X(0.5)                                                                                     \
	X(1.0)                                                                                     \
	X(2.5)                                                                                     \
	X(5.0)                                                                                     \
	X(10.0)

enum {
#define GW_HIST_ONE(bound) +1
	GW_HIST_N = 0 GW_HIST_BUCKETS(GW_HIST_ONE)
#undef GW_HIST_ONE
};

extern const double gw_hist_bounds[GW_HIST_N];

struct gw_histogram {
	_Atomic uint64_t bucket[GW_HIST_N]; /* observations <= bound (not cumulative) */
	_Atomic uint64_t count;
	_Atomic uint64_t sum_us;
};

void gw_histogram_observe(struct gw_histogram *h, double seconds);

/* Histograms: X(field, metric name, help). Each renders as the family
 * NAME_bucket{worker="W",le="B"}, NAME_sum, NAME_count. */
#define GW_HISTOGRAMS(X)                                                                           \
	X(push_latency, "qagw_push_latency_seconds",                                               \
	  "Commit of a message to the PUSH_ACK of the push it caused")                             \
	X(store_commit, "qagw_store_commit_seconds", "UPLOAD statement round trip (its commit)")

struct gw_counters {
#define GW_COUNTER_FIELD(f, name, label, help) _Atomic uint64_t f;
	GW_COUNTERS(GW_COUNTER_FIELD)
#undef GW_COUNTER_FIELD
	/* ERROR frames sent, by code (proto/qs_codec.h QS_ERRORS; index 0 unused):
	 * qagw_errors_total{worker,code}. */
	_Atomic uint64_t errors[QS_E_END];
	/* Push results (router/rt_push.h RT_PUSH_RESULTS): qagw_push_total{worker,result}. */
	_Atomic uint64_t push[RT_PUSH_N];
#define GW_HISTOGRAM_FIELD(f, name, help) struct gw_histogram f;
	GW_HISTOGRAMS(GW_HISTOGRAM_FIELD)
#undef GW_HISTOGRAM_FIELD
};

/* Gauges a worker keeps current for other threads (admin port):
 * X(field, metric name, help). Each renders as NAME{worker="W"} VALUE. */
#define GW_GAUGES(X)                                                                               \
	X(sessions, "qagw_sessions", "Sessions past HELLO")                                        \
	X(on_primary, "qagw_sessions_on_primary", "Sessions held on their agent's primary worker") \
	X(unresolved, "qagw_sessions_unresolved_primary",                                          \
	  "Sessions whose HELLO named a primary that matches no worker of the pool (a mistyped "   \
	  "-x: every push to them is no_session)")                                                 \
	X(draining, "qagw_worker_draining",                                                        \
	  "1 while the worker is drained (admin) or stopping (SIGTERM)")                           \
	X(store_up, "qagw_worker_store_up", "1 while the worker's store connection is up")         \
	X(redis_up, "qagw_worker_redis_up", "1 while the worker's Redis connection is up")         \
	X(retention_last_run, "qagw_retention_last_run_seconds",                                   \
	  "When the lifecycle job last completed a run (Unix time; 0: not yet, or not this "       \
	  "worker)")

struct gw_gauges {
#define GW_GAUGE_FIELD(f, name, help) _Atomic int f;
	GW_GAUGES(GW_GAUGE_FIELD)
#undef GW_GAUGE_FIELD
	/* 1 while accept is paused for want of descriptors: not a per-worker
	 * metric, the admin port sums it into qagw_listeners_paused. */
	_Atomic int listener_paused;
	/* The store's backlog as the lifecycle job last read it (node-wide
	 * metrics; -1: not read yet): qagw_pending_messages and
	 * qagw_oldest_pending_age_seconds. */
	_Atomic int64_t backlog_pending;
	_Atomic int64_t backlog_oldest_ms; /* created_ms; 0: nothing pending */
};

#define gw_count(w, f, n)                                                                          \
	atomic_fetch_add_explicit(&(w)->counters.f, (uint64_t)(n), memory_order_relaxed)
#define gw_count_push(w, r)                                                                        \
	atomic_fetch_add_explicit(&(w)->counters.push[(r)], 1, memory_order_relaxed)

#endif
