/* The persistent session of `run` (agent.md, -push connected): on a session
 * opened with PERSIST, one sync transaction, then a poll() loop that answers
 * the server's PING, PINGs every heartbeat_s and declares the connection dead
 * when no PONG comes within heartbeat_s, answers PUSH with PUSH_ACK and a
 * fetch, and watches the caller's time limit, message count and stop fd. What
 * happens is reported through an event callback (qaagent prints JSON lines).
 * It also transmits per -policy (when the client store's queues grow, or on
 * a schedule) and returns when the caller's time to try the primary again
 * (probe_at_ms) comes. A qa_run outlives its sessions: qa_agent_run puts the
 * connection cycles, the backoff and the return to the primary around
 * qa_run_session / qa_run_resume. One thread owns a qa_run. */
#ifndef QA_RUN_H
#define QA_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "agent/qa_error.h"
#include "agent/qa_log.h"
#include "agent/qa_session.h"
#include "agent/qa_store.h"

/* Why a run ended without a failure. */
enum qa_run_end {
	QA_RUN_END_NONE = 0, /* not ended (or ended by a failure: see the qa_error) */
	QA_RUN_END_TIME,     /* the time limit (for_ms) passed */
	QA_RUN_END_COUNT,    /* count new messages were received */
	QA_RUN_END_STOP,     /* stop_fd became readable (SIGTERM, SIGINT) */
	QA_RUN_END_REASSIGN, /* the server sent REASSIGN; its list is in the session */
	QA_RUN_END_PROBE,    /* probe_at_ms came: time to try the primary again; the
	                        session is intact and qa_run_resume goes on with it */
	QA_RUN_END_FAILBACK, /* (closing reason) the primary answered: this session on
	                        an alternate is left for the new one */
	QA_RUN_END_DONE,     /* (closing reason, -push none) the transmission is done */
};

enum qa_run_event_type {
	QA_RUN_EV_WELCOME,     /* a session began: welcome */
	QA_RUN_EV_PUSH,        /* a PUSH arrived, PUSH_ACK was written: push_id, pending */
	QA_RUN_EV_RECEIVED,    /* a DELIVER was committed and acknowledged: the ids of its
	                          count new messages (not sent when count is 0) */
	QA_RUN_EV_ERROR,       /* the server sent ERROR: error (kind QA_FAIL_SERVER) */
	QA_RUN_EV_CLOSED,      /* the session ended: reason */
	QA_RUN_EV_UNREACHABLE, /* a cycle failed on every server: reason (the summary),
	                          retry_ms (the wait before the next cycle) */
};

/* One event. The pointers are valid during the callback only. */
struct qa_run_event {
	enum qa_run_event_type type;
	uint64_t ts_ms; /* wall clock, unix epoch ms */
	const struct qa_welcome_info *welcome;
	uint64_t push_id;
	uint32_t pending;
	size_t count;
	const uint8_t (*ids)[16];
	const struct qa_error *error;
	const char *reason;
	uint64_t retry_ms;
};

typedef void (*qa_run_event_fn)(void *ctx, const struct qa_run_event *ev);

struct qa_run_params {
	uint64_t for_ms;          /* end after this long from qa_run_init (0: no limit) */
	uint64_t count;           /* end once this many new messages arrived (0: no limit) */
	int stop_fd;              /* -1, or an fd that becomes readable to ask for a stop;
	                             only polled, never read */
	qa_run_event_fn on_event; /* NULL: no events */
	void *ctx;
	/* -policy: outbox_poll_ms > 0 (automatic) transmits when something new
	 * is queued in the client store, looked at that often; schedule_ms > 0
	 * (scheduled) transmits that often. Both 0 (ondemand): only on PUSH and
	 * at the start of a session. */
	uint64_t outbox_poll_ms;
	uint64_t schedule_ms;
};

struct qa_run {
	struct qa_run_params p;
	struct qa_store *st; /* borrowed */
	const struct qa_log *log;
	uint64_t deadline_ms; /* monotonic ms; 0: none */
	uint64_t received;    /* new messages stored since qa_run_init */
	/* The heartbeat of the current session, in monotonic ms. The nonce of
	 * the PING awaiting its PONG is the session's hb_nonce. */
	uint64_t next_ping_ms;
	uint64_t pong_due_ms; /* 0: no PING awaiting its PONG */
	/* Set by the caller: when to return QA_RUN_END_PROBE (monotonic ms, 0:
	 * never). qa_agent_run sets it while the session is on an alternate. */
	uint64_t probe_at_ms;
	uint64_t next_queue_check_ms; /* outbox_poll_ms: the next look at the queues */
	uint64_t queue_mark;          /* qa_store_queue_mark at the last transmission */
	uint64_t next_schedule_ms;    /* schedule_ms: the next scheduled transmission */
};

void qa_run_init(struct qa_run *r, const struct qa_run_params *p, struct qa_store *st,
                 const struct qa_log *log);

/* Makes s's waits end on the run's stop fd and time limit. Call it before the
 * connection cycle, so that a stop or the time limit ends connecting too. */
void qa_run_prepare(const struct qa_run *r, struct qa_session *s);

/* What a QA_FAIL_STOPPED means for this run: the time limit passed
 * (QA_RUN_END_TIME) or a stop was asked for (QA_RUN_END_STOP). */
enum qa_run_end qa_run_stopped(const struct qa_run *r);

/* Runs one session on s, which has just received WELCOME (from a HELLO with
 * PERSIST): reports it, runs the sync transaction, then loops until an end
 * (returns 0 and *end) or a failure (-1 and e: connection lost or silent,
 * ERROR from the server, a malformed frame, the client store failed). A stop
 * or the time limit in the middle of an exchange ends it there. While the
 * session runs, a response not received within heartbeat_s (at most 30 s)
 * fails it. The session stays open: qa_run_close ends it. */
int qa_run_session(struct qa_run *r, struct qa_session *s, enum qa_run_end *end, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Goes on with the loop of a session that qa_run_session (or an earlier
 * qa_run_resume) left with QA_RUN_END_PROBE; the same returns. */
int qa_run_resume(struct qa_run *r, struct qa_session *s, enum qa_run_end *end, struct qa_error *e)
    __attribute__((warn_unused_result));

/* -push none: one transmission on s (a session without PERSIST that just
 * got WELCOME): reports welcome, runs the sync transaction (received events
 * as in a persistent session); the caller closes with qa_run_close and
 * QA_RUN_END_DONE. *mark is the client store's queue mark taken before. */
int qa_run_transmit_once(struct qa_run *r, struct qa_session *s, uint64_t *mark, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Reports that a cycle failed on every server (reason) and the wait before
 * the next one. */
void qa_run_report_unreachable(struct qa_run *r, const char *reason, uint64_t retry_ms);

/* Ends the session after qa_run_session: BYE when it ended without failure
 * (rc 0), then close; reports the ERROR (if e holds one) and closed. */
void qa_run_close(struct qa_run *r, struct qa_session *s, int rc, enum qa_run_end end,
                  const struct qa_error *e);

/* Reports an ERROR received outside a session (an answer to HELLO). */
void qa_run_report_error(struct qa_run *r, const struct qa_error *e);

/* "time limit reached", "count reached", ...: the closed reason of an end. */
const char *qa_run_end_reason(enum qa_run_end end);

#endif
