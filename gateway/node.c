/* Node-level services on the main thread: the node's own store connection
 * (admin queries, and LISTEN qa_send so that messages sent with SQL or the
 * admin API are pushed like uploaded ones) and its Redis connection. */
#include "gateway/node.h"

#include "gateway/log.h"
#include "router/rt_pool.h"
#include "router/rt_redis.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void on_routed(void *arg, int failed, int delivered, const char *target,
                      const char *session_worker)
{
	struct notify_route *nr = arg;
	struct gw_node *n = nr->n;
	struct gw_worker *w = n->workers[0];
	enum gw_push_result r = GW_PUSH_N; /* the target worker counts the rest */
	if (failed)
		r = GW_PUSH_FAILED;
	else if (!target[0])
		r = GW_PUSH_NO_SESSION;
	else if (delivered == 0)
		r = session_worker[0] ? GW_PUSH_SUPPRESSED_OFF_PRIMARY : GW_PUSH_NO_SESSION;
	if (r != GW_PUSH_N) {
		gw_count_push(w, r);
		rt_account(n->redis, n->conf.redis_prefix, w->wc->name, nr->agent,
		           gw_push_result_names[r], -1);
	}
	free(nr);
}

/* One node of the pool routes each NOTIFY: the first to SET NX its id. */
static void on_claimed(void *arg, redisReply *r)
{
	struct notify_route *nr = arg;
	if (!r || r->type != REDIS_REPLY_STATUS) { /* nil: another node has it */
		if (!r)
			gw_count_push(nr->n->workers[0], GW_PUSH_FAILED);
		free(nr);
		return;
	}
	struct gw_node *n = nr->n;
	gw_count_push(n->workers[0], GW_PUSH_ROUTED);
	if (rt_route(n->redis, n->conf.redis_prefix, nr->agent, nr->commit_ms, 1, n->conf.push_any,
	             on_routed, nr) != 0) {
		gw_count_push(n->workers[0], GW_PUSH_FAILED);
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
	if (strcmp(channel, "qa_send") != 0 ||
	    sscanf(payload, "%120s %39s %lld", nr->agent, nr->id, &commit) != 3) {
		gw_log(GW_LOG_WARN, "store: unexpected notification on %s: %s", channel, payload);
		free(nr);
		return;
	}
	nr->commit_ms = commit;
	if (rt_redis_command(n->redis, on_claimed, nr, "SET %snotified:%s 1 NX EX 60",
	                     n->conf.redis_prefix, nr->id) != 0) {
		gw_count_push(n->workers[0], GW_PUSH_FAILED); /* Redis down: no push */
		free(nr);
	}
}

static void on_listen(void *arg, const PGresult *res, const char *err)
{
	if (!res)
		gw_log(GW_LOG_WARN, "store: LISTEN qa_send failed: %s", err);
}

static void on_store_state(void *arg, int up)
{
	struct gw_node *n = arg;
	if (!up)
		return;
	struct st_params p = {0};
	if (!st_submit(n->store, "LISTEN qa_send", &p, on_listen, n))
		gw_log(GW_LOG_WARN, "store: cannot LISTEN qa_send");
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
	n->redis = rt_redis_new(n->base, n->conf.redis_host, n->conf.redis_port,
	                        n->conf.redis_password, name, NULL, NULL);
	return n->redis ? 0 : -1;
}

void gw_node_stop_services(struct gw_node *n)
{
	rt_redis_free(n->redis);
	st_conn_free(n->store);
	n->redis = NULL;
	n->store = NULL;
}
