/* A worker's view of the pool's routing state in Redis (docs/design.md
 * "Redis: routing state"): its registry entry and heartbeat, the live session
 * and primary of each agent it serves (with epochs, so that a newer session
 * anywhere supersedes an older one), push routing to an agent's primary
 * worker, and the pool-wide push figures. One per worker, on its thread;
 * every call is asynchronous and fails fast (-1) while Redis is down. */
#ifndef RT_POOL_H
#define RT_POOL_H

#include "router/rt_redis.h"

#include <stdint.h>

#define RT_VIEW_MAX 256

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
	/* The router moved agent (whose session is here) to primary. */
	void (*on_reassign)(void *arg, const char *agent, const char *primary);
	/* This worker's router decisions moved (or assigned) agents[i] to
	 * primaries[i]: record them in the store. */
	void (*on_moved)(void *arg, const char *const *agents, const char *const *primaries, int n);
	/* A sweep (rt_pool_sweep) finished: moved agents; failed = Redis broke. */
	void (*on_swept)(void *arg, const char *from, int moved, int failed);
	/* Redis lost this worker's state (restarted empty, or flushed): announce
	 * the live sessions again; the store may refill assignments. */
	void (*on_wiped)(void *arg);
	/* This worker's push channel is subscribed (at start, and again after
	 * its connection dropped): pushes routed meanwhile were lost. */
	void (*on_listening)(void *arg);
};

struct rt_pool_conf {
	struct rt_redis_conf redis;
	const char *prefix;
	const char *worker; /* this worker's name */
	const char *node;
	int capacity;       /* router weight */
	int tls;            /* the worker's listener speaks TLS */
	double epsilon;     /* bounded-load slack */
	int reassign_after; /* seconds a worker may be down before its agents move */
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
	double syncs_per_s;   /* requests answered per second, over the last 10 s */
	const uint64_t *push; /* RT_PUSH_N counters, in RT_PUSH_RESULTS order (rt_push.h) */
	const char *const *push_names;
	int n_push;
};
void rt_pool_heartbeat(struct rt_pool *p, const struct rt_worker_info *info);

/* Claims agent's live session for this worker. announce_only (after Redis
 * came back): take it only if no other worker holds it, supersede nobody.
 * A pinned agent keeps the primary it named; for the others the router
 * decides in the same script (sticky; else the first worker of the agent's
 * ring order under the load bound) and done gets that primary. done gets
 * the new epoch, or 0 when Redis failed or (announce) declined. */
struct rt_claim {
	const char *agent;
	const char *primary; /* pinned: the resolved worker name or "" */
	int pinned;
	const char *primary_as_sent;
	const char *hint; /* router-assigned: the store's (or session's) record, or "" */
	int persist;
	int64_t since_ms;
};
typedef void (*rt_claim_fn)(void *arg, uint64_t epoch, const char *primary);
int rt_pool_claim(struct rt_pool *p, const struct rt_claim *c, int announce_only, rt_claim_fn done,
                  void *arg) __attribute__((warn_unused_result));
/* The session of that epoch ended (a newer one is left alone). */
void rt_pool_release(struct rt_pool *p, const char *agent, uint64_t epoch);

/* Routes the pushes of one committed batch, all in one script call: recipient i
 * (agents[i], with ns[i] new messages) to its primary (policy_any: to the
 * worker holding its session). done is called once for each recipient, in
 * order (i from 0 to count - 1), with: delivered = number of subscribers that
 * received it (0: target down or none), target ("" when there is nowhere to
 * send), the worker holding the agent's session ("" if none); or failed = 1
 * (then for every recipient). -1: nothing sent, done is not called. */
typedef void (*rt_route_fn)(void *arg, int i, int failed, int delivered, const char *target,
                            const char *session_worker);
int rt_pool_route(struct rt_pool *p, const char *const *agents, const int *ns, int count,
                  int64_t commit_ms, int policy_any, rt_route_fn done, void *arg)
    __attribute__((warn_unused_result));

/* The same routing on any command connection (the node's main thread
 * routes server-side messages with it). */
struct rt_redis;
int rt_route(struct rt_redis *r, const char *prefix, const char *const *agents, const int *ns,
             int count, int64_t commit_ms, int policy_any, rt_route_fn done, void *arg)
    __attribute__((warn_unused_result));

/* Pool-wide accounting: an agent's push counter (HINCRBY P agentpush:A),
 * a latency sample (latency_ms >= 0: P pushlat:NAME and the agent's
 * last_latency_ms), and an event in P pushevents. Best effort. */
void rt_pool_account(struct rt_pool *p, const char *agent, const char *result, int64_t latency_ms);
/* The same on any command connection, in the name of worker. */
void rt_account(struct rt_redis *r, const char *prefix, const char *worker, const char *agent,
                const char *result, int64_t latency_ms);

/* ---- the router (docs/design.md "The router") ---- */

/* The pool as the last refresh (every heartbeat) saw it. */
struct rt_view_worker {
	char name[65];
	char node[65];
	char address[300]; /* first advertised HOST:PORT */
	int tls;
	int capacity;
	int alive;   /* heartbeat present */
	int serving; /* alive and not draining */
	int64_t last_seen_ms;
	int64_t assigned; /* router-assigned agents */
	int retired;      /* an operator removed it (retire.lua): its agents move at once */
};
struct rt_view {
	int n;
	struct rt_view_worker w[RT_VIEW_MAX];
	int64_t updated_ms; /* 0: never refreshed */
};
const struct rt_view *rt_pool_view(const struct rt_pool *p);

/* Writes the serving workers in agent's ring order as indexes into the
 * view; returns how many. */
int rt_pool_order(const struct rt_pool *p, const char *agent, int *order);

/* This worker drains or stops (1), or serves again (0): out of its own
 * view at once. */
void rt_pool_set_leaving(struct rt_pool *p, int leaving);

/* Moves every router-assigned agent of worker from (this worker when it
 * drains, or one down longer than reassign_after) to others, batch by
 * batch; connected agents get REASSIGN through their session's worker.
 * Returns -1 when Redis is down (on_swept is then not called). */
int rt_pool_sweep_away(struct rt_pool *p, const char *from) __attribute__((warn_unused_result));

/* Refill after Redis lost its data: each agents[i] without any record in
 * Redis gets primaries[i] as its router-assigned primary (no one moves). */
void rt_pool_refill(struct rt_pool *p, const char *const *agents, const char *const *primaries,
                    int n);

#endif
