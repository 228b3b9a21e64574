/* The sync transaction over an open session (agent.md `sync`): upload the
 * outbox, send queued STATUS reports, fetch everything waiting, then PING/PONG
 * to know the server committed our acknowledgements; and its variant that
 * answers a PUSH on a persistent session (fetch first). The invariants: an
 * incoming message is acknowledged only after it is committed in the client
 * store; an outgoing one leaves the outbox only after its UPLOAD_ACK. */
#ifndef QA_SYNC_H
#define QA_SYNC_H

#include "agent/qa_error.h"
#include "agent/qa_session.h"
#include "agent/qa_store.h"

#define QA_RESULT_COUNT 7 /* enum qs_result values */

struct qa_sync_result {
	char server[QA_NAME_MAX + 1];
	int on_primary;
	unsigned long uploaded[QA_RESULT_COUNT]; /* by enum qs_result */
	unsigned long received;                  /* new messages stored in the inbox */
	unsigned long statuses_sent;             /* STATUS reports the server confirmed */
};

/* Called after each DELIVER's messages are committed to the inbox and their
 * DELIVER_ACK is written, with the ids of the messages that were new to the
 * inbox (n is 0 when all were repeats). */
typedef void (*qa_delivered_fn)(void *ctx, const uint8_t (*ids)[16], size_t n);

struct qa_sync_hooks {
	qa_delivered_fn delivered; /* NULL: none */
	void *ctx;
};

/* Runs the transaction on s (which must have a WELCOME): upload, STATUS,
 * fetch, PING/PONG. hooks may be NULL. Does not close the session. On failure
 * what was committed stays committed: uploads already acknowledged are out of
 * the outbox, received messages are in the inbox, everything else is still
 * queued for the next sync. */
int qa_sync_run(struct qa_session *s, struct qa_store *st, const struct qa_sync_hooks *hooks,
                struct qa_sync_result *r, struct qa_error *e) __attribute__((warn_unused_result));

/* The answer to a PUSH (whose PUSH_ACK the session already wrote): fetch
 * first, until a DELIVER says no more, then upload the outbox and the queued
 * STATUS reports, then PING/PONG; the same rules as qa_sync_run. */
int qa_sync_after_push(struct qa_session *s, struct qa_store *st, const struct qa_sync_hooks *hooks,
                       struct qa_sync_result *r, struct qa_error *e)
    __attribute__((warn_unused_result));

/* "stored", "duplicate", ...: the JSON names of enum qs_result. */
const char *qa_sync_result_name(int result);

#endif
