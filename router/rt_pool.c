/* The pool's routing state in Redis; see rt_pool.h and docs/design.md.
 * Decisions that must be atomic across nodes (claiming a session, routing a
 * push) are single Lua scripts. */
#include "router/rt_pool.h"

#include "gateway/log.h"
#include "router/rt_redis.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct rt_pool {
	struct rt_redis *cmd; /* commands and scripts */
	struct rt_redis *sub; /* SUBSCRIBE only: P push:NAME and P ctl:NAME */
	char prefix[64];
	char worker[65];
	char node[65];
	char ch_push[160];
	char ch_ctl[160];
	struct rt_pool_hooks hooks;
	void *arg;
};

/* KEYS[1] agent hash, KEYS[2] epoch counter. ARGV: 1 prefix, 2 agent,
 * 3 worker, 4 node, 5 primary, 6 pinned, 7 primary_as_sent, 8 on_primary,
 * 9 persist, 10 since_ms, 11 announce_only. Returns the new epoch (0 when an
 * announce finds the session held elsewhere). */
static const char claim_lua[] =
	"local old = redis.call('HMGET', KEYS[1], 'worker', 'epoch', 'primary')\n"
	"local ow, oe, op = old[1] or '', old[2] or '0', old[3] or ''\n"
	"if ARGV[11] == '1' and ow ~= '' and ow ~= ARGV[3] then return 0 end\n"
	"local epoch = redis.call('INCR', KEYS[2])\n"
	"redis.call('HSET', KEYS[1], 'worker', ARGV[3], 'node', ARGV[4], 'primary', ARGV[5],\n"
	"  'pinned', ARGV[6], 'primary_as_sent', ARGV[7], 'on_primary', ARGV[8], 'persist', ARGV[9],\n"
	"  'since_ms', ARGV[10], 'epoch', epoch)\n"
	"if op ~= '' and op ~= ARGV[5] then redis.call('SREM', ARGV[1]..'primaries:'..op, ARGV[2]) end\n"
	"if ARGV[5] ~= '' then redis.call('SADD', ARGV[1]..'primaries:'..ARGV[5], ARGV[2]) end\n"
	"if ARGV[11] ~= '1' and ow ~= '' and ow ~= ARGV[3] then\n"
	"  redis.call('PUBLISH', ARGV[1]..'ctl:'..ow, 'supersede '..ARGV[2]..' '..oe)\n"
	"end\n"
	"return epoch\n";

/* KEYS[1] agent hash. ARGV[1] epoch. */
static const char release_lua[] =
	"if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then\n"
	"  redis.call('HSET', KEYS[1], 'worker', '', 'on_primary', '0', 'persist', '0')\n"
	"end\n"
	"return 0\n";

/* KEYS[1] agent hash. ARGV: 1 prefix, 2 agent, 3 commit_ms, 4 n, 5 policy.
 * Returns {target, session worker, subscribers reached}. */
static const char route_lua[] =
	"local h = redis.call('HMGET', KEYS[1], 'primary', 'worker')\n"
	"local target, sw = h[1] or '', h[2] or ''\n"
	"if sw ~= '' and redis.call('EXISTS', ARGV[1]..'worker:'..sw) == 0 then sw = '' end\n"
	"if ARGV[5] == 'any' then target = sw end\n"
	"if target == '' then return {'', sw, 0} end\n"
	"local n = redis.call('PUBLISH', ARGV[1]..'push:'..target,\n"
	"  ARGV[2]..' '..ARGV[3]..' '..ARGV[4]..' '..sw)\n"
	"return {target, sw, n}\n";

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_message(void *arg, const char *channel, const char *msg, size_t len)
{
	struct rt_pool *p = arg;
	char agent[130], sw[80] = "";
	if (strcmp(channel, p->ch_push) == 0) {
		long long commit = 0;
		int n = 0;
		if (sscanf(msg, "%129s %lld %d %79s", agent, &commit, &n, sw) >= 3 && p->hooks.on_push)
			p->hooks.on_push(p->arg, agent, (int64_t)commit, n, sw);
		return;
	}
	if (strcmp(channel, p->ch_ctl) == 0) {
		unsigned long long epoch = 0;
		if (sscanf(msg, "supersede %129s %llu", agent, &epoch) == 2 && p->hooks.on_supersede)
			p->hooks.on_supersede(p->arg, agent, (uint64_t)epoch);
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
}

static void on_cmd_state(void *arg, int up)
{
	struct rt_pool *p = arg;
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
	snprintf(p->ch_push, sizeof(p->ch_push), "%spush:%s", conf->prefix, conf->worker);
	snprintf(p->ch_ctl, sizeof(p->ch_ctl), "%sctl:%s", conf->prefix, conf->worker);
	p->hooks = *hooks;
	p->arg = arg;
	char name[96];
	snprintf(name, sizeof(name), "%s/sub", conf->worker);
	p->sub = rt_redis_new(base, conf->host, conf->port, conf->password, name, on_sub_state, p);
	p->cmd = rt_redis_new(base, conf->host, conf->port, conf->password, conf->worker, on_cmd_state, p);
	if (!p->sub || !p->cmd) {
		rt_pool_free(p);
		return NULL;
	}
	return p;
}

void rt_pool_free(struct rt_pool *p)
{
	if (!p)
		return;
	rt_redis_free(p->cmd);
	rt_redis_free(p->sub);
	free(p);
}

int rt_pool_is_up(const struct rt_pool *p)
{
	return rt_redis_is_up(p->cmd) && rt_redis_is_up(p->sub);
}

void rt_pool_heartbeat(struct rt_pool *p, const struct rt_worker_info *info)
{
	if (!rt_redis_is_up(p->cmd))
		return;
	char key[160], sessions[16], onp[16], now[24];
	snprintf(key, sizeof(key), "%sworker:%s", p->prefix, p->worker);
	snprintf(sessions, sizeof(sessions), "%d", info->sessions);
	snprintf(onp, sizeof(onp), "%d", info->on_primary);
	snprintf(now, sizeof(now), "%" PRId64, now_ms());
	const char *argv[] = {"HSET",     key,        "node",       p->node,      "address",
			      info->address, "listen", info->listen, "state",   info->state,
			      "sessions", sessions,   "on_primary", onp,          "load",
			      sessions,   "updated_ms", now};
	int argc = (int)(sizeof(argv) / sizeof(argv[0]));
	rt_redis_commandv(p->cmd, NULL, NULL, argc, argv, NULL);
	rt_redis_command(p->cmd, NULL, NULL, "PEXPIRE %s 3000", key);
	rt_redis_command(p->cmd, NULL, NULL, "SADD %sworkers %s", p->prefix, p->worker);
	/* What the pool keeps knowing of a worker once it is down. */
	rt_redis_command(p->cmd, NULL, NULL, "HSET %sworkerinfo:%s node %s address %s listen %s",
			 p->prefix, p->worker, p->node, info->address, info->listen);

	/* The push counters, as a snapshot (pool-wide figures within 1 s). */
	const char *hv[2 + 2 * 16];
	char vals[16][24];
	int hc = 0;
	char skey[160];
	snprintf(skey, sizeof(skey), "%spushstats:%s", p->prefix, p->worker);
	hv[hc++] = "HSET";
	hv[hc++] = skey;
	for (int i = 0; i < info->n_push && i < 16; i++) {
		snprintf(vals[i], sizeof(vals[i]), "%" PRIu64, info->push[i]);
		hv[hc++] = info->push_names[i];
		hv[hc++] = vals[i];
	}
	rt_redis_commandv(p->cmd, NULL, NULL, hc, hv, NULL);
}

struct claim_ctx {
	rt_claim_fn done;
	void *arg;
};

static void on_claimed(void *arg, redisReply *r)
{
	struct claim_ctx *c = arg;
	uint64_t epoch = 0;
	if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
		epoch = (uint64_t)r->integer;
	else if (r && r->type == REDIS_REPLY_ERROR)
		gw_log(GW_LOG_ERROR, "redis: claim script failed: %s", r->str);
	c->done(c->arg, epoch);
	free(c);
}

int rt_pool_claim(struct rt_pool *p, const struct rt_claim *c, int announce_only, rt_claim_fn done,
		  void *arg)
{
	struct claim_ctx *ctx = malloc(sizeof(*ctx));
	if (!ctx)
		return -1;
	ctx->done = done;
	ctx->arg = arg;
	char key[200], ekey[100], since[24];
	snprintf(key, sizeof(key), "%sagent:%s", p->prefix, c->agent);
	snprintf(ekey, sizeof(ekey), "%sepoch", p->prefix);
	snprintf(since, sizeof(since), "%" PRId64, c->since_ms);
	const char *argv[] = {"EVAL",
			      claim_lua,
			      "2",
			      key,
			      ekey,
			      p->prefix,
			      c->agent,
			      p->worker,
			      p->node,
			      c->primary,
			      c->pinned ? "1" : "0",
			      c->primary_as_sent,
			      c->on_primary ? "1" : "0",
			      c->persist ? "1" : "0",
			      since,
			      announce_only ? "1" : "0"};
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
	snprintf(key, sizeof(key), "%sagent:%s", p->prefix, agent);
	snprintf(e, sizeof(e), "%" PRIu64, epoch);
	const char *argv[] = {"EVAL", release_lua, "1", key, e};
	rt_redis_commandv(p->cmd, NULL, NULL, 5, argv, NULL);
}

struct route_ctx {
	rt_route_fn done;
	void *arg;
};

static void on_routed(void *arg, redisReply *r)
{
	struct route_ctx *c = arg;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
		if (r && r->type == REDIS_REPLY_ERROR)
			gw_log(GW_LOG_ERROR, "redis: route script failed: %s", r->str);
		c->done(c->arg, 1, 0, "", "");
	} else {
		c->done(c->arg, 0, (int)r->element[2]->integer, r->element[0]->str, r->element[1]->str);
	}
	free(c);
}

int rt_pool_route(struct rt_pool *p, const char *agent, int64_t commit_ms, int n, int policy_any,
		  rt_route_fn done, void *arg)
{
	return rt_route(p->cmd, p->prefix, agent, commit_ms, n, policy_any, done, arg);
}

int rt_route(struct rt_redis *r, const char *prefix, const char *agent, int64_t commit_ms, int n,
	     int policy_any, rt_route_fn done, void *arg)
{
	struct route_ctx *ctx = malloc(sizeof(*ctx));
	if (!ctx)
		return -1;
	ctx->done = done;
	ctx->arg = arg;
	char key[200], commit[24], count[16];
	snprintf(key, sizeof(key), "%sagent:%s", prefix, agent);
	snprintf(commit, sizeof(commit), "%" PRId64, commit_ms);
	snprintf(count, sizeof(count), "%d", n);
	const char *argv[] = {"EVAL", route_lua, "1", key, prefix, agent, commit, count,
			      policy_any ? "any" : "primary"};
	if (rt_redis_commandv(r, on_routed, ctx, 9, argv, NULL) != 0) {
		free(ctx);
		return -1;
	}
	return 0;
}

void rt_pool_account(struct rt_pool *p, const char *agent, const char *result, int64_t latency_ms)
{
	rt_account(p->cmd, p->prefix, p->worker, agent, result, latency_ms);
}

void rt_account(struct rt_redis *r, const char *prefix, const char *worker, const char *agent,
		const char *result, int64_t latency_ms)
{
	if (!rt_redis_is_up(r))
		return;
	char key[200];
	snprintf(key, sizeof(key), "%sagentpush:%s", prefix, agent);
	if (strcmp(result, "routed") != 0 && strcmp(result, "coalesced") != 0 &&
	    strcmp(result, "failed") != 0)
		rt_redis_command(r, NULL, NULL, "HINCRBY %s %s 1", key, result);
	if (latency_ms >= 0) {
		rt_redis_command(r, NULL, NULL, "HSET %s last_latency_ms %" PRId64, key, latency_ms);
		rt_redis_command(r, NULL, NULL, "LPUSH %spushlat:%s %" PRId64, prefix, worker,
				 latency_ms);
		rt_redis_command(r, NULL, NULL, "LTRIM %spushlat:%s 0 999", prefix, worker);
	}
	char ev[400];
	if (latency_ms >= 0)
		snprintf(ev, sizeof(ev),
			 "{\"ts_ms\":%" PRId64 ",\"agent\":\"%s\",\"worker\":\"%s\",\"result\":\"%s\","
			 "\"latency_ms\":%" PRId64 "}",
			 now_ms(), agent, worker, result, latency_ms);
	else
		snprintf(ev, sizeof(ev),
			 "{\"ts_ms\":%" PRId64 ",\"agent\":\"%s\",\"worker\":\"%s\",\"result\":\"%s\"}",
			 now_ms(), agent, worker, result);
	rt_redis_command(r, NULL, NULL, "LPUSH %spushevents %s", prefix, ev);
	rt_redis_command(r, NULL, NULL, "LTRIM %spushevents 0 99", prefix);
}
