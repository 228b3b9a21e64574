/* The agent requests' statements; see agent.h. */
#include "store/agent.h"

#include "common/clock.h"

#include <string.h>

/* Every statement here is a literal: prepared once per connection. */
static struct st_op *submit(struct st_conn *c, const char *sql, struct st_params *p,
                            st_done_fn done, void *arg)
{
	p->reuse = 1;
	return st_submit_clear(c, sql, p, done, arg);
}

static void int8_array(struct st_params *p, const int64_t *v, int n)
{
	struct st_array a;
	st_array_begin(&a, ST_OID_INT8);
	for (int i = 0; i < n; i++)
		st_array_add_int8(&a, v[i]);
	st_params_array(p, &a, ST_OID_INT8_ARRAY);
}

/* ---- HELLO ---- */

struct st_op *st_credential_get(struct st_conn *c, const char *agent, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	return submit(c, "SELECT token_sha256 FROM qa_credentials WHERE agent_id = $1", &p, done,
	              arg);
}

int st_credential_read(const PGresult *res, const uint8_t **sha256)
{
	if (PQnfields(res) != 1 || PQntuples(res) != 1 || PQgetlength(res, 0, 0) != 32)
		return 0;
	*sha256 = (const uint8_t *)PQgetvalue(res, 0, 0);
	return 1;
}

struct st_op *st_hello(struct st_conn *c, const char *agent, const char *primary_sent,
                       const char *worker, int64_t now_ms, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	st_params_text(&p, primary_sent, strlen(primary_sent));
	st_params_text(&p, worker, strlen(worker));
	st_params_int8(&p, now_ms);
	return submit(
	    c, "SELECT name, advertise, tls, pending, assigned FROM qa_hello($1, $2, $3, $4)", &p,
	    done, arg);
}

int st_hello_rows(const PGresult *res)
{
	return PQnfields(res) == 5 ? PQntuples(res) : -1;
}

void st_hello_row(const PGresult *res, int row, struct st_hello_row *out)
{
	out->name = PQgetvalue(res, row, 0);
	out->name_len = PQgetlength(res, row, 0);
	out->advertise = PQgetvalue(res, row, 1);
	out->advertise_len = PQgetlength(res, row, 1);
	out->tls = *PQgetvalue(res, row, 2) != 0;
	out->pending = st_get_int8(res, row, 3);
	out->assigned = PQgetvalue(res, row, 4);
	out->assigned_len = PQgetlength(res, row, 4);
}

/* ---- FETCH ---- */

/* One FETCH as one plain statement (no plpgsql: ~50 µs a FETCH, docs/benchmarks.md),
 * prepared once per connection. d.due: some of the agent's pending messages are due
 * (a scalar subquery in qa_messages_expiring_rcpt's order, not EXISTS, which would
 * drop ORDER BY and LIMIT); then nothing else is read (the gateway expires them and
 * asks again) and the one row has NULL columns but due. Otherwise the most urgent,
 * oldest pending messages except the held ones, up to $3 + 1, each with its exact
 * MSG_IN size (the two server-set properties included; ias_DeliveryCount is
 * delivery_count + 1) and the running total cum; a row whose total passes $4 is left
 * out, except the first such one (without its body unless it is the first row); with
 * no message, one row of NULLs. */
static const char next_sql[] =
    "SELECT w.seq, w.id, w.sender, w.queue, w.priority, w.created_ms, w.expires_ms,"
    " w.props, CASE WHEN w.rn = 1 OR w.cum <= $4 THEN w.body END, w.delivery_count,"
    " w.rn, w.cum, d.due"
    " FROM (SELECT (SELECT 1 FROM qa_messages m"
    "                WHERE m.recipient = $1 AND m.status = 1 AND m.expires_ms <> 0"
    "                  AND m.expires_ms <= $5"
    "                ORDER BY m.recipient, m.expires_ms LIMIT 1) IS NOT NULL AS due) d"
    " LEFT JOIN LATERAL ("
    "  SELECT c.*, row_number() OVER o AS rn, sum(c.sz) OVER o AS cum"
    "    FROM (SELECT m.seq, m.id, m.sender, m.queue, m.priority, m.created_ms,"
    "                 m.expires_ms, m.props, m.body, m.delivery_count,"
    "                 8 + 16 + 2 + octet_length(m.sender) + 2 + octet_length(m.queue) + 1"
    "                 + 8 + 8 + octet_length(m.props) + (2 + 14 + 2 + octet_length(m.sender))"
    "                 + (2 + 17 + 2 + length((m.delivery_count + 1)::text)) + 4"
    "                 + octet_length(m.body) AS sz"
    "            FROM qa_messages m"
    "           WHERE m.recipient = $1 AND m.status = 1 AND m.seq <> ALL ($2)"
    "             AND (m.expires_ms = 0 OR m.expires_ms > $5)"
    "           ORDER BY m.priority DESC, m.seq"
    "           LIMIT $3 + 1) c"
    "  WINDOW o AS (ORDER BY c.priority DESC, c.seq)) w"
    " ON NOT d.due AND (w.rn <= 2 OR w.cum - w.sz <= $4)"
    " ORDER BY w.rn";

struct st_op *st_next(struct st_conn *c, const char *agent, const int64_t *held, int n_held,
                      int32_t max_count, int64_t max_bytes, int64_t now_ms, st_done_fn done,
                      void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	int8_array(&p, held, n_held);
	st_params_int4(&p, max_count);
	st_params_int8(&p, max_bytes);
	st_params_int8(&p, now_ms);
	return submit(c, next_sql, &p, done, arg);
}

int st_next_due(const PGresult *res)
{
	return PQntuples(res) > 0 && *PQgetvalue(res, 0, 12) != 0;
}

int st_next_rows(const PGresult *res)
{
	if (PQnfields(res) != 13)
		return -1;
	int n = PQntuples(res);
	return n == 1 && PQgetisnull(res, 0, 0) ? 0 : n; /* the row of no message */
}

void st_next_row(const PGresult *res, int row, struct st_next_row *out)
{
	out->seq = st_get_int8(res, row, 0);
	out->id = (const uint8_t *)PQgetvalue(res, row, 1);
	out->sender = PQgetvalue(res, row, 2);
	out->sender_len = PQgetlength(res, row, 2);
	out->queue = PQgetvalue(res, row, 3);
	out->queue_len = PQgetlength(res, row, 3);
	out->priority = st_get_int2(res, row, 4);
	out->created_ms = st_get_int8(res, row, 5);
	out->expires_ms = st_get_int8(res, row, 6);
	out->props = (const uint8_t *)PQgetvalue(res, row, 7);
	out->props_len = PQgetlength(res, row, 7);
	out->body = (const uint8_t *)PQgetvalue(res, row, 8);
	out->body_len = PQgetlength(res, row, 8);
	out->delivery_count = st_get_int4(res, row, 9);
	out->rn = st_get_int8(res, row, 10);
	out->cum = st_get_int8(res, row, 11);
	out->fits = !PQgetisnull(res, row, 8);
}

struct st_op *st_expire_due(struct st_conn *c, const char *agent, int64_t now_ms, st_done_fn done,
                            void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	st_params_int8(&p, now_ms);
	return submit(c, "SELECT qa_expire_due($1, $2)", &p, done, arg);
}

struct st_op *st_unreceivable(struct st_conn *c, const char *agent, int64_t seq, int64_t now_ms,
                              st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	st_params_int8(&p, seq);
	st_params_int8(&p, now_ms);
	return submit(c, "SELECT qa_unreceivable($1, $2, $3)", &p, done, arg);
}

struct st_op *st_delivered(struct st_conn *c, const char *agent, const int64_t *seqs, int n,
                           int64_t now_ms, st_done_fn done, void *arg)
{
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	int8_array(&p, seqs, n);
	st_params_int8(&p, now_ms);
	return submit(c, "SELECT qa_delivered($1, $2, $3)", &p, done, arg);
}

/* ---- DELIVER_ACK ---- */

/* An acknowledgement group waits this long for more sessions' acknowledgements: larger
 * groups cost PostgreSQL less a message (docs/benchmarks.md: ~5 % of its CPU at 1,000
 * pushes/s). Only the acknowledging session waits (nothing is answered to a
 * DELIVER_ACK; its next request is read after the commit). */
#ifndef ACK_LINGER_MS
#define ACK_LINGER_MS 3
#endif

enum { A_AGENT, A_SEQ, A_HELD, N_ACOLS };

static void ack_head(struct st_params *p, void *arg)
{
	st_params_int8(p, gw_wall_ms());
}

struct st_group *st_acks_new(struct event_base *base, struct st_conn *(*pick)(void *),
                             void *pick_arg)
{
	struct st_group_spec spec = {
	    .sql = "SELECT ord FROM qa_ack_group($1, $2, $3, $4)",
	    .n_cols = N_ACOLS,
	    .elem = {ST_OID_TEXT, ST_OID_INT8, ST_OID_BOOL},
	    .array_type = {ST_OID_TEXT_ARRAY, ST_OID_INT8_ARRAY, ST_OID_BOOL_ARRAY},
	    .head = ack_head,
	    .pick = pick,
	    .pick_arg = pick_arg,
	    .max_inflight = 1,
	    .max_bytes = 4u << 20,
	    .max_rows = 16384,
	    .linger_ms = ACK_LINGER_MS,
	};
	return st_group_new(base, &spec);
}

struct st_op *st_ack(struct st_group *g, const char *agent, const int64_t *seqs,
                     const uint8_t *count_now, int n, st_done_fn done, void *arg)
{
	struct st_array *c = st_group_columns(g);
	if (!c)
		return NULL;
	size_t alen = strlen(agent);
	for (int i = 0; i < n; i++) {
		uint8_t b = count_now[i] != 0;
		st_array_add(&c[A_AGENT], agent, alen);
		st_array_add_int8(&c[A_SEQ], seqs[i]);
		st_array_add(&c[A_HELD], &b, 1);
	}
	return st_group_submit(g, n, done, arg);
}

int st_ack_applied(const PGresult *res, const struct st_op *op)
{
	int first, n, applied = 0;
	st_op_rows(op, &first, &n);
	if (PQnfields(res) != 1)
		return 0;
	for (int r = 0; r < PQntuples(res); r++) {
		int ord = st_get_int4(res, r, 0);
		applied += ord > first && ord <= first + n;
	}
	return applied;
}

/* ---- STATUS ---- */

struct st_op *st_status(struct st_conn *c, const char *agent, const int64_t *held, int n_held,
                        const uint8_t (*ids)[16], const int16_t *codes, int n, int64_t now_ms,
                        st_done_fn done, void *arg)
{
	struct st_array a_ids, a_codes;
	st_array_begin(&a_ids, ST_OID_UUID);
	st_array_begin(&a_codes, ST_OID_INT2);
	for (int i = 0; i < n; i++) {
		st_array_add(&a_ids, ids[i], 16);
		st_array_add_int2(&a_codes, codes[i]);
	}
	struct st_params p = {0};
	st_params_text(&p, agent, strlen(agent));
	int8_array(&p, held, n_held);
	st_params_array(&p, &a_ids, ST_OID_UUID_ARRAY);
	st_params_array(&p, &a_codes, ST_OID_INT2_ARRAY);
	st_params_int8(&p, now_ms);
	return submit(c, "SELECT qa_status_held($1, $2, $3, $4, $5)", &p, done, arg);
}

int st_status_read(const PGresult *res)
{
	return PQnfields(res) == 1 && PQntuples(res) == 1 ? st_get_int4(res, 0, 0) : 0;
}
