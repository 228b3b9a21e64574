/* The pool's view of one worker (docs/design.md "Redis"): its rt_pool
 * connection and what the pool tells it, the registry heartbeat, announcing
 * its sessions again and refilling Redis from the store; see pool.h. */
#include "gateway/pool.h"

#include "common/clock.h"
#include "common/log.h"
#include "gateway/session.h"
#include "gateway/worker.h"
#include "router/rt_pool.h"
#include "store/group.h"
#include "store/queries.h"
#include "store/store.h"

#include <event2/event.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_pool_heartbeat(struct gw_worker *w)
{
	int sessions, on_primary;
	gw_session_tally(w, &sessions, &on_primary);
	/* A worker joins the pool (the router may give it agents) once it
	 * accepts, i.e. once its store was first reached. */
	if (!w->pool || !w->accepting)
		return;
	char address[300];
	snprintf(address, sizeof(address), strchr(w->wc->adv[0].host, ':') ? "[%s]:%u" : "%s:%u",
	         w->wc->adv[0].host, w->wc->adv[0].port);
	uint64_t push[RT_PUSH_N];
	for (int i = 0; i < RT_PUSH_N; i++)
		push[i] = atomic_load_explicit(&w->counters.push[i], memory_order_relaxed);
	/* Requests per second over the last 10 s: one sample a second. */
	uint64_t req = atomic_load_explicit(&w->counters.requests, memory_order_relaxed);
	int64_t now = gw_mono_ms();
	int last = (w->req_hist_i + 9) % 10;
	if (w->req_ms[last] == 0 || now - w->req_ms[last] >= 1000) {
		w->req_hist[w->req_hist_i] = req;
		w->req_ms[w->req_hist_i] = now;
		w->req_hist_i = (w->req_hist_i + 1) % 10;
	}
	int oldest = w->req_ms[w->req_hist_i] ? w->req_hist_i : 0;
	double span_s = (double)(now - w->req_ms[oldest]) / 1000.0;
	double rate = span_s >= 1.0 ? (double)(req - w->req_hist[oldest]) / span_s : 0.0;
	struct rt_worker_info info = {
	    .address = address,
	    .listen = w->wc->listen,
	    .state = w->drained || w->stopping ? "draining" : "serving",
	    .sessions = sessions,
	    .on_primary = on_primary,
	    .syncs_per_s = rate,
	    .push = push,
	    .push_names = rt_push_result_names,
	    .n_push = RT_PUSH_N,
	};
	rt_pool_heartbeat(w->pool, &info);
}

/* Every 250 ms for the first 5 s (the pool's view settles while the
 * workers of a starting node register), then every second. */
static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
	struct gw_worker *w = arg;
	gw_pool_heartbeat(w);
	uint64_t groups, parts;
	st_group_stats(w->uploads, &groups, &parts);
	atomic_store_explicit(&w->counters.store_groups, groups, memory_order_relaxed);
	atomic_store_explicit(&w->counters.store_group_parts, parts, memory_order_relaxed);
	/* Handshakes and bursts of sessions leave freed memory in glibc's
	 * arenas that RSS keeps counting: the node's first worker hands it back
	 * to the system once a second (malloc_trim covers every arena). */
	if (w->index == 0)
		malloc_trim(0);
	if (w->fast_beats > 0 && --w->fast_beats == 0) {
		struct timeval second = {1, 0};
		event_add(w->heartbeat_timer, &second);
	}
}

/* epoch 0: the pool names another worker's session for the agent. */
static void on_announced(void *arg, uint64_t epoch, const char *primary)
{
	struct gw_session *s = gw_ticket_redeem(arg);
	if (s && epoch)
		gw_session_announced(s, epoch, primary);
	else if (s)
		gw_session_announce_refused(s);
}

static void announce_sessions(struct gw_worker *w);

/* Redis is back (or up for the first time): register at once, and tell the
 * pool about every live session here, superseding nobody. */
static void on_pool_state(void *arg, int up)
{
	struct gw_worker *w = arg;
	atomic_store(&w->gauges.redis_up, up);
	gw_log(up ? GW_LOG_INFO : GW_LOG_WARN, "worker %s: redis %s", w->wc->name,
	       up ? "up" : "down: pushes fail, syncs go on");
	if (!up)
		return;
	gw_pool_heartbeat(w);
	announce_sessions(w);
}

struct announce {
	struct gw_worker *w;
	int n;
};

/* Announces one session; nonzero stops (out of memory, Redis gone). */
static int announce_one(struct gw_session *s, void *arg)
{
	struct announce *a = arg;
	if (!gw_session_announceable(s))
		return 0;
	struct rt_claim c;
	gw_session_claim_of(s, &c);
	struct gw_ticket *t = gw_ticket_new(s);
	if (!t)
		return 1;
	if (rt_pool_claim(a->w->pool, &c, 1, on_announced, t) != 0) {
		gw_ticket_redeem(t);
		return 1;
	}
	a->n++;
	return 0;
}

/* Tells the pool about every live session here, superseding nobody. */
static void announce_sessions(struct gw_worker *w)
{
	struct announce a = {w, 0};
	gw_session_each_agent(w, announce_one, &a);
	if (a.n)
		gw_log(GW_LOG_INFO, "worker %s: re-announced %d sessions", w->wc->name, a.n);
}

static void on_pool_push(void *arg, const char *agent, int64_t commit_ms, int n, const char *sw)
{
	gw_push_deliver(arg, agent, commit_ms, n, sw);
}

/* Pushes routed while the channel was not subscribed are lost: whoever
 * is owed one gets it now (issue 19: an idle device would wait for ever). */
static void on_pool_listening(void *arg)
{
	gw_push_resync(arg);
}

static void on_pool_supersede(void *arg, const char *agent, uint64_t epoch)
{
	gw_push_supersede(arg, agent, epoch);
}

static void on_pool_reassign(void *arg, const char *agent, const char *primary)
{
	struct gw_worker *w = arg;
	struct gw_session *s = gw_session_find(w, agent);
	if (s)
		gw_session_reassign(s, primary);
}

static void on_recorded(void *arg, const PGresult *res, const char *err)
{
	struct gw_worker *w = arg;
	if (!res)
		gw_log(GW_LOG_WARN, "worker %s: router assignments not recorded in the store: %s",
		       w->wc->name, err);
}

void gw_pool_record_assignments(struct gw_worker *w, const char *const *agents,
                                const char *const *primaries, int n)
{
	if (!st_assign(gw_worker_store(w), agents, primaries, n, on_recorded, w))
		gw_log(GW_LOG_WARN, "worker %s: store down: %d router assignments not recorded",
		       w->wc->name, n);
}

/* Moves this worker's router made: recorded in the store; the sessions
 * here get their REASSIGN at once (the pool's reassign message, on the
 * other connection, may come after the drain has ended). */
static void on_pool_moved(void *arg, const char *const *agents, const char *const *primaries, int n)
{
	struct gw_worker *w = arg;
	gw_pool_record_assignments(w, agents, primaries, n);
	for (int i = 0; i < n; i++) {
		struct gw_session *s = gw_session_find(w, agents[i]);
		if (s)
			gw_session_reassign(s, primaries[i]);
	}
}

static void on_pool_swept(void *arg, const char *from, int moved, int failed)
{
	struct gw_worker *w = arg;
	if (strcmp(from, w->wc->name) == 0)
		gw_worker_swept(w);
}

#define REFILL_BATCH 500

static void on_refill_rows(void *arg, const PGresult *res, const char *err)
{
	struct gw_worker *w = arg;
	if (!res) {
		gw_log(GW_LOG_WARN, "worker %s: cannot read router assignments to refill Redis: %s",
		       w->wc->name, err);
		return;
	}
	int n = PQntuples(res);
	const char *agents[REFILL_BATCH], *prims[REFILL_BATCH];
	for (int i = 0; i < n; i += REFILL_BATCH) {
		int k = 0;
		for (int j = i; j < n && k < REFILL_BATCH; j++, k++) {
			agents[k] = PQgetvalue(res, j, 0);
			prims[k] = PQgetvalue(res, j, 1);
		}
		rt_pool_refill(w->pool, agents, prims, k);
	}
	gw_log(GW_LOG_INFO, "worker %s: refilled Redis with %d router assignments from the store",
	       w->wc->name, n);
}

static void refill_from_store(struct gw_worker *w)
{
	w->refill_pending = !st_router_assignments(gw_worker_store(w), on_refill_rows, w);
	if (w->refill_pending)
		gw_log(GW_LOG_INFO, "worker %s: Redis is refilled once the store is up",
		       w->wc->name);
}

/* Redis lost its state (or this is its first sight of this worker): tell
 * it about the sessions here again; the node's first worker refills the
 * router's assignments from the store. */
static void on_pool_wiped(void *arg)
{
	struct gw_worker *w = arg;
	announce_sessions(w);
	if (w->index == 0)
		refill_from_store(w);
}

static void on_pool_command(void *arg, const char *command)
{
	struct gw_worker *w = arg;
	gw_log(GW_LOG_INFO, "worker %s: %s asked through the pool", w->wc->name, command);
	if (strcmp(command, "drain") == 0)
		gw_worker_drain(w);
	else
		gw_worker_resume(w);
}

void gw_pool_store_up(struct gw_worker *w)
{
	if (w->refill_pending)
		refill_from_store(w);
}

void gw_pool_init(struct gw_worker *w)
{
	const struct gw_config *conf = w->conf;
	struct rt_pool_conf pc = {gw_config_redis(conf), conf->redis_prefix,  w->wc->name,
	                          conf->node_name,       w->wc->capacity,     w->wc->tls,
	                          conf->epsilon,         conf->reassign_after};
	struct rt_pool_hooks hooks = {
	    .on_push = on_pool_push,
	    .on_supersede = on_pool_supersede,
	    .on_listening = on_pool_listening,
	    .on_state = on_pool_state,
	    .on_command = on_pool_command,
	    .on_reassign = on_pool_reassign,
	    .on_moved = on_pool_moved,
	    .on_swept = on_pool_swept,
	    .on_wiped = on_pool_wiped,
	};
	w->pool = rt_pool_new(w->base, &pc, &hooks, w);
	w->heartbeat_timer = event_new(w->base, -1, EV_PERSIST, on_heartbeat, w);
	struct timeval quarter = {0, 250000};
	w->fast_beats = 20;
	event_add(w->heartbeat_timer, &quarter);
}

void gw_pool_free(struct gw_worker *w)
{
	rt_pool_free(w->pool);
	w->pool = NULL;
	if (w->heartbeat_timer)
		event_free(w->heartbeat_timer);
	w->heartbeat_timer = NULL;
}
