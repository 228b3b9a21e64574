/* Push figures for /api/push; see pushstats.h. */
#include "admin/pushstats.h"

#include <stdlib.h>

void adm_lat_add(struct adm_latencies *l, double ms)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		double *v = realloc(l->v, cap * sizeof(*v));
		if (!v) {
			l->failed = 1;
			return;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = ms;
}

void adm_lat_add_all(struct adm_latencies *l, const struct adm_latencies *from)
{
	for (size_t i = 0; i < from->n; i++)
		adm_lat_add(l, from->v[i]);
	l->failed |= from->failed;
}

void adm_lat_free(struct adm_latencies *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

double adm_percentile(const double *sorted, size_t n, int p)
{
	/* rank = ceil(p * n / 100), 1-based, in integers (no rounding error). */
	size_t rank = ((size_t)p * n + 99) / 100;
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

json_t *adm_json_ms(double ms)
{
	if (ms > -9e15 && ms < 9e15 && ms == (double)(json_int_t)ms)
		return json_integer((json_int_t)ms);
	return json_real(ms);
}

json_t *adm_latency_json(struct adm_latencies *l)
{
	json_t *o = json_object();
	if (!l || l->n == 0) {
		json_object_set_new(o, "p50", json_null());
		json_object_set_new(o, "p90", json_null());
		json_object_set_new(o, "p99", json_null());
		json_object_set_new(o, "max", json_null());
		return o;
	}
	qsort(l->v, l->n, sizeof(double), cmp_double);
	json_object_set_new(o, "p50", adm_json_ms(adm_percentile(l->v, l->n, 50)));
	json_object_set_new(o, "p90", adm_json_ms(adm_percentile(l->v, l->n, 90)));
	json_object_set_new(o, "p99", adm_json_ms(adm_percentile(l->v, l->n, 99)));
	json_object_set_new(o, "max", adm_json_ms(l->v[l->n - 1]));
	return o;
}

json_t *adm_push_stats_json(const uint64_t counts[RT_PUSH_N], struct adm_latencies *l)
{
	json_t *o = json_object();
	for (int i = 0; i < RT_PUSH_N; i++)
		json_object_set_new(o, rt_push_result_names[i],
		                    json_integer((json_int_t)counts[i]));
	json_object_set_new(o, "latency_ms", adm_latency_json(l));
	return o;
}

void adm_push_counts_from_hash(const json_t *hash, uint64_t counts[RT_PUSH_N])
{
	for (int i = 0; i < RT_PUSH_N; i++) {
		const char *s = json_string_value(json_object_get(hash, rt_push_result_names[i]));
		char *end;
		unsigned long long v = s ? strtoull(s, &end, 10) : 0;
		counts[i] = s && *s && *end == 0 && s[0] != '-' ? (uint64_t)v : 0;
	}
}
