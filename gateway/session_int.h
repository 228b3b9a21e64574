/* The session's own view of itself: struct gw_session, its state machine's
 * states and the worker's session table. Seen only by the files that make up
 * the session: session.c (state machine, table), requests.c (what each
 * request does) and push.c (PUSH on the session). Everyone else goes through
 * session.h. */
#ifndef GW_SESSION_INT_H
#define GW_SESSION_INT_H

#include "gateway/session.h"
#include "proto/qs_codec.h"

#include <stdint.h>
#include <sys/queue.h>
#include <uthash.h>

struct bufferevent;
struct event;
struct st_op;
struct gw_upload;

enum gw_session_state {
	GW_S_TLS_HANDSHAKE, /* accepted on a TLS worker; handshake deadline armed */
	GW_S_AWAIT_HELLO,   /* accepted (and TLS done); no HELLO yet; the hello deadline is armed */
	GW_S_WELCOMING,     /* HELLO read; the store checks the token, registers the agent
	                     * (still counted as not welcomed: pending-HELLO caps) */
	GW_S_READY,         /* WELCOME sent; the next request may be read */
	GW_S_BUSY,          /* a request's store statement is in flight; later requests wait
	                     * (but an UPLOAD after UPLOADs: see GW_UPLOAD_PIPELINE) */
	GW_S_CLOSING,       /* ERROR (or BYE) handled: flushing output, then freed; reads nothing */
};

struct gw_session {
	TAILQ_ENTRY(gw_session) link;
	struct gw_worker *w;
	struct bufferevent *bev;
	enum gw_session_state state;
	/* Flags (0 or 1), together: an idle session's size is per-session memory. */
	uint8_t on_primary;
	uint8_t persist;
	uint8_t peer_eof;          /* the agent half-closed: finish what was read, then close */
	uint8_t in_agent_map;      /* in the table's by_agent */
	uint8_t gauged_unresolved; /* counted in qagw_sessions_unresolved_primary */
	uint8_t gauged;            /* counted in w->gauges (WELCOME written) */
	uint8_t awaiting_reassign; /* draining here: REASSIGN, not ERROR draining, is coming */
	uint8_t reaping;           /* freed on the next loop turn (reap) */
	struct event *timer;       /* hello deadline, then close grace (NULL while welcomed) */
	char peer[64];
	char agent[121];          /* set at HELLO */
	char *primary_sent;       /* the HELLO primary as sent (gw_session_empty if none) */
	char primary[65];         /* resolved worker name, "" if unresolved */
	int64_t clock_shift_ms;   /* server clock at HELLO - agent's now_ms */
	uint8_t token_sha256[32]; /* of the HELLO token: the token itself is never kept */
	uint64_t id;              /* holds delivered messages in the store (held_by) */
	int64_t since_ms;
	struct st_op *op;   /* the in-flight store statement, if any (not an UPLOAD's) */
	uint64_t ack_group; /* op is a DELIVER_ACK in this acks group (st_group_filling); 0: not */
	struct gw_upload *up_head; /* UPLOADs read, not answered: a list in request order */
	int n_uploads;
	uint32_t
	    up_bytes; /* their frames' lengths: at most max_frame in all (GW_UPLOAD_PIPELINE) */
	int64_t req_bytes; /* the in-flight FETCH's max_bytes (asked again past an unreceivable) */
	int64_t *held;     /* delivered here, not acknowledged: sorted seqs (requests.c) */
	uint8_t *held_counted; /* the store counted that delivery already */
	int n_held, cap_held;
	int pending_error;  /* ERROR to send once the in-flight request is answered */
	int req_count;      /* entries of the in-flight DELIVER_ACK or STATUS; FETCH's max_count */
	char *pending_text; /* its text (malloc'd) */

	/* Pool registration (docs/design.md "Redis"). */
	UT_hash_handle hh;        /* in the table's by_agent from HELLO on: one session per agent */
	struct gw_ip_count *ipc;  /* until WELCOME is written: this source address's count */
	uint64_t epoch;           /* this live session's epoch in Redis; 0 if not registered */
	struct gw_ticket *ticket; /* Redis claim in flight (its s is cleared if we go first) */
	struct qs_buf welcome;    /* encoded WELCOME, written once the claim is done */
	struct gw_known_worker *known; /* HELLO to WELCOME: the workers the store knows */
	int n_known;
	struct event *reassign_timer; /* REASSIGN sent: closed 5 s later */
	char *reassign_to; /* a move that came before WELCOME: REASSIGN after it (malloc'd) */
	int64_t pending_at_hello; /* pending messages when the store answered HELLO */

	/* Push (protocol.md PUSH/PUSH_ACK). */
	uint64_t push_seq;         /* last push_id used on this session */
	uint64_t push_out_id;      /* PUSH awaiting its PUSH_ACK (0: none) */
	int64_t push_commit_ms;    /* commit time of the message that raised it */
	int64_t coalesce_until_ms; /* further pushes coalesce until then (gw_mono_ms; 0: not) */
	int deferred_n;            /* pushes that arrived before WELCOME was written */
	int64_t deferred_commit_ms;
};

/* UPLOADs of one session in flight at once (protocol.md "Transport and
 * ordering": a client may pipeline). An UPLOAD read while the session's
 * earlier UPLOADs wait for their commit goes to the store at once, behind
 * them (the worker's upload groups keep their order, so its rows get later
 * seqs); UPLOAD_ACKs go out in request order, each once its commit is
 * durable. Any other request waits until every UPLOAD before it is
 * answered. Besides the count, the frames in flight together stay within
 * max_frame (a first UPLOAD of any size is taken, as without pipelining):
 * what one session can make a worker hold is what it was without it. */
#define GW_UPLOAD_PIPELINE 32

/* Connections not welcomed yet (TLS handshake, awaiting HELLO, WELCOMING)
 * from one source address (per worker): max_pending_hello_per_ip. */
struct gw_ip_count {
	char ip[64];
	int n;
	UT_hash_handle hh;
};

/* A worker's sessions (w->sessions), changed by session.c only. */
struct gw_session_table {
	TAILQ_HEAD(, gw_session) all;      /* every connection, from accept until freed */
	struct gw_session *by_agent;       /* uthash: sessions past HELLO, by agent id */
	struct gw_ip_count *pending_by_ip; /* uthash: connections not welcomed, by source */
	int n_sessions;                    /* sessions welcomed (READY, BUSY) */
	int n_welcoming;     /* HELLO taken, WELCOME not written: max_sessions counts these too */
	int n_pending_hello; /* connections not welcomed yet (TLS, awaiting HELLO, WELCOMING) */
};

/* The empty string primary_sent points to when the agent names no primary
 * (most sessions: no allocation for them). */
extern char gw_session_empty[1];

/* A reply from Redis may outlive the session that asked: the ticket is
 * what the callback gets, and s is NULL once the session is gone. */
struct gw_ticket {
	struct gw_session *s;
};

/* Enters s in the worker's agent map; an older session of the same agent on
 * this worker gets ERROR superseded. */
void gw_session_register(struct gw_session *s);
/* Takes s out of the agent map (a newer session of its agent took over). */
void gw_session_unregister(struct gw_session *s);

/* Writes one encoded frame to the agent; returns 0 or -1 (encoding failed). */
int gw_session_send(struct gw_session *s, const struct qs_frame *f)
    __attribute__((warn_unused_result));

/* Called by request handlers when a request is fully answered: the session
 * goes back to READY, sends a pending ERROR, or reads the next request. */
void gw_session_request_done(struct gw_session *s);

/* A request handler submitted op: the session waits for it (WELCOMING
 * after HELLO, BUSY otherwise) and reads no further request. */
void gw_session_wait(struct gw_session *s, struct st_op *op);

/* An UPLOAD went to the store (the last of s->up_head): the session is BUSY, and may read
 * the next request only if it is another UPLOAD (GW_UPLOAD_PIPELINE). */
void gw_session_wait_upload(struct gw_session *s);

/* Whether the session owes the agent a response (a request in flight). */
static inline int gw_session_owes(const struct gw_session *s)
{
	return s->op != NULL || s->n_uploads > 0;
}

/* HELLO answered with WELCOME: the hello deadline is off. */
void gw_session_welcomed(struct gw_session *s);

/* Push on the session (push.c). */
void gw_push_after_welcome(struct gw_session *s);
void gw_push_ack(struct gw_session *s, uint64_t push_id);
void gw_push_fetched(struct gw_session *s);

/* Request handlers (requests.c). Each either answers at once and calls
 * gw_session_request_done, or submits a store statement and sets BUSY. */
void gw_req_hello(struct gw_session *s, const struct qs_hello *h);
/* len: the UPLOAD frame's length (counted in s->up_bytes while it is in flight) */
void gw_req_upload(struct gw_session *s, const struct qs_upload *u, uint32_t len);
void gw_req_fetch(struct gw_session *s, const struct qs_fetch *f);
void gw_req_deliver_ack(struct gw_session *s, const struct qs_deliver_ack *a);
/* The agent sent more while its DELIVER_ACK waits in an acknowledgement group
 * that is lingering (store/agent.c ACK_LINGER_MS): that group goes now, so
 * that the linger never delays a session that has more to say. */
void gw_req_ack_hurry(struct gw_session *s);
void gw_req_status(struct gw_session *s, const struct qs_status *st);
/* Releases what unfinished requests hold (session closing); their
 * statements are cancelled (their results, if any, are dropped). */
void gw_req_abandon(struct gw_session *s);
/* The session ends: the deliveries it holds and the store has not counted
 * are counted (qa_delivered, not waited for), and its holds are freed. */
void gw_req_session_end(struct gw_session *s);

/* Per-session log line: "worker=ml1 peer=1.2.3.4:5 agent=A: ..." */
#define gw_slog(level, s, fmt, ...)                                                                \
	gw_log(level, "worker=%s peer=%s agent=%s: " fmt, (s)->w->wc->name, (s)->peer,             \
	       (s)->agent[0] ? (s)->agent : "-", ##__VA_ARGS__)

#endif
