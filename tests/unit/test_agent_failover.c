/* Unit tests of the failover schedule (agent/qa_failover.c, agent.md
 * "Failover"): the attempt plan of a cycle for -fr/-fd, the backoff between
 * failed cycles of `run`, the interval of the return to the primary; and
 * qa_cycle_connect following that plan against loopback ports: refused ports,
 * fake servers answering HELLO with a retryable ERROR (fail over), a
 * non-retryable one (stop at once), WELCOME; the -fd waits measured; a stop
 * during a wait; the trace lines and the summary naming every server. */
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
#include "agent/qa_config.h"
#include "agent/qa_cycle.h"
#include "agent/qa_failover.h"
#include "agent/qa_log.h"
#include "agent/qa_session.h"
#include "agent/qa_stream.h"
#include "common/clock.h"
#include "proto/qs_codec.h"
#include "tests/unit/fake_qs.h"

/* ---- the plan ---- */

static void expect_step(const struct qa_failover *f, size_t k, size_t stream, unsigned try_no,
                        unsigned tries, uint64_t delay_ms)
{
	struct qa_attempt_step st;
	if (qa_failover_step(f, k, &st) != 0)
		fail_msg("step %zu missing", k);
	if (st.stream != stream || st.try_no != try_no || st.tries != tries ||
	    st.delay_ms != delay_ms)
		fail_msg("step %zu: stream %zu try %u/%u delay %llu; want stream %zu try %u/%u "
		         "delay %llu",
		         k, st.stream, st.try_no, st.tries, (unsigned long long)st.delay_ms, stream,
		         try_no, tries, (unsigned long long)delay_ms);
}

static void expect_end(const struct qa_failover *f, size_t k)
{
	struct qa_attempt_step st;
	assert_int_equal(qa_failover_step(f, k, &st), -1);
	assert_int_equal(qa_failover_attempts(f), k);
}

/* Step 2: default, the first alternate at once after the primary. */
static void test_plan_default(void **state)
{
	const struct qa_failover f = {.n_streams = 3, .fr = 0, .fd_ms = 5000};
	expect_step(&f, 0, 0, 1, 1, 0);
	expect_step(&f, 1, 1, 1, 1, 0); /* -fd applies to primary retries only */
	expect_step(&f, 2, 2, 1, 1, 0);
	expect_end(&f, 3);
}

/* Step 3 and 4: -fr 3 -fd 1: the primary at t, then 3 retries each 1 s after
 * the failure before it, then each alternate once, at once. */
static void test_plan_fr_fd(void **state)
{
	const struct qa_failover f = {.n_streams = 3, .fr = 3, .fd_ms = 1000};
	expect_step(&f, 0, 0, 1, 4, 0);
	expect_step(&f, 1, 0, 2, 4, 1000);
	expect_step(&f, 2, 0, 3, 4, 1000);
	expect_step(&f, 3, 0, 4, 4, 1000);
	expect_step(&f, 4, 1, 1, 1, 0);
	expect_step(&f, 5, 2, 1, 1, 0);
	expect_end(&f, 6);
}

static void test_plan_edges(void **state)
{
	const struct qa_failover one = {.n_streams = 1, .fr = 2, .fd_ms = 250};
	expect_step(&one, 0, 0, 1, 3, 0);
	expect_step(&one, 1, 0, 2, 3, 250);
	expect_step(&one, 2, 0, 3, 3, 250);
	expect_end(&one, 3);
	const struct qa_failover none = {.n_streams = 0, .fr = 5, .fd_ms = 1};
	expect_end(&none, 0);
	/* -fd 0 with -fr: retries at once */
	const struct qa_failover nodelay = {.n_streams = 2, .fr = 1, .fd_ms = 0};
	expect_step(&nodelay, 1, 0, 2, 2, 0);
	expect_step(&nodelay, 2, 1, 1, 1, 0);
	expect_end(&nodelay, 3);
	/* the largest -fr: no overflow of the count */
	const struct qa_failover big = {.n_streams = 32, .fr = 1000, .fd_ms = 1};
	assert_int_equal(qa_failover_attempts(&big), 1032);
	expect_step(&big, 1000, 0, 1001, 1001, 1);
	expect_step(&big, 1001, 1, 1, 1, 0);
	expect_step(&big, 1031, 31, 1, 1, 0);
	expect_end(&big, 1032);
}

/* Step 5: min(2^k, 300) s x [0.5, 1.5]. */
static void test_backoff(void **state)
{
	assert_int_equal(qa_failover_backoff_ms(1, 0.0), 1000);
	assert_int_equal(qa_failover_backoff_ms(1, 0.5), 2000);
	assert_int_equal(qa_failover_backoff_ms(1, 1.0), 3000);
	assert_int_equal(qa_failover_backoff_ms(2, 0.5), 4000);
	assert_int_equal(qa_failover_backoff_ms(3, 0.25), 6000);
	assert_int_equal(qa_failover_backoff_ms(8, 0.5), 256000);
	assert_int_equal(qa_failover_backoff_ms(9, 0.5), 300000); /* 512 capped at 300 */
	assert_int_equal(qa_failover_backoff_ms(9, 0.0), 150000);
	assert_int_equal(qa_failover_backoff_ms(9, 1.0), 450000);
	assert_int_equal(qa_failover_backoff_ms(64, 0.5), 300000); /* no shift overflow */
	assert_int_equal(qa_failover_backoff_ms(100000, 0.5), 300000);
	assert_int_equal(qa_failover_backoff_ms(0, 0.5), 2000); /* k 0 counts as 1 */
	/* the factor is clamped to [0.5, 1.5] */
	assert_int_equal(qa_failover_backoff_ms(1, -3.0), 1000);
	assert_int_equal(qa_failover_backoff_ms(1, 7.0), 3000);
	/* monotone in k for a fixed factor */
	for (unsigned k = 1; k < 20; k++)
		assert_true(qa_failover_backoff_ms(k + 1, 0.3) >= qa_failover_backoff_ms(k, 0.3));
}

/* Step 6: every -fd, or every 30 s when -fd is 0. */
static void test_failback_interval(void **state)
{
	assert_int_equal(qa_failover_failback_ms(0), 30000);
	assert_int_equal(qa_failover_failback_ms(1000), 1000);
	assert_int_equal(qa_failover_failback_ms(250), 250);
}

/* ---- qa_cycle_connect against loopback ---- */

/* A port nothing listens on (bound once, then closed). */
static uint16_t dead_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* A fake server: accepts one connection, reads HELLO, answers it. With
 * serve set it then answers FETCH (nothing waiting) and PING, and after the
 * first PONG sends REASSIGN to reassign_name at reassign_stream if set; it
 * ends at BYE or when the agent closes. */
struct fake {
	int lfd;
	uint16_t port;
	uint16_t error_code; /* 0: WELCOME from name */
	uint8_t retryable;
	const char *name;
	int serve;
	const char *reassign_name; /* NULL: no REASSIGN */
	const char *reassign_stream;
	const char *own_stream; /* this fake's stream, for lists */
	/* What happened (read after the join). */
	int accepted;
	char hello_primary[64];
	uint8_t hello_flags;
	int sent_reassign;
	int saw_bye_after_reassign;
	pthread_t th;
};

static void serve(struct fake *f, int fd)
{
	uint8_t buf[1 << 16]; /* on this fake's thread: two fakes serve at once */
	for (;;) {
		struct qs_frame in, out;
		if (fq_recv(fd, buf, sizeof buf, &in) != 0)
			return;
		memset(&out, 0, sizeof out);
		const enum qs_type type = in.type;
		if (type == QS_FETCH) {
			out.type = QS_DELIVER;
		} else if (type == QS_PING) {
			out.type = QS_PONG;
			out.u.nonce = in.u.nonce;
		}
		qs_frame_release(&in);
		if (type == QS_BYE) {
			f->saw_bye_after_reassign = f->sent_reassign;
			return;
		}
		if (out.type != 0 && fq_send(fd, &out) != 0)
			return;
		if (type == QS_PING && f->reassign_name != NULL && !f->sent_reassign) {
			struct qs_server list[2] = {
			    {qs_str_c(f->reassign_name), qs_str_c(f->reassign_stream)},
			    {qs_str_c(f->name), qs_str_c(f->own_stream)},
			};
			struct qs_frame r = {.type = QS_REASSIGN};
			r.u.reassign.primary = qs_str_c(f->reassign_name);
			r.u.reassign.n_servers = 2;
			r.u.reassign.servers = list;
			if (fq_send(fd, &r) != 0)
				return;
			f->sent_reassign = 1;
		}
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	f->accepted = 1;
	/* WELCOME's list (serve mode): lives as long as the frame that points to it. */
	struct qs_server self = {qs_str_c(f->name ? f->name : ""),
	                         qs_str_c(f->own_stream ? f->own_stream : "")};
	uint8_t buf[4096];
	struct qs_frame hello_in;
	if (fq_recv(fd, buf, sizeof buf, &hello_in) != 0) {
		close(fd);
		return NULL;
	}
	snprintf(f->hello_primary, sizeof f->hello_primary, "%.*s",
	         (int)hello_in.u.hello.primary.len, hello_in.u.hello.primary.ptr);
	f->hello_flags = hello_in.u.hello.flags;
	qs_frame_release(&hello_in);
	struct qs_frame out;
	memset(&out, 0, sizeof out);
	if (f->error_code != 0) {
		out.type = QS_ERROR;
		out.u.error.code = f->error_code;
		out.u.error.retryable = f->retryable;
		out.u.error.text = qs_str_c("fake says no");
	} else {
		out.type = QS_WELCOME;
		out.u.welcome.version = 1;
		out.u.welcome.server = qs_str_c(f->name);
		out.u.welcome.primary = qs_str_c(f->serve ? f->name : "ml1");
		out.u.welcome.on_primary = f->serve ? 1 : 0;

		if (f->serve) {
			out.u.welcome.n_servers = 1;
			out.u.welcome.servers = &self;
		}
		out.u.welcome.max_frame = 1 << 20;
		out.u.welcome.max_batch = 16;
		out.u.welcome.heartbeat_s = 30;
	}
	if (fq_send(fd, &out) != 0)
		perror("fake write");
	if (f->serve && f->error_code == 0)
		serve(f, fd);
	/* Keep it open until the agent closes it. */
	while (read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
	return NULL;
}

static void fake_start(struct fake *f)
{
	f->lfd = fq_listen(&f->port);
	assert_true(f->lfd >= 0);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

/* Ends the fake: a connection never made is unblocked by a connect of our own. */
static void fake_stop(struct fake *f)
{
	if (!f->accepted) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET,
		                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
		                        .sin_port = htons(f->port)};
		if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
			perror("fake_stop connect");
		close(fd);
	}
	pthread_join(f->th, NULL);
	close(f->lfd);
}

static struct qa_stream stream_of(uint16_t port)
{
	char text[64];
	char err[256];
	struct qa_stream s;
	snprintf(text, sizeof text, "tcpip(host=127.0.0.1;port=%u)", (unsigned)port);
	if (qa_stream_parse(text, &s, err, sizeof err) != 0)
		fail_msg("%s", err);
	return s;
}

static const struct qa_hello_params hello = {"agent-1", "", "127.0.0.1:1", QS_FLAG_PERSIST};

/* The trace file's lines, read back: ts_ms and result of each. */
struct traced {
	uint64_t ts_ms;
	char server[32];
	char result[16];
	unsigned try_no, of;
};

static size_t read_trace(FILE *f, struct traced *v, size_t cap)
{
	rewind(f);
	char line[4096];
	size_t n = 0;
	while (n < cap && fgets(line, sizeof line, f) != NULL) {
		const char *p;
		memset(&v[n], 0, sizeof v[n]);
		if ((p = strstr(line, "\"ts_ms\":")) != NULL)
			v[n].ts_ms = strtoull(p + 8, NULL, 10);
		if ((p = strstr(line, "\"server\":\"")) != NULL)
			sscanf(p + 10, "%31[^\"]", v[n].server);
		if ((p = strstr(line, "\"result\":\"")) != NULL)
			sscanf(p + 10, "%15[^\"]", v[n].result);
		if ((p = strstr(line, "\"try\":")) != NULL)
			v[n].try_no = (unsigned)atoi(p + 6);
		if ((p = strstr(line, "\"of\":")) != NULL)
			v[n].of = (unsigned)atoi(p + 5);
		n++;
	}
	return n;
}

/* -fr 2 -fd 0.2 on a dead primary: three attempts 200 ms apart, then each
 * alternate once (a retryable ERROR draining from the first), the third
 * answers WELCOME. */
static void test_cycle_follows_plan(void **state)
{
	struct fake drain = {.error_code = QS_E_DRAINING, .retryable = 1};
	struct fake ok = {.name = "ml3"};
	fake_start(&drain);
	fake_start(&ok);
	struct qa_stream v[3] = {stream_of(dead_port()), stream_of(drain.port), stream_of(ok.port)};
	FILE *tr = tmpfile();
	struct qa_cycle_params p = {.streams = v,
	                            .n_streams = 3,
	                            .hello = &hello,
	                            .connect_timeout_ms = 2000,
	                            .fr = 2,
	                            .fd_ms = 200,
	                            .trace = tr,
	                            .cycle_no = 1};
	struct qa_session s;
	qa_session_init(&s, NULL);
	size_t index = 99;
	struct qa_error e;
	const uint64_t t0 = gw_mono_ms();
	assert_int_equal(qa_cycle_connect(&s, &p, &index, &e), 0);
	const uint64_t took = gw_mono_ms() - t0;
	assert_int_equal(index, 2);
	assert_string_equal(s.welcome.server, "ml3");
	assert_true(took >= 400 && took < 1500);
	qa_session_free(&s);
	fake_stop(&drain);
	fake_stop(&ok);

	struct traced t[8];
	assert_int_equal(read_trace(tr, t, 8), 5);
	fclose(tr);
	for (int i = 0; i < 3; i++) {
		assert_string_equal(t[i].server, "primary");
		assert_string_equal(t[i].result, "failed");
		assert_int_equal(t[i].try_no, (unsigned)i + 1);
		assert_int_equal(t[i].of, 3);
	}
	assert_true(t[1].ts_ms - t[0].ts_ms >= 195 && t[1].ts_ms - t[0].ts_ms < 350);
	assert_true(t[2].ts_ms - t[1].ts_ms >= 195 && t[2].ts_ms - t[1].ts_ms < 350);
	assert_string_equal(t[3].server, "alt1");
	assert_string_equal(t[3].result, "failed");
	assert_true(t[3].ts_ms - t[2].ts_ms < 100); /* no delay before an alternate */
	assert_string_equal(t[4].server, "alt2");
	assert_string_equal(t[4].result, "welcome");
}

/* A non-retryable ERROR (auth) is reported at once: the next stream is
 * never tried. */
static void test_cycle_final_error_stops(void **state)
{
	struct fake auth = {.error_code = QS_E_AUTH, .retryable = 0};
	struct fake ok = {.name = "ml3"};
	fake_start(&auth);
	fake_start(&ok);
	struct qa_stream v[2] = {stream_of(auth.port), stream_of(ok.port)};
	struct qa_cycle_params p = {
	    .streams = v, .n_streams = 2, .hello = &hello, .connect_timeout_ms = 2000};
	struct qa_session s;
	qa_session_init(&s, NULL);
	struct qa_error e;
	assert_int_equal(qa_cycle_connect(&s, &p, NULL, &e), -1);
	assert_int_equal(e.kind, QA_FAIL_SERVER);
	assert_int_equal(e.code, QS_E_AUTH);
	assert_int_equal(e.retryable, 0);
	qa_session_free(&s);
	fake_stop(&auth);
	assert_int_equal(ok.accepted, 0);
	fake_stop(&ok);
}

/* Every attempt failed: the error names every server, once each, with the
 * count of attempts on the primary. */
static void test_cycle_all_fail_names_every_server(void **state)
{
	struct qa_stream v[3] = {stream_of(dead_port()), stream_of(dead_port()),
	                         stream_of(dead_port())};
	struct qa_cycle_params p = {.streams = v,
	                            .n_streams = 3,
	                            .hello = &hello,
	                            .connect_timeout_ms = 2000,
	                            .fr = 1,
	                            .fd_ms = 10,
	                            .cycle_no = 4};
	struct qa_session s;
	qa_session_init(&s, NULL);
	struct qa_error e;
	assert_int_equal(qa_cycle_connect(&s, &p, NULL, &e), -1);
	assert_int_equal(e.kind, QA_FAIL_CONNECT);
	assert_non_null(strstr(e.msg, "no server could be reached (cycle 4, 4 attempts):"));
	for (int i = 0; i < 3; i++) {
		char text[QA_STREAM_TEXT_MAX];
		assert_true(qa_stream_format(&v[i], text, sizeof text) > 0);
		const char *at = strstr(e.msg, text);
		assert_non_null(at);
		assert_null(strstr(at + 1, text)); /* one line per server */
	}
	assert_non_null(strstr(e.msg, "primary tcpip(host=127.0.0.1;port="));
	assert_non_null(strstr(e.msg, ": 2 attempts, last: connect failed: Connection refused"));
	assert_non_null(strstr(e.msg, "alt2 tcpip("));
	qa_session_free(&s);
}

/* A stop during a -fd wait ends the cycle at once with QA_FAIL_STOPPED. */
static void test_cycle_stop_during_wait(void **state)
{
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	struct qa_stream v[1] = {stream_of(dead_port())};
	struct qa_cycle_params p = {.streams = v,
	                            .n_streams = 1,
	                            .hello = &hello,
	                            .connect_timeout_ms = 2000,
	                            .fr = 5,
	                            .fd_ms = 10000};
	struct qa_session s;
	qa_session_init(&s, NULL);
	s.conn.cancel_fd = pipefd[0];
	assert_int_equal(write(pipefd[1], "x", 1), 1);
	struct qa_error e;
	const uint64_t t0 = gw_mono_ms();
	assert_int_equal(qa_cycle_connect(&s, &p, NULL, &e), -1);
	assert_int_equal(e.kind, QA_FAIL_STOPPED);
	assert_true(gw_mono_ms() - t0 < 1000);
	qa_session_free(&s);
	close(pipefd[0]);
	close(pipefd[1]);
}

struct events {
	int n;
	char what[16][96];
};

static void on_event(void *ctx, const struct qa_run_event *ev)
{
	struct events *v = ctx;
	if (v->n == 16)
		return;
	if (ev->type == QA_RUN_EV_WELCOME)
		snprintf(v->what[v->n++], sizeof v->what[0], "welcome %s %d", ev->welcome->server,
		         ev->welcome->on_primary);
	else if (ev->type == QA_RUN_EV_CLOSED)
		snprintf(v->what[v->n++], sizeof v->what[0], "closed %s", ev->reason);
}

/* Step 8: auto(...) with the bootstrap; REASSIGN to ml2 is recorded in the
 * store, answered with BYE, and the next cycle starts with the new primary,
 * HELLO's primary still empty. */
static void test_run_follows_reassign(void **state)
{
	char s1[64], s2[64];
	struct fake boot = {.name = "ml1", .serve = 1, .reassign_name = "ml2", .own_stream = s1};
	struct fake next = {.name = "ml2", .serve = 1, .own_stream = s2};
	fake_start(&boot);
	fake_start(&next);
	snprintf(s1, sizeof s1, "tcpip(host=127.0.0.1;port=%u)", (unsigned)boot.port);
	snprintf(s2, sizeof s2, "tcpip(host=127.0.0.1;port=%u)", (unsigned)next.port);
	boot.reassign_stream = s2;

	char db[] = "/tmp/qa-failover-test-XXXXXX";
	int dfd = mkstemp(db);
	assert_true(dfd >= 0);
	close(dfd);
	unlink(db);
	struct qa_config cfg;
	qa_config_init(&cfg);
	snprintf(cfg.agent_id, sizeof cfg.agent_id, "dev-auto");
	cfg.db_path = strdup(db);
	char text[80], err[256];
	snprintf(text, sizeof text, "auto(host=127.0.0.1;port=%u)", (unsigned)boot.port);
	assert_int_equal(qa_stream_parse(text, &cfg.streams[0], err, sizeof err), 0);
	cfg.n_streams = 1;
	cfg.policy = QA_POLICY_ONDEMAND;
	struct qa_agent agent;
	struct qa_error e;
	assert_int_equal(qa_agent_open(&agent, &cfg, stderr, &e), 0);
	struct events ev = {0};
	const struct qa_run_params p = {
	    .for_ms = 1500, .stop_fd = -1, .on_event = on_event, .ctx = &ev};
	enum qa_run_end end;
	int rc = qa_agent_run(&agent, &p, &end, &e);
	char *servers = NULL;
	assert_int_equal(qa_store_meta_get(agent.store, "servers", &servers, &e), 1);
	qa_agent_close(&agent);
	qa_config_free(&cfg);
	fake_stop(&boot);
	fake_stop(&next);
	unlink(db);

	if (rc != 0)
		fail_msg("run failed: %s", e.msg);
	assert_int_equal(end, QA_RUN_END_TIME);
	assert_true(boot.sent_reassign);
	assert_true(boot.saw_bye_after_reassign);
	assert_string_equal(boot.hello_primary, "");
	assert_int_equal(next.accepted, 1);
	assert_string_equal(next.hello_primary, ""); /* auto: always empty */
	assert_int_equal(next.hello_flags, QS_FLAG_PERSIST);
	assert_int_equal(ev.n, 4);
	assert_string_equal(ev.what[0], "welcome ml1 1");
	assert_string_equal(ev.what[1], "closed reassigned");
	assert_string_equal(ev.what[2], "welcome ml2 1");
	assert_string_equal(ev.what[3], "closed time limit reached");
	/* the list kept is REASSIGN's (then WELCOME's from ml2, the same) */
	char want[160];
	snprintf(want, sizeof want, "ml2 %s\n", s2);
	assert_true(strncmp(servers, want, strlen(want)) == 0);
	free(servers);
}

static void test_sleep(void **state)
{
	struct qa_error e;
	uint64_t t0 = gw_mono_ms();
	assert_int_equal(qa_cycle_sleep(-1, 0, 120, &e), 0);
	uint64_t d = gw_mono_ms() - t0;
	assert_true(d >= 120 && d < 400);
	/* the stop time comes first */
	t0 = gw_mono_ms();
	assert_int_equal(qa_cycle_sleep(-1, t0 + 50, 5000, &e), -1);
	assert_int_equal(e.kind, QA_FAIL_STOPPED);
	assert_true(gw_mono_ms() - t0 < 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_default),
	    cmocka_unit_test(test_plan_fr_fd),
	    cmocka_unit_test(test_plan_edges),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_failback_interval),
	    cmocka_unit_test(test_cycle_follows_plan),
	    cmocka_unit_test(test_cycle_final_error_stops),
	    cmocka_unit_test(test_cycle_all_fail_names_every_server),
	    cmocka_unit_test(test_cycle_stop_during_wait),
	    cmocka_unit_test(test_run_follows_reassign),
	    cmocka_unit_test(test_sleep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
