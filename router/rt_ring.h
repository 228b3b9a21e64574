/* The router's assignment rule (docs/design.md "The router"): consistent hashing
 * with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018), weighted by
 * capacity. Pure functions, no I/O: the worker computes an agent's ring
 * order here, and the Redis script that decides (router/rt_pool.c) takes
 * the first worker of that order whose load is under rt_bound — the same
 * rule rt_pick applies, so the unit test simulates what the pool does.
 *
 * Ring: each worker owns min(100 x capacity, 10000) points, point i at the
 * first 8 bytes (big-endian) of SHA-256("NAME#i"); an agent sits at the
 * first 8 bytes of SHA-256(agent id) and its order is the distinct workers
 * met walking clockwise from there. */
#ifndef RT_RING_H
#define RT_RING_H

#include <stdint.h>

#define RT_RING_MAX_WORKERS 256

struct rt_ring_worker {
	char name[65];
	int capacity; /* >= 1 */
};

struct rt_ring {
	int n;
	struct rt_ring_worker w[RT_RING_MAX_WORKERS];
	int npoints;
	uint64_t *point; /* sorted */
	uint16_t *owner; /* index in w of point[i]'s worker */
};

/* Builds the ring over ws (n <= RT_RING_MAX_WORKERS). Returns 0 or -1. */
int rt_ring_build(struct rt_ring *r, const struct rt_ring_worker *ws, int n);
void rt_ring_free(struct rt_ring *r);

/* The agent's position on the ring. */
uint64_t rt_ring_hash(const char *agent);

/* Writes the indexes (in r->w) of every worker in the agent's ring order;
 * returns r->n (0 for an empty ring). */
int rt_ring_order(const struct rt_ring *r, const char *agent, int *order);

/* ceil((1 + eps) * total * cap / cap_sum): the most agents a worker of
 * capacity cap may hold when total agents are assigned over workers of
 * capacities summing to cap_sum. Evaluated in this order in double
 * precision, as the Redis script does, so that both agree exactly. */
int64_t rt_bound(int64_t total, int cap, int64_t cap_sum, double eps);

/* The first worker of order[0..n) whose load is under its bound for
 * total agents, or -1 when none is (cap_sum 0, or loads that do not add
 * up to less than total). */
int rt_pick(const int *order, int n, const int64_t *load, const int *cap, int64_t cap_sum,
            int64_t total, double eps);

#endif
