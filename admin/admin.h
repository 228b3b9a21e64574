/* The admin port (admin.md; docs/admin.md): an HTTP/1.1 listener (evhttp) on
 * the node's main event loop serving health, Prometheus metrics, the JSON API
 * and the dashboard. It reads the workers' counters and gauges, the pool's
 * routing state in Redis (node->redis) and the store (node->store), and posts
 * drain/resume to local workers. Started and stopped by gateway/main.c. */
#ifndef ADM_ADMIN_H
#define ADM_ADMIN_H

#include <stddef.h>

struct gw_node;
struct adm_server;

/* Binds node->conf.admin_sa on node->base. node (and its workers, store and
 * redis, which may be NULL or down) must outlive the server. Returns NULL
 * with a message in err on failure. */
struct adm_server *adm_start(struct gw_node *node, char *err, size_t errlen);

/* Closes the listener and every admin connection. Requests still waiting for
 * Redis or the store are dropped unanswered; their late replies are ignored. */
void adm_stop(struct adm_server *a);

#endif
