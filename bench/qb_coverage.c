/* qabench coverage (issue 18): push coverage after a node loss.
 *
 * N simulated agents (router-assigned: HELLO primary "", PERSIST) run the
 * agent's `run` loop (docs/agent.md "Failover", steps 1-9) over the server
 * list of their last WELCOME or REASSIGN, with -fr 0 and a background retry of
 * the primary every --fd seconds while on an alternate:
 * - a cycle tries the primary, then each alternate once, at once; if every
 *   one fails it starts again after 1 s x [0.5, 1.5];
 * - on WELCOME on_primary 0 (an alternate, or a first bootstrap server) the
 *   agent tries its primary in the background every --fd s and moves as soon
 *   as that answers (at start-up, before the kill: at once, to set up);
 * - on REASSIGN it records the new list, sends BYE and reconnects to the new
 *   primary; a lost session starts a new cycle at once;
 * - PUSH: PUSH_ACK and FETCH; DELIVER: DELIVER_ACK (and FETCH while more).
 *
 * Each agent connects from its own source address, 127.1.X.Y (devices do
 * not share one: the per-address HELLO cap would shed a storm from one).
 * Once every agent is on its primary, --kill-at s later qabench SIGKILLs
 * --kill-pid (a qagw node) and runs --after s more. Every 100 ms it samples
 * the share of agents that are connected, WELCOMEd with on_primary 1 (a
 * session that gets PUSHes), and probes it: --probes random agents get a
 * message each from one sender (its own session, on --sender-port, a node
 * that lives), timed from its due time to the agent's PUSH and to the message
 * in a DELIVER. A probe to an agent counted as covered that is neither
 * pushed nor delivered within 3 s says the count is wrong (push_missing: the
 * state says covered, and no push comes; slow pushes show in push_covered);
 * undelivered counts the probes not delivered by the end (those of its last
 * second among them).
 *
 * Output: the series (ms from the kill, share covered), the time from the
 * kill until the share is back at 100 % (and 99 %) for good, the probes'
 * latencies split by whether their agent was covered at the due time, and
 * how many probes waited longer than --reassign-after s. */
#include "bench/qb.h"
#include "bench/qb_agent.h"

#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COV_MAGIC    0x71626376u /* "qbcv" */
#define MAX_PORTS    64
#define MAX_LIST     32
#define TICK_MS      100
#define MISSING_US   3000000 /* a covered agent's probe must be pushed within this */
#define MAX_SAMPLES  4096
#define MAX_PROBES   200000
#define READY_WAIT_S 120

enum ag_state { AG_IDLE, AG_CONNECTING, AG_ON };

struct cov_run;

struct ag {
	struct cov_run *run;
	char id[128];
	char src[20]; /* its own source address (devices do not share one) */
	uint32_t idx;
	enum ag_state state;
	struct qb_agent *a;     /* the session (or the connection attempt) */
	struct qb_agent *probe; /* a background attempt on the primary */
	int list[MAX_LIST];     /* ports: the primary first, then the alternates */
	int n_list;
	int at;         /* the entry of list being tried in this cycle */
	int on_primary; /* the session's WELCOME said on_primary 1 */
	int fetching, refetch;
	struct event *retry; /* the background retry of the primary, or the next cycle */
	uint64_t cursor;     /* its oldest probe not yet pushed (probe index) */
};

struct probe {
	uint32_t agent;
	int covered; /* its agent was covered at the due time */
	uint8_t id[16];
	int64_t due_us, push_us, deliver_us;
};

struct cov_run {
	struct event_base *base;
	const char *host;
	int ports[MAX_PORTS], nports;
	char names[MAX_PORTS][80]; /* worker name -> port, learnt from WELCOMEs */
	int name_port[MAX_PORTS], n_names;
	struct ag *ag;
	uint32_t n;
	uint32_t parallel, next_connect, connecting;
	int ready; /* every agent was on its primary once: set-up over */
	int64_t t_ready, t_kill, kill_wall_ms;
	double kill_at_s, after_s, fd_s, reassign_after_s;
	pid_t kill_pid;
	int sender_port, probes_per_tick;
	struct qb_agent *sender;
	int sender_ready, sender_dead;
	struct probe *probes;
	uint64_t n_probes, n_sent;
	int uploads_in_flight;
	/* the series: one sample each tick from the kill on (and 1 s before) */
	int64_t s_ms[MAX_SAMPLES];
	double s_share[MAX_SAMPLES];
	int n_samples;
	struct event *tick;
	/* counts */
	uint64_t welcomes, reassigns, closes, cycles_failed, pushes, delivered, hops;
	uint64_t background_tries, duplicates, foreign, overloaded;
	int finished, exit_code;
	unsigned rng;
};

static void ag_cycle(struct ag *g);
static void ag_try(struct ag *g);

/* Learns the servers' ports; returns the port of name (0: not known). */
static int learn(struct cov_run *run, struct qs_str name, uint16_t n, const struct qs_server *s)
{
	for (uint16_t i = 0; i < n; i++) {
		int k = 0;
		while (k < run->n_names &&
		       !(strlen(run->names[k]) == s[i].name.len &&
		         memcmp(run->names[k], s[i].name.ptr, s[i].name.len) == 0))
			k++;
		if (k == run->n_names && k < MAX_PORTS && s[i].name.len < sizeof(run->names[k])) {
			memcpy(run->names[k], s[i].name.ptr, s[i].name.len);
			run->names[k][s[i].name.len] = 0;
			run->n_names++;
		}
		if (k < run->n_names)
			run->name_port[k] = qb_stream_port(s[i].stream);
	}
	for (int k = 0; k < run->n_names; k++)
		if (strlen(run->names[k]) == name.len &&
		    memcmp(run->names[k], name.ptr, name.len) == 0)
			return run->name_port[k];
	return 0;
}

/* The agent's list: the primary, then the servers in their order. */
static void set_list(struct ag *g, struct qs_str primary, uint16_t n, const struct qs_server *s)
{
	int pp = learn(g->run, primary, n, s);
	if (!pp)
		return; /* no primary known: keep the list it has */
	g->n_list = 0;
	g->list[g->n_list++] = pp;
	for (uint16_t i = 0; i < n && g->n_list < MAX_LIST; i++) {
		int p = qb_stream_port(s[i].stream);
		if (p && p != pp)
			g->list[g->n_list++] = p;
	}
}

static int covered(const struct ag *g)
{
	return g->state == AG_ON && g->on_primary;
}

static int send_frame(struct qb_agent *a, const struct qs_frame *f)
{
	return a ? qb_agent_send(a, f) : -1;
}

/* ---- freeing outside callbacks ---- */

static void on_free_later(evutil_socket_t fd, short what, void *arg)
{
	qb_agent_free(arg);
}

static void free_later(struct cov_run *run, struct qb_agent *a)
{
	struct timeval zero = {0, 0};
	if (a && event_base_once(run->base, -1, EV_TIMEOUT, on_free_later, a, &zero) != 0)
		fprintf(stderr, "qabench coverage: cannot schedule a free (leaked)\n");
}

static void after(struct ag *g, double s)
{
	struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
	evtimer_add(g->retry, &tv);
}

/* ---- one agent ---- */

static void ag_fetch(struct ag *g)
{
	if (g->fetching) {
		g->refetch = 1;
		return;
	}
	if (qb_agent_fetch(g->a) == 0) {
		g->fetching = 1;
		g->refetch = 0;
	}
}

static void on_deliver(struct ag *g, const struct qs_deliver *d, int64_t now)
{
	struct cov_run *run = g->run;
	for (uint16_t i = 0; i < d->count; i++) {
		const struct qs_msg_in *m = &d->msgs[i];
		uint32_t k = UINT32_MAX;
		if (qb_body_index(m, COV_MAGIC, &k) && k < run->n_sent &&
		    run->probes[k].agent == g->idx && memcmp(run->probes[k].id, m->id, 16) == 0) {
			if (run->probes[k].deliver_us)
				run->duplicates++;
			else {
				run->probes[k].deliver_us = now;
				run->delivered++;
			}
		} else {
			run->foreign++;
		}
	}
	qb_agent_ack_all(g->a, d);
	g->fetching = 0;
	if (d->more || g->refetch)
		ag_fetch(g);
}

/* A PUSH is the agent's oldest probe neither pushed nor delivered. */
static void on_push(struct ag *g, int64_t now)
{
	struct cov_run *run = g->run;
	run->pushes++;
	for (uint64_t k = g->cursor; k < run->n_sent; k++) {
		struct probe *p = &run->probes[k];
		if (p->agent != g->idx || p->push_us || p->deliver_us)
			continue;
		p->push_us = now;
		g->cursor = k;
		return;
	}
}

static void check_ready(struct cov_run *run);

static void on_session(struct ag *g, struct qb_agent *a, const struct qs_welcome *w)
{
	struct cov_run *run = g->run;
	run->welcomes++;
	if (g->a && g->a != a) /* the background attempt won: the old session goes */
		free_later(run, g->a);
	g->a = a;
	g->probe = NULL;
	g->state = AG_ON;
	g->on_primary = w->on_primary;
	g->fetching = g->refetch = 0;
	set_list(g, w->primary, w->n_servers, w->servers);
	evtimer_del(g->retry);
	if (!g->on_primary) /* step 6: the primary again in the background */
		after(g, run->ready ? run->fd_s : 0.0);
	ag_fetch(g);
	if (!run->ready)
		check_ready(run);
}

static void ag_on_welcome(struct qb_agent *a, const struct qs_welcome *w)
{
	struct ag *g = qb_agent_user(a);
	if (a == g->probe && !w->on_primary) { /* the primary is not ours any more */
		g->probe = NULL;
		set_list(g, w->primary, w->n_servers, w->servers);
		free_later(g->run, a);
		after(g, g->run->ready ? g->run->fd_s : 0.05);
		return;
	}
	if (a != g->a && a != g->probe)
		return;
	if (a == g->a && g->state == AG_CONNECTING && g->run->connecting)
		g->run->connecting--;
	on_session(g, a, w);
}

static void ag_on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	struct ag *g = qb_agent_user(a);
	if (a != g->a || g->state != AG_ON)
		return;
	switch (f->type) {
	case QS_PUSH: {
		struct qs_frame ack = {.type = QS_PUSH_ACK};
		ack.u.push_id = f->u.push.push_id;
		send_frame(a, &ack);
		on_push(g, gw_mono_us());
		ag_fetch(g);
		break;
	}
	case QS_DELIVER:
		on_deliver(g, &f->u.deliver, gw_mono_us());
		break;
	case QS_REASSIGN: { /* step 8: the new list, BYE, reconnect to the new primary */
		g->run->reassigns++;
		set_list(g, f->u.reassign.primary, f->u.reassign.n_servers, f->u.reassign.servers);
		struct qs_frame bye = {.type = QS_BYE};
		send_frame(a, &bye);
		free_later(g->run, a);
		g->a = NULL;
		ag_cycle(g);
		break;
	}
	default:
		break;
	}
}

static void ag_on_close(struct qb_agent *a, const char *why)
{
	struct ag *g = qb_agent_user(a);
	struct cov_run *run = g->run;
	if (a != g->a && a != g->probe)
		return; /* dropped already (freed once, by whoever dropped it) */
	free_later(run, a);
	if (a == g->probe) { /* the primary did not answer: again in fd s */
		g->probe = NULL;
		after(g, run->fd_s);
		return;
	}
	g->a = NULL;
	if (g->state == AG_ON) { /* a lost session: a new cycle at once (step 9) */
		run->closes++;
		if (g->probe) { /* a background attempt is under way: it becomes the attempt */
			g->a = g->probe;
			g->probe = NULL;
			g->state = AG_CONNECTING;
			g->at = 0;
			return;
		}
		ag_cycle(g);
		return;
	}
	/* this attempt failed: the next entry, at once (steps 2, 4) */
	if (why && strstr(why, "overloaded"))
		run->overloaded++;
	g->at++;
	ag_try(g);
}

static const struct qb_agent_cbs ag_cbs = {ag_on_welcome, ag_on_frame, ag_on_close};

static struct qb_agent *ag_connect(struct ag *g, int port)
{
	struct cov_run *run = g->run;
	struct qb_agent_conf c = {
	    .host = run->host,
	    .port = port,
	    .src_ip = g->src,
	    .agent_id = g->id,
	    .token = "",
	    .primary = "",
	    .persist = 1,
	};
	return qb_agent_new(run->base, &c, &ag_cbs, g);
}

static void ag_try(struct ag *g)
{
	struct cov_run *run = g->run;
	evtimer_del(g->retry);
	while (g->at < g->n_list) {
		g->a = ag_connect(g, g->list[g->at]);
		if (g->a)
			return;
		g->at++;
	}
	/* every server failed: a new cycle in 1 s x [0.5, 1.5] (step 5, k = 0) */
	run->cycles_failed++;
	g->state = AG_IDLE;
	after(g, 0.5 + (double)(rand_r(&run->rng) % 1000) / 1000.0);
}

static void ag_cycle(struct ag *g)
{
	g->state = AG_CONNECTING;
	g->on_primary = 0;
	g->at = 0;
	ag_try(g);
}

/* The retry timer: a new cycle (idle), or the background try of the primary. */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct ag *g = arg;
	if (g->state == AG_IDLE) {
		ag_cycle(g);
		return;
	}
	if (g->state != AG_ON || g->on_primary || g->probe || g->n_list == 0)
		return;
	g->run->background_tries++;
	g->probe = ag_connect(g, g->list[0]);
	if (!g->probe)
		after(g, g->run->fd_s);
}

/* ---- set-up ---- */

static void connect_more(struct cov_run *run)
{
	while (run->connecting < run->parallel && run->next_connect < run->n) {
		struct ag *g = &run->ag[run->next_connect++];
		run->connecting++;
		ag_cycle(g);
	}
}

static void sender_connect(struct cov_run *run);

static void check_ready(struct cov_run *run)
{
	connect_more(run);
	if (run->ready || run->next_connect < run->n)
		return;
	for (uint32_t i = 0; i < run->n; i++)
		if (!covered(&run->ag[i]))
			return;
	run->ready = 1;
	run->t_ready = gw_mono_us();
	fprintf(stderr, "qabench coverage: %u agents on their primaries; SIGKILL of %d in %.1f s\n",
	        run->n, (int)run->kill_pid, run->kill_at_s);
	sender_connect(run);
}

/* ---- the sender of probes ---- */

static void send_probes(struct cov_run *run)
{
	struct qs_msg_out out[QS_DEFAULT_MAX_BATCH];
	char to[QS_DEFAULT_MAX_BATCH][140];
	uint8_t body[QS_DEFAULT_MAX_BATCH][16];
	const uint32_t magic = COV_MAGIC;
	if (!run->sender_ready || run->sender_dead || run->uploads_in_flight)
		return;
	int n = 0;
	uint64_t first = run->n_sent;
	while (run->n_sent < run->n_probes && n < QS_DEFAULT_MAX_BATCH) {
		uint64_t k = run->n_sent++;
		struct probe *p = &run->probes[k];
		uint32_t k32 = (uint32_t)k;
		memset(body[n], 0, sizeof(body[n]));
		memcpy(body[n], &magic, 4);
		memcpy(body[n] + 4, &k32, 4);
		qb_uuid(p->id);
		memset(&out[n], 0, sizeof(out[n]));
		memcpy(out[n].id, p->id, 16);
		snprintf(to[n], sizeof(to[n]), "%s\\q", run->ag[p->agent].id);
		out[n].to = qs_str_c(to[n]);
		out[n].priority = 4;
		out[n].body.ptr = body[n];
		out[n].body.len = sizeof(body[n]);
		n++;
	}
	if (!n)
		return;
	struct qs_frame f = {.type = QS_UPLOAD};
	f.u.upload.batch = (uint32_t)first;
	f.u.upload.count = (uint16_t)n;
	f.u.upload.msgs = out;
	if (send_frame(run->sender, &f) != 0)
		run->sender_dead = 1;
	else
		run->uploads_in_flight++;
}

static void tx_on_welcome(struct qb_agent *a, const struct qs_welcome *w)
{
	struct cov_run *run = qb_agent_user(a);
	run->sender_ready = 1;
}

static void tx_on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	struct cov_run *run = qb_agent_user(a);
	if (f->type != QS_UPLOAD_ACK)
		return;
	if (run->uploads_in_flight)
		run->uploads_in_flight--;
	send_probes(run);
}

static void tx_on_close(struct qb_agent *a, const char *why)
{
	struct cov_run *run = qb_agent_user(a);
	fprintf(stderr, "qabench coverage: sender closed: %s\n", why ? why : "?");
	run->sender_dead = 1;
}

static const struct qb_agent_cbs tx_cbs = {tx_on_welcome, tx_on_frame, tx_on_close};

static void sender_connect(struct cov_run *run)
{
	struct qb_agent_conf c = {
	    .host = run->host,
	    .port = run->sender_port,
	    .agent_id = "qbcoverage-sender",
	    .token = "",
	    .primary = "",
	    .persist = 0,
	};
	run->sender = qb_agent_new(run->base, &c, &tx_cbs, run);
	if (!run->sender)
		run->sender_dead = 1;
}

/* ---- the clock: kill, samples, probes, the end ---- */

static void finish(struct cov_run *run);

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct cov_run *run = arg;
	int64_t now = gw_mono_us();
	if (!run->ready) {
		if (now > run->t_ready + (int64_t)READY_WAIT_S * 1000000) {
			fprintf(stderr,
			        "qabench coverage: agents not all on their primaries after %d s\n",
			        READY_WAIT_S);
			run->exit_code = 1;
			event_base_loopbreak(run->base);
		}
		return;
	}
	double since_ready = (double)(now - run->t_ready) / 1e6;
	if (!run->t_kill && since_ready >= run->kill_at_s) {
		run->t_kill = gw_mono_us();
		run->kill_wall_ms = gw_wall_ms();
		if (run->kill_pid > 0 && kill(run->kill_pid, SIGKILL) != 0)
			fprintf(stderr, "qabench coverage: kill %d failed\n", (int)run->kill_pid);
	}
	/* sample (from 1 s before the kill on) */
	uint32_t cov = 0;
	for (uint32_t i = 0; i < run->n; i++)
		cov += (uint32_t)covered(&run->ag[i]);
	int64_t at_ms = (now - (run->t_ready + (int64_t)(run->kill_at_s * 1e6))) / 1000;
	if (at_ms >= -1000 && run->n_samples < MAX_SAMPLES) {
		run->s_ms[run->n_samples] = at_ms;
		run->s_share[run->n_samples] = (double)cov / run->n;
		run->n_samples++;
	}
	/* probes: random agents, due now */
	for (int k = 0; k < run->probes_per_tick && run->n_probes < MAX_PROBES; k++) {
		struct probe *p = &run->probes[run->n_probes++];
		p->agent = (uint32_t)rand_r(&run->rng) % run->n;
		p->covered = covered(&run->ag[p->agent]);
		p->due_us = now;
	}
	send_probes(run);
	if (run->t_kill && now - run->t_kill >= (int64_t)(run->after_s * 1e6))
		finish(run);
}

/* The first time (ms from the kill) from which the share stays >= level. */
static long long back_at(const struct cov_run *run, double level)
{
	long long t = -1;
	int below = 0;
	for (int i = 0; i < run->n_samples; i++) {
		if (run->s_ms[i] < 0)
			continue;
		if (run->s_share[i] < level - 1e-9) {
			below = 1;
			t = -1;
		} else if (t < 0) {
			t = run->s_ms[i];
		}
	}
	(void)below;
	return t;
}

static void finish(struct cov_run *run)
{
	if (run->finished)
		return;
	run->finished = 1;
	event_base_loopbreak(run->base);
	int64_t end = gw_mono_us();
	int shown = 0; /* the agents not covered at the end, for the log */
	for (uint32_t i = 0; i < run->n && shown < 20; i++) {
		const struct ag *g = &run->ag[i];
		if (covered(g))
			continue;
		shown++;
		fprintf(stderr,
		        "qabench coverage: not covered at the end: %s state %d on_primary %d "
		        "list[0] %d of %d, background attempt %s\n",
		        g->id, (int)g->state, g->on_primary, g->n_list ? g->list[0] : 0, g->n_list,
		        g->probe ? "under way" : "none");
	}
	struct qb_lat push_cov = {0}, deliver_cov = {0}, deliver_unc = {0};
	uint64_t n_cov = 0, n_unc = 0, missing = 0, late = 0, undelivered = 0;
	int64_t ra_us = (int64_t)(run->reassign_after_s * 1e6);
	int64_t max_wait = 0;
	for (uint64_t k = 0; k < run->n_sent; k++) {
		struct probe *p = &run->probes[k];
		int64_t d = p->deliver_us ? p->deliver_us - p->due_us : end - p->due_us;
		if (!p->deliver_us)
			undelivered++;
		if (d > ra_us)
			late++;
		if (d > max_wait)
			max_wait = d;
		if (p->covered) {
			n_cov++;
			/* pushed, or delivered (by a FETCH another PUSH caused), within 3 s */
			int64_t got = p->push_us && (!p->deliver_us || p->push_us < p->deliver_us)
			                  ? p->push_us
			                  : p->deliver_us;
			if ((!got || got - p->due_us > MISSING_US) && p->due_us < end - MISSING_US)
				missing++;
			if (p->push_us)
				qb_lat_add(&push_cov, p->push_us - p->due_us);
			qb_lat_add(&deliver_cov, d);
		} else {
			n_unc++;
			qb_lat_add(&deliver_unc, d);
		}
	}
	printf("{\"mode\":\"coverage\",\"agents\":%u,\"reassign_after_s\":%g,\"fd_s\":%g,"
	       "\"kill_at_s\":%g,\"after_s\":%g,\"killed\":%s,\"time_to_100_ms\":%lld,"
	       "\"time_to_99_ms\":%lld,\"kill_wall_ms\":%lld,",
	       run->n, run->reassign_after_s, run->fd_s, run->kill_at_s, run->after_s,
	       run->t_kill ? "true" : "false", back_at(run, 1.0), back_at(run, 0.99),
	       (long long)run->kill_wall_ms);
	double lowest = 1.0;
	for (int i = 0; i < run->n_samples; i++)
		if (run->s_ms[i] >= 0 && run->s_share[i] < lowest)
			lowest = run->s_share[i];
	printf("\"lowest_share\":%.4f,\"probes\":%llu,\"probes_covered\":%llu,"
	       "\"probes_uncovered\":%llu,\"push_missing\":%llu,\"undelivered\":%llu,"
	       "\"waited_over_reassign_after\":%llu,\"max_wait_ms\":%.1f,",
	       lowest, (unsigned long long)run->n_sent, (unsigned long long)n_cov,
	       (unsigned long long)n_unc, (unsigned long long)missing,
	       (unsigned long long)undelivered, (unsigned long long)late,
	       (double)max_wait / 1000.0);
	qb_lat_json(stdout, "push_covered", &push_cov);
	printf(",");
	qb_lat_json(stdout, "deliver_covered", &deliver_cov);
	printf(",");
	qb_lat_json(stdout, "deliver_uncovered", &deliver_unc);
	printf(",\"welcomes\":%llu,\"reassigns\":%llu,\"closes\":%llu,\"cycles_failed\":%llu,"
	       "\"background_tries\":%llu,\"overloaded\":%llu,\"pushes\":%llu,\"duplicates\":%llu,"
	       "\"foreign\":%llu,"
	       "\"sender_dead\":%d,\"series\":[",
	       (unsigned long long)run->welcomes, (unsigned long long)run->reassigns,
	       (unsigned long long)run->closes, (unsigned long long)run->cycles_failed,
	       (unsigned long long)run->background_tries, (unsigned long long)run->overloaded,
	       (unsigned long long)run->pushes, (unsigned long long)run->duplicates,
	       (unsigned long long)run->foreign, run->sender_dead);
	for (int i = 0; i < run->n_samples; i++)
		printf("%s[%lld,%.4f]", i ? "," : "", (long long)run->s_ms[i], run->s_share[i]);
	printf("]}\n");
	fflush(stdout);
	qb_lat_free(&push_cov);
	qb_lat_free(&deliver_cov);
	qb_lat_free(&deliver_unc);
}

int qb_mode_coverage(const struct qb_opts *o)
{
	static struct cov_run run; /* large (the series): not on the stack */
	run.host = qb_opt(o, "host", "127.0.0.1");
	run.nports = qb_parse_ports(qb_opt(o, "ports", ""), run.ports, MAX_PORTS);
	long n = qb_opt_int(o, "agents", 3000);
	run.kill_at_s = qb_opt_double(o, "kill-at", 3);
	run.after_s = qb_opt_double(o, "after", 15);
	run.fd_s = qb_opt_double(o, "fd", 1);
	run.reassign_after_s = qb_opt_double(o, "reassign-after", 30);
	run.kill_pid = (pid_t)qb_opt_int(o, "kill-pid", 0);
	run.sender_port = (int)qb_opt_int(o, "sender-port", 0);
	run.probes_per_tick = (int)qb_opt_int(o, "probes", 5);
	run.parallel = (uint32_t)qb_opt_int(o, "parallel", 100);
	run.rng = (unsigned)qb_opt_int(o, "seed", 1);
	if (run.nports <= 0 || n < 1 || n > 100000 || run.kill_at_s < 0 || run.after_s <= 0 ||
	    run.fd_s <= 0 || run.kill_pid <= 0 || run.sender_port <= 0 || run.probes_per_tick < 0 ||
	    run.probes_per_tick > QS_DEFAULT_MAX_BATCH || run.parallel < 1) {
		fprintf(stderr,
		        "qabench coverage: bad options (--ports P1,... --agents N --kill-pid "
		        "PID --sender-port P --kill-at S --after S --fd S --reassign-after S "
		        "--probes N)\n");
		return 2;
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "qbcov-%lld-%d", (long long)gw_wall_ms(), (int)getpid());
	const char *pfx = qb_opt(o, "prefix", prefix);
	signal(SIGPIPE, SIG_IGN);
	run.base = event_base_new();
	run.n = (uint32_t)n;
	run.ag = calloc(run.n, sizeof(*run.ag));
	run.probes = calloc(MAX_PROBES, sizeof(*run.probes));
	if (!run.base || !run.ag || !run.probes) {
		fprintf(stderr, "qabench coverage: out of memory\n");
		return 1;
	}
	for (uint32_t i = 0; i < run.n; i++) {
		struct ag *g = &run.ag[i];
		g->run = &run;
		g->idx = i;
		snprintf(g->id, sizeof(g->id), "%.100s-%u", pfx, i);
		snprintf(g->src, sizeof(g->src), "127.1.%u.%u", i / 250 % 250, i % 250 + 1);
		g->list[0] = run.ports[i % (uint32_t)run.nports]; /* the bootstrap server */
		g->n_list = 1;
		g->retry = evtimer_new(run.base, on_retry, g);
		if (!g->retry)
			return 1;
	}
	run.t_ready = gw_mono_us(); /* until ready: the start, for the set-up's deadline */
	run.tick = event_new(run.base, -1, EV_PERSIST, on_tick, &run);
	struct timeval tick = {0, TICK_MS * 1000};
	event_add(run.tick, &tick);
	connect_more(&run);
	event_base_dispatch(run.base);
	if (!run.finished && !run.exit_code)
		run.exit_code = 1;
	return run.exit_code;
}
