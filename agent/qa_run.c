/* The persistent session of `run`: see qa_run.h. Everything happens on one
 * thread: the loop polls the connection and the stop fd with a timeout that
 * is the nearest of the heartbeat and the time limit; the exchanges a PUSH
 * starts (fetch, upload, PING/PONG) are the blocking ones of qa_sync, whose
 * waits also watch the stop fd. */
#include "agent/qa_run.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "agent/qa_sync.h"
#include "common/clock.h"

static void emit(struct qa_run *r, struct qa_run_event *ev)
{
	ev->ts_ms = (uint64_t)gw_wall_ms();
	if (r->p.on_event != NULL)
		r->p.on_event(r->p.ctx, ev);
}

/* qa_session's PUSH hook: the PUSH_ACK is already written. */
static void on_push(void *ctx, uint64_t push_id, uint32_t pending)
{
	struct qa_run_event ev = {.type = QA_RUN_EV_PUSH, .push_id = push_id, .pending = pending};
	emit(ctx, &ev);
}

/* qa_sync's hook: a DELIVER is committed and its DELIVER_ACK written. */
static void on_delivered(void *ctx, const uint8_t (*ids)[16], size_t n)
{
	struct qa_run *r = ctx;
	r->received += n;
	if (n == 0)
		return;
	struct qa_run_event ev = {.type = QA_RUN_EV_RECEIVED, .count = n, .ids = ids};
	emit(r, &ev);
}

void qa_run_init(struct qa_run *r, const struct qa_run_params *p, struct qa_store *st,
                 const struct qa_log *log)
{
	memset(r, 0, sizeof *r);
	r->p = *p;
	r->st = st;
	r->log = log;
	if (p->for_ms > 0)
		r->deadline_ms = gw_mono_ms() + p->for_ms;
}

const char *qa_run_end_reason(enum qa_run_end end)
{
	switch (end) {
	case QA_RUN_END_TIME:
		return "time limit reached";
	case QA_RUN_END_COUNT:
		return "count reached";
	case QA_RUN_END_STOP:
		return "stopped";
	case QA_RUN_END_REASSIGN:
		return "reassigned";
	case QA_RUN_END_PROBE:
		return "trying the primary";
	case QA_RUN_END_FAILBACK:
		return "back to the primary";
	case QA_RUN_END_DONE:
		return "transmission done";
	default:
		return "ended";
	}
}

/* A complete transmission happened: `status` shows its time. */
static int mark_synced(struct qa_run *r, struct qa_error *e)
{
	char now[24];
	snprintf(now, sizeof now, "%" PRId64, gw_wall_ms());
	return qa_store_meta_set(r->st, "last_sync_ms", now, e);
}

/* The answer to the PUSHes read since the last FETCH (their PUSH_ACKs are
 * written): fetch, upload, STATUS, PING/PONG (qa_sync_after_push). A PUSH
 * that arrives meanwhile is acknowledged at once and, if it came after the
 * last FETCH, answered by another round from the loop. */
static int push_round(struct qa_run *r, struct qa_session *s, struct qa_error *e)
{
	const struct qa_sync_hooks hooks = {on_delivered, r};
	struct qa_sync_result res;
	if (qa_sync_after_push(s, r->st, &hooks, &res, e) != 0)
		return -1;
	QA_DEBUG(r->log, "push answered: %lu received, %lu uploaded", res.received,
	         res.uploaded[0] + res.uploaded[1]);
	return mark_synced(r, e);
}

/* A transmission per -policy (the sync transaction on the open session):
 * upload the outbox, send queued STATUS reports, fetch, PING/PONG. The queue
 * mark is read first, so that anything queued during it is seen as new at
 * the next look and transmitted then. */
static int transmit(struct qa_run *r, struct qa_session *s, const char *why, struct qa_error *e)
{
	uint64_t mark;
	if (qa_store_queue_mark(r->st, &mark, e) != 0)
		return -1;
	const struct qa_sync_hooks hooks = {on_delivered, r};
	struct qa_sync_result res;
	if (qa_sync_run(s, r->st, &hooks, &res, e) != 0)
		return -1;
	r->queue_mark = mark;
	QA_DEBUG(r->log, "transmission (%s): %lu uploaded, %lu received", why,
	         res.uploaded[0] + res.uploaded[1], res.received);
	return mark_synced(r, e);
}

/* -policy automatic: something new in the outbox or the status queue? */
static int queue_grew(struct qa_run *r, int *grew, struct qa_error *e)
{
	uint64_t mark;
	*grew = 0;
	if (qa_store_queue_mark(r->st, &mark, e) != 0)
		return -1;
	*grew = mark > r->queue_mark;
	return 0;
}

/* The heartbeat (protocol.md PING/PONG): one PING every heartbeat_s, and no
 * PONG within heartbeat_s means the connection is dead. PINGs are spaced from
 * the previous one, so at most one is ever awaiting its PONG. */
static int heartbeat(struct qa_run *r, struct qa_session *s, uint64_t hb_ms, uint64_t now,
                     struct qa_error *e)
{
	if (s->hb_nonce == 0)
		r->pong_due_ms = 0; /* answered (qa_session took the PONG) */
	if (r->pong_due_ms != 0 && now >= r->pong_due_ms)
		return qa_error_set(e, QA_FAIL_IO, "no PONG from %s within %" PRIu64 " ms: %s",
		                    s->welcome.server, hb_ms, "connection dead");
	if (r->pong_due_ms != 0 || now < r->next_ping_ms)
		return 0;
	struct qs_frame f = {.type = QS_PING};
	f.u.nonce = s->next_nonce++;
	if (qa_session_send(s, &f, e) != 0)
		return -1;
	s->hb_nonce = f.u.nonce;
	r->pong_due_ms = now + hb_ms;
	r->next_ping_ms = now + hb_ms;
	return 0;
}

/* How long poll may sleep: until the nearest deadline, -1 for none. */
static int poll_timeout(const struct qa_run *r, uint64_t hb_ms, uint64_t now)
{
	uint64_t wake = UINT64_MAX;
	if (r->deadline_ms != 0)
		wake = r->deadline_ms;
	if (hb_ms != 0) {
		uint64_t hb = r->pong_due_ms != 0 ? r->pong_due_ms : r->next_ping_ms;
		if (hb < wake)
			wake = hb;
	}
	if (r->probe_at_ms != 0 && r->probe_at_ms < wake)
		wake = r->probe_at_ms;
	if (r->p.outbox_poll_ms != 0 && r->next_queue_check_ms < wake)
		wake = r->next_queue_check_ms;
	if (r->p.schedule_ms != 0 && r->next_schedule_ms < wake)
		wake = r->next_schedule_ms;
	if (wake == UINT64_MAX)
		return -1;
	if (wake <= now)
		return 0;
	return wake - now > INT_MAX ? INT_MAX : (int)(wake - now);
}

static int loop(struct qa_run *r, struct qa_session *s, enum qa_run_end *end, struct qa_error *e)
{
	const uint64_t hb_ms = (uint64_t)s->welcome.heartbeat_s * 1000u;
	for (;;) {
		uint64_t now = gw_mono_ms();
		if (r->p.count != 0 && r->received >= r->p.count) {
			*end = QA_RUN_END_COUNT;
			return 0;
		}
		if (s->reassigned) {
			*end = QA_RUN_END_REASSIGN;
			return 0;
		}
		if (r->deadline_ms != 0 && now >= r->deadline_ms) {
			*end = QA_RUN_END_TIME;
			return 0;
		}
		if (s->pushes_seen > s->pushes_fetched) {
			if (push_round(r, s, e) != 0)
				return -1;
			continue;
		}
		if (r->probe_at_ms != 0 && now >= r->probe_at_ms) {
			*end = QA_RUN_END_PROBE;
			return 0;
		}
		if (r->p.schedule_ms != 0 && now >= r->next_schedule_ms) {
			r->next_schedule_ms = now + r->p.schedule_ms;
			if (transmit(r, s, "scheduled", e) != 0)
				return -1;
			continue;
		}
		if (r->p.outbox_poll_ms != 0 && now >= r->next_queue_check_ms) {
			int grew;
			r->next_queue_check_ms = now + r->p.outbox_poll_ms;
			if (queue_grew(r, &grew, e) != 0)
				return -1;
			if (grew) {
				if (transmit(r, s, "queued", e) != 0)
					return -1;
				continue;
			}
		}
		if (hb_ms != 0 && heartbeat(r, s, hb_ms, now, e) != 0)
			return -1;

		/* TLS may hold decrypted frames that poll cannot see. */
		if (qa_conn_pending(&s->conn)) {
			if (qa_session_poll(s, e) != 0)
				return -1;
			continue;
		}
		struct pollfd p[2] = {{.fd = s->conn.fd, .events = POLLIN},
		                      {.fd = r->p.stop_fd, .events = POLLIN}};
		const nfds_t n = r->p.stop_fd >= 0 ? 2 : 1;
		int rc = poll(p, n, poll_timeout(r, hb_ms, now));
		if (rc < 0 && errno != EINTR)
			return qa_error_set(e, QA_FAIL_SYSTEM, "poll: %s", strerror(errno));
		if (rc <= 0)
			continue; /* a deadline, or a signal not routed to stop_fd */
		if (n == 2 && p[1].revents != 0) {
			*end = QA_RUN_END_STOP;
			return 0;
		}
		if (p[0].revents != 0 && qa_session_poll(s, e) != 0)
			return -1;
	}
}

enum qa_run_end qa_run_stopped(const struct qa_run *r)
{
	if (r->deadline_ms != 0 && (uint64_t)gw_mono_ms() >= r->deadline_ms)
		return QA_RUN_END_TIME;
	return QA_RUN_END_STOP;
}

void qa_run_prepare(const struct qa_run *r, struct qa_session *s)
{
	s->conn.cancel_fd = r->p.stop_fd;
	s->conn.stop_at_ms = r->deadline_ms;
}

static int finish(struct qa_run *r, int rc, enum qa_run_end *end, struct qa_error *e);

int qa_run_session(struct qa_run *r, struct qa_session *s, enum qa_run_end *end, struct qa_error *e)
{
	*end = QA_RUN_END_NONE;
	s->on_push = on_push;
	s->on_push_ctx = r;
	qa_run_prepare(r, s);
	/* No answer within heartbeat_s means a dead connection (protocol.md),
	 * for the PONGs of the exchanges a PUSH starts as for the heartbeat's;
	 * never longer than the sync's 30 s. */
	const uint64_t hb_ms = (uint64_t)s->welcome.heartbeat_s * 1000u;
	if (hb_ms != 0 && hb_ms < QA_RESPONSE_TIMEOUT_MS)
		s->response_timeout_ms = (int)hb_ms;
	struct qa_run_event ev = {.type = QA_RUN_EV_WELCOME, .welcome = &s->welcome};
	emit(r, &ev);

	/* The heartbeat starts with the session; a resumed loop keeps it. */
	const uint64_t now = gw_mono_ms();
	r->next_ping_ms = now + hb_ms;
	r->pong_due_ms = 0;
	s->hb_nonce = 0;
	r->next_queue_check_ms = now + r->p.outbox_poll_ms;
	if (r->p.schedule_ms != 0)
		r->next_schedule_ms = now + r->p.schedule_ms;
	/* Every session starts with a transmission: what was queued while no
	 * session was up goes out, what waited for us comes in. */
	int rc = transmit(r, s, "session start", e);
	if (rc == 0)
		rc = loop(r, s, end, e);
	return finish(r, rc, end, e);
}

int qa_run_transmit_once(struct qa_run *r, struct qa_session *s, uint64_t *mark, struct qa_error *e)
{
	qa_run_prepare(r, s);
	struct qa_run_event ev = {.type = QA_RUN_EV_WELCOME, .welcome = &s->welcome};
	emit(r, &ev);
	if (transmit(r, s, "-push none", e) != 0)
		return -1;
	*mark = r->queue_mark;
	return 0;
}

int qa_run_resume(struct qa_run *r, struct qa_session *s, enum qa_run_end *end, struct qa_error *e)
{
	*end = QA_RUN_END_NONE;
	return finish(r, loop(r, s, end, e), end, e);
}

static int finish(struct qa_run *r, int rc, enum qa_run_end *end, struct qa_error *e)
{
	if (rc != 0 && e != NULL && e->kind == QA_FAIL_STOPPED) {
		/* Stopped (or out of time) in the middle of an exchange: what is
		 * committed stays committed, the rest is redelivered or re-sent
		 * next time. */
		*end = qa_run_stopped(r);
		rc = 0;
	}
	return rc;
}

void qa_run_report_unreachable(struct qa_run *r, const char *reason, uint64_t retry_ms)
{
	struct qa_run_event ev = {
	    .type = QA_RUN_EV_UNREACHABLE, .reason = reason, .retry_ms = retry_ms};
	emit(r, &ev);
}

void qa_run_report_error(struct qa_run *r, const struct qa_error *e)
{
	struct qa_run_event ev = {.type = QA_RUN_EV_ERROR, .error = e};
	emit(r, &ev);
}

void qa_run_close(struct qa_run *r, struct qa_session *s, int rc, enum qa_run_end end,
                  const struct qa_error *e)
{
	if (rc != 0 && e != NULL && e->kind == QA_FAIL_SERVER)
		qa_run_report_error(r, e);
	/* After a failure the connection is gone, or the server closes it (ERROR),
	 * or it broke the protocol: no BYE then. */
	qa_session_close(s, rc == 0);
	s->on_push = NULL;
	struct qa_run_event ev = {
	    .type = QA_RUN_EV_CLOSED,
	    .reason = rc == 0 || e == NULL ? qa_run_end_reason(end) : e->msg,
	};
	emit(r, &ev);
}
