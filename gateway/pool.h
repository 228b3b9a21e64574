/* The pool's view of one worker (docs/design.md "Redis"): the worker's
 * rt_pool connection and the hooks through which the pool tells it things
 * (a push to deliver, a session superseded or reassigned, a drain asked, a
 * sweep done, Redis wiped), the registry heartbeat, announcing the worker's
 * sessions again and refilling Redis with the store's router assignments.
 * Used by worker.c (life cycle, drain) and requests.c (assignments); runs on
 * the worker's thread. */
#ifndef GW_POOL_H
#define GW_POOL_H

struct gw_worker;

/* Connects the worker to the pool (w->pool) and starts its heartbeat:
 * every 250 ms for the first 5 s, then every second. */
void gw_pool_init(struct gw_worker *w);
/* Disconnects (after the worker's loop has ended). */
void gw_pool_free(struct gw_worker *w);

/* Writes the worker's registry entry now (a worker that does not accept
 * yet is not written). */
void gw_pool_heartbeat(struct gw_worker *w);
/* The worker's store is up: a refill of Redis that waited for it runs. */
void gw_pool_store_up(struct gw_worker *w);

/* Records router assignments in the store (best effort, logged). */
void gw_pool_record_assignments(struct gw_worker *w, const char *const *agents,
                                const char *const *primaries, int n);

#endif
