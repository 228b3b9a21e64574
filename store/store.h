/* The shared message store (PostgreSQL) as seen by one worker: a libpq
 * connection driven by the worker's event loop in pipeline mode, so many
 * sessions' statements share the connection without waiting on each other.
 * Everything here runs on the owning worker's thread only. */
#ifndef ST_STORE_H
#define ST_STORE_H

#include <libpq-fe.h>
#include <stdint.h>

struct event_base;
struct st_conn;
struct st_op;

/* Called once per submitted operation (unless cancelled): res is the
 * statement's result on success, NULL if the store could not run it (the
 * connection is down or broke, or the statement failed), with err saying why.
 * res is cleared by the store after the callback returns. */
typedef void (*st_done_fn)(void *arg, const PGresult *res, const char *err);

/* Called when the connection comes up (up = 1) or goes down (up = 0). */
typedef void (*st_state_fn)(void *arg, int up);

/* name: "NODE/WORKER/N", "NODE/retention", ...: in the logs, and as the
 * connection's application_name, "qagw/" name (pg_stat_activity tells the
 * connections apart; it overrides one in conninfo). */
struct st_conn *st_conn_new(struct event_base *base, const char *conninfo, const char *name,
                            st_state_fn on_state, void *state_arg);
/* A blocking connection (start-up, command line) named "qagw/" name. */
PGconn *st_connect_blocking(const char *conninfo, const char *name);
void st_conn_free(struct st_conn *c);
int st_conn_is_up(const struct st_conn *c);
/* Drops the connection (failing what is in flight, then reconnecting) when
 * a statement has had no answer for ms milliseconds; 0 (the default):
 * never. */
void st_conn_set_timeout(struct st_conn *c, int ms);
/* Statements sent and not yet answered. */
int st_conn_inflight(const struct st_conn *c);

/* LISTEN support: fn gets every notification (channel, payload) that
 * arrives on this connection. The LISTEN itself is an ordinary statement,
 * to be re-sent each time the connection comes up. */
typedef void (*st_notify_fn)(void *arg, const char *channel, const char *payload);
void st_conn_on_notify(struct st_conn *c, st_notify_fn fn, void *arg);

/* Parameters of one statement, built with st_params_*; all are sent in
 * binary format. Owns its buffers; reset with st_params_clear. */
#define ST_MAX_PARAMS 16
struct st_params {
	int n;
	Oid types[ST_MAX_PARAMS];
	char *values[ST_MAX_PARAMS];
	int lengths[ST_MAX_PARAMS];
	int formats[ST_MAX_PARAMS];
	int failed; /* an allocation failed; submit refuses */
	/* The statement's text is a literal (never changes at its address): it
	 * is prepared once per connection and executed by name after that,
	 * sparing PostgreSQL a parse and plan per call. */
	int reuse;
};

void st_params_text(struct st_params *p, const char *s, size_t n);
void st_params_bytea(struct st_params *p, const void *data, size_t n);
void st_params_int8(struct st_params *p, int64_t v);
void st_params_int4(struct st_params *p, int32_t v);
/* Arrays: st_params_array_begin, then one st_params_array_add per element,
 * then st_params_array_end. elem_oid is the element type (e.g. 25 text). */
struct st_array {
	char *buf;
	size_t len, cap;
	uint32_t count;
	Oid elem_oid;
	int failed;
};
void st_array_begin(struct st_array *a, Oid elem_oid);
void st_array_add(struct st_array *a, const void *data, size_t n);
void st_array_add_int2(struct st_array *a, int16_t v);
void st_array_add_int4(struct st_array *a, int32_t v);
void st_array_add_int8(struct st_array *a, int64_t v);
/* Finishes a and appends it as the next parameter (taking its buffer). */
void st_params_array(struct st_params *p, struct st_array *a, Oid array_oid);
/* Appends src's elements from byte offset from to to (count of them) to dst:
 * offsets are a.len before and after the elements were added. */
void st_array_append(struct st_array *dst, const struct st_array *src, size_t from, size_t to,
                     uint32_t count);
/* Appends text[] of the n strings v as the next parameter. */
void st_params_text_array(struct st_params *p, const char *const *v, int n);
void st_params_clear(struct st_params *p);

/* Sends one statement (binary results). Returns the operation, or NULL when
 * the store is down or the send failed: then done is never called. */
struct st_op *st_submit(struct st_conn *c, const char *sql, const struct st_params *p,
                        st_done_fn done, void *arg) __attribute__((warn_unused_result));

/* st_submit, then st_params_clear(p): for the statement functions of store/,
 * which build p only to send it. (Inline, so that it calls st_submit from the
 * caller's object: tests/fuzz/fuzz_session.c wraps st_submit at link time.) */
static inline struct st_op *st_submit_clear(struct st_conn *c, const char *sql, struct st_params *p,
                                            st_done_fn done, void *arg)
{
	struct st_op *op = st_submit(c, sql, p, done, arg);
	st_params_clear(p);
	return op;
}

/* The caller no longer wants the result (its session is gone): done will
 * not be called. The statement itself still runs to completion. */
void st_op_cancel(struct st_op *op);

/* Binary result helpers. */
int64_t st_get_int8(const PGresult *r, int row, int col);
int32_t st_get_int4(const PGresult *r, int row, int col);
int16_t st_get_int2(const PGresult *r, int row, int col);

/* Type oids used by the gateway. */
#define ST_OID_BOOL        16
#define ST_OID_BYTEA       17
#define ST_OID_INT8        20
#define ST_OID_INT2        21
#define ST_OID_INT4        23
#define ST_OID_TEXT        25
#define ST_OID_UUID        2950
#define ST_OID_BOOL_ARRAY  1000
#define ST_OID_BYTEA_ARRAY 1001
#define ST_OID_INT2_ARRAY  1005
#define ST_OID_INT4_ARRAY  1007
#define ST_OID_TEXT_ARRAY  1009
#define ST_OID_INT8_ARRAY  1016
#define ST_OID_UUID_ARRAY  2951

#endif
