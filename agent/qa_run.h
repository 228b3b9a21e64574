/* The persistent session of `run` (agent.md, -push connected): on a session
 * opened with PERSIST, one sync transaction, then a poll() loop that answers
 * the server's PING, PINGs every heartbeat_s and declares the connection dead
 * when no PONG comes within heartbeat_s, answers PUSH with PUSH_ACK and a
 * fetch, and watches the caller's time limit, message count and stop fd. What
 * happens is reported through an event callback (qaagent prints JSON lines).
 * A qa_run outlives its sessions: the failover issue puts the reconnect cycle
 * around qa_run_session in qa_agent_run. One thread owns a qa_run. */
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
};

enum qa_run_event_type {
	QA_RUN_EV_WELCOME,  /* a session began: welcome */
	QA_RUN_EV_PUSH,     /* a PUSH arrived, PUSH_ACK was written: push_id, pending */
	QA_RUN_EV_RECEIVED, /* a DELIVER was committed and acknowledged: the ids of its
	                       count new messages (not sent when count is 0) */
	QA_RUN_EV_ERROR,    /* the server sent ERROR: error (kind QA_FAIL_SERVER) */
	QA_RUN_EV_CLOSED,   /* the session ended: reason */
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
};

typedef void (*qa_run_event_fn)(void *ctx, const struct qa_run_event *ev);

struct qa_run_params {
	uint64_t for_ms;          /* end after this long from qa_run_init (0: no limit) */
	uint64_t count;           /* end once this many new messages arrived (0: no limit) */
	int stop_fd;              /* -1, or an fd that becomes readable to ask for a stop;
	                             only polled, never read */
	qa_run_event_fn on_event; /* NULL: no events */
	void *ctx;
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

/* Ends the session after qa_run_session: BYE when it ended without failure
 * (rc 0), then close; reports the ERROR (if e holds one) and closed. */
void qa_run_close(struct qa_run *r, struct qa_session *s, int rc, enum qa_run_end end,
                  const struct qa_error *e);

/* Reports an ERROR received outside a session (an answer to HELLO). */
void qa_run_report_error(struct qa_run *r, const struct qa_error *e);

/* "time limit reached", "count reached", ...: the closed reason of an end. */
const char *qa_run_end_reason(enum qa_run_end end);

#endif
