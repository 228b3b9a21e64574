/* Per-worker counters, gauges and histograms, declared once here (X-macros)
 * so that the admin port renders /metrics and its JSON from these tables.
 * Workers update their own with relaxed atomics; other threads only load. */
#ifndef GW_COUNTERS_H
#define GW_COUNTERS_H

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
	X(reassigned, "qagw_reassign_total", "", "REASSIGN sent to agents the router moved")       \
	X(messages_expired, "qagw_messages_expired_total", "",                                     \
	  "Pending messages expired by the lifecycle job (status 30, sender told)")                \
	X(messages_purged, "qagw_messages_purged_total", "",                                       \
	  "Final messages older than keep_days deleted by the lifecycle job")                      \
	X(store_groups, "qagw_store_groups_total", "kind=\"upload\"",                              \
	  "Group statements sent: one transaction for the requests of several sessions")           \
	X(store_group_parts, "qagw_store_group_parts_total", "kind=\"upload\"",                    \
	  "Requests carried by group statements (parts / groups: the mean group size)")

/* Push results (gateway.md "Push"; docs/design.md "Push accounting"):
 * X(enum suffix, result label). Rendered as qagw_push_total{worker,result}. */
#define GW_PUSH_RESULTS(X)                                                                         \
	X(ROUTED, "routed")                                                                        \
	X(COALESCED, "coalesced")                                                                  \
	X(SENT, "sent")                                                                            \
	X(ACKED, "acked")                                                                          \
	X(SUPPRESSED_OFF_PRIMARY, "suppressed_off_primary")                                        \
	X(NO_SESSION, "no_session")                                                                \
	X(FAILED, "failed")

enum gw_push_result {
#define GW_PUSH_ENUM(e, name) GW_PUSH_##e,
	GW_PUSH_RESULTS(GW_PUSH_ENUM)
#undef GW_PUSH_ENUM
	    GW_PUSH_N
};

extern const char *const gw_push_result_names[GW_PUSH_N];

/* Histogram buckets (seconds), shared by every histogram. */
#define GW_HIST_BUCKETS                                                                            \
	{                                                                                          \
		0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0       \
	}
#define GW_HIST_N 13

struct gw_histogram {
	_Atomic uint64_t bucket[GW_HIST_N]; /* observations <= bound (not cumulative) */
	_Atomic uint64_t count;
	_Atomic uint64_t sum_us;
};

void gw_histogram_observe(struct gw_histogram *h, double seconds);

struct gw_counters {
#define GW_COUNTER_FIELD(f, name, label, help) _Atomic uint64_t f;
	GW_COUNTERS(GW_COUNTER_FIELD)
#undef GW_COUNTER_FIELD
	_Atomic uint64_t errors[12];      /* ERROR frames sent, by code 1..11 */
	_Atomic uint64_t push[GW_PUSH_N]; /* push results */
	struct gw_histogram push_latency; /* commit -> PUSH_ACK (qagw_push_latency_seconds) */
	struct gw_histogram
	    store_commit; /* UPLOAD statement round trip (qagw_store_commit_seconds) */
};

/* Gauges a worker keeps current for other threads (admin port). */
struct gw_gauges {
	_Atomic int sessions;   /* past HELLO */
	_Atomic int on_primary; /* of those, on their primary */
	_Atomic int draining;   /* 1 while drained (admin) or stopping (SIGTERM) */
	_Atomic int store_up;
	_Atomic int redis_up;
	_Atomic int listener_paused; /* 1 while accept is paused for want of descriptors */
};

#define gw_count(w, f, n)                                                                          \
	atomic_fetch_add_explicit(&(w)->counters.f, (uint64_t)(n), memory_order_relaxed)
#define gw_count_push(w, r)                                                                        \
	atomic_fetch_add_explicit(&(w)->counters.push[(r)], 1, memory_order_relaxed)

#endif
