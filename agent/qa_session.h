/* One QASync v1 session of the agent on an open connection: HELLO, WELCOME,
 * then request/response exchanges in which the server's unsolicited frames
 * (PING, PUSH, REASSIGN, ERROR) are handled, and BYE. Every frame sent or
 * received is logged at -v. What the session does (the sync transaction, the
 * persistent run of qa_run) is built on top of it; which server it talks to
 * is qa_cycle's choice. */
#ifndef QA_SESSION_H
#define QA_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "agent/qa_conn.h"
#include "agent/qa_error.h"
#include "agent/qa_log.h"
#include "agent/qa_stream.h"
#include "proto/qs_codec.h"

#define QA_WELCOME_TIMEOUT_MS  10000 /* no WELCOME within 10 s of connecting: failed */
#define QA_RESPONSE_TIMEOUT_MS 30000 /* longest wait for UPLOAD_ACK, DELIVER or PONG */
#define QA_NAME_MAX            64    /* worker names: 1..64 bytes */

/* What the agent says in HELLO. */
struct qa_hello_params {
	const char *agent_id;
	const char *token;   /* "" when none */
	const char *primary; /* HOST:PORT of the first -x entry, "" for auto(...) */
	uint8_t flags;       /* QS_FLAG_PERSIST for run, 0 for sync */
};

/* A server list entry of WELCOME or REASSIGN, copied out of the frame. */
struct qa_server_entry {
	char name[QA_NAME_MAX + 1];
	char stream[QA_STREAM_TEXT_MAX];
};

struct qa_server_list {
	char primary[QA_NAME_MAX + 1];
	size_t n;
	struct qa_server_entry *v;
};

/* What WELCOME said. */
struct qa_welcome_info {
	char server[QA_NAME_MAX + 1];
	char primary[QA_NAME_MAX + 1]; /* "" if the server could not resolve ours */
	int on_primary;
	uint32_t max_frame;
	uint16_t max_batch;
	uint32_t heartbeat_s;
	struct qa_server_list servers;
};

/* Called for every PUSH, right after its PUSH_ACK was written. */
typedef void (*qa_push_fn)(void *ctx, uint64_t push_id, uint32_t pending);

struct qa_session {
	struct qa_conn conn;
	struct qa_welcome_info welcome;
	const struct qa_log *log;
	int response_timeout_ms;
	uint64_t next_nonce; /* PING nonces we send */
	uint32_t next_batch; /* UPLOAD batch numbers */
	/* PUSH bookkeeping. Every PUSH is acknowledged the moment it is read;
	 * pushes_fetched is set to pushes_seen whenever a FETCH is written, so
	 * pushes_seen > pushes_fetched means a PUSH came after the last FETCH and
	 * something may be waiting that no FETCH asked for yet. */
	uint64_t pushes_seen;
	uint64_t pushes_fetched;
	qa_push_fn on_push; /* NULL: none */
	void *on_push_ctx;
	/* The heartbeat PING awaiting its PONG (0: none). Its PONG may arrive in
	 * the middle of any exchange and is taken there; qa_run sets it. */
	uint64_t hb_nonce;
	int reassigned; /* 1 when a REASSIGN arrived; its list is in reassign */
	struct qa_server_list reassign;
};

void qa_session_init(struct qa_session *s, const struct qa_log *log);

/* The connection attempt: connects to stream, sends HELLO and waits for
 * WELCOME (QA_WELCOME_TIMEOUT_MS). An ERROR answer is QA_FAIL_SERVER with
 * its code and retryable flag. On failure the connection is closed. */
int qa_session_open(struct qa_session *s, const struct qa_stream *stream,
                    const struct qa_hello_params *hello, int connect_timeout_ms, struct qa_error *e)
    __attribute__((warn_unused_result));

/* HELLO → WELCOME on a connection already open in s->conn (qa_session_open's
 * second half; also for a connection made with qa_conn_attach). On failure
 * the connection is closed. */
int qa_session_handshake(struct qa_session *s, const struct qa_hello_params *hello,
                         struct qa_error *e) __attribute__((warn_unused_result));

/* Writes one frame (logged at -v). A FETCH also marks the pushes seen so far
 * as answered (pushes_fetched). */
int qa_session_send(struct qa_session *s, const struct qs_frame *f, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Waits for a frame of type want, answering PING and PUSH and recording
 * REASSIGN meanwhile. ERROR or BYE from the server, or any other frame,
 * fails the session. On success the caller must qs_frame_release(f). */
int qa_session_expect(struct qa_session *s, enum qs_type want, struct qs_frame *f,
                      struct qa_error *e) __attribute__((warn_unused_result));

/* PING, then wait for its PONG: every request sent before it has been
 * processed and committed by the server (protocol.md "ordering"). */
int qa_session_ping(struct qa_session *s, struct qa_error *e) __attribute__((warn_unused_result));

/* For an event loop that polls s->conn.fd: reads every frame the socket has
 * without waiting and handles it as an unsolicited frame (PING answered,
 * PUSH acknowledged, heartbeat PONG taken, REASSIGN recorded). Returns 0 when
 * nothing more is readable now; -1 on ERROR or BYE from the server, a lost
 * connection, or a frame no request asked for. */
int qa_session_poll(struct qa_session *s, struct qa_error *e) __attribute__((warn_unused_result));

/* Sends BYE (if the connection still works; cancel_fd is not watched for
 * it) and closes it. */
void qa_session_close(struct qa_session *s, int send_bye);

/* Closes without BYE and frees what the session holds (lists included). */
void qa_session_free(struct qa_session *s);

void qa_server_list_free(struct qa_server_list *l);

#endif
