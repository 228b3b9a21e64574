/* UPLOAD's write path (qa_upload_group, store/sql/functions/): the batches of
 * many sessions of one worker committed as one statement (store/group.h).
 * Worker thread only. */
#ifndef ST_UPLOAD_H
#define ST_UPLOAD_H

#include "store/group.h"

#include <stddef.h>
#include <stdint.h>

struct st_upload_row {
	const uint8_t *id; /* 16 bytes */
	const char *rcpt;
	size_t rcpt_len;
	const char *queue;
	size_t queue_len;
	int16_t priority;
	int64_t expires_ms; /* 0: never */
	int16_t flag;       /* 0, or the result the gateway decided (3 expired, 4 too_large) */
	const void *props;  /* the props in their wire layout */
	size_t props_len;
	const void *body;
	size_t body_len;
};

/* The worker's upload group: groups go to pick(pick_arg); each message may
 * wait for its recipient up to max_pending, and its sender may have up to
 * max_pending_per_sender messages pending (result 5 quota beyond either). */
struct st_group *st_uploads_new(struct event_base *base, struct st_conn *(*pick)(void *),
                                void *pick_arg, int max_pending, int max_pending_per_sender);
void st_uploads_free(struct st_group *g);

/* Adds sender's n rows as one part: done(arg, res, err) follows the group's
 * commit (or failure); st_upload_result reads this part's results from res. */
struct st_op *st_upload(struct st_group *g, const char *sender, const struct st_upload_row *rows,
                        int n, st_done_fn done, void *arg) __attribute__((warn_unused_result));

/* The result code (protocol.md UPLOAD_ACK) of row k of op's part, or -1 if
 * res does not hold it. */
int st_upload_result(const PGresult *res, const struct st_op *op, int k);

#endif
