/* The pool's routing state in Redis; see rt_pool.h and docs/design.md.
 * Decisions that must be atomic across nodes (claiming a session, routing a
 * push) are single Lua scripts. */
#include "router/rt_pool.h"
#include "router/rt_push.h"

#include "common/clock.h"
#include "common/log.h"
#include "router/rt_redis.h"
#include "router/rt_ring.h"
#include "router/rt_keys.h"
#include "router/rt_scripts.h"

#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEARTBEAT_EXPIRY_MS 3000 /* PEXPIRE of P worker:NAME */

struct rt_sweep;

/* A reassign from the pool, held until a view of the pool read after it
 * arrived is in: the REASSIGN's server list must not name a worker that
 * was draining when the router moved the agent. */
struct rt_held {
	struct rt_held *next;
	uint64_t need; /* views_done needed (0: no refresh sent yet) */
	char agent[130];
	char primary[80];
};

/* Push results are accounted in batches: RT_ACCT_BATCH at most, sent
 * RT_ACCT_FLUSH_MS after the first (admin.md: counters current within 1 s). */
#define RT_ACCT_BATCH    256
#define RT_ACCT_FLUSH_MS 50

/* One push result waiting for its batch (account.lua). */
struct rt_acct {
	char agent[121];
	const char *result; /* rt_push_result_names: static */
	int64_t latency_ms; /* -1: none */
	int64_t ts_ms;
};

struct rt_pool {
	struct rt_redis *cmd; /* commands and scripts */
	struct rt_redis *sub; /* SUBSCRIBE only: P push:NAME and P ctl:NAME */
	char prefix[64];
	char worker[65];
	char node[65];
	char ch_push[160];
	char ch_ctl[160];
	int capacity;
	int tls;
	char eps[32]; /* epsilon as "%.17g": the scripts compute with the same double */
	int64_t reassign_after_ms; /* counted from the worker's last heartbeat */
	struct rt_pool_hooks hooks;
	void *arg;
	int freeing; /* rt_pool_free under way: sweeps end without hooks */

	/* The router's view of the pool, refreshed with each heartbeat. */
	struct rt_view view;
	struct rt_ring ring;        /* over the serving workers of the view */
	int ring_view[RT_VIEW_MAX]; /* ring index -> view index */
	char ring_sig[2048]; /* "name:capacity ..." of the serving workers the ring was built on */
	int joined;          /* the rebalance for this worker's joining was started */
	struct rt_sweep *sweeps;
	struct event *held_ev; /* sends one view refresh for the reassigns held meanwhile */
	struct rt_held *held, **held_tail;
	uint64_t views_sent, views_done;
	int leaving; /* draining or stopping (rt_pool_set_leaving) */
	/* Push results waiting to be accounted in one script call: sent when
	 * RT_ACCT_BATCH are in, or RT_ACCT_FLUSH_MS after the first. */
	struct rt_acct *acct;
	int n_acct;
	struct event *acct_timer;
};

/* The scripts: router/lua/, declared in rt_scripts.h (KEYS and ARGV at the top of each
 * file). Key names: rt_keys.h. */

static void refresh_view(struct rt_pool *p);
static void account_flush(struct rt_pool *p);
static void on_account_timer(evutil_socket_t fd, short what, void *arg);

static void hold_reassign(struct rt_pool *p, const char *agent, const char *primary)
{
	struct rt_held *h = calloc(1, sizeof(*h));
	if (!h)
		return;
	snprintf(h->agent, sizeof(h->agent), "%s", agent);
	snprintf(h->primary, sizeof(h->primary), "%s", primary);
	*p->held_tail = h;
	p->held_tail = &h->next;
	if (!evtimer_pending(p->held_ev, NULL))
		event_active(p->held_ev, EV_TIMEOUT, 0);
}

/* Hands over the held reassigns whose view is in (all of them: force). */
static void release_held(struct rt_pool *p, int force)
{
	while (p->held && (force || (p->held->need && p->held->need <= p->views_done))) {
		struct rt_held *h = p->held;
		p->held = h->next;
		if (!p->held)
			p->held_tail = &p->held;
		if (!p->freeing && p->hooks.on_reassign)
			p->hooks.on_reassign(p->arg, h->agent, h->primary);
		free(h);
	}
}

static void on_held(evutil_socket_t fd, short what, void *arg)
{
	struct rt_pool *p = arg;
	refresh_view(p);
	for (struct rt_held *h = p->held; h; h = h->next)
		if (!h->need)
			h->need = p->views_sent;
	if (!rt_redis_is_up(p->cmd))
		release_held(p, 1);
}

static void on_message(void *arg, const char *channel, const char *msg, size_t len)
{
	struct rt_pool *p = arg;
	char agent[130], sw[80] = "";
	if (strcmp(channel, p->ch_push) == 0) {
		long long commit = 0;
		int n = 0;
		if (sscanf(msg, "%129s %lld %d %79s", agent, &commit, &n, sw) >= 3 &&
		    p->hooks.on_push)
			p->hooks.on_push(p->arg, agent, (int64_t)commit, n, sw);
		return;
	}
	if (strcmp(channel, p->ch_ctl) == 0) {
		unsigned long long epoch = 0;
		if (sscanf(msg, "supersede %129s %llu", agent, &epoch) == 2 &&
		    p->hooks.on_supersede)
			p->hooks.on_supersede(p->arg, agent, (uint64_t)epoch);
		else if (sscanf(msg, "reassign %129s %79s", agent, sw) == 2)
			hold_reassign(p, agent, sw);
		else if ((strcmp(msg, "drain") == 0 || strcmp(msg, "resume") == 0) &&
		         p->hooks.on_command)
			p->hooks.on_command(p->arg, msg);
	}
}

static void on_sub_state(void *arg, int up)
{
	struct rt_pool *p = arg;
	if (!up)
		return;
	const char *channels[2] = {p->ch_push, p->ch_ctl};
	if (rt_redis_subscribe(p->sub, channels, 2, on_message, p) != 0)
		gw_log(GW_LOG_WARN, "redis %s: cannot subscribe", p->worker);
	else if (p->hooks.on_listening)
		p->hooks.on_listening(p->arg);
}

static void on_cmd_state(void *arg, int up)
{
	struct rt_pool *p = arg;
	if (up)
		refresh_view(p);
	else if (!p->freeing)
		rt_redis_reset(p->sub); /* a silent server: the subscriber cannot tell by itself */
	if (p->hooks.on_state)
		p->hooks.on_state(p->arg, up);
}

struct rt_pool *rt_pool_new(struct event_base *base, const struct rt_pool_conf *conf,
                            const struct rt_pool_hooks *hooks, void *arg)
{
	struct rt_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	snprintf(p->prefix, sizeof(p->prefix), "%s", conf->prefix);
	snprintf(p->worker, sizeof(p->worker), "%s", conf->worker);
	snprintf(p->node, sizeof(p->node), "%s", conf->node);
	snprintf(p->ch_push, sizeof(p->ch_push), "%s" RT_CHAN_PUSH "%s", conf->prefix,
	         conf->worker);
	snprintf(p->ch_ctl, sizeof(p->ch_ctl), "%s" RT_CHAN_CTL "%s", conf->prefix, conf->worker);
	p->capacity = conf->capacity > 0 ? conf->capacity : 1;
	p->tls = conf->tls;
	snprintf(p->eps, sizeof(p->eps), "%.17g", conf->epsilon);
	/* reassign_after counts from the worker's last heartbeat, when it was
	 * last known alive (issue 18: a node's agents get pushes again within
	 * reassign_after + 2 s of its loss). It is down, so its agents can move,
	 * only once its heartbeat key expires: 3 s after that heartbeat. */
	p->reassign_after_ms = (int64_t)conf->reassign_after * 1000;
	if (p->reassign_after_ms < HEARTBEAT_EXPIRY_MS)
		p->reassign_after_ms = HEARTBEAT_EXPIRY_MS;
	p->hooks = *hooks;
	p->arg = arg;
	p->held_tail = &p->held;
	p->held_ev = evtimer_new(base, on_held, p);
	p->acct = calloc(RT_ACCT_BATCH, sizeof(*p->acct));
	p->acct_timer = evtimer_new(base, on_account_timer, p);
	char name[96];
	snprintf(name, sizeof(name), "%s/sub", conf->worker);
	p->sub = rt_redis_new(base, &conf->redis, name, on_sub_state, p);
	p->cmd = rt_redis_new(base, &conf->redis, conf->worker, on_cmd_state, p);
	if (!p->sub || !p->cmd || !p->held_ev || !p->acct || !p->acct_timer) {
		rt_pool_free(p);
		return NULL;
	}
	return p;
}

void rt_pool_free(struct rt_pool *p)
{
	if (!p)
		return;
	p->freeing = 1;
	if (p->acct_timer) {
		account_flush(p); /* best effort: queued, sent if the loop runs on */
		event_free(p->acct_timer);
	}
	free(p->acct);
	rt_redis_free(p->cmd);
	rt_redis_free(p->sub);
	rt_ring_free(&p->ring);
	release_held(p, 1);
	if (p->held_ev)
		event_free(p->held_ev);
	free(p);
}

int rt_pool_is_up(const struct rt_pool *p)
{
	return rt_redis_is_up(p->cmd) && rt_redis_is_up(p->sub);
}

static void on_marker(void *arg, redisReply *r)
{
	struct rt_pool *p = arg;
	if (r && r->type == REDIS_REPLY_STATUS && !p->freeing && p->hooks.on_wiped)
		p->hooks.on_wiped(p->arg);
}

void rt_pool_heartbeat(struct rt_pool *p, const struct rt_worker_info *info)
{
	if (!rt_redis_is_up(p->cmd))
		return;
	char key[160], sessions[16], onp[16], now[24], cap[16], syncs[24], load[24];
	snprintf(key, sizeof(key), "%s" RT_KEY_WORKER "%s", p->prefix, p->worker);
	snprintf(sessions, sizeof(sessions), "%d", info->sessions);
	snprintf(onp, sizeof(onp), "%d", info->on_primary);
	snprintf(now, sizeof(now), "%" PRId64, gw_wall_ms());
	snprintf(cap, sizeof(cap), "%d", p->capacity);
	snprintf(syncs, sizeof(syncs), "%.1f", info->syncs_per_s);
	/* load: the live signal the router's operators watch, sessions plus
	 * requests per second over the last 10 s, per unit of capacity. */
	snprintf(load, sizeof(load), "%.2f", (info->sessions + info->syncs_per_s) / p->capacity);
	const char *argv[] = {"HSET",        key,
	                      "node",        p->node,
	                      "address",     info->address,
	                      "listen",      info->listen,
	                      "state",       info->state,
	                      "sessions",    sessions,
	                      "on_primary",  onp,
	                      "load",        load,
	                      "syncs_per_s", syncs,
	                      "capacity",    cap,
	                      "tls",         p->tls ? "1" : "0",
	                      "updated_ms",  now};
	int argc = (int)(sizeof(argv) / sizeof(argv[0]));
	rt_redis_commandv(p->cmd, NULL, NULL, argc, argv, NULL);
	rt_redis_command(p->cmd, NULL, NULL, "PEXPIRE %s %d", key, HEARTBEAT_EXPIRY_MS);
	rt_redis_command(p->cmd, NULL, NULL, "SADD %s" RT_KEY_WORKERS " %s", p->prefix, p->worker);
	/* What the pool keeps knowing of a worker once it is down. */
	rt_redis_command(
	    p->cmd, NULL, NULL,
	    "HSET %s" RT_KEY_WORKERINFO "%s node %s address %s listen %s capacity %d tls %d "
	    "last_seen_ms %s",
	    p->prefix, p->worker, p->node, info->address, info->listen, p->capacity, p->tls, now);

	/* The push counters, as a snapshot (pool-wide figures within 1 s). */
	const char *hv[2 + 2 * 16];
	char vals[16][24];
	int hc = 0;
	char skey[160];
	snprintf(skey, sizeof(skey), "%s" RT_KEY_PUSHSTATS "%s", p->prefix, p->worker);
	hv[hc++] = "HSET";
	hv[hc++] = skey;
	for (int i = 0; i < info->n_push && i < 16; i++) {
		snprintf(vals[i], sizeof(vals[i]), "%" PRIu64, info->push[i]);
		hv[hc++] = info->push_names[i];
		hv[hc++] = vals[i];
	}
	rt_redis_commandv(p->cmd, NULL, NULL, hc, hv, NULL);
	/* A marker that only an emptied Redis lacks. */
	rt_redis_command(p->cmd, on_marker, p, "SET %s" RT_KEY_MARKER "%s %s NX", p->prefix,
	                 p->worker, p->node);
	refresh_view(p);
}

void rt_pool_refill(struct rt_pool *p, const char *const *agents, const char *const *primaries,
                    int n)
{
	const char **argv = malloc(sizeof(*argv) * (size_t)(4 + 2 * n));
	if (!argv)
		return;
	int argc = 0;
	argv[argc++] = "EVAL";
	argv[argc++] = rt_lua_refill;
	argv[argc++] = "0";
	argv[argc++] = p->prefix;
	for (int i = 0; i < n; i++) {
		argv[argc++] = agents[i];
		argv[argc++] = primaries[i];
	}
	rt_redis_commandv(p->cmd, NULL, NULL, argc, argv, NULL);
	free(argv);
}

struct claim_ctx {
	rt_claim_fn done;
	void *arg;
};

static void on_claimed(void *arg, redisReply *r)
{
	struct claim_ctx *c = arg;
	uint64_t epoch = 0;
	const char *primary = "";
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER &&
	    r->element[1]->type == REDIS_REPLY_STRING) {
		if (r->element[0]->integer > 0)
			epoch = (uint64_t)r->element[0]->integer;
		primary = r->element[1]->str;
	} else if (r && r->type == REDIS_REPLY_ERROR) {
		gw_log(GW_LOG_ERROR, "redis: claim script failed: %s", r->str);
	}
	c->done(c->arg, epoch, primary);
	free(c);
}

/* The serving workers in agent's ring order, as "NAME NAME ..." for the
 * scripts. */
static void order_string(const struct rt_pool *p, const char *agent, char *out, size_t n)
{
	int order[RT_VIEW_MAX];
	int k = rt_pool_order(p, agent, order);
	size_t used = 0;
	out[0] = 0;
	for (int i = 0; i < k; i++) {
		int r =
		    snprintf(out + used, n - used, "%s%s", i ? " " : "", p->view.w[order[i]].name);
		if (r < 0 || (size_t)r >= n - used) {
			out[used] = 0;
			return;
		}
		used += (size_t)r;
	}
}

int rt_pool_claim(struct rt_pool *p, const struct rt_claim *c, int announce_only, rt_claim_fn done,
                  void *arg)
{
	struct claim_ctx *ctx = malloc(sizeof(*ctx));
	if (!ctx)
		return -1;
	ctx->done = done;
	ctx->arg = arg;
	char key[200], ekey[100], since[24], now[24], ra[24];
	char order[RT_VIEW_MAX * 66];
	snprintf(key, sizeof(key), "%s" RT_KEY_AGENT "%s", p->prefix, c->agent);
	snprintf(ekey, sizeof(ekey), "%s" RT_KEY_EPOCH, p->prefix);
	snprintf(since, sizeof(since), "%" PRId64, c->since_ms);
	snprintf(now, sizeof(now), "%" PRId64, gw_wall_ms());
	snprintf(ra, sizeof(ra), "%" PRId64, p->reassign_after_ms);
	order[0] = 0;
	if (!c->pinned)
		order_string(p, c->agent, order, sizeof(order));
	const char *argv[] = {"EVAL",
	                      rt_lua_claim,
	                      "2",
	                      key,
	                      ekey,
	                      p->prefix,
	                      c->agent,
	                      p->worker,
	                      p->node,
	                      c->pinned ? c->primary : "",
	                      c->pinned ? "1" : "0",
	                      c->primary_as_sent,
	                      c->persist ? "1" : "0",
	                      since,
	                      announce_only ? "1" : "0",
	                      p->eps,
	                      now,
	                      ra,
	                      c->hint ? c->hint : "",
	                      order};
	if (rt_redis_commandv(p->cmd, on_claimed, ctx, (int)(sizeof(argv) / sizeof(argv[0])), argv,
	                      NULL) != 0) {
		free(ctx);
		return -1;
	}
	return 0;
}

void rt_pool_release(struct rt_pool *p, const char *agent, uint64_t epoch)
{
	char key[200], e[24];
	snprintf(key, sizeof(key), "%s" RT_KEY_AGENT "%s", p->prefix, agent);
	snprintf(e, sizeof(e), "%" PRIu64, epoch);
	const char *argv[] = {"EVAL", rt_lua_release, "1", key, e};
	rt_redis_commandv(p->cmd, NULL, NULL, 5, argv, NULL);
}

struct route_ctx {
	rt_route_fn done;
	void *arg;
	int count;
};

static int routed_ok(const redisReply *e)
{
	return e->type == REDIS_REPLY_ARRAY && e->elements == 3 &&
	       e->element[0]->type == REDIS_REPLY_STRING &&
	       e->element[1]->type == REDIS_REPLY_STRING &&
	       e->element[2]->type == REDIS_REPLY_INTEGER;
}

static void on_routed(void *arg, redisReply *r)
{
	struct route_ctx *c = arg;
	int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)c->count;
	for (int i = 0; ok && i < c->count; i++)
		ok = routed_ok(r->element[i]);
	if (!ok && r && r->type == REDIS_REPLY_ERROR)
		gw_log(GW_LOG_ERROR, "redis: route script failed: %s", r->str);
	else if (!ok && r)
		gw_log(GW_LOG_ERROR, "redis: route script: unexpected reply");
	for (int i = 0; i < c->count; i++) {
		if (!ok) {
			c->done(c->arg, i, 1, 0, "", "");
			continue;
		}
		const redisReply *e = r->element[i];
		c->done(c->arg, i, 0, (int)e->element[2]->integer, e->element[0]->str,
		        e->element[1]->str);
	}
	free(c);
}

int rt_pool_route(struct rt_pool *p, const char *const *agents, const int *ns, int count,
                  int64_t commit_ms, int policy_any, rt_route_fn done, void *arg)
{
	return rt_route(p->cmd, p->prefix, agents, ns, count, commit_ms, policy_any, done, arg);
}

/* argv: EVAL, the script, the key count, count keys, prefix, commit_ms, policy,
 * then an id and a count for each recipient; the keys and counts are written
 * after argv in the same block (hiredis copies the command before this returns). */
int rt_route(struct rt_redis *r, const char *prefix, const char *const *agents, const int *ns,
             int count, int64_t commit_ms, int policy_any, rt_route_fn done, void *arg)
{
	enum { KEY = 200, NUM = 16 };
	if (count <= 0)
		return -1;
	int argc = 3 + count + 3 + 2 * count;
	struct route_ctx *ctx = malloc(sizeof(*ctx));
	const char **argv = malloc((size_t)argc * sizeof(*argv) + (size_t)count * (KEY + NUM));
	if (!ctx || !argv) {
		free(ctx);
		free(argv);
		return -1;
	}
	ctx->done = done;
	ctx->arg = arg;
	ctx->count = count;
	char *keys = (char *)(argv + argc), *nums = keys + (size_t)count * KEY;
	char nkeys[16], commit[24];
	snprintf(nkeys, sizeof(nkeys), "%d", count);
	snprintf(commit, sizeof(commit), "%" PRId64, commit_ms);
	int k = 0;
	argv[k++] = "EVAL";
	argv[k++] = rt_lua_route;
	argv[k++] = nkeys;
	for (int i = 0; i < count; i++) {
		snprintf(keys + (size_t)i * KEY, KEY, "%s" RT_KEY_AGENT "%s", prefix, agents[i]);
		argv[k++] = keys + (size_t)i * KEY;
	}
	argv[k++] = prefix;
	argv[k++] = commit;
	argv[k++] = policy_any ? "any" : "primary";
	for (int i = 0; i < count; i++) {
		snprintf(nums + (size_t)i * NUM, NUM, "%d", ns[i]);
		argv[k++] = agents[i];
		argv[k++] = nums + (size_t)i * NUM;
	}
	int rc = rt_redis_commandv(r, on_routed, ctx, argc, argv, NULL);
	free(argv);
	if (rc != 0) {
		free(ctx);
		return -1;
	}
	return 0;
}

/* An agent that has never connected (no P agent:ID: it never said HELLO to
 * the pool, nor was it given a primary) keeps its push counters this long
 * after the last push for it, not for ever: any id can be a recipient
 * (issue 16). Its first HELLO makes them permanent (the next accounting). */
#define RT_AGENTPUSH_TTL_S "86400"

/* Sends n results of worker's as one script call on r. */
static void account_send(struct rt_redis *r, const char *prefix, const char *worker,
                         const struct rt_acct *a, int n)
{
	if (n <= 0 || !rt_redis_is_up(r))
		return;
	int argc = 3 + 2 + 2 * n + 1 + 4 * n;
	const char **argv = calloc((size_t)argc, sizeof(*argv));
	char *keys = calloc((size_t)(2 + 2 * n), 200);
	char *lats = calloc((size_t)n, 24);
	char **evs = calloc((size_t)n, sizeof(*evs));
	char numkeys[16];
	if (!argv || !keys || !lats || !evs)
		goto out;
	snprintf(numkeys, sizeof(numkeys), "%d", 2 + 2 * n);
	int k = 0, v = 3 + 2 + 2 * n;
	argv[k++] = "EVAL";
	argv[k++] = rt_lua_account;
	argv[k++] = numkeys;
	snprintf(keys, 200, "%s" RT_KEY_PUSHLAT "%s", prefix, worker);
	snprintf(keys + 200, 200, "%s" RT_KEY_PUSHEVENTS, prefix);
	argv[k++] = keys;
	argv[k++] = keys + 200;
	argv[v++] = RT_AGENTPUSH_TTL_S;
	for (int i = 0; i < n; i++) {
		char *ak = keys + 200 * (2 + 2 * i), *gk = ak + 200, *lat = lats + 24 * i;
		snprintf(ak, 200, "%s" RT_KEY_AGENTPUSH "%s", prefix, a[i].agent);
		snprintf(gk, 200, "%s" RT_KEY_AGENT "%s", prefix, a[i].agent);
		argv[k++] = ak;
		argv[k++] = gk;
		if (a[i].latency_ms >= 0)
			snprintf(lat, 24, "%" PRId64, a[i].latency_ms);
		/* The event admin/api_push.c reads back: ts_ms, agent, worker, result
		 * and latency_ms (only when there is one), in that order. */
		json_t *o = json_pack("{sIssssss}", "ts_ms", (json_int_t)a[i].ts_ms, "agent",
		                      a[i].agent, "worker", worker, "result", a[i].result);
		if (o && a[i].latency_ms >= 0)
			json_object_set_new(o, "latency_ms",
			                    json_integer((json_int_t)a[i].latency_ms));
		evs[i] = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		json_decref(o);
		if (!evs[i]) /* no memory (agent ids and worker names are ASCII: qs_ident.c) */
			goto out;
		argv[v++] = a[i].result;
		argv[v++] = rt_push_result_per_agent(a[i].result) ? "1" : "0";
		argv[v++] = lat;
		argv[v++] = evs[i];
	}
	rt_redis_commandv(r, NULL, NULL, argc, argv, NULL);
out:
	for (int i = 0; evs && i < n; i++)
		free(evs[i]);
	free(evs);
	free(lats);
	free(keys);
	free(argv);
}

static void account_flush(struct rt_pool *p)
{
	account_send(p->cmd, p->prefix, p->worker, p->acct, p->n_acct);
	p->n_acct = 0;
}

static void on_account_timer(evutil_socket_t fd, short what, void *arg)
{
	account_flush(arg);
}

void rt_pool_account(struct rt_pool *p, const char *agent, const char *result, int64_t latency_ms)
{
	if (!rt_redis_is_up(p->cmd))
		return;
	struct rt_acct *a = &p->acct[p->n_acct++];
	snprintf(a->agent, sizeof(a->agent), "%s", agent);
	a->result = result;
	a->latency_ms = latency_ms;
	a->ts_ms = gw_wall_ms();
	if (p->n_acct == RT_ACCT_BATCH)
		account_flush(p);
	else if (p->n_acct == 1) {
		struct timeval tv = {0, RT_ACCT_FLUSH_MS * 1000};
		evtimer_add(p->acct_timer, &tv);
	}
}

void rt_account(struct rt_redis *r, const char *prefix, const char *worker, const char *agent,
                const char *result, int64_t latency_ms)
{
	struct rt_acct a = {.result = result, .latency_ms = latency_ms, .ts_ms = gw_wall_ms()};
	snprintf(a.agent, sizeof(a.agent), "%s", agent);
	account_send(r, prefix, worker, &a, 1);
}

/* ---- the router ---- */

static void str_field(const redisReply *r, char *out, size_t n)
{
	snprintf(out, n, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
}

static int64_t int_field(const redisReply *r)
{
	return r->type == REDIS_REPLY_STRING    ? strtoll(r->str, NULL, 10)
	       : r->type == REDIS_REPLY_INTEGER ? r->integer
	                                        : 0;
}

/* Draining or stopping: this worker is out of its own view at once (the
 * pool's says so within a heartbeat), so that the REASSIGNs it sends do not
 * name it. */
static void mark_self_leaving(struct rt_pool *p)
{
	for (int i = 0; i < p->view.n; i++)
		if (strcmp(p->view.w[i].name, p->worker) == 0)
			p->view.w[i].serving = 0;
}

/* Rebuilds the ring when the serving workers or their capacities changed. */
static void rebuild_ring(struct rt_pool *p)
{
	char sig[sizeof(p->ring_sig)];
	size_t used = 0;
	sig[0] = 0;
	struct rt_ring_worker ws[RT_VIEW_MAX];
	int n = 0;
	for (int i = 0; i < p->view.n; i++) {
		const struct rt_view_worker *v = &p->view.w[i];
		if (!v->serving)
			continue;
		int r = snprintf(sig + used, sizeof(sig) - used, "%s:%d ", v->name, v->capacity);
		if (r > 0 && (size_t)r < sizeof(sig) - used)
			used += (size_t)r;
		snprintf(ws[n].name, sizeof(ws[n].name), "%s", v->name);
		ws[n].capacity = v->capacity;
		p->ring_view[n] = i;
		n++;
	}
	if (strcmp(sig, p->ring_sig) == 0 && p->ring.n == n)
		return;
	struct rt_ring ring;
	if (rt_ring_build(&ring, ws, n) != 0) {
		gw_log(GW_LOG_ERROR, "router %s: cannot build the ring (out of memory)", p->worker);
		return;
	}
	rt_ring_free(&p->ring);
	p->ring = ring;
	snprintf(p->ring_sig, sizeof(p->ring_sig), "%s", sig);
	gw_log(GW_LOG_INFO, "router %s: serving workers now %s", p->worker, n ? sig : "(none)");
}

int rt_pool_order(const struct rt_pool *p, const char *agent, int *order)
{
	int k = rt_ring_order(&p->ring, agent, order);
	for (int i = 0; i < k; i++)
		order[i] = p->ring_view[order[i]];
	return k;
}

const struct rt_view *rt_pool_view(const struct rt_pool *p)
{
	return &p->view;
}

static void check_pool(struct rt_pool *p);

static void on_view(void *arg, redisReply *r)
{
	struct rt_pool *p = arg;
	if (p->freeing)
		return;
	p->views_done++;
	if (!r || r->type != REDIS_REPLY_ARRAY) {
		release_held(p, 0);
		return;
	}
	struct rt_view *v = &p->view;
	int n = 0;
	for (size_t i = 0; i < r->elements && n < RT_VIEW_MAX; i++) {
		const redisReply *e = r->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 10)
			continue;
		struct rt_view_worker *w = &v->w[n++];
		char state[32];
		str_field(e->element[0], w->name, sizeof(w->name));
		w->alive = int_field(e->element[1]) != 0;
		str_field(e->element[2], state, sizeof(state));
		w->serving = w->alive && strcmp(state, "serving") == 0;
		w->capacity = (int)int_field(e->element[3]);
		if (w->capacity < 1)
			w->capacity = 1;
		str_field(e->element[4], w->node, sizeof(w->node));
		str_field(e->element[5], w->address, sizeof(w->address));
		w->tls = int_field(e->element[6]) != 0;
		w->last_seen_ms = int_field(e->element[7]);
		w->assigned = int_field(e->element[8]);
		w->retired = int_field(e->element[9]) != 0;
	}
	v->n = n;
	v->updated_ms = gw_wall_ms();
	if (p->leaving)
		mark_self_leaving(p);
	rebuild_ring(p);
	release_held(p, 0);
	check_pool(p);
}

static void refresh_view(struct rt_pool *p)
{
	const char *argv[] = {"EVAL", rt_lua_view, "0", p->prefix};
	if (rt_redis_commandv(p->cmd, on_view, p, 4, argv, NULL) == 0)
		p->views_sent++;
}

void rt_pool_set_leaving(struct rt_pool *p, int leaving)
{
	p->leaving = leaving;
	if (leaving) {
		mark_self_leaving(p);
		rebuild_ring(p);
	}
}

/* A sweep walks one worker's router-assigned agents (SSCAN) and moves
 * them, a batch per script call: away from a drained or lost worker, or
 * (rebalance) to this worker when their ring order starts with it. */
#define SWEEP_BATCH 200
#define ORDER_MAX   600 /* the head of a ring order is enough: pick() falls back by name */

struct rt_sweep {
	struct rt_pool *p;
	struct rt_sweep *next;
	char from[65];
	int to_self;
	char cursor[32];
	int moved;
};

static void sweep_scan(struct rt_sweep *s);

static void sweep_end(struct rt_sweep *s, int failed)
{
	struct rt_pool *p = s->p;
	for (struct rt_sweep **pp = &p->sweeps; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	if (!p->freeing) {
		if (s->moved || failed)
			gw_log(failed ? GW_LOG_WARN : GW_LOG_INFO,
			       "router %s: %s %s: %d agents moved%s", p->worker,
			       s->to_self ? "rebalance from" : "moved agents away from", s->from,
			       s->moved, failed ? " (redis failed; will retry)" : "");
		if (!s->to_self && p->hooks.on_swept)
			p->hooks.on_swept(p->arg, s->from, s->moved, failed);
	}
	free(s);
}

static void on_batch_moved(void *arg, redisReply *r)
{
	struct rt_sweep *s = arg;
	struct rt_pool *p = s->p;
	if (!r || r->type != REDIS_REPLY_ARRAY || p->freeing) {
		sweep_end(s, 1);
		return;
	}
	if (r->elements == 1 && r->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(r->element[0]->str, "!serving") == 0) {
		sweep_end(s, 0); /* the worker is back: its agents stay */
		return;
	}
	int n = (int)r->elements / 2;
	for (int i = 0; i < n && p->hooks.on_moved;) { /* to the hook SWEEP_BATCH at a time */
		const char *agents[SWEEP_BATCH], *prims[SWEEP_BATCH];
		int k = 0;
		for (; i < n && k < SWEEP_BATCH; i++) {
			if (r->element[2 * i]->type != REDIS_REPLY_STRING ||
			    r->element[2 * i + 1]->type != REDIS_REPLY_STRING)
				continue;
			agents[k] = r->element[2 * i]->str;
			prims[k] = r->element[2 * i + 1]->str;
			k++;
		}
		if (k)
			p->hooks.on_moved(p->arg, agents, prims, k);
	}
	s->moved += n;
	if (strcmp(s->cursor, "0") == 0)
		sweep_end(s, 0);
	else
		sweep_scan(s);
}

static void on_scanned(void *arg, redisReply *r)
{
	struct rt_sweep *s = arg;
	struct rt_pool *p = s->p;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
	    p->freeing) {
		sweep_end(s, 1);
		return;
	}
	snprintf(s->cursor, sizeof(s->cursor), "%s", r->element[0]->str);
	const redisReply *m = r->element[1];
	/* argv: EVAL script 0 prefix from eps | from target eps, then agents.
	 * COUNT is a hint: SSCAN may return more than SWEEP_BATCH members, and
	 * every one of them goes in this call (issue 18: dropping the extra ones
	 * left agents on a lost worker for good). */
	size_t cnt = m->elements;
	const char **argv = malloc((7 + 2 * cnt) * sizeof(*argv));
	char(*orders)[ORDER_MAX] = s->to_self || !cnt ? NULL : malloc(cnt * sizeof(*orders));
	if (!argv || (!s->to_self && cnt && !orders)) {
		free(argv);
		free(orders);
		sweep_end(s, 1);
		return;
	}
	int argc = 0;
	argv[argc++] = "EVAL";
	argv[argc++] = s->to_self ? rt_lua_move_to : rt_lua_move_away;
	argv[argc++] = "0";
	argv[argc++] = p->prefix;
	argv[argc++] = s->from;
	if (s->to_self)
		argv[argc++] = p->worker;
	argv[argc++] = p->eps;
	int fixed = argc;
	for (size_t i = 0; i < cnt; i++) {
		if (m->element[i]->type != REDIS_REPLY_STRING)
			continue;
		const char *agent = m->element[i]->str;
		if (s->to_self) {
			int order[RT_VIEW_MAX];
			if (rt_pool_order(p, agent, order) < 1 ||
			    strcmp(p->view.w[order[0]].name, p->worker) != 0)
				continue;
			argv[argc++] = agent;
		} else {
			order_string(p, agent, orders[i], sizeof(orders[i]));
			argv[argc++] = agent;
			argv[argc++] = orders[i];
		}
	}
	if (argc == fixed) { /* nothing to move in this batch */
		free(argv);
		free(orders);
		if (strcmp(s->cursor, "0") == 0)
			sweep_end(s, 0);
		else
			sweep_scan(s);
		return;
	}
	/* hiredis formats the command at once: the orders may go after. */
	int rc = rt_redis_commandv(p->cmd, on_batch_moved, s, argc, argv, NULL);
	free(argv);
	free(orders);
	if (rc != 0)
		sweep_end(s, 1);
}

static void sweep_scan(struct rt_sweep *s)
{
	struct rt_pool *p = s->p;
	if (rt_redis_command(p->cmd, on_scanned, s, "SSCAN %s" RT_KEY_ASSIGNED "%s %s COUNT %d",
	                     p->prefix, s->from, s->cursor, SWEEP_BATCH) != 0)
		sweep_end(s, 1);
}

static int sweeping(const struct rt_pool *p, const char *from, int to_self)
{
	for (const struct rt_sweep *s = p->sweeps; s; s = s->next)
		if (s->to_self == to_self && strcmp(s->from, from) == 0)
			return 1;
	return 0;
}

static int start_sweep(struct rt_pool *p, const char *from, int to_self)
{
	if (!rt_redis_is_up(p->cmd))
		return -1;
	if (sweeping(p, from, to_self))
		return 0;
	struct rt_sweep *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->p = p;
	snprintf(s->from, sizeof(s->from), "%s", from);
	s->to_self = to_self;
	snprintf(s->cursor, sizeof(s->cursor), "0");
	s->next = p->sweeps;
	p->sweeps = s;
	sweep_scan(s);
	return 0;
}

int rt_pool_sweep_away(struct rt_pool *p, const char *from)
{
	return start_sweep(p, from, 0);
}

/* One live worker of the pool (whoever takes the lock) moves the agents of
 * a worker down whose last heartbeat is older than reassign_after. */
static void on_sweep_lock(void *arg, redisReply *r)
{
	struct rt_sweep *probe = arg; /* carries p and the name */
	struct rt_pool *p = probe->p;
	if (r && r->type == REDIS_REPLY_STATUS && !p->freeing) {
		gw_log(
		    GW_LOG_WARN,
		    "router %s: worker %s down, no heartbeat for over %lld ms: moving its agents",
		    p->worker, probe->from, (long long)p->reassign_after_ms);
		if (start_sweep(p, probe->from, 0) != 0)
			gw_log(GW_LOG_WARN, "router %s: cannot move %s's agents now", p->worker,
			       probe->from);
	}
	free(probe);
}

static void check_pool(struct rt_pool *p)
{
	int64_t now = gw_wall_ms();
	int self_serving = 0;
	for (int i = 0; i < p->view.n; i++) {
		const struct rt_view_worker *v = &p->view.w[i];
		if (strcmp(v->name, p->worker) == 0)
			self_serving = v->serving;
		/* A retired worker whose agents are all moved leaves the registry
		 * (retire.lua, idempotent: any router may run it). */
		if (v->retired && !v->alive && v->assigned == 0) {
			const char *argv[] = {"EVAL", rt_lua_retire, "0", p->prefix, v->name};
			(void)rt_redis_commandv(p->cmd, NULL, NULL, 5, argv, NULL);
			continue;
		}
		if (v->alive || v->assigned == 0 || v->last_seen_ms <= 0 ||
		    now - v->last_seen_ms < p->reassign_after_ms || sweeping(p, v->name, 0))
			continue;
		struct rt_sweep *probe = calloc(1, sizeof(*probe));
		if (!probe)
			return;
		probe->p = p;
		snprintf(probe->from, sizeof(probe->from), "%s", v->name);
		if (rt_redis_command(p->cmd, on_sweep_lock, probe,
		                     "SET %s" RT_KEY_SWEEP "%s %s NX PX 10000", p->prefix, v->name,
		                     p->worker) != 0)
			free(probe);
	}
	/* Joining (start or resume): take over the agents whose ring order
	 * now starts here, from every other serving worker. */
	if (!self_serving) {
		p->joined = 0;
		return;
	}
	if (p->joined)
		return;
	p->joined = 1;
	for (int i = 0; i < p->view.n; i++) {
		const struct rt_view_worker *v = &p->view.w[i];
		if (v->serving && v->assigned > 0 && strcmp(v->name, p->worker) != 0 &&
		    start_sweep(p, v->name, 1) != 0)
			p->joined = 0;
	}
}
