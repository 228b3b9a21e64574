/* The admin port's request plumbing, shared by every handler: one struct
 * adm_req per request from dispatch to reply, JSON replies and errors, and
 * the glue that lets a handler wait for Redis and store replies without
 * blocking the main loop.
 *
 * Lifetime: a request is answered exactly once (adm_reply_*), which sends it
 * to libevent and sets r->http to NULL. libevent itself never frees a request
 * we have not answered: a client that disconnects meanwhile only detaches it,
 * and our late reply frees it (libevent 2.1 evhttp_send_reply with no
 * connection). The struct stays allocated while async calls are in flight
 * (r->refs): a reply that arrives after the answer (deadline passed, server
 * stopped) finds adm_req_live(r) false and is dropped. Main thread only. */
#ifndef ADM_HTTP_H
#define ADM_HTTP_H

#include "admin/route.h"
#include "admin/webguard.h"
#include "gateway/accept_guard.h"
#include "store/store.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <sys/queue.h>

struct evhttp;
struct evhttp_request;
struct event;
struct gw_node;

#define ADM_MAX_PENDING    64        /* requests being served at once; 503 beyond */
#define ADM_MAX_BODY       (1 << 20) /* request body bytes; 413 beyond */
#define ADM_DEADLINE_S     10        /* an unanswered request gets 504 after this */
#define ADM_CONN_TIMEOUT   30        /* idle client connections are closed after this */
#define ADM_START_GRACE_MS 2000      /* see admin.c on_request */

struct adm_server {
	struct gw_node *node;
	struct evhttp *http;
	TAILQ_HEAD(, adm_req) pending; /* requests not answered yet */
	int n_pending;
	int64_t started_us;                  /* monotonic */
	struct gw_accept_guard accept_guard; /* pauses the listener when descriptors run out */
	_Atomic int listener_paused;         /* its gauge (qagw_listeners_paused) */
	struct adm_guard guard;              /* Host and Origin rules, from [admin] at start */
	int64_t refused_logged_us;           /* the last request refused by guard that was logged */
};

typedef void (*adm_step_fn)(struct adm_req *r);
typedef void (*adm_redis_fn)(struct adm_req *r, redisReply *reply, int idx);
typedef void (*adm_store_fn)(struct adm_req *r, const PGresult *res, const char *err);

struct adm_req {
	TAILQ_ENTRY(adm_req) link;
	struct adm_server *srv;      /* NULL once the server has stopped */
	struct gw_node *node;        /* valid while adm_req_live */
	struct evhttp_request *http; /* NULL once answered or orphaned */
	int method;                  /* ADM_GET, ... */
	char path[128];              /* for the log line (never the query: it may hold a token) */
	struct adm_params params;    /* the route's "{}" segments */
	adm_handler_fn handler;      /* the route's handler */
	int refs;                    /* 1 for the unanswered HTTP side + 1 per call in flight */
	int waiting;                 /* calls of the current step still in flight */
	adm_step_fn next;            /* runs once waiting drops to 0 (adm_then) */
	struct event *deadline;
	int64_t start_us;
	void *ctx; /* the handler's state, freed with ctx_free */
	void (*ctx_free)(void *ctx);
};

/* Creates the request for http and links it in srv->pending. */
struct adm_req *adm_req_new(struct adm_server *srv, struct evhttp_request *http, int method,
                            const char *path);
/* Detaches every unanswered request (the server is stopping): they are
 * never answered, and free themselves when their last call returns. */
void adm_req_orphan_all(struct adm_server *srv);

static inline int adm_req_live(const struct adm_req *r)
{
	return r->http != NULL;
}

/* ---- replies (each answers r; nothing happens if r is no longer live) ---- */

/* Sends j (consumed; NULL means out of memory: 500) as application/json. */
void adm_reply_json(struct adm_req *r, int code, json_t *j);
/* {"error": error, "message": ...}. */
void adm_reply_error(struct adm_req *r, int code, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 400 {"error":"bad_request","field": field (null when NULL),"message": ...}. */
void adm_reply_bad_field(struct adm_req *r, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Any other body, with its content type. */
void adm_reply_raw(struct adm_req *r, int code, const char *content_type, const void *data,
                   size_t len);
/* Adds a header to r's answer (before adm_reply_*). */
void adm_add_header(struct adm_req *r, const char *key, const char *value);

/* The request body as a JSON object. On failure replies 400 (naming the
 * field when it can: a body that is not an object names none) and returns
 * NULL. The caller owns the result. */
json_t *adm_body_object(struct adm_req *r);

/* ---- async calls: each adds one to r->waiting; the step set with adm_then
 * runs when the last one has returned (at once if none is in flight). The
 * callback runs only while r is live. ---- */

/* A Redis command of NULL-terminated string arguments on node->redis.
 * idx is handed back to fn. Returns 0, or -1 when Redis is down or the
 * command could not be sent (fn is then never called). */
int adm_redis(struct adm_req *r, adm_redis_fn fn, int idx, ...) __attribute__((sentinel));
/* One statement on node->store: submit sends it on c, calling one of
 * store/queries.h's functions with the arguments behind args (read during
 * the call only) and with done and done_arg. Returns 0, or -1 when the
 * store is down or submit failed. */
typedef struct st_op *(*adm_submit_fn)(struct st_conn *c, const void *args, st_done_fn done,
                                       void *done_arg);
int adm_store(struct adm_req *r, adm_store_fn fn, adm_submit_fn submit, const void *args);
void adm_then(struct adm_req *r, adm_step_fn next);
/* Runs fn(r) after ms milliseconds, if r is still live then. */
void adm_later(struct adm_req *r, adm_step_fn fn, int ms);

/* "PREFIX" + the formatted rest: a Redis key under [redis] prefix. */
void adm_key(const struct adm_req *r, char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Whether the main thread's own connections are up (NULL counts as down). */
int adm_redis_up(const struct gw_node *node);
int adm_store_up(const struct gw_node *node);

#endif
