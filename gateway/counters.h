/* Per-worker counters, declared once here (X-macro) so that the admin port
 * renders /metrics and JSON from one table. Workers increment their own with
 * relaxed atomics; readers on other threads only load. */
#ifndef GW_COUNTERS_H
#define GW_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

/* X(field, metric name, help) */
#define GW_COUNTERS(X)                                                                             \
	X(messages_stored, "qagw_messages_stored_total", "Messages committed to the store")        \
	X(messages_duplicate, "qagw_messages_duplicate_total", "Uploads answered duplicate")       \
	X(messages_refused, "qagw_messages_refused_total",                                         \
	  "Uploads refused (invalid, expired, too_large, quota, conflict)")                        \
	X(messages_delivered, "qagw_messages_delivered_total", "Messages sent in DELIVER frames")  \
	X(messages_acked, "qagw_messages_acked_total", "Messages acknowledged by their recipient") \
	X(ignored_deliver_ack, "qagw_ignored_deliver_ack_total", "DELIVER_ACK entries ignored")    \
	X(ignored_status, "qagw_ignored_status_total", "STATUS entries ignored")                   \
	X(statuses_applied, "qagw_statuses_applied_total", "STATUS entries recorded")              \
	X(sessions_accepted, "qagw_sessions_accepted_total", "Connections accepted")               \
	X(store_failures, "qagw_store_failures_total", "Requests answered store_unavailable")

struct gw_counters {
#define GW_COUNTER_FIELD(f, name, help) _Atomic uint64_t f;
	GW_COUNTERS(GW_COUNTER_FIELD)
#undef GW_COUNTER_FIELD
	_Atomic uint64_t errors[12]; /* ERROR frames sent, by code 1..11 */
};

#define gw_count(w, f, n)                                                                          \
	atomic_fetch_add_explicit(&(w)->counters.f, (uint64_t)(n), memory_order_relaxed)

#endif
