/* A worker: one named server of the pool with its own listener, event loop
 * thread and store connection (docs/operations.md "Draining a worker"). Everything in
 * struct gw_worker belongs to the worker's thread, except the counters (read
 * by others), `commands` (set by the main thread, then event_active) and
 * `stopped` (set by the worker's thread as its loop returns). */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include "gateway/accept_guard.h"
#include "gateway/config.h"
#include "gateway/counters.h"
#include "proto/qs_codec.h"

#include <pthread.h>
#include <stdatomic.h>

struct event_base;
struct event;
struct evconnlistener;
struct st_conn;
struct st_group;
struct rt_pool;
struct gw_tls;
struct gw_session_table;
struct gw_auth_guard;
struct gw_revoke;

/* Commands the main thread posts to a worker. */
enum gw_command {
	GW_CMD_STOP = 1,   /* drain (SIGTERM), then leave the loop */
	GW_CMD_DRAIN = 2,  /* admin drain: stop listening, ERROR draining to sessions */
	GW_CMD_RESUME = 4, /* admin resume: listen again */
};

struct gw_worker {
	const struct gw_config *conf; /* the node's configuration (read-only) */
	const struct gw_worker_conf *wc;
	int index;
	pthread_t thread;
	struct event_base *base;
	struct evconnlistener *listener;            /* NULL once draining */
	struct gw_accept_guard accept_guard;        /* pauses it when descriptors run out */
	char label[80];                             /* "worker NAME", for the guard's log */
	struct st_conn *stores[GW_MAX_STORE_CONNS]; /* [store] connections of this worker */
	int n_stores;
	int stores_up;
	struct st_conn *hello_store; /* HELLO's own: a WELCOME never waits behind bulk work */
	struct st_group *uploads;    /* group commit of the sessions' UPLOADs (store/upload.h) */
	struct st_group *acks;       /* ... and of their DELIVER_ACKs (store/agent.h) */
	struct st_group *fetches;    /* ... and of their FETCHes (store/agent.h) */
	struct rt_pool *pool;        /* Redis routing state (pool.c, docs/design.md) */
	struct gw_session_table *sessions; /* every connection here: session.c's (session.h) */
	struct gw_tls *tls;                /* the node's TLS context (tls = on), else NULL */
	struct event *heartbeat_timer;     /* pool.c: registry heartbeat and push figures, 1 s */
	int fast_beats;                    /* heartbeats left at 250 ms after start */
	int drained;                       /* admin drain: not listening until resumed */
	struct event *command_ev;
	_Atomic int commands;
	_Atomic int stopped; /* 1 once the loop has returned: the thread may be joined */
	struct event *drain_timer;
	struct gw_retention *retention;   /* the lifecycle job, on the node's first worker only */
	struct gw_auth_guard *auth_guard; /* failed HELLOs by source address (credentials.h) */
	struct gw_revoke *revoke;         /* removed tokens end live sessions (credentials.h) */
	int accepting; /* the listener was enabled (after the store was first reached) */
	int stopping;  /* SIGTERM drain under way: the loop exits when no session is left */
	struct qs_limits limits;
	struct qs_buf scratch; /* encoding buffer, reused by every session of this worker */
	struct gw_counters counters;
	uint64_t req_hist[10]; /* pool.c: the requests counter, one sample a second */
	int64_t req_ms[10];    /* when each sample was taken (0: none yet) */
	int req_hist_i;
	int sweeping_self;  /* draining: the router is moving this worker's agents */
	int refill_pending; /* pool.c: Redis needs the store's assignments, store was down */
	struct gw_gauges gauges;
};

/* Creates the worker and binds its listener (called by the main thread at
 * start, so a bad address stops the start). Returns NULL with err. */
struct gw_worker *gw_worker_new(const struct gw_config *conf, int index, char *err, size_t errlen);
int gw_worker_start(struct gw_worker *w) __attribute__((warn_unused_result));
/* From the main thread: post a command; the worker acts on its own thread. */
void gw_worker_post(struct gw_worker *w, enum gw_command cmd);
void gw_worker_join_and_free(struct gw_worker *w);

/* The connection of this worker's store with the fewest statements in
 * flight among those up (the first one when none is: its submit fails). */
struct st_conn *gw_worker_store(struct gw_worker *w);
/* The connection for HELLO (credentials and qa_hello): its own while it is
 * up, so that failover under load is not queued behind uploads. */
struct st_conn *gw_worker_hello_store(struct gw_worker *w);

/* Worker-thread calls from the worker's own modules. */
/* A session was freed (session.c): a stopping worker leaves its loop once
 * none is left. */
void gw_worker_session_gone(struct gw_worker *w);
/* Admin drain and resume, asked through the admin port or the pool (pool.c). */
void gw_worker_drain(struct gw_worker *w);
void gw_worker_resume(struct gw_worker *w);
/* The router finished moving this worker's agents (pool.c). */
void gw_worker_swept(struct gw_worker *w);

#endif
