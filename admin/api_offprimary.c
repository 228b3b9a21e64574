/* GET /api/agents-off-primary: the agents whose primary worker does not
 * serve. docs/design.md "The router": an agent that names its own primary keeps it,
 * and the admin port lists it while that primary is down; router-assigned
 * agents show here too until the router moves them ("pinned" tells them
 * apart). Pool-wide, from Redis (docs/design.md "Redis: routing state"), in
 * pipelined steps:
 *
 *   1. SMEMBERS P workers
 *   2. per worker: HGET P worker:NAME state (nil: no heartbeat, down) and
 *      SCARD P primaries:NAME
 *   3. per worker not serving: SSCAN P primaries:NAME until the set is read or
 *      OFF_CAP agents are collected (rounds of all such workers at once)
 *   4. per collected agent: HMGET P agent:ID primary pinned worker on_primary
 *
 * A member of P primaries:NAME whose hash names another primary (or has no
 * hash) is a stale entry and is left out. The agents pinned to a primary
 * that matches no worker (P unresolved, kept by claim.lua) are read the same
 * way, as if they were a worker's named "" whose state is "unresolved". Without Redis, or on any
 * failed reply: 503 redis_unavailable (the store keeps no such list). */
#include "admin/api.h"
#include "admin/http.h"
#include "proto/qs_codec.h"
#include "router/rt_keys.h"

#include <stdlib.h>
#include <string.h>

#define OFF_CAP        1000   /* agents listed per worker; "truncated" beyond */
#define OFF_SCAN_COUNT "1000" /* SSCAN COUNT hint */
#define OFF_MAX_SCANS  64     /* SSCAN rounds per worker before giving up (truncated) */

struct off_worker {
	char *name;
	char *state;         /* the heartbeat hash's state; NULL: no heartbeat (down) */
	long long primaries; /* SCARD P primaries:NAME */
	json_t *found;       /* agent ids read from P primaries:NAME (object keys), or NULL */
	char cursor[32];     /* the next SSCAN cursor; "0" once the set has been read */
	int scans;           /* SSCAN rounds so far */
	int done;            /* stop scanning: read through, OFF_CAP reached, or gave up */
	int truncated;
	int listed;     /* agents of this worker in the answer */
	int unresolved; /* not a worker: P unresolved */
};

struct off_agent {
	char *id;
	int worker;           /* index in ctx->workers: whose P primaries: set named it */
	int listed;           /* its P agent:ID still names that worker as primary */
	int pinned;           /* "pinned" 1: it named its own primary in HELLO */
	int on_primary;       /* "on_primary" 1 */
	char *session_worker; /* "worker": holds its live session; NULL when empty */
	char *as_sent;        /* "primary_as_sent": what its HELLO named; NULL when empty */
};

struct off_ctx {
	struct off_worker *workers; /* sorted by name */
	int n_workers;
	struct off_agent *agents;
	int n_agents;
	int failed; /* a Redis call could not be sent or its reply was not one */
};

static void off_ctx_free(void *p)
{
	struct off_ctx *c = p;
	for (int i = 0; i < c->n_workers; i++) {
		free(c->workers[i].name);
		free(c->workers[i].state);
		json_decref(c->workers[i].found);
	}
	for (int i = 0; i < c->n_agents; i++) {
		free(c->agents[i].id);
		free(c->agents[i].session_worker);
		free(c->agents[i].as_sent);
	}
	free(c->workers);
	free(c->agents);
	free(c);
}

static int serving(const struct off_worker *w)
{
	return w->state && strcmp(w->state, "serving") == 0;
}

static const char *state_name(const struct off_worker *w)
{
	return w->state ? w->state : "down";
}

static int cmp_worker(const void *a, const void *b)
{
	return strcmp(((const struct off_worker *)a)->name, ((const struct off_worker *)b)->name);
}

static int cmp_agent(const void *a, const void *b)
{
	return strcmp(((const struct off_agent *)a)->id, ((const struct off_agent *)b)->id);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static const struct off_worker *find_worker(const struct off_ctx *c, const char *name)
{
	struct off_worker key = {.name = (char *)name};
	return bsearch(&key, c->workers, (size_t)c->n_workers, sizeof(key), cmp_worker);
}

/* A reply string as a new C string (NULL when it is not a non-empty string
 * without NUL bytes). */
static char *reply_strdup(const redisReply *e)
{
	if (!e || e->type != REDIS_REPLY_STRING || e->len == 0 || memchr(e->str, 0, e->len))
		return NULL;
	return strndup(e->str, e->len);
}

static int reply_is(const redisReply *e, const char *s)
{
	return e && e->type == REDIS_REPLY_STRING && e->len == strlen(s) &&
	       memcmp(e->str, s, e->len) == 0;
}

static void reply_unavailable(struct adm_req *r)
{
	adm_reply_error(r, 503, "redis_unavailable",
	                "Redis is unavailable: the agents off their primary are known only to it");
}

/* ---- step 4: the agents' routing state, then the answer ---- */

static json_t *agent_entry(const struct off_ctx *c, const struct off_agent *a)
{
	const struct off_worker *primary = &c->workers[a->worker];
	/* A session on a worker without heartbeat is what a killed node left
	 * behind, not a session. */
	const struct off_worker *sw = a->session_worker ? find_worker(c, a->session_worker) : NULL;
	int live = sw && sw->state;
	json_t *e = json_object();
	json_object_set_new(e, "agent", json_string(a->id));
	json_object_set_new(e, "primary",
	                    primary->unresolved ? json_null() : json_string(primary->name));
	json_object_set_new(e, "primary_state", json_string(state_name(primary)));
	json_object_set_new(e, "reason", json_string(state_name(primary)));
	json_object_set_new(e, "primary_as_sent",
	                    a->as_sent ? json_string(a->as_sent) : json_null());
	json_object_set_new(e, "pinned", json_boolean(a->pinned));
	json_object_set_new(e, "session_worker", live ? json_string(sw->name) : json_null());
	json_object_set_new(e, "on_primary", json_boolean(live && a->on_primary));
	return e;
}

static void answer(struct adm_req *r)
{
	struct off_ctx *c = r->ctx;
	if (c->failed) {
		reply_unavailable(r);
		return;
	}
	qsort(c->agents, (size_t)c->n_agents, sizeof(*c->agents), cmp_agent);
	json_t *agents = json_array();
	for (int i = 0; i < c->n_agents; i++) {
		if (!c->agents[i].listed)
			continue;
		c->workers[c->agents[i].worker].listed++;
		json_array_append_new(agents, agent_entry(c, &c->agents[i]));
	}
	json_t *workers = json_array();
	json_t *unresolved = json_object();
	for (int i = 0; i < c->n_workers; i++) {
		const struct off_worker *w = &c->workers[i];
		if (w->unresolved) {
			json_object_set_new(unresolved, "agents", json_integer(w->listed));
			json_object_set_new(unresolved, "truncated", json_boolean(w->truncated));
			json_object_set_new(unresolved, "total", json_integer(w->primaries));
			continue;
		}
		if (serving(w))
			continue;
		json_t *e = json_object();
		json_object_set_new(e, "name", json_string(w->name));
		json_object_set_new(e, "state", json_string(state_name(w)));
		json_object_set_new(e, "agents", json_integer(w->listed));
		json_object_set_new(e, "truncated", json_boolean(w->truncated));
		json_object_set_new(e, "primaries", json_integer(w->primaries));
		json_array_append_new(workers, e);
	}
	json_t *j = json_object();
	json_object_set_new(j, "workers", workers);
	json_object_set_new(j, "agents", agents);
	json_object_set_new(j, "unresolved", unresolved);
	adm_reply_json(r, 200, j);
}

/* HMGET P agent:ID primary pinned worker on_primary primary_as_sent. */
static void on_agent(struct adm_req *r, redisReply *reply, int i)
{
	struct off_ctx *c = r->ctx;
	struct off_agent *a = &c->agents[i];
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 5) {
		c->failed = 1;
		return;
	}
	a->listed = reply_is(reply->element[0], c->workers[a->worker].name);
	a->pinned = reply_is(reply->element[1], "1");
	a->session_worker = reply_strdup(reply->element[2]);
	a->on_primary = reply_is(reply->element[3], "1");
	a->as_sent = reply_strdup(reply->element[4]);
	if (c->workers[a->worker].unresolved) /* still pinned to nothing */
		a->listed = a->listed && a->pinned && a->as_sent;
}

/* Takes up to OFF_CAP agents of each worker not serving (the first by id, so
 * that a truncated list is the same from one call to the next while the set
 * holds still) and asks for their routing state in one pipeline. */
static void fetch_agents(struct adm_req *r)
{
	struct off_ctx *c = r->ctx;
	if (c->failed) {
		reply_unavailable(r);
		return;
	}
	size_t total = 0;
	for (int i = 0; i < c->n_workers; i++)
		total += json_object_size(c->workers[i].found);
	c->agents = calloc(total ? total : 1, sizeof(*c->agents));
	char **ids = calloc(total ? total : 1, sizeof(char *));
	if (!c->agents || !ids) {
		free(ids);
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	for (int i = 0; i < c->n_workers; i++) {
		struct off_worker *w = &c->workers[i];
		size_t n = 0;
		const char *id;
		json_t *v;
		json_object_foreach(w->found, id, v)
		{
			ids[n++] = (char *)id;
		}
		qsort(ids, n, sizeof(char *), cmp_str);
		if (n > OFF_CAP || w->primaries > OFF_CAP)
			w->truncated = 1;
		for (size_t k = 0; k < n && k < OFF_CAP; k++) {
			struct off_agent *a = &c->agents[c->n_agents];
			a->id = strdup(ids[k]);
			if (!a->id) {
				free(ids);
				adm_reply_error(r, 500, "internal", "out of memory");
				return;
			}
			a->worker = i;
			c->n_agents++;
		}
	}
	free(ids);
	for (int i = 0; i < c->n_agents && !c->failed; i++) {
		char key[256];
		adm_key(r, key, sizeof(key), RT_KEY_AGENT "%s", c->agents[i].id);
		if (adm_redis(r, on_agent, i, "HMGET", key, "primary", "pinned", "worker",
		              "on_primary", "primary_as_sent", NULL) != 0)
			c->failed = 1;
	}
	adm_then(r, answer);
}

/* ---- step 3: the primaries of each worker not serving ---- */

/* SSCAN reply: [cursor, [member, ...]]. */
static void on_scan(struct adm_req *r, redisReply *reply, int i)
{
	struct off_ctx *c = r->ctx;
	struct off_worker *w = &c->workers[i];
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[0]->len >= sizeof(w->cursor) ||
	    reply->element[1]->type != REDIS_REPLY_ARRAY) {
		c->failed = 1;
		return;
	}
	memcpy(w->cursor, reply->element[0]->str, reply->element[0]->len);
	w->cursor[reply->element[0]->len] = 0;
	const redisReply *members = reply->element[1];
	for (size_t k = 0; k < members->elements; k++) {
		const redisReply *m = members->element[k];
		char id[256];
		/* Only agent ids are keys of P agent:ID (and valid JSON keys). */
		if (m->type != REDIS_REPLY_STRING || m->len >= sizeof(id) ||
		    !qs_valid_agent_id(m->str, m->len))
			continue;
		memcpy(id, m->str, m->len);
		id[m->len] = 0;
		json_object_set_new(w->found, id, json_null());
	}
	w->scans++;
	int read_through = strcmp(w->cursor, "0") == 0;
	if (read_through || json_object_size(w->found) >= OFF_CAP)
		w->done = 1;
	else if (w->scans >= OFF_MAX_SCANS) {
		w->done = 1;
		w->truncated = 1;
	}
}

/* One SSCAN round for every worker still being read; repeats until all are
 * done. SSCAN may return a member twice: found is a set. */
static void scan_round(struct adm_req *r)
{
	struct off_ctx *c = r->ctx;
	if (c->failed) {
		reply_unavailable(r);
		return;
	}
	int sent = 0;
	for (int i = 0; i < c->n_workers && !c->failed; i++) {
		struct off_worker *w = &c->workers[i];
		if (w->done)
			continue;
		char key[256];
		if (w->unresolved)
			adm_key(r, key, sizeof(key), RT_KEY_UNRESOLVED);
		else
			adm_key(r, key, sizeof(key), RT_KEY_PRIMARIES "%s", w->name);
		if (adm_redis(r, on_scan, i, "SSCAN", key, w->cursor, "COUNT", OFF_SCAN_COUNT,
		              NULL) != 0)
			c->failed = 1;
		else
			sent++;
	}
	if (sent == 0 && !c->failed) {
		fetch_agents(r);
		return;
	}
	adm_then(r, scan_round);
}

/* ---- step 2: which workers serve ---- */

static void on_state(struct adm_req *r, redisReply *reply, int i)
{
	struct off_ctx *c = r->ctx;
	if (reply && reply->type == REDIS_REPLY_NIL)
		return; /* no heartbeat: down */
	if (!reply || reply->type != REDIS_REPLY_STRING) {
		c->failed = 1;
		return;
	}
	c->workers[i].state = strndup(reply->str, reply->len);
	if (!c->workers[i].state)
		c->failed = 1;
}

static void on_primaries(struct adm_req *r, redisReply *reply, int i)
{
	struct off_ctx *c = r->ctx;
	if (!reply || reply->type != REDIS_REPLY_INTEGER) {
		c->failed = 1;
		return;
	}
	c->workers[i].primaries = reply->integer;
}

/* After step 2: every worker not serving gets a set to collect into and is
 * scanned, unless it is primary of nobody. */
static void start_scans(struct adm_req *r)
{
	struct off_ctx *c = r->ctx;
	if (c->failed) {
		reply_unavailable(r);
		return;
	}
	for (int i = 0; i < c->n_workers; i++) {
		struct off_worker *w = &c->workers[i];
		strcpy(w->cursor, "0");
		w->done = serving(w) || w->primaries == 0;
		if (serving(w))
			continue;
		w->found = json_object();
		if (!w->found) {
			adm_reply_error(r, 500, "internal", "out of memory");
			return;
		}
	}
	scan_round(r);
}

static void fetch_states(struct adm_req *r)
{
	struct off_ctx *c = r->ctx;
	if (c->failed) {
		reply_unavailable(r);
		return;
	}
	for (int i = 0; i < c->n_workers && !c->failed; i++) {
		char hkey[256], pkey[256];
		if (c->workers[i].unresolved) {
			adm_key(r, pkey, sizeof(pkey), RT_KEY_UNRESOLVED);
			if (adm_redis(r, on_primaries, i, "SCARD", pkey, NULL) != 0)
				c->failed = 1;
			continue;
		}
		adm_key(r, hkey, sizeof(hkey), RT_KEY_WORKER "%s", c->workers[i].name);
		adm_key(r, pkey, sizeof(pkey), RT_KEY_PRIMARIES "%s", c->workers[i].name);
		if (adm_redis(r, on_state, i, "HGET", hkey, "state", NULL) != 0 ||
		    adm_redis(r, on_primaries, i, "SCARD", pkey, NULL) != 0)
			c->failed = 1;
	}
	adm_then(r, start_scans);
}

/* ---- step 1: the workers of the pool ---- */

static void on_names(struct adm_req *r, redisReply *reply, int idx)
{
	struct off_ctx *c = r->ctx;
	if (!reply || reply->type != REDIS_REPLY_ARRAY) {
		c->failed = 1;
		return;
	}
	c->workers = calloc(reply->elements + 1, sizeof(*c->workers)); /* + P unresolved */
	if (!c->workers) {
		c->failed = 1;
		return;
	}
	for (size_t i = 0; i < reply->elements; i++) {
		const redisReply *e = reply->element[i];
		if (e->type != REDIS_REPLY_STRING || !qs_valid_worker_name(e->str, e->len))
			continue;
		c->workers[c->n_workers].name = strndup(e->str, e->len);
		if (c->workers[c->n_workers].name)
			c->n_workers++;
	}
	struct off_worker *u = &c->workers[c->n_workers];
	u->name = strdup("");
	u->state = strdup("unresolved");
	u->unresolved = 1;
	if (!u->name || !u->state) {
		free(u->name), free(u->state);
		c->failed = 1;
		return;
	}
	c->n_workers++;
	qsort(c->workers, (size_t)c->n_workers, sizeof(*c->workers), cmp_worker);
}

void adm_get_agents_off_primary(struct adm_req *r)
{
	struct off_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	r->ctx = c;
	r->ctx_free = off_ctx_free;
	char key[256];
	adm_key(r, key, sizeof(key), RT_KEY_WORKERS);
	if (adm_redis(r, on_names, 0, "SMEMBERS", key, NULL) != 0) {
		reply_unavailable(r);
		return;
	}
	adm_then(r, fetch_states);
}
