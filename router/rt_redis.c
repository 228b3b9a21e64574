/* hiredis async connection with reconnect; see rt_redis.h.
 *
 * hiredis frees its context after the disconnect callback and after a failed
 * connect; we only drop our pointer then and arm the reconnect timer. While
 * the connection is down, commands are refused at once (-1) rather than
 * queued: callers count a failure and go on from the store. */
#include "router/rt_redis.h"

#include "common/clock.h"
#include "common/log.h"

#include <event2/event.h>
#include <openssl/evp.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 2000

struct rt_redis {
	struct event_base *base;
	char host[256];
	int port;
	char password[256];
	char name[80];
	redisAsyncContext *ac; /* NULL while down */
	int up; /* a reply was read on this connection: its handshake PING (after AUTH) */
	int backoff_ms;
	struct event *retry;
	rt_state_fn on_state;
	void *arg;
	int was_up;           /* logged "lost" only for a connection that had come up */
	rt_message_fn sub_fn; /* subscriber connections: where messages go */
	void *sub_arg;
	/* A Redis that stops answering (a partition, a stopped server) does not
	 * close the connection: commands without a reply for timeout_ms drop it. */
	int timeout_ms;
	int n_pending;            /* commands sent, reply not yet in */
	int64_t pending_since_ms; /* the last reply (or the first send) since n_pending > 0 */
	int64_t connect_ms;       /* when the current connect started */
	int64_t last_reply_ms;    /* the last reply read (an idle connection is PINGed) */
	struct event *watchdog;
	/* Scripts: EVAL is sent as EVALSHA of the script's SHA-1, computed once
	 * per script (scripts are static strings: known by their address). */
	struct {
		const char *src;
		char sha[41];
	} shas[16];
	int n_shas;
	/* Sentinel (n_sentinels > 0): host and port above are the master the
	 * sentinels named last. */
	struct rt_addr sentinels[RT_REDIS_MAX_SENTINELS];
	int n_sentinels;
	char master_name[128];
	int ask_at;               /* the sentinel to ask next */
	int asked;                /* sentinels asked in this round */
	redisAsyncContext *ask;   /* the sentinel being asked, or NULL */
	int64_t ask_ms;           /* when that started */
	int warned;               /* "no sentinel named a master" logged in this outage */
	int reask;                /* what a sentinel named is not a master: ask the next */
	redisAsyncContext *watch; /* a sentinel, subscribed to +switch-master, or NULL */
	int watch_at;             /* the sentinel it is (or is to be) on */
	int watch_ok;             /* the SUBSCRIBE was confirmed */
	int64_t watch_ms;         /* when it connected, or when to try again */
};

static void connect_now(struct rt_redis *r);
static void connect_master(struct rt_redis *r);
static void handshake(struct rt_redis *r);
static void ask_sentinel(struct rt_redis *r);
static void start_watch(struct rt_redis *r);

static void arm_retry(struct rt_redis *r)
{
	struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};
	evtimer_add(r->retry, &tv);
	r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

static void set_up(struct rt_redis *r, int up)
{
	if (r->up == up)
		return;
	r->up = up;
	if (up) {
		r->was_up = 1;
		r->warned = 0;
		r->backoff_ms = BACKOFF_MIN_MS;
		gw_log(GW_LOG_INFO, "redis %s: connected to %s:%d", r->name, r->host, r->port);
	}
	if (r->on_state)
		r->on_state(r->arg, up);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rt_redis *r = ac->data;
	if (status != REDIS_OK) {
		gw_log(GW_LOG_DEBUG, "redis %s: connect to %s:%d failed: %s", r->name, r->host,
		       r->port, ac->errstr);
		r->ac = NULL; /* hiredis frees it */
		arm_retry(r);
		return;
	}
	if (!r->password[0])
		handshake(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rt_redis *r = ac->data;
	r->ac = NULL; /* hiredis frees it */
	r->n_pending = 0;
	if (r->up || r->was_up)
		gw_log(GW_LOG_WARN, "redis %s: connection lost: %s", r->name,
		       status == REDIS_OK ? "closed" : ac->errstr);
	r->was_up = 0;
	set_up(r, 0);
	if (r->retry && r->reask) { /* not a master: the next sentinel of this round, now */
		r->reask = 0;
		ask_sentinel(r);
	} else if (r->retry) {
		arm_retry(r);
	}
}

static void on_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rt_redis *r = privdata;
	redisReply *rep = reply;
	if (!rep) /* the connection is going (freed or broken): nothing to do here */
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		gw_log(GW_LOG_ERROR, "redis %s: AUTH refused%s%s", r->name, rep ? ": " : "",
		       rep ? rep->str : "");
		redisAsyncDisconnect(ac);
		return;
	}
	handshake(r);
}

/* ROLE's first element: "master", "slave" or "sentinel". */
static const char *role_of(const redisReply *rep)
{
	if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
	    rep->element[0]->type == REDIS_REPLY_STRING)
		return rep->element[0]->str;
	return "?";
}

static int is_master(const redisReply *rep)
{
	return strcmp(role_of(rep), "master") == 0;
}

/* Up means Redis answered, not that a TCP connect succeeded: a stopped or
 * hung Redis still completes connects (the kernel's backlog) and reads
 * nothing. The watchdog drops a connection not up within timeout_ms. */
static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rt_redis *r = privdata;
	redisReply *rep = reply;
	if (!rep)
		return;
	if (rep->type == REDIS_REPLY_ERROR) {
		gw_log(GW_LOG_ERROR, "redis %s: PING refused: %s", r->name, rep->str);
		redisAsyncDisconnect(ac);
		return;
	}
	if (r->n_sentinels && !is_master(rep)) {
		/* A stale sentinel, or a failover under way: ask the next one. */
		gw_log(GW_LOG_WARN,
		       "redis %s: %s:%d, named by a sentinel, is not a master (ROLE %s)", r->name,
		       r->host, r->port, role_of(rep));
		r->ask_at = (r->ask_at + 1) % r->n_sentinels;
		r->reask = 1;
		redisAsyncDisconnect(ac);
		return;
	}
	r->last_reply_ms = gw_mono_ms();
	set_up(r, 1);
}

static void handshake(struct rt_redis *r)
{
	/* With sentinels, ROLE: what a sentinel names may already be a replica.
	 * (If it cannot be sent, the watchdog drops the connection.) */
	const char *cmd = r->n_sentinels ? "ROLE" : "PING";
	if (redisAsyncCommand(r->ac, on_handshake, r, cmd) != REDIS_OK)
		gw_log(GW_LOG_WARN, "redis %s: cannot send %s", r->name, cmd);
}

static void connect_now(struct rt_redis *r)
{
	if (r->n_sentinels) {
		r->asked = 0;
		ask_sentinel(r);
		return;
	}
	connect_master(r);
}

/* Connects to host and port (the master, with sentinels). */
static void connect_master(struct rt_redis *r)
{
	redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
	if (!ac || ac->err) {
		gw_log(GW_LOG_DEBUG, "redis %s: cannot connect: %s", r->name,
		       ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		arm_retry(r);
		return;
	}
	ac->data = r;
	r->ac = ac;
	r->connect_ms = gw_mono_ms();
	redisLibeventAttach(ac, r->base);
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	if (r->password[0])
		redisAsyncCommand(ac, on_auth, r, "AUTH %s", r->password);
}

/* ---- Sentinel ---------------------------------------------------------- */

static void ask_next(struct rt_redis *r)
{
	r->ask_at = (r->ask_at + 1) % r->n_sentinels;
	ask_sentinel(r);
}

/* The sentinel's answer: [host, port], nil (it knows no such master), or
 * NULL (no answer: down, refused, or dropped by the watchdog). */
static void on_ask_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rt_redis *r = privdata;
	redisReply *rep = reply;
	if (r->ask != ac) /* a sentinel given up on, or rt_redis_free */
		return;
	r->ask = NULL;
	const struct rt_addr *s = &r->sentinels[r->ask_at];
	if (rep)
		redisAsyncDisconnect(ac);
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_STRING ||
	    rep->element[1]->type != REDIS_REPLY_STRING) {
		gw_log(GW_LOG_DEBUG, "redis %s: sentinel %s:%d: %s", r->name, s->host, s->port,
		       !rep                             ? "no answer"
		       : rep->type == REDIS_REPLY_ERROR ? rep->str
		                                        : "knows no such master");
		ask_next(r);
		return;
	}
	char *end;
	long port = strtol(rep->element[1]->str, &end, 10);
	if (*end || port < 1 || port > 65535 || rep->element[0]->len >= sizeof(r->host)) {
		ask_next(r);
		return;
	}
	if (strcmp(r->host, rep->element[0]->str) != 0 || r->port != (int)port)
		gw_log(GW_LOG_INFO, "redis %s: sentinel %s:%d names %s:%s the master of \"%s\"",
		       r->name, s->host, s->port, rep->element[0]->str, rep->element[1]->str,
		       r->master_name);
	snprintf(r->host, sizeof(r->host), "%s", rep->element[0]->str);
	r->port = (int)port;
	connect_master(r);
}

/* Asks the sentinel at ask_at, or the next ones; once each was asked in
 * this round, the reconnect backoff applies. */
static void ask_sentinel(struct rt_redis *r)
{
	while (r->asked < r->n_sentinels) {
		const struct rt_addr *s = &r->sentinels[r->ask_at];
		r->asked++;
		redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
		if (!ac || ac->err) {
			if (ac)
				redisAsyncFree(ac);
			r->ask_at = (r->ask_at + 1) % r->n_sentinels;
			continue;
		}
		ac->data = r;
		r->ask = ac;
		r->ask_ms = gw_mono_ms();
		redisLibeventAttach(ac, r->base);
		/* queued until connected; a failed connect calls back with NULL */
		redisAsyncCommand(ac, on_ask_reply, r, "SENTINEL get-master-addr-by-name %s",
		                  r->master_name);
		return;
	}
	if (!r->warned)
		gw_log(GW_LOG_WARN, "redis %s: no sentinel named a master for \"%s\"", r->name,
		       r->master_name);
	r->warned = 1;
	arm_retry(r);
}

/* +switch-master "NAME OLDHOST OLDPORT NEWHOST NEWPORT": the connection, if
 * it is not on the new master, is dropped and asks the sentinels again. */
static void on_switch(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rt_redis *r = privdata;
	redisReply *rep = reply;
	if (r->watch != ac)
		return;
	if (!rep) { /* the sentinel went: another one in a second */
		r->watch = NULL;
		r->watch_at = (r->watch_at + 1) % r->n_sentinels;
		r->watch_ms = gw_mono_ms() + 1000;
		return;
	}
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(rep->element[0]->str, "subscribe") == 0) {
		r->watch_ok = 1;
		return;
	}
	if (strcmp(rep->element[0]->str, "message") != 0 ||
	    rep->element[2]->type != REDIS_REPLY_STRING)
		return;
	char name[128], host[256];
	int port = 0;
	if (sscanf(rep->element[2]->str, "%127s %*s %*s %255s %d", name, host, &port) != 3 ||
	    strcmp(name, r->master_name) != 0)
		return;
	gw_log(GW_LOG_INFO, "redis %s: the sentinels switched the master of \"%s\" to %s:%d",
	       r->name, name, host, port);
	r->ask_at = r->watch_at; /* it knows already */
	if (r->ac && (strcmp(host, r->host) != 0 || port != r->port)) {
		rt_redis_reset(r);
	} else if (!r->ac && !r->ask) { /* down, waiting for the backoff: no need to wait */
		evtimer_del(r->retry);
		r->backoff_ms = BACKOFF_MIN_MS;
		connect_now(r);
	}
}

static void start_watch(struct rt_redis *r)
{
	const struct rt_addr *s = &r->sentinels[r->watch_at];
	redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
	if (!ac || ac->err) {
		if (ac)
			redisAsyncFree(ac);
		r->watch_at = (r->watch_at + 1) % r->n_sentinels;
		r->watch_ms = gw_mono_ms() + 1000;
		return;
	}
	ac->data = r;
	r->watch = ac;
	r->watch_ok = 0;
	r->watch_ms = gw_mono_ms();
	redisLibeventAttach(ac, r->base);
	redisAsyncCommand(ac, on_switch, r, "SUBSCRIBE +switch-master");
}

/* From the watchdog: a sentinel that does not answer is given up on. */
static void watch_sentinels(struct rt_redis *r)
{
	int64_t now = gw_mono_ms();
	if (r->ask && r->timeout_ms > 0 && now - r->ask_ms >= r->timeout_ms) {
		redisAsyncContext *ac = r->ask;
		r->ask = NULL;
		redisAsyncFree(ac);
		ask_next(r);
	}
	if (r->watch && !r->watch_ok && r->timeout_ms > 0 && now - r->watch_ms >= r->timeout_ms)
		redisAsyncFree(r->watch); /* on_switch(NULL) moves to the next sentinel */
	else if (!r->watch && now >= r->watch_ms)
		start_watch(r);
}

int rt_redis_parse_sentinels(const char *list, struct rt_addr *out, int max, char *err,
                             size_t errlen)
{
	int n = 0;
	const char *p = list;
	for (;;) {
		p += strspn(p, " \t");
		size_t len = strcspn(p, ",");
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		char item[sizeof(out->host) + 8];
		if (len == 0 || len >= sizeof(item)) {
			snprintf(err, errlen, "%s",
			         len ? "an address too long" : "an empty address");
			return -1;
		}
		memcpy(item, p, len);
		item[len] = 0;
		char *host = item, *colon;
		if (item[0] == '[') { /* [v6]:PORT */
			char *rb = strchr(item, ']');
			if (!rb || rb[1] != ':') {
				snprintf(err, errlen, "\"%s\" is not [ADDRESS]:PORT", item);
				return -1;
			}
			*rb = 0;
			host = item + 1;
			colon = rb + 1;
		} else {
			colon = strchr(item, ':');
			if (!colon || strchr(colon + 1, ':')) {
				snprintf(err, errlen, "\"%s\" is not HOST:PORT", item);
				return -1;
			}
		}
		*colon = 0;
		char *end;
		long port = strtol(colon + 1, &end, 10);
		if (!host[0] || !colon[1] || *end || port < 1 || port > 65535) {
			snprintf(err, errlen, "\"%.*s\" is not HOST:PORT with a port 1..65535",
			         (int)len, p);
			return -1;
		}
		if (n == max) {
			snprintf(err, errlen, "more than %d sentinels", max);
			return -1;
		}
		if (strlen(host) >= sizeof(out[n].host)) {
			snprintf(err, errlen, "a host name too long");
			return -1;
		}
		memcpy(out[n].host, host, strlen(host) + 1);
		out[n].port = (int)port;
		n++;
		p += strcspn(p, ",");
		if (!*p)
			return n;
		p++;
	}
}

/* ---- the connection ------------------------------------------------------ */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct rt_redis *r = arg;
	if (!r->ac && !r->ask)
		connect_now(r);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct rt_redis *r = arg;
	if (r->n_sentinels)
		watch_sentinels(r);
	if (r->ac && !r->up && r->timeout_ms > 0 && gw_mono_ms() - r->connect_ms >= r->timeout_ms) {
		/* A silent host holds a connect for the kernel's SYN retries; a hung
		 * Redis accepts it and never answers the PING. */
		gw_log(GW_LOG_WARN, "redis %s: no answer within %d ms of connecting to %s:%d",
		       r->name, r->timeout_ms, r->host, r->port);
		rt_redis_reset(r);
		return;
	}
	if (!r->ac || !r->up || r->timeout_ms <= 0)
		return;
	/* An idle command connection is PINGed, so that a hung Redis is found
	 * without waiting for traffic (not a subscriber: SUBSCRIBE mode). */
	if (r->n_pending == 0 && !r->sub_fn &&
	    gw_mono_ms() - r->last_reply_ms >= RT_REDIS_IDLE_PING_MS)
		(void)rt_redis_command(r, NULL, NULL, "PING");
	if (r->n_pending == 0)
		return;
	int64_t waited = gw_mono_ms() - r->pending_since_ms;
	if (waited < r->timeout_ms)
		return;
	gw_log(GW_LOG_WARN, "redis %s: no reply for %lld ms (%d commands waiting): reconnecting",
	       r->name, (long long)waited, r->n_pending);
	/* Pending callbacks run with NULL (their callers count a failure), then
	 * on_disconnect arms the reconnect. */
	rt_redis_reset(r);
}

void rt_redis_reset(struct rt_redis *r)
{
	redisAsyncContext *ac = r->ac;
	if (!ac)
		return;
	/* Connected: on_disconnect (called by the free) marks it down and arms the
	 * reconnect. Still connecting: hiredis calls neither callback. */
	int connected = (ac->c.flags & REDIS_CONNECTED) != 0;
	redisAsyncFree(ac);
	if (!connected) {
		r->ac = NULL;
		if (r->retry && !evtimer_pending(r->retry, NULL))
			arm_retry(r);
	}
}

void rt_redis_set_timeout(struct rt_redis *r, int ms)
{
	r->timeout_ms = ms;
}

struct rt_redis *rt_redis_new(struct event_base *base, const struct rt_redis_conf *conf,
                              const char *name, rt_state_fn on_state, void *arg)
{
	struct rt_redis *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->base = base;
	snprintf(r->host, sizeof(r->host), "%s", conf->host ? conf->host : "");
	r->port = conf->port;
	snprintf(r->password, sizeof(r->password), "%s", conf->password ? conf->password : "");
	snprintf(r->name, sizeof(r->name), "%s", name);
	if (conf->sentinels && conf->sentinels[0]) {
		char err[160];
		r->n_sentinels = rt_redis_parse_sentinels(conf->sentinels, r->sentinels,
		                                          RT_REDIS_MAX_SENTINELS, err, sizeof(err));
		if (r->n_sentinels < 0) { /* the configuration check refuses it first */
			gw_log(GW_LOG_ERROR, "redis %s: sentinels: %s", name, err);
			free(r);
			return NULL;
		}
		snprintf(r->master_name, sizeof(r->master_name), "%s",
		         conf->master_name ? conf->master_name : "");
	}
	r->on_state = on_state;
	r->arg = arg;
	r->backoff_ms = BACKOFF_MIN_MS;
	r->retry = evtimer_new(base, on_retry, r);
	r->timeout_ms = RT_REDIS_DEFAULT_TIMEOUT_MS;
	r->watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, r);
	struct timeval tick = {0, RT_REDIS_WATCH_MS * 1000};
	event_add(r->watchdog, &tick);
	connect_now(r);
	return r;
}

void rt_redis_free(struct rt_redis *r)
{
	if (!r)
		return;
	r->on_state = NULL;
	event_free(r->retry);
	r->retry = NULL;
	event_free(r->watchdog);
	/* Their callbacks see they are no longer r's and return. */
	redisAsyncContext *ask = r->ask, *watch = r->watch;
	r->ask = r->watch = NULL;
	if (ask)
		redisAsyncFree(ask);
	if (watch)
		redisAsyncFree(watch);
	if (r->ac) {
		redisAsyncContext *ac = r->ac;
		r->ac = NULL;
		ac->data = r;
		/* Pending callbacks run with NULL replies now; the disconnect
		 * callback must not run (it would log a lost connection at every
		 * clean stop: issue 19). redisAsyncSetDisconnectCallback sets only an
		 * unset callback, hence the field. */
		ac->onDisconnect = NULL;
		redisAsyncFree(ac);
	}
	free(r);
}

int rt_redis_is_up(const struct rt_redis *r)
{
	return r && r->up && r->ac;
}

/* Replies go to the caller's function; the trampoline carries it. */
struct pending {
	rt_reply_fn fn;
	void *arg;
	struct rt_redis *r; /* valid while hiredis may call back (rt_redis_free runs them first) */
};

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct pending *p = privdata;
	if (p->r->n_pending > 0)
		p->r->n_pending--;
	p->r->pending_since_ms = gw_mono_ms();
	if (reply)
		p->r->last_reply_ms = p->r->pending_since_ms;
	if (p->fn)
		p->fn(p->arg, reply);
	/* A master demoted under us (Sentinel) refuses writes: find the new one. */
	redisReply *rep = reply;
	struct rt_redis *r = p->r;
	free(p);
	if (rep && rep->type == REDIS_REPLY_ERROR && rep->str &&
	    strncmp(rep->str, "READONLY", 8) == 0 && r->ac == ac) {
		gw_log(GW_LOG_WARN, "redis %s: %s:%d is read-only (a replica now): reconnecting",
		       r->name, r->host, r->port);
		rt_redis_reset(r);
	}
}

static struct pending *pending_new(struct rt_redis *r, rt_reply_fn fn, void *arg)
{
	struct pending *p = malloc(sizeof(*p));
	if (p) {
		p->fn = fn;
		p->arg = arg;
		p->r = r;
	}
	return p;
}

static void sent(struct rt_redis *r)
{
	if (r->n_pending++ == 0)
		r->pending_since_ms = gw_mono_ms();
}

int rt_redis_command(struct rt_redis *r, rt_reply_fn fn, void *arg, const char *fmt, ...)
{
	if (!rt_redis_is_up(r))
		return -1;
	struct pending *p = pending_new(r, fn, arg);
	if (!p)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	int rc = redisvAsyncCommand(r->ac, on_reply, p, fmt, ap);
	va_end(ap);
	if (rc != REDIS_OK) {
		free(p);
		return -1;
	}
	sent(r);
	return 0;
}

static int send_argv(struct rt_redis *r, rt_reply_fn fn, void *arg, int argc, const char **argv,
                     const size_t *argvlen)
{
	if (!rt_redis_is_up(r))
		return -1;
	struct pending *p = pending_new(r, fn, arg);
	if (!p)
		return -1;
	if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
		free(p);
		return -1;
	}
	sent(r);
	return 0;
}

/* The hex SHA-1 of script src, as Redis names it (NULL: cannot compute). */
static const char *sha_of(struct rt_redis *r, const char *src)
{
	for (int i = 0; i < r->n_shas; i++)
		if (r->shas[i].src == src)
			return r->shas[i].sha;
	unsigned char md[20];
	unsigned int len = 0;
	if (EVP_Digest(src, strlen(src), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
		return NULL;
	int at = r->n_shas < 16 ? r->n_shas++ : 0;
	r->shas[at].src = src;
	for (int i = 0; i < 20; i++)
		snprintf(r->shas[at].sha + 2 * i, 3, "%02x", md[i]);
	return r->shas[at].sha;
}

/* An EVALSHA in flight: its arguments, to send as EVAL if Redis answers
 * NOSCRIPT (a restarted or emptied Redis has no scripts cached). */
struct evalsha {
	struct rt_redis *r;
	rt_reply_fn fn;
	void *arg;
	int argc;
	const char **argv; /* argv[0] "EVAL", argv[1] the script, then copies */
};

static void on_evalsha(void *arg, redisReply *reply)
{
	struct evalsha *e = arg;
	if (reply && reply->type == REDIS_REPLY_ERROR && reply->str &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0) {
		if (send_argv(e->r, e->fn, e->arg, e->argc, e->argv, NULL) != 0 && e->fn)
			e->fn(e->arg, NULL);
	} else if (e->fn) {
		e->fn(e->arg, reply);
	}
	free(e);
}

static int send_evalsha(struct rt_redis *r, rt_reply_fn fn, void *arg, int argc, const char **argv)
{
	const char *sha = sha_of(r, argv[1]);
	size_t bytes = 0;
	for (int i = 2; i < argc; i++)
		bytes += strlen(argv[i]) + 1;
	struct evalsha *e = sha ? malloc(sizeof(*e) + (size_t)argc * sizeof(char *) + bytes) : NULL;
	if (!e)
		return send_argv(r, fn, arg, argc, argv, NULL);
	e->r = r;
	e->fn = fn;
	e->arg = arg;
	e->argc = argc;
	e->argv = (const char **)(e + 1);
	char *at = (char *)(e->argv + argc);
	e->argv[0] = "EVAL";
	e->argv[1] = argv[1];
	for (int i = 2; i < argc; i++) {
		size_t n = strlen(argv[i]) + 1;
		memcpy(at, argv[i], n);
		e->argv[i] = at;
		at += n;
	}
	const char *first = e->argv[0];
	e->argv[0] = "EVALSHA";
	e->argv[1] = sha;
	int rc = send_argv(r, on_evalsha, e, argc, e->argv, NULL);
	e->argv[0] = first;
	e->argv[1] = argv[1];
	if (rc != 0)
		free(e);
	return rc;
}

int rt_redis_commandv(struct rt_redis *r, rt_reply_fn fn, void *arg, int argc, const char **argv,
                      const size_t *argvlen)
{
	if (argc >= 3 && !argvlen && strcmp(argv[0], "EVAL") == 0)
		return send_evalsha(r, fn, arg, argc, argv);
	return send_argv(r, fn, arg, argc, argv, argvlen);
}

/* The subscription callback is registered once per channel by hiredis and
 * called with NULL for each when the connection goes: privdata is the
 * connection itself, which outlives it. */
static void on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rt_redis *r = privdata;
	redisReply *rep = reply;
	if (!rep || !r->sub_fn)
		return;
	if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
	    rep->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(rep->element[0]->str, "message") == 0 &&
	    rep->element[2]->type == REDIS_REPLY_STRING)
		r->sub_fn(r->sub_arg, rep->element[1]->str, rep->element[2]->str,
		          rep->element[2]->len);
}

int rt_redis_subscribe(struct rt_redis *r, const char *const *channels, int n, rt_message_fn fn,
                       void *arg)
{
	if (!rt_redis_is_up(r) || n < 1 || n > 15)
		return -1;
	const char *argv[16];
	size_t lens[16];
	argv[0] = "SUBSCRIBE";
	lens[0] = 9;
	for (int i = 0; i < n; i++) {
		argv[i + 1] = channels[i];
		lens[i + 1] = strlen(channels[i]);
	}
	r->sub_fn = fn;
	r->sub_arg = arg;
	return redisAsyncCommandArgv(r->ac, on_message, r, n + 1, argv, lens) == REDIS_OK ? 0 : -1;
}
