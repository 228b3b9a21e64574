/* A worker's view of the pool's routing state in Redis (docs/design.md
 * "Redis: routing state"): its registry entry and heartbeat, the live session
 * and primary of each agent it serves (with epochs, so that a newer session
 * anywhere supersedes an older one), push routing to an agent's primary
 * worker, and the pool-wide push figures. One per worker, on its thread;
 * every call is asynchronous and fails fast (-1) while Redis is down. */
#ifndef RT_POOL_H
#define RT_POOL_H

#include <stdint.h>

struct event_base;
struct rt_pool;

struct rt_pool_hooks {
	/* A push for agent, n messages committed at commit_ms; session_worker
	 * is the worker holding its live session per Redis ("" if none). */
	void (*on_push)(void *arg, const char *agent, int64_t commit_ms, int n,
			const char *session_worker);
	/* End agent's session of that epoch here: a newer one exists. */
	void (*on_supersede)(void *arg, const char *agent, uint64_t epoch);
	/* Redis came up (re-register, re-announce) or went down. */
	void (*on_state)(void *arg, int up);
	/* "drain" or "resume" from an admin port of any node. */
	void (*on_command)(void *arg, const char *command);
};

struct rt_pool_conf {
	const char *host;
	int port;
	const char *password;
	const char *prefix;
	const char *worker; /* this worker's name */
	const char *node;
};

struct rt_pool *rt_pool_new(struct event_base *base, const struct rt_pool_conf *conf,
			    const struct rt_pool_hooks *hooks, void *arg);
void rt_pool_free(struct rt_pool *p);
int rt_pool_is_up(const struct rt_pool *p);

/* Registry: refreshes P worker:NAME (expires in 3 s) and copies the push
 * counters to P pushstats:NAME. Called every second. */
struct rt_worker_info {
	const char *address; /* first advertised address */
	const char *listen;
	const char *state; /* "serving" or "draining" */
	int sessions;
	int on_primary;
	const uint64_t *push; /* GW_PUSH_N counters, in GW_PUSH_RESULTS order */
	const char *const *push_names;
	int n_push;
};
void rt_pool_heartbeat(struct rt_pool *p, const struct rt_worker_info *info);

/* Claims agent's live session for this worker. announce_only (after Redis
 * came back): take it only if no other worker holds it, supersede nobody.
 * done gets the new epoch, or 0 when Redis failed or (announce) declined. */
struct rt_claim {
	const char *agent;
	const char *primary; /* resolved worker name or "" */
	int pinned;
	const char *primary_as_sent;
	int on_primary;
	int persist;
	int64_t since_ms;
};
typedef void (*rt_claim_fn)(void *arg, uint64_t epoch);
int rt_pool_claim(struct rt_pool *p, const struct rt_claim *c, int announce_only, rt_claim_fn done,
		  void *arg) __attribute__((warn_unused_result));
/* The session of that epoch ended (a newer one is left alone). */
void rt_pool_release(struct rt_pool *p, const char *agent, uint64_t epoch);

/* Routes a push for agent to its primary (policy_any: to the worker holding
 * its session). done gets: delivered = number of subscribers that received
 * it (0: target down or none), target ("" when there is nowhere to send),
 * the worker holding the agent's session ("" if none); or failed = 1. */
typedef void (*rt_route_fn)(void *arg, int failed, int delivered, const char *target,
			    const char *session_worker);
int rt_pool_route(struct rt_pool *p, const char *agent, int64_t commit_ms, int n, int policy_any,
		  rt_route_fn done, void *arg) __attribute__((warn_unused_result));

/* The same routing on any command connection (the node's main thread
 * routes server-side messages with it). */
struct rt_redis;
int rt_route(struct rt_redis *r, const char *prefix, const char *agent, int64_t commit_ms, int n,
	     int policy_any, rt_route_fn done, void *arg) __attribute__((warn_unused_result));

/* Pool-wide accounting: an agent's push counter (HINCRBY P agentpush:A),
 * a latency sample (latency_ms >= 0: P pushlat:NAME and the agent's
 * last_latency_ms), and an event in P pushevents. Best effort. */
void rt_pool_account(struct rt_pool *p, const char *agent, const char *result, int64_t latency_ms);
/* The same on any command connection, in the name of worker. */
void rt_account(struct rt_redis *r, const char *prefix, const char *worker, const char *agent,
		const char *result, int64_t latency_ms);

#endif
