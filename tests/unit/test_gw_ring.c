/* Unit tests: consistent hashing with bounded loads (router/rt_ring.c).
 * The simulations replay the pool's rule (see rt_ring.h): agents arrive
 * one at a time and take rt_pick over their ring order; a joining
 * worker takes the agents whose first choice it now is, up to its bound; a
 * leaving worker's agents are re-picked over the rest. Figures are printed
 * so that the test output documents them (issue 6). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "router/rt_ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS     0.25
#define AGENTS  100000
#define MAX_W   16
#define NEW_CAP 2 /* the rounded mean capacity of every set below */

struct worker_set {
	int n;
	int cap[MAX_W];
};

static const struct worker_set sets[] = {
    {3, {1, 2, 3}},
    {5, {1, 1, 2, 3, 5}},
    {10, {1, 2, 1, 3, 2, 1, 4, 1, 2, 3}},
};
#define NSETS (int)(sizeof(sets) / sizeof(sets[0]))

/* The pool as the simulation sees it: who holds which agent. Indexes are
 * those of the ring the workers were first built in. */
struct pool {
	int n;
	int cap[MAX_W];
	int64_t cap_sum;
	int64_t load[MAX_W];
	int64_t total;
	int *owner; /* owner[a]: the worker holding agent a */
};

static void agent_id(int a, char *out, size_t len)
{
	snprintf(out, len, "agent-%06d", a);
}

static void make_workers(struct rt_ring_worker *ws, const int *cap, int n)
{
	for (int i = 0; i < n; i++) {
		snprintf(ws[i].name, sizeof(ws[i].name), "ml%d", i + 1);
		ws[i].capacity = cap[i];
	}
}

static void build_ring(struct rt_ring *ring, const int *cap, int n)
{
	struct rt_ring_worker ws[MAX_W];
	make_workers(ws, cap, n);
	assert_int_equal(rt_ring_build(ring, ws, n), 0);
}

static void assert_bound_holds(const struct pool *p)
{
	for (int w = 0; w < p->n; w++)
		assert_true(p->load[w] <= rt_bound(p->total, p->cap[w], p->cap_sum, EPS));
}

/* Assigns AGENTS agents one at a time, checking the bound after each. */
static void fill_pool(struct pool *p, struct rt_ring *ring, const struct worker_set *s)
{
	memset(p, 0, sizeof(*p));
	p->n = s->n;
	for (int w = 0; w < s->n; w++) {
		p->cap[w] = s->cap[w];
		p->cap_sum += s->cap[w];
	}
	p->owner = malloc(sizeof(*p->owner) * AGENTS);
	assert_non_null(p->owner);
	build_ring(ring, p->cap, p->n);
	int order[MAX_W];
	char id[32];
	for (int a = 0; a < AGENTS; a++) {
		agent_id(a, id, sizeof(id));
		assert_int_equal(rt_ring_order(ring, id, order), p->n);
		int w = rt_pick(order, p->n, p->load, p->cap, p->cap_sum, p->total + 1, EPS);
		assert_true(w >= 0);
		p->load[w]++;
		p->total++;
		p->owner[a] = w;
		assert_bound_holds(p);
	}
}

/* Prints each worker's load against its bound and its weighted share. */
static void print_loads(const char *what, const struct pool *p)
{
	double max_of_bound = 0, max_of_mean = 0;
	printf("  %s: total=%lld cap_sum=%lld\n", what, (long long)p->total, (long long)p->cap_sum);
	for (int w = 0; w < p->n; w++) {
		if (p->cap[w] == 0)
			continue;
		int64_t bound = rt_bound(p->total, p->cap[w], p->cap_sum, EPS);
		double mean = (double)p->total * p->cap[w] / (double)p->cap_sum;
		double of_bound = (double)p->load[w] / (double)bound;
		double of_mean = (double)p->load[w] / mean;
		printf("    ml%-2d cap=%d load=%6lld bound=%6lld load/bound=%.3f load/mean=%.3f\n",
		       w + 1, p->cap[w], (long long)p->load[w], (long long)bound, of_bound,
		       of_mean);
		if (of_bound > max_of_bound)
			max_of_bound = of_bound;
		if (of_mean > max_of_mean)
			max_of_mean = of_mean;
	}
	printf("    max load/bound=%.3f  max load/weighted mean=%.3f (1+eps=%.2f)\n", max_of_bound,
	       max_of_mean, 1.0 + EPS);
}

static void print_caps(const struct worker_set *s)
{
	printf("workers caps={");
	for (int w = 0; w < s->n; w++)
		printf("%s%d", w ? "," : "", s->cap[w]);
	printf("} eps=%.2f agents=%d\n", EPS, AGENTS);
}

/* ---- small checks ---- */

static void test_order_is_permutation(void **state)
{
	struct rt_ring ring;
	const struct worker_set *s = &sets[2];
	build_ring(&ring, s->cap, s->n);
	int order[MAX_W];
	char id[32];
	for (int a = 0; a < 1000; a++) {
		agent_id(a, id, sizeof(id));
		assert_int_equal(rt_ring_order(&ring, id, order), s->n);
		int seen[MAX_W] = {0};
		for (int i = 0; i < s->n; i++) {
			assert_in_range(order[i], 0, s->n - 1);
			seen[order[i]]++;
		}
		for (int w = 0; w < s->n; w++)
			assert_int_equal(seen[w], 1);
	}
	rt_ring_free(&ring);
}

static void test_order_empty_ring(void **state)
{
	struct rt_ring ring;
	int order[1];
	assert_int_equal(rt_ring_build(&ring, NULL, 0), 0);
	assert_int_equal(rt_ring_order(&ring, "agent-000000", order), 0);
	rt_ring_free(&ring);
}

/* Same agent, same ring: same order; a ring built from the same workers
 * listed in another order gives the same order of names. */
static void test_order_deterministic(void **state)
{
	const struct worker_set *s = &sets[2];
	struct rt_ring_worker ws[MAX_W], rev[MAX_W];
	make_workers(ws, s->cap, s->n);
	for (int i = 0; i < s->n; i++)
		rev[i] = ws[s->n - 1 - i];
	struct rt_ring a, b, c;
	assert_int_equal(rt_ring_build(&a, ws, s->n), 0);
	assert_int_equal(rt_ring_build(&b, ws, s->n), 0);
	assert_int_equal(rt_ring_build(&c, rev, s->n), 0);
	int oa[MAX_W], oa2[MAX_W], ob[MAX_W], oc[MAX_W];
	char id[32];
	for (int k = 0; k < 2000; k++) {
		agent_id(k, id, sizeof(id));
		rt_ring_order(&a, id, oa);
		rt_ring_order(&a, id, oa2);
		rt_ring_order(&b, id, ob);
		rt_ring_order(&c, id, oc);
		for (int i = 0; i < s->n; i++) {
			assert_int_equal(oa[i], oa2[i]);
			assert_int_equal(oa[i], ob[i]);
			assert_string_equal(a.w[oa[i]].name, c.w[oc[i]].name);
		}
	}
	rt_ring_free(&a);
	rt_ring_free(&b);
	rt_ring_free(&c);
}

/* Without one worker, every agent's order is its old order minus that
 * worker: why a leaving worker moves no one else's agents. */
static void test_order_without_worker(void **state)
{
	const struct worker_set *s = &sets[1];
	int gone = 4;
	struct rt_ring full, rest;
	build_ring(&full, s->cap, s->n);
	struct rt_ring_worker ws[MAX_W];
	make_workers(ws, s->cap, s->n);
	memmove(&ws[gone], &ws[gone + 1], sizeof(ws[0]) * (size_t)(s->n - gone - 1));
	assert_int_equal(rt_ring_build(&rest, ws, s->n - 1), 0);
	int in_full[MAX_W], in_rest[MAX_W];
	char id[32];
	for (int a = 0; a < 2000; a++) {
		agent_id(a, id, sizeof(id));
		rt_ring_order(&full, id, in_full);
		rt_ring_order(&rest, id, in_rest);
		for (int i = 0, k = 0; i < s->n; i++) {
			if (in_full[i] == gone)
				continue;
			assert_string_equal(full.w[in_full[i]].name, rest.w[in_rest[k]].name);
			k++;
		}
	}
	rt_ring_free(&full);
	rt_ring_free(&rest);
}

static void test_bound_examples(void **state)
{
	assert_int_equal(rt_bound(100, 1, 4, 0.25), 32); /* ceil(31.25) */
	assert_int_equal(rt_bound(100, 2, 4, 0.25), 63); /* ceil(62.5) */
	assert_int_equal(rt_bound(80, 1, 4, 0.25), 25);  /* exact: no rounding up */
	assert_int_equal(rt_bound(1, 1, 10, 0.25), 1);   /* ceil(0.125) */
	assert_int_equal(rt_bound(0, 3, 6, 0.25), 0);
	assert_int_equal(rt_bound(100, 0, 4, 0.25), 0);
	assert_int_equal(rt_bound(100, 1, 0, 0.25), 0);
	assert_int_equal(rt_bound(100000, 5, 12, 0.25), 52084); /* ceil(52083.3) */
}

/* No capacity at all: -1. Otherwise the first worker of the order under
 * its bound. */
static void test_pick_examples(void **state)
{
	int order[3] = {2, 0, 1};
	int cap[3] = {1, 2, 3};
	int zero[3] = {0, 0, 0};
	int64_t load[3] = {0, 0, 0};
	assert_int_equal(rt_pick(order, 3, load, zero, 0, 1, EPS), -1);
	assert_int_equal(rt_pick(order, 3, load, cap, 6, 1, EPS), 2);
	/* The first choice full: the next in order. bound(10, 3, 6) = 7. */
	int64_t full[3] = {1, 2, 7};
	assert_int_equal(rt_pick(order, 3, full, cap, 6, 10, EPS), 0);
}

/* With total - 1 agents assigned in any way at all, some worker is under
 * its bound (the bounds sum to at least (1 + eps) x total), so the pick
 * of the next agent never fails while there is capacity. */
static void test_pick_always_finds_room(void **state)
{
	static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
	                                 {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
	int cap[3] = {1, 2, 3};
	for (int64_t total = 1; total <= 40; total++)
		for (int64_t l0 = 0; l0 < total; l0++)
			for (int64_t l1 = 0; l0 + l1 < total; l1++) {
				int64_t load[3] = {l0, l1, total - 1 - l0 - l1};
				for (int o = 0; o < 6; o++)
					assert_true(
					    rt_pick(orders[o], 3, load, cap, 6, total, EPS) >= 0);
			}
}

static void test_pick_skips_zero_capacity(void **state)
{
	int order[3] = {1, 0, 2};
	int cap[3] = {2, 0, 1};
	int64_t load[3] = {0, 0, 0};
	for (int64_t total = 1; total <= 300; total++) {
		int w = rt_pick(order, 3, load, cap, 3, total, EPS);
		assert_true(w == 0 || w == 2);
		load[w]++;
	}
	assert_int_equal(load[1], 0);
}

/* ---- simulations ---- */

/* Must-show 1a: 100,000 agents over unequal capacities stay under the bound. */
static void test_assignment_under_bound(void **state)
{
	printf("[assignment] agents one at a time, bound checked after each\n");
	for (int i = 0; i < NSETS; i++) {
		struct pool p;
		struct rt_ring ring;
		print_caps(&sets[i]);
		fill_pool(&p, &ring, &sets[i]);
		print_loads("after all agents", &p);
		rt_ring_free(&ring);
		free(p.owner);
	}
}

/* Moves to the new worker the agents whose first choice it now is, one at
 * a time while it is under its bound; returns how many first chose it. */
static int join_worker(struct pool *p, const struct rt_ring *ring, int nw)
{
	int order[MAX_W], first = 0;
	char id[32];
	for (int a = 0; a < AGENTS; a++) {
		agent_id(a, id, sizeof(id));
		rt_ring_order(ring, id, order);
		if (order[0] != nw)
			continue;
		first++;
		if (p->load[nw] >= rt_bound(p->total, p->cap[nw], p->cap_sum, EPS))
			continue;
		p->load[p->owner[a]]--;
		p->load[nw]++;
		p->owner[a] = nw;
	}
	return first;
}

/* Must-show 1b: a join moves about the new worker's share, nothing else. */
static void test_join_moves_share(void **state)
{
	printf("[join] one worker of capacity %d added\n", NEW_CAP);
	for (int i = 0; i < NSETS; i++) {
		struct pool p;
		struct rt_ring ring, grown;
		print_caps(&sets[i]);
		fill_pool(&p, &ring, &sets[i]);
		int *before = malloc(sizeof(*before) * AGENTS);
		assert_non_null(before);
		memcpy(before, p.owner, sizeof(*before) * AGENTS);

		int nw = p.n++;
		p.cap[nw] = NEW_CAP;
		p.cap_sum += NEW_CAP;
		build_ring(&grown, p.cap, p.n);
		int first = join_worker(&p, &grown, nw);

		int moved = 0, moved_elsewhere = 0;
		for (int a = 0; a < AGENTS; a++) {
			if (p.owner[a] == before[a])
				continue;
			moved++;
			moved_elsewhere += p.owner[a] != nw;
		}
		double ideal = (double)NEW_CAP / (double)p.cap_sum;
		double frac = (double)moved / AGENTS;
		printf("  moved=%d (first choice of the new worker: %d) fraction=%.4f "
		       "ideal cap_new/cap_sum=%.4f ratio=%.3f 1/(n+1)=%.4f moved elsewhere=%d\n",
		       moved, first, frac, ideal, frac / ideal, 1.0 / p.n, moved_elsewhere);
		print_loads("after the join", &p);
		assert_int_equal(moved_elsewhere, 0);
		assert_int_equal(moved, p.load[nw]);
		assert_true(frac <= 2 * ideal);
		assert_bound_holds(&p);

		rt_ring_free(&ring);
		rt_ring_free(&grown);
		free(before);
		free(p.owner);
	}
}

/* Re-picks every agent of the leaving worker over the ring without it. */
static void leave_worker(struct pool *p, const struct rt_ring *rest, int gone)
{
	p->cap_sum -= p->cap[gone];
	p->cap[gone] = 0;
	int order[MAX_W];
	char id[32];
	for (int a = 0; a < AGENTS; a++) {
		if (p->owner[a] != gone)
			continue;
		agent_id(a, id, sizeof(id));
		int k = rt_ring_order(rest, id, order);
		for (int i = 0; i < k; i++) /* rest's indexes back to the pool's */
			order[i] += order[i] >= gone;
		p->load[gone]--;
		int w = rt_pick(order, k, p->load, p->cap, p->cap_sum, p->total, EPS);
		assert_true(w >= 0 && w != gone);
		p->load[w]++;
		p->owner[a] = w;
	}
}

/* Must-show 1c: a leaving worker's agents move, and no others. */
static void test_leave_moves_only_its_agents(void **state)
{
	printf("[leave] the largest worker drained\n");
	for (int i = 0; i < NSETS; i++) {
		struct pool p;
		struct rt_ring ring, rest;
		print_caps(&sets[i]);
		fill_pool(&p, &ring, &sets[i]);
		int *before = malloc(sizeof(*before) * AGENTS);
		assert_non_null(before);
		memcpy(before, p.owner, sizeof(*before) * AGENTS);

		int gone = 0;
		for (int w = 1; w < p.n; w++)
			if (p.cap[w] > p.cap[gone])
				gone = w;
		int64_t gone_load = p.load[gone];
		struct rt_ring_worker ws[MAX_W];
		make_workers(ws, p.cap, p.n);
		memmove(&ws[gone], &ws[gone + 1], sizeof(ws[0]) * (size_t)(p.n - gone - 1));
		assert_int_equal(rt_ring_build(&rest, ws, p.n - 1), 0);
		leave_worker(&p, &rest, gone);

		int moved = 0, others = 0;
		for (int a = 0; a < AGENTS; a++) {
			if (p.owner[a] == before[a])
				continue;
			moved++;
			others += before[a] != gone;
		}
		printf("  removed ml%d (cap %d, load %lld): moved=%d of which others=%d "
		       "(allowed eps*n=%.2f)\n",
		       gone + 1, sets[i].cap[gone], (long long)gone_load, moved, others,
		       EPS * sets[i].n);
		print_loads("after the leave", &p);
		assert_int_equal(p.load[gone], 0);
		assert_int_equal(moved - others, gone_load);
		assert_true(others <= EPS * sets[i].n);
		assert_int_equal(others, 0);
		assert_bound_holds(&p);

		rt_ring_free(&ring);
		rt_ring_free(&rest);
		free(before);
		free(p.owner);
	}
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0); /* figures interleave with cmocka's stderr */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_is_permutation),
	    cmocka_unit_test(test_order_empty_ring),
	    cmocka_unit_test(test_order_deterministic),
	    cmocka_unit_test(test_order_without_worker),
	    cmocka_unit_test(test_bound_examples),
	    cmocka_unit_test(test_pick_examples),
	    cmocka_unit_test(test_pick_always_finds_room),
	    cmocka_unit_test(test_pick_skips_zero_capacity),
	    cmocka_unit_test(test_assignment_under_bound),
	    cmocka_unit_test(test_join_moves_share),
	    cmocka_unit_test(test_leave_moves_only_its_agents),
	};
	return cmocka_run_group_tests_name("router ring (bounded loads)", tests, NULL, NULL);
}
