/* Agent credentials; see credentials.h. */
#include "gateway/credentials.h"

#include "common/clock.h"
#include "common/log.h"
#include "gateway/config.h"
#include "gateway/session.h"
#include "gateway/worker.h"
#include "proto/qs_codec.h"
#include "store/queries.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <uthash.h>

int gw_token_new(char token[65], uint8_t sha256[32])
{
	unsigned char raw[32];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	for (int i = 0; i < 32; i++)
		snprintf(token + 2 * i, 3, "%02x", raw[i]);
	explicit_bzero(raw, sizeof(raw));
	SHA256((const unsigned char *)token, 64, sha256);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: qagw -c FILE agent add ID | agent remove ID | agent list\n");
	return 2;
}

static void print_credential(void *arg, const struct st_credential *cr)
{
	printf("%.*s %lld\n", (int)cr->agent_len, cr->agent, (long long)cr->created_ms);
}

int gw_credentials_cli(const struct gw_config *c, int argc, char **argv)
{
	if (argc < 1 || (strcmp(argv[0], "list") != 0 && argc != 2) ||
	    (strcmp(argv[0], "list") == 0 && argc != 1))
		return usage();
	const char *verb = argv[0], *id = argc > 1 ? argv[1] : "";
	if (argc > 1 && !qs_valid_agent_id(id, strlen(id))) {
		fprintf(stderr, "qagw: bad agent id \"%s\" (1..120 of [A-Za-z0-9._-])\n", id);
		return 2;
	}
	char app[96];
	snprintf(app, sizeof(app), "%s/agent-cli", c->node_name);
	PGconn *pg = st_connect_blocking(c->conninfo, app);
	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "qagw: cannot connect to the store: %s", PQerrorMessage(pg));
		PQfinish(pg);
		return 1;
	}
	int rc = 1;
	char err[512];
	if (strcmp(verb, "add") == 0) {
		char token[65];
		uint8_t sha[32];
		if (gw_token_new(token, sha) != 0) {
			fprintf(stderr, "qagw: no random bytes for a token\n");
		} else {
			int added =
			    st_credential_add_sync(pg, id, sha, gw_wall_ms(), err, sizeof(err));
			if (added < 0)
				fprintf(stderr, "qagw: %s\n", err);
			else if (!added)
				fprintf(stderr,
				        "qagw: agent %s already has a token (remove it first)\n",
				        id);
			else {
				printf("%s\n",
				       token); /* shown once: the store keeps only its hash */
				rc = 0;
			}
			explicit_bzero(token, sizeof(token));
		}
	} else if (strcmp(verb, "remove") == 0) {
		int removed = st_credential_remove_sync(pg, id, err, sizeof(err));
		if (removed < 0)
			fprintf(stderr, "qagw: %s\n", err);
		else if (!removed)
			fprintf(stderr, "qagw: agent %s has no token\n", id);
		else
			rc = 0;
	} else if (strcmp(verb, "list") == 0) {
		if (st_credential_list_sync(pg, print_credential, NULL, err, sizeof(err)) < 0)
			fprintf(stderr, "qagw: %s\n", err);
		else
			rc = 0;
	} else {
		rc = usage();
	}
	PQfinish(pg);
	return rc;
}

/* ---- failed-HELLO budget ---- */

struct auth_entry {
	char key[INET6_ADDRSTRLEN + 4]; /* the address, or an IPv6 /64 as "prefix::/64" */
	int fails;                      /* failures in the window that began at window_ms */
	int strikes;                    /* back-offs so far: the next lasts MIN << strikes */
	int64_t window_ms;
	int64_t until_ms; /* in back-off until then */
	int64_t last_ms;  /* last failure: the list is in this order */
	UT_hash_handle hh;
	TAILQ_ENTRY(auth_entry) link;
};

struct gw_auth_guard {
	struct auth_entry *by_key;
	TAILQ_HEAD(, auth_entry) lru; /* least recent failure first */
	int n;
};

struct gw_auth_guard *gw_auth_guard_new(void)
{
	struct gw_auth_guard *g = calloc(1, sizeof(*g));
	if (g)
		TAILQ_INIT(&g->lru);
	return g;
}

static void forget(struct gw_auth_guard *g, struct auth_entry *e)
{
	HASH_DEL(g->by_key, e);
	TAILQ_REMOVE(&g->lru, e, link);
	free(e);
	g->n--;
}

void gw_auth_guard_free(struct gw_auth_guard *g)
{
	if (!g)
		return;
	struct auth_entry *e;
	while ((e = TAILQ_FIRST(&g->lru)))
		forget(g, e);
	free(g);
}

int gw_auth_guard_size(const struct gw_auth_guard *g)
{
	return g ? g->n : 0;
}

/* The table's key for peer: its address, an IPv6 one by its /64 (one host
 * usually holds a whole /64: counting its addresses apart would give it
 * 2^64 budgets). */
static void address_key(const char *peer, char *key, size_t n)
{
	const char *end = strrchr(peer, ':');
	size_t len = end ? (size_t)(end - peer) : strlen(peer);
	if (peer[0] == '[' && len >= 2 && peer[len - 1] == ']') {
		char ip6[INET6_ADDRSTRLEN] = "";
		unsigned char a[16];
		snprintf(ip6, sizeof(ip6), "%.*s", (int)(len - 2), peer + 1);
		if (inet_pton(AF_INET6, ip6, a) == 1) {
			memset(a + 8, 0, 8);
			char net[INET6_ADDRSTRLEN];
			inet_ntop(AF_INET6, a, net, sizeof(net));
			snprintf(key, n, "%s/64", net);
			return;
		}
	}
	snprintf(key, n, "%.*s", (int)len, peer);
}

/* Forgets the addresses without a failure for GW_AUTH_FORGET_S. */
static void expire(struct gw_auth_guard *g, int64_t now_ms)
{
	struct auth_entry *e;
	while ((e = TAILQ_FIRST(&g->lru)) && now_ms - e->last_ms > GW_AUTH_FORGET_S * 1000LL &&
	       now_ms >= e->until_ms)
		forget(g, e);
}

int64_t gw_auth_backoff_left(struct gw_auth_guard *g, const char *peer, int64_t now_ms)
{
	if (!g || !g->n)
		return 0;
	char key[sizeof(((struct auth_entry *)0)->key)];
	address_key(peer, key, sizeof(key));
	struct auth_entry *e = NULL;
	HASH_FIND_STR(g->by_key, key, e);
	return e && e->until_ms > now_ms ? e->until_ms - now_ms : 0;
}

int64_t gw_auth_failed(struct gw_auth_guard *g, const char *peer, int64_t now_ms)
{
	if (!g)
		return 0;
	expire(g, now_ms);
	char key[sizeof(((struct auth_entry *)0)->key)];
	address_key(peer, key, sizeof(key));
	struct auth_entry *e = NULL;
	HASH_FIND_STR(g->by_key, key, e);
	if (!e) {
		if (g->n >= GW_AUTH_TABLE_MAX) /* full: the least recent goes */
			forget(g, TAILQ_FIRST(&g->lru));
		if (!(e = calloc(1, sizeof(*e))))
			return 0;
		snprintf(e->key, sizeof(e->key), "%s", key);
		e->window_ms = now_ms;
		HASH_ADD_STR(g->by_key, key, e);
		TAILQ_INSERT_TAIL(&g->lru, e, link);
		g->n++;
	} else {
		TAILQ_REMOVE(&g->lru, e, link);
		TAILQ_INSERT_TAIL(&g->lru, e, link);
	}
	e->last_ms = now_ms;
	if (now_ms - e->window_ms >= GW_AUTH_WINDOW_S * 1000LL || e->until_ms > 0) {
		if (now_ms < e->until_ms) /* a HELLO looked up before the back-off began */
			return 0;
		e->window_ms = now_ms; /* a fresh window (also after a back-off) */
		e->fails = 0;
		e->until_ms = 0;
	}
	if (++e->fails < GW_AUTH_BUDGET)
		return 0;
	int shift = e->strikes < 16 ? e->strikes : 16;
	int64_t backoff = (int64_t)GW_AUTH_BACKOFF_MIN_S * 1000 << shift;
	if (backoff > GW_AUTH_BACKOFF_MAX_S * 1000LL)
		backoff = GW_AUTH_BACKOFF_MAX_S * 1000LL;
	e->strikes++;
	e->until_ms = now_ms + backoff;
	return backoff;
}

/* ---- removed tokens ---- */

struct gw_revoke {
	struct event *sweep; /* every GW_REVOKE_SWEEP_S */
	struct st_op *op;    /* the check in flight, if any */
	int again;           /* asked for while one was in flight: once more after it */
	const char **agents; /* the check's parameters (reused) */
	const uint8_t **sha;
	int n, cap;
};

static void check(struct gw_worker *w);

static void on_checked(void *arg, const PGresult *res, const char *err)
{
	struct gw_worker *w = arg;
	struct gw_revoke *r = w->revoke;
	r->op = NULL;
	int n = res ? st_revoked_rows(res) : -1;
	if (n < 0)
		gw_log(GW_LOG_WARN, "worker %s: live sessions' tokens not checked: %s", w->wc->name,
		       err ? err : "unexpected result");
	for (int i = 0; i < n; i++) {
		const char *agent;
		const uint8_t *sha;
		st_revoked_row(res, i, &agent, &sha);
		struct gw_session *s = gw_session_find(w, agent);
		/* The session that was checked, not a newer one with a new token. */
		if (!s || gw_session_closing(s) || memcmp(gw_session_token_sha256(s), sha, 32) != 0)
			continue;
		gw_count(w, sessions_revoked, 1);
		gw_session_error(s, QS_E_AUTH, "the token of agent %s was removed", agent);
	}
	if (r->again) {
		r->again = 0;
		check(w);
	}
}

/* Adds a live session past the token check to the check's parameters. */
static int add_to_check(struct gw_session *s, void *arg)
{
	struct gw_revoke *r = arg;
	if (gw_session_closing(s))
		return 0;
	if (r->n == r->cap) {
		int cap = r->cap ? 2 * r->cap : 256;
		const char **a = realloc(r->agents, (size_t)cap * sizeof(*a));
		if (a)
			r->agents = a;
		const uint8_t **h = a ? realloc(r->sha, (size_t)cap * sizeof(*h)) : NULL;
		if (!h)
			return 1; /* the next sweep tries again */
		r->sha = h;
		r->cap = cap;
	}
	r->agents[r->n] = gw_session_agent(s);
	r->sha[r->n] = gw_session_token_sha256(s);
	r->n++;
	return 0;
}

/* One statement over every live session here past the token check. */
static void check(struct gw_worker *w)
{
	struct gw_revoke *r = w->revoke;
	if (!r)
		return;
	if (r->op) {
		r->again = 1;
		return;
	}
	r->n = 0;
	gw_session_each_agent(w, add_to_check, r);
	int n = r->n;
	if (n == 0)
		return;
	/* The parameters are copied into the statement: the sessions may go. */
	r->op =
	    st_credentials_revoked(gw_worker_hello_store(w), r->agents, r->sha, n, on_checked, w);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	check(arg);
}

int gw_revoke_init(struct gw_worker *w)
{
	if (w->conf->auth_off)
		return 0;
	struct gw_revoke *r = calloc(1, sizeof(*r));
	if (!r || !(r->sweep = event_new(w->base, -1, EV_PERSIST, on_sweep, w))) {
		free(r);
		return -1;
	}
	struct timeval tv = {GW_REVOKE_SWEEP_S, 0};
	event_add(r->sweep, &tv);
	w->revoke = r;
	return 0;
}

static void on_listening(void *arg, const PGresult *res, const char *err)
{
	struct gw_worker *w = arg;
	if (!res)
		gw_log(GW_LOG_WARN, "worker %s: LISTEN " ST_TOKEN_CHANNEL " failed: %s",
		       w->wc->name, err);
}

void gw_revoke_store_state(struct gw_worker *w, int up)
{
	struct gw_revoke *r = w->revoke;
	if (!r || !up)
		return;
	if (!st_listen_tokens(w->hello_store, on_listening, w))
		gw_log(GW_LOG_WARN, "worker %s: cannot LISTEN " ST_TOKEN_CHANNEL, w->wc->name);
	/* Removals while the connection was down were not heard: check all
	 * (after the one in flight, if any). */
	check(w);
}

void gw_revoke_notified(struct gw_worker *w, const char *channel, const char *payload)
{
	if (!w->revoke || strcmp(channel, ST_TOKEN_CHANNEL) != 0)
		return;
	struct gw_session *s = gw_session_find(w, payload);
	if (s && !gw_session_closing(s))
		check(w);
}

void gw_revoke_free(struct gw_worker *w)
{
	struct gw_revoke *r = w->revoke;
	if (!r)
		return;
	if (r->op)
		st_op_cancel(r->op);
	event_free(r->sweep);
	free(r->agents);
	free(r->sha);
	free(r);
	w->revoke = NULL;
}
