/* The client message store: one SQLite file (-db) per agent that keeps outgoing
 * messages until the server acknowledged them (outbox), received messages until
 * the application took them (inbox, deduplicated by message id), STATUS reports
 * still to send, the final result of every sent message (sent log) and a few
 * facts (meta). Every change is one SQLite transaction, so a crash of the agent
 * neither loses nor duplicates a message. Used by the sync transaction and the
 * qaagent commands; a store handle belongs to one thread. */
#ifndef QA_STORE_H
#define QA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "agent/qa_error.h"

#define QA_STORE_SCHEMA_VERSION 1

struct qa_store;

/* An outgoing message as queued. Owned by its list. */
struct qa_out_msg {
	int64_t qid; /* position in the outbox: upload order */
	uint8_t id[16];
	char *address;
	uint8_t priority;
	uint64_t expires_ms; /* 0 = never */
	uint8_t *props;      /* props block (u16 n + pairs), as qs_encode_props writes it */
	size_t props_len;
	uint8_t *body;
	size_t body_len;
};

struct qa_out_list {
	size_t n;
	struct qa_out_msg *v;
};

/* What became of one uploaded message (an UPLOAD_ACK entry). */
struct qa_out_result {
	uint8_t id[16];
	uint8_t result; /* enum qs_result */
};

/* A received message. The strings and blobs of a message handed to
 * qa_store_inbox_add belong to the caller; those of a list to the list. */
struct qa_in_msg {
	int64_t rid; /* arrival order; set by the store */
	uint64_t seq;
	uint8_t id[16];
	char *from;
	char *queue;
	uint8_t priority;
	uint64_t created_ms;
	uint64_t expires_ms;
	uint8_t *props; /* props block */
	size_t props_len;
	uint8_t *body;
	size_t body_len;
};

struct qa_in_list {
	size_t n;
	struct qa_in_msg *v;
};

/* A STATUS report waiting to be sent. */
struct qa_status_report {
	int64_t sid;
	uint8_t id[16];
	uint8_t status; /* 60 received, 50 unreceivable, 30 expired */
};

struct qa_status_list {
	size_t n;
	struct qa_status_report *v;
};

struct qa_store_counts {
	uint64_t outgoing;        /* messages in the outbox */
	uint64_t incoming_unread; /* received, not yet taken by the application */
	uint64_t incoming_total;  /* every message in the inbox */
	uint64_t statuses_queued; /* STATUS reports not yet confirmed */
	uint64_t sent[7];         /* sent log, by enum qs_result (quota stays 0) */
};

/* Opens (creating on first use) the store at path for agent_id. A store
 * created for another agent id is refused (QA_FAIL_USAGE). */
int qa_store_open(struct qa_store **st, const char *path, const char *agent_id, struct qa_error *e)
    __attribute__((warn_unused_result));
void qa_store_close(struct qa_store *st);

/* Outbox. */
int qa_store_out_add(struct qa_store *st, const struct qa_out_msg *m, struct qa_error *e)
    __attribute__((warn_unused_result));
/* Whether a message with this id is in the outbox or the sent log (*found
 * 1), else 0; -1 on a store error. */
int qa_store_has_id(struct qa_store *st, const uint8_t id[16], int *found, struct qa_error *e)
    __attribute__((warn_unused_result));
/* The next at most max messages after qid after_qid, in upload order. */
int qa_store_out_next(struct qa_store *st, int64_t after_qid, size_t max, struct qa_out_list *list,
                      struct qa_error *e) __attribute__((warn_unused_result));
void qa_out_list_free(struct qa_out_list *list);
/* Applies an UPLOAD_ACK in one transaction: every message with a final result
 * leaves the outbox for the sent log; a quota message stays queued. */
int qa_store_out_resolve(struct qa_store *st, const struct qa_out_result *r, size_t n,
                         struct qa_error *e) __attribute__((warn_unused_result));

/* Inbox. Adds a DELIVER's messages in one transaction; a message whose id is
 * already in the inbox is not stored again. *added counts the new ones; when
 * is_new is not NULL, is_new[i] says whether m[i] was new (all 0 on failure). */
int qa_store_inbox_add(struct qa_store *st, const struct qa_in_msg *m, size_t n, uint8_t *is_new,
                       size_t *added, struct qa_error *e) __attribute__((warn_unused_result));
/* Messages not yet taken (of queue, or all when queue is NULL), oldest first. */
int qa_store_inbox_unread(struct qa_store *st, const char *queue, struct qa_in_list *list,
                          struct qa_error *e) __attribute__((warn_unused_result));
void qa_in_list_free(struct qa_in_list *list);
/* Marks the listed messages taken and queues a STATUS report `status` for
 * each (none for messages of the queue `system`), in one transaction. */
int qa_store_inbox_take(struct qa_store *st, const struct qa_in_list *list, uint8_t status,
                        struct qa_error *e) __attribute__((warn_unused_result));

/* STATUS reports: the next at most max after sid after_sid, in queue order,
 * and their removal once the server confirmed them. */
int qa_store_status_next(struct qa_store *st, int64_t after_sid, size_t max,
                         struct qa_status_list *list, struct qa_error *e)
    __attribute__((warn_unused_result));
void qa_status_list_free(struct qa_status_list *list);
int qa_store_status_done(struct qa_store *st, const struct qa_status_list *list, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Meta facts: "last_server", "last_sync_ms", "servers" (auto mode). get returns
 * 1 and a malloc'd copy in *value, 0 when absent, -1 on failure. */
int qa_store_meta_get(struct qa_store *st, const char *key, char **value, struct qa_error *e)
    __attribute__((warn_unused_result));
int qa_store_meta_set(struct qa_store *st, const char *key, const char *value, struct qa_error *e)
    __attribute__((warn_unused_result));

/* What this client store knows of one message it sent (qaagent status ID): the
 * outbox while it waits for its UPLOAD_ACK, the sent log after, and the status
 * notes the server sent to this agent's system queue (ias_StatusMessageId). */
struct qa_msg_status {
	int found;         /* 0: no message with this id was queued in this store */
	int queued;        /* 1: still in the outbox */
	char *address;     /* malloc'd */
	int64_t queued_ms; /* outbox: when queued */
	int attempts;      /* outbox: uploads tried */
	int result;        /* the UPLOAD_ACK result (enum qs_result); -1 while queued */
	int64_t done_ms;   /* when that result came */
	int status;        /* the latest status note's code (20, 30, 40, 50, 60); 0 none */
	int64_t status_ms; /* the server's time of that status */
	int notes;         /* how many status notes arrived for it */
};
int qa_store_message_status(struct qa_store *st, const uint8_t id[16], struct qa_msg_status *out,
                            struct qa_error *e) __attribute__((warn_unused_result));
void qa_msg_status_free(struct qa_msg_status *m);

int qa_store_counts(struct qa_store *st, struct qa_store_counts *c, struct qa_error *e)
    __attribute__((warn_unused_result));

/* A number that grows whenever a message is queued in the outbox or a STATUS
 * report in the status queue, by this process or another one sharing the
 * file (`qaagent send` beside `run`): run -policy automatic watches it. */
int qa_store_queue_mark(struct qa_store *st, uint64_t *mark, struct qa_error *e)
    __attribute__((warn_unused_result));

#endif
