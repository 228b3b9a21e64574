/* The statements the gateway runs besides the agent requests: router
 * assignments (workers), the lifecycle job, LISTEN for server-side sends
 * (the node), the admin port's reads and writes, and the blocking
 * `qagw agent add|remove|list` command. One function per statement, with
 * typed arguments; the SQL text is private to store/queries.c, so no other
 * module writes SQL. The readers (st_*_read, st_*_rows, st_*_row) decode the
 * PGresult a statement's done callback gets, so that callers need not know
 * its columns.
 *
 * Asynchronous functions follow st_submit's contract: they run on the thread
 * that owns c, return the operation, or NULL when the store is down or the
 * send failed (then done is never called). String arguments are copied. */
#ifndef ST_QUERIES_H
#define ST_QUERIES_H

#include "store/store.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* ---- router assignments (gateway/worker.c, admin PUT /api/agents/{id}/primary) ---- */

/* qa_assign: agents[i]'s router-given primary is now primaries[i], for
 * each i < n. The result carries nothing the caller needs. */
struct st_op *st_assign(struct st_conn *c, const char *const *agents, const char *const *primaries,
                        int n, st_done_fn done, void *arg) __attribute__((warn_unused_result));

/* The router's assignments of the agents that name no primary of their own,
 * to refill an emptied Redis. Rows: column 0 the agent id, column 1 its
 * assigned primary (both text, NUL-terminated by libpq). */
struct st_op *st_router_assignments(struct st_conn *c, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* ---- the lifecycle job (gateway/retention.c) ---- */

/* qa_expire: expires up to limit pending messages due at now_ms (status 30,
 * their senders told). st_batch_read gives how many. */
struct st_op *st_expire(struct st_conn *c, int64_t now_ms, int32_t limit, st_done_fn done,
                        void *arg) __attribute__((warn_unused_result));
/* qa_purge: deletes up to limit final messages whose status is older than
 * before_ms. st_batch_read gives how many. */
struct st_op *st_purge(struct st_conn *c, int64_t before_ms, int32_t limit, st_done_fn done,
                       void *arg) __attribute__((warn_unused_result));
/* The rows a st_expire or st_purge batch handled (0 for any other shape). */
int st_batch_read(const PGresult *res);

/* Removes worker name from the known workers (qa_workers): the WELCOMEs'
 * server lists no longer name it. One row ("removed") if it was known. */
struct st_op *st_worker_remove(struct st_conn *c, const char *name, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* The store's backlog: pending messages (status 1, from the counters) and
 * the oldest one's created_ms (0: none; reads the pending rows' index, so
 * O(pending): for the lifecycle job, once a run). Read with st_backlog_read. */
struct st_op *st_backlog(struct st_conn *c, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* 0, or -1 when res has an unexpected shape. */
int st_backlog_read(const PGresult *res, int64_t *pending, int64_t *oldest_created_ms);

/* ---- server-side sends (gateway/node.c) ---- */

/* The channel the store's functions NOTIFY with "AGENT ID COMMIT_MS" for a
 * message they store themselves (qa_send, qa_cancel's note to the sender),
 * so that some gateway routes its push. */
#define ST_SEND_CHANNEL "qa_send"

/* LISTEN on ST_SEND_CHANNEL: its notifications then reach the function set
 * with st_conn_on_notify. To be sent again each time c comes up. */
struct st_op *st_listen_sends(struct st_conn *c, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* ---- agents (admin GET /api/agents/{id}, /api/agents-near-quota) ---- */

/* The store's record of one agent; read with st_agent_read. */
struct st_op *st_agent(struct st_conn *c, const char *agent, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

struct st_agent_row {
	int has_last_hello; /* it has said HELLO */
	int64_t last_hello_ms;
	const char *primary_sent; /* the primary its last HELLO named; NULL when none (or "") */
	size_t primary_sent_len;
};
/* 1 with *out filled (primary_sent points into res), 0 when the store has
 * never seen the agent, -1 when res has an unexpected shape. */
int st_agent_read(const PGresult *res, struct st_agent_row *out);

/* The agent's pending messages: still deliverable, i.e. status 1 and not
 * past their expiry at now_ms (what qa_hello counts for its PUSH). Counts
 * qa_messages rows today. Read with st_count_read. */
struct st_op *st_agent_pending(struct st_conn *c, const char *agent, int64_t now_ms,
                               st_done_fn done, void *arg) __attribute__((warn_unused_result));
/* The count of a one-count statement (st_agent_pending), or -1 when res
 * has an unexpected shape. */
int64_t st_count_read(const PGresult *res);

/* The limit recipients with the most pending messages (status 1, due or
 * not), most first, then by agent id. Counts qa_messages rows today (one
 * GROUP BY over the pending index). Read with st_pending_rows, then
 * st_pending_row for each row. */
struct st_op *st_most_pending(struct st_conn *c, int32_t limit, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* Which of agents[0..n-1] have pending messages (status 1, due or not,
 * held ones included), and how many: from the counters, O(n). Rows as
 * st_most_pending's. */
struct st_op *st_pending_of(struct st_conn *c, const char *const *agents, int n, st_done_fn done,
                            void *arg) __attribute__((warn_unused_result));

struct st_pending_row {
	const char *agent; /* points into res */
	size_t agent_len;
	int64_t pending;
};
/* The rows of a st_most_pending or st_pending_of result, or -1 when it has an unexpected shape. */
int st_pending_rows(const PGresult *res);
/* Row row (< st_pending_rows(res)). */
void st_pending_row(const PGresult *res, int row, struct st_pending_row *out);

/* ---- agent credentials (admin /api/agents, gateway/credentials.c) ----
 * The store keeps each token's SHA-256 only (qa_credentials). */

/* Adds agent's token unless it has one: st_credential_changed then says
 * whether it was added. */
struct st_op *st_credential_add(struct st_conn *c, const char *agent, const uint8_t sha256[32],
                                int64_t created_ms, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* Removes agent's token: st_credential_changed says whether it had one. The
 * removal NOTIFYs ST_TOKEN_CHANNEL (payload: the agent id) as it commits,
 * so that every worker of the pool ends that agent's live sessions. */
#define ST_TOKEN_CHANNEL "qa_token_removed"
struct st_op *st_credential_remove(struct st_conn *c, const char *agent, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* 1 when the add or remove changed qa_credentials, else 0. */
int st_credential_changed(const PGresult *res);

/* LISTEN on ST_TOKEN_CHANNEL (on a connection with a notify function). */
struct st_op *st_listen_tokens(struct st_conn *c, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* Of n live sessions' (agent, token SHA-256), those whose token is no longer
 * in qa_credentials (removed, or replaced): read with st_revoked_rows and
 * st_revoked_row. One statement, one index probe per session. */
struct st_op *st_credentials_revoked(struct st_conn *c, const char *const *agents,
                                     const uint8_t *const *sha256, int n, st_done_fn done,
                                     void *arg) __attribute__((warn_unused_result));
/* The rows of a st_credentials_revoked result, or -1 for an unexpected shape. */
int st_revoked_rows(const PGresult *res);
/* Row row: the agent (NUL-terminated, in the result) and the SHA-256 it had. */
void st_revoked_row(const PGresult *res, int row, const char **agent, const uint8_t **sha256);

/* Every agent that has a token, by agent id. Read with st_credential_rows,
 * then st_credential_row for each row. */
struct st_op *st_credential_list(struct st_conn *c, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

struct st_credential {
	const char *agent; /* points into the result */
	size_t agent_len;
	int64_t created_ms;
};
/* The rows of a st_credential_list result, or -1 when it has an unexpected shape. */
int st_credential_rows(const PGresult *res);
/* Row row (< st_credential_rows(res)). */
void st_credential_row(const PGresult *res, int row, struct st_credential *out);

/* The same three, blocking, for `qagw agent add|remove|list` (main thread,
 * no event loop). Each returns -1 with the store's message in err (no
 * trailing newline) when the statement failed. */
/* 1 added, 0 the agent already has a token. */
int st_credential_add_sync(PGconn *pg, const char *agent, const uint8_t sha256[32],
                           int64_t created_ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* 1 removed, 0 the agent had no token. */
int st_credential_remove_sync(PGconn *pg, const char *agent, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Calls fn once per agent with a token, by agent id (cr and its string are
 * valid during the call only); returns how many. */
typedef void (*st_credential_fn)(void *arg, const struct st_credential *cr);
int st_credential_list_sync(PGconn *pg, st_credential_fn fn, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- messages (admin /api/messages) ---- */

/* qa_send: stores a server-side message and NOTIFYs ST_SEND_CHANNEL. to is
 * "AGENT\QUEUE", body body_len bytes of UTF-8, props_json a JSON object of
 * strings, expires_ms absolute (0 never). qa_send checks every argument: a
 * bad one fails the statement with qa_send's exception in err ("qa_send:
 * bad \"to\" address ..."), naming it; a message that could never be
 * delivered within max_frame (protocol.md's too_large rule) fails with
 * "qa_send: too_large: ...". Read with st_sent_read. */
struct st_op *st_send(struct st_conn *c, const char *to, const char *body, size_t body_len,
                      const char *from, int32_t priority, int64_t expires_ms,
                      const char *props_json, uint32_t max_frame, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* 0 with the new message's id (16 bytes) and seq, or -1 when res has an
 * unexpected shape. */
int st_sent_read(const PGresult *res, uint8_t id[16], int64_t *seq);

/* One message's status; id is a UUID in text form. Read with st_message_read. */
struct st_op *st_message(struct st_conn *c, const char *id, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

struct st_message_row {
	const char *sender, *recipient, *queue; /* point into res */
	size_t sender_len, recipient_len, queue_len;
	int status; /* 1 pending, 20 acknowledged, 30 expired, 40 canceled, ... */
	int64_t status_ms;
	int32_t delivery_count;
	int priority;
	int64_t created_ms;
	int64_t expires_ms; /* 0 never */
};
/* 1 with *out filled, 0 when there is no such message, -1 when res has an
 * unexpected shape. */
int st_message_read(const PGresult *res, struct st_message_row *out);

/* qa_cancel at now_ms (id a UUID in text form): the sender, if an agent, is
 * told. Read with st_cancel_read. */
struct st_op *st_cancel(struct st_conn *c, const char *id, int64_t now_ms, st_done_fn done,
                        void *arg) __attribute__((warn_unused_result));
enum st_cancel_result {
	ST_CANCEL_NONE = 0,    /* no such message */
	ST_CANCEL_DONE = 1,    /* canceled (status 40) */
	ST_CANCEL_ALREADY = 2, /* already final: acknowledged, expired, canceled, ... */
	ST_CANCEL_BAD = -1,    /* res has an unexpected shape */
};
enum st_cancel_result st_cancel_read(const PGresult *res);

#endif
