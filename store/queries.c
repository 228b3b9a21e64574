/* The gateway's statements besides the agent requests; see queries.h.
 * Each function builds its parameters (binary, typed), submits, and frees
 * them: st_submit has sent them by the time it returns. Results are binary
 * too (st_submit's, and the blocking calls ask for the same). */
#include "store/queries.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The rows of res when it has ncols columns, else -1. */
static int rows(const PGresult *res, int ncols)
{
	return PQnfields(res) == ncols ? PQntuples(res) : -1;
}

/* ---- router assignments ---- */

struct st_op *st_assign(struct st_conn *c, const char *const *agents, const char *const *primaries,
                        int n, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text_array(&p, agents, n);
	st_params_text_array(&p, primaries, n);
	return st_submit_clear(c, "SELECT qa_assign($1, $2)", &p, done, arg);
}

struct st_op *st_router_assignments(struct st_conn *c, st_done_fn done, void *arg)
{
	struct st_params none = {0};
	return st_submit_clear(c,
	                       "SELECT agent_id, assigned FROM qa_agents\n"
	                       " WHERE assigned <> '' AND coalesce(primary_sent, '') = ''",
	                       &none, done, arg);
}

/* ---- the lifecycle job ---- */

struct st_op *st_expire(struct st_conn *c, int64_t now_ms, int32_t limit, st_done_fn done,
                        void *arg)
{
	struct st_params p = {0};
	st_params_int8(&p, now_ms);
	st_params_int4(&p, limit);
	return st_submit_clear(c, "SELECT qa_expire($1, $2)", &p, done, arg);
}

struct st_op *st_purge(struct st_conn *c, int64_t before_ms, int32_t limit, st_done_fn done,
                       void *arg)
{
	struct st_params p = {0};
	st_params_int8(&p, before_ms);
	st_params_int4(&p, limit);
	return st_submit_clear(c, "SELECT qa_purge($1, $2)", &p, done, arg);
}

int st_batch_read(const PGresult *res)
{
	return PQntuples(res) == 1 ? st_get_int4(res, 0, 0) : 0;
}

/* ---- server-side sends ---- */

struct st_op *st_listen_sends(struct st_conn *c, st_done_fn done, void *arg)
{
	struct st_params none = {0};
	return st_submit_clear(c, "LISTEN " ST_SEND_CHANNEL, &none, done, arg);
}

/* ---- agents ---- */

struct st_op *st_agent(struct st_conn *c, const char *agent, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	return st_submit_clear(
	    c, "SELECT last_hello_ms, primary_sent FROM qa_agents WHERE agent_id = $1", &p, done,
	    arg);
}

int st_agent_read(const PGresult *res, struct st_agent_row *out)
{
	memset(out, 0, sizeof(*out));
	int n = rows(res, 2);
	if (n <= 0)
		return n;
	if (!PQgetisnull(res, 0, 0)) {
		out->has_last_hello = 1;
		out->last_hello_ms = st_get_int8(res, 0, 0);
	}
	if (!PQgetisnull(res, 0, 1) && PQgetlength(res, 0, 1) > 0) {
		out->primary_sent = PQgetvalue(res, 0, 1);
		out->primary_sent_len = (size_t)PQgetlength(res, 0, 1);
	}
	return 1;
}

/* The one place that counts an agent's pending messages for the admin port
 * (qa_hello counts the same for its PUSH): a scan of the agent's rows in
 * the pending index. */
struct st_op *st_agent_pending(struct st_conn *c, const char *agent, int64_t now_ms,
                               st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	st_params_int8(&p, now_ms);
	return st_submit_clear(
	    c,
	    "SELECT count(*) FROM qa_messages\n"
	    " WHERE recipient = $1 AND status = 1 AND (expires_ms = 0 OR expires_ms > $2)",
	    &p, done, arg);
}

int64_t st_count_read(const PGresult *res)
{
	if (rows(res, 1) != 1 || PQgetlength(res, 0, 0) != 8)
		return -1;
	return st_get_int8(res, 0, 0);
}

/* The one place that ranks recipients by pending messages, as the quota
 * counts them: from the counters (migration 8), a scan of one row per
 * recipient, not of the pending messages. */
struct st_op *st_most_pending(struct st_conn *c, int32_t limit, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_int4(&p, limit);
	return st_submit_clear(
	    c,
	    "SELECT i.recipient, i.n - coalesce(o.n, 0) AS pending\n"
	    "  FROM qa_pending_in i LEFT JOIN qa_pending_out o USING (recipient)\n"
	    " WHERE i.n - coalesce(o.n, 0) > 0 ORDER BY 2 DESC, 1 LIMIT $1",
	    &p, done, arg);
}

struct st_op *st_pending_of(struct st_conn *c, const char *const *agents, int n, st_done_fn done,
                            void *arg)
{
	struct st_params p = {0};
	st_params_text_array(&p, agents, n);
	return st_submit_clear(
	    c,
	    "SELECT i.recipient, i.n - coalesce(o.n, 0) AS pending\n"
	    "  FROM unnest($1::text[]) AS a(r) JOIN qa_pending_in i ON i.recipient = a.r\n"
	    "  LEFT JOIN qa_pending_out o ON o.recipient = a.r\n"
	    " WHERE i.n - coalesce(o.n, 0) > 0",
	    &p, done, arg);
}

struct st_op *st_worker_remove(struct st_conn *c, const char *name, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, name, strlen(name));
	return st_submit_clear(c, "DELETE FROM qa_workers WHERE name = $1 RETURNING name", &p, done,
	                       arg);
}

struct st_op *st_backlog(struct st_conn *c, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	return st_submit_clear(
	    c,
	    "SELECT (SELECT coalesce(sum(n), 0)::bigint FROM qa_pending_in)"
	    " - (SELECT coalesce(sum(n), 0)::bigint FROM qa_pending_out),"
	    " coalesce((SELECT min(created_ms) FROM qa_messages WHERE status = 1), 0)",
	    &p, done, arg);
}

int st_backlog_read(const PGresult *res, int64_t *pending, int64_t *oldest_created_ms)
{
	if (rows(res, 2) != 1)
		return -1;
	*pending = st_get_int8(res, 0, 0);
	*oldest_created_ms = st_get_int8(res, 0, 1);
	return 0;
}

int st_pending_rows(const PGresult *res)
{
	return rows(res, 2);
}

void st_pending_row(const PGresult *res, int row, struct st_pending_row *out)
{
	out->agent = PQgetvalue(res, row, 0);
	out->agent_len = (size_t)PQgetlength(res, row, 0);
	out->pending = st_get_int8(res, row, 1);
}

/* ---- agent credentials ---- */

/* RETURNING makes "changed" one row, for the pipelined and blocking calls alike. */
static const char credential_add_sql[] =
    "INSERT INTO qa_credentials (agent_id, token_sha256, created_ms)"
    " VALUES ($1, $2, $3) ON CONFLICT (agent_id) DO NOTHING RETURNING agent_id";
static const char credential_remove_sql[] =
    "WITH d AS (DELETE FROM qa_credentials WHERE agent_id = $1 RETURNING agent_id)"
    " SELECT agent_id, pg_notify('" ST_TOKEN_CHANNEL "', agent_id) FROM d";
static const char credential_list_sql[] =
    "SELECT agent_id, created_ms FROM qa_credentials ORDER BY agent_id";

static void credential_add_params(struct st_params *p, const char *agent, const uint8_t sha256[32],
                                  int64_t created_ms)
{
	st_params_text(p, agent, strlen(agent));
	st_params_bytea(p, sha256, 32);
	st_params_int8(p, created_ms);
}

struct st_op *st_credential_add(struct st_conn *c, const char *agent, const uint8_t sha256[32],
                                int64_t created_ms, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	credential_add_params(&p, agent, sha256, created_ms);
	return st_submit_clear(c, credential_add_sql, &p, done, arg);
}

struct st_op *st_credential_remove(struct st_conn *c, const char *agent, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	return st_submit_clear(c, credential_remove_sql, &p, done, arg);
}

struct st_op *st_listen_tokens(struct st_conn *c, st_done_fn done, void *arg)
{
	struct st_params none = {0};
	return st_submit_clear(c, "LISTEN " ST_TOKEN_CHANNEL, &none, done, arg);
}

struct st_op *st_credentials_revoked(struct st_conn *c, const char *const *agents,
                                     const uint8_t *const *sha256, int n, st_done_fn done,
                                     void *arg)
{
	struct st_params p = {0};
	struct st_array a;
	p.reuse = 1;
	st_params_text_array(&p, agents, n);
	st_array_begin(&a, ST_OID_BYTEA);
	for (int i = 0; i < n; i++)
		st_array_add(&a, sha256[i], 32);
	st_params_array(&p, &a, ST_OID_BYTEA_ARRAY);
	return st_submit_clear(
	    c,
	    "SELECT t.agent_id, t.sha FROM unnest($1::text[], $2::bytea[]) AS t(agent_id, sha)"
	    " WHERE NOT EXISTS (SELECT 1 FROM qa_credentials c"
	    " WHERE c.agent_id = t.agent_id AND c.token_sha256 = t.sha)",
	    &p, done, arg);
}

int st_revoked_rows(const PGresult *res)
{
	return PQnfields(res) == 2 ? PQntuples(res) : -1;
}

void st_revoked_row(const PGresult *res, int row, const char **agent, const uint8_t **sha256)
{
	static const uint8_t none[32];
	*agent = PQgetvalue(res, row, 0);
	*sha256 = PQgetlength(res, row, 1) == 32 ? (const uint8_t *)PQgetvalue(res, row, 1) : none;
}

int st_credential_changed(const PGresult *res)
{
	return PQntuples(res) == 1;
}

struct st_op *st_credential_list(struct st_conn *c, st_done_fn done, void *arg)
{
	struct st_params none = {0};
	return st_submit_clear(c, credential_list_sql, &none, done, arg);
}

int st_credential_rows(const PGresult *res)
{
	return rows(res, 2);
}

void st_credential_row(const PGresult *res, int row, struct st_credential *out)
{
	out->agent = PQgetvalue(res, row, 0);
	out->agent_len = (size_t)PQgetlength(res, row, 0);
	out->created_ms = st_get_int8(res, row, 1);
}

/* One blocking statement: its result when it returned rows, else NULL with
 * the store's message in err (p is cleared either way). */
static PGresult *exec_sync(PGconn *pg, const char *sql, struct st_params *p, char *err,
                           size_t errlen)
{
	if (p->failed) {
		st_params_clear(p);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	PGresult *r = PQexecParams(pg, sql, p->n, p->types, (const char *const *)p->values,
	                           p->lengths, p->formats, 1);
	st_params_clear(p);
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
		return r;
	const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(pg);
	size_t n = strlen(m);
	while (n > 0 && m[n - 1] == '\n')
		n--;
	snprintf(err, errlen, "%.*s", (int)n, m);
	PQclear(r);
	return NULL;
}

int st_credential_add_sync(PGconn *pg, const char *agent, const uint8_t sha256[32],
                           int64_t created_ms, char *err, size_t errlen)
{
	struct st_params p = {0};
	credential_add_params(&p, agent, sha256, created_ms);
	PGresult *r = exec_sync(pg, credential_add_sql, &p, err, errlen);
	if (!r)
		return -1;
	int changed = st_credential_changed(r);
	PQclear(r);
	return changed;
}

int st_credential_remove_sync(PGconn *pg, const char *agent, char *err, size_t errlen)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	PGresult *r = exec_sync(pg, credential_remove_sql, &p, err, errlen);
	if (!r)
		return -1;
	int changed = st_credential_changed(r);
	PQclear(r);
	return changed;
}

int st_credential_list_sync(PGconn *pg, st_credential_fn fn, void *arg, char *err, size_t errlen)
{
	struct st_params none = {0};
	PGresult *r = exec_sync(pg, credential_list_sql, &none, err, errlen);
	if (!r)
		return -1;
	int n = PQntuples(r);
	for (int i = 0; i < n; i++) {
		struct st_credential cr;
		st_credential_row(r, i, &cr);
		fn(arg, &cr);
	}
	PQclear(r);
	return n;
}

/* ---- messages ---- */

struct st_op *st_send(struct st_conn *c, const char *to, const char *body, size_t body_len,
                      const char *from, int32_t priority, int64_t expires_ms,
                      const char *props_json, uint32_t max_frame, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, to, strlen(to));
	st_params_text(&p, body, body_len);
	st_params_text(&p, from, strlen(from));
	st_params_int4(&p, priority);
	st_params_int8(&p, expires_ms);
	st_params_text(&p, props_json, strlen(props_json));
	st_params_int4(&p, max_frame > INT32_MAX ? INT32_MAX : (int32_t)max_frame);
	return st_submit_clear(c, "SELECT id, seq FROM qa_send($1, $2, $3, $4, $5, $6::jsonb, $7)",
	                       &p, done, arg);
}

int st_sent_read(const PGresult *res, uint8_t id[16], int64_t *seq)
{
	if (rows(res, 2) != 1 || PQgetlength(res, 0, 0) != 16)
		return -1;
	memcpy(id, PQgetvalue(res, 0, 0), 16);
	*seq = st_get_int8(res, 0, 1);
	return 0;
}

struct st_op *st_message(struct st_conn *c, const char *id, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, id, strlen(id));
	return st_submit_clear(
	    c,
	    "SELECT sender, recipient, queue, status, status_ms, delivery_count,\n"
	    "       priority, created_ms, expires_ms\n"
	    "  FROM qa_messages WHERE id = $1::uuid",
	    &p, done, arg);
}

int st_message_read(const PGresult *res, struct st_message_row *out)
{
	memset(out, 0, sizeof(*out));
	int n = rows(res, 9);
	if (n <= 0)
		return n;
	out->sender = PQgetvalue(res, 0, 0);
	out->sender_len = (size_t)PQgetlength(res, 0, 0);
	out->recipient = PQgetvalue(res, 0, 1);
	out->recipient_len = (size_t)PQgetlength(res, 0, 1);
	out->queue = PQgetvalue(res, 0, 2);
	out->queue_len = (size_t)PQgetlength(res, 0, 2);
	out->status = st_get_int2(res, 0, 3);
	out->status_ms = st_get_int8(res, 0, 4);
	out->delivery_count = st_get_int4(res, 0, 5);
	out->priority = st_get_int2(res, 0, 6);
	out->created_ms = st_get_int8(res, 0, 7);
	out->expires_ms = st_get_int8(res, 0, 8);
	return 1;
}

struct st_op *st_cancel(struct st_conn *c, const char *id, int64_t now_ms, st_done_fn done,
                        void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, id, strlen(id));
	st_params_int8(&p, now_ms);
	return st_submit_clear(c, "SELECT qa_cancel($1::uuid, $2)", &p, done, arg);
}

enum st_cancel_result st_cancel_read(const PGresult *res)
{
	if (rows(res, 1) != 1)
		return ST_CANCEL_BAD;
	return (enum st_cancel_result)st_get_int4(res, 0, 0);
}
