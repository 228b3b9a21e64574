/* GET /healthz, GET /api/workers, POST /api/workers/{name}/drain|resume,
 * DELETE /api/workers/{name}.
 *
 * /healthz looks only at this node: its own store and Redis connections and
 * the gauges of its local workers. /api/workers is pool-wide, from Redis
 * (docs/design.md "Redis: routing state"): SMEMBERS P workers, then for each
 * name HGETALL P worker:NAME and SCARD P primaries:NAME in one pipeline. A
 * member whose hash has expired is "down". Without Redis the list falls back
 * to the local workers, marked "source":"local". */
#include "admin/api.h"
#include "admin/http.h"
#include "admin/redis_json.h"
#include "common/log.h"
#include "gateway/node.h"
#include "proto/qs_codec.h"
#include "router/rt_keys.h"
#include "router/rt_scripts.h"
#include "store/queries.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static struct gw_worker *local_worker(struct gw_node *node, const char *name)
{
	for (int i = 0; i < node->n_workers; i++)
		if (strcmp(node->workers[i]->wc->name, name) == 0)
			return node->workers[i];
	return NULL;
}

/* ---- GET /healthz ---- */

void adm_get_healthz(struct adm_req *r)
{
	struct gw_node *node = r->node;
	json_t *reasons = json_array();
	char s[160];
	if (!adm_store_up(node))
		json_array_append_new(reasons, json_string("store unavailable"));
	if (!adm_redis_up(node))
		json_array_append_new(reasons, json_string("redis unavailable"));
	for (int i = 0; i < node->n_workers; i++) {
		const struct gw_worker *w = node->workers[i];
		if (LOAD(w->gauges.draining)) {
			snprintf(s, sizeof(s), "worker %s draining", w->wc->name);
			json_array_append_new(reasons, json_string(s));
		}
		if (!LOAD(w->gauges.store_up)) {
			snprintf(s, sizeof(s), "worker %s store unavailable", w->wc->name);
			json_array_append_new(reasons, json_string(s));
		}
		if (!LOAD(w->gauges.redis_up)) {
			snprintf(s, sizeof(s), "worker %s redis unavailable", w->wc->name);
			json_array_append_new(reasons, json_string(s));
		}
	}
	json_t *j = json_object();
	if (json_array_size(reasons) == 0) {
		json_decref(reasons);
		json_object_set_new(j, "status", json_string("ok"));
		adm_reply_json(r, 200, j);
		return;
	}
	json_object_set_new(j, "status", json_string("degraded"));
	json_object_set_new(j, "reasons", reasons);
	adm_reply_json(r, 503, j);
}

/* ---- GET /api/workers ---- */

/* The address agents know a worker by first ("host:port", v6 in brackets). */
static void first_address(const struct gw_worker_conf *wc, char *out, size_t n)
{
	const struct gw_addr *a = wc->n_adv > 0 ? &wc->adv[0] : &wc->listen_addr;
	if (strchr(a->host, ':'))
		snprintf(out, n, "[%s]:%u", a->host, (unsigned)a->port);
	else
		snprintf(out, n, "%s:%u", a->host, (unsigned)a->port);
}

/* A local worker as this node sees it (no Redis). */
static json_t *local_entry(struct gw_node *node, const struct gw_worker *w)
{
	char addr[300];
	first_address(w->wc, addr, sizeof(addr));
	json_t *e = json_object();
	json_object_set_new(e, "name", json_string(w->wc->name));
	json_object_set_new(e, "node", json_string(node->conf.node_name));
	json_object_set_new(e, "address", json_string(addr));
	json_object_set_new(e, "state",
	                    json_string(LOAD(w->gauges.draining) ? "draining" : "serving"));
	json_object_set_new(e, "sessions", json_integer(LOAD(w->gauges.sessions)));
	json_object_set_new(e, "primaries", json_null());
	json_object_set_new(e, "load", json_null());
	json_object_set_new(e, "local", json_true());
	json_object_set_new(e, "source", json_string("local"));
	return e;
}

struct workers_ctx {
	char **names; /* sorted */
	int n;
	json_t **hash;        /* HGETALL P worker:NAME, per name */
	json_t **info;        /* HGETALL P workerinfo:NAME: node and address, kept when down */
	long long *primaries; /* SCARD P primaries:NAME, per name */
	long long *assigned;  /* SCARD P assigned:NAME: the router's load, per name */
	int failed;           /* a Redis reply is missing: answer from local state */
};

static void workers_ctx_free(void *p)
{
	struct workers_ctx *c = p;
	for (int i = 0; i < c->n; i++) {
		free(c->names[i]);
		json_decref(c->hash[i]);
		json_decref(c->info[i]);
	}
	free(c->info);
	free(c->names);
	free(c->hash);
	free(c->primaries);
	free(c->assigned);
	free(c);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void reply_local_workers(struct adm_req *r)
{
	json_t *list = json_array();
	for (int i = 0; i < r->node->n_workers; i++)
		json_array_append_new(list, local_entry(r->node, r->node->workers[i]));
	adm_reply_json(r, 200, list);
}

static json_t *pool_entry(struct adm_req *r, struct workers_ctx *c, int i)
{
	const json_t *h = c->hash[i];
	struct gw_worker *w = local_worker(r->node, c->names[i]);
	json_t *e = json_object();
	json_object_set_new(e, "name", json_string(c->names[i]));
	if (json_object_size(h) > 0) {
		json_object_set_new(e, "node", adm_hash_str(h, "node", 1));
		json_object_set_new(e, "address", adm_hash_str(h, "address", 1));
		json_object_set_new(e, "state", adm_hash_str(h, "state", 1));
		json_t *sessions = adm_hash_int(h, "sessions");
		json_object_set_new(e, "sessions",
		                    json_is_null(sessions) ? json_integer(0) : sessions);
		json_object_set_new(e, "load", adm_hash_num(h, "load"));
		json_object_set_new(e, "syncs_per_s", adm_hash_num(h, "syncs_per_s"));
		json_object_set_new(e, "capacity", adm_hash_int(h, "capacity"));
		json_object_set_new(e, "updated_ms", adm_hash_int(h, "updated_ms"));
	} else {
		/* The heartbeat hash expired: down. What this node knows of its
		 * own workers still names them. */
		char addr[300];
		if (w)
			first_address(w->wc, addr, sizeof(addr));
		const json_t *info = c->info[i];
		json_object_set_new(e, "node",
		                    w ? json_string(r->node->conf.node_name)
		                      : adm_hash_str(info, "node", 1));
		json_object_set_new(e, "address",
		                    w ? json_string(addr) : adm_hash_str(info, "address", 1));
		json_object_set_new(e, "state", json_string("down"));
		json_object_set_new(e, "sessions", json_integer(0));
		json_object_set_new(e, "load", json_null());
		json_object_set_new(e, "syncs_per_s", json_null());
		json_object_set_new(e, "capacity", adm_hash_int(info, "capacity"));
		json_object_set_new(e, "updated_ms", json_null());
		json_object_set_new(e, "last_seen_ms", adm_hash_int(info, "last_seen_ms"));
	}
	json_object_set_new(e, "assigned",
	                    c->assigned[i] >= 0 ? json_integer(c->assigned[i]) : json_null());
	json_object_set_new(e, "primaries",
	                    c->primaries[i] >= 0 ? json_integer(c->primaries[i])
	                                         : adm_hash_int(h, "primaries"));
	json_object_set_new(e, "local", json_boolean(w != NULL));
	json_object_set_new(e, "source", json_string("redis"));
	return e;
}

static void workers_done(struct adm_req *r)
{
	struct workers_ctx *c = r->ctx;
	if (c->failed) {
		reply_local_workers(r);
		return;
	}
	json_t *list = json_array();
	for (int i = 0; i < c->n; i++)
		json_array_append_new(list, pool_entry(r, c, i));
	/* A local worker that has not registered (yet) is still shown. */
	for (int i = 0; i < r->node->n_workers; i++) {
		const char *name = r->node->workers[i]->wc->name;
		if (!bsearch(&name, c->names, (size_t)c->n, sizeof(char *), cmp_str))
			json_array_append_new(list, local_entry(r->node, r->node->workers[i]));
	}
	adm_reply_json(r, 200, list);
}

static void on_worker_hash(struct adm_req *r, redisReply *reply, int i)
{
	struct workers_ctx *c = r->ctx;
	c->hash[i] = adm_hash_from_reply(reply);
	if (!c->hash[i])
		c->failed = 1;
}

static void on_worker_info(struct adm_req *r, redisReply *reply, int i)
{
	struct workers_ctx *c = r->ctx;
	c->info[i] = adm_hash_from_reply(reply); /* NULL is fine: fields show null */
}

static void on_worker_primaries(struct adm_req *r, redisReply *reply, int i)
{
	struct workers_ctx *c = r->ctx;
	c->primaries[i] = adm_int_from_reply(reply);
}

static void on_worker_assigned(struct adm_req *r, redisReply *reply, int i)
{
	struct workers_ctx *c = r->ctx;
	c->assigned[i] = adm_int_from_reply(reply);
}

static void on_worker_names(struct adm_req *r, redisReply *reply, int idx)
{
	struct workers_ctx *c = r->ctx;
	json_t *names = adm_list_from_reply(reply);
	size_t n = json_array_size(names);
	c->names = calloc(n ? n : 1, sizeof(char *));
	c->hash = calloc(n ? n : 1, sizeof(json_t *));
	c->info = calloc(n ? n : 1, sizeof(json_t *));
	c->primaries = calloc(n ? n : 1, sizeof(long long));
	c->assigned = calloc(n ? n : 1, sizeof(long long));
	if (!names || !c->names || !c->hash || !c->info || !c->primaries || !c->assigned) {
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

/* Step 2: every member's hash and primaries count, in one pipeline. */
static void workers_fetch(struct adm_req *r)
{
	struct workers_ctx *c = r->ctx;
	for (int i = 0; i < c->n && !c->failed; i++) {
		char hkey[256], pkey[256], akey[256];
		adm_key(r, hkey, sizeof(hkey), RT_KEY_WORKER "%s", c->names[i]);
		adm_key(r, pkey, sizeof(pkey), RT_KEY_PRIMARIES "%s", c->names[i]);
		adm_key(r, akey, sizeof(akey), RT_KEY_ASSIGNED "%s", c->names[i]);
		c->primaries[i] = -1;
		c->assigned[i] = -1;
		char ikey[256];
		adm_key(r, ikey, sizeof(ikey), RT_KEY_WORKERINFO "%s", c->names[i]);
		if (adm_redis(r, on_worker_hash, i, "HGETALL", hkey, NULL) != 0 ||
		    adm_redis(r, on_worker_info, i, "HGETALL", ikey, NULL) != 0 ||
		    adm_redis(r, on_worker_primaries, i, "SCARD", pkey, NULL) != 0 ||
		    adm_redis(r, on_worker_assigned, i, "SCARD", akey, NULL) != 0)
			c->failed = 1;
	}
	adm_then(r, workers_done);
}

void adm_get_workers(struct adm_req *r)
{
	struct workers_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	r->ctx = c;
	r->ctx_free = workers_ctx_free;
	char key[256];
	adm_key(r, key, sizeof(key), RT_KEY_WORKERS);
	if (adm_redis(r, on_worker_names, 0, "SMEMBERS", key, NULL) != 0) {
		reply_local_workers(r);
		return;
	}
	adm_then(r, workers_fetch);
}

/* ---- POST /api/workers/{name}/drain and /resume ----
 * A local worker gets the command on its thread; a worker of another node
 * through the pool (Redis); an unknown one is 404. */

struct command_ctx {
	int member;   /* SISMEMBER P workers NAME */
	json_t *node; /* HGET P worker:NAME node, or null */
	const char *verb;
};

static void command_ctx_free(void *p)
{
	struct command_ctx *c = p;
	json_decref(c->node);
	free(c);
}

static void on_member(struct adm_req *r, redisReply *reply, int idx)
{
	struct command_ctx *c = r->ctx;
	c->member = adm_int_from_reply(reply) == 1;
}

static void on_node(struct adm_req *r, redisReply *reply, int idx)
{
	struct command_ctx *c = r->ctx;
	if (reply && reply->type == REDIS_REPLY_STRING && reply->len > 0)
		c->node = json_stringn(reply->str, reply->len);
}

/* A worker of another node: the command goes through its pool channel
 * (P ctl:NAME), and its own thread acts on it. A known worker that is down
 * cannot be drained: 409. */
static void command_elsewhere(struct adm_req *r)
{
	struct command_ctx *c = r->ctx;
	const char *name = r->params.v[0];
	if (!c->member && !c->node) {
		adm_reply_error(r, 404, "not_found", "unknown worker %s", name);
		return;
	}
	if (!c->node) {
		adm_reply_error(r, 409, "worker_down", "worker %s is down: there is nothing to %s",
		                name, c->verb);
		return;
	}
	char channel[256];
	adm_key(r, channel, sizeof(channel), RT_CHAN_CTL "%s", name);
	if (adm_redis(r, NULL, 0, "PUBLISH", channel, c->verb, NULL) != 0) {
		adm_reply_error(r, 503, "redis_unavailable",
		                "Redis is unavailable: cannot reach %s", name);
		return;
	}
	gw_log(GW_LOG_INFO, "admin: %s worker %s (node %s) through the pool", c->verb, name,
	       json_string_value(c->node));
	json_t *j = json_object();
	json_object_set_new(j, "worker", json_string(name));
	json_object_set_new(j, "node", json_incref(c->node));
	json_object_set_new(j, "state",
	                    json_string(strcmp(c->verb, "drain") == 0 ? "draining" : "serving"));
	adm_reply_json(r, 202, j);
}

static void worker_command(struct adm_req *r, enum gw_command cmd, const char *verb)
{
	const char *name = r->params.v[0];
	struct gw_worker *w = local_worker(r->node, name);
	if (w) {
		gw_worker_post(w, cmd);
		gw_log(GW_LOG_INFO, "admin: %s worker %s", verb, name);
		json_t *j = json_object();
		json_object_set_new(j, "worker", json_string(name));
		json_object_set_new(j, "node", json_string(r->node->conf.node_name));
		json_object_set_new(j, "state",
		                    json_string(cmd == GW_CMD_DRAIN ? "draining" : "serving"));
		adm_reply_json(r, 202, j);
		return;
	}
	if (!qs_valid_worker_name(name, strlen(name))) {
		adm_reply_error(r, 404, "not_found", "unknown worker (not a valid worker name)");
		return;
	}
	struct command_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	c->verb = verb;
	r->ctx = c;
	r->ctx_free = command_ctx_free;
	char set[256], hash[256];
	adm_key(r, set, sizeof(set), RT_KEY_WORKERS);
	adm_key(r, hash, sizeof(hash), RT_KEY_WORKER "%s", name);
	if (adm_redis(r, on_member, 0, "SISMEMBER", set, name, NULL) != 0 ||
	    adm_redis(r, on_node, 0, "HGET", hash, "node", NULL) != 0) {
		if (r->waiting == 0) {
			adm_reply_error(
			    r, 404, "not_found",
			    "unknown worker %s: not a worker of this node, and Redis is "
			    "unavailable to tell whether the pool has one",
			    name);
			return;
		}
	}
	adm_then(r, command_elsewhere);
}

void adm_post_worker_drain(struct adm_req *r)
{
	worker_command(r, GW_CMD_DRAIN, "drain");
}

void adm_post_worker_resume(struct adm_req *r)
{
	worker_command(r, GW_CMD_RESUME, "resume");
}

/* ---- DELETE /api/workers/{name} (issue 19: retiring a worker or a node) ----
 * Only a worker that is down (no heartbeat): 409 otherwise. retire.lua takes
 * it out of the pool's registry, at once if no router-assigned agent names
 * it, else once the routers have moved them (at once: as for a worker lost
 * longer than reassign_after); its pinned agents are listed as unresolved.
 * Then its row in the store's known workers goes. */

struct retire_ctx {
	char result[16]; /* retire.lua's: alive, unknown, retiring, removed */
	long long assigned, pinned;
	int in_store; /* the store knew it */
	int failed;
};

static void on_retired(struct adm_req *r, redisReply *reply, int idx)
{
	struct retire_ctx *c = r->ctx;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[0]->len >= sizeof(c->result)) {
		c->failed = 1;
		return;
	}
	memcpy(c->result, reply->element[0]->str, reply->element[0]->len);
	c->assigned = adm_int_from_reply(reply->element[1]);
	c->pinned = adm_int_from_reply(reply->element[2]);
}

static void on_store_removed(struct adm_req *r, const PGresult *res, const char *err)
{
	struct retire_ctx *c = r->ctx;
	if (!res) {
		adm_reply_error(r, 503, "store_unavailable",
		                "the store did not answer (%s): run the removal again",
		                err ? err : "?");
		return;
	}
	c->in_store = PQntuples(res) == 1;
	const char *name = r->params.v[0];
	if (strcmp(c->result, "unknown") == 0 && !c->in_store) {
		adm_reply_error(r, 404, "not_found", "unknown worker %s", name);
		return;
	}
	const char *state = strcmp(c->result, "retiring") == 0 ? "retiring" : "removed";
	gw_log(GW_LOG_INFO,
	       "admin: worker %s %s: %lld router-assigned agents to move, %lld pinned agents "
	       "now unresolved",
	       name, state, c->assigned, c->pinned);
	json_t *j = json_object();
	json_object_set_new(j, "worker", json_string(name));
	json_object_set_new(j, "state", json_string(state));
	json_object_set_new(j, "agents_to_move", json_integer(c->assigned));
	json_object_set_new(j, "pinned_unresolved", json_integer(c->pinned));
	adm_reply_json(r, strcmp(state, "removed") == 0 ? 200 : 202, j);
}

static struct st_op *submit_remove(struct st_conn *c, const void *name, st_done_fn done, void *arg)
{
	return st_worker_remove(c, name, done, arg);
}

static void retire_decided(struct adm_req *r)
{
	struct retire_ctx *c = r->ctx;
	const char *name = r->params.v[0];
	if (c->failed) {
		adm_reply_error(r, 503, "redis_unavailable",
		                "Redis did not answer: the pool's registry cannot be changed");
		return;
	}
	if (strcmp(c->result, "alive") == 0) {
		adm_reply_error(r, 409, "worker_not_down",
		                "worker %s has a heartbeat: stop its node (or drain it) first",
		                name);
		return;
	}
	if (adm_store(r, on_store_removed, submit_remove, name) != 0)
		adm_reply_error(r, 503, "store_unavailable",
		                "the store is unavailable: run the removal again");
}

void adm_delete_worker(struct adm_req *r)
{
	const char *name = r->params.v[0];
	if (local_worker(r->node, name)) {
		adm_reply_error(r, 409, "worker_not_down",
		                "worker %s is this node's: stop the node first", name);
		return;
	}
	if (!qs_valid_worker_name(name, strlen(name))) {
		adm_reply_error(r, 404, "not_found", "unknown worker (not a valid worker name)");
		return;
	}
	struct retire_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	r->ctx = c;
	r->ctx_free = free;
	char prefix[128];
	adm_key(r, prefix, sizeof(prefix), "%s", "");
	if (adm_redis(r, on_retired, 0, "EVAL", rt_lua_retire, "0", prefix, name, NULL) != 0) {
		adm_reply_error(r, 503, "redis_unavailable",
		                "Redis is unavailable: the pool's registry cannot be changed");
		return;
	}
	adm_then(r, retire_decided);
}
