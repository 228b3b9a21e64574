/* qabench idle (issue 7, scenario 4): hold N idle PERSIST sessions so that
 * the orchestrator can measure the gateway's memory per session.
 *
 * Sessions are spread round robin over the ports and over the source
 * addresses PREFIX2..PREFIX254 (each socket bound before connect), so the
 * client never runs out of ephemeral ports and the gateway's per-address
 * pending-HELLO cap is shared out. At most --parallel connects are in flight
 * at once; a session refused before WELCOME (ERROR overloaded, a connect
 * error) is retried a few times with a growing pause, then counted failed.
 * The one JSON object goes to stdout as soon as every session is connected
 * or has failed; then the sessions are held (PINGed every heartbeat_s so the
 * gateway does not close them as silent) for --hold-seconds, or until stdin
 * reaches EOF, or SIGINT/SIGTERM, and the program exits 0. */
#include "bench/qb.h"
#include "bench/qb_agent.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_PORTS 16
#define N_SOURCES 253 /* PREFIX2 .. PREFIX254 */
#define TICK_MS   100 /* keepalive and connect-deadline granularity */

enum idle_state {
	IS_WAITING,    /* not started (or waiting to retry) */
	IS_CONNECTING, /* connect + HELLO sent, no WELCOME yet */
	IS_READY,      /* WELCOME received: held */
	IS_FAILED,     /* refused or failed more than --retries times */
	IS_DROPPED,    /* closed by the gateway after WELCOME */
};

struct idle_run;

struct idle_sess {
	struct idle_run *run;
	struct qb_agent *a; /* the current agent; callbacks of any other are ignored */
	uint32_t idx;
	uint8_t state; /* enum idle_state */
	uint8_t tries;
};

struct idle_run {
	struct event_base *base;
	SSL_CTX *tls;
	const char *host, *src_prefix, *id_prefix;
	int ports[MAX_PORTS], nports;
	uint32_t n, parallel, retries;
	struct idle_sess *s;
	uint32_t next, in_flight, connected, failed, dropped;
	uint64_t overloaded, retried;
	int64_t t_start, t_ready;
	uint32_t heartbeat_s; /* smallest WELCOME heartbeat_s seen */
	uint32_t ping_next;   /* next session to PING */
	double ping_carry;    /* fractional PINGs owed from earlier ticks */
	uint64_t ping_nonce;
	double hold_s, connect_timeout_s;
	int reported, stopping;
	char first_error[256];
	struct event *tick, *hold, *stdin_ev, *sigint, *sigterm;
};

static void sess_connect(struct idle_sess *s);
static void start_hold(struct idle_run *run);

static void report(struct idle_run *run)
{
	if (run->reported)
		return;
	run->reported = 1;
	run->t_ready = gw_mono_us();
	printf("{\"mode\":\"idle\",\"tls\":%s,\"sessions\":%u,\"connected\":%u,\"failed\":%u,"
	       "\"ready\":true,\"seconds_to_connect\":%.3f,\"retries\":%llu,"
	       "\"overloaded\":%llu}\n",
	       run->tls ? "true" : "false", run->n, run->connected, run->failed,
	       (double)(run->t_ready - run->t_start) / 1e6, (unsigned long long)run->retried,
	       (unsigned long long)run->overloaded);
	fflush(stdout);
	fprintf(stderr, "qabench idle: %u connected, %u failed in %.1f s%s%s; holding\n",
	        run->connected, run->failed, (double)(run->t_ready - run->t_start) / 1e6,
	        run->first_error[0] ? "; first failure: " : "", run->first_error);
	start_hold(run);
}

static void connect_more(struct idle_run *run)
{
	while (run->in_flight < run->parallel && run->next < run->n) {
		struct idle_sess *s = &run->s[run->next++];
		run->in_flight++;
		sess_connect(s);
	}
	if (run->connected + run->failed + run->dropped >= run->n)
		report(run);
}

/* One more try after a pause, or failed for good. */
struct retry {
	struct idle_sess *s;
	struct qb_agent *old; /* freed here, outside its own callbacks */
};

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct retry *r = arg;
	qb_agent_free(r->old);
	if (r->s && r->s->state == IS_WAITING)
		sess_connect(r->s);
	free(r);
}

static void sess_failed(struct idle_sess *s, struct qb_agent *old, const char *why)
{
	struct idle_run *run = s->run;
	if (why && strstr(why, "overloaded"))
		run->overloaded++;
	if (!run->first_error[0] && why)
		snprintf(run->first_error, sizeof(run->first_error), "%s", why);
	struct retry *r = malloc(sizeof(*r));
	int again = s->tries < run->retries && !run->stopping;
	int delay_ms = again ? 200 * (s->tries + 1) : 0;
	struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
	s->a = NULL;
	if (r) {
		r->s = again ? s : NULL;
		r->old = old;
	}
	if (!r || event_base_once(run->base, -1, EV_TIMEOUT, on_retry, r, &tv) != 0) {
		free(r); /* leaks old rather than freeing it inside its callback */
		again = 0;
	}
	if (again) {
		s->tries++;
		s->state = IS_WAITING;
		run->retried++;
		return; /* still counted in flight */
	}
	s->state = IS_FAILED;
	run->failed++;
	run->in_flight--;
	connect_more(run);
}

static void on_welcome(struct qb_agent *a, const struct qs_welcome *w)
{
	struct idle_sess *s = qb_agent_user(a);
	struct idle_run *run = s->run;
	if (a != s->a)
		return;
	s->state = IS_READY;
	if (w->heartbeat_s && (!run->heartbeat_s || w->heartbeat_s < run->heartbeat_s))
		run->heartbeat_s = w->heartbeat_s;
	run->connected++;
	run->in_flight--;
	connect_more(run);
}

static void on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	/* PONGs to our PINGs, a PUSH if anything was pending: nothing to do. An
	 * idle bench agent never FETCHes, so a PUSH stays unanswered and
	 * coalesces further ones. */
}

static void on_close(struct qb_agent *a, const char *why)
{
	struct idle_sess *s = qb_agent_user(a);
	struct idle_run *run = s->run;
	if (a != s->a)
		return;
	if (s->state == IS_CONNECTING) {
		sess_failed(s, a, why);
		return;
	}
	if (s->state == IS_READY) {
		s->state = IS_DROPPED;
		s->a = NULL;
		if (!run->stopping && run->dropped++ < 5)
			fprintf(stderr, "qabench idle: session %u closed: %s\n", s->idx,
			        why ? why : "?");
		run->connected--;
		/* No retry: a dropped session is a finding; freed at exit. */
		struct retry *r = malloc(sizeof(*r));
		struct timeval now = {0, 0};
		if (r) {
			r->s = NULL;
			r->old = a;
			if (event_base_once(run->base, -1, EV_TIMEOUT, on_retry, r, &now) != 0)
				free(r);
		}
	}
}

static const struct qb_agent_cbs cbs = {on_welcome, on_frame, on_close};

static void sess_connect(struct idle_sess *s)
{
	struct idle_run *run = s->run;
	char id[160], src[64];
	snprintf(id, sizeof(id), "%s-%u", run->id_prefix, s->idx);
	snprintf(src, sizeof(src), "%s%u", run->src_prefix, 2 + s->idx % N_SOURCES);
	struct qb_agent_conf c = {
	    .host = run->host,
	    .port = run->ports[s->idx % (uint32_t)run->nports],
	    .src_ip = run->src_prefix[0] ? src : NULL,
	    .tls = run->tls,
	    .agent_id = id,
	    .token = "",
	    .primary = "",
	    .persist = 1,
	};
	s->state = IS_CONNECTING;
	/* qb_agent_new calls no callback itself: a failure there is its NULL. */
	s->a = qb_agent_new(run->base, &c, &cbs, s);
	if (!s->a)
		sess_failed(s, NULL, "cannot start a connection (see above)");
}

/* Keepalive: every session sends a PING once per heartbeat_s (the gateway
 * closes a session silent for 3 x heartbeat_s), spread evenly over the
 * ticks. Also ends the connect phase at --connect-timeout. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct idle_run *run = arg;
	int64_t now = gw_mono_us();
	if (!run->reported && (double)(now - run->t_start) / 1e6 >= run->connect_timeout_s) {
		fprintf(stderr,
		        "qabench idle: connect phase over after %.0f s: %u in flight, %u "
		        "not started; counted failed\n",
		        run->connect_timeout_s, run->in_flight, run->n - run->next);
		for (uint32_t i = 0; i < run->next; i++) {
			struct idle_sess *s = &run->s[i];
			if (s->state != IS_CONNECTING && s->state != IS_WAITING)
				continue;
			qb_agent_free(s->a); /* NULL while a retry waits */
			s->a = NULL;
			s->state = IS_FAILED; /* a waiting retry sees it and stops */
		}
		run->failed += run->in_flight + (run->n - run->next);
		run->in_flight = 0;
		run->next = run->n;
		report(run);
	}
	if (!run->heartbeat_s)
		return;
	run->ping_carry += (double)run->n * TICK_MS / 1000.0 / run->heartbeat_s;
	uint32_t k = (uint32_t)run->ping_carry;
	run->ping_carry -= k;
	for (uint32_t i = 0; i < k && i < run->n; i++) {
		struct idle_sess *s = &run->s[run->ping_next];
		run->ping_next = (run->ping_next + 1) % run->n;
		if (s->state != IS_READY || !s->a)
			continue;
		struct qs_frame ping = {.type = QS_PING};
		ping.u.nonce = ++run->ping_nonce;
		(void)qb_agent_send(s->a, &ping);
	}
}

static void stop(struct idle_run *run, const char *why)
{
	if (run->stopping)
		return;
	run->stopping = 1;
	fprintf(stderr, "qabench idle: %s; %u sessions still up, %u dropped while held\n", why,
	        run->connected, run->dropped);
	event_base_loopbreak(run->base);
}

static void on_hold_end(evutil_socket_t fd, short what, void *arg)
{
	stop(arg, "hold time over");
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	stop(arg, "signal");
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		stop(arg, "stdin closed");
}

/* Watch stdin for EOF only where EOF means something: a pipe, a socket or a
 * terminal. Run with stdin from /dev/null or a file, the hold is timed only. */
static int stdin_is_a_channel(void)
{
	struct stat st;
	if (fstat(0, &st) != 0)
		return 0;
	return S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(0);
}

/* Held: until the hold time, stdin's EOF or a signal. */
static void start_hold(struct idle_run *run)
{
	struct timeval tv = {(time_t)run->hold_s,
	                     (suseconds_t)((run->hold_s - (double)(time_t)run->hold_s) * 1e6)};
	run->hold = evtimer_new(run->base, on_hold_end, run);
	if (!run->hold || event_add(run->hold, &tv) != 0) {
		stop(run, "no hold timer");
		return;
	}
	if (stdin_is_a_channel()) {
		evutil_make_socket_nonblocking(0);
		run->stdin_ev = event_new(run->base, 0, EV_READ | EV_PERSIST, on_stdin, run);
		if (run->stdin_ev)
			event_add(run->stdin_ev, NULL);
	}
}

static void raise_nofile(uint32_t want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		fprintf(stderr, "qabench idle: cannot raise RLIMIT_NOFILE: %s\n", strerror(errno));
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)want + 64)
		fprintf(stderr,
		        "qabench idle: RLIMIT_NOFILE hard limit %llu is below %u sessions: "
		        "expect failures\n",
		        (unsigned long long)rl.rlim_cur, want);
}

int qb_mode_idle(const struct qb_opts *o)
{
	struct idle_run run = {0};
	run.host = qb_opt(o, "host", "127.0.0.1");
	run.nports = qb_parse_ports(qb_opt(o, "ports", "2439,2440,2441"), run.ports, MAX_PORTS);
	long n = qb_opt_int(o, "sessions", 1000);
	run.src_prefix = qb_opt(o, "src-prefix", "127.0.0.");
	run.hold_s = qb_opt_double(o, "hold-seconds", 60);
	run.connect_timeout_s = qb_opt_double(o, "connect-timeout", 300);
	long parallel = qb_opt_int(o, "parallel", 500);
	long retries = qb_opt_int(o, "retries", 3);
	if (run.nports <= 0 || n < 1 || n > 10000000 || run.hold_s < 0 || parallel < 1 ||
	    retries < 0 || retries > 100 || run.connect_timeout_s <= 0 ||
	    strlen(run.src_prefix) > 40) {
		fprintf(stderr, "qabench idle: bad options (--ports P1,P2 --sessions N "
		                "--src-prefix 127.0.0. --hold-seconds S --parallel N "
		                "--retries N)\n");
		return 2;
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "qbidle-%lld-%d", (long long)gw_wall_ms(), (int)getpid());
	run.id_prefix = qb_opt(o, "prefix", prefix);
	if (strlen(run.id_prefix) > 100) {
		fprintf(stderr, "qabench idle: --prefix too long\n");
		return 2;
	}
	run.n = (uint32_t)n;
	run.parallel = (uint32_t)parallel;
	run.retries = (uint32_t)retries;
	raise_nofile(run.n);
	signal(SIGPIPE, SIG_IGN);
	if (qb_opt_flag(o, "tls")) {
		run.tls = qb_tls_client_ctx(qb_opt(o, "ca", NULL));
		if (!run.tls) {
			fprintf(stderr, "qabench idle: no TLS context\n");
			return 1;
		}
	}
	run.s = calloc(run.n, sizeof(*run.s));
	run.base = event_base_new();
	if (!run.s || !run.base) {
		fprintf(stderr, "qabench idle: out of memory\n");
		return 1;
	}
	for (uint32_t i = 0; i < run.n; i++) {
		run.s[i].run = &run;
		run.s[i].idx = i;
	}
	struct timeval tick = {0, TICK_MS * 1000};
	run.tick = event_new(run.base, -1, EV_PERSIST, on_tick, &run);
	run.sigint = evsignal_new(run.base, SIGINT, on_signal, &run);
	run.sigterm = evsignal_new(run.base, SIGTERM, on_signal, &run);
	if (!run.tick || !run.sigint || !run.sigterm || event_add(run.tick, &tick) != 0 ||
	    event_add(run.sigint, NULL) != 0 || event_add(run.sigterm, NULL) != 0) {
		fprintf(stderr, "qabench idle: no events\n");
		return 1;
	}
	run.t_start = gw_mono_us();
	connect_more(&run);
	if (!run.stopping)
		event_base_dispatch(run.base);

	run.stopping = 1;
	for (uint32_t i = 0; i < run.n; i++)
		if (run.s[i].a)
			qb_agent_free(run.s[i].a);
	if (run.hold)
		event_free(run.hold);
	if (run.stdin_ev)
		event_free(run.stdin_ev);
	event_free(run.tick);
	event_free(run.sigint);
	event_free(run.sigterm);
	event_base_free(run.base);
	if (run.tls)
		SSL_CTX_free(run.tls);
	free(run.s);
	return 0;
}
