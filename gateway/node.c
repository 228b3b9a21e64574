/* Node-level services on the main thread: the node's own store connection
 * (admin queries, and LISTEN qa_send so that messages sent with SQL or the
 * admin API are pushed like uploaded ones) and its Redis connection. */
#include "gateway/node.h"

#include "common/clock.h"
#include "common/log.h"
#include "router/rt_pool.h"
#include "router/rt_redis.h"
#include "router/rt_keys.h"
#include "store/queries.h"
#include "store/store.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

struct gw_worker *gw_node_worker(struct gw_node *n, const char *name)
{
	for (int i = 0; i < n->n_workers; i++)
		if (strcmp(n->workers[i]->wc->name, name) == 0)
			return n->workers[i];
	return NULL;
}

/* Pushes of server-side messages are counted on the node's first worker. */
struct notify_route {
	struct gw_node *n;
	char agent[121];
	char id[40];
	int64_t commit_ms;
};

static void on_routed(void *arg, int i, int failed, int delivered, const char *target,
                      const char *session_worker)
{
	struct notify_route *nr = arg;
	struct gw_node *n = nr->n;
	struct gw_worker *w = n->workers[0];
	enum rt_push_result r = rt_push_routed(failed, delivered, target, session_worker);
	if (r != RT_PUSH_N) {
		gw_count_push(w, r);
		rt_account(n->redis, n->conf.redis_prefix, w->wc->name, nr->agent,
		           rt_push_result_names[r], -1);
	}
	free(nr);
}

/* One node of the pool routes each NOTIFY: the first to SET NX its id. */
static void on_claimed(void *arg, redisReply *r)
{
	struct notify_route *nr = arg;
	if (!r || r->type != REDIS_REPLY_STATUS) { /* nil: another node has it */
		if (!r)
			gw_count_push(nr->n->workers[0], RT_PUSH_FAILED);
		free(nr);
		return;
	}
	struct gw_node *n = nr->n;
	gw_count_push(n->workers[0], RT_PUSH_ROUTED);
	const char *agent = nr->agent;
	const int one = 1;
	if (rt_route(n->redis, n->conf.redis_prefix, &agent, &one, 1, nr->commit_ms,
	             n->conf.push_any, on_routed, nr) != 0) {
		gw_count_push(n->workers[0], RT_PUSH_FAILED);
		free(nr);
	}
}

static void on_notify(void *arg, const char *channel, const char *payload)
{
	struct gw_node *n = arg;
	struct notify_route *nr = calloc(1, sizeof(*nr));
	long long commit = 0;
	if (!nr)
		return;
	nr->n = n;
	if (strcmp(channel, ST_SEND_CHANNEL) != 0 ||
	    sscanf(payload, "%120s %39s %lld", nr->agent, nr->id, &commit) != 3) {
		gw_log(GW_LOG_WARN, "store: unexpected notification on %s: %s", channel, payload);
		free(nr);
		return;
	}
	nr->commit_ms = commit;
	if (rt_redis_command(n->redis, on_claimed, nr, "SET %s" RT_KEY_NOTIFIED "%s 1 NX EX 60",
	                     n->conf.redis_prefix, nr->id) != 0) {
		gw_count_push(n->workers[0], RT_PUSH_FAILED); /* Redis down: no push */
		free(nr);
	}
}

static void on_listen(void *arg, const PGresult *res, const char *err)
{
	if (!res)
		gw_log(GW_LOG_WARN, "store: LISTEN " ST_SEND_CHANNEL " failed: %s", err);
}

static void on_store_state(void *arg, int up)
{
	struct gw_node *n = arg;
	if (!up)
		return;
	if (!st_listen_sends(n->store, on_listen, n))
		gw_log(GW_LOG_WARN, "store: cannot LISTEN " ST_SEND_CHANNEL);
}

int gw_node_start_services(struct gw_node *n)
{
	char name[80];
	snprintf(name, sizeof(name), "%s/node", n->conf.node_name);
	n->store = st_conn_new(n->base, n->conf.conninfo, name, on_store_state, n);
	if (n->store)
		st_conn_set_timeout(n->store, n->conf.store_timeout * 1000);
	if (!n->store)
		return -1;
	st_conn_on_notify(n->store, on_notify, n);
	struct rt_redis_conf rc = gw_config_redis(&n->conf);
	n->redis = rt_redis_new(n->base, &rc, name, NULL, NULL);
	return n->redis ? 0 : -1;
}

void gw_node_stop_services(struct gw_node *n)
{
	if (n->ready_timer)
		event_free(n->ready_timer);
	n->ready_timer = NULL;
	rt_redis_free(n->redis);
	st_conn_free(n->store);
	n->redis = NULL;
	n->store = NULL;
}

/* ---- service manager notifications (sd_notify) ---- */

#define READY_POLL_US 50000

/* On the worker's thread: the only place w->accepting may be read. */
static void on_probe(evutil_socket_t fd, short what, void *arg)
{
	struct gw_ready_probe *p = arg;
	atomic_store(&p->state, p->node->workers[p->index]->accepting ? 2 : 0);
}

static void serving_status(struct gw_node *n, char *out, size_t len)
{
	int k = snprintf(out, len, "serving: node %s, %d worker%s (", n->conf.node_name,
	                 n->n_workers, n->n_workers == 1 ? "" : "s");
	for (int i = 0; i < n->n_workers && k > 0 && (size_t)k < len; i++)
		k += snprintf(out + k, len - (size_t)k, "%s%s", i ? " " : "",
		              n->workers[i]->wc->name);
	if (k > 0 && (size_t)k < len)
		snprintf(out + k, len - (size_t)k, "), admin on %s", n->conf.admin_listen);
}

static void on_ready_poll(evutil_socket_t fd, short what, void *arg)
{
	struct gw_node *n = arg;
	int accepting = 0;
	for (int i = 0; i < n->n_workers; i++) {
		struct gw_ready_probe *p = &n->probes[i];
		int expected = 0;
		if (atomic_load(&p->state) == 2) {
			accepting++;
		} else if (atomic_compare_exchange_strong(&p->state, &expected, 1)) {
			struct timeval now = {0, 0};
			if (event_base_once(n->workers[i]->base, -1, EV_TIMEOUT, on_probe, p,
			                    &now) != 0)
				atomic_store(&p->state, 0); /* asked again next time */
		}
	}
	if (accepting < n->n_workers)
		return;
	event_del(n->ready_timer);
	n->ready = 1;
	char status[512];
	serving_status(n, status, sizeof(status));
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
	gw_log(GW_LOG_INFO, "node %s: ready (%s)", n->conf.node_name, status);
}

int gw_node_watch_ready(struct gw_node *n)
{
	for (int i = 0; i < n->n_workers; i++) {
		n->probes[i].node = n;
		n->probes[i].index = i;
		atomic_store(&n->probes[i].state, 0);
	}
	n->ready_timer = event_new(n->base, -1, EV_PERSIST, on_ready_poll, n);
	struct timeval tv = {0, READY_POLL_US};
	if (!n->ready_timer || event_add(n->ready_timer, &tv) != 0)
		return -1;
	sd_notify(0, "STATUS=starting: waiting for every worker to accept");
	return 0;
}

void gw_node_notify_reloading(struct gw_node *n)
{
	/* MONOTONIC_USEC: what Type=notify-reload (systemd 253+) asks for;
	 * older managers ignore it. */
	if (n->ready)
		sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading (SIGHUP)",
		           (unsigned long long)gw_mono_us());
}

void gw_node_notify_reloaded(struct gw_node *n)
{
	if (!n->ready)
		return;
	char status[512];
	serving_status(n, status, sizeof(status));
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void gw_node_notify_stopping(struct gw_node *n)
{
	if (n->ready_timer)
		event_del(n->ready_timer);
	sd_notifyf(0, "STOPPING=1\nSTATUS=draining: node %s stopping (drain_timeout %d s)",
	           n->conf.node_name, n->conf.drain_timeout);
}

void gw_node_notify_status(const char *status)
{
	sd_notifyf(0, "STATUS=%s", status);
}
