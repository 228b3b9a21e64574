/* One agent connection: the QASync v1 session state machine (protocol.md).
 * A session lives on its worker's thread. Requests are taken from the input
 * buffer one at a time: while a request's store statement is in flight the
 * next one waits, so responses go out in request order and a request's effect
 * is committed before any later response is written.
 *
 * This is what the rest of the worker (worker.c, pool.c, credentials.c) may
 * call; struct gw_session and the session's internals are in session_int.h,
 * seen by session.c, requests.c and push.c only. session.c owns the worker's
 * session table (w->sessions): every connection, the agent map, the counts. */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include <stdint.h>

struct gw_worker;
struct gw_session;
struct gw_session_table;
struct gw_ticket;
struct rt_claim;

/* ---- the worker's session table ---- */

/* An empty table, for a new worker (NULL: out of memory). */
struct gw_session_table *gw_session_table_new(void);
/* Frees the table; its sessions were freed first (gw_session_free_all). */
void gw_session_table_free(struct gw_session_table *t);

/* Takes ownership of fd (an accepted connection from ip; peer is "ip:port"). */
void gw_session_accept(struct gw_worker *w, int fd, const char *peer, const char *ip);

/* Frees every connection of the worker at once; returns how many. */
int gw_session_free_all(struct gw_worker *w);

/* Whether the worker has any connection left (closing ones included). */
int gw_session_any(const struct gw_worker *w);
/* Connections being served: sessions welcomed and those not welcomed yet. */
int gw_session_connections(const struct gw_worker *w);
/* Sessions past HELLO, and how many of them are on their primary. */
void gw_session_tally(const struct gw_worker *w, int *sessions, int *on_primary);

/* The worker's session of this agent (past HELLO), or NULL. */
struct gw_session *gw_session_find(struct gw_worker *w, const char *agent);
/* Calls fn for each session past HELLO until fn returns nonzero; fn must
 * not end a session. */
void gw_session_each_agent(struct gw_worker *w, int (*fn)(struct gw_session *s, void *arg),
                           void *arg);

/* What others may read of a session. */
const char *gw_session_agent(const struct gw_session *s);
const uint8_t *gw_session_token_sha256(const struct gw_session *s); /* 32 bytes */
int gw_session_closing(const struct gw_session *s);

/* ---- drain (docs/operations.md "Draining a worker") ---- */

/* The worker drains: every session not told already gets ERROR draining
 * after its owed responses, except, when the router is moving this worker's
 * agents (moving), the router-assigned ones whose primary this is: they
 * wait for their REASSIGN. why: "draining", "shutting down". */
void gw_session_drain(struct gw_worker *w, int moving, const char *why);
/* The router finished moving: whoever still waits for REASSIGN (the move
 * failed, or raced) gets ERROR draining. */
void gw_session_end_reassign_wait(struct gw_worker *w, const char *why);

/* ---- the pool (pool.c) ---- */

/* The router moved the agent of s to primary: REASSIGN, closed 5 s later. */
void gw_session_reassign(struct gw_session *s, const char *primary);

/* Whether s may be announced to the pool again (Redis back or wiped):
 * welcomed, not closing, and no claim of its own in flight. */
int gw_session_announceable(const struct gw_session *s);
/* What the pool is told of s: agent, primary (as resolved and as sent), persist, since. */
void gw_session_claim_of(const struct gw_session *s, struct rt_claim *c);
/* A ticket for a Redis reply about s (NULL: out of memory); s keeps it
 * until gw_ticket_redeem. */
struct gw_ticket *gw_ticket_new(struct gw_session *s);
/* Frees t (the reply came, or the request was not sent); returns its
 * session, or NULL if the session ended meanwhile. */
struct gw_session *gw_ticket_redeem(struct gw_ticket *t);
/* The pool registered s again with this epoch; primary: the router's
 * (an unpinned agent whose primary changed meanwhile gets REASSIGN). */
void gw_session_announced(struct gw_session *s, uint64_t epoch, const char *primary);
/* The pool names another worker's session for s's agent (a supersede missed
 * while Redis was away, or a record a Redis failover brought back from
 * before s): which one lives cannot be told here, so s ends with a
 * retryable ERROR, and the agent's next HELLO claims the one session. */
void gw_session_announce_refused(struct gw_session *s);

/* Ends the session with ERROR code (sent after the responses it owes). */
void gw_session_error(struct gw_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Frees the session at once (drain deadline, shutdown). */
void gw_session_free(struct gw_session *s);

/* ---- push (push.c) ---- */

/* Messages to count agents committed here, ns[i] of them to agents[i]: route
 * their PUSHes through the pool, in one call. */
void gw_push_route(struct gw_worker *w, const char *const *agents, const int *ns, int count,
                   int64_t commit_ms);
/* Routing had a gap (this worker's push channel was not subscribed: Redis
 * down, hung or restarted): every welcomed PERSIST session that may take a
 * PUSH and has pending messages gets one, as right after WELCOME (one store
 * statement per 1000 sessions, from the pending counters). */
void gw_push_resync(struct gw_worker *w);
/* The pool routed a PUSH for agent to this worker. */
void gw_push_deliver(struct gw_worker *w, const char *agent, int64_t commit_ms, int n,
                     const char *session_worker);
/* A newer session of agent (epoch) took over elsewhere. */
void gw_push_supersede(struct gw_worker *w, const char *agent, uint64_t epoch);

#endif
