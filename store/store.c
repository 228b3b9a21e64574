/* One worker's PostgreSQL connection in pipeline mode; see store.h.
 *
 * Every submitted statement is followed by its own pipeline sync, so each is
 * its own implicit transaction and a failing one never aborts another's. The
 * in-flight list is in send order, which is the order results come back in.
 * When the connection breaks, every in-flight operation completes with an
 * error: the caller cannot know whether it committed, so it acknowledges
 * nothing and the agent's retry (idempotent by message id) settles it. */
#include "store/store.h"
#include "store/store_int.h"

#include "common/clock.h"
#include "common/log.h"

#include <endian.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

enum st_state {
	ST_DOWN,       /* no connection; the retry timer is armed */
	ST_CONNECTING, /* PQconnectPoll in progress on c->io */
	ST_UP,         /* connected, in pipeline mode: statements may be sent */
};

#define ST_MAX_PREPARED 32

struct st_conn {
	struct event_base *base;
	char *conninfo;
	char name[160];
	PGconn *pg;
	enum st_state state;
	struct event *io;    /* connect polling, then read readiness (persistent) */
	struct event *wr;    /* write readiness while libpq has unsent data */
	struct event *retry; /* reconnect timer, and deferred failure handling */
	int broken;          /* a send failed: fail everything on the next tick */
	int backoff_ms;
	TAILQ_HEAD(, st_op) inflight;
	int n_inflight;
	st_state_fn on_state;
	void *state_arg;
	st_notify_fn on_notify;
	void *notify_arg;
	int timeout_ms; /* no answer (or connect) within this: the connection is dropped (0: never)
	                 */
	int64_t connect_started_ms; /* gw_mono_ms */
	int64_t last_probe_ms;      /* idle probe (SELECT 1), gw_mono_ms */
	struct event *watchdog;     /* checks the oldest statement in flight, every second */
	/* Statements prepared on this connection (st_params.reuse), by text address. */
	const char *prepared[ST_MAX_PREPARED];
	int n_prepared;
	unsigned prepared_gen; /* names are "qagwG_I": a failed prepare takes a new name */
};

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 2000

static void start_connect(struct st_conn *c);

static void arm_retry(struct st_conn *c, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(c->retry, &tv);
}

static void set_state(struct st_conn *c, enum st_state s)
{
	int was_up = c->state == ST_UP;
	c->state = s;
	if (was_up != (s == ST_UP) && c->on_state)
		c->on_state(c->state_arg, s == ST_UP);
}

/* Drops the connection, fails every in-flight operation and schedules a
 * reconnect with backoff. */
static void conn_lost(struct st_conn *c, const char *why)
{
	if (c->state == ST_UP)
		gw_log(GW_LOG_WARN, "store %s: connection lost: %s", c->name, why);
	if (c->io)
		event_free(c->io);
	c->io = NULL;
	event_del(c->wr);
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	c->broken = 0;
	c->n_prepared = 0; /* a new connection has none */
	set_state(c, ST_DOWN);
	struct st_op *op;
	while ((op = TAILQ_FIRST(&c->inflight))) {
		TAILQ_REMOVE(&c->inflight, op, link);
		c->n_inflight--;
		if (op->done)
			op->done(op->arg, NULL, why);
		if (op->res)
			PQclear(op->res);
		free(op);
	}
	arm_retry(c, c->backoff_ms);
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void complete(struct st_conn *c, struct st_op *op)
{
	TAILQ_REMOVE(&c->inflight, op, link);
	c->n_inflight--;
	if (op->slot >= 0 && (op->failed || !op->res)) {
		/* its prepare may have failed: every statement is prepared again,
		 * under new names (those that exist stay unused) */
		c->prepared_gen++;
		c->n_prepared = 0;
	}
	if (op->done) {
		if (op->failed || !op->res)
			op->done(op->arg, NULL,
			         op->err[0] ? op->err : "statement returned no result");
		else
			op->done(op->arg, op->res, NULL);
	}
	if (op->res)
		PQclear(op->res);
	free(op);
}

static void take_results(struct st_conn *c)
{
	int nulls = 0;
	while (c->state == ST_UP && !TAILQ_EMPTY(&c->inflight) && !PQisBusy(c->pg)) {
		PGresult *r = PQgetResult(c->pg);
		struct st_op *op = TAILQ_FIRST(&c->inflight);
		if (!r) {
			if (++nulls > 1)
				break;
			continue;
		}
		nulls = 0;
		switch (PQresultStatus(r)) {
		case PGRES_PIPELINE_SYNC:
			PQclear(r);
			complete(c, op);
			break;
		case PGRES_TUPLES_OK:
		case PGRES_COMMAND_OK:
			if (op->skip > 0) { /* the PQsendPrepare that went first */
				op->skip--;
				PQclear(r);
			} else if (!op->res)
				op->res = r;
			else
				PQclear(r);
			break;
		case PGRES_PIPELINE_ABORTED:
			/* the execution after a failed prepare: the prepare's error
			 * is the reason to report */
			if (!op->failed)
				snprintf(op->err, sizeof(op->err), "pipeline aborted");
			op->failed = 1;
			PQclear(r);
			break;
		default: {
			const char *m = PQresultErrorMessage(r);
			op->failed = 1;
			snprintf(op->err, sizeof(op->err), "%s", m && *m ? m : "statement failed");
			char *nl = strchr(op->err, '\n');
			if (nl)
				*nl = 0;
			gw_log(GW_LOG_WARN, "store %s: statement failed: %s", c->name, op->err);
			PQclear(r);
		}
		}
	}
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct st_conn *c = arg;
	if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
		char why[200];
		snprintf(why, sizeof(why), "%s", PQerrorMessage(c->pg));
		char *nl = strchr(why, '\n');
		if (nl)
			*nl = 0;
		conn_lost(c, why[0] ? why : "connection closed");
		return;
	}
	take_results(c);
	PGnotify *n;
	while (c->state == ST_UP && (n = PQnotifies(c->pg))) {
		if (c->on_notify)
			c->on_notify(c->notify_arg, n->relname, n->extra);
		PQfreemem(n);
	}
	if (c->state == ST_UP && PQstatus(c->pg) == CONNECTION_BAD)
		conn_lost(c, "connection closed");
}

static void flush(struct st_conn *c)
{
	int r = PQflush(c->pg);
	if (r < 0) {
		c->broken = 1;
		event_active(c->retry, EV_TIMEOUT, 0);
	} else if (r == 1) {
		event_add(c->wr, NULL);
	} else {
		event_del(c->wr);
	}
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct st_conn *c = arg;
	if (c->state == ST_UP)
		flush(c);
}

static void poll_connect(evutil_socket_t fd, short what, void *arg);

static void wait_connect(struct st_conn *c, short what)
{
	if (c->io)
		event_free(c->io);
	c->io = event_new(c->base, PQsocket(c->pg), what, poll_connect, c);
	event_add(c->io, NULL);
}

static void poll_connect(evutil_socket_t fd, short what, void *arg)
{
	struct st_conn *c = arg;
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_READING:
		wait_connect(c, EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		wait_connect(c, EV_WRITE);
		return;
	case PGRES_POLLING_OK:
		break;
	default: {
		/* One line per host tried (multi-host conninfo): joined with "; ". */
		char why[400];
		snprintf(why, sizeof(why), "%s", PQerrorMessage(c->pg));
		size_t n = strlen(why);
		while (n && (why[n - 1] == '\n' || why[n - 1] == ' '))
			why[--n] = 0;
		for (char *p = why; (p = strchr(p, '\n'));)
			*p = ';';
		gw_log(GW_LOG_WARN, "store %s: connect failed: %s (retry in %d ms)", c->name, why,
		       c->backoff_ms);
		conn_lost(c, why);
		return;
	}
	}
	if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
		conn_lost(c, "cannot enter pipeline mode");
		return;
	}
	event_free(c->io);
	c->io = event_new(c->base, PQsocket(c->pg), EV_READ | EV_PERSIST, on_readable, c);
	event_add(c->io, NULL);
	event_assign(c->wr, c->base, PQsocket(c->pg), EV_WRITE, on_writable, c);
	c->backoff_ms = BACKOFF_MIN_MS;
	gw_log(GW_LOG_INFO, "store %s: connected", c->name);
	set_state(c, ST_UP);
}

/* conninfo with application_name "qagw/" name on top (kw and val: 3 entries). */
static void conn_params(const char *conninfo, const char *name, char *app, size_t app_len,
                        const char **kw, const char **val)
{
	snprintf(app, app_len, "qagw/%s", name);
	kw[0] = "dbname"; /* expanded: conninfo's own keywords */
	val[0] = conninfo;
	kw[1] = "application_name"; /* after it: wins */
	val[1] = app;
	kw[2] = val[2] = NULL;
}

PGconn *st_connect_blocking(const char *conninfo, const char *name)
{
	char app[192];
	const char *kw[3], *val[3];
	conn_params(conninfo, name, app, sizeof(app), kw, val);
	return PQconnectdbParams(kw, val, 1);
}

static void start_connect(struct st_conn *c)
{
	char app[192];
	const char *kw[3], *val[3];
	conn_params(c->conninfo, c->name, app, sizeof(app), kw, val);
	c->pg = PQconnectStartParams(kw, val, 1);
	if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
		gw_log(GW_LOG_WARN, "store %s: cannot start connecting: %s", c->name,
		       c->pg ? PQerrorMessage(c->pg) : "out of memory");
		conn_lost(c, "cannot connect");
		return;
	}
	c->state = ST_CONNECTING;
	c->connect_started_ms = gw_mono_ms();
	wait_connect(c, EV_WRITE);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct st_conn *c = arg;
	if (c->broken) {
		conn_lost(c, "send failed");
		return;
	}
	if (c->state == ST_DOWN)
		start_connect(c);
}

/* A store that stops answering (a network partition, a hung server) never
 * errors by itself: the oldest statement in flight past the timeout drops
 * the connection, which fails every statement in flight (store_unavailable
 * for their sessions; nothing is acknowledged) and reconnects. */
static int64_t ms_since(int64_t mono_ms)
{
	return gw_mono_ms() - mono_ms;
}

/* Also: a connect that takes longer than the timeout is abandoned (libpq's
 * connect_timeout does not apply to a non-blocking connect: a silent host
 * would hold it for the kernel's SYN retries), and an idle connection is
 * probed with SELECT 1 every timeout/2, so that a dead one (the node's
 * LISTEN connection is idle for long stretches) is noticed. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct st_conn *c = arg;
	if (!c->timeout_ms)
		return;
	if (c->state == ST_CONNECTING) {
		if (ms_since(c->connect_started_ms) >= c->timeout_ms) {
			gw_log(GW_LOG_WARN, "store %s: connect timed out after %d ms", c->name,
			       c->timeout_ms);
			conn_lost(c, "connect timed out");
		}
		return;
	}
	if (c->state != ST_UP)
		return;
	struct st_op *op = TAILQ_FIRST(&c->inflight);
	if (!op) {
		if (ms_since(c->last_probe_ms) >= c->timeout_ms / 2) {
			struct st_params none = {0};
			c->last_probe_ms = gw_mono_ms();
			if (!st_submit(c, "SELECT 1", &none, NULL, NULL))
				return; /* the send failed: the connection is being dropped */
		}
		return;
	}
	int64_t ms = ms_since(op->sent_ms);
	if (ms >= c->timeout_ms) {
		char why[96];
		snprintf(why, sizeof(why), "no answer for %lld ms (store timeout)", (long long)ms);
		conn_lost(c, why);
	}
}

void st_conn_set_timeout(struct st_conn *c, int ms)
{
	c->timeout_ms = ms;
}

struct st_conn *st_conn_new(struct event_base *base, const char *conninfo, const char *name,
                            st_state_fn on_state, void *state_arg)
{
	struct st_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->base = base;
	c->conninfo = strdup(conninfo);
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->on_state = on_state;
	c->state_arg = state_arg;
	c->backoff_ms = BACKOFF_MIN_MS;
	TAILQ_INIT(&c->inflight);
	c->retry = evtimer_new(base, on_retry, c);
	c->wr = event_new(base, -1, EV_WRITE, on_writable, c);
	c->watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, c);
	struct timeval second = {1, 0};
	event_add(c->watchdog, &second);
	c->state = ST_DOWN;
	start_connect(c);
	return c;
}

void st_conn_free(struct st_conn *c)
{
	if (!c)
		return;
	c->on_state = NULL;
	struct st_op *op;
	while ((op = TAILQ_FIRST(&c->inflight))) {
		TAILQ_REMOVE(&c->inflight, op, link);
		if (op->res)
			PQclear(op->res);
		free(op);
	}
	if (c->io)
		event_free(c->io);
	event_free(c->wr);
	event_free(c->retry);
	event_free(c->watchdog);
	if (c->pg)
		PQfinish(c->pg);
	free(c->conninfo);
	free(c);
}

void st_conn_on_notify(struct st_conn *c, st_notify_fn fn, void *arg)
{
	c->on_notify = fn;
	c->notify_arg = arg;
}

int st_conn_inflight(const struct st_conn *c)
{
	return c->n_inflight;
}

int st_conn_is_up(const struct st_conn *c)
{
	return c->state == ST_UP && !c->broken;
}

struct st_op *st_submit(struct st_conn *c, const char *sql, const struct st_params *p,
                        st_done_fn done, void *arg)
{
	if (!st_conn_is_up(c) || p->failed)
		return NULL;
	struct st_op *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	/* A literal statement: prepared on this connection the first time (in
	 * the same pipeline segment as its first execution), by name after. */
	int slot = -1, fresh = 0;
	for (int i = 0; p->reuse && i < c->n_prepared && slot < 0; i++)
		if (c->prepared[i] == sql)
			slot = i;
	if (p->reuse && slot < 0 && c->n_prepared < ST_MAX_PREPARED)
		slot = c->n_prepared, fresh = 1;
	const char *const *values = (const char *const *)p->values;
	int sent;
	if (slot >= 0) {
		char name[32];
		snprintf(name, sizeof(name), "qagw%u_%d", c->prepared_gen, slot);
		sent = (!fresh || PQsendPrepare(c->pg, name, sql, p->n, p->types)) &&
		       PQsendQueryPrepared(c->pg, name, p->n, values, p->lengths, p->formats, 1);
	} else {
		sent = PQsendQueryParams(c->pg, sql, p->n, p->types, values, p->lengths, p->formats,
		                         1);
	}
	op->slot = -1;
	if (sent && fresh) {
		c->prepared[slot] = sql;
		c->n_prepared++;
		op->skip = 1;
		op->slot = slot;
	}
	if (!sent || !PQpipelineSync(c->pg)) {
		gw_log(GW_LOG_WARN, "store %s: send failed: %s", c->name, PQerrorMessage(c->pg));
		free(op);
		c->broken = 1;
		event_active(c->retry, EV_TIMEOUT, 0);
		return NULL;
	}
	op->done = done;
	op->arg = arg;
	op->sent_ms = gw_mono_ms();
	TAILQ_INSERT_TAIL(&c->inflight, op, link);
	c->n_inflight++;
	flush(c);
	return op;
}

void st_op_cancel(struct st_op *op)
{
	op->done = NULL;
	op->arg = NULL;
}

/* ---- parameters ---- */

static void add_param(struct st_params *p, Oid type, char *value, int len)
{
	if (p->n == ST_MAX_PARAMS || (!value && len > 0)) {
		free(value);
		p->failed = 1;
		return;
	}
	p->types[p->n] = type;
	p->values[p->n] = value;
	p->lengths[p->n] = len;
	p->formats[p->n] = 1;
	p->n++;
}

void st_params_text(struct st_params *p, const char *s, size_t n)
{
	char *v = malloc(n + 1);
	if (v) {
		memcpy(v, s, n);
		v[n] = 0;
	}
	add_param(p, ST_OID_TEXT, v, v ? (int)n : 1);
}

void st_params_bytea(struct st_params *p, const void *data, size_t n)
{
	char *v = malloc(n ? n : 1);
	if (v)
		memcpy(v, data, n);
	add_param(p, ST_OID_BYTEA, v, v ? (int)n : 1);
}

void st_params_int8(struct st_params *p, int64_t v)
{
	uint64_t be = htobe64((uint64_t)v);
	char *b = malloc(8);
	if (b)
		memcpy(b, &be, 8);
	add_param(p, ST_OID_INT8, b, 8);
}

void st_params_int4(struct st_params *p, int32_t v)
{
	uint32_t be = htobe32((uint32_t)v);
	char *b = malloc(4);
	if (b)
		memcpy(b, &be, 4);
	add_param(p, ST_OID_INT4, b, 4);
}

static void arr_put(struct st_array *a, const void *d, size_t n)
{
	if (a->failed)
		return;
	if (a->len + n > a->cap) {
		size_t cap = a->cap ? a->cap : 256;
		while (cap < a->len + n)
			cap *= 2;
		char *b = realloc(a->buf, cap);
		if (!b) {
			a->failed = 1;
			return;
		}
		a->buf = b;
		a->cap = cap;
	}
	memcpy(a->buf + a->len, d, n);
	a->len += n;
}

static void arr_u32(struct st_array *a, uint32_t v)
{
	uint32_t be = htobe32(v);
	arr_put(a, &be, 4);
}

/* Binary array layout: ndim, has-nulls, element oid, then per dimension
 * (size, lower bound), then per element (length, bytes). The header is
 * written at the end, once the count is known: 20 bytes are reserved. */
void st_array_begin(struct st_array *a, Oid elem_oid)
{
	memset(a, 0, sizeof(*a));
	a->elem_oid = elem_oid;
	char zero[20] = {0};
	arr_put(a, zero, sizeof(zero));
}

void st_array_add(struct st_array *a, const void *data, size_t n)
{
	arr_u32(a, (uint32_t)n);
	arr_put(a, data, n);
	a->count++;
}

void st_array_add_int2(struct st_array *a, int16_t v)
{
	uint16_t be = htobe16((uint16_t)v);
	st_array_add(a, &be, 2);
}

void st_array_add_int4(struct st_array *a, int32_t v)
{
	uint32_t be = htobe32((uint32_t)v);
	st_array_add(a, &be, 4);
}

void st_array_add_int8(struct st_array *a, int64_t v)
{
	uint64_t be = htobe64((uint64_t)v);
	st_array_add(a, &be, 8);
}

void st_params_array(struct st_params *p, struct st_array *a, Oid array_oid)
{
	if (a->failed || !a->buf) {
		free(a->buf);
		p->failed = 1;
		return;
	}
	uint32_t hdr[5] = {htobe32(a->count ? 1 : 0), 0, htobe32(a->elem_oid), htobe32(a->count),
	                   htobe32(1)};
	size_t len = a->len;
	memcpy(a->buf, hdr, a->count ? 20 : 12); /* an empty array has no dimension entry */
	if (!a->count)
		len = 12;
	add_param(p, array_oid, a->buf, (int)len);
	a->buf = NULL;
}

void st_array_append(struct st_array *dst, const struct st_array *src, size_t from, size_t to,
                     uint32_t count)
{
	arr_put(dst, src->buf + from, to - from);
	dst->count += count;
	if (src->failed)
		dst->failed = 1;
}

void st_params_text_array(struct st_params *p, const char *const *v, int n)
{
	struct st_array a;
	st_array_begin(&a, ST_OID_TEXT);
	for (int i = 0; i < n; i++)
		st_array_add(&a, v[i], strlen(v[i]));
	st_params_array(p, &a, ST_OID_TEXT_ARRAY);
}

void st_params_clear(struct st_params *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->values[i]);
	memset(p, 0, sizeof(*p));
}

int64_t st_get_int8(const PGresult *r, int row, int col)
{
	uint64_t v;
	memcpy(&v, PQgetvalue(r, row, col), 8);
	return (int64_t)be64toh(v);
}

int32_t st_get_int4(const PGresult *r, int row, int col)
{
	uint32_t v;
	memcpy(&v, PQgetvalue(r, row, col), 4);
	return (int32_t)be32toh(v);
}

int16_t st_get_int2(const PGresult *r, int row, int col)
{
	uint16_t v;
	memcpy(&v, PQgetvalue(r, row, col), 2);
	return (int16_t)be16toh(v);
}
