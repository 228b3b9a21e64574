/* Unit tests of the persistent session of `run` (agent/qa_run.c) against a
 * fake server: a thread speaking QASync v1 (with the proto codec) on the
 * other end of a socketpair, scripted per test. The agent's end goes through
 * a transport ops table of the test's own, so that the moment a DELIVER_ACK
 * is written the test can look into the client store through a second
 * SQLite connection: a message must already be committed there. Checked: a
 * PUSH gets its PUSH_ACK before the FETCH it causes; a DELIVER is stored
 * before its DELIVER_ACK; the server's PING gets its PONG; heartbeats (PING
 * every heartbeat_s, no PONG in time = dead); ERROR, REASSIGN, the stop fd,
 * the time limit; and qa_agent_run's HELLO carries PERSIST. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/qa_agent.h"
#include "agent/qa_run.h"
#include "agent/qa_session.h"
#include "agent/qa_store.h"
#include "common/clock.h"
#include "proto/qs_codec.h"
#include "tests/unit/fake_qs.h"

/* ---- the fake server ---- */

enum after_sync {
	AFTER_NOTHING,     /* just serve requests */
	AFTER_PUSH,        /* PUSH 77 with one message waiting */
	AFTER_PING,        /* PING 4242, then write the stop pipe once the PONG is in */
	AFTER_ERROR,       /* ERROR superseded, then close */
	AFTER_REASSIGN,    /* REASSIGN to ml1 */
	AFTER_MUTE,        /* answer no PING any more */
	AFTER_HELLO_ERROR, /* (qa_agent_run test) answer HELLO with ERROR superseded */
};

struct seen {
	enum qs_type type;
	uint64_t value; /* push id, nonce, first seq */
	uint64_t mono_ms;
};

struct fake {
	int fd;
	uint32_t heartbeat_s;
	enum after_sync after;
	int stop_w; /* AFTER_PING: written once the PONG arrived; -1 otherwise */
	uint8_t msg_id[16];
	pthread_t thread;
	/* What the server read, in order (written by the thread, read after join). */
	struct seen seen[256];
	size_t n_seen;
	uint8_t hello_flags;
	int sync_done; /* the first PING (the sync's confirmation) was answered */
	int queued;    /* messages the next FETCH delivers */
};

static int fake_send(struct fake *f, const struct qs_frame *fr)
{
	return fq_send(f->fd, fr);
}

static int send_welcome(struct fake *f)
{
	struct qs_server list[1] = {{qs_str_c("ml3"), qs_str_c("tcpip(host=127.0.0.1;port=1)")}};
	struct qs_frame w = {.type = QS_WELCOME};
	w.u.welcome = (struct qs_welcome){
	    .version = 1,
	    .server = qs_str_c("ml3"),
	    .primary = qs_str_c("ml3"),
	    .on_primary = 1,
	    .n_servers = 1,
	    .servers = list,
	    .max_frame = QS_DEFAULT_MAX_FRAME,
	    .max_batch = 16,
	    .heartbeat_s = f->heartbeat_s,
	};
	return fake_send(f, &w);
}

static int send_deliver(struct fake *f)
{
	struct qs_msg_in m = {
	    .seq = 5,
	    .from = qs_str_c("A"),
	    .queue = qs_str_c("inbox"),
	    .priority = 4,
	    .created_ms = 1,
	    .body = {(const uint8_t *)"hi", 2},
	};
	memcpy(m.id, f->msg_id, 16);
	struct qs_frame d = {.type = QS_DELIVER};
	d.u.deliver.count = (uint16_t)f->queued;
	d.u.deliver.msgs = &m;
	d.u.deliver.more = 0;
	f->queued = 0;
	return fake_send(f, &d);
}

/* What the script does once the agent's sync is over. */
static int after_sync(struct fake *f)
{
	struct qs_frame out = {0};
	switch (f->after) {
	case AFTER_PUSH:
		f->queued = 1;
		out.type = QS_PUSH;
		out.u.push.push_id = 77;
		out.u.push.pending = 1;
		return fake_send(f, &out);
	case AFTER_PING:
		out.type = QS_PING;
		out.u.nonce = 4242;
		return fake_send(f, &out);
	case AFTER_ERROR:
		out.type = QS_ERROR;
		out.u.error.code = QS_E_SUPERSEDED;
		out.u.error.retryable = 0;
		out.u.error.text = qs_str_c("a newer session took over");
		fake_send(f, &out);
		return -1; /* and close */
	case AFTER_REASSIGN: {
		struct qs_server list[2] = {
		    {qs_str_c("ml1"), qs_str_c("tcpip(host=127.0.0.1;port=2441)")},
		    {qs_str_c("ml2"), qs_str_c("tcpip(host=127.0.0.1;port=2442)")},
		};
		out.type = QS_REASSIGN;
		out.u.reassign.primary = qs_str_c("ml1");
		out.u.reassign.n_servers = 2;
		out.u.reassign.servers = list;
		return fake_send(f, &out);
	}
	default:
		return 0;
	}
}

static uint64_t frame_value(const struct qs_frame *fr)
{
	switch (fr->type) {
	case QS_PUSH_ACK:
		return fr->u.push_id;
	case QS_PING:
	case QS_PONG:
		return fr->u.nonce;
	case QS_DELIVER_ACK:
		return fr->u.deliver_ack.count > 0 ? fr->u.deliver_ack.seqs[0] : 0;
	default:
		return 0;
	}
}

/* Answers one frame of the agent; 1 to end the conversation. */
static int fake_answer(struct fake *f, const struct qs_frame *in)
{
	struct qs_frame out = {0};
	switch (in->type) {
	case QS_HELLO:
		f->hello_flags = in->u.hello.flags;
		if (f->after == AFTER_HELLO_ERROR) {
			out.type = QS_ERROR;
			out.u.error.code = QS_E_SUPERSEDED;
			out.u.error.text = qs_str_c("a newer session took over");
			fake_send(f, &out);
			return 1;
		}
		return send_welcome(f) == 0 ? 0 : 1;
	case QS_FETCH:
		return send_deliver(f) == 0 ? 0 : 1;
	case QS_PING:
		if (f->sync_done && f->after == AFTER_MUTE)
			return 0;
		out.type = QS_PONG;
		out.u.nonce = in->u.nonce;
		if (fake_send(f, &out) != 0)
			return 1;
		if (!f->sync_done) {
			f->sync_done = 1;
			return after_sync(f) == 0 ? 0 : 1;
		}
		return 0;
	case QS_PONG:
		if (f->after == AFTER_PING && in->u.nonce == 4242 && f->stop_w >= 0)
			(void)!write(f->stop_w, "x", 1);
		return 0;
	case QS_BYE:
		return 1;
	default: /* PUSH_ACK, DELIVER_ACK, STATUS: recorded only */
		return 0;
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	uint8_t *buf = malloc(QS_DEFAULT_MAX_FRAME);
	for (;;) {
		struct qs_frame in;
		if (!buf || fq_recv(f->fd, buf, QS_DEFAULT_MAX_FRAME, &in) != 0)
			break;
		if (f->n_seen < sizeof f->seen / sizeof f->seen[0])
			f->seen[f->n_seen++] =
			    (struct seen){in.type, frame_value(&in), gw_mono_ms()};
		int end = fake_answer(f, &in);
		qs_frame_release(&in);
		if (end)
			break;
	}
	free(buf);
	shutdown(f->fd, SHUT_RDWR);
	return NULL;
}

static void fake_start(struct fake *f, int fd, enum after_sync after, uint32_t heartbeat_s)
{
	memset(f, 0, sizeof *f);
	f->fd = fd;
	f->after = after;
	f->heartbeat_s = heartbeat_s;
	f->stop_w = -1;
	for (int i = 0; i < 16; i++)
		f->msg_id[i] = (uint8_t)(0xA0 + i);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_join(struct fake *f)
{
	pthread_join(f->thread, NULL);
	close(f->fd);
}

/* Position of the n-th (0-based) frame of type t the server read, or -1. */
static int seen_at(const struct fake *f, enum qs_type t, int nth)
{
	for (size_t i = 0; i < f->n_seen; i++)
		if (f->seen[i].type == t && nth-- == 0)
			return (int)i;
	return -1;
}

/* ---- the agent's side ---- */

struct fixture {
	char dir[64];
	char path[128];
	struct qa_store *st;    /* the agent's store */
	struct qa_store *check; /* a second connection: sees committed rows only */
	struct qa_log log;
	struct qa_session s;
	struct fake server;
	/* events */
	struct {
		enum qa_run_event_type type;
		uint64_t push_id;
		size_t count;
		uint8_t first_id[16];
		uint16_t code;
		char reason[256];
	} ev[32];
	size_t n_ev;
	/* DELIVER_ACKs written, and how many found their message committed */
	int acks_written;
	int acks_after_commit;
};

static struct fixture *current; /* the transport ops below reach the test through it */

static ssize_t check_read(struct qa_conn *c, void *buf, size_t n)
{
	return recv(c->fd, buf, n, 0);
}

/* Every frame is written in one piece here (small frames, an empty socket
 * buffer), so buf[4] is the type of the frame being written. */
static ssize_t check_write(struct qa_conn *c, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	if (n > QS_HEADER_LEN && p[QS_HEADER_LEN] == QS_DELIVER_ACK) {
		struct qa_in_list l;
		struct qa_error e;
		current->acks_written++;
		if (qa_store_inbox_unread(current->check, NULL, &l, &e) == 0) {
			for (size_t i = 0; i < l.n; i++)
				if (memcmp(l.v[i].id, current->server.msg_id, 16) == 0)
					current->acks_after_commit++;
			qa_in_list_free(&l);
		}
	}
	return send(c->fd, buf, n, MSG_NOSIGNAL);
}

static void check_close(struct qa_conn *c)
{
	close(c->fd);
	c->fd = -1;
}

static const struct qa_conn_io check_io = {"check", check_read, check_write, check_close};

static void on_event(void *ctx, const struct qa_run_event *ev)
{
	struct fixture *f = ctx;
	if (f->n_ev == sizeof f->ev / sizeof f->ev[0])
		return;
	memset(&f->ev[f->n_ev], 0, sizeof f->ev[0]);
	f->ev[f->n_ev].type = ev->type;
	f->ev[f->n_ev].push_id = ev->push_id;
	f->ev[f->n_ev].count = ev->count;
	if (ev->type == QA_RUN_EV_RECEIVED && ev->count > 0)
		memcpy(f->ev[f->n_ev].first_id, ev->ids[0], 16);
	if (ev->type == QA_RUN_EV_ERROR)
		f->ev[f->n_ev].code = ev->error->code;
	if (ev->reason != NULL)
		snprintf(f->ev[f->n_ev].reason, sizeof f->ev[0].reason, "%s", ev->reason);
	f->n_ev++;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/qa_run_test.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof f->path, "%s/client.db", f->dir);
	struct qa_error e;
	if (qa_store_open(&f->st, f->path, "dev1", &e) != 0 ||
	    qa_store_open(&f->check, f->path, "dev1", &e) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
	f->log.out = stderr;
	f->log.verbose = getenv("QA_TEST_VERBOSE") != NULL;
	qa_session_init(&f->s, &f->log);
	current = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	qa_session_free(&f->s);
	qa_store_close(f->st);
	qa_store_close(f->check);
	char p[192];
	static const char *const suffix[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	current = NULL;
	return 0;
}

/* Connects the session to a fresh fake server over a socketpair and runs
 * HELLO (PERSIST) / WELCOME. */
static void connect_fake(struct fixture *f, enum after_sync after, uint32_t heartbeat_s)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	fake_start(&f->server, sv[1], after, heartbeat_s);
	struct qa_error e;
	assert_int_equal(qa_conn_attach(&f->s.conn, sv[0], &check_io, "fake", &e), 0);
	const struct qa_hello_params hello = {"dev1", "", "127.0.0.1:2439", QS_FLAG_PERSIST};
	if (qa_session_handshake(&f->s, &hello, &e) != 0)
		fail_msg("handshake: %s", e.msg);
	assert_string_equal(f->s.welcome.server, "ml3");
}

/* Runs the session to its end and closes it like qa_agent_run does. */
static int run_session(struct fixture *f, const struct qa_run_params *p, enum qa_run_end *end,
                       struct qa_error *e)
{
	struct qa_run_params params = *p;
	params.on_event = on_event;
	params.ctx = f;
	struct qa_run r;
	qa_run_init(&r, &params, f->st, &f->log);
	int rc = qa_run_session(&r, &f->s, end, e);
	qa_run_close(&r, &f->s, rc, *end, e);
	fake_join(&f->server);
	return rc;
}

/* ---- tests ---- */

/* PUSH → PUSH_ACK first, then FETCH; the DELIVER is committed before its
 * DELIVER_ACK is written; --count ends the run with BYE. */
static void test_push_ack_then_fetch_then_store_then_ack(void **state)
{
	struct fixture *f = *state;
	connect_fake(f, AFTER_PUSH, 30);
	/* The time limit only keeps a broken agent from hanging the test. */
	const struct qa_run_params p = {.count = 1, .for_ms = 5000, .stop_fd = -1};
	enum qa_run_end end;
	struct qa_error e;
	int rc = run_session(f, &p, &end, &e);
	if (rc != 0)
		fail_msg("run failed: %s", e.msg);
	assert_int_equal(end, QA_RUN_END_COUNT);

	const struct fake *s = &f->server;
	/* The sync's FETCH and PING, then the PUSH is answered. */
	int ack = seen_at(s, QS_PUSH_ACK, 0);
	int fetch2 = seen_at(s, QS_FETCH, 1);
	int deliver_ack = seen_at(s, QS_DELIVER_ACK, 0);
	assert_true(ack > 0);
	assert_int_equal(s->seen[ack].value, 77);
	assert_true(seen_at(s, QS_PING, 0) < ack);
	/* The PUSH_ACK is the very next frame after the push, the FETCH right after. */
	assert_int_equal(fetch2, ack + 1);
	assert_int_equal(deliver_ack, fetch2 + 1);
	assert_int_equal(s->seen[deliver_ack].value, 5);
	assert_int_equal(s->seen[s->n_seen - 1].type, QS_BYE);

	/* Stored before acknowledged: the second connection saw the row. */
	assert_int_equal(f->acks_written, 1);
	assert_int_equal(f->acks_after_commit, 1);

	/* welcome, push 77, received 1 (the message's id), closed. */
	assert_int_equal(f->n_ev, 4);
	assert_int_equal(f->ev[0].type, QA_RUN_EV_WELCOME);
	assert_int_equal(f->ev[1].type, QA_RUN_EV_PUSH);
	assert_int_equal(f->ev[1].push_id, 77);
	assert_int_equal(f->ev[2].type, QA_RUN_EV_RECEIVED);
	assert_int_equal(f->ev[2].count, 1);
	assert_memory_equal(f->ev[2].first_id, s->msg_id, 16);
	assert_int_equal(f->ev[3].type, QA_RUN_EV_CLOSED);
	assert_string_equal(f->ev[3].reason, "count reached");
}

/* The server's PING gets its PONG; the stop fd ends the run with BYE. */
static void test_server_ping_gets_pong_and_stop_fd(void **state)
{
	struct fixture *f = *state;
	int stop[2];
	assert_int_equal(pipe(stop), 0);
	connect_fake(f, AFTER_PING, 30);
	f->server.stop_w = stop[1];
	/* The time limit only keeps a broken agent from hanging the test. */
	const struct qa_run_params p = {.for_ms = 5000, .stop_fd = stop[0]};
	enum qa_run_end end;
	struct qa_error e;
	int rc = run_session(f, &p, &end, &e);
	close(stop[0]);
	close(stop[1]);
	if (rc != 0)
		fail_msg("run failed: %s", e.msg);
	assert_int_equal(end, QA_RUN_END_STOP);
	const struct fake *s = &f->server;
	int pong = seen_at(s, QS_PONG, 0);
	assert_true(pong >= 0);
	assert_int_equal(s->seen[pong].value, 4242);
	assert_int_equal(s->seen[s->n_seen - 1].type, QS_BYE);
	assert_string_equal(f->ev[f->n_ev - 1].reason, "stopped");
}

/* With heartbeat_s 1 the agent PINGs about every second and ends at the time
 * limit while the server answers. */
static void test_heartbeat_pings_while_answered(void **state)
{
	struct fixture *f = *state;
	connect_fake(f, AFTER_NOTHING, 1);
	const struct qa_run_params p = {.for_ms = 2600, .stop_fd = -1};
	enum qa_run_end end;
	struct qa_error e;
	const uint64_t t0 = gw_mono_ms();
	int rc = run_session(f, &p, &end, &e);
	const uint64_t took = gw_mono_ms() - t0;
	if (rc != 0)
		fail_msg("run failed: %s", e.msg);
	assert_int_equal(end, QA_RUN_END_TIME);
	assert_true(took >= 2500 && took < 4000);
	/* The sync's PING, then heartbeats at ~1 s and ~2 s. */
	assert_true(seen_at(&f->server, QS_PING, 2) >= 0);
	const struct seen *p1 = &f->server.seen[seen_at(&f->server, QS_PING, 1)];
	const struct seen *p2 = &f->server.seen[seen_at(&f->server, QS_PING, 2)];
	assert_true(p2->mono_ms - p1->mono_ms >= 900 && p2->mono_ms - p1->mono_ms <= 1500);
	assert_int_equal(f->server.seen[f->server.n_seen - 1].type, QS_BYE);
}

/* No PONG within heartbeat_s: the connection is dead (a retryable failure). */
static void test_heartbeat_without_pong_is_dead(void **state)
{
	struct fixture *f = *state;
	connect_fake(f, AFTER_MUTE, 1);
	const struct qa_run_params p = {.for_ms = 10000, .stop_fd = -1};
	enum qa_run_end end;
	struct qa_error e;
	const uint64_t t0 = gw_mono_ms();
	int rc = run_session(f, &p, &end, &e);
	const uint64_t took = gw_mono_ms() - t0;
	assert_int_equal(rc, -1);
	assert_int_equal(e.kind, QA_FAIL_IO);
	assert_non_null(strstr(e.msg, "no PONG"));
	/* First heartbeat at ~1 s, declared dead ~1 s later. */
	assert_true(took >= 1800 && took < 3500);
	assert_true(seen_at(&f->server, QS_PING, 1) >= 0);
	assert_int_equal(f->ev[f->n_ev - 1].type, QA_RUN_EV_CLOSED);
}

/* ERROR superseded: reported (error, then closed), not retryable. */
static void test_error_superseded(void **state)
{
	struct fixture *f = *state;
	connect_fake(f, AFTER_ERROR, 30);
	const struct qa_run_params p = {.for_ms = 5000, .stop_fd = -1};
	enum qa_run_end end;
	struct qa_error e;
	int rc = run_session(f, &p, &end, &e);
	assert_int_equal(rc, -1);
	assert_int_equal(e.kind, QA_FAIL_SERVER);
	assert_int_equal(e.code, QS_E_SUPERSEDED);
	assert_int_equal(e.retryable, 0);
	assert_string_equal(e.text, "a newer session took over");
	assert_true(qa_error_is_final(&e));
	assert_true(f->n_ev >= 3);
	assert_int_equal(f->ev[f->n_ev - 2].type, QA_RUN_EV_ERROR);
	assert_int_equal(f->ev[f->n_ev - 2].code, QS_E_SUPERSEDED);
	assert_int_equal(f->ev[f->n_ev - 1].type, QA_RUN_EV_CLOSED);
	/* No BYE after an ERROR. */
	assert_int_not_equal(f->server.seen[f->server.n_seen - 1].type, QS_BYE);
}

/* REASSIGN ends the run (BYE) with the new list in the session. */
static void test_reassign_ends_with_bye(void **state)
{
	struct fixture *f = *state;
	connect_fake(f, AFTER_REASSIGN, 30);
	const struct qa_run_params p = {.for_ms = 5000, .stop_fd = -1};
	enum qa_run_end end;
	struct qa_error e;
	int rc = run_session(f, &p, &end, &e);
	if (rc != 0)
		fail_msg("run failed: %s", e.msg);
	assert_int_equal(end, QA_RUN_END_REASSIGN);
	assert_true(f->s.reassigned);
	assert_string_equal(f->s.reassign.primary, "ml1");
	assert_int_equal(f->s.reassign.n, 2);
	assert_string_equal(f->s.reassign.v[1].name, "ml2");
	assert_int_equal(f->server.seen[f->server.n_seen - 1].type, QS_BYE);
	assert_string_equal(f->ev[f->n_ev - 1].reason, "reassigned");
}

static void *accept_main(void *arg)
{
	struct fake *s = arg;
	int lfd = s->fd;
	s->fd = accept(lfd, NULL, NULL);
	if (s->fd >= 0)
		fake_main(s);
	return NULL;
}

/* qa_agent_run over TCP: HELLO carries PERSIST, and a non-retryable ERROR
 * answering it is reported as an error event and is final. */
static void test_agent_run_hello_is_persist(void **state)
{
	struct fixture *f = *state;
	uint16_t port = 0;
	int lfd = fq_listen(&port);
	assert_true(lfd >= 0);

	struct qa_config cfg;
	qa_config_init(&cfg);
	snprintf(cfg.agent_id, sizeof cfg.agent_id, "dev1");
	cfg.db_path = strdup(f->path);
	char text[64], err[256];
	snprintf(text, sizeof text, "tcpip(host=127.0.0.1;port=%u)", (unsigned)port);
	assert_int_equal(qa_stream_parse(text, &cfg.streams[0], err, sizeof err), 0);
	cfg.n_streams = 1;
	struct qa_agent agent;
	struct qa_error e;
	assert_int_equal(qa_agent_open(&agent, &cfg, stderr, &e), 0);

	struct fake *s = &f->server;
	memset(s, 0, sizeof *s);
	s->fd = lfd; /* accept_main swaps it for the accepted connection */
	s->after = AFTER_HELLO_ERROR;
	s->stop_w = -1;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, accept_main, s), 0);

	const struct qa_run_params p = {.stop_fd = -1, .on_event = on_event, .ctx = f};
	enum qa_run_end end;
	int rc = qa_agent_run(&agent, &p, &end, &e);
	pthread_join(th, NULL);
	close(s->fd);
	close(lfd);
	qa_agent_close(&agent);
	qa_config_free(&cfg);

	assert_int_equal(rc, -1);
	assert_int_equal(e.kind, QA_FAIL_SERVER);
	assert_int_equal(e.code, QS_E_SUPERSEDED);
	assert_int_equal(s->n_seen, 1);
	assert_int_equal(s->seen[0].type, QS_HELLO);
	assert_int_equal(s->hello_flags, QS_FLAG_PERSIST);
	assert_int_equal(f->n_ev, 1);
	assert_int_equal(f->ev[0].type, QA_RUN_EV_ERROR);
	assert_int_equal(f->ev[0].code, QS_E_SUPERSEDED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_push_ack_then_fetch_then_store_then_ack, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_server_ping_gets_pong_and_stop_fd, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_heartbeat_pings_while_answered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_heartbeat_without_pong_is_dead, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_error_superseded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reassign_ends_with_bye, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_agent_run_hello_is_persist, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
