/* libFuzzer target: one worker's session state machine (gateway/session.c,
 * requests.c) fed an arbitrary byte stream as one agent connection.
 *
 * A minimal struct gw_worker is built by hand once: the configuration from a
 * small file in a memfd, its own event_base, no Redis (w->pool NULL) and a
 * store connection to a closed port, so the real store is down. Each input is
 * written to one end of a socketpair, whose other end is handed to
 * gw_session_accept; then the write side is shut down and the loop is run
 * (non-blocking) until the session is gone. Whatever the gateway writes back
 * is read and discarded. Every session is freed before the next input, so
 * ASan's leak check covers the session's whole life.
 *
 * With the store down every HELLO would end in ERROR store_unavailable and
 * nothing after HELLO would ever run. So st_submit and st_op_cancel are
 * wrapped (the Makefile links this target with -Wl,--wrap=...): statements
 * complete asynchronously, one per loop turn and in submission order as the
 * pipelined store does, with results shaped like the store's SQL API
 * (qa_credentials, qa_hello, qa_upload_group, qa_next, qa_unreceivable, qa_ack_group,
 * qa_status_held). Which
 * statements fail instead, whether HELLO's token is checked (auth = token;
 * the known agents' token is ""), and whether the real (down) store answers
 * is chosen per input from a hash of its bytes, so the fuzzer reaches the
 * failure paths too. */
#include "common/log.h"
#include "gateway/config.h"
#include "gateway/session_int.h"
#include "gateway/worker.h"
#include "store/store.h"
#include "store/agent.h"
#include "store/upload.h"

#include <endian.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_TURNS 2000 /* loop turns per input before the session is freed by force */

/* ---- the fake store: st_submit / st_op_cancel wrapped ---- */

struct st_op *__real_st_submit(struct st_conn *c, const char *sql, const struct st_params *p,
                               st_done_fn done, void *arg);
void __real_st_op_cancel(struct st_op *op);

struct fake_op {
	TAILQ_ENTRY(fake_op) link;
	st_done_fn done; /* NULL once cancelled */
	void *arg;
	PGresult *res; /* NULL: the statement fails */
};

static TAILQ_HEAD(, fake_op) fake_ops = TAILQ_HEAD_INITIALIZER(fake_ops);
static struct event *fake_ev;   /* completes the first queued op, one per loop turn */
static uint32_t fake_mode;      /* per input: which statements fail */
static int fake_oversized;      /* a FETCH's first row is over max_frame until unreceivable */
static unsigned fake_submitted; /* statements submitted for this input */

static PGresult *result(int nfields, const Oid *types)
{
	PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	PGresAttDesc att[16];
	if (!r || nfields > 16)
		abort();
	for (int i = 0; i < nfields; i++)
		att[i] = (PGresAttDesc){.name = "c", .format = 1, .typid = types[i], .typlen = -1};
	if (!PQsetResultAttrs(r, nfields, att))
		abort();
	return r;
}

static void set(PGresult *r, int row, int col, const void *v, int len)
{
	if (!PQsetvalue(r, row, col, (char *)v, len))
		abort();
}

static void set8(PGresult *r, int row, int col, int64_t v)
{
	uint64_t be = htobe64((uint64_t)v);
	set(r, row, col, &be, 8);
}

static void set4(PGresult *r, int row, int col, int32_t v)
{
	uint32_t be = htobe32((uint32_t)v);
	set(r, row, col, &be, 4);
}

static void set2(PGresult *r, int row, int col, int16_t v)
{
	uint16_t be = htobe16((uint16_t)v);
	set(r, row, col, &be, 2);
}

/* Elements of a one-dimensional binary array parameter (0 if none). */
static int array_count(const struct st_params *p, int i)
{
	if (i >= p->n || p->lengths[i] < 20)
		return 0;
	uint32_t ndim, n;
	memcpy(&ndim, p->values[i], 4);
	memcpy(&n, p->values[i] + 12, 4);
	return be32toh(ndim) == 1 ? (int)be32toh(n) : 0;
}

/* A result shaped like the store's answer to sql. */
static PGresult *fake_result(const char *sql, const struct st_params *p)
{
	if (strstr(sql, "qa_hello(")) {
		static const Oid t[] = {ST_OID_TEXT, ST_OID_TEXT, ST_OID_BOOL, ST_OID_INT8,
		                        ST_OID_TEXT};
		/* The router's record in the store: none, a known worker, or a stale name. */
		const char *assigned = (fake_mode & 64) ? ((fake_mode & 128) ? "gone" : "ml2") : "";
		PGresult *r = result(5, t);
		set(r, 0, 0, "ml1", 3);
		set(r, 0, 1, "127.0.0.1:1", 11);
		set(r, 0, 2, "\0", 1);
		set8(r, 0, 3, fake_mode & 1); /* something pending: a PUSH after WELCOME */
		set(r, 0, 4, assigned, strlen(assigned));
		set(r, 1, 0, "ml2", 3);
		set(r, 1, 1, "[::1]:2, localhost:3", 20);
		set(r, 1, 2, "\1", 1);
		set8(r, 1, 3, 0);
		set(r, 1, 4, assigned, strlen(assigned));
		return r;
	}
	if (strstr(sql,
	           "qa_credentials")) { /* the agent's token is "" (none if the mode says so) */
		static const Oid t[] = {ST_OID_BYTEA};
		PGresult *r = result(1, t);
		uint8_t sha[32];
		SHA256((const unsigned char *)"", 0, sha);
		if (!(fake_mode & 16))
			set(r, 0, 0, sha, 32);
		return r;
	}
	if (strstr(sql, "qa_upload_group(")) { /* one row per message sent: ord, result */
		static const Oid t[] = {ST_OID_INT4, ST_OID_INT2};
		PGresult *r = result(2, t);
		int n = array_count(p, 4); /* $5: the ids */
		for (int i = 0; i < n; i++) {
			set4(r, i, 0, i + 1);
			set2(r, i, 1, (int16_t)((fake_mode >> (i % 16)) & 1 ? 1 : 0));
		}
		return r;
	}
	if (strstr(sql, "qa_fetch_group(")) { /* each FETCH: one message (none: mode 2) */
		static const Oid t[] = {ST_OID_INT8,  ST_OID_UUID, ST_OID_TEXT, ST_OID_TEXT,
		                        ST_OID_INT2,  ST_OID_INT8, ST_OID_INT8, ST_OID_BYTEA,
		                        ST_OID_BYTEA, ST_OID_INT4, ST_OID_INT8, ST_OID_INT8,
		                        ST_OID_BOOL,  ST_OID_INT4};
		PGresult *r = result(14, t);
		static const uint8_t props[] = {0, 1, 0, 1, 'k', 0, 1, 'v'};
		int parts = array_count(p, 1); /* $2: the agents */
		for (int part = 0, row = 0; part < parts; part++) {
			if (fake_mode & 2) { /* the row of no message */
				for (int c = 0; c < 12; c++)
					if (!PQsetvalue(r, row, c, NULL, -1))
						abort();
				set(r, row, 12, "\0", 1);
				set4(r, row++, 13, part + 1);
				continue;
			}
			/* k 0 is delivered; mode 8: a second one does not fit (no body) */
			for (int k = 0; k < ((fake_mode & 8) ? 2 : 1); k++, row++) {
				set8(r, row, 0, 42 + k);
				set(r, row, 1, k ? "1123456789abcdef" : "0123456789abcdef", 16);
				set(r, row, 2, "alice", 5);
				set(r, row, 3, "inbox", 5);
				set2(r, row, 4, 4);
				set8(r, row, 5, 1700000000000);
				set8(r, row, 6, 0);
				set(r, row, 7, props,
				    (fake_mode & 4) ? 3 : (int)sizeof(props)); /* 3: corrupt */
				if (k == 0)
					set(r, row, 8, "body", 4);
				else if (!PQsetvalue(r, row, 8, NULL, -1)) /* does not fit */
					abort();
				set4(r, row, 9, 0); /* deliveries counted before this one */
				set8(r, row, 10, k + 1);
				/* cum; mode 512: the first row over any max_frame once */
				set8(r, row, 11, fake_oversized ? (int64_t)1 << 33 : 100 * (k + 1));
				set(r, row, 12, "\0", 1);
				set4(r, row, 13, part + 1);
			}
		}
		return r;
	}
	if (strstr(sql, "qa_unreceivable(")) {
		static const Oid t[] = {ST_OID_INT4};
		PGresult *r = result(1, t);
		set4(r, 0, 0, 1);
		fake_oversized = 0;
		return r;
	}
	if (strstr(sql, "qa_ack_group(")) { /* every row applied: their ords */
		static const Oid t[] = {ST_OID_INT4};
		PGresult *r = result(1, t);
		int n = array_count(p, 2); /* $3: the seqs */
		for (int i = 0; i < n; i++)
			set4(r, i, 0, i + 1);
		return r;
	}
	if (strstr(sql, "qa_status_held(") || strstr(sql, "qa_delivered(")) {
		static const Oid t[] = {ST_OID_INT4};
		PGresult *r = result(1, t);
		set4(r, 0, 0, 1);
		return r;
	}
	return NULL; /* anything else: the statement fails */
}

static void on_fake_turn(evutil_socket_t fd, short what, void *arg)
{
	struct fake_op *op = TAILQ_FIRST(&fake_ops);
	if (!op)
		return;
	TAILQ_REMOVE(&fake_ops, op, link);
	if (!TAILQ_EMPTY(&fake_ops))
		event_active(fake_ev, EV_TIMEOUT, 0);
	if (op->done)
		op->done(op->arg, op->res, op->res ? NULL : "fuzz: the statement failed");
	PQclear(op->res);
	free(op);
}

struct st_op *__wrap_st_submit(struct st_conn *c, const char *sql, const struct st_params *p,
                               st_done_fn done, void *arg)
{
	unsigned k = fake_submitted++;
	if ((fake_mode >> 28) == 0) /* 1 input in 16: the real store, which is down */
		return __real_st_submit(c, sql, p, done, arg);
	if (p->failed)
		return NULL;
	struct fake_op *op = calloc(1, sizeof(*op));
	if (!op)
		abort();
	op->done = done;
	op->arg = arg;
	/* 1 input in 4 has statements fail (after the first, so HELLO gets through). */
	int fail = ((fake_mode >> 26) & 3) == 1 && k > 0 && ((fake_mode >> (k % 16)) & 1);
	op->res = fail ? NULL : fake_result(sql, p);
	if (TAILQ_EMPTY(&fake_ops))
		event_active(fake_ev, EV_TIMEOUT, 0);
	TAILQ_INSERT_TAIL(&fake_ops, op, link);
	return (struct st_op *)op;
}

void __wrap_st_op_cancel(struct st_op *op)
{
	struct fake_op *f;
	TAILQ_FOREACH(f, &fake_ops, link)
	if ((struct st_op *)f == op) {
		f->done = NULL;
		return;
	}
	__real_st_op_cancel(op);
}

static uint32_t hash(const uint8_t *d, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ d[i]) * 16777619u;
	return h;
}

static const char config_text[] = "[node]\n"
                                  "name = fuzz\n"
                                  "auth = off\n"
                                  "[worker ml1]\n"
                                  "listen = 127.0.0.1:1\n"
                                  "[store]\n"
                                  "conninfo = host=127.0.0.1 port=1 dbname=qagw user=qagw "
                                  "connect_timeout=1\n"
                                  "[limits]\n"
                                  "max_frame = 4096\n"
                                  "max_batch = 8\n"
                                  "hello_timeout = 1\n"
                                  "heartbeat = 1\n"
                                  "max_sessions = 4\n"
                                  "max_pending_hello = 4\n"
                                  "max_output = 65536\n";

static struct gw_config conf;
static struct gw_worker *w;

static struct st_conn *fake_pick(void *arg)
{
	return ((struct gw_worker *)arg)->stores[0];
}

/* UBSan's defaults for this target: undefined behaviour is a finding (the
 * process stops and libFuzzer keeps the input), not a line in the log. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}

static void on_store_state(void *arg, int up)
{
}

static void setup(void)
{
	char path[64], err[1024];
	int fd = memfd_create("qagw-fuzz-session.conf", 0);
	if (fd < 0 || write(fd, config_text, sizeof(config_text) - 1) != sizeof(config_text) - 1)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (gw_config_load(path, &conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_session: %s\n", err);
		abort();
	}
	close(fd);
	/* Quiet (not even errors), unless FUZZ_SESSION_LOG=debug|info|... asks. */
	const char *lv = getenv("FUZZ_SESSION_LOG");
	atomic_store(&gw_log_threshold, lv ? gw_log_parse_level(lv) : -1);
	signal(SIGPIPE, SIG_IGN);

	w = calloc(1, sizeof(*w));
	if (!w)
		abort();
	w->conf = &conf;
	w->wc = &conf.workers[0];
	w->limits.max_frame = conf.max_frame;
	w->limits.max_batch = (uint16_t)conf.max_batch;
	w->sessions = gw_session_table_new();
	if (!w->sessions)
		abort();
	w->base = event_base_new();
	if (!w->base)
		abort();
	w->n_stores = 1;
	w->stores[0] = st_conn_new(w->base, conf.conninfo, w->wc->name, on_store_state, w);
	if (!w->stores[0])
		abort();
	w->uploads = st_uploads_new(w->base, fake_pick, w, conf.max_pending,
	                            conf.max_pending_per_sender); /* group commit */
	w->acks = st_acks_new(w->base, fake_pick, w);
	w->fetches = st_fetches_new(w->base, fake_pick, w);
	if (!w->uploads || !w->acks || !w->fetches)
		abort();
	w->pool = NULL; /* no Redis: sessions are not claimed for the pool */
	w->accepting = 1;
	fake_ev = event_new(w->base, -1, 0, on_fake_turn, NULL);
	if (!fake_ev)
		abort();
}

static void drain_output(int fd)
{
	char buf[65536];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!w)
		setup();
	fake_mode = hash(data, size);
	fake_oversized = (fake_mode & 512) != 0;
	fake_submitted = 0;
	conf.auth_off = !(fake_mode & 32); /* half the inputs check the HELLO token */
	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
		abort();
	gw_session_accept(w, fds[0], "192.0.2.1:1", "192.0.2.1");

	size_t off = 0;
	int shut = 0;
	for (int turn = 0; turn < MAX_TURNS; turn++) {
		/* Feed what the socket takes; the rest on later turns. */
		while (off < size) {
			ssize_t n = write(fds[1], data + off, size - off);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		if (off == size && !shut) {
			shutdown(fds[1], SHUT_WR);
			shut = 1;
		}
		event_base_loop(w->base, EVLOOP_NONBLOCK);
		drain_output(fds[1]);
		if (!gw_session_any(w))
			break;
	}
	/* A session still alive (e.g. waiting on a timer): free it here so the
	 * next input starts clean and nothing leaks. */
	gw_session_free_all(w);
	event_base_loop(w->base, EVLOOP_NONBLOCK);
	struct fake_op *op;
	while ((op = TAILQ_FIRST(&fake_ops))) { /* all cancelled with their sessions */
		if (op->done)
			abort();
		TAILQ_REMOVE(&fake_ops, op, link);
		PQclear(op->res);
		free(op);
	}
	const struct gw_session_table *t = w->sessions;
	if (t->n_sessions != 0 || t->n_pending_hello != 0 || t->by_agent != NULL ||
	    t->pending_by_ip != NULL) {
		fprintf(stderr,
		        "fuzz_session: worker counts off after the session: sessions %d, "
		        "pending_hello %d, agent map %s, per-address map %s\n",
		        t->n_sessions, t->n_pending_hello, t->by_agent ? "not empty" : "empty",
		        t->pending_by_ip ? "not empty" : "empty");
		abort();
	}
	close(fds[1]);
	return 0;
}
