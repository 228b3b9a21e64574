/* The client message store: see qa_store.h. SQLite in WAL mode with
 * synchronous=FULL: a transaction that returned is on disk, which is what
 * must hold before a DELIVER_ACK is sent for the messages it stored. */
#include "agent/qa_store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/qa_log.h"
#include "common/clock.h"
#include "proto/qs_codec.h"

struct qa_store {
	sqlite3 *db;
	char *path;
};

/* Schema version 1; PRAGMA user_version says which version a file has. */
static const char schema_v1[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    /* Queued outgoing messages, in upload order, until their UPLOAD_ACK. */
    "CREATE TABLE outbox(qid INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE,"
    " address TEXT NOT NULL, priority INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
    " props BLOB NOT NULL, body BLOB NOT NULL, queued_ms INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, last_result INTEGER);"
    /* The final UPLOAD_ACK result of every message that left the outbox. */
    "CREATE TABLE sent_log(id BLOB PRIMARY KEY, address TEXT NOT NULL,"
    " result INTEGER NOT NULL, done_ms INTEGER NOT NULL);"
    /* Received messages; id UNIQUE is the deduplication of redeliveries. Rows
     * stay after the application took them (taken_ms set), so that a late
     * redelivery is still recognised. */
    "CREATE TABLE inbox(rid INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE,"
    " seq INTEGER NOT NULL, sender TEXT NOT NULL, queue TEXT NOT NULL,"
    " priority INTEGER NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
    " props BLOB NOT NULL, body BLOB NOT NULL, arrived_ms INTEGER NOT NULL, taken_ms INTEGER);"
    "CREATE INDEX inbox_unread ON inbox(rid) WHERE taken_ms IS NULL;"
    /* STATUS reports to send; removed once a PONG confirmed the server has them. */
    "CREATE TABLE status_queue(sid INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id BLOB NOT NULL UNIQUE, status INTEGER NOT NULL, queued_ms INTEGER NOT NULL);";

static int db_fail(struct qa_store *st, struct qa_error *e, const char *what)
{
	return qa_error_set(e, QA_FAIL_STORE, "client store %s: %s: %s", st->path, what,
	                    sqlite3_errmsg(st->db));
}

static int exec(struct qa_store *st, const char *sql, struct qa_error *e)
{
	char *msg = NULL;
	if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		qa_error_set(e, QA_FAIL_STORE, "client store %s: %s", st->path,
		             msg ? msg : sqlite3_errmsg(st->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int prepare(struct qa_store *st, const char *sql, sqlite3_stmt **stmt, struct qa_error *e)
{
	if (sqlite3_prepare_v2(st->db, sql, -1, stmt, NULL) != SQLITE_OK)
		return db_fail(st, e, "prepare");
	return 0;
}

/* BEGIN IMMEDIATE takes the write lock up front, so a concurrent qaagent
 * (recv while a sync runs) waits on busy_timeout instead of failing mid-way. */
static int begin(struct qa_store *st, struct qa_error *e)
{
	return exec(st, "BEGIN IMMEDIATE", e);
}

static int commit(struct qa_store *st, struct qa_error *e)
{
	if (exec(st, "COMMIT", e) != 0) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static void rollback(struct qa_store *st)
{
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
}

/* SQLite binds a NULL pointer as SQL NULL; the columns are NOT NULL blobs. */
static int bind_blob(sqlite3_stmt *s, int i, const void *p, size_t n)
{
	return sqlite3_bind_blob64(s, i, n > 0 ? p : "", n, SQLITE_TRANSIENT);
}

static int bind_text(sqlite3_stmt *s, int i, const char *p)
{
	return sqlite3_bind_text(s, i, p, -1, SQLITE_TRANSIENT);
}

static void *dup_blob(sqlite3_stmt *s, int col, size_t *len)
{
	const void *p = sqlite3_column_blob(s, col);
	size_t n = (size_t)sqlite3_column_bytes(s, col);
	uint8_t *copy = malloc(n + 1);
	if (copy != NULL && n > 0)
		memcpy(copy, p, n);
	if (copy != NULL)
		copy[n] = 0;
	*len = n;
	return copy;
}

static char *dup_text(sqlite3_stmt *s, int col)
{
	size_t n;
	return dup_blob(s, col, &n);
}

static int copy_id(sqlite3_stmt *s, int col, uint8_t id[16])
{
	if (sqlite3_column_bytes(s, col) != 16)
		return -1;
	memcpy(id, sqlite3_column_blob(s, col), 16);
	return 0;
}

static int migrate(struct qa_store *st, const char *agent_id, struct qa_error *e)
{
	sqlite3_stmt *s = NULL;
	if (begin(st, e) != 0)
		return -1;
	if (prepare(st, "PRAGMA user_version", &s, e) != 0)
		goto fail;
	int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
	sqlite3_finalize(s);
	s = NULL;
	if (version > QA_STORE_SCHEMA_VERSION) {
		qa_error_set(e, QA_FAIL_STORE,
		             "client store %s has schema version %d; this qaagent knows up to %d",
		             st->path, version, QA_STORE_SCHEMA_VERSION);
		goto fail;
	}
	if (version < 1) {
		if (exec(st, schema_v1, e) != 0 || exec(st, "PRAGMA user_version = 1", e) != 0)
			goto fail;
	}
	/* A store belongs to one agent: its outbox was written under that id. */
	if (prepare(st,
	            "INSERT INTO meta(key, value) VALUES('agent_id', ?1) ON CONFLICT DO NOTHING",
	            &s, e) != 0)
		goto fail;
	bind_text(s, 1, agent_id);
	if (sqlite3_step(s) != SQLITE_DONE) {
		db_fail(st, e, "record agent id");
		goto fail;
	}
	sqlite3_finalize(s);
	s = NULL;
	if (prepare(st, "SELECT value FROM meta WHERE key = 'agent_id'", &s, e) != 0)
		goto fail;
	if (sqlite3_step(s) != SQLITE_ROW) {
		db_fail(st, e, "read agent id");
		goto fail;
	}
	if (strcmp((const char *)sqlite3_column_text(s, 0), agent_id) != 0) {
		qa_error_set(e, QA_FAIL_USAGE,
		             "-db %s is the client store of agent \"%s\", not \"%s\"", st->path,
		             (const char *)sqlite3_column_text(s, 0), agent_id);
		goto fail;
	}
	sqlite3_finalize(s);
	return commit(st, e);
fail:
	sqlite3_finalize(s);
	rollback(st);
	return -1;
}

int qa_store_open(struct qa_store **out, const char *path, const char *agent_id, struct qa_error *e)
{
	*out = NULL;
	struct qa_store *st = calloc(1, sizeof *st);
	if (st == NULL || (st->path = strdup(path)) == NULL) {
		free(st);
		return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
	}
	int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		qa_error_set(e, QA_FAIL_STORE, "client store %s: %s", path,
		             st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		qa_store_close(st);
		return -1;
	}
	sqlite3_busy_timeout(st->db, 10000);
	/* WAL keeps readers (status, recv) from blocking a sync's writes;
	 * synchronous=FULL makes every COMMIT durable before we ack. */
	if (exec(st, "PRAGMA journal_mode = WAL", e) != 0 ||
	    exec(st, "PRAGMA synchronous = FULL", e) != 0 || migrate(st, agent_id, e) != 0) {
		qa_store_close(st);
		return -1;
	}
	*out = st;
	return 0;
}

void qa_store_close(struct qa_store *st)
{
	if (st == NULL)
		return;
	sqlite3_close(st->db);
	free(st->path);
	free(st);
}

int qa_store_out_add(struct qa_store *st, const struct qa_out_msg *m, struct qa_error *e)
{
	sqlite3_stmt *s;
	if (prepare(st,
	            "INSERT INTO outbox(id, address, priority, expires_ms, props, body, queued_ms)"
	            " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	            &s, e) != 0)
		return -1;
	bind_blob(s, 1, m->id, 16);
	bind_text(s, 2, m->address);
	sqlite3_bind_int(s, 3, m->priority);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)m->expires_ms);
	bind_blob(s, 5, m->props, m->props_len);
	bind_blob(s, 6, m->body, m->body_len);
	sqlite3_bind_int64(s, 7, (sqlite3_int64)gw_wall_ms());
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, e, "queue message");
	sqlite3_finalize(s);
	return rc;
}

int qa_store_has_id(struct qa_store *st, const uint8_t id[16], int *found, struct qa_error *e)
{
	sqlite3_stmt *s;
	if (prepare(st,
	            "SELECT EXISTS(SELECT 1 FROM outbox WHERE id = ?1)"
	            " OR EXISTS(SELECT 1 FROM sent_log WHERE id = ?1)",
	            &s, e) != 0)
		return -1;
	bind_blob(s, 1, id, 16);
	int rc = sqlite3_step(s) == SQLITE_ROW ? 0 : db_fail(st, e, "look up a message id");
	if (rc == 0)
		*found = sqlite3_column_int(s, 0) != 0;
	sqlite3_finalize(s);
	return rc;
}

void qa_out_list_free(struct qa_out_list *list)
{
	for (size_t i = 0; i < list->n; i++) {
		free(list->v[i].address);
		free(list->v[i].props);
		free(list->v[i].body);
	}
	free(list->v);
	list->v = NULL;
	list->n = 0;
}

int qa_store_out_next(struct qa_store *st, int64_t after_qid, size_t max, struct qa_out_list *list,
                      struct qa_error *e)
{
	sqlite3_stmt *s;
	list->n = 0;
	list->v = calloc(max > 0 ? max : 1, sizeof *list->v);
	if (list->v == NULL)
		return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
	if (prepare(st,
	            "SELECT qid, id, address, priority, expires_ms, props, body FROM outbox"
	            " WHERE qid > ?1 ORDER BY qid LIMIT ?2",
	            &s, e) != 0) {
		qa_out_list_free(list);
		return -1;
	}
	sqlite3_bind_int64(s, 1, after_qid);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)max);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct qa_out_msg *m = &list->v[list->n];
		m->qid = sqlite3_column_int64(s, 0);
		m->address = dup_text(s, 2);
		m->priority = (uint8_t)sqlite3_column_int(s, 3);
		m->expires_ms = (uint64_t)sqlite3_column_int64(s, 4);
		m->props = dup_blob(s, 5, &m->props_len);
		m->body = dup_blob(s, 6, &m->body_len);
		list->n++;
		if (copy_id(s, 1, m->id) != 0 || !m->address || !m->props || !m->body) {
			sqlite3_finalize(s);
			qa_out_list_free(list);
			return qa_error_set(e, QA_FAIL_STORE, "client store %s: bad outbox row",
			                    st->path);
		}
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		qa_out_list_free(list);
		return db_fail(st, e, "read outbox");
	}
	return 0;
}

int qa_store_out_resolve(struct qa_store *st, const struct qa_out_result *r, size_t n,
                         struct qa_error *e)
{
	sqlite3_stmt *log = NULL, *del = NULL, *keep = NULL;
	if (begin(st, e) != 0)
		return -1;
	if (prepare(st,
	            "INSERT OR REPLACE INTO sent_log(id, address, result, done_ms)"
	            " SELECT id, address, ?2, ?3 FROM outbox WHERE id = ?1",
	            &log, e) != 0 ||
	    prepare(st, "DELETE FROM outbox WHERE id = ?1", &del, e) != 0 ||
	    prepare(st, "UPDATE outbox SET attempts = attempts + 1, last_result = ?2 WHERE id = ?1",
	            &keep, e) != 0)
		goto fail;
	const sqlite3_int64 now = (sqlite3_int64)gw_wall_ms();
	for (size_t i = 0; i < n; i++) {
		if (r[i].result == QS_R_QUOTA) {
			/* The recipient is full: the message stays queued. */
			bind_blob(keep, 1, r[i].id, 16);
			sqlite3_bind_int(keep, 2, r[i].result);
			if (sqlite3_step(keep) != SQLITE_DONE)
				goto db;
			sqlite3_reset(keep);
			continue;
		}
		bind_blob(log, 1, r[i].id, 16);
		sqlite3_bind_int(log, 2, r[i].result);
		sqlite3_bind_int64(log, 3, now);
		bind_blob(del, 1, r[i].id, 16);
		if (sqlite3_step(log) != SQLITE_DONE || sqlite3_step(del) != SQLITE_DONE)
			goto db;
		sqlite3_reset(log);
		sqlite3_reset(del);
	}
	sqlite3_finalize(log);
	sqlite3_finalize(del);
	sqlite3_finalize(keep);
	return commit(st, e);
db:
	db_fail(st, e, "record upload results");
fail:
	sqlite3_finalize(log);
	sqlite3_finalize(del);
	sqlite3_finalize(keep);
	rollback(st);
	return -1;
}

int qa_store_inbox_add(struct qa_store *st, const struct qa_in_msg *m, size_t n, uint8_t *is_new,
                       size_t *added, struct qa_error *e)
{
	sqlite3_stmt *s = NULL;
	*added = 0;
	if (is_new != NULL)
		memset(is_new, 0, n);
	if (begin(st, e) != 0)
		return -1;
	if (prepare(st,
	            "INSERT INTO inbox(id, seq, sender, queue, priority, created_ms, expires_ms,"
	            " props, body, arrived_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
	            " ON CONFLICT(id) DO NOTHING",
	            &s, e) != 0)
		goto fail;
	const sqlite3_int64 now = (sqlite3_int64)gw_wall_ms();
	for (size_t i = 0; i < n; i++) {
		bind_blob(s, 1, m[i].id, 16);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)m[i].seq);
		bind_text(s, 3, m[i].from);
		bind_text(s, 4, m[i].queue);
		sqlite3_bind_int(s, 5, m[i].priority);
		sqlite3_bind_int64(s, 6, (sqlite3_int64)m[i].created_ms);
		sqlite3_bind_int64(s, 7, (sqlite3_int64)m[i].expires_ms);
		bind_blob(s, 8, m[i].props, m[i].props_len);
		bind_blob(s, 9, m[i].body, m[i].body_len);
		sqlite3_bind_int64(s, 10, now);
		if (sqlite3_step(s) != SQLITE_DONE) {
			db_fail(st, e, "store received message");
			goto fail;
		}
		const int fresh = sqlite3_changes(st->db) > 0;
		*added += (size_t)fresh;
		if (is_new != NULL)
			is_new[i] = (uint8_t)fresh;
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	if (commit(st, e) != 0)
		goto undone;
	return 0;
fail:
	sqlite3_finalize(s);
	rollback(st);
undone:
	*added = 0;
	if (is_new != NULL)
		memset(is_new, 0, n);
	return -1;
}

void qa_in_list_free(struct qa_in_list *list)
{
	for (size_t i = 0; i < list->n; i++) {
		free(list->v[i].from);
		free(list->v[i].queue);
		free(list->v[i].props);
		free(list->v[i].body);
	}
	free(list->v);
	list->v = NULL;
	list->n = 0;
}

int qa_store_inbox_unread(struct qa_store *st, const char *queue, struct qa_in_list *list,
                          struct qa_error *e)
{
	sqlite3_stmt *s;
	size_t cap = 0;
	list->n = 0;
	list->v = NULL;
	if (prepare(st,
	            "SELECT rid, seq, id, sender, queue, priority, created_ms, expires_ms, props,"
	            " body FROM inbox WHERE taken_ms IS NULL AND (?1 IS NULL OR queue = ?1)"
	            " ORDER BY rid",
	            &s, e) != 0)
		return -1;
	if (queue != NULL)
		bind_text(s, 1, queue);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (list->n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct qa_in_msg *v = realloc(list->v, ncap * sizeof *v);
			if (v == NULL) {
				sqlite3_finalize(s);
				qa_in_list_free(list);
				return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
			}
			list->v = v;
			cap = ncap;
		}
		struct qa_in_msg *m = &list->v[list->n++];
		memset(m, 0, sizeof *m);
		m->rid = sqlite3_column_int64(s, 0);
		m->seq = (uint64_t)sqlite3_column_int64(s, 1);
		m->from = dup_text(s, 3);
		m->queue = dup_text(s, 4);
		m->priority = (uint8_t)sqlite3_column_int(s, 5);
		m->created_ms = (uint64_t)sqlite3_column_int64(s, 6);
		m->expires_ms = (uint64_t)sqlite3_column_int64(s, 7);
		m->props = dup_blob(s, 8, &m->props_len);
		m->body = dup_blob(s, 9, &m->body_len);
		if (copy_id(s, 2, m->id) != 0 || !m->from || !m->queue || !m->props || !m->body) {
			sqlite3_finalize(s);
			qa_in_list_free(list);
			return qa_error_set(e, QA_FAIL_STORE, "client store %s: bad inbox row",
			                    st->path);
		}
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		qa_in_list_free(list);
		return db_fail(st, e, "read inbox");
	}
	return 0;
}

int qa_store_inbox_take(struct qa_store *st, const struct qa_in_list *list, uint8_t status,
                        struct qa_error *e)
{
	sqlite3_stmt *take = NULL, *report = NULL;
	if (begin(st, e) != 0)
		return -1;
	if (prepare(st, "UPDATE inbox SET taken_ms = ?2 WHERE rid = ?1 AND taken_ms IS NULL", &take,
	            e) != 0 ||
	    prepare(st,
	            "INSERT OR REPLACE INTO status_queue(id, status, queued_ms) VALUES(?1, ?2, ?3)",
	            &report, e) != 0)
		goto fail;
	const sqlite3_int64 now = (sqlite3_int64)gw_wall_ms();
	for (size_t i = 0; i < list->n; i++) {
		const struct qa_in_msg *m = &list->v[i];
		sqlite3_bind_int64(take, 1, m->rid);
		sqlite3_bind_int64(take, 2, now);
		if (sqlite3_step(take) != SQLITE_DONE)
			goto db;
		int changed = sqlite3_changes(st->db);
		sqlite3_reset(take);
		/* No report for a message another qaagent took meanwhile, nor for
		 * the pool's own `system` messages: a status of a status would
		 * only send the pool a message nobody reads. */
		if (changed == 0 || strcmp(m->queue, "system") == 0)
			continue;
		bind_blob(report, 1, m->id, 16);
		sqlite3_bind_int(report, 2, status);
		sqlite3_bind_int64(report, 3, now);
		if (sqlite3_step(report) != SQLITE_DONE)
			goto db;
		sqlite3_reset(report);
	}
	sqlite3_finalize(take);
	sqlite3_finalize(report);
	return commit(st, e);
db:
	db_fail(st, e, "mark messages taken");
fail:
	sqlite3_finalize(take);
	sqlite3_finalize(report);
	rollback(st);
	return -1;
}

void qa_status_list_free(struct qa_status_list *list)
{
	free(list->v);
	list->v = NULL;
	list->n = 0;
}

int qa_store_status_next(struct qa_store *st, int64_t after_sid, size_t max,
                         struct qa_status_list *list, struct qa_error *e)
{
	sqlite3_stmt *s;
	list->n = 0;
	list->v = calloc(max > 0 ? max : 1, sizeof *list->v);
	if (list->v == NULL)
		return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
	if (prepare(st,
	            "SELECT sid, id, status FROM status_queue WHERE sid > ?2 ORDER BY sid LIMIT ?1",
	            &s, e) != 0) {
		qa_status_list_free(list);
		return -1;
	}
	sqlite3_bind_int64(s, 1, (sqlite3_int64)max);
	sqlite3_bind_int64(s, 2, after_sid);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct qa_status_report *r = &list->v[list->n];
		r->sid = sqlite3_column_int64(s, 0);
		r->status = (uint8_t)sqlite3_column_int(s, 2);
		if (copy_id(s, 1, r->id) != 0)
			continue; /* cannot happen: ids are written as 16 bytes */
		list->n++;
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		qa_status_list_free(list);
		return db_fail(st, e, "read status queue");
	}
	return 0;
}

int qa_store_status_done(struct qa_store *st, const struct qa_status_list *list, struct qa_error *e)
{
	sqlite3_stmt *s = NULL;
	if (begin(st, e) != 0)
		return -1;
	/* Match the status too: a report re-queued with another status since
	 * it was sent is still owed. */
	if (prepare(st, "DELETE FROM status_queue WHERE sid = ?1 AND status = ?2", &s, e) != 0)
		goto fail;
	for (size_t i = 0; i < list->n; i++) {
		sqlite3_bind_int64(s, 1, list->v[i].sid);
		sqlite3_bind_int(s, 2, list->v[i].status);
		if (sqlite3_step(s) != SQLITE_DONE) {
			db_fail(st, e, "remove sent status reports");
			goto fail;
		}
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	return commit(st, e);
fail:
	sqlite3_finalize(s);
	rollback(st);
	return -1;
}

int qa_store_meta_get(struct qa_store *st, const char *key, char **value, struct qa_error *e)
{
	sqlite3_stmt *s;
	*value = NULL;
	if (prepare(st, "SELECT value FROM meta WHERE key = ?1", &s, e) != 0)
		return -1;
	bind_text(s, 1, key);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*value = dup_text(s, 0);
		sqlite3_finalize(s);
		return *value != NULL ? 1 : qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : db_fail(st, e, "read meta");
}

int qa_store_meta_set(struct qa_store *st, const char *key, const char *value, struct qa_error *e)
{
	sqlite3_stmt *s;
	if (prepare(st, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", &s, e) != 0)
		return -1;
	bind_text(s, 1, key);
	bind_text(s, 2, value);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : db_fail(st, e, "write meta");
	sqlite3_finalize(s);
	return rc;
}

int qa_store_counts(struct qa_store *st, struct qa_store_counts *c, struct qa_error *e)
{
	static const char sql[] =
	    "SELECT (SELECT count(*) FROM outbox),"
	    " (SELECT count(*) FROM inbox WHERE taken_ms IS NULL),"
	    " (SELECT count(*) FROM inbox), (SELECT count(*) FROM status_queue)";
	sqlite3_stmt *s;
	memset(c, 0, sizeof *c);
	/* One read transaction, so that the counts agree with each other. */
	if (exec(st, "BEGIN", e) != 0)
		return -1;
	if (prepare(st, sql, &s, e) != 0)
		goto fail;
	if (sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_finalize(s);
		db_fail(st, e, "count");
		goto fail;
	}
	c->outgoing = (uint64_t)sqlite3_column_int64(s, 0);
	c->incoming_unread = (uint64_t)sqlite3_column_int64(s, 1);
	c->incoming_total = (uint64_t)sqlite3_column_int64(s, 2);
	c->statuses_queued = (uint64_t)sqlite3_column_int64(s, 3);
	sqlite3_finalize(s);
	if (prepare(st, "SELECT result, count(*) FROM sent_log GROUP BY result", &s, e) != 0)
		goto fail;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int r = sqlite3_column_int(s, 0);
		if (r >= 0 && r < 7)
			c->sent[r] = (uint64_t)sqlite3_column_int64(s, 1);
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_fail(st, e, "count sent log");
		goto fail;
	}
	return commit(st, e);
fail:
	rollback(st);
	return -1;
}

int qa_store_queue_mark(struct qa_store *st, uint64_t *mark, struct qa_error *e)
{
	/* AUTOINCREMENT keeps the largest id ever given in sqlite_sequence, also
	 * after the row left: the sum grows exactly when something is queued. */
	static const char sql[] = "SELECT coalesce(sum(seq), 0) FROM sqlite_sequence"
	                          " WHERE name IN ('outbox', 'status_queue')";
	sqlite3_stmt *s;
	*mark = 0;
	if (prepare(st, sql, &s, e) != 0)
		return -1;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*mark = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : db_fail(st, e, "read queue mark");
}

/* The note's props name the message as 32 lowercase hex digits: the SQL
 * picks candidates by substring, the decoder checks the exact property. */
static int note_status(const void *props, size_t len, const char *hex, int *status)
{
	struct qs_props p;
	if (qs_decode_props(props, len, &p) != 0)
		return 0;
	int match = 0, code = 0;
	for (uint16_t i = 0; i < p.n; i++) {
		const struct qs_str *k = &p.v[i].key, *v = &p.v[i].value;
		if (k->len == 19 && memcmp(k->ptr, "ias_StatusMessageId", 19) == 0)
			match = v->len == 32 && memcmp(v->ptr, hex, 32) == 0;
		else if (k->len == 10 && memcmp(k->ptr, "ias_Status", 10) == 0 && v->len > 0 &&
		         v->len < 4) {
			char num[4] = {0};
			memcpy(num, v->ptr, v->len);
			code = atoi(num);
		}
	}
	free(p.v);
	if (match && code > 0)
		*status = code;
	return match && code > 0;
}

int qa_store_message_status(struct qa_store *st, const uint8_t id[16], struct qa_msg_status *out,
                            struct qa_error *e)
{
	static const char out_sql[] =
	    "SELECT address, queued_ms, attempts FROM outbox WHERE id = ?1";
	static const char log_sql[] = "SELECT address, result, done_ms FROM sent_log WHERE id = ?1";
	static const char note_sql[] =
	    "SELECT props, created_ms FROM inbox WHERE queue = 'system' AND instr(props, ?1) > 0"
	    " ORDER BY created_ms, rid";
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", id[i]);
	memset(out, 0, sizeof *out);
	out->result = -1;
	sqlite3_stmt *s;
	if (exec(st, "BEGIN", e) != 0)
		return -1;
	if (prepare(st, out_sql, &s, e) != 0)
		goto fail;
	bind_blob(s, 1, id, 16);
	if (sqlite3_step(s) == SQLITE_ROW) {
		out->found = out->queued = 1;
		out->address = strdup((const char *)sqlite3_column_text(s, 0));
		out->queued_ms = sqlite3_column_int64(s, 1);
		out->attempts = sqlite3_column_int(s, 2);
	}
	sqlite3_finalize(s);
	if (prepare(st, log_sql, &s, e) != 0)
		goto fail;
	bind_blob(s, 1, id, 16);
	if (sqlite3_step(s) == SQLITE_ROW) {
		out->found = 1;
		if (!out->address)
			out->address = strdup((const char *)sqlite3_column_text(s, 0));
		out->result = sqlite3_column_int(s, 1);
		out->done_ms = sqlite3_column_int64(s, 2);
	}
	sqlite3_finalize(s);
	if (prepare(st, note_sql, &s, e) != 0)
		goto fail;
	bind_blob(s, 1, hex, 32);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int code;
		if (note_status(sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0), hex,
		                &code)) {
			out->notes++;
			out->status = code;
			out->status_ms = sqlite3_column_int64(s, 1);
		}
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		db_fail(st, e, "read status notes");
		goto fail;
	}
	return commit(st, e);
fail:
	rollback(st);
	qa_msg_status_free(out);
	return -1;
}

void qa_msg_status_free(struct qa_msg_status *m)
{
	free(m->address);
	m->address = NULL;
}
