/* qabench push (issue 7, scenario 2; issue 15, push capacity): push latency
 * through qagw, measured open-loop.
 *
 * N receiver agents hold PERSIST sessions on their primaries (router-assigned:
 * HELLO primary "" to the first port, then hop to the primary the WELCOME
 * names until on_primary is 1). One sender (its own session, not PERSIST)
 * sends round robin to the receivers on a fixed schedule: message i of a
 * step of rate R is due at t0 + i / R, whatever the acks do. Due messages go
 * out at once while fewer than --window UPLOADs await their ack; otherwise
 * they queue and leave together (up to --batch per UPLOAD, capped by the
 * WELCOME's max_batch) when the next ack comes back. The default (--window 1
 * --batch 256) is how qaagent uploads a trickle: it sends what is queued (more
 * than one UPLOAD only past max_batch messages: agent/qa_sync.c
 * UPLOAD_PIPELINE), reads the acks, and only then looks at the outbox again;
 * at 1,000 msgs/s and a ~10 ms round trip that is one UPLOAD a cycle.
 *
 * Every latency starts at the message's *due* time, not at the moment its
 * UPLOAD was written: a message that waits in the sender's queue (because the
 * previous UPLOAD's ack is late, or the sender fell behind) waits on the
 * clock, as a user's message would. The wait in the sender's queue alone
 * (sender_queue: due -> written) is reported as well, for information; it is
 * never subtracted. A message that never arrives counts in the percentiles
 * with the time from its due time to the end of its step (a lower bound), and
 * as lost. The achieved rate is the measured messages actually written
 * divided by the time from the first one's due time to the last one's write
 * (plus one interval): under 99 % of the offered rate, the sender could not
 * keep the schedule.
 *
 * Steps (--steps R1,R2,...; or one step of --rate): each step is --warmup s
 * of messages that are not measured, then --seconds s that are. After its
 * last message is written, a step ends when every message of it is acked and
 * delivered (or LINGER_US later); the next starts --gap s after that. With
 * --stop-p99-ms P, stepping stops after the first step whose UPLOAD ->
 * DELIVER p99 is P or more or whose achieved rate is under --stop-achieved
 * (default 0.99) of its offered rate; capacity_msgs_per_s is then the highest
 * rate of the steps that passed before it.
 *
 * A receiver answers PUSH with PUSH_ACK at once, then FETCHes, and
 * DELIVER_ACKs what it gets. Measured per message: due -> UPLOAD_ACK at the
 * sender, due -> PUSH at its recipient (a PUSH is attributed to the
 * recipient's oldest message neither pushed nor delivered yet), and due -> the
 * message in a DELIVER, matched by id. Message i goes to receiver i % N, and
 * its body carries i, so the id is checked against message i.
 *
 * --marks: {"mark":"step_start",...} on stdout when a step's first message is
 * due and {"mark":"step_end",...} when the step has ended, so that the
 * orchestrator can read CPU and store counters over exactly one step. */
#include "bench/qb.h"
#include "bench/qb_agent.h"

#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY_MAGIC      0x71627075u /* "qbpu" */
#define MAX_PORTS       16
#define MAX_HOPS        5  /* reconnects to reach the primary */
#define MAX_RETRIES     10 /* reconnects after a failure before WELCOME */
#define LINGER_US       3000000
#define MAX_STEPS       16
#define READY_TIMEOUT_S 120

enum rx_state {
	RX_WAITING,    /* not connected yet (queued for a connect slot) */
	RX_CONNECTING, /* HELLO sent, WELCOME not seen or not on the primary yet */
	RX_READY,      /* PERSIST session on its primary */
	RX_FAILED,     /* gave up: its messages will count as lost */
};

struct push_run;

struct rx {
	struct push_run *run;
	struct qb_agent *a;
	uint32_t idx;
	enum rx_state state;
	int port;        /* where the next connect goes */
	int hops, tries; /* reconnects to reach the primary; after failures */
	int fetching;    /* a FETCH is outstanding */
	int refetch;     /* PUSH or more=1 seen while fetching: FETCH again */
	uint64_t cursor; /* its oldest message possibly neither pushed nor delivered */
	char id[128];    /* agent id */
};

struct msg {
	uint8_t id[16];
	int64_t due_us;  /* its place in the schedule: every latency starts here */
	int64_t sent_us; /* the UPLOAD carrying it was written (sender_queue ends here) */
	int64_t acked_us, pushed_us, delivered_us;
	uint8_t result; /* UPLOAD_ACK result */
};

/* One rate of the schedule: messages [first, first + count), the first warm
 * of them not measured. */
struct step {
	double rate;
	uint64_t first, count, warm;
	int64_t t0;                    /* when its message 0 is due; 0: not started */
	int64_t t_sent_end, t_settled; /* its last message written; the step ended */
	uint64_t acked, settled;       /* its messages acked; delivered or rejected */
	uint64_t abandoned;            /* never written: the sender fell too far behind */
	int pass;                      /* after t_settled: met the --stop-* rule */
	double p99_deliver_ms, achieved_rate;
};

struct push_run {
	struct event_base *base;
	SSL_CTX *tls;
	const char *host;
	int ports[MAX_PORTS], nports;
	uint32_t n_rx;
	struct rx *rx;
	uint32_t next_connect, in_flight, parallel, n_ready, n_failed_rx;

	struct qb_agent *sender;
	int sender_ready, sender_dead;
	char sender_id[128];
	struct step steps[MAX_STEPS];
	int n_steps, cur; /* the step running (or the gap before it) */
	double gap_s, stop_p99_ms, stop_achieved;
	int marks;
	int batch, body_len;
	uint64_t total; /* messages to send, over every step */
	struct msg *msgs;
	uint8_t *bodies; /* batch x body_len: the bodies of the UPLOAD being encoded */
	uint64_t n_due, n_sent, n_acked, n_delivered; /* n_sent <= n_due: the queue between */
	int window;                                   /* most UPLOADs awaiting an ack; 0: any */
	uint64_t uploads, uploads_in_flight, max_in_upload;
	int64_t t_start, t_next_step; /* the first step's start; when the next one starts */
	struct event *tick, *progress;
	int finished, exit_code;

	/* Counters over the whole run (warmup included) unless named _measured. */
	uint64_t pushes, pushes_measured, push_unattributed, delivers, fetches;
	uint64_t duplicates, foreign, rejected, receiver_closes, reassigns, hops_total;
	uint64_t overloaded;
};

static void rx_connect(struct rx *r);
static void rx_give_up(struct rx *r, const char *why);
static void sender_connect(struct push_run *run);
static void finish(struct push_run *run);

static struct step *step_of(struct push_run *run, uint64_t i)
{
	for (int k = 0; k < run->n_steps; k++)
		if (i < run->steps[k].first + run->steps[k].count)
			return &run->steps[k];
	return &run->steps[run->n_steps - 1];
}

static int primary_port(struct qs_str primary, uint16_t n, const struct qs_server *servers)
{
	for (uint16_t i = 0; i < n; i++)
		if (servers[i].name.len == primary.len &&
		    memcmp(servers[i].name.ptr, primary.ptr, primary.len) == 0)
			return qb_stream_port(servers[i].stream);
	return 0;
}

static int send_frame(struct qb_agent *a, const struct qs_frame *f)
{
	return a ? qb_agent_send(a, f) : -1;
}

/* ---- deferred work: agents are freed and reconnected outside their callbacks ---- */

struct later {
	struct rx *r;
	struct qb_agent *old;
};

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct later *l = arg;
	if (l->old)
		qb_agent_free(l->old);
	if (l->r)
		rx_connect(l->r);
	free(l);
}

/* Frees old (if any) and, when r is given, reconnects r after delay_ms. */
static void defer(struct push_run *run, struct qb_agent *old, struct rx *r, int delay_ms)
{
	struct later *l = malloc(sizeof(*l));
	struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
	if (!l || event_base_once(run->base, -1, EV_TIMEOUT, on_later, l, &tv) != 0) {
		free(l); /* out of memory: leak the agent rather than free it in its callback */
		if (r)
			rx_give_up(r, "out of memory");
		return;
	}
	l->r = r;
	l->old = old;
}

/* ---- receivers ---- */

static void rx_fetch(struct rx *r)
{
	if (r->fetching) {
		r->refetch = 1;
		return;
	}
	if (qb_agent_fetch(r->a) == 0) {
		r->fetching = 1;
		r->refetch = 0;
		r->run->fetches++;
	}
}

static void connect_more(struct push_run *run)
{
	while (run->in_flight < run->parallel && run->next_connect < run->n_rx) {
		struct rx *r = &run->rx[run->next_connect++];
		run->in_flight++;
		rx_connect(r);
	}
	if (!run->sender && run->n_ready + run->n_failed_rx == run->n_rx) {
		fprintf(stderr, "qabench push: %u receivers on their primaries (%u failed)\n",
		        run->n_ready, run->n_failed_rx);
		sender_connect(run);
	}
}

static void rx_give_up(struct rx *r, const char *why)
{
	struct push_run *run = r->run;
	fprintf(stderr, "qabench push: receiver %s failed: %s\n", r->id, why);
	r->state = RX_FAILED;
	run->n_failed_rx++;
	run->in_flight--;
	connect_more(run);
}

static void rx_on_welcome(struct qb_agent *a, const struct qs_welcome *w)
{
	struct rx *r = qb_agent_user(a);
	struct push_run *run = r->run;
	if (a != r->a)
		return; /* an abandoned agent, freed soon */
	if (w->on_primary) {
		r->state = RX_READY;
		r->fetching = r->refetch = 0;
		run->in_flight--;
		run->n_ready++;
		connect_more(run);
		return;
	}
	int port = primary_port(w->primary, w->n_servers, w->servers);
	if (!port || ++r->hops > MAX_HOPS) {
		rx_give_up(r, port ? "never on its primary" : "primary not in the server list");
		r->a = NULL;
		defer(run, a, NULL, 0);
		return;
	}
	run->hops_total++;
	r->port = port;
	r->a = NULL;
	defer(run, a, r, 0);
}

/* The oldest message of r that is neither pushed nor delivered, or UINT64_MAX. */
static uint64_t rx_oldest_unpushed(struct rx *r)
{
	struct push_run *run = r->run;
	while (r->cursor < run->n_sent &&
	       (run->msgs[r->cursor].pushed_us || run->msgs[r->cursor].delivered_us))
		r->cursor += run->n_rx;
	return r->cursor < run->n_sent ? r->cursor : UINT64_MAX;
}

static void rx_on_deliver(struct rx *r, const struct qs_deliver *d, int64_t now)
{
	struct push_run *run = r->run;
	run->delivers++;
	for (uint16_t i = 0; i < d->count; i++) {
		const struct qs_msg_in *m = &d->msgs[i];
		uint32_t idx = UINT32_MAX;
		if (qb_body_index(m, BODY_MAGIC, &idx) && idx < run->n_sent &&
		    idx % run->n_rx == r->idx && memcmp(run->msgs[idx].id, m->id, 16) == 0) {
			struct msg *msg = &run->msgs[idx];
			if (msg->delivered_us) {
				run->duplicates++;
			} else {
				msg->delivered_us = now;
				run->n_delivered++;
				step_of(run, idx)->settled++;
			}
		} else {
			run->foreign++; /* an earlier run's message to the same id */
		}
	}
	qb_agent_ack_all(r->a, d);
	r->fetching = 0;
	if (d->more || r->refetch)
		rx_fetch(r);
}

static void rx_on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	struct rx *r = qb_agent_user(a);
	struct push_run *run = r->run;
	int64_t now = gw_mono_us();
	if (a != r->a || r->state != RX_READY)
		return; /* an abandoned agent, freed soon */
	switch (f->type) {
	case QS_PUSH: {
		struct qs_frame ack = {.type = QS_PUSH_ACK};
		ack.u.push_id = f->u.push.push_id;
		send_frame(a, &ack);
		run->pushes++;
		const struct step *cs = &run->steps[run->cur];
		if (cs->t0 && now >= cs->t0 + (int64_t)((double)cs->warm * 1e6 / cs->rate))
			run->pushes_measured++;
		uint64_t k = rx_oldest_unpushed(r);
		if (k == UINT64_MAX)
			run->push_unattributed++;
		else
			run->msgs[k].pushed_us = now;
		rx_fetch(r);
		break;
	}
	case QS_DELIVER:
		rx_on_deliver(r, &f->u.deliver, now);
		break;
	case QS_REASSIGN: {
		/* The router moved it: follow, like a real auto agent (BYE, reconnect). */
		run->reassigns++;
		int port = primary_port(f->u.reassign.primary, f->u.reassign.n_servers,
		                        f->u.reassign.servers);
		struct qs_frame bye = {.type = QS_BYE};
		send_frame(a, &bye);
		r->state = RX_CONNECTING;
		r->port = port ? port : run->ports[0];
		r->hops = r->tries = 0;
		r->a = NULL;
		run->n_ready--;
		run->in_flight++;
		defer(run, a, r, 0);
		break;
	}
	default:
		break;
	}
}

static void rx_on_close(struct qb_agent *a, const char *why)
{
	struct rx *r = qb_agent_user(a);
	struct push_run *run = r->run;
	if (a != r->a)
		return; /* an abandoned agent, freed soon */
	r->a = NULL;
	if (why && strstr(why, "overloaded"))
		run->overloaded++;
	if (r->state == RX_CONNECTING) {
		if (++r->tries > MAX_RETRIES) {
			rx_give_up(r, why ? why : "closed");
			defer(run, a, NULL, 0);
			return;
		}
		r->port = run->ports[0];
		r->hops = 0;
		defer(run, a, r, 50 * r->tries);
		return;
	}
	if (r->state == RX_READY) {
		/* Lost its session mid-run: reconnect; held messages come again. */
		fprintf(stderr, "qabench push: receiver %s closed: %s\n", r->id, why ? why : "?");
		run->receiver_closes++;
		run->n_ready--;
		run->in_flight++;
		r->state = RX_CONNECTING;
		r->port = run->ports[0];
		r->hops = r->tries = 0;
		defer(run, a, r, 100);
		return;
	}
	defer(run, a, NULL, 0);
}

static const struct qb_agent_cbs rx_cbs = {rx_on_welcome, rx_on_frame, rx_on_close};

static void rx_connect(struct rx *r)
{
	struct push_run *run = r->run;
	struct qb_agent_conf c = {
	    .host = run->host,
	    .port = r->port,
	    .tls = run->tls,
	    .agent_id = r->id,
	    .token = "",
	    .primary = "",
	    .persist = 1,
	};
	r->state = RX_CONNECTING;
	/* qb_agent_new calls no callback itself: a failure there is its NULL. */
	r->a = qb_agent_new(run->base, &c, &rx_cbs, r);
	if (!r->a) {
		if (++r->tries > MAX_RETRIES)
			rx_give_up(r, "cannot connect");
		else
			defer(run, NULL, r, 100 * r->tries);
	}
}

/* ---- the sender ---- */

/* Message i of the current step is due at t0 + (i - first) / rate (open
 * loop: the schedule, not the acks, sets the pace). Due messages go out at
 * once, up to --batch per UPLOAD, while fewer than --window UPLOADs await
 * their ack (0: no limit); beyond that they wait in the sender's queue, and
 * the next UPLOAD_ACK sends them. Message i goes to receiver i % N; its body
 * starts with BODY_MAGIC and i; an UPLOAD's batch number is its first
 * message's index, so an UPLOAD_ACK maps back without a table. */
static void send_queued(struct push_run *run)
{
	struct qs_msg_out out[QS_DEFAULT_MAX_BATCH];
	char to[QS_DEFAULT_MAX_BATCH][140];
	const uint32_t magic = BODY_MAGIC;
	while (run->n_sent < run->n_due && !run->sender_dead &&
	       (run->window == 0 || run->uploads_in_flight < (uint64_t)run->window)) {
		uint64_t first = run->n_sent;
		int n = 0;
		while (n < run->batch && run->n_sent < run->n_due) {
			uint64_t i = run->n_sent++;
			uint32_t idx = (uint32_t)i;
			uint8_t *body = run->bodies + (size_t)n * (size_t)run->body_len;
			memcpy(body, &magic, 4);
			memcpy(body + 4, &idx, 4);
			qb_uuid(run->msgs[i].id);
			struct qs_msg_out *o = &out[n];
			memset(o, 0, sizeof(*o));
			memcpy(o->id, run->msgs[i].id, 16);
			snprintf(to[n], sizeof(to[n]), "%s\\q", run->rx[i % run->n_rx].id);
			o->to = qs_str_c(to[n]);
			o->priority = 4;
			o->body.ptr = body;
			o->body.len = (uint32_t)run->body_len;
			n++;
		}
		struct qs_frame f = {.type = QS_UPLOAD};
		f.u.upload.batch = (uint32_t)first;
		f.u.upload.count = (uint16_t)n;
		f.u.upload.msgs = out;
		int64_t t = gw_mono_us();
		for (int k = 0; k < n; k++)
			run->msgs[first + (uint64_t)k].sent_us = t;
		if (send_frame(run->sender, &f) != 0) {
			fprintf(stderr, "qabench push: cannot queue an UPLOAD\n");
			run->sender_dead = 1;
		}
		run->uploads++;
		run->uploads_in_flight++;
		if ((uint64_t)n > run->max_in_upload)
			run->max_in_upload = (uint64_t)n;
	}
	struct step *s = &run->steps[run->cur];
	if (s->t0 && !s->t_sent_end && run->n_sent == s->first + s->count)
		s->t_sent_end = gw_mono_us();
}

static void send_due(struct push_run *run, int64_t now)
{
	struct step *s = &run->steps[run->cur];
	uint64_t k = (uint64_t)((double)(now - s->t0) * s->rate / 1e6) + 1;
	if (k > s->count)
		k = s->count;
	for (; run->n_due < s->first + k; run->n_due++)
		run->msgs[run->n_due].due_us =
		    s->t0 + (int64_t)((double)(run->n_due - s->first) * 1e6 / s->rate);
	send_queued(run);
}

static void step_start(struct push_run *run, int64_t now)
{
	struct step *s = &run->steps[run->cur];
	s->t0 = now;
	if (run->marks) {
		printf("{\"mark\":\"step_start\",\"step\":%d,\"rate\":%.0f}\n", run->cur, s->rate);
		fflush(stdout);
	}
	fprintf(stderr, "qabench push: step %d: %llu messages at %.0f/s\n", run->cur,
	        (unsigned long long)s->count, s->rate);
	send_due(run, now);
}

/* ---- figures ---- */

/* The figures of the measured messages of one or more steps (each ended). */
struct figs {
	uint64_t measured, sent, delivered, lost, rejected, unacked, pushed, no_push;
	double send_s;  /* first measured due -> last measured written, + 1 interval */
	double offered; /* messages per second the schedule asked for (weighted) */
	struct qb_lat ack, push, deliver, queue;
};

static void figs_add(const struct push_run *run, const struct step *s, struct figs *f)
{
	uint64_t a = s->first + s->warm, z = s->first + s->count;
	int64_t end = s->t_settled ? s->t_settled : gw_mono_us(); /* censoring point */
	int64_t last_sent = 0;
	uint64_t sent = 0;
	for (uint64_t i = a; i < z; i++) {
		const struct msg *m = &run->msgs[i];
		f->measured++;
		if (i >= run->n_sent || !m->sent_us) { /* never written */
			f->lost++;
			qb_lat_add(&f->deliver, end - (m->due_us ? m->due_us : end));
			continue;
		}
		sent++;
		last_sent = m->sent_us;
		qb_lat_add(&f->queue, m->sent_us - m->due_us);
		qb_lat_add(&f->ack, (m->acked_us ? m->acked_us : end) - m->due_us);
		if (!m->acked_us)
			f->unacked++;
		if (m->acked_us && m->result != QS_R_STORED) {
			f->rejected++;
			continue;
		}
		if (m->pushed_us) {
			f->pushed++;
			qb_lat_add(&f->push, m->pushed_us - m->due_us);
		}
		if (m->delivered_us > 0) {
			f->delivered++;
			qb_lat_add(&f->deliver, m->delivered_us - m->due_us);
			f->no_push += !m->pushed_us;
		} else {
			f->lost++; /* counted at the end of its step: a lower bound */
			qb_lat_add(&f->deliver, end - m->due_us);
			if (!m->pushed_us)
				qb_lat_add(&f->push, end - m->due_us);
		}
	}
	f->sent += sent;
	if (sent < z - a) /* some never written: the time ran until the step ended */
		last_sent = end;
	if (sent && z > a) {
		double secs = (double)(last_sent - run->msgs[a].due_us) / 1e6 + 1.0 / s->rate;
		f->send_s += secs;
		f->offered += (double)(z - a) / s->rate; /* seconds the schedule took */
	}
}

static void figs_free(struct figs *f)
{
	qb_lat_free(&f->ack);
	qb_lat_free(&f->push);
	qb_lat_free(&f->deliver);
	qb_lat_free(&f->queue);
}

/* Prints the figures' fields (no braces). */
static void figs_json(struct figs *f)
{
	double achieved = f->send_s > 0 ? (double)f->sent / f->send_s : 0;
	double offered = f->offered > 0 ? (double)f->measured / f->offered : 0;
	printf("\"offered_rate\":%.1f,\"achieved_rate\":%.1f,\"achieved_ratio\":%.4f,"
	       "\"send_seconds\":%.3f,\"measured\":%llu,\"sent\":%llu,\"delivered\":%llu,"
	       "\"lost\":%llu,\"rejected\":%llu,\"unacked\":%llu,\"pushed_msgs\":%llu,"
	       "\"delivered_without_own_push\":%llu,",
	       offered, achieved, offered > 0 ? achieved / offered : 0, f->send_s,
	       (unsigned long long)f->measured, (unsigned long long)f->sent,
	       (unsigned long long)f->delivered, (unsigned long long)f->lost,
	       (unsigned long long)f->rejected, (unsigned long long)f->unacked,
	       (unsigned long long)f->pushed, (unsigned long long)f->no_push);
	qb_lat_json(stdout, "upload_to_push", &f->push);
	putchar(',');
	qb_lat_json(stdout, "upload_to_deliver", &f->deliver);
	putchar(',');
	qb_lat_json(stdout, "upload_ack", &f->ack);
	putchar(',');
	qb_lat_json(stdout, "sender_queue", &f->queue);
}

/* A step has ended: its verdict under the --stop-* rule, its mark. */
static void step_end(struct push_run *run, int64_t now)
{
	struct step *s = &run->steps[run->cur];
	s->t_settled = now;
	struct figs f = {0};
	figs_add(run, s, &f);
	s->p99_deliver_ms = qb_lat_pct_ms(&f.deliver, 99);
	s->achieved_rate = f.send_s > 0 ? (double)f.sent / f.send_s : 0;
	s->pass = f.measured > 0 && f.sent == f.measured &&
	          (run->stop_p99_ms <= 0 || s->p99_deliver_ms < run->stop_p99_ms) &&
	          s->achieved_rate >= run->stop_achieved * s->rate;
	uint64_t stored = 0;
	for (uint64_t i = s->first; i < s->first + s->count && i < run->n_sent; i++)
		stored += run->msgs[i].acked_us && run->msgs[i].result == QS_R_STORED;
	fprintf(stderr,
	        "qabench push: step %d (%.0f/s) ended: achieved %.0f/s, DELIVER p99 %.2f ms, "
	        "lost %llu: %s\n",
	        run->cur, s->rate, s->achieved_rate, s->p99_deliver_ms, (unsigned long long)f.lost,
	        s->pass ? "passed" : "missed");
	if (run->marks) {
		printf("{\"mark\":\"step_end\",\"step\":%d,\"rate\":%.0f,\"msgs\":%llu,"
		       "\"stored\":%llu,\"pass\":%s}\n",
		       run->cur, s->rate, (unsigned long long)s->count, (unsigned long long)stored,
		       s->pass ? "true" : "false");
		fflush(stdout);
	}
	figs_free(&f);
}

/* The sender is still behind LINGER_US after the step's schedule ended: the
 * rest of the step is never written (each such message counts as lost, and
 * the achieved rate shows the shortfall), so that an overloaded step ends in
 * bounded time. */
static void step_abandon(struct push_run *run, struct step *s)
{
	uint64_t end = s->first + s->count, n = 0;
	for (uint64_t i = run->n_sent; i < end; i++, n++) {
		struct msg *m = &run->msgs[i];
		if (!m->due_us)
			m->due_us = s->t0 + (int64_t)((double)(i - s->first) * 1e6 / s->rate);
		m->delivered_us = -2; /* never written: the receivers' cursors pass it */
	}
	fprintf(stderr,
	        "qabench push: step %d: %llu messages never sent (the sender fell behind)\n",
	        run->cur, (unsigned long long)n);
	s->abandoned = n;
	s->acked += n;
	s->settled += n;
	run->n_due = run->n_sent = end;
	s->t_sent_end = gw_mono_us();
}

/* The sender's clock: one timer, armed for the next message's due time (the
 * base has precise timers, so a message is not held back by a coarse tick),
 * for the next step's start in a gap, or every millisecond while a step
 * settles. */
static int64_t tick_work(struct push_run *run, int64_t now)
{
	struct step *s = &run->steps[run->cur];
	if (!s->t0) { /* the gap before this step */
		if (now < run->t_next_step)
			return run->t_next_step;
		step_start(run, now);
		return now;
	}
	if (run->n_sent < s->first + s->count && !run->sender_dead &&
	    now >= s->t0 + (int64_t)((double)s->count * 1e6 / s->rate) + LINGER_US) {
		step_abandon(run, s);
		return now;
	}
	if (run->n_sent < s->first + s->count && !run->sender_dead) {
		send_due(run, now);
		if (run->n_due < s->first + s->count)
			return s->t0 + (int64_t)((double)(run->n_due - s->first) * 1e6 / s->rate);
		return now + 1000; /* all due: the rest leave as acks come back */
	}
	if (!s->t_sent_end)
		s->t_sent_end = now;
	if (!(s->acked == s->count && s->settled == s->count) && now - s->t_sent_end < LINGER_US &&
	    !run->sender_dead)
		return now + 1000;
	step_end(run, now);
	if (run->cur + 1 >= run->n_steps || run->sender_dead ||
	    (run->stop_p99_ms > 0 && !s->pass)) {
		finish(run);
		return 0;
	}
	run->cur++;
	run->t_next_step = now + (int64_t)(run->gap_s * 1e6);
	return run->t_next_step;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct push_run *run = arg;
	if (run->finished)
		return;
	int64_t now = gw_mono_us();
	int64_t next = tick_work(run, now);
	if (!next || run->finished)
		return;
	int64_t wait = next - gw_mono_us();
	if (wait < 0)
		wait = 0;
	struct timeval tv = {(time_t)(wait / 1000000), (suseconds_t)(wait % 1000000)};
	if (evtimer_add(run->tick, &tv) != 0) {
		fprintf(stderr, "qabench push: cannot arm the timer\n");
		run->exit_code = 1;
		event_base_loopbreak(run->base);
	}
}

static void on_progress(evutil_socket_t fd, short what, void *arg)
{
	struct push_run *run = arg;
	if (!run->t_start) {
		if (run->n_ready + run->n_failed_rx < run->n_rx)
			fprintf(stderr, "qabench push: %u/%u receivers ready\n", run->n_ready,
			        run->n_rx);
		return;
	}
	fprintf(stderr,
	        "qabench push: sent %llu acked %llu delivered %llu pushes %llu "
	        "(receivers ready %u)\n",
	        (unsigned long long)run->n_sent, (unsigned long long)run->n_acked,
	        (unsigned long long)run->n_delivered, (unsigned long long)run->pushes,
	        run->n_ready);
}

static void tx_on_welcome(struct qb_agent *a, const struct qs_welcome *w)
{
	struct push_run *run = qb_agent_user(a);
	if (w->max_batch && run->batch > w->max_batch)
		run->batch = w->max_batch;
	run->sender_ready = 1;
	run->t_start = gw_mono_us();
	fprintf(stderr, "qabench push: sender on %.*s, %d step(s), %llu messages, batch %d\n",
	        (int)w->server.len, w->server.ptr, run->n_steps, (unsigned long long)run->total,
	        run->batch);
	struct timeval zero = {0, 0};
	run->tick = evtimer_new(run->base, on_tick, run);
	if (!run->tick || evtimer_add(run->tick, &zero) != 0) {
		fprintf(stderr, "qabench push: no timer\n");
		run->exit_code = 1;
		event_base_loopbreak(run->base);
		return;
	}
	run->t_next_step = run->t_start; /* the first step starts on the first tick */
}

static void tx_on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	struct push_run *run = qb_agent_user(a);
	if (f->type != QS_UPLOAD_ACK)
		return;
	int64_t now = gw_mono_us();
	const struct qs_upload_ack *ack = &f->u.upload_ack;
	if (run->uploads_in_flight)
		run->uploads_in_flight--;
	for (uint16_t k = 0; k < ack->count; k++) {
		uint64_t i = (uint64_t)ack->batch + k;
		if (i >= run->n_sent || memcmp(run->msgs[i].id, ack->entries[k].id, 16) != 0)
			continue;
		struct msg *m = &run->msgs[i];
		if (m->acked_us)
			continue;
		m->acked_us = now;
		m->result = ack->entries[k].result;
		run->n_acked++;
		struct step *s = step_of(run, i);
		s->acked++;
		if (m->result != QS_R_STORED) {
			run->rejected++;
			m->delivered_us = -1; /* never coming: not lost, rejected */
			run->n_delivered++;
			s->settled++;
		}
	}
	send_queued(run); /* what waited for the window */
}

static void tx_on_close(struct qb_agent *a, const char *why)
{
	struct push_run *run = qb_agent_user(a);
	fprintf(stderr, "qabench push: sender closed: %s\n", why ? why : "?");
	run->sender_dead = 1;
	if (!run->sender_ready) {
		run->exit_code = 1;
		event_base_loopbreak(run->base);
	}
}

static const struct qb_agent_cbs tx_cbs = {tx_on_welcome, tx_on_frame, tx_on_close};

static void sender_connect(struct push_run *run)
{
	struct qb_agent_conf c = {
	    .host = run->host,
	    .port = run->ports[0],
	    .tls = run->tls,
	    .agent_id = run->sender_id,
	    .token = "",
	    .primary = "",
	    .persist = 0,
	};
	run->sender = qb_agent_new(run->base, &c, &tx_cbs, run);
	if (!run->sender) {
		fprintf(stderr, "qabench push: cannot connect the sender\n");
		run->exit_code = 1;
		event_base_loopbreak(run->base);
	}
}

/* ---- results ---- */

static void finish(struct push_run *run)
{
	if (run->finished)
		return;
	run->finished = 1;
	int ran = 0;
	double capacity = 0;
	int capacity_open = 1; /* every step so far passed */
	for (int k = 0; k < run->n_steps && run->steps[k].t_settled; k++) {
		ran++;
		if (capacity_open && run->steps[k].pass)
			capacity = run->steps[k].rate;
		else
			capacity_open = 0;
	}
	uint64_t warm = 0, warm_lost = 0;
	for (int k = 0; k < ran; k++) {
		const struct step *s = &run->steps[k];
		warm += s->warm;
		for (uint64_t i = s->first; i < s->first + s->warm; i++)
			warm_lost += i < run->n_sent && run->msgs[i].delivered_us == 0;
	}
	struct figs all = {0};
	for (int k = 0; k < ran; k++)
		figs_add(run, &run->steps[k], &all);
	printf("{\"mode\":\"push\",\"tls\":%s,\"agents\":%u,\"rate\":%.0f,\"latency_from\":\"due\","
	       "\"warmup_msgs\":%llu,\"batch\":%d,\"window\":%d,\"uploads\":%llu,"
	       "\"max_msgs_per_upload\":%llu,\"unsent\":%llu,\"warmup_lost\":%llu,"
	       "\"pushes\":%llu,\"pushes_measured\":%llu,\"push_unattributed\":%llu,"
	       "\"deliver_frames\":%llu,\"fetches\":%llu,\"duplicates\":%llu,\"foreign\":%llu,"
	       "\"receivers_ready\":%u,\"receivers_failed\":%u,\"primary_hops\":%llu,"
	       "\"receiver_closes\":%llu,\"reassigns\":%llu,\"overloaded\":%llu,"
	       "\"steps_run\":%d,\"stop_p99_ms\":%.1f,\"stop_achieved\":%.3f,"
	       "\"capacity_msgs_per_s\":%.0f,",
	       run->tls ? "true" : "false", run->n_rx, run->steps[0].rate, (unsigned long long)warm,
	       run->batch, run->window, (unsigned long long)run->uploads,
	       (unsigned long long)run->max_in_upload,
	       (unsigned long long)(run->total - run->n_sent), (unsigned long long)warm_lost,
	       (unsigned long long)run->pushes, (unsigned long long)run->pushes_measured,
	       (unsigned long long)run->push_unattributed, (unsigned long long)run->delivers,
	       (unsigned long long)run->fetches, (unsigned long long)run->duplicates,
	       (unsigned long long)run->foreign, run->n_ready, run->n_failed_rx,
	       (unsigned long long)run->hops_total, (unsigned long long)run->receiver_closes,
	       (unsigned long long)run->reassigns, (unsigned long long)run->overloaded, ran,
	       run->stop_p99_ms, run->stop_achieved, capacity);
	figs_json(&all);
	int unsent = all.sent < all.measured;
	figs_free(&all);
	printf(",\"steps\":[");
	for (int k = 0; k < ran; k++) {
		const struct step *s = &run->steps[k];
		struct figs f = {0};
		figs_add(run, s, &f);
		printf("%s{\"rate\":%.0f,\"msgs\":%llu,\"warmup_msgs\":%llu,\"never_sent\":%llu,"
		       "\"pass\":%s,",
		       k ? "," : "", s->rate, (unsigned long long)s->count,
		       (unsigned long long)s->warm, (unsigned long long)s->abandoned,
		       s->pass ? "true" : "false");
		figs_json(&f);
		putchar('}');
		figs_free(&f);
	}
	printf("]}\n");
	fflush(stdout);
	if (run->sender_dead && unsent)
		run->exit_code = 1;
	event_base_loopbreak(run->base);
}

static void on_ready_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct push_run *run = arg;
	if (run->sender)
		return;
	fprintf(stderr, "qabench push: only %u of %u receivers on their primaries after %d s\n",
	        run->n_ready, run->n_rx, READY_TIMEOUT_S);
	run->exit_code = 1;
	event_base_loopbreak(run->base);
}

int qb_mode_push(const struct qb_opts *o)
{
	struct push_run run = {0};
	run.host = qb_opt(o, "host", "127.0.0.1");
	run.nports = qb_parse_ports(qb_opt(o, "ports", "2439,2440,2441"), run.ports, MAX_PORTS);
	long agents = qb_opt_int(o, "agents", 1000);
	double rate = qb_opt_double(o, "rate", 1000);
	const char *steps = qb_opt(o, "steps", NULL);
	double seconds = qb_opt_double(o, "seconds", 20);
	double warmup = qb_opt_double(o, "warmup", 2);
	run.gap_s = qb_opt_double(o, "gap", 0.5);
	run.stop_p99_ms = qb_opt_double(o, "stop-p99-ms", 0);
	run.stop_achieved = qb_opt_double(o, "stop-achieved", 0.99);
	run.marks = qb_opt_flag(o, "marks");
	run.batch = (int)qb_opt_int(o, "batch", QS_DEFAULT_MAX_BATCH);
	/* the schedule: --steps R1,R2,... or one step at --rate */
	double rates[MAX_STEPS];
	int n_rates = 0, bad_steps = 0;
	if (steps) {
		for (const char *p = steps; *p && !bad_steps;) {
			char *end;
			double v = strtod(p, &end);
			if (end == p || v <= 0 || n_rates == MAX_STEPS)
				bad_steps = 1;
			else
				rates[n_rates++] = v;
			p = *end == ',' ? end + 1 : end;
			if (*end && *end != ',')
				bad_steps = 1;
		}
	} else {
		rates[n_rates++] = rate;
	}
	run.window = (int)qb_opt_int(o, "window", 1);
	run.body_len = (int)qb_opt_int(o, "size", 16);
	run.parallel = (uint32_t)qb_opt_int(o, "parallel", 50);
	if (run.nports <= 0 || agents < 1 || agents > 1000000 || rate <= 0 || bad_steps ||
	    !n_rates || seconds <= 0 || warmup < 0 || run.gap_s < 0 || run.stop_achieved < 0 ||
	    run.batch < 1 || run.batch > QS_DEFAULT_MAX_BATCH || run.window < 0 ||
	    run.body_len < 8 || run.body_len > 1024 || run.parallel < 1) {
		fprintf(stderr, "qabench push: bad options (--ports P1,P2 --agents N --rate R | "
		                "--steps R1,R2,... --seconds S --warmup W --gap S --stop-p99-ms P "
		                "--stop-achieved F --batch 1..256 --window N --size 8..1024)\n");
		return 2;
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "qbpush-%lld-%d", (long long)gw_wall_ms(), (int)getpid());
	const char *pfx = qb_opt(o, "prefix", prefix);
	if (strlen(pfx) > 100) {
		fprintf(stderr, "qabench push: --prefix too long\n");
		return 2;
	}
	if (qb_opt_flag(o, "tls")) {
		run.tls = qb_tls_client_ctx(qb_opt(o, "ca", NULL));
		if (!run.tls) {
			fprintf(stderr, "qabench push: no TLS context\n");
			return 1;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	run.n_rx = (uint32_t)agents;
	run.n_steps = n_rates;
	for (int k = 0; k < n_rates; k++) {
		struct step *st = &run.steps[k];
		st->rate = rates[k];
		st->first = run.total;
		st->warm = (uint64_t)(warmup * rates[k]);
		st->count = st->warm + (uint64_t)(seconds * rates[k]);
		if (st->count <= st->warm)
			st->count = st->warm + 1;
		run.total += st->count;
	}
	run.rx = calloc(run.n_rx, sizeof(*run.rx));
	run.msgs = calloc(run.total ? run.total : 1, sizeof(*run.msgs));
	run.bodies = calloc((size_t)run.batch, (size_t)run.body_len);
	/* precise timers (timerfd): the sender's timer fires at each due time, not on
	 * the next millisecond */
	struct event_config *cfg = event_config_new();
	if (cfg) {
		event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
		run.base = event_base_new_with_config(cfg);
		event_config_free(cfg);
	}
	if (!run.rx || !run.msgs || !run.bodies || !run.base || run.total > UINT32_MAX) {
		fprintf(stderr, "qabench push: out of memory\n");
		return 1;
	}
	snprintf(run.sender_id, sizeof(run.sender_id), "%s-s", pfx);
	for (uint32_t i = 0; i < run.n_rx; i++) {
		struct rx *r = &run.rx[i];
		r->run = &run;
		r->idx = i;
		r->port = run.ports[0];
		r->cursor = i;
		snprintf(r->id, sizeof(r->id), "%s-r%u", pfx, i);
	}
	struct timeval second = {1, 0}, ready_to = {READY_TIMEOUT_S, 0};
	run.progress = event_new(run.base, -1, EV_PERSIST, on_progress, &run);
	struct event *rt = evtimer_new(run.base, on_ready_timeout, &run);
	if (!run.progress || !rt || event_add(run.progress, &second) != 0 ||
	    event_add(rt, &ready_to) != 0) {
		fprintf(stderr, "qabench push: no timers\n");
		return 1;
	}
	connect_more(&run);
	event_base_dispatch(run.base);

	for (uint32_t i = 0; i < run.n_rx; i++)
		if (run.rx[i].a)
			qb_agent_free(run.rx[i].a);
	if (run.sender)
		qb_agent_free(run.sender);
	if (run.tick)
		event_free(run.tick);
	event_free(run.progress);
	event_free(rt);
	event_base_free(run.base);
	if (run.tls)
		SSL_CTX_free(run.tls);
	free(run.rx);
	free(run.msgs);
	free(run.bodies);
	return run.finished ? run.exit_code : (run.exit_code ? run.exit_code : 1);
}
