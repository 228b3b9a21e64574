/* qabench push (issue 7, scenario 2): push latency through qagw.
 *
 * N receiver agents hold PERSIST sessions on their primaries (router-assigned:
 * HELLO primary "" to the first port, then hop to the primary the WELCOME
 * names until on_primary is 1). One sender (its own session, not PERSIST)
 * sends round robin to the receivers at --rate msgs/s on an open-loop
 * schedule. Due messages go out at once while fewer than --window UPLOADs
 * await their ack; otherwise they queue and leave together (up to --batch per
 * UPLOAD) when the next ack comes back. The default (--window 1 --batch 64)
 * is how an agent uploads its queue, and is needed to reach 1,000 msgs/s:
 * qagw answers one session's UPLOADs one commit at a time, so one message per
 * UPLOAD (--window 0 --batch 1: strictly pipelined, never batched) tops out
 * at one commit latency per message. The time a message waits in the
 * sender's queue is reported apart (sender_queue). A receiver answers PUSH
 * with PUSH_ACK at once, then FETCHes, and DELIVER_ACKs what it gets.
 *
 * Measured per message (warmup excluded): UPLOAD send -> UPLOAD_ACK at the
 * sender, UPLOAD send -> PUSH at its recipient (a PUSH is attributed to the
 * recipient's oldest message neither pushed nor delivered yet), and UPLOAD
 * send -> the message in a DELIVER, matched by id. Message i goes to receiver
 * i % N, and its body carries i, so the id is checked against message i. */
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
	int64_t due_us;  /* its place in the schedule */
	int64_t sent_us; /* the UPLOAD carrying it was queued: latencies start here */
	int64_t acked_us, pushed_us, delivered_us;
	uint8_t result; /* UPLOAD_ACK result */
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
	double rate;
	int batch, body_len;
	uint64_t total, warm; /* messages to send; the first warm are the warmup */
	struct msg *msgs;
	uint8_t *bodies; /* batch x body_len: the bodies of the UPLOAD being encoded */
	uint64_t n_due, n_sent, n_acked, n_delivered; /* n_sent <= n_due: the queue between */
	int window;                                   /* most UPLOADs awaiting an ack; 0: any */
	uint64_t uploads, uploads_in_flight, max_in_upload;
	int64_t t_start, t_send_end;
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

static int parse_ports(const char *s, int *ports, int max)
{
	int n = 0;
	while (s && *s && n < max) {
		char *end;
		long p = strtol(s, &end, 10);
		if (end == s || p <= 0 || p > 65535)
			return -1;
		ports[n++] = (int)p;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return n;
}

/* The port of a WELCOME/REASSIGN stream, "tcpip(host=H;port=P)" or "tls(...)".
 * The host is not used: the bench connects to --host (numeric). */
static int stream_port(struct qs_str stream)
{
	char buf[512];
	size_t n = stream.len < sizeof(buf) - 1 ? stream.len : sizeof(buf) - 1;
	if (n) /* an empty str's ptr may be NULL */
		memcpy(buf, stream.ptr, n);
	buf[n] = 0;
	const char *p = strstr(buf, "port=");
	return p ? atoi(p + 5) : 0;
}

static int primary_port(struct qs_str primary, uint16_t n, const struct qs_server *servers)
{
	for (uint16_t i = 0; i < n; i++)
		if (servers[i].name.len == primary.len &&
		    memcmp(servers[i].name.ptr, primary.ptr, primary.len) == 0)
			return stream_port(servers[i].stream);
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
	struct qs_frame f = {.type = QS_FETCH};
	f.u.fetch.max_count = QS_DEFAULT_MAX_BATCH;
	f.u.fetch.max_bytes = 1u << 20;
	if (send_frame(r->a, &f) == 0) {
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
	uint64_t seqs[QS_DEFAULT_MAX_BATCH];
	uint16_t n = 0;
	run->delivers++;
	for (uint16_t i = 0; i < d->count; i++) {
		const struct qs_msg_in *m = &d->msgs[i];
		uint32_t magic = 0, idx = UINT32_MAX;
		if (m->body.len >= 8) {
			memcpy(&magic, m->body.ptr, 4);
			memcpy(&idx, m->body.ptr + 4, 4);
		}
		if (magic == BODY_MAGIC && idx < run->n_sent && idx % run->n_rx == r->idx &&
		    memcmp(run->msgs[idx].id, m->id, 16) == 0) {
			struct msg *msg = &run->msgs[idx];
			if (msg->delivered_us) {
				run->duplicates++;
			} else {
				msg->delivered_us = now;
				run->n_delivered++;
			}
		} else {
			run->foreign++; /* an earlier run's message to the same id */
		}
		if (n < QS_DEFAULT_MAX_BATCH)
			seqs[n++] = m->seq;
	}
	if (n) {
		struct qs_frame ack = {.type = QS_DELIVER_ACK};
		ack.u.deliver_ack.count = n;
		ack.u.deliver_ack.seqs = seqs;
		send_frame(r->a, &ack);
	}
	r->fetching = 0;
	if (d->more || r->refetch)
		rx_fetch(r);
}

static void rx_on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	struct rx *r = qb_agent_user(a);
	struct push_run *run = r->run;
	int64_t now = qb_now_us();
	if (a != r->a || r->state != RX_READY)
		return; /* an abandoned agent, freed soon */
	switch (f->type) {
	case QS_PUSH: {
		struct qs_frame ack = {.type = QS_PUSH_ACK};
		ack.u.push_id = f->u.push.push_id;
		send_frame(a, &ack);
		run->pushes++;
		if (run->t_start && now >= run->t_start + (int64_t)(run->warm * 1e6 / run->rate))
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

/* Message i is due at t_start + i / rate (open loop: the schedule, not the
 * acks, sets the pace). Due messages go out at once, up to --batch per
 * UPLOAD, while fewer than --window UPLOADs await their ack (0: no limit);
 * beyond that they wait in the sender's queue, and the next UPLOAD_ACK sends
 * them. Message i goes to receiver i % N; its body starts with BODY_MAGIC and
 * i; an UPLOAD's batch number is its first message's index, so an UPLOAD_ACK
 * maps back without a table. */
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
		int64_t t = qb_now_us();
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
	if (run->n_sent == run->total && !run->t_send_end)
		run->t_send_end = qb_now_us();
}

static void send_due(struct push_run *run, int64_t now)
{
	uint64_t due = (uint64_t)((double)(now - run->t_start) * run->rate / 1e6) + 1;
	if (due > run->total)
		due = run->total;
	for (; run->n_due < due; run->n_due++)
		run->msgs[run->n_due].due_us =
		    run->t_start + (int64_t)((double)run->n_due * 1e6 / run->rate);
	send_queued(run);
}

static int all_settled(const struct push_run *run)
{
	return run->n_sent == run->total && run->n_acked == run->total &&
	       run->n_delivered == run->total;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct push_run *run = arg;
	int64_t now = qb_now_us();
	if (run->n_sent < run->total && !run->sender_dead) {
		send_due(run, now);
		return;
	}
	if (!run->t_send_end)
		run->t_send_end = now;
	if (all_settled(run) || now - run->t_send_end >= LINGER_US || run->sender_dead)
		finish(run);
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
	run->t_start = qb_now_us();
	fprintf(stderr, "qabench push: sender on %.*s, sending %llu messages at %.0f/s\n",
	        (int)w->server.len, w->server.ptr, (unsigned long long)run->total, run->rate);
	struct timeval ms = {0, 1000};
	run->tick = event_new(run->base, -1, EV_PERSIST, on_tick, run);
	if (!run->tick || event_add(run->tick, &ms) != 0) {
		fprintf(stderr, "qabench push: no timer\n");
		run->exit_code = 1;
		event_base_loopbreak(run->base);
	}
}

static void tx_on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	struct push_run *run = qb_agent_user(a);
	if (f->type != QS_UPLOAD_ACK)
		return;
	int64_t now = qb_now_us();
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
		if (m->result != QS_R_STORED) {
			run->rejected++;
			m->delivered_us = -1; /* never coming: not lost, rejected */
			run->n_delivered++;
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
	struct qb_lat ack = {0}, push = {0}, deliver = {0}, queue = {0};
	uint64_t sent = 0, delivered = 0, lost = 0, pushed = 0, no_push = 0;
	uint64_t warm_lost = 0;
	for (uint64_t i = 0; i < run->n_sent; i++) {
		const struct msg *m = &run->msgs[i];
		int measured = i >= run->warm;
		if (!measured) {
			warm_lost += m->delivered_us == 0;
			continue;
		}
		sent++;
		qb_lat_add(&queue, m->sent_us - m->due_us);
		if (m->acked_us)
			qb_lat_add(&ack, m->acked_us - m->sent_us);
		if (m->result != QS_R_STORED && m->acked_us)
			continue; /* rejected: counted apart */
		if (m->pushed_us) {
			pushed++;
			qb_lat_add(&push, m->pushed_us - m->sent_us);
		}
		if (m->delivered_us > 0) {
			delivered++;
			qb_lat_add(&deliver, m->delivered_us - m->sent_us);
			no_push += !m->pushed_us;
		} else {
			lost++;
		}
	}
	double secs = (double)(run->t_send_end - run->t_start) / 1e6;
	printf("{\"mode\":\"push\",\"tls\":%s,\"agents\":%u,\"rate\":%.0f,\"send_seconds\":%.3f,"
	       "\"warmup_msgs\":%llu,\"batch\":%d,\"window\":%d,\"uploads\":%llu,"
	       "\"max_msgs_per_upload\":%llu,"
	       "\"sent\":%llu,\"delivered\":%llu,\"lost\":%llu,\"rejected\":%llu,"
	       "\"unacked\":%llu,\"unsent\":%llu,\"warmup_lost\":%llu,"
	       "\"pushes\":%llu,\"pushes_measured\":%llu,\"pushed_msgs\":%llu,"
	       "\"delivered_without_own_push\":%llu,\"push_unattributed\":%llu,"
	       "\"deliver_frames\":%llu,\"fetches\":%llu,\"duplicates\":%llu,\"foreign\":%llu,"
	       "\"receivers_ready\":%u,\"receivers_failed\":%u,\"primary_hops\":%llu,"
	       "\"receiver_closes\":%llu,\"reassigns\":%llu,\"overloaded\":%llu,",
	       run->tls ? "true" : "false", run->n_rx, run->rate, secs,
	       (unsigned long long)run->warm, run->batch, run->window,
	       (unsigned long long)run->uploads, (unsigned long long)run->max_in_upload,
	       (unsigned long long)sent, (unsigned long long)delivered, (unsigned long long)lost,
	       (unsigned long long)run->rejected, (unsigned long long)(run->n_sent - run->n_acked),
	       (unsigned long long)(run->total - run->n_sent), (unsigned long long)warm_lost,
	       (unsigned long long)run->pushes, (unsigned long long)run->pushes_measured,
	       (unsigned long long)pushed, (unsigned long long)no_push,
	       (unsigned long long)run->push_unattributed, (unsigned long long)run->delivers,
	       (unsigned long long)run->fetches, (unsigned long long)run->duplicates,
	       (unsigned long long)run->foreign, run->n_ready, run->n_failed_rx,
	       (unsigned long long)run->hops_total, (unsigned long long)run->receiver_closes,
	       (unsigned long long)run->reassigns, (unsigned long long)run->overloaded);
	qb_lat_json(stdout, "upload_to_push", &push);
	putchar(',');
	qb_lat_json(stdout, "upload_to_deliver", &deliver);
	putchar(',');
	qb_lat_json(stdout, "upload_ack", &ack);
	putchar(',');
	qb_lat_json(stdout, "sender_queue", &queue);
	printf("}\n");
	fflush(stdout);
	qb_lat_free(&ack);
	qb_lat_free(&push);
	qb_lat_free(&deliver);
	qb_lat_free(&queue);
	if (run->sender_dead && run->n_sent < run->total)
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
	run.nports = parse_ports(qb_opt(o, "ports", "2439,2440,2441"), run.ports, MAX_PORTS);
	long agents = qb_opt_int(o, "agents", 1000);
	run.rate = qb_opt_double(o, "rate", 1000);
	double seconds = qb_opt_double(o, "seconds", 20);
	double warmup = qb_opt_double(o, "warmup", 2);
	run.batch = (int)qb_opt_int(o, "batch", 64);
	run.window = (int)qb_opt_int(o, "window", 1);
	run.body_len = (int)qb_opt_int(o, "size", 16);
	run.parallel = (uint32_t)qb_opt_int(o, "parallel", 50);
	if (run.nports <= 0 || agents < 1 || agents > 1000000 || run.rate <= 0 || seconds <= 0 ||
	    warmup < 0 || run.batch < 1 || run.batch > QS_DEFAULT_MAX_BATCH || run.window < 0 ||
	    run.body_len < 8 || run.body_len > 1024 || run.parallel < 1) {
		fprintf(stderr,
		        "qabench push: bad options (--ports P1,P2 --agents N --rate R "
		        "--seconds S --warmup W --batch 1..256 --window N --size 8..1024)\n");
		return 2;
	}
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "qbpush-%lld-%d", (long long)qb_wall_ms(), (int)getpid());
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
	run.warm = (uint64_t)(warmup * run.rate);
	run.total = run.warm + (uint64_t)(seconds * run.rate);
	run.rx = calloc(run.n_rx, sizeof(*run.rx));
	run.msgs = calloc(run.total ? run.total : 1, sizeof(*run.msgs));
	run.bodies = calloc((size_t)run.batch, (size_t)run.body_len);
	run.base = event_base_new();
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
