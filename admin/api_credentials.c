/* Agent credentials through the admin port (docs/operations.md "Agent credentials"),
 * the same as `qagw agent add|remove|list`:
 *   POST   /api/agents               {"agent":"ID"} -> 201 {"agent","token"} (shown once)
 *   DELETE /api/agents/{id}/token    -> 200 {"agent","removed":true}; 404 if none;
 *                                       the agent's live sessions, on any node, end
 *                                       ERROR auth within a second (credentials.h)
 *   GET    /api/agents               -> [{"agent","created_ms"}, ...]
 * The store keeps only each token's SHA-256 (gateway/credentials.c). */
#include "admin/api.h"
#include "admin/http.h"
#include "common/clock.h"
#include "gateway/credentials.h"
#include "proto/qs_codec.h"
#include "store/queries.h"

#include <stdlib.h>
#include <string.h>

static void on_added(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res) {
		adm_reply_error(r, 503, "store_unavailable", "the store did not answer: %s",
		                err ? err : "?");
		return;
	}
	if (!st_credential_changed(res)) {
		adm_reply_error(r, 409, "exists", "agent %s already has a token (DELETE it first)",
		                (const char *)r->ctx);
		return;
	}
	json_t *j = json_object();
	json_object_set_new(j, "agent", json_string(r->ctx));
	json_object_set_new(j, "token", json_string((const char *)r->ctx + 128));
	explicit_bzero((char *)r->ctx + 128, 65); /* shown once */
	adm_reply_json(r, 201, j);
}

struct add_args {
	const char *agent;
	const uint8_t *sha256;
	int64_t created_ms;
};

static struct st_op *submit_add(struct st_conn *c, const void *args, st_done_fn done, void *arg)
{
	const struct add_args *a = args;
	return st_credential_add(c, a->agent, a->sha256, a->created_ms, done, arg);
}

/* The request's context holds the fresh token until it is answered (or
 * not: a store failure frees it unsent). */
#define CTX_LEN (128 + 65)
static void free_ctx(void *ctx)
{
	if (ctx)
		explicit_bzero(ctx, CTX_LEN);
	free(ctx);
}

void adm_post_agent(struct adm_req *r)
{
	json_t *body = adm_body_object(r);
	if (!body)
		return;
	const char *key;
	json_t *v;
	json_object_foreach(body, key, v)
	{
		if (strcmp(key, "agent") != 0) {
			adm_reply_bad_field(
			    r, key, "unknown field \"%s\" (the body is {\"agent\":ID})", key);
			json_decref(body);
			return;
		}
	}
	const char *id = json_string_value(json_object_get(body, "agent"));
	if (!id || !qs_valid_agent_id(id, strlen(id))) {
		adm_reply_bad_field(r, "agent",
		                    "\"agent\" must be an agent id (1..120 of [A-Za-z0-9._-])");
		json_decref(body);
		return;
	}
	/* ctx: the id at 0, the token at 128 (both NUL-terminated). */
	char *ctx = calloc(1, CTX_LEN);
	uint8_t sha[32];
	if (!ctx || gw_token_new(ctx + 128, sha) != 0) {
		free(ctx);
		json_decref(body);
		adm_reply_error(r, 500, "internal", "no token could be made");
		return;
	}
	memcpy(ctx, id, strlen(id) + 1);
	json_decref(body);
	r->ctx = ctx;
	r->ctx_free = free_ctx;
	struct add_args a = {ctx, sha, gw_wall_ms()};
	if (adm_store(r, on_added, submit_add, &a) != 0)
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable");
}

static void on_removed(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res) {
		adm_reply_error(r, 503, "store_unavailable", "the store did not answer: %s",
		                err ? err : "?");
		return;
	}
	const char *id = r->params.v[0];
	if (!st_credential_changed(res)) {
		adm_reply_error(r, 404, "not_found", "agent %s has no token", id);
		return;
	}
	json_t *j = json_object();
	json_object_set_new(j, "agent", json_string(id));
	json_object_set_new(j, "removed", json_true());
	adm_reply_json(r, 200, j);
}

static struct st_op *submit_remove(struct st_conn *c, const void *agent, st_done_fn done, void *arg)
{
	return st_credential_remove(c, agent, done, arg);
}

void adm_delete_agent_token(struct adm_req *r)
{
	const char *id = r->params.v[0];
	if (!qs_valid_agent_id(id, strlen(id))) {
		adm_reply_error(r, 404, "not_found", "no such agent");
		return;
	}
	if (adm_store(r, on_removed, submit_remove, id) != 0)
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable");
}

static void on_listed(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res) {
		adm_reply_error(r, 503, "store_unavailable", "the store did not answer: %s",
		                err ? err : "?");
		return;
	}
	int n = st_credential_rows(res);
	if (n < 0) {
		adm_reply_error(r, 503, "store_unavailable", "the store gave an unexpected result");
		return;
	}
	json_t *list = json_array();
	for (int i = 0; i < n; i++) {
		struct st_credential cr;
		st_credential_row(res, i, &cr);
		json_t *e = json_object();
		json_object_set_new(e, "agent", json_stringn(cr.agent, cr.agent_len));
		json_object_set_new(e, "created_ms", json_integer(cr.created_ms));
		json_array_append_new(list, e);
	}
	adm_reply_json(r, 200, list);
}

static struct st_op *submit_list(struct st_conn *c, const void *none, st_done_fn done, void *arg)
{
	return st_credential_list(c, done, arg);
}

void adm_get_agents(struct adm_req *r)
{
	if (adm_store(r, on_listed, submit_list, NULL) != 0)
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable");
}
