/* Push results, declared once (docs/design.md "Push accounting"; docs/design.md "Push
 * accounting"): the gateway counts them (qagw_push_total{result}), the router
 * records them in Redis (rt_account), the admin port and `qagw agent` show them.
 * The names are the Redis hash fields and the JSON keys of /api/push and
 * /api/agents/ID. */
#ifndef RT_PUSH_H
#define RT_PUSH_H

/* X(enum suffix, result name, per_agent): per_agent results are also counted
 * in the recipient's agentpush:ID hash (the "push" object of /api/agents/ID);
 * the others (a push routed, coalesced into one pending, or lost with Redis)
 * are counted per worker only. */
#define RT_PUSH_RESULTS(X)                                                                         \
	X(ROUTED, "routed", 0)                                                                     \
	X(COALESCED, "coalesced", 0)                                                               \
	X(SENT, "sent", 1)                                                                         \
	X(ACKED, "acked", 1)                                                                       \
	X(SUPPRESSED_OFF_PRIMARY, "suppressed_off_primary", 1)                                     \
	X(NO_SESSION, "no_session", 1)                                                             \
	X(FAILED, "failed", 0)

enum rt_push_result {
#define RT_PUSH_ENUM(e, name, per_agent) RT_PUSH_##e,
	RT_PUSH_RESULTS(RT_PUSH_ENUM)
#undef RT_PUSH_ENUM
	    RT_PUSH_N
};

extern const char *const rt_push_result_names[RT_PUSH_N];

/* 1 if result (a name) is counted per agent, 0 if not or unknown. */
int rt_push_result_per_agent(const char *result);

/* What a routed push became, from the route call's answer for its recipient
 * (rt_route_fn): failed, no target, or a target nobody listens on (the session
 * worker decides between suppressed_off_primary and no_session); RT_PUSH_N
 * when a target worker got it and counts what becomes of it. */
enum rt_push_result rt_push_routed(int failed, int delivered, const char *target,
                                   const char *session_worker);

#endif
