/* Worker life cycle: listener, event loop thread, store connection, and the
 * SIGTERM drain; see worker.h. */
#include "gateway/worker.h"

#include "common/clock.h"
#include "common/log.h"
#include "gateway/credentials.h"
#include "gateway/retention.h"
#include "gateway/session.h"
#include "router/rt_pool.h"
#include "store/queries.h"
#include "store/agent.h"
#include "store/upload.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct st_conn *gw_worker_store(struct gw_worker *w)
{
	struct st_conn *best = w->stores[0];
	int best_n = -1;
	for (int i = 0; i < w->n_stores; i++) {
		int n = st_conn_inflight(w->stores[i]);
		if (st_conn_is_up(w->stores[i]) && (best_n < 0 || n < best_n)) {
			best = w->stores[i];
			best_n = n;
		}
	}
	return best;
}

struct st_conn *gw_worker_hello_store(struct gw_worker *w)
{
	return w->hello_store && st_conn_is_up(w->hello_store) ? w->hello_store
	                                                       : gw_worker_store(w);
}

static struct st_conn *pick_store(void *arg)
{
	return gw_worker_store(arg);
}

static void format_peer(const struct sockaddr *sa, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(out, n, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(out, n, "[%s]:%u", host, port);
	} else {
		snprintf(out, n, "?");
	}
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
	struct gw_worker *w = arg;
	char peer[80], ip[64];
	format_peer(sa, peer, sizeof(peer));
	snprintf(ip, sizeof(ip), "%.*s", (int)(strrchr(peer, ':') - peer), peer);
	gw_session_accept(w, fd, peer, ip);
}

/* EMFILE and friends leave the connection in the backlog: the guard pauses
 * the listener (accept_guard.h). Anything else consumed its connection. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct gw_worker *w = arg;
	int err = EVUTIL_SOCKET_ERROR();
	if (!gw_accept_guard_on_error(&w->accept_guard, err))
		gw_log(GW_LOG_WARN, "worker %s: accept failed: %s", w->wc->name, strerror(err));
}

static void close_listener(struct gw_worker *w)
{
	gw_accept_guard_detach(&w->accept_guard);
	if (w->listener) {
		evconnlistener_free(w->listener);
		w->listener = NULL;
	}
}

static void finish_if_idle(struct gw_worker *w)
{
	if (w->stopping && TAILQ_EMPTY(&w->sessions) && !w->sweeping_self)
		event_base_loopexit(w->base, NULL);
}

void gw_worker_session_gone(struct gw_worker *w)
{
	finish_if_idle(w);
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct gw_worker *w = arg;
	struct gw_session *s;
	int n = 0;
	w->sweeping_self = 0;
	while ((s = TAILQ_FIRST(&w->sessions))) {
		gw_session_free(s);
		n++;
	}
	if (n)
		gw_log(GW_LOG_WARN, "worker %s: drain_timeout reached, %d sessions closed",
		       w->wc->name, n);
	finish_if_idle(w);
}

static void heartbeat(struct gw_worker *w);

static int awaits_reassign(const struct gw_worker *w, const struct gw_session *s)
{
	return s->primary_sent[0] == 0 && strcmp(s->primary, w->wc->name) == 0 &&
	       (s->state == GW_S_READY || s->state == GW_S_BUSY);
}

/* Drain and SIGTERM (gateway.md "Workers and nodes"): the router moves this
 * worker's assigned agents elsewhere, and the connected ones get REASSIGN
 * through the pool; every other session gets ERROR draining after its
 * owed responses. Without Redis nothing can be moved: ERROR draining to all. */
static void tell_sessions(struct gw_worker *w, const char *why)
{
	int moving = 0;
	if (w->pool) {
		heartbeat(w); /* "draining" first: the router's scripts skip this worker */
		rt_pool_set_leaving(w->pool, 1);
		moving = rt_pool_sweep_away(w->pool, w->wc->name) == 0;
	}
	w->sweeping_self = moving;
	for (struct gw_session *s = TAILQ_FIRST(&w->sessions), *next; s; s = next) {
		next = TAILQ_NEXT(s, link);
		if (s->reassign_timer)
			continue; /* told already */
		if (moving && awaits_reassign(w, s))
			s->awaiting_reassign = 1;
		else
			gw_session_error(s, QS_E_DRAINING, "worker %s is %s", w->wc->name, why);
	}
}

/* The router finished moving this worker's agents: whoever was not sent
 * REASSIGN (the move failed, or raced) gets ERROR draining. */
static void end_reassign_wait(struct gw_worker *w, const char *why)
{
	w->sweeping_self = 0;
	for (struct gw_session *s = TAILQ_FIRST(&w->sessions), *next; s; s = next) {
		next = TAILQ_NEXT(s, link);
		if (s->awaiting_reassign) {
			s->awaiting_reassign = 0;
			gw_session_error(s, QS_E_DRAINING, "worker %s is %s", w->wc->name, why);
		}
	}
}

/* SIGTERM: stop listening, let every session finish the request it is in
 * and send it ERROR draining (or REASSIGN), then leave the loop
 * (drain_timeout at most). */
static void begin_stop(struct gw_worker *w)
{
	if (w->stopping)
		return;
	w->stopping = 1;
	atomic_store(&w->gauges.draining, 1);
	close_listener(w);
	gw_log(GW_LOG_INFO, "worker %s: draining %d sessions", w->wc->name,
	       w->n_sessions + w->n_pending_hello);
	tell_sessions(w, "shutting down");
	struct timeval tv = {w->conf->drain_timeout, 0};
	evtimer_add(w->drain_timer, &tv);
	finish_if_idle(w);
}

/* Admin drain: stop listening (new connects are refused), REASSIGN to the
 * router-assigned agents whose primary this is, ERROR draining to the
 * rest once they have their owed responses. */
static void drain(struct gw_worker *w)
{
	if (w->drained || w->stopping)
		return;
	w->drained = 1;
	atomic_store(&w->gauges.draining, 1);
	close_listener(w);
	gw_log(GW_LOG_INFO, "worker %s: drained by the admin (%d sessions told)", w->wc->name,
	       w->n_sessions + w->n_pending_hello);
	tell_sessions(w, "draining");
}

static int bind_listener(struct gw_worker *w, char *err, size_t errlen);

static void resume(struct gw_worker *w)
{
	if (!w->drained || w->stopping)
		return;
	char err[256];
	if (bind_listener(w, err, sizeof(err)) != 0) {
		gw_log(GW_LOG_ERROR, "%s (still drained)", err);
		return;
	}
	w->drained = 0;
	atomic_store(&w->gauges.draining, 0);
	if (w->pool)
		rt_pool_set_leaving(w->pool, 0);
	gw_log(GW_LOG_INFO, "worker %s: resumed, accepting on %s", w->wc->name, w->wc->listen);
}

static void on_command(evutil_socket_t fd, short what, void *arg)
{
	struct gw_worker *w = arg;
	int cmds = atomic_exchange(&w->commands, 0);
	if (cmds & GW_CMD_STOP)
		begin_stop(w);
	if (cmds & GW_CMD_DRAIN)
		drain(w);
	if (cmds & GW_CMD_RESUME)
		resume(w);
}

/* ---- the pool's view of this worker (Redis) ---- */

static void heartbeat(struct gw_worker *w)
{
	int sessions = 0, on_primary = 0;
	for (struct gw_session *s = w->by_agent; s; s = s->hh.next) {
		sessions++;
		on_primary += s->on_primary;
	}
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
	heartbeat(w);
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

static void on_announced(void *arg, uint64_t epoch, const char *primary)
{
	struct gw_ticket *t = arg;
	struct gw_session *s = t->s;
	free(t);
	if (!s)
		return;
	s->ticket = NULL;
	if (!epoch)
		return;
	s->epoch = epoch;
	/* Router-assigned, and its worker is gone meanwhile: the router chose
	 * again. */
	if (!s->primary_sent[0] && primary[0] && strcmp(primary, s->primary) != 0)
		gw_session_reassign(s, primary);
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
	heartbeat(w);
	announce_sessions(w);
}

/* Tells the pool about every live session here, superseding nobody. */
static void announce_sessions(struct gw_worker *w)
{
	int n = 0;
	for (struct gw_session *s = w->by_agent; s; s = s->hh.next) {
		if (s->state == GW_S_CLOSING || s->state == GW_S_WELCOMING || s->ticket)
			continue;
		struct gw_ticket *t = malloc(sizeof(*t));
		if (!t)
			break;
		t->s = s;
		s->ticket = t;
		struct rt_claim c = {s->agent,        s->primary, s->primary_sent[0] != 0,
		                     s->primary_sent, s->primary, s->persist,
		                     s->since_ms};
		if (rt_pool_claim(w->pool, &c, 1, on_announced, t) != 0) {
			s->ticket = NULL;
			free(t);
			break;
		}
		n++;
	}
	if (n)
		gw_log(GW_LOG_INFO, "worker %s: re-announced %d sessions", w->wc->name, n);
}

static void on_pool_push(void *arg, const char *agent, int64_t commit_ms, int n, const char *sw)
{
	gw_push_deliver(arg, agent, commit_ms, n, sw);
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

void gw_worker_record_assignments(struct gw_worker *w, const char *const *agents,
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
	gw_worker_record_assignments(w, agents, primaries, n);
	for (int i = 0; i < n; i++) {
		struct gw_session *s = gw_session_find(w, agents[i]);
		if (s)
			gw_session_reassign(s, primaries[i]);
	}
}

static void on_pool_swept(void *arg, const char *from, int moved, int failed)
{
	struct gw_worker *w = arg;
	if (strcmp(from, w->wc->name) == 0 && w->sweeping_self) {
		end_reassign_wait(w, w->stopping ? "shutting down" : "draining");
		finish_if_idle(w);
	}
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
		drain(w);
	else
		resume(w);
}

static void on_store_state(void *arg, int up)
{
	struct gw_worker *w = arg;
	w->stores_up += up ? 1 : -1;
	if (w->stores_up != (up ? 1 : 0))
		return; /* the store was (and stays) reachable through another connection */
	atomic_store(&w->gauges.store_up, up);
	gw_log(up ? GW_LOG_INFO : GW_LOG_WARN, "worker %s: store %s", w->wc->name,
	       up ? "up" : "down");
	if (up && w->refill_pending)
		refill_from_store(w);
	/* The listener is bound at start but accepts only once the store has
	 * been reached: a worker that never had a store serves nobody. Later
	 * outages are answered per request (store_unavailable). */
	if (up && !w->accepting && w->listener && !w->stopping && !w->drained) {
		w->accepting = 1;
		evconnlistener_enable(w->listener);
		gw_log(GW_LOG_INFO, "worker %s: accepting on %s", w->wc->name, w->wc->listen);
		heartbeat(w);
	}
}

/* The HELLO connection: token removals are heard on it (credentials.h). */
static void on_hello_store_state(void *arg, int up)
{
	gw_revoke_store_state(arg, up);
}

static void on_hello_store_notify(void *arg, const char *channel, const char *payload)
{
	gw_revoke_notified(arg, channel, payload);
}

static int bind_listener(struct gw_worker *w, char *err, size_t errlen)
{
	w->listener = evconnlistener_new_bind(
	    w->base, on_accept, w,
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024,
	    (const struct sockaddr *)&w->wc->sa, (int)w->wc->sa_len);
	if (!w->listener) {
		snprintf(err, errlen, "worker %s: cannot listen on %s: %s", w->wc->name,
		         w->wc->listen, strerror(errno));
		return -1;
	}
	evconnlistener_set_error_cb(w->listener, on_accept_error);
	gw_accept_guard_attach(&w->accept_guard, w->listener);
	return 0;
}

struct gw_worker *gw_worker_new(const struct gw_config *conf, int index, char *err, size_t errlen)
{
	struct gw_worker *w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	w->conf = conf;
	w->wc = &conf->workers[index];
	w->index = index;
	w->limits.max_frame = conf->max_frame;
	w->limits.max_batch = (uint16_t)conf->max_batch;
	TAILQ_INIT(&w->sessions);
	w->base = event_base_new();
	if (!w->base) {
		snprintf(err, errlen, "worker %s: cannot create an event loop", w->wc->name);
		free(w);
		return NULL;
	}
	snprintf(w->label, sizeof(w->label), "worker %s", w->wc->name);
	int rc =
	    gw_accept_guard_init(&w->accept_guard, w->base, w->label, &w->gauges.listener_paused);
	if (rc != 0)
		snprintf(err, errlen, "worker %s: out of memory", w->wc->name);
	if (rc != 0 || bind_listener(w, err, errlen) != 0) {
		gw_accept_guard_free(&w->accept_guard);
		event_base_free(w->base);
		free(w);
		return NULL;
	}
	evconnlistener_disable(w->listener); /* until the store is first reached */
	w->command_ev = event_new(w->base, -1, 0, on_command, w);
	w->drain_timer = evtimer_new(w->base, on_drain_deadline, w);
	/* the node's first worker runs the lifecycle job (retention.h) */
	if (index == 0 && !(w->retention = gw_retention_new(w))) {
		snprintf(err, errlen, "worker %s: out of memory", w->wc->name);
		return NULL;
	}
	w->n_stores = conf->store_connections > 0 ? conf->store_connections : 1;
	for (int i = 0; i < w->n_stores; i++) {
		char name[96];
		snprintf(name, sizeof(name), "%s/%d", w->wc->name, i);
		w->stores[i] = st_conn_new(w->base, conf->conninfo, name, on_store_state, w);
		if (!w->stores[i]) {
			snprintf(err, errlen, "worker %s: out of memory", w->wc->name);
			return NULL;
		}
		st_conn_set_timeout(w->stores[i], conf->store_timeout * 1000);
	}
	char hname[96];
	snprintf(hname, sizeof(hname), "%s/hello", w->wc->name);
	w->hello_store = st_conn_new(w->base, conf->conninfo, hname, on_hello_store_state, w);
	if (w->hello_store) {
		st_conn_set_timeout(w->hello_store, conf->store_timeout * 1000);
		st_conn_on_notify(w->hello_store, on_hello_store_notify, w);
	}
	if (!w->hello_store || !(w->auth_guard = gw_auth_guard_new()) || gw_revoke_init(w) != 0 ||
	    !(w->uploads = st_uploads_new(w->base, pick_store, w, conf->max_pending,
	                                  conf->max_pending_per_sender)) ||
	    !(w->acks = st_acks_new(w->base, pick_store, w))) {
		snprintf(err, errlen, "worker %s: out of memory", w->wc->name);
		return NULL;
	}
	struct rt_pool_conf pc = {conf->redis_host,    conf->redis_port, conf->redis_password,
	                          conf->redis_prefix,  w->wc->name,      conf->node_name,
	                          w->wc->capacity,     w->wc->tls,       conf->epsilon,
	                          conf->reassign_after};
	struct rt_pool_hooks hooks = {on_pool_push,    on_pool_supersede, on_pool_state,
	                              on_pool_command, on_pool_reassign,  on_pool_moved,
	                              on_pool_swept,   on_pool_wiped};
	w->pool = rt_pool_new(w->base, &pc, &hooks, w);
	w->heartbeat_timer = event_new(w->base, -1, EV_PERSIST, on_heartbeat, w);
	struct timeval quarter = {0, 250000};
	w->fast_beats = 20;
	event_add(w->heartbeat_timer, &quarter);
	return w;
}

static void *worker_main(void *arg)
{
	struct gw_worker *w = arg;
	gw_log(GW_LOG_INFO, "worker %s: listening on %s", w->wc->name, w->wc->listen);
	event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
	gw_log(GW_LOG_INFO, "worker %s: stopped", w->wc->name);
	atomic_store(&w->stopped, 1);
	return NULL;
}

int gw_worker_start(struct gw_worker *w)
{
	return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void gw_worker_post(struct gw_worker *w, enum gw_command cmd)
{
	atomic_fetch_or(&w->commands, (int)cmd);
	event_active(w->command_ev, EV_TIMEOUT, 0);
}

void gw_worker_join_and_free(struct gw_worker *w)
{
	pthread_join(w->thread, NULL);
	struct gw_session *s;
	while ((s = TAILQ_FIRST(&w->sessions)))
		gw_session_free(s);
	rt_pool_free(w->pool);
	gw_retention_free(w->retention);
	gw_revoke_free(w);
	gw_auth_guard_free(w->auth_guard);
	st_uploads_free(w->uploads);
	st_group_free(w->acks);
	for (int i = 0; i < w->n_stores; i++)
		st_conn_free(w->stores[i]);
	st_conn_free(w->hello_store);
	event_free(w->heartbeat_timer);
	close_listener(w);
	gw_accept_guard_free(&w->accept_guard);
	event_free(w->command_ev);
	event_free(w->drain_timer);
	event_base_free(w->base);
	qs_buf_free(&w->scratch);
	free(w);
}
