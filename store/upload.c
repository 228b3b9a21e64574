/* UPLOAD's group statement; see upload.h. */
#include "store/upload.h"

#include "common/clock.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { C_SENDER, C_ID, C_RCPT, C_QUEUE, C_PRIO, C_EXPIRES, C_FLAG, C_PROPS, C_BODY, N_COLS };

/* The ids of the group being filled (qa_upload_group wants distinct ids
 * among the rows it inserts): an id met again in the same part is sent with
 * flag 1 (a duplicate, as protocol.md has it), a part that carries an id of
 * an earlier part starts the next group. Open addressing, cleared when a new
 * group starts. */
struct uploads {
	int max_pending;
	int max_pending_per_sender;
	uint64_t gen; /* the group the set describes */
	uint64_t seed;
	uint8_t (*ids)[16];
	uint8_t *used;
	size_t cap, n; /* cap: a power of two */
};

/* Ids come from the agents: the slot is a keyed mix of all 16 bytes, so that
 * no one can choose ids that collide. */
static size_t slot_of(const struct uploads *u, const uint8_t *id, size_t cap)
{
	uint64_t a, b;
	memcpy(&a, id, 8);
	memcpy(&b, id + 8, 8);
	uint64_t h = (a ^ u->seed) * 0x9e3779b97f4a7c15ull;
	h ^= (b + (h >> 31)) * 0xbf58476d1ce4e5b9ull;
	h ^= h >> 29;
	return (size_t)h & (cap - 1);
}

static int ids_reserve(struct uploads *u, size_t more)
{
	if ((u->n + more) * 2 <= u->cap)
		return 0;
	size_t cap = u->cap ? u->cap : 1024;
	while ((u->n + more) * 2 > cap)
		cap *= 2;
	uint8_t(*ids)[16] = malloc(cap * 16);
	uint8_t *used = calloc(cap, 1);
	if (!ids || !used) {
		free(ids), free(used);
		return -1;
	}
	for (size_t i = 0; i < u->cap; i++) {
		if (!u->used[i])
			continue;
		size_t j = slot_of(u, u->ids[i], cap);
		while (used[j])
			j = (j + 1) & (cap - 1);
		memcpy(ids[j], u->ids[i], 16);
		used[j] = 1;
	}
	free(u->ids), free(u->used);
	u->ids = ids, u->used = used, u->cap = cap;
	return 0;
}

/* Whether id is in the set. */
static int ids_has(const struct uploads *u, const uint8_t *id)
{
	for (size_t j = slot_of(u, id, u->cap); u->used[j]; j = (j + 1) & (u->cap - 1))
		if (memcmp(u->ids[j], id, 16) == 0)
			return 1;
	return 0;
}

/* 1 if id was in the set already; else adds it and returns 0. */
static int ids_seen(struct uploads *u, const uint8_t *id)
{
	size_t j = slot_of(u, id, u->cap);
	while (u->used[j]) {
		if (memcmp(u->ids[j], id, 16) == 0)
			return 1;
		j = (j + 1) & (u->cap - 1);
	}
	memcpy(u->ids[j], id, 16);
	u->used[j] = 1;
	u->n++;
	return 0;
}

/* $1 the commit's time (created_ms and status_ms of every row), $2 max_pending,
 * $3 max_pending_per_sender */
static void head(struct st_params *p, void *arg)
{
	const struct uploads *u = arg;
	st_params_int8(p, gw_wall_ms());
	st_params_int4(p, u->max_pending);
	st_params_int4(p, u->max_pending_per_sender);
}

struct st_group *st_uploads_new(struct event_base *base, struct st_conn *(*pick)(void *),
                                void *pick_arg, int max_pending, int max_pending_per_sender)
{
	struct uploads *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->max_pending = max_pending;
	u->max_pending_per_sender = max_pending_per_sender;
	uint64_t t = (uint64_t)gw_mono_us();
	u->seed = (t << 32) ^ t ^ (uint64_t)(uintptr_t)u;
	struct st_group_spec spec = {
	    .sql = "SELECT ord, result FROM qa_upload_group($1, $2, $3, $4, $5, $6, $7, $8, $9, "
	           "$10, $11, $12)",
	    .n_cols = N_COLS,
	    .elem = {ST_OID_TEXT, ST_OID_UUID, ST_OID_TEXT, ST_OID_TEXT, ST_OID_INT2, ST_OID_INT8,
	             ST_OID_INT2, ST_OID_BYTEA, ST_OID_BYTEA},
	    .array_type = {ST_OID_TEXT_ARRAY, ST_OID_UUID_ARRAY, ST_OID_TEXT_ARRAY,
	                   ST_OID_TEXT_ARRAY, ST_OID_INT2_ARRAY, ST_OID_INT8_ARRAY,
	                   ST_OID_INT2_ARRAY, ST_OID_BYTEA_ARRAY, ST_OID_BYTEA_ARRAY},
	    .head = head,
	    .head_arg = u,
	    .pick = pick,
	    .pick_arg = pick_arg,
	    .max_inflight = 1,
	    .max_bytes = 8u << 20,
	    .max_rows = 8192,
	    /* qa_upload_group commits with synchronous_commit off: the barrier's commit
	     * flushes the WAL past it before any UPLOAD_ACK. It must write WAL of its
	     * own: a transaction that only took an xid (txid_current()) commits
	     * without a flush. A logical message is a WAL record that changes no
	     * table (logical decoding shows it, prefix "qagw"). */
	    .barrier_sql = "SELECT pg_logical_emit_message(true, 'qagw', '')",
	};
	struct st_group *g = st_group_new(base, &spec);
	if (!g)
		free(u);
	return g;
}

void st_uploads_free(struct st_group *g)
{
	if (!g)
		return;
	struct uploads *u = st_group_head_arg(g);
	st_group_free(g);
	free(u->ids), free(u->used);
	free(u);
}

struct st_op *st_upload(struct st_group *g, const char *sender, const struct st_upload_row *rows,
                        int n, st_done_fn done, void *arg)
{
	struct uploads *u = st_group_head_arg(g);
	struct st_array *c = NULL;
	/* An id that an earlier part of the filling group carries (an agent's
	 * retry on a new session while its first try waits, or two senders):
	 * this part goes in the next group, so that it sees what became of the
	 * first (stored, or not: then this one is tried on its own). */
	for (int pass = 0; pass < 2; pass++) {
		if (!(c = st_group_columns(g)))
			return NULL;
		if (u->gen != st_group_filling(g)) {
			u->gen = st_group_filling(g);
			if (u->used)
				memset(u->used, 0, u->cap);
			u->n = 0;
		}
		if (ids_reserve(u, (size_t)n) != 0)
			return NULL;
		int clash = 0;
		for (int i = 0; i < n && !clash && u->n > 0; i++)
			clash = ids_has(u, rows[i].id);
		if (!clash)
			break;
		st_group_close(g);
	}
	size_t slen = strlen(sender);
	for (int i = 0; i < n; i++) {
		const struct st_upload_row *r = &rows[i];
		/* seen already: earlier in this part (protocol.md: a duplicate) */
		int16_t flag = ids_seen(u, r->id) ? 1 : r->flag;
		st_array_add(&c[C_SENDER], sender, slen);
		st_array_add(&c[C_ID], r->id, 16);
		st_array_add(&c[C_RCPT], r->rcpt, r->rcpt_len);
		st_array_add(&c[C_QUEUE], r->queue, r->queue_len);
		st_array_add_int2(&c[C_PRIO], r->priority);
		st_array_add_int8(&c[C_EXPIRES], r->expires_ms);
		st_array_add_int2(&c[C_FLAG], flag);
		st_array_add(&c[C_PROPS], r->props, r->props_len);
		st_array_add(&c[C_BODY], r->body, r->body_len);
	}
	return st_group_submit(g, n, done, arg);
}

int st_upload_result(const PGresult *res, const struct st_op *op, int k)
{
	int first, n;
	st_op_rows(op, &first, &n);
	int row = first + k;
	if (k < 0 || k >= n || row >= PQntuples(res) || PQnfields(res) != 2 ||
	    st_get_int4(res, row, 0) != row + 1)
		return -1;
	return st_get_int2(res, row, 1);
}
