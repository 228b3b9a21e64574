/* Consistent hashing with bounded loads; see rt_ring.h. */
#include "router/rt_ring.h"

#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POINTS_PER_CAPACITY   100
#define MAX_POINTS_PER_WORKER 10000

static uint64_t hash64(const char *s, size_t len)
{
	unsigned char d[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)s, len, d);
	uint64_t h = 0;
	for (int i = 0; i < 8; i++)
		h = h << 8 | d[i];
	return h;
}

uint64_t rt_ring_hash(const char *agent)
{
	return hash64(agent, strlen(agent));
}

static int points_of(int capacity)
{
	long p = (long)capacity * POINTS_PER_CAPACITY;
	return p > MAX_POINTS_PER_WORKER ? MAX_POINTS_PER_WORKER : (int)(p < 1 ? 1 : p);
}

struct point {
	uint64_t at;
	uint16_t owner;
	const char *name;
};

static int cmp_point(const void *a, const void *b)
{
	const struct point *x = a, *y = b;
	if (x->at != y->at)
		return x->at < y->at ? -1 : 1;
	return strcmp(x->name, y->name); /* a collision resolves the same everywhere */
}

int rt_ring_build(struct rt_ring *r, const struct rt_ring_worker *ws, int n)
{
	memset(r, 0, sizeof(*r));
	if (n < 0 || n > RT_RING_MAX_WORKERS)
		return -1;
	int total = 0;
	for (int i = 0; i < n; i++)
		total += points_of(ws[i].capacity);
	struct point *pts = malloc(sizeof(*pts) * (size_t)(total ? total : 1));
	r->point = malloc(sizeof(*r->point) * (size_t)(total ? total : 1));
	r->owner = malloc(sizeof(*r->owner) * (size_t)(total ? total : 1));
	if (!pts || !r->point || !r->owner) {
		free(pts);
		rt_ring_free(r);
		return -1;
	}
	int k = 0;
	for (int i = 0; i < n; i++) {
		r->w[i] = ws[i];
		for (int j = 0, np = points_of(ws[i].capacity); j < np; j++) {
			char key[96];
			int len = snprintf(key, sizeof(key), "%s#%d", ws[i].name, j);
			pts[k].at = hash64(key, (size_t)len);
			pts[k].owner = (uint16_t)i;
			pts[k].name = ws[i].name;
			k++;
		}
	}
	qsort(pts, (size_t)total, sizeof(*pts), cmp_point);
	for (int i = 0; i < total; i++) {
		r->point[i] = pts[i].at;
		r->owner[i] = pts[i].owner;
	}
	free(pts);
	r->n = n;
	r->npoints = total;
	return 0;
}

void rt_ring_free(struct rt_ring *r)
{
	free(r->point);
	free(r->owner);
	r->point = NULL;
	r->owner = NULL;
	r->n = r->npoints = 0;
}

int rt_ring_order(const struct rt_ring *r, const char *agent, int *order)
{
	if (r->n == 0)
		return 0;
	uint64_t h = rt_ring_hash(agent);
	/* First point at or after h (wrapping). */
	int lo = 0, hi = r->npoints;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		if (r->point[mid] < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	unsigned char seen[RT_RING_MAX_WORKERS] = {0};
	int k = 0;
	for (int step = 0; step < r->npoints && k < r->n; step++) {
		int o = r->owner[(lo + step) % r->npoints];
		if (!seen[o]) {
			seen[o] = 1;
			order[k++] = o;
		}
	}
	return k;
}

int64_t rt_bound(int64_t total, int cap, int64_t cap_sum, double eps)
{
	if (cap_sum <= 0)
		return 0;
	return (int64_t)ceil((1.0 + eps) * (double)total * (double)cap / (double)cap_sum);
}

int rt_pick(const int *order, int n, const int64_t *load, const int *cap, int64_t cap_sum,
            int64_t total, double eps)
{
	for (int i = 0; i < n; i++) {
		int w = order[i];
		if (cap[w] > 0 && load[w] < rt_bound(total, cap[w], cap_sum, eps))
			return w;
	}
	return -1;
}
