/* A node: one qagw process with its workers, its admin port and the main
 * thread's own store and Redis connections (for the admin port and for
 * routing pushes of server-side messages). The main thread owns this struct;
 * workers never touch it. Other modules read workers only through their
 * atomics (counters, gauges) and post commands with gw_worker_post. */
#ifndef GW_NODE_H
#define GW_NODE_H

#include "gateway/config.h"
#include "gateway/worker.h"

#include <stdatomic.h>
#include <stdint.h>

struct event_base;
struct event;
struct st_conn;
struct rt_redis;

struct gw_node {
	struct gw_config conf;
	struct gw_worker *workers[GW_MAX_WORKERS];
	int n_workers;
	struct event_base *base; /* the main thread's loop */
	struct st_conn *store;   /* main thread: admin queries, LISTEN qa_send */
	struct rt_redis *redis;  /* main thread: admin reads, server-side push routing */
	int64_t started_ms;
	/* Service manager readiness (sd_notify, main thread): READY=1 once
	 * every worker accepts. Each probe runs on its worker's loop, which
	 * alone may read w->accepting, and answers through its state. */
	struct gw_ready_probe {
		struct gw_node *node;
		int index;
		_Atomic int state; /* 0 idle, 1 asked, 2 the worker accepts */
	} probes[GW_MAX_WORKERS];
	struct event *ready_timer; /* polls the probes until READY=1 is sent */
	int ready;                 /* READY=1 sent (a reload then ends with READY=1 again) */
};

/* The local worker of that name, or NULL. */
struct gw_worker *gw_node_worker(struct gw_node *n, const char *name);

/* Creates n->store (LISTEN qa_send: server-side messages are pushed) and
 * n->redis on n->base. Returns 0 or -1. */
int gw_node_start_services(struct gw_node *n) __attribute__((warn_unused_result));
void gw_node_stop_services(struct gw_node *n);

/* Service manager notifications (sd_notify; no-ops without NOTIFY_SOCKET).
 * gw_node_watch_ready starts polling the workers (every 50 ms) and sends
 * READY=1 with a STATUS= line once every one accepts; call it after the
 * admin port listens and the worker threads run. Returns 0 or -1. */
int gw_node_watch_ready(struct gw_node *n) __attribute__((warn_unused_result));
/* RELOADING=1 (SIGHUP) before a reload, READY=1 after it; nothing before the
 * node was first ready. */
void gw_node_notify_reloading(struct gw_node *n);
void gw_node_notify_reloaded(struct gw_node *n);
/* STOPPING=1: the drain has begun; readiness polling stops. */
void gw_node_notify_stopping(struct gw_node *n);
/* A free-form STATUS= line. */
void gw_node_notify_status(const char *status);

#endif
