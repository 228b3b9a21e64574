/* The agent requests' statements; see agent.h. */
#include "store/agent.h"

#include "common/clock.h"

#include <stdio.h>
#include <stdlib.h>
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

/* FETCHes of many sessions as one statement, qa_fetch_group (a group, store/group.h,
 * without a barrier: a read): one executor start-up and one round trip a group,
 * however many FETCHes it carries (docs/benchmarks.md "Grouped FETCHes"). Every
 * FETCH has at least one row (the row of no message, or of due), its rows together,
 * ord its place in the group (1, 2, ...). */
static const char fetch_sql[] =
    "SELECT seq, id, sender, queue, priority, created_ms, expires_ms, props, body,"
    " delivery_count, rn, cum, due, ord FROM qa_fetch_group($1, $2, $3, $4, $5)";

enum { F_AGENT, F_HELD, F_COUNT, F_BYTES, N_FCOLS };
enum { F_COL_DUE = 12, F_COL_ORD = 13, N_FRESULT = 14 };

/* The head of the FETCH and DELIVER_ACK groups: $1, the time it is sent. */
static void now_head(struct st_params *p, void *arg)
{
	st_params_int8(p, gw_wall_ms());
}

struct st_group *st_fetches_new(struct event_base *base, struct st_conn *(*pick)(void *),
                                void *pick_arg)
{
	struct st_group_spec spec = {
	    .sql = fetch_sql,
	    .n_cols = N_FCOLS,
	    .elem = {ST_OID_TEXT, ST_OID_TEXT, ST_OID_INT4, ST_OID_INT8},
	    .array_type = {ST_OID_TEXT_ARRAY, ST_OID_TEXT_ARRAY, ST_OID_INT4_ARRAY,
	                   ST_OID_INT8_ARRAY},
	    .head = now_head,
	    .pick = pick,
	    .pick_arg = pick_arg,
	    .max_inflight = 1,
	    .max_bytes = 1u << 20,
	    .max_rows = 256,
	};
	return st_group_new(base, &spec);
}

/* held as an int8 array's text ("{1,2}"), in a buffer of its own (NULL: no memory). */
static char *held_text(const int64_t *held, int n_held, size_t *len)
{
	size_t cap = 3 + (size_t)n_held * 21, k = 0;
	char *t = malloc(cap);
	if (!t)
		return NULL;
	t[k++] = '{';
	for (int i = 0; i < n_held; i++)
		k += (size_t)snprintf(t + k, cap - k, "%s%lld", i ? "," : "", (long long)held[i]);
	t[k++] = '}';
	t[k] = 0;
	*len = k;
	return t;
}

struct st_op *st_fetch(struct st_group *g, const char *agent, const int64_t *held, int n_held,
                       int32_t max_count, int64_t max_bytes, st_done_fn done, void *arg)
{
	size_t hlen;
	char *h = held_text(held, n_held, &hlen);
	struct st_array *c = h ? st_group_columns(g) : NULL;
	if (!c) {
		free(h);
		return NULL;
	}
	st_array_add(&c[F_AGENT], agent, strlen(agent));
	st_array_add(&c[F_HELD], h, hlen);
	free(h);
	st_array_add_int4(&c[F_COUNT], max_count);
	st_array_add_int8(&c[F_BYTES], max_bytes);
	return st_group_submit(g, 1, done, arg);
}

int st_fetch_rows(const PGresult *res, const struct st_op *op, int *row0)
{
	int first, n;
	st_op_rows(op, &first, &n);
	if (PQnfields(res) != N_FRESULT)
		return -1;
	int rows = PQntuples(res), lo = 0, hi = rows;
	while (lo < hi) { /* the first row of ord first + 1 (rows are in ord order) */
		int mid = lo + (hi - lo) / 2;
		if (st_get_int4(res, mid, F_COL_ORD) < first + 1)
			lo = mid + 1;
		else
			hi = mid;
	}
	int end = lo;
	while (end < rows && st_get_int4(res, end, F_COL_ORD) == first + 1)
		end++;
	if (end == lo)
		return -1; /* every FETCH has a row */
	*row0 = lo;
	return end - lo == 1 && PQgetisnull(res, lo, 0) ? 0 : end - lo; /* the row of none */
}

int st_fetch_due(const PGresult *res, int row0)
{
	return *PQgetvalue(res, row0, F_COL_DUE) != 0;
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
 * groups cost PostgreSQL less a message (docs/benchmarks.md). Only the acknowledging
 * session waits (nothing is answered to a DELIVER_ACK; its next request is read after the
 * commit), and not even that one once it sends more: the gateway then sends the group at
 * once (gateway/session.c pump, gw_req_ack_hurry). */
#ifndef ACK_LINGER_MS
#define ACK_LINGER_MS 20
#endif

enum { A_AGENT, A_SEQ, A_HELD, N_ACOLS };

struct st_group *st_acks_new(struct event_base *base, struct st_conn *(*pick)(void *),
                             void *pick_arg)
{
	struct st_group_spec spec = {
	    .sql = "SELECT ord FROM qa_ack_group($1, $2, $3, $4)",
	    .n_cols = N_ACOLS,
	    .elem = {ST_OID_TEXT, ST_OID_INT8, ST_OID_BOOL},
	    .array_type = {ST_OID_TEXT_ARRAY, ST_OID_INT8_ARRAY, ST_OID_BOOL_ARRAY},
	    .head = now_head,
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
