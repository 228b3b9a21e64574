/* The statements of the agent requests other than UPLOAD (store/upload.h):
 * HELLO (credentials, qa_hello), FETCH (st_fetch, a read, grouped), DELIVER_ACK (a
 * group statement, qa_ack_group) and STATUS; and the count of what a session
 * delivered and never acknowledged (qa_delivered). A session's holds live in
 * its worker's memory (docs/design.md "Delivery"); the store is told of a
 * delivery when it is acknowledged, reported on, or left behind at the end of
 * the session. Asynchronous functions follow st_submit's contract. */
#ifndef ST_AGENT_H
#define ST_AGENT_H

#include "store/group.h"

#include <stdint.h>

/* ---- HELLO ---- */

/* The SHA-256 of agent's token: st_credential_read gives it. */
struct st_op *st_credential_get(struct st_conn *c, const char *agent, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* 1 and the 32 bytes at *sha256 when res names a token, else 0. */
int st_credential_read(const PGresult *res, const uint8_t **sha256);

/* qa_hello: records the HELLO; one row per known worker (st_hello_row). */
struct st_op *st_hello(struct st_conn *c, const char *agent, const char *primary_sent,
                       const char *worker, int64_t now_ms, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
struct st_hello_row {
	const char *name, *advertise; /* NUL-terminated, owned by res */
	int name_len, advertise_len;
	int tls;
	int64_t pending;      /* the agent's pending messages (the same on every row) */
	const char *assigned; /* the router's recorded primary ("" if none) */
	int assigned_len;
};
int st_hello_rows(const PGresult *res); /* -1 if res is not qa_hello's */
void st_hello_row(const PGresult *res, int row, struct st_hello_row *out);

/* ---- FETCH ---- */

/* FETCH, a read, grouped with other sessions' FETCHes of the worker (st_fetches_new,
 * store/group.h: one statement, no barrier): the next messages for agent that are not
 * among the n_held seqs held (the session's holds), in delivery order: up to
 * max_count + 1 rows, the last of which may not fit (fits 0, no body) or be over
 * max_count (rn): deliver the rows that fit with rn <= max_count; more: any row left.
 * done gets the group's result: st_fetch_rows finds this FETCH's rows in it. If
 * st_fetch_due, some of the agent's messages are due and no row is read:
 * st_expire_due, then st_fetch again. */
struct st_group *st_fetches_new(struct event_base *base, struct st_conn *(*pick)(void *),
                                void *pick_arg);
struct st_op *st_fetch(struct st_group *g, const char *agent, const int64_t *held, int n_held,
                       int32_t max_count, int64_t max_bytes, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
struct st_next_row {
	int64_t seq;
	const uint8_t *id; /* 16 bytes */
	const char *sender, *queue;
	int sender_len, queue_len;
	int priority;
	int64_t created_ms, expires_ms;
	const uint8_t *props, *body;
	int props_len, body_len;
	int32_t delivery_count; /* deliveries counted before this one */
	int64_t rn;             /* 1, 2, ... in delivery order */
	int64_t cum;            /* MSG_IN bytes of rows 1..rn as delivered (row 1: its own) */
	int fits;               /* within max_bytes (or the first): its body is here */
};
/* op's rows of res (its done's): the number of messages (0: none) from row *row0 on;
 * -1 if res is not a FETCH group's. */
int st_fetch_rows(const PGresult *res, const struct st_op *op, int *row0);
int st_fetch_due(const PGresult *res, int row0); /* *row0 of st_fetch_rows */
/* qa_expire_due: agent's due messages expire now (their senders told). */
struct st_op *st_expire_due(struct st_conn *c, const char *agent, int64_t now_ms, st_done_fn done,
                            void *arg) __attribute__((warn_unused_result));
void st_next_row(const PGresult *res, int row, struct st_next_row *out);

/* qa_unreceivable: agent's pending message seq can never be delivered (its
 * DELIVER would not fit max_frame): status 50, its sender told. Rare: FETCH
 * then asks for the next messages again. */
struct st_op *st_unreceivable(struct st_conn *c, const char *agent, int64_t seq, int64_t now_ms,
                              st_done_fn done, void *arg) __attribute__((warn_unused_result));

/* qa_delivered: counts one delivery of each of agent's pending seqs (a
 * session ending with them held). done may be NULL. */
struct st_op *st_delivered(struct st_conn *c, const char *agent, const int64_t *seqs, int n,
                           int64_t now_ms, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* ---- DELIVER_ACK: group commit ---- */

/* The worker's acknowledgement group (store/group.h), groups sent to pick(). */
struct st_group *st_acks_new(struct event_base *base, struct st_conn *(*pick)(void *),
                             void *pick_arg);
/* One DELIVER_ACK as a part: seqs[i], and whether the session holds it with
 * its delivery not counted yet (counted[i] == 0 and held[i] != 0). */
struct st_op *st_ack(struct st_group *g, const char *agent, const int64_t *seqs,
                     const uint8_t *count_now, int n, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* How many of op's seqs were applied (acknowledged now), from its group's res. */
int st_ack_applied(const PGresult *res, const struct st_op *op);

/* ---- STATUS ---- */

/* qa_status_held: counts the deliveries of held (the session's holds not
 * counted yet), then records the n statuses; st_status_read: applied. */
struct st_op *st_status(struct st_conn *c, const char *agent, const int64_t *held, int n_held,
                        const uint8_t (*ids)[16], const int16_t *codes, int n, int64_t now_ms,
                        st_done_fn done, void *arg) __attribute__((warn_unused_result));
int st_status_read(const PGresult *res);

#endif
