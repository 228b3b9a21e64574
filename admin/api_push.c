/* GET /api/push: the pool's push figures (admin.md; docs/design.md "Push
 * accounting"). Each worker copies its counters to P pushstats:NAME every
 * second and keeps its recent latencies in P pushlat:NAME, so any node
 * answers for the whole pool: SMEMBERS P workers and LRANGE P pushevents,
 * then per worker HGETALL P pushstats:NAME and LRANGE P pushlat:NAME 0 -1.
 * Totals are the sums; the totals' latency summary is over the union of
 * every worker's samples. Without Redis: this node's own counters,
 * "source":"local", no latencies and no events. */
#include "admin/api.h"
#include "admin/http.h"
#include "admin/pushstats.h"
#include "admin/redis_json.h"
#include "gateway/node.h"
#include "router/rt_keys.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct push_ctx {
	char **names; /* sorted */
	int n;
	json_t **stats;            /* HGETALL P pushstats:NAME, per name */
	struct adm_latencies *lat; /* LRANGE P pushlat:NAME, per name */
	json_t *events;            /* LRANGE P pushevents 0 99 */
	int failed;                /* a Redis reply is missing: answer from local counters */
};

static void push_ctx_free(void *p)
{
	struct push_ctx *c = p;
	for (int i = 0; i < c->n; i++) {
		free(c->names[i]);
		json_decref(c->stats[i]);
		adm_lat_free(&c->lat[i]);
	}
	free(c->names);
	free(c->stats);
	free(c->lat);
	json_decref(c->events);
	free(c);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void reply_local(struct adm_req *r)
{
	struct gw_node *node = r->node;
	uint64_t totals[RT_PUSH_N] = {0};
	json_t *workers = json_object();
	for (int i = 0; i < node->n_workers; i++) {
		uint64_t counts[RT_PUSH_N];
		for (int k = 0; k < RT_PUSH_N; k++) {
			counts[k] = atomic_load_explicit(&node->workers[i]->counters.push[k],
			                                 memory_order_relaxed);
			totals[k] += counts[k];
		}
		json_object_set_new(workers, node->workers[i]->wc->name,
		                    adm_push_stats_json(counts, NULL));
	}
	json_t *j = json_object();
	json_object_set_new(j, "totals", adm_push_stats_json(totals, NULL));
	json_object_set_new(j, "workers", workers);
	json_object_set_new(j, "events", json_array());
	json_object_set_new(j, "source", json_string("local"));
	json_object_set_new(j, "message",
	                    json_string("Redis unavailable: this node's workers only, without "
	                                "latencies or events"));
	adm_reply_json(r, 200, j);
}

static void push_done(struct adm_req *r)
{
	struct push_ctx *c = r->ctx;
	if (c->failed) {
		reply_local(r);
		return;
	}
	uint64_t totals[RT_PUSH_N] = {0};
	struct adm_latencies all = {0};
	json_t *workers = json_object();
	for (int i = 0; i < c->n; i++) {
		uint64_t counts[RT_PUSH_N];
		adm_push_counts_from_hash(c->stats[i], counts);
		for (int k = 0; k < RT_PUSH_N; k++)
			totals[k] += counts[k];
		adm_lat_add_all(&all, &c->lat[i]);
		json_object_set_new(workers, c->names[i], adm_push_stats_json(counts, &c->lat[i]));
	}
	json_t *j = json_object();
	json_object_set_new(j, "totals", adm_push_stats_json(totals, &all));
	json_object_set_new(j, "workers", workers);
	json_object_set_new(j, "events", c->events ? json_incref(c->events) : json_array());
	json_object_set_new(j, "source", json_string("redis"));
	adm_lat_free(&all);
	adm_reply_json(r, 200, j);
}

static void on_stats(struct adm_req *r, redisReply *reply, int i)
{
	struct push_ctx *c = r->ctx;
	c->stats[i] = adm_hash_from_reply(reply);
	if (!c->stats[i])
		c->failed = 1;
}

static void on_latencies(struct adm_req *r, redisReply *reply, int i)
{
	struct push_ctx *c = r->ctx;
	json_t *list = adm_list_from_reply(reply);
	if (!list) {
		c->failed = 1;
		return;
	}
	size_t k;
	json_t *v;
	json_array_foreach(list, k, v)
	{
		char *end;
		const char *s = json_string_value(v);
		double ms = strtod(s, &end);
		if (end != s && *end == 0 && ms >= 0 && ms < 1e12)
			adm_lat_add(&c->lat[i], ms);
	}
	json_decref(list);
}

/* Step 2: every worker's counters and latencies, in one pipeline. */
static void push_fetch(struct adm_req *r)
{
	struct push_ctx *c = r->ctx;
	for (int i = 0; i < c->n && !c->failed; i++) {
		char skey[256], lkey[256];
		adm_key(r, skey, sizeof(skey), RT_KEY_PUSHSTATS "%s", c->names[i]);
		adm_key(r, lkey, sizeof(lkey), RT_KEY_PUSHLAT "%s", c->names[i]);
		if (adm_redis(r, on_stats, i, "HGETALL", skey, NULL) != 0 ||
		    adm_redis(r, on_latencies, i, "LRANGE", lkey, "0", "-1", NULL) != 0)
			c->failed = 1;
	}
	adm_then(r, push_done);
}

static void on_names(struct adm_req *r, redisReply *reply, int idx)
{
	struct push_ctx *c = r->ctx;
	json_t *names = adm_list_from_reply(reply);
	size_t n = json_array_size(names);
	c->names = calloc(n ? n : 1, sizeof(char *));
	c->stats = calloc(n ? n : 1, sizeof(json_t *));
	c->lat = calloc(n ? n : 1, sizeof(struct adm_latencies));
	if (!names || !c->names || !c->stats || !c->lat) {
		c->failed = 1;
		json_decref(names);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		c->names[c->n] = strdup(json_string_value(json_array_get(names, i)));
		if (c->names[c->n])
			c->n++;
	}
	json_decref(names);
	qsort(c->names, (size_t)c->n, sizeof(char *), cmp_str);
}

/* Events are JSON objects written by the workers; anything else is skipped. */
static void on_events(struct adm_req *r, redisReply *reply, int idx)
{
	struct push_ctx *c = r->ctx;
	json_t *list = adm_list_from_reply(reply);
	if (!list) {
		c->failed = 1;
		return;
	}
	c->events = json_array();
	size_t k;
	json_t *v;
	json_array_foreach(list, k, v)
	{
		json_t *e = json_loads(json_string_value(v), 0, NULL);
		if (json_is_object(e))
			json_array_append_new(c->events, e);
		else
			json_decref(e);
	}
	json_decref(list);
}

void adm_get_push(struct adm_req *r)
{
	struct push_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	r->ctx = c;
	r->ctx_free = push_ctx_free;
	char wkey[256], ekey[256];
	adm_key(r, wkey, sizeof(wkey), RT_KEY_WORKERS);
	adm_key(r, ekey, sizeof(ekey), RT_KEY_PUSHEVENTS);
	if (adm_redis(r, on_names, 0, "SMEMBERS", wkey, NULL) != 0 ||
	    adm_redis(r, on_events, 0, "LRANGE", ekey, "0", "99", NULL) != 0)
		c->failed = 1;
	if (c->failed && r->waiting == 0) {
		reply_local(r);
		return;
	}
	adm_then(r, push_fetch);
}
