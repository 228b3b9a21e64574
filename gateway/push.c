/* Push (docs/design.md "Push accounting", protocol.md PUSH/PUSH_ACK): routing a push
 * when a message commits, delivering it on the agent's primary worker,
 * coalescing, and the accounting of docs/design.md "Push accounting".
 * Runs on the worker's thread; Redis calls go through router/rt_pool. */
#include "common/clock.h"
#include "common/log.h"
#include "gateway/session_int.h"
#include "gateway/worker.h"
#include "router/rt_pool.h"
#include "store/queries.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void account(struct gw_worker *w, const char *agent, enum rt_push_result r,
                    int64_t latency_ms)
{
	gw_count_push(w, r);
	if (w->pool)
		rt_pool_account(w->pool, agent, rt_push_result_names[r], latency_ms);
}

struct route_arg {
	struct gw_worker *w; /* workers outlive their Redis connections */
	int count;
	char agents[][121];
};

static void on_routed(void *arg, int i, int failed, int delivered, const char *target,
                      const char *session_worker)
{
	struct route_arg *ra = arg;
	struct gw_worker *w = ra->w;
	enum rt_push_result r = rt_push_routed(failed, delivered, target, session_worker);
	if (r != RT_PUSH_N) /* else the target worker counts what became of it */
		account(w, ra->agents[i], r, -1);
	if (i == ra->count - 1)
		free(ra);
}

void gw_push_route(struct gw_worker *w, const char *const *agents, const int *ns, int count,
                   int64_t commit_ms)
{
	if (count <= 0)
		return;
	for (int i = 0; i < count; i++)
		gw_count_push(w, RT_PUSH_ROUTED);
	struct route_arg *ra = malloc(sizeof(*ra) + (size_t)count * sizeof(ra->agents[0]));
	if (ra) {
		ra->w = w;
		ra->count = count;
		for (int i = 0; i < count; i++)
			snprintf(ra->agents[i], sizeof(ra->agents[i]), "%s", agents[i]);
	}
	if (!ra || !w->pool ||
	    rt_pool_route(w->pool, agents, ns, count, commit_ms, w->conf->push_any, on_routed,
	                  ra) != 0) {
		free(ra);
		for (int i = 0; i < count;
		     i++) /* Redis is down: the agents learn at their next sync */
			gw_count_push(w, RT_PUSH_FAILED);
	}
}

static void send_push(struct gw_session *s, int pending, int64_t commit_ms)
{
	struct qs_frame f = {.type = QS_PUSH};
	f.u.push.push_id = ++s->push_seq;
	f.u.push.pending = pending > 0 ? (uint32_t)pending : 1;
	if (gw_session_send(s, &f) != 0)
		return;
	s->push_out_id = f.u.push.push_id;
	s->push_commit_ms = commit_ms;
	s->coalesce_until_ms = gw_mono_ms() + 2000LL * s->w->conf->heartbeat;
	account(s->w, s->agent, RT_PUSH_SENT, -1);
	gw_slog(GW_LOG_DEBUG, s, "PUSH %llu (pending %d)", (unsigned long long)f.u.push.push_id,
	        pending);
}

/* Whether a PUSH may go on this session at all (policy and session kind). */
static enum rt_push_result push_refusal(const struct gw_session *s)
{
	if (!s->persist)
		return RT_PUSH_NO_SESSION;
	if (!s->on_primary && !s->w->conf->push_any)
		return RT_PUSH_SUPPRESSED_OFF_PRIMARY;
	return RT_PUSH_SENT;
}

void gw_push_deliver(struct gw_worker *w, const char *agent, int64_t commit_ms, int n,
                     const char *session_worker)
{
	struct gw_session *s = gw_session_find(w, agent);
	if (!s || s->state == GW_S_CLOSING) {
		int elsewhere = session_worker[0] && strcmp(session_worker, w->wc->name) != 0;
		account(w, agent, elsewhere ? RT_PUSH_SUPPRESSED_OFF_PRIMARY : RT_PUSH_NO_SESSION,
		        -1);
		return;
	}
	if (s->state == GW_S_AWAIT_HELLO || s->state == GW_S_WELCOMING) {
		/* WELCOME is not written yet: the PUSH follows it. */
		if (!s->deferred_n || commit_ms < s->deferred_commit_ms)
			s->deferred_commit_ms = commit_ms;
		s->deferred_n += n > 0 ? n : 1;
		return;
	}
	enum rt_push_result r = push_refusal(s);
	if (r != RT_PUSH_SENT) {
		account(w, agent, r, -1);
		return;
	}
	if (s->coalesce_until_ms > gw_mono_ms()) {
		account(w, agent, RT_PUSH_COALESCED, -1);
		return;
	}
	send_push(s, n, commit_ms);
}

void gw_push_after_welcome(struct gw_session *s)
{
	int deferred = s->deferred_n;
	s->deferred_n = 0;
	if (!deferred && s->pending_at_hello <= 0)
		return;
	enum rt_push_result r = push_refusal(s);
	if (!deferred) { /* only what was pending at HELLO: a push of its own */
		if (r != RT_PUSH_SENT)
			return; /* nothing was routed: nothing to count */
		gw_count_push(s->w, RT_PUSH_ROUTED);
		send_push(s, (int)s->pending_at_hello, gw_wall_ms());
		return;
	}
	if (r != RT_PUSH_SENT) { /* routed pushes that found no place to go */
		account(s->w, s->agent, r, -1);
		return;
	}
	int pending = (int)s->pending_at_hello > deferred ? (int)s->pending_at_hello : deferred;
	send_push(s, pending, s->deferred_commit_ms);
}

void gw_push_ack(struct gw_session *s, uint64_t push_id)
{
	if (!push_id || push_id != s->push_out_id)
		return; /* stale or unknown: nothing to account */
	/* wall clock: the commit time may be another node's */
	int64_t latency = gw_wall_ms() - s->push_commit_ms;
	if (latency < 0)
		latency = 0;
	s->push_out_id = 0;
	s->coalesce_until_ms = 0;
	gw_histogram_observe(&s->w->counters.push_latency, (double)latency / 1000.0);
	account(s->w, s->agent, RT_PUSH_ACKED, latency);
}

void gw_push_fetched(struct gw_session *s)
{
	s->coalesce_until_ms = 0; /* the agent is fetching: the next commit pushes again */
}

void gw_push_supersede(struct gw_worker *w, const char *agent, uint64_t epoch)
{
	struct gw_session *s = gw_session_find(w, agent);
	if (!s || s->epoch != epoch)
		return; /* already gone, or a newer session of ours */
	gw_session_unregister(s);
	s->epoch = 0; /* the newer session owns the Redis entry now */
	gw_session_error(s, QS_E_SUPERSEDED, "a newer session of agent %s took over elsewhere",
	                 agent);
}

/* ---- pushes owed across a gap in routing ---- */

enum { RESYNC_CHUNK = 1000 };

struct resync {
	struct gw_worker *w;
	const char *agents[RESYNC_CHUNK];
	int n, queries;
};

/* Whether s could take a PUSH now (welcomed, PERSIST, the push policy). */
static int pushable(const struct gw_session *s)
{
	return (s->state == GW_S_READY || s->state == GW_S_BUSY) && push_refusal(s) == RT_PUSH_SENT;
}

static void on_pending_of(void *arg, const PGresult *res, const char *err)
{
	struct gw_worker *w = arg;
	int n = res ? st_pending_rows(res) : -1;
	if (n < 0) {
		gw_log(GW_LOG_WARN, "worker %s: pushes owed after a routing gap not checked: %s",
		       w->wc->name, err ? err : "unexpected result");
		return;
	}
	int sent = 0;
	for (int i = 0; i < n; i++) {
		struct st_pending_row row;
		st_pending_row(res, i, &row);
		struct gw_session *s = gw_session_find(w, row.agent);
		if (!s || !pushable(s) || s->coalesce_until_ms > gw_mono_ms())
			continue; /* gone, or a PUSH is out already */
		gw_count_push(w, RT_PUSH_ROUTED);
		send_push(s, row.pending > INT32_MAX ? INT32_MAX : (int)row.pending, gw_wall_ms());
		sent++;
	}
	if (sent)
		gw_log(GW_LOG_INFO, "worker %s: %d PUSHes owed after a routing gap", w->wc->name,
		       sent);
}

static void resync_flush(struct resync *r)
{
	if (r->n == 0)
		return;
	if (!st_pending_of(gw_worker_store(r->w), r->agents, r->n, on_pending_of, r->w))
		gw_log(GW_LOG_WARN,
		       "worker %s: store down: pushes owed after a routing gap "
		       "not checked",
		       r->w->wc->name);
	r->queries++;
	r->n = 0;
}

static int resync_one(struct gw_session *s, void *arg)
{
	struct resync *r = arg;
	if (!pushable(s))
		return 0;
	r->agents[r->n++] = s->agent; /* st_pending_of copies it */
	if (r->n == RESYNC_CHUNK)
		resync_flush(r);
	return 0;
}

void gw_push_resync(struct gw_worker *w)
{
	struct resync *r = calloc(1, sizeof(*r));
	if (!r) {
		gw_log(GW_LOG_WARN, "worker %s: out of memory: pushes owed not checked",
		       w->wc->name);
		return;
	}
	r->w = w;
	gw_session_each_agent(w, resync_one, r);
	resync_flush(r);
	free(r);
}
