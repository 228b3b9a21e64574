/* Mode `store-limit` (issue 7, scenario 1's baseline): the rows qagw would
 * commit for the ingest scenario, written straight into PostgreSQL through
 * libpq, to measure the physical limit of the store.
 *
 * The rows are those qa_upload inserts (store/schema.c): one qa_messages row
 * per message with sender, sender_is_agent true, recipient, queue, priority
 * 4, created_ms = status_ms = now, expires_ms 0, the empty props block as the
 * wire encodes it (u16 0), the body bytes; status, delivery_count and held_by
 * take their defaults (pending). Each client is one thread with its own
 * connection and writes one transaction per batch, waiting for its commit
 * before the next (as an agent waits for its UPLOAD_ACK), with either a
 * multi-row INSERT ... SELECT FROM unnest() of binary array parameters (the
 * shape qa_upload's insert has) or COPY FROM STDIN in binary format.
 * synchronous_commit is left as the server has it, and reported.
 *
 * The rows go into a private copy of the table, qabench.qa_messages, made
 * LIKE public.qa_messages INCLUDING ALL (same columns, defaults, identity,
 * unique and partial indexes) when qagw has migrated the database, or from
 * migration 1's definition when it has not; so qagw's own data and
 * migrations are never touched. The copy is truncated before every point and
 * the schema dropped at the end (--keep leaves it). */
#include "bench/qb.h"

#include <endian.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POINTS 32

static const char insert_sql[] =
    "INSERT INTO qabench.qa_messages (id, sender, sender_is_agent, recipient, queue, priority,"
    " created_ms, expires_ms, props, body, status_ms)"
    " SELECT t.id, $1, true, t.rcpt, t.queue, t.prio, $2, t.expires, t.props, t.body, $2"
    " FROM unnest($3::uuid[], $4::text[], $5::text[], $6::smallint[], $7::bigint[],"
    " $8::bytea[], $9::bytea[]) AS t(id, rcpt, queue, prio, expires, props, body)";

static const char copy_sql[] =
    "COPY qabench.qa_messages (id, sender, sender_is_agent, recipient, queue, priority,"
    " created_ms, expires_ms, props, body, status_ms) FROM STDIN (FORMAT binary)";

/* PostgreSQL type oids of the binary array elements. */
#define OID_BOOL   16
#define OID_BYTEA  17
#define OID_INT8   20
#define OID_INT2   21
#define OID_TEXT   25
#define OID_UUID   2950
#define N_COLUMNS  11
#define RECIPIENTS 16 /* per client, rotated per batch as in mode ingest */

enum method { M_INSERT, M_COPY };
static const char *const method_name[] = {"insert", "copy"};

/* A growable byte buffer for array parameters and COPY data. */
struct bytes {
	char *p;
	size_t len, cap;
	bool failed;
};

static void put(struct bytes *b, const void *d, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void put16(struct bytes *b, uint16_t v)
{
	v = htobe16(v);
	put(b, &v, 2);
}

static void put32(struct bytes *b, uint32_t v)
{
	v = htobe32(v);
	put(b, &v, 4);
}

static void put64(struct bytes *b, uint64_t v)
{
	v = htobe64(v);
	put(b, &v, 8);
}

/* One length-prefixed field: an array element, or a COPY binary field. */
static void field(struct bytes *b, const void *d, size_t n)
{
	put32(b, (uint32_t)n);
	put(b, d, n);
}

static void field16(struct bytes *b, uint16_t v)
{
	put32(b, 2);
	put16(b, v);
}

static void field64(struct bytes *b, uint64_t v)
{
	put32(b, 8);
	put64(b, v);
}

/* A one-dimensional binary array of n elements, header first. */
static void array_begin(struct bytes *b, uint32_t elem_oid, int n)
{
	b->len = 0;
	put32(b, 1); /* ndim */
	put32(b, 0); /* no nulls */
	put32(b, elem_oid);
	put32(b, (uint32_t)n);
	put32(b, 1); /* lower bound */
}

struct run; /* the whole mode */

struct client {
	struct run *run;
	int idx;
	pthread_t thread;
	PGconn *pg;
	uint64_t rows, batches, errors;
	struct qb_lat commit;
	struct bytes arr[7], copy;
	char sender[32];
	uint32_t batch_no;
};

struct run {
	const char *conninfo;
	int batch, size;
	uint8_t *body;
	enum method method;
	int n_clients;
	int64_t measure_us, end_us;
	pthread_barrier_t ready, go;
	bool setup_failed;
};

static void recipient(const struct client *c, char *out, size_t n)
{
	snprintf(out, n, "store-sink-%d.%u", c->idx, c->batch_no % RECIPIENTS);
}

/* One batch as one INSERT statement (its own transaction). */
static int write_insert(struct client *c, int64_t now_ms)
{
	struct run *r = c->run;
	char rcpt[48];
	recipient(c, rcpt, sizeof(rcpt));
	static const uint32_t oids[7] = {OID_UUID, OID_TEXT,  OID_TEXT, OID_INT2,
	                                 OID_INT8, OID_BYTEA, OID_BYTEA};
	for (int k = 0; k < 7; k++)
		array_begin(&c->arr[k], oids[k], r->batch);
	for (int i = 0; i < r->batch; i++) {
		uint8_t id[16];
		qb_uuid(id);
		uint16_t prio = htobe16(4), no_props = 0;
		uint64_t never = 0;
		field(&c->arr[0], id, 16);
		field(&c->arr[1], rcpt, strlen(rcpt));
		field(&c->arr[2], "q", 1);
		field(&c->arr[3], &prio, 2);
		field(&c->arr[4], &never, 8);
		field(&c->arr[5], &no_props, 2);
		field(&c->arr[6], r->body, (size_t)r->size);
	}
	uint64_t now_be = htobe64((uint64_t)now_ms);
	const char *values[9] = {c->sender, (const char *)&now_be};
	int lengths[9] = {(int)strlen(c->sender), 8};
	int formats[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
	for (int k = 0; k < 7; k++) {
		if (c->arr[k].failed)
			return -1;
		values[2 + k] = c->arr[k].p;
		lengths[2 + k] = (int)c->arr[k].len;
	}
	PGresult *res = PQexecPrepared(c->pg, "ins", 9, values, lengths, formats, 0);
	int ok = PQresultStatus(res) == PGRES_COMMAND_OK &&
	         strtol(PQcmdTuples(res), NULL, 10) == r->batch;
	if (!ok && c->errors == 0)
		fprintf(stderr, "qabench store-limit: client %d: INSERT: %s", c->idx,
		        PQresultErrorMessage(res));
	PQclear(res);
	return ok ? 0 : -1;
}

/* One batch as one COPY FROM STDIN (FORMAT binary) (its own transaction). */
static int write_copy(struct client *c, int64_t now_ms)
{
	struct run *r = c->run;
	struct bytes *b = &c->copy;
	char rcpt[48];
	recipient(c, rcpt, sizeof(rcpt));
	b->len = 0;
	put(b, "PGCOPY\n\377\r\n\0", 11);
	put32(b, 0); /* flags */
	put32(b, 0); /* header extension length */
	size_t sender_len = strlen(c->sender);
	for (int i = 0; i < r->batch; i++) {
		uint8_t id[16], yes = 1;
		uint16_t no_props = 0;
		qb_uuid(id);
		put16(b, N_COLUMNS);
		field(b, id, 16);
		field(b, c->sender, sender_len);
		field(b, &yes, 1);
		field(b, rcpt, strlen(rcpt));
		field(b, "q", 1);
		field16(b, 4);                      /* priority */
		field64(b, (uint64_t)now_ms);       /* created_ms */
		field64(b, 0);                      /* expires_ms: never */
		field(b, &no_props, 2);             /* props: u16 0 */
		field(b, r->body, (size_t)r->size); /* body */
		field64(b, (uint64_t)now_ms);       /* status_ms */
	}
	put16(b, 0xffff); /* trailer */
	if (b->failed)
		return -1;
	PGresult *res = PQexec(c->pg, copy_sql);
	if (PQresultStatus(res) != PGRES_COPY_IN) {
		if (c->errors == 0)
			fprintf(stderr, "qabench store-limit: client %d: COPY: %s", c->idx,
			        PQresultErrorMessage(res));
		PQclear(res);
		return -1;
	}
	PQclear(res);
	int sent = PQputCopyData(c->pg, b->p, (int)b->len) == 1 && PQputCopyEnd(c->pg, NULL) == 1;
	int ok = sent;
	while ((res = PQgetResult(c->pg)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK ||
		    strtol(PQcmdTuples(res), NULL, 10) != r->batch) {
			if (ok && c->errors == 0)
				fprintf(stderr, "qabench store-limit: client %d: COPY: %s", c->idx,
				        PQresultErrorMessage(res));
			ok = 0;
		}
		PQclear(res);
	}
	if (!sent && c->errors == 0)
		fprintf(stderr, "qabench store-limit: client %d: COPY data: %s", c->idx,
		        PQerrorMessage(c->pg));
	return ok ? 0 : -1;
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	struct run *r = c->run;
	bool ok = PQstatus(c->pg) == CONNECTION_OK;
	if (ok && r->method == M_INSERT) {
		PGresult *res = PQprepare(c->pg, "ins", insert_sql, 0, NULL);
		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok)
			fprintf(stderr, "qabench store-limit: prepare: %s",
			        PQresultErrorMessage(res));
		PQclear(res);
	}
	if (!ok)
		r->setup_failed = true;
	pthread_barrier_wait(&r->ready);
	pthread_barrier_wait(&r->go); /* the main thread has set the clock */
	if (r->setup_failed)
		return NULL;
	for (;;) {
		int64_t start = gw_mono_us();
		if (start >= r->end_us)
			break;
		int rc = r->method == M_INSERT ? write_insert(c, gw_wall_ms())
		                               : write_copy(c, gw_wall_ms());
		int64_t done = gw_mono_us();
		c->batch_no++;
		if (rc != 0) {
			c->errors++;
			if (PQstatus(c->pg) != CONNECTION_OK)
				break;
			continue;
		}
		if (start >= r->measure_us && done < r->end_us) {
			c->rows += (uint64_t)r->batch;
			c->batches++;
			qb_lat_add(&c->commit, done - start);
		}
	}
	return NULL;
}

struct point {
	enum method method;
	int clients;
	double msgs_per_s;
	uint64_t errors;
	struct qb_lat commit;
};

static int exec_cmd(PGconn *pg, const char *sql)
{
	PGresult *res = PQexec(pg, sql);
	int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "qabench store-limit: %s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
	return ok ? 0 : -1;
}

/* The private copy of qa_messages, empty. */
static int prepare_table(PGconn *pg)
{
	PQclear(PQexec(pg, "SET client_min_messages = warning"));
	if (exec_cmd(pg, "DROP SCHEMA IF EXISTS qabench CASCADE") ||
	    exec_cmd(pg, "CREATE SCHEMA qabench"))
		return -1;
	/* qagw's own table, as its migrations made it: start qagw against this
	 * database first (bench/run.py does). */
	PGresult *res = PQexec(pg, "SELECT to_regclass('public.qa_messages') IS NOT NULL");
	int migrated = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
	               strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!migrated) {
		fprintf(stderr, "qabench store-limit: no public.qa_messages: run qagw against this "
		                "database once first (it creates the schema)\n");
		return -1;
	}
	return exec_cmd(pg,
	                "CREATE TABLE qabench.qa_messages (LIKE public.qa_messages INCLUDING ALL)");
}

static int run_point(struct run *r, PGconn *admin, struct point *pt, double warmup, double seconds)
{
	if (exec_cmd(admin, "TRUNCATE qabench.qa_messages RESTART IDENTITY"))
		return -1;
	r->method = pt->method;
	r->n_clients = pt->clients;
	r->setup_failed = false;
	struct client *cl = calloc((size_t)pt->clients, sizeof(*cl));
	if (!cl)
		return -1;
	pthread_barrier_init(&r->ready, NULL, (unsigned)pt->clients + 1);
	pthread_barrier_init(&r->go, NULL, (unsigned)pt->clients + 1);
	int started = 0;
	for (int i = 0; i < pt->clients; i++) {
		cl[i].run = r;
		cl[i].idx = i;
		snprintf(cl[i].sender, sizeof(cl[i].sender), "store-%d", i);
		cl[i].pg = PQconnectdb(r->conninfo);
		if (PQstatus(cl[i].pg) != CONNECTION_OK)
			fprintf(stderr, "qabench store-limit: connect: %s",
			        PQerrorMessage(cl[i].pg));
		if (pthread_create(&cl[i].thread, NULL, client_main, &cl[i]) != 0) {
			fprintf(stderr, "qabench store-limit: cannot start a thread\n");
			exit(1); /* the barrier would wait forever */
		}
		started++;
	}
	pthread_barrier_wait(&r->ready);
	int64_t now = gw_mono_us();
	r->measure_us = now + (int64_t)(warmup * 1e6);
	r->end_us = r->measure_us + (int64_t)(seconds * 1e6);
	pthread_barrier_wait(&r->go);
	uint64_t rows = 0;
	for (int i = 0; i < started; i++) {
		pthread_join(cl[i].thread, NULL);
		rows += cl[i].rows;
		pt->errors += cl[i].errors;
		for (size_t k = 0; k < cl[i].commit.n; k++)
			qb_lat_add(&pt->commit, cl[i].commit.us[k]);
		qb_lat_free(&cl[i].commit);
		for (int k = 0; k < 7; k++)
			free(cl[i].arr[k].p);
		free(cl[i].copy.p);
		PQfinish(cl[i].pg);
	}
	pthread_barrier_destroy(&r->ready);
	pthread_barrier_destroy(&r->go);
	free(cl);
	pt->msgs_per_s = (double)rows / seconds;
	fprintf(stderr, "qabench store-limit: %s, %d clients: %.0f msgs/s, p50 %.2f ms%s\n",
	        method_name[pt->method], pt->clients, pt->msgs_per_s,
	        qb_lat_pct_ms(&pt->commit, 50), pt->errors ? " (errors)" : "");
	return r->setup_failed ? -1 : 0;
}

int qb_mode_store_limit(const struct qb_opts *o)
{
	struct run r = {0};
	r.conninfo = qb_opt(o, "conninfo", "host=127.0.0.1 port=5432 dbname=qagw user=qagw");
	const char *clients_s = qb_opt(o, "clients", "1,2,4,8");
	r.batch = (int)qb_opt_int(o, "batch", 32);
	r.size = (int)qb_opt_int(o, "size", 128);
	double seconds = qb_opt_double(o, "seconds", 10);
	double warmup = qb_opt_double(o, "warmup", 1);
	const char *method_s = qb_opt(o, "method", "best");
	int keep = qb_opt_flag(o, "keep");

	int clients[MAX_POINTS], n_clients = 0;
	for (const char *p = clients_s; *p && n_clients < MAX_POINTS;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p || v < 1 || v > 1024) {
			fprintf(stderr, "qabench store-limit: bad --clients %s\n", clients_s);
			return 2;
		}
		clients[n_clients++] = (int)v;
		p = *end == ',' ? end + 1 : end;
	}
	int methods[2], n_methods = 0;
	if (strcmp(method_s, "insert") == 0 || strcmp(method_s, "best") == 0)
		methods[n_methods++] = M_INSERT;
	if (strcmp(method_s, "copy") == 0 || strcmp(method_s, "best") == 0)
		methods[n_methods++] = M_COPY;
	if (n_methods == 0 || n_clients == 0 || r.batch < 1 || r.size < 0 || seconds <= 0 ||
	    warmup < 0) {
		fprintf(stderr, "qabench store-limit: bad options (--method insert|copy|best)\n");
		return 2;
	}
	r.body = malloc((size_t)r.size + 1);
	if (!r.body)
		return 1;
	for (int i = 0; i < r.size; i++)
		r.body[i] = (uint8_t)('a' + i % 26); /* what mode ingest sends */

	PGconn *admin = PQconnectdb(r.conninfo);
	if (PQstatus(admin) != CONNECTION_OK) {
		fprintf(stderr, "qabench store-limit: connect: %s", PQerrorMessage(admin));
		PQfinish(admin);
		return 1;
	}
	char sync_commit[32] = "?";
	PGresult *res = PQexec(admin, "SHOW synchronous_commit");
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		snprintf(sync_commit, sizeof(sync_commit), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	if (prepare_table(admin)) {
		PQfinish(admin);
		return 1;
	}

	struct point pts[2 * MAX_POINTS] = {0};
	int n_pts = 0, rc = 0;
	for (int m = 0; m < n_methods && rc == 0; m++)
		for (int c = 0; c < n_clients && rc == 0; c++) {
			struct point *pt = &pts[n_pts++];
			pt->method = (enum method)methods[m];
			pt->clients = clients[c];
			rc = run_point(&r, admin, pt, warmup, seconds);
		}
	if (!keep)
		exec_cmd(admin, "DROP SCHEMA qabench CASCADE");
	PQfinish(admin);

	if (rc == 0) {
		int best = 0;
		for (int i = 1; i < n_pts; i++)
			if (pts[i].msgs_per_s > pts[best].msgs_per_s)
				best = i;
		printf(
		    "{\"mode\":\"store-limit\",\"batch\":%d,\"size\":%d,\"seconds\":%.3f,"
		    "\"best\":{\"method\":\"%s\",\"clients\":%d,\"msgs_per_s\":%.1f},\"points\":[",
		    r.batch, r.size, seconds, method_name[pts[best].method], pts[best].clients,
		    pts[best].msgs_per_s);
		for (int i = 0; i < n_pts; i++) {
			printf("%s{\"method\":\"%s\",\"clients\":%d,\"msgs_per_s\":%.1f,\"errors\":"
			       "%llu,",
			       i ? "," : "", method_name[pts[i].method], pts[i].clients,
			       pts[i].msgs_per_s, (unsigned long long)pts[i].errors);
			qb_lat_json(stdout, "commit", &pts[i].commit);
			printf("}");
		}
		printf("],\"synchronous_commit\":\"%s\"}\n", sync_commit);
		fflush(stdout);
	}
	for (int i = 0; i < n_pts; i++)
		qb_lat_free(&pts[i].commit);
	free(r.body);
	return rc == 0 ? 0 : 1;
}
