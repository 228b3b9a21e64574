/* A node: one qagw process with its workers, its admin port and the main
 * thread's own store and Redis connections (for the admin port and for
 * routing pushes of server-side messages). The main thread owns this struct;
 * workers never touch it. Other modules read workers only through their
 * atomics (counters, gauges) and post commands with gw_worker_post. */
#ifndef GW_NODE_H
#define GW_NODE_H

#include "gateway/config.h"
#include "gateway/worker.h"

#include <stdint.h>

struct event_base;
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
};

/* The local worker of that name, or NULL. */
struct gw_worker *gw_node_worker(struct gw_node *n, const char *name);

/* Creates n->store (LISTEN qa_send: server-side messages are pushed) and
 * n->redis on n->base. Returns 0 or -1. */
int gw_node_start_services(struct gw_node *n) __attribute__((warn_unused_result));
void gw_node_stop_services(struct gw_node *n);

#endif
