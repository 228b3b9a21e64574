/* Worker life cycle: listener, event loop thread, store connection, and the
 * SIGTERM drain; see worker.h. */
#include "gateway/worker.h"

#include "common/log.h"
#include "gateway/credentials.h"
#include "gateway/pool.h"
#include "gateway/retention.h"
#include "gateway/session.h"
#include "router/rt_pool.h"
#include "store/agent.h"
#include "store/upload.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	if (w->stopping && !gw_session_any(w) && !w->sweeping_self)
		event_base_loopexit(w->base, NULL);
}

void gw_worker_session_gone(struct gw_worker *w)
{
	finish_if_idle(w);
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct gw_worker *w = arg;
	w->sweeping_self = 0;
	int n = gw_session_free_all(w);
	if (n)
		gw_log(GW_LOG_WARN, "worker %s: drain_timeout reached, %d sessions closed",
		       w->wc->name, n);
	finish_if_idle(w);
}

/* Drain and SIGTERM (docs/operations.md "Draining a worker"): the router moves this
 * worker's assigned agents elsewhere, and the connected ones get REASSIGN
 * through the pool; every other session gets ERROR draining after its
 * owed responses. Without Redis nothing can be moved: ERROR draining to all. */
static void tell_sessions(struct gw_worker *w, const char *why)
{
	int moving = 0;
	if (w->pool) {
		gw_pool_heartbeat(w); /* "draining" first: the router's scripts skip this worker */
		rt_pool_set_leaving(w->pool, 1);
		moving = rt_pool_sweep_away(w->pool, w->wc->name) == 0;
	}
	w->sweeping_self = moving;
	gw_session_drain(w, moving, why);
}

/* The router finished moving this worker's agents: whoever was not sent
 * REASSIGN (the move failed, or raced) gets ERROR draining. */
void gw_worker_swept(struct gw_worker *w)
{
	if (!w->sweeping_self)
		return;
	w->sweeping_self = 0;
	gw_session_end_reassign_wait(w, w->stopping ? "shutting down" : "draining");
	finish_if_idle(w);
}

/* SIGTERM: stop listening, let every session finish the request it is in
 * and send it ERROR draining (or REASSIGN), then leave the loop
 * (drain_timeout at most). */
static void begin_stop(struct gw_worker *w)
{
	if (w->stopping)
		return;
	w->stopping = 1;
	gw_retention_stop(w->retention);
	atomic_store(&w->gauges.draining, 1);
	close_listener(w);
	gw_log(GW_LOG_INFO, "worker %s: draining %d sessions", w->wc->name,
	       gw_session_connections(w));
	tell_sessions(w, "shutting down");
	struct timeval tv = {w->conf->drain_timeout, 0};
	evtimer_add(w->drain_timer, &tv);
	finish_if_idle(w);
}

/* Admin drain: stop listening (new connects are refused), REASSIGN to the
 * router-assigned agents whose primary this is, ERROR draining to the
 * rest once they have their owed responses. */
void gw_worker_drain(struct gw_worker *w)
{
	if (w->drained || w->stopping)
		return;
	w->drained = 1;
	atomic_store(&w->gauges.draining, 1);
	close_listener(w);
	gw_log(GW_LOG_INFO, "worker %s: drained by the admin (%d sessions told)", w->wc->name,
	       gw_session_connections(w));
	tell_sessions(w, "draining");
}

static int bind_listener(struct gw_worker *w, char *err, size_t errlen);

void gw_worker_resume(struct gw_worker *w)
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
		gw_worker_drain(w);
	if (cmds & GW_CMD_RESUME)
		gw_worker_resume(w);
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
	if (up)
		gw_pool_store_up(w);
	/* The listener is bound at start but accepts only once the store has
	 * been reached: a worker that never had a store serves nobody. Later
	 * outages are answered per request (store_unavailable). */
	if (up && !w->accepting && w->listener && !w->stopping && !w->drained) {
		w->accepting = 1;
		evconnlistener_enable(w->listener);
		gw_log(GW_LOG_INFO, "worker %s: accepting on %s", w->wc->name, w->wc->listen);
		gw_pool_heartbeat(w);
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
	if (index == 0 && !(w->retention = gw_retention_new(w->base, conf, w->wc->name,
	                                                    &w->counters, &w->gauges))) {
		snprintf(err, errlen, "worker %s: out of memory", w->wc->name);
		return NULL;
	}
	w->n_stores = conf->store_connections > 0 ? conf->store_connections : 1;
	for (int i = 0; i < w->n_stores; i++) {
		char name[160];
		snprintf(name, sizeof(name), "%s/%s/%d", conf->node_name, w->wc->name, i);
		w->stores[i] = st_conn_new(w->base, conf->conninfo, name, on_store_state, w);
		if (!w->stores[i]) {
			snprintf(err, errlen, "worker %s: out of memory", w->wc->name);
			return NULL;
		}
		st_conn_set_timeout(w->stores[i], conf->store_timeout * 1000);
	}
	char hname[160];
	snprintf(hname, sizeof(hname), "%s/%s/hello", conf->node_name, w->wc->name);
	w->hello_store = st_conn_new(w->base, conf->conninfo, hname, on_hello_store_state, w);
	if (w->hello_store) {
		st_conn_set_timeout(w->hello_store, conf->store_timeout * 1000);
		st_conn_on_notify(w->hello_store, on_hello_store_notify, w);
	}
	if (!w->hello_store || !(w->sessions = gw_session_table_new()) ||
	    !(w->auth_guard = gw_auth_guard_new()) || gw_revoke_init(w) != 0 ||
	    !(w->uploads = st_uploads_new(w->base, pick_store, w, conf->max_pending,
	                                  conf->max_pending_per_sender)) ||
	    !(w->acks = st_acks_new(w->base, pick_store, w)) ||
	    !(w->fetches = st_fetches_new(w->base, pick_store, w))) {
		snprintf(err, errlen, "worker %s: out of memory", w->wc->name);
		return NULL;
	}
	gw_pool_init(w);
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
	gw_session_free_all(w);
	gw_pool_free(w);
	gw_retention_free(w->retention);
	gw_revoke_free(w);
	gw_auth_guard_free(w->auth_guard);
	st_uploads_free(w->uploads);
	st_group_free(w->acks);
	st_group_free(w->fetches);
	for (int i = 0; i < w->n_stores; i++)
		st_conn_free(w->stores[i]);
	st_conn_free(w->hello_store);
	close_listener(w);
	gw_accept_guard_free(&w->accept_guard);
	event_free(w->command_ev);
	event_free(w->drain_timer);
	event_base_free(w->base);
	qs_buf_free(&w->scratch);
	gw_session_table_free(w->sessions);
	free(w);
}
