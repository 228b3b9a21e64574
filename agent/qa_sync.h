/* The sync transaction over an open session (agent.md `sync`): upload the
 * outbox, send queued STATUS reports, fetch everything waiting, then PING/PONG
 * to know the server committed our acknowledgements. The invariants: an
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

/* Runs the transaction on s (which must have a WELCOME). Does not close the
 * session. On failure what was committed stays committed: uploads already
 * acknowledged are out of the outbox, received messages are in the inbox,
 * everything else is still queued for the next sync. */
int qa_sync_run(struct qa_session *s, struct qa_store *st, struct qa_sync_result *r,
                struct qa_error *e) __attribute__((warn_unused_result));

/* "stored", "duplicate", ...: the JSON names of enum qs_result. */
const char *qa_sync_result_name(int result);

#endif
