/* GET /api/agents/{id} and PUT /api/agents/{id}/primary.
 *
 * An agent's view joins the store (st_agent: has the pool seen it, its last
 * HELLO; st_agent_pending: its pending count) with its routing state in Redis
 * (P agent:ID: primary, pin, live session; P agentpush:ID: its push
 * counters, pool-wide). The store is asked first-hand, so the endpoint
 * needs it (503 without); without Redis the routing fields are null and
 * "source" says "store". */
#include "admin/api.h"
#include "admin/http.h"
#include "admin/redis_json.h"
#include "common/clock.h"
#include "common/log.h"
#include "gateway/node.h"
#include "proto/qs_codec.h"
#include "router/rt_keys.h"
#include "router/rt_push.h"
#include "router/rt_scripts.h"
#include "store/queries.h"

#include <stdlib.h>
#include <string.h>

struct agent_ctx {
	int store_failed;
	char store_err[200];
	int found;          /* a qa_agents row */
	int has_last_hello; /* last_hello_ms is not NULL */
	int64_t last_hello_ms;
	int64_t pending;
	json_t *primary_sent; /* qa_agents.primary_sent, or NULL */
	json_t *agent;        /* HGETALL P agent:ID, or NULL without Redis */
	json_t *push;         /* HGETALL P agentpush:ID, or NULL without Redis */
	int redis_failed;
	int live_checked; /* EXISTS P worker:W asked for the session's worker */
	int session_live; /* that worker is alive: a killed node leaves stale sessions */
};

static void agent_ctx_free(void *p)
{
	struct agent_ctx *c = p;
	json_decref(c->primary_sent);
	json_decref(c->agent);
	json_decref(c->push);
	free(c);
}

static json_t *session_json(const json_t *h)
{
	const char *worker = json_string_value(json_object_get(h, "worker"));
	if (!worker || !*worker)
		return json_null();
	json_t *s = json_object();
	json_object_set_new(s, "worker", json_string(worker));
	json_object_set_new(s, "node", adm_hash_str(h, "node", 1));
	json_object_set_new(s, "on_primary", adm_hash_bool(h, "on_primary"));
	json_object_set_new(s, "since_ms", adm_hash_int(h, "since_ms"));
	json_object_set_new(s, "persist", adm_hash_bool(h, "persist"));
	json_object_set_new(s, "epoch", adm_hash_int(h, "epoch"));
	return s;
}

static json_t *count_or_zero(const json_t *h, const char *key)
{
	json_t *v = adm_hash_int(h, key);
	if (json_is_null(v))
		return json_integer(0);
	return v;
}

static json_t *push_json(const json_t *h)
{
	json_t *p = json_object();
	for (int i = 0; i < RT_PUSH_N; i++)
		if (rt_push_result_per_agent(rt_push_result_names[i]))
			json_object_set_new(p, rt_push_result_names[i],
			                    count_or_zero(h, rt_push_result_names[i]));
	json_object_set_new(p, "last_latency_ms", adm_hash_num(h, "last_latency_ms"));
	return p;
}

static void on_session_live(struct adm_req *r, redisReply *reply, int idx)
{
	struct agent_ctx *c = r->ctx;
	c->session_live = adm_int_from_reply(reply) == 1;
}

static void agent_done(struct adm_req *r)
{
	struct agent_ctx *c = r->ctx;
	const char *id = r->params.v[0];
	if (c->store_failed) {
		adm_reply_error(r, 503, "store_unavailable", "the store did not answer: %s",
		                c->store_err);
		return;
	}
	int redis = !c->redis_failed && c->agent && c->push;
	if (redis && !c->live_checked) {
		const char *w = json_string_value(json_object_get(c->agent, "worker"));
		c->live_checked = 1;
		if (w && *w) {
			char key[256];
			adm_key(r, key, sizeof(key), RT_KEY_WORKER "%s", w);
			if (adm_redis(r, on_session_live, 0, "EXISTS", key, NULL) == 0) {
				adm_then(r, agent_done);
				return;
			}
		}
	}
	if (!c->found && !(redis && json_object_size(c->agent) > 0)) {
		adm_reply_error(r, 404, "not_found", "the pool has never seen agent %s", id);
		return;
	}
	json_t *j = json_object();
	json_object_set_new(j, "agent", json_string(id));
	if (redis) {
		json_object_set_new(j, "primary", adm_hash_str(c->agent, "primary", 1));
		json_object_set_new(j, "pinned", adm_hash_bool(c->agent, "pinned"));
		json_t *sent = adm_hash_str(c->agent, "primary_as_sent", 1);
		if (json_is_null(sent) && c->primary_sent &&
		    !json_object_get(c->agent, "primary_as_sent")) {
			json_decref(sent);
			sent = json_incref(c->primary_sent);
		}
		json_object_set_new(j, "primary_as_sent", sent);
		json_object_set_new(j, "session",
		                    c->session_live ? session_json(c->agent) : json_null());
	} else {
		json_object_set_new(j, "primary", json_null());
		json_object_set_new(j, "pinned", json_null());
		json_object_set_new(j, "primary_as_sent",
		                    c->primary_sent ? json_incref(c->primary_sent) : json_null());
		json_object_set_new(j, "session", json_null());
	}
	json_object_set_new(j, "pending", json_integer(c->pending));
	json_object_set_new(j, "last_sync_ms",
	                    c->has_last_hello ? json_integer(c->last_hello_ms) : json_null());
	json_object_set_new(j, "push", redis ? push_json(c->push) : json_null());
	json_object_set_new(j, "source", json_string(redis ? "redis" : "store"));
	adm_reply_json(r, 200, j);
}

static void agent_store_failed(struct agent_ctx *c, const char *err)
{
	c->store_failed = 1;
	snprintf(c->store_err, sizeof(c->store_err), "%s", err ? err : "bad result");
}

static void on_agent_row(struct adm_req *r, const PGresult *res, const char *err)
{
	struct agent_ctx *c = r->ctx;
	struct st_agent_row a;
	int found = res ? st_agent_read(res, &a) : -1;
	if (found < 0) {
		agent_store_failed(c, err);
		return;
	}
	if (!found)
		return;
	c->found = 1;
	c->has_last_hello = a.has_last_hello;
	c->last_hello_ms = a.last_hello_ms;
	if (a.primary_sent)
		c->primary_sent = json_stringn(a.primary_sent, a.primary_sent_len);
}

static void on_agent_pending(struct adm_req *r, const PGresult *res, const char *err)
{
	struct agent_ctx *c = r->ctx;
	int64_t n = res ? st_count_read(res) : -1;
	if (n < 0)
		agent_store_failed(c, err);
	else
		c->pending = n;
}

static void on_agent_hash(struct adm_req *r, redisReply *reply, int idx)
{
	struct agent_ctx *c = r->ctx;
	json_t *h = adm_hash_from_reply(reply);
	if (!h)
		c->redis_failed = 1;
	if (idx == 0)
		c->agent = h;
	else
		c->push = h;
}

static struct st_op *submit_agent(struct st_conn *c, const void *id, st_done_fn done, void *arg)
{
	return st_agent(c, id, done, arg);
}

static struct st_op *submit_agent_pending(struct st_conn *c, const void *id, st_done_fn done,
                                          void *arg)
{
	return st_agent_pending(c, id, gw_wall_ms(), done, arg);
}

void adm_get_agent(struct adm_req *r)
{
	const char *id = r->params.v[0];
	if (!qs_valid_agent_id(id, strlen(id))) {
		adm_reply_error(r, 404, "not_found",
		                "no such agent (an agent id is 1..120 of [A-Za-z0-9._-])");
		return;
	}
	struct agent_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	r->ctx = c;
	r->ctx_free = agent_ctx_free;
	if (adm_store(r, on_agent_row, submit_agent, id) != 0 ||
	    adm_store(r, on_agent_pending, submit_agent_pending, id) != 0) {
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable");
		return;
	}
	char akey[256], pkey[256];
	adm_key(r, akey, sizeof(akey), RT_KEY_AGENT "%s", id);
	adm_key(r, pkey, sizeof(pkey), RT_KEY_AGENTPUSH "%s", id);
	if (adm_redis(r, on_agent_hash, 0, "HGETALL", akey, NULL) != 0 ||
	    adm_redis(r, on_agent_hash, 1, "HGETALL", pkey, NULL) != 0)
		c->redis_failed = 1;
	adm_then(r, agent_done);
}

/* ---- PUT /api/agents/{id}/primary ----
 * An operator's assignment of a router-assigned agent: the router's script
 * sets it in Redis (REASSIGN through the worker holding the agent's
 * session), the store records it, and the answer is the agent's new JSON.
 * The operator's choice is not held to the load bound; the agent stays
 * router-assigned, so a later drain or loss of that worker moves it. */

struct primary_ctx {
	json_t *agent; /* HGETALL P agent:ID */
	int is_worker; /* SISMEMBER P workers NAME */
	int redis_failed;
	int set_status;
	char worker[65];
};

static void primary_ctx_free(void *p)
{
	struct primary_ctx *c = p;
	json_decref(c->agent);
	free(c);
}

static void on_primary_agent(struct adm_req *r, redisReply *reply, int idx)
{
	struct primary_ctx *c = r->ctx;
	c->agent = adm_hash_from_reply(reply);
	if (!c->agent)
		c->redis_failed = 1;
}

static void on_primary_worker(struct adm_req *r, redisReply *reply, int idx)
{
	struct primary_ctx *c = r->ctx;
	long long v = adm_int_from_reply(reply);
	if (v < 0)
		c->redis_failed = 1;
	c->is_worker = v == 1;
}

static void on_primary_set(struct adm_req *r, redisReply *reply, int idx)
{
	struct primary_ctx *c = r->ctx;
	if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[0]->type == REDIS_REPLY_INTEGER)
		c->set_status = (int)reply->element[0]->integer;
	else
		c->redis_failed = 1;
}

static void on_assign_recorded(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res)
		gw_log(GW_LOG_WARN, "admin: assignment of %s not recorded in the store: %s",
		       r->params.v[0], err);
}

static void reply_redis_down(struct adm_req *r)
{
	adm_reply_error(r, 503, "redis_unavailable",
	                "Redis is unavailable: primaries cannot be changed");
}

static void reply_pinned(struct adm_req *r, const char *id)
{
	adm_reply_error(r, 409, "pinned",
	                "agent %s names its own primary: the router never moves it", id);
}

struct assign_args {
	const char *agent, *worker;
};

static struct st_op *submit_assign(struct st_conn *c, const void *args, st_done_fn done, void *arg)
{
	const struct assign_args *a = args;
	return st_assign(c, &a->agent, &a->worker, 1, done, arg);
}

static void primary_set_done(struct adm_req *r)
{
	struct primary_ctx *c = r->ctx;
	const char *id = r->params.v[0];
	if (c->redis_failed) {
		reply_redis_down(r);
		return;
	}
	if (c->set_status == 2) { /* pinned meanwhile */
		reply_pinned(r, id);
		return;
	}
	if (c->set_status == 3) {
		adm_reply_error(r, 404, "not_found", "unknown worker %s", c->worker);
		return;
	}
	gw_log(GW_LOG_INFO, "admin: primary of %s set to %s", id, c->worker);
	struct assign_args a = {id, c->worker};
	if (adm_store(r, on_assign_recorded, submit_assign, &a) != 0)
		gw_log(GW_LOG_WARN, "admin: store down: assignment of %s not recorded", id);
	/* Answer with the agent's JSON, as GET /api/agents/{id} writes it. */
	r->ctx_free(r->ctx);
	r->ctx = NULL;
	r->ctx_free = NULL;
	adm_get_agent(r);
}

static void primary_done(struct adm_req *r)
{
	struct primary_ctx *c = r->ctx;
	const char *id = r->params.v[0];
	if (c->redis_failed) {
		reply_redis_down(r);
		return;
	}
	if (json_object_size(c->agent) == 0) {
		adm_reply_error(r, 404, "not_found",
		                "agent %s has no routing state (it has not said HELLO)", id);
		return;
	}
	const char *pinned = json_string_value(json_object_get(c->agent, "pinned"));
	if (pinned && strcmp(pinned, "1") == 0) {
		reply_pinned(r, id);
		return;
	}
	if (!c->is_worker) {
		adm_reply_error(r, 404, "not_found", "unknown worker %s", c->worker);
		return;
	}
	char prefix[128];
	adm_key(r, prefix, sizeof(prefix), "%s", "");
	if (adm_redis(r, on_primary_set, 0, "EVAL", rt_lua_set_primary, "0", prefix, id, c->worker,
	              NULL) != 0) {
		reply_redis_down(r);
		return;
	}
	adm_then(r, primary_set_done);
}

void adm_put_agent_primary(struct adm_req *r)
{
	const char *id = r->params.v[0];
	if (!qs_valid_agent_id(id, strlen(id))) {
		adm_reply_error(r, 404, "not_found",
		                "no such agent (an agent id is 1..120 of [A-Za-z0-9._-])");
		return;
	}
	json_t *body = adm_body_object(r);
	if (!body)
		return;
	const char *key;
	json_t *v;
	json_object_foreach(body, key, v)
	{
		if (strcmp(key, "worker") != 0) {
			adm_reply_bad_field(
			    r, key, "unknown field \"%s\" (the body is {\"worker\":NAME})", key);
			json_decref(body);
			return;
		}
	}
	const char *worker = json_string_value(json_object_get(body, "worker"));
	if (!worker || !qs_valid_worker_name(worker, strlen(worker))) {
		adm_reply_bad_field(r, "worker",
		                    "\"worker\" must be a worker name (1..64 of [a-z0-9._-])");
		json_decref(body);
		return;
	}
	struct primary_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		json_decref(body);
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	snprintf(c->worker, sizeof(c->worker), "%s", worker);
	json_decref(body);
	r->ctx = c;
	r->ctx_free = primary_ctx_free;
	char akey[256], wkey[256];
	adm_key(r, akey, sizeof(akey), RT_KEY_AGENT "%s", id);
	adm_key(r, wkey, sizeof(wkey), RT_KEY_WORKERS);
	if (adm_redis(r, on_primary_agent, 0, "HGETALL", akey, NULL) != 0 ||
	    adm_redis(r, on_primary_worker, 0, "SISMEMBER", wkey, c->worker, NULL) != 0)
		c->redis_failed = 1;
	adm_then(r, primary_done);
}
