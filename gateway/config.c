/* The configuration table and its INI loader (inih); see config.h. */
#include "gateway/config.h"

#include "common/log.h"
#include "proto/qs_codec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum key_type {
	K_STR,      /* copied into a char array of .size bytes */
	K_INT,      /* int within [min, max] */
	K_U32,      /* uint32_t within [min, max] */
	K_DOUBLE,   /* double within [min, max] (as given) */
	K_CHOICE,   /* int: index of the value in .choices ("a|b") */
	K_DURATION, /* int64_t milliseconds: N with a unit s|m|h|d; a bare N is in the unit
	             * .choices names; [min, max] in seconds */
};

/* One configuration key. Worker keys (section "worker") land in
 * struct gw_worker_conf, every other key in struct gw_config. */
struct key_def {
	const char *section;
	const char *key;
	enum key_type type;
	size_t off;
	size_t size;
	const char *def;
	int reloadable; /* applied by SIGHUP without a restart */
	double min, max;
	const char *choices;
};

#define C(f) offsetof(struct gw_config, f), sizeof(((struct gw_config *)0)->f)
#define W(f) offsetof(struct gw_worker_conf, f), sizeof(((struct gw_worker_conf *)0)->f)

static const struct key_def keys[] = {
    {"node", "name", K_STR, C(node_name), "n1", 0, 0, 0, NULL},
    {"node", "auth", K_CHOICE, C(auth_off), "token", 0, 0, 0, "token|off"},
    {"node", "drain_timeout", K_INT, C(drain_timeout), "10", 0, 0, 3600, NULL},
    {"node", "allow_plaintext_tokens", K_CHOICE, C(allow_plaintext_tokens), "off", 0, 0, 0,
     "off|on"},
    {"node", "log_level", K_CHOICE, C(log_level), "info", 1, 0, 0, NULL},
    {"node", "log_file", K_STR, C(log_file), "", 1, 0, 0, NULL},
    {"worker", "listen", K_STR, W(listen), "", 0, 0, 0, NULL},
    {"worker", "advertise", K_STR, W(advertise), "", 0, 0, 0, NULL},
    {"worker", "tls", K_CHOICE, W(tls), "off", 0, 0, 0, "off|on"},
    {"worker", "capacity", K_INT, W(capacity), "1", 0, 1, 1000000, NULL},
    {"store", "conninfo", K_STR, C(conninfo), "host=127.0.0.1 port=5432 dbname=qagw user=qagw", 0,
     0, 0, NULL},
    {"store", "max_pending", K_INT, C(max_pending), "100000", 0, 1, 2000000000, NULL},
    {"store", "max_pending_per_sender", K_INT, C(max_pending_per_sender), "100000", 0, 1,
     2000000000, NULL},
    {"store", "keep_days", K_DURATION, C(keep_ms), "7", 0, 0, 36500.0 * 86400, "d"},
    {"store", "connections", K_INT, C(store_connections), "4", 0, 1, GW_MAX_STORE_CONNS, NULL},
    {"store", "timeout", K_INT, C(store_timeout), "15", 0, 0, 3600, NULL},
    {"redis", "host", K_STR, C(redis_host), "127.0.0.1", 0, 0, 0, NULL},
    {"redis", "port", K_INT, C(redis_port), "6379", 0, 1, 65535, NULL},
    {"redis", "prefix", K_STR, C(redis_prefix), "qagw:", 0, 0, 0, NULL},
    {"redis", "password", K_STR, C(redis_password), "", 0, 0, 0, NULL},
    {"redis", "sentinels", K_STR, C(redis_sentinels), "", 0, 0, 0, NULL},
    {"redis", "master_name", K_STR, C(redis_master_name), "mymaster", 0, 0, 0, NULL},
    {"admin", "listen", K_STR, C(admin_listen), "127.0.0.1:8439", 0, 0, 0, NULL},
    {"admin", "token", K_STR, C(admin_token), "", 0, 0, 0, NULL},
    {"admin", "allowed_hosts", K_STR, C(admin_allowed_hosts), "", 0, 0, 0, NULL},
    {"router", "epsilon", K_DOUBLE, C(epsilon), "0.25", 0, 0.01, 10, NULL},
    {"router", "reassign_after", K_INT, C(reassign_after), "30", 0, 1, 86400, NULL},
    {"push", "policy", K_CHOICE, C(push_any), "primary", 0, 0, 0, "primary|any"},
    {"tls", "cert", K_STR, C(tls_cert), "conf/dev/server.crt", 0, 0, 0, NULL},
    {"tls", "key", K_STR, C(tls_key), "conf/dev/server.key", 0, 0, 0, NULL},
    {"limits", "max_frame", K_U32, C(max_frame), "1048576", 0, 4096, 256.0 * 1024 * 1024, NULL},
    {"limits", "max_batch", K_INT, C(max_batch), "256", 0, 1, 65535, NULL},
    {"limits", "hello_timeout", K_INT, C(hello_timeout), "10", 0, 1, 3600, NULL},
    {"limits", "heartbeat", K_INT, C(heartbeat), "30", 0, 1, 3600, NULL},
    {"limits", "max_sessions", K_INT, C(max_sessions), "100000", 0, 1, 10000000, NULL},
    {"limits", "max_pending_hello", K_INT, C(max_pending_hello), "1000", 0, 1, 10000000, NULL},
    {"limits", "max_pending_hello_per_ip", K_INT, C(max_pending_hello_per_ip), "64", 0, 1, 10000000,
     NULL},
    {"limits", "tls_handshake_timeout", K_INT, C(tls_handshake_timeout), "10", 0, 1, 3600, NULL},
    {"limits", "max_output", K_INT, C(max_output), "4194304", 0, 65536, 1024.0 * 1024 * 1024, NULL},
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const known_sections[] = {"node",   "store", "redis", "admin",
                                             "router", "push",  "tls",   "limits"};

struct load_state {
	struct gw_config *c;
	const char *path;
	FILE *f;
	int line;
	int section_line; /* line of the current section header */
	char *err;
	size_t errlen;
	int failed;
	struct gw_worker_conf *worker; /* current [worker NAME] section, or NULL */
};

__attribute__((format(printf, 2, 3))) static int fail(struct load_state *st, const char *fmt, ...)
{
	if (!st->failed) {
		char what[512];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(what, sizeof(what), fmt, ap);
		va_end(ap);
		snprintf(st->err, st->errlen, "%s:%d: %s", st->path, st->line, what);
		st->failed = 1;
	}
	return 0;
}

/* Sets one key from its text; returns NULL or a reason. */
static const char *set_value(const struct key_def *k, void *base, const char *value)
{
	char *dst = (char *)base + k->off;
	char *end;
	switch (k->type) {
	case K_STR:
		if (strlen(value) >= k->size)
			return "value too long";
		strcpy(dst, value);
		return NULL;
	case K_INT:
	case K_U32: {
		errno = 0;
		long long v = strtoll(value, &end, 10);
		if (errno || end == value || *end || v < k->min || v > k->max)
			return "not an integer in range";
		if (k->type == K_INT)
			*(int *)dst = (int)v;
		else
			*(uint32_t *)dst = (uint32_t)v;
		return NULL;
	}
	case K_DOUBLE: {
		errno = 0;
		double v = strtod(value, &end);
		if (errno || end == value || *end || v < k->min || v > k->max)
			return "not a number in range";
		*(double *)dst = v;
		return NULL;
	}
	case K_DURATION: {
		errno = 0;
		long long v = strtoll(value, &end, 10);
		const char *unit = *end ? end : k->choices;
		static const struct {
			char unit;
			long long seconds;
		} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
		long long mul = 0;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (unit[0] == units[i].unit && unit[1] == '\0')
				mul = units[i].seconds;
		if (errno || end == value || mul == 0 || v < 0 || v > k->max / (double)mul ||
		    v * mul < k->min)
			return "not a duration in range (N with a unit s, m, h or d)";
		*(int64_t *)dst = v * mul * 1000;
		return NULL;
	}
	case K_CHOICE:
		if (!k->choices) { /* log level: kept as text, checked here */
			static const char *const levels[] = {"error", "warn", "info", "debug"};
			for (int i = 0; i < 4; i++)
				if (strcasecmp(value, levels[i]) == 0) {
					snprintf(dst, k->size, "%s", levels[i]);
					return NULL;
				}
			return "must be one of error|warn|info|debug";
		}
		int idx = 0;
		for (const char *p = k->choices; *p; idx++) {
			const char *bar = strchr(p, '|');
			size_t n = bar ? (size_t)(bar - p) : strlen(p);
			if (strlen(value) == n && strncasecmp(value, p, n) == 0) {
				*(int *)dst = idx;
				return NULL;
			}
			p += n + (bar ? 1 : 0);
		}
		return "not one of the allowed values";
	}
	return "bad type";
}

static void apply_defaults(const char *section, void *base)
{
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0) {
			const char *why = set_value(&keys[i], base, keys[i].def);
			(void)why; /* defaults are valid by construction (unit-tested) */
		}
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
	struct load_state *st = user;
	struct gw_config *c = st->c;
	char sect[128];
	snprintf(sect, sizeof(sect), "%s", section);

	if (strncmp(sect, "worker ", 7) == 0 || strcmp(sect, "worker") == 0) {
		const char *wname = sect[6] ? sect + 7 : "";
		while (*wname == ' ')
			wname++;
		if (!st->worker || st->worker->line != st->section_line) { /* a new section */
			if (!qs_valid_worker_name(wname, strlen(wname)))
				return st->line = st->section_line,
				       fail(st,
				            "[worker %s]: bad worker name (1..64 of [a-z0-9._-])",
				            wname);
			for (int i = 0; i < c->n_workers; i++)
				if (strcmp(c->workers[i].name, wname) == 0)
					return fail(st, "[worker %s]: worker defined twice", wname);
			if (c->n_workers == GW_MAX_WORKERS)
				return fail(st, "[worker %s]: too many workers in one node", wname);
			st->worker = &c->workers[c->n_workers++];
			memset(st->worker, 0, sizeof(*st->worker));
			apply_defaults("worker", st->worker);
			memcpy(st->worker->name, wname, strlen(wname) + 1); /* valid: <= 64 bytes */
			st->worker->line = st->section_line;
		}
		if (!name) /* section header only (inih INI_CALL_HANDLER_ON_NEW_SECTION) */
			return 1;
		for (size_t i = 0; i < N_KEYS; i++)
			if (strcmp(keys[i].section, "worker") == 0 &&
			    strcasecmp(keys[i].key, name) == 0) {
				const char *why = set_value(&keys[i], st->worker, value);
				return why ? fail(st, "key \"%s\": %s", name, why) : 1;
			}
		return fail(st, "unknown key \"%s\" in [%s]", name, sect);
	}

	int known = 0;
	for (size_t i = 0; i < sizeof(known_sections) / sizeof(known_sections[0]); i++)
		known |= strcmp(sect, known_sections[i]) == 0;
	if (!known) {
		st->line = st->section_line;
		return fail(st, "unknown section [%s]%s", sect, "");
	}
	st->worker = NULL;
	if (!name)
		return 1;
	for (size_t i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, sect) == 0 && strcasecmp(keys[i].key, name) == 0) {
			const char *why = set_value(&keys[i], c, value);
			return why ? fail(st, "key \"%s\": %s", name, why) : 1;
		}
	return fail(st, "unknown key \"%s\" in [%s]", name, sect);
}

/* inih's reader: one line per call, so st->line is the line being parsed. */
static char *read_line(char *str, int num, void *stream)
{
	struct load_state *st = stream;
	char *r = fgets(str, num, st->f);
	if (r) {
		st->line++;
		const char *p = r + strspn(r, " \t");
		if (*p == '[')
			st->section_line = st->line;
	}
	return r;
}

int gw_addr_parse(const char *s, struct gw_addr *a)
{
	const char *colon;
	size_t hlen;
	const char *host = s;
	while (*host == ' ')
		host++;
	if (*host == '[') {
		const char *close = strchr(host, ']');
		if (!close || close[1] != ':')
			return -1;
		hlen = (size_t)(close - host - 1);
		host++;
		colon = close + 1;
	} else {
		colon = strrchr(host, ':');
		if (!colon)
			return -1;
		hlen = (size_t)(colon - host);
		if (memchr(host, ':', hlen)) /* bare IPv6 needs brackets */
			return -1;
	}
	if (hlen == 0 || hlen >= sizeof(a->host))
		return -1;
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	while (*end == ' ')
		end++;
	if (errno || end == colon + 1 || *end || port < 1 || port > 65535)
		return -1;
	memcpy(a->host, host, hlen);
	a->host[hlen] = 0;
	a->port = (uint16_t)port;
	return 0;
}

static int resolve(const struct gw_addr *a, struct sockaddr_storage *sa, socklen_t *len)
{
	struct addrinfo hints = {0}, *res = NULL;
	char port[8];
	hints.ai_socktype = SOCK_STREAM;
	/* Listen addresses are numeric (never a DNS query at start); "localhost"
	 * is taken as 127.0.0.1. */
	hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", a->port);
	const char *host = strcasecmp(a->host, "localhost") == 0 ? "127.0.0.1" : a->host;
	if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
		return -1;
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int gw_sockaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return 0;
}

static int check_worker(struct load_state *st, struct gw_worker_conf *w)
{
	char *err = st->err;
	size_t n = st->errlen;
	if (!w->listen[0]) {
		snprintf(err, n, "%s:%d: [worker %s]: key \"listen\" is required", st->path,
		         w->line, w->name);
		return -1;
	}
	if (gw_addr_parse(w->listen, &w->listen_addr) != 0 ||
	    resolve(&w->listen_addr, &w->sa, &w->sa_len) != 0) {
		snprintf(err, n,
		         "%s:%d: [worker %s]: key \"listen\": bad address \"%s\" (IP:PORT or "
		         "[IPv6]:PORT)",
		         st->path, w->line, w->name, w->listen);
		return -1;
	}
	if (!w->advertise[0])
		memcpy(w->advertise, w->listen, strlen(w->listen) + 1); /* 300 < 1024 */
	char copy[sizeof(w->advertise)];
	snprintf(copy, sizeof(copy), "%s", w->advertise);
	w->n_adv = 0;
	for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (w->n_adv == GW_MAX_ADVERTISE || gw_addr_parse(tok, &w->adv[w->n_adv]) != 0) {
			snprintf(err, n,
			         "%s:%d: [worker %s]: key \"advertise\": bad address \"%s\"",
			         st->path, w->line, w->name, tok);
			return -1;
		}
		w->n_adv++;
	}
	if (w->n_adv == 0) {
		snprintf(err, n, "%s:%d: [worker %s]: key \"advertise\": no address", st->path,
		         w->line, w->name);
		return -1;
	}
	return 0;
}

int gw_config_load(const char *path, struct gw_config *c, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->path, sizeof(c->path), "%s", path);
	for (size_t i = 0; i < sizeof(known_sections) / sizeof(known_sections[0]); i++)
		apply_defaults(known_sections[i], c);

	struct load_state st = {.c = c, .path = path, .err = err, .errlen = errlen};
	st.f = fopen(path, "r");
	if (!st.f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	int rc = ini_parse_stream(read_line, &st, on_entry, &st);
	fclose(st.f);
	if (st.failed)
		return -1;
	if (rc != 0) {
		snprintf(err, errlen, "%s:%d: syntax error", path, rc);
		return -1;
	}
	if (!qs_valid_worker_name(c->node_name, strlen(c->node_name))) {
		snprintf(err, errlen, "%s: [node] key \"name\": bad node name \"%s\"", path,
		         c->node_name);
		return -1;
	}
	if (c->n_workers == 0) {
		snprintf(err, errlen,
		         "%s: no [worker NAME] section: a node needs at least one worker", path);
		return -1;
	}
	for (int i = 0; i < c->n_workers; i++)
		if (check_worker(&st, &c->workers[i]) != 0)
			return -1;
	if (c->redis_sentinels[0]) {
		struct rt_addr s[RT_REDIS_MAX_SENTINELS];
		char why[160];
		if (rt_redis_parse_sentinels(c->redis_sentinels, s, RT_REDIS_MAX_SENTINELS, why,
		                             sizeof(why)) < 0) {
			snprintf(err, errlen, "%s: [redis] key \"sentinels\": %s", path, why);
			return -1;
		}
		if (!c->redis_master_name[0]) {
			snprintf(err, errlen,
			         "%s: [redis] key \"master_name\": empty, and sentinels are set",
			         path);
			return -1;
		}
	}
	struct gw_addr admin;
	if (gw_addr_parse(c->admin_listen, &admin) != 0 ||
	    resolve(&admin, &c->admin_sa, &c->admin_sa_len) != 0) {
		snprintf(err, errlen, "%s: [admin] key \"listen\": bad address \"%s\"", path,
		         c->admin_listen);
		return -1;
	}
	/* auth = off lets anyone who can connect act as any agent: loopback only. */
	for (int i = 0; c->auth_off && i < c->n_workers; i++)
		if (!gw_sockaddr_is_loopback((struct sockaddr *)&c->workers[i].sa)) {
			snprintf(err, errlen,
			         "%s: [node] key \"auth\": auth = off is allowed only when every "
			         "listener is on loopback, and [worker %s] (line %d) listens on %s "
			         "(not loopback)",
			         path, c->workers[i].name, c->workers[i].line,
			         c->workers[i].listen);
			return -1;
		}
	/* auth = token over cleartext off loopback hands every token to whoever
	 * watches the network: only when the operator says so. */
	for (int i = 0; !c->auth_off && !c->allow_plaintext_tokens && i < c->n_workers; i++)
		if (!c->workers[i].tls &&
		    !gw_sockaddr_is_loopback((struct sockaddr *)&c->workers[i].sa)) {
			snprintf(
			    err, errlen,
			    "%s: [worker %s] (line %d) listens on %s (not loopback) with tls = off "
			    "and [node] auth = token: agents' tokens would cross the network in "
			    "clear; set tls = on in [worker %s], or [node] allow_plaintext_tokens "
			    "= on to accept that",
			    path, c->workers[i].name, c->workers[i].line, c->workers[i].listen,
			    c->workers[i].name);
			return -1;
		}
	if (!c->admin_token[0] && !gw_sockaddr_is_loopback((struct sockaddr *)&c->admin_sa)) {
		snprintf(
		    err, errlen,
		    "%s: [admin] key \"listen\": %s is not loopback and [admin] token is empty",
		    path, c->admin_listen);
		return -1;
	}
	if ((int)(c->max_frame / 2) < 1024 + 64) {
		snprintf(err, errlen, "%s: [limits] key \"max_frame\": too small", path);
		return -1;
	}
	return 0;
}

/* 1 when host (as conninfo or [redis] host write it) is on this machine: a
 * Unix socket directory (or abstract socket), "localhost", 127.0.0.0/8, ::1,
 * or "" (libpq's default, the Unix socket). Any other name counts as off
 * loopback: it is not resolved here (no DNS query at start). */
static int host_is_local(const char *host, size_t n)
{
	char buf[256];
	if (n == 0 || host[0] == '/' || host[0] == '@')
		return 1;
	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, host, n);
	buf[n] = 0;
	if (strcasecmp(buf, "localhost") == 0)
		return 1;
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, buf, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, buf, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The first host of a comma-separated list (libpq's multi-host form) that
 * is not local, as a pointer and length into list; NULL when all are. */
static const char *first_remote(const char *list, size_t *len)
{
	for (const char *p = list;; p++) {
		size_t n = strcspn(p, ",");
		if (!host_is_local(p, n)) {
			*len = n;
			return p;
		}
		p += n;
		if (*p == 0)
			return NULL;
	}
}

/* A conninfo keyword's value, else the environment variable libpq reads for
 * it, else NULL. */
static const char *pq_option(const PQconninfoOption *opts, const char *key, const char *env)
{
	for (const PQconninfoOption *o = opts; o->keyword; o++)
		if (strcmp(o->keyword, key) == 0 && o->val && o->val[0])
			return o->val;
	const char *v = env ? getenv(env) : NULL;
	return v && v[0] ? v : NULL;
}

static void warn(FILE *out, int *count, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void warn(FILE *out, int *count, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (out)
		fprintf(out, "qagw: warning: %s\n", line);
	else
		gw_log(GW_LOG_WARN, "%s", line);
	(*count)++;
}

struct rt_redis_conf gw_config_redis(const struct gw_config *c)
{
	struct rt_redis_conf rc = {c->redis_host, c->redis_port, c->redis_password,
	                           c->redis_sentinels, c->redis_master_name};
	return rc;
}

int gw_config_warnings(const struct gw_config *c, FILE *out)
{
	int count = 0;
	size_t n;
	const char *remote;
	struct rt_addr s[RT_REDIS_MAX_SENTINELS];
	char why_s[160];
	int n_s = c->redis_sentinels[0]
	              ? rt_redis_parse_sentinels(c->redis_sentinels, s, RT_REDIS_MAX_SENTINELS,
	                                         why_s, sizeof(why_s))
	              : 0;
	for (int i = 0; !c->redis_password[0] && i < n_s; i++)
		if (!host_is_local(s[i].host, strlen(s[i].host))) {
			warn(out, &count,
			     "%s: [redis] key \"sentinels\": %s is not loopback and [redis] "
			     "password "
			     "is empty: whoever reaches the master it names can rewrite the pool's "
			     "routing; set a password (requirepass) on the master and replicas",
			     c->path, s[i].host);
			break;
		}
	if (!c->redis_sentinels[0] && !c->redis_password[0] &&
	    (remote = first_remote(c->redis_host, &n)) != NULL)
		warn(out, &count,
		     "%s: [redis] key \"host\": %.*s is not loopback and [redis] password is "
		     "empty: whoever reaches it can rewrite the pool's routing (the worker lists "
		     "agents follow); set a password (requirepass) or keep Redis on loopback",
		     c->path, (int)n, remote);

	char *why = NULL;
	PQconninfoOption *opts = PQconninfoParse(c->conninfo, &why);
	if (!opts) {
		/* libpq says what is wrong when the store is first reached. */
		PQfreemem(why);
		return count;
	}
	/* hostaddr, when given, is what libpq connects to. */
	const char *hosts = pq_option(opts, "hostaddr", "PGHOSTADDR");
	if (!hosts)
		hosts = pq_option(opts, "host", "PGHOST");
	const char *sslmode = pq_option(opts, "sslmode", "PGSSLMODE");
	const int encrypted =
	    sslmode && (strcmp(sslmode, "require") == 0 || strcmp(sslmode, "verify-ca") == 0 ||
	                strcmp(sslmode, "verify-full") == 0);
	const int password =
	    pq_option(opts, "password", "PGPASSWORD") || pq_option(opts, "passfile", "PGPASSFILE");
	if (hosts && !encrypted && !password && (remote = first_remote(hosts, &n)) != NULL)
		warn(out, &count,
		     "%s: [store] key \"conninfo\": reaches %.*s (not loopback) without a "
		     "password (unless a password file provides one) and without sslmode=require "
		     "or verify-ca/verify-full: messages and agents' token hashes cross the "
		     "network in clear",
		     c->path, (int)n, remote);
	PQconninfoFree(opts);
	return count;
}

static int check_log_file(const struct gw_config *c, char *err, size_t errlen)
{
	const char *f = c->log_file;
	if (!f[0] || access(f, W_OK) == 0)
		return 0;
	if (errno != ENOENT) {
		snprintf(err, errlen, "%s: [node] key \"log_file\": %s cannot be written: %s",
		         c->path, f, strerror(errno));
		return -1;
	}
	char dir[sizeof(c->log_file)];
	snprintf(dir, sizeof(dir), "%s", f);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	if (access(dir, W_OK | X_OK) != 0) {
		snprintf(err, errlen,
		         "%s: [node] key \"log_file\": %s cannot be created: directory %s: %s",
		         c->path, f, dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* Each host of a comma-separated libpq host list that is a name (not an
 * address, not a socket directory) must resolve. */
/* A host name that key (e.g. "[store] key \"conninfo\"") gives: an address or
 * localhost passes; a name must resolve (else -1 with err), and gets a warning:
 * libpq and hiredis resolve it with a blocking call on a worker's loop at every
 * connect. */
static int check_host(const struct gw_config *c, const char *key, const char *h, FILE *out,
                      int *count, char *err, size_t errlen)
{
	if (!h[0] || h[0] == '/' || h[0] == '@' || strcmp(h, "localhost") == 0)
		return 0; /* a socket directory, or the name of loopback */
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	if (getaddrinfo(h, NULL, &hints, &ai) == 0) {
		freeaddrinfo(ai);
		return 0; /* an address */
	}
	hints.ai_flags = 0;
	int rc = getaddrinfo(h, NULL, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s: host %s does not resolve: %s", c->path, key, h,
		         gai_strerror(rc));
		return -1;
	}
	freeaddrinfo(ai);
	warn(out, count,
	     "%s: %s: host %s is a name: it is resolved with a blocking call on a worker's loop "
	     "at every connect; give its address (docs/operations.md)",
	     c->path, key, h);
	return 0;
}

static int check_store_hosts(const struct gw_config *c, const char *hosts, FILE *out, char *err,
                             size_t errlen)
{
	int count = 0;
	const char *p = hosts;
	while (*p) {
		size_t n = strcspn(p, ",");
		char h[256];
		snprintf(h, sizeof(h), "%.*s", (int)(n < sizeof(h) - 1 ? n : sizeof(h) - 1), p);
		p += n + (p[n] == ',');
		if (check_host(c, "[store] key \"conninfo\"", h, out, &count, err, errlen) != 0)
			return -1;
	}
	return 0;
}

/* [redis] host, or each sentinel's. */
static int check_redis_hosts(const struct gw_config *c, FILE *out, char *err, size_t errlen)
{
	int count = 0;
	if (!c->redis_sentinels[0])
		return check_host(c, "[redis] key \"host\"", c->redis_host, out, &count, err,
		                  errlen);
	struct rt_addr s[RT_REDIS_MAX_SENTINELS];
	char why[160];
	int n = rt_redis_parse_sentinels(c->redis_sentinels, s, RT_REDIS_MAX_SENTINELS, why,
	                                 sizeof(why));
	for (int i = 0; i < n; i++)
		if (check_host(c, "[redis] key \"sentinels\"", s[i].host, out, &count, err,
		               errlen) != 0)
			return -1;
	return 0;
}

int gw_config_check_opens(const struct gw_config *c, FILE *out, char *err, size_t errlen)
{
	if (check_log_file(c, err, errlen) != 0)
		return -1;
	char *why = NULL;
	PQconninfoOption *opts = PQconninfoParse(c->conninfo, &why);
	if (!opts) {
		snprintf(err, errlen, "%s: [store] key \"conninfo\": %s", c->path,
		         why ? why : "cannot be parsed");
		PQfreemem(why);
		return -1;
	}
	int rc = 0;
	const char *hosts = pq_option(opts, "host", "PGHOST");
	if (hosts && !pq_option(opts, "hostaddr", "PGHOSTADDR"))
		rc = check_store_hosts(c, hosts, out, err, errlen);
	PQconninfoFree(opts);
	return rc != 0 ? rc : check_redis_hosts(c, out, err, errlen);
}

/* The table, read-only, for the test that holds conf/qagw.conf to it. */
size_t gw_config_key_count(void)
{
	return N_KEYS;
}

int gw_config_key_at(size_t i, const char **section, const char **key, const char **def)
{
	if (i >= N_KEYS)
		return -1;
	*section = keys[i].section;
	*key = keys[i].key;
	*def = keys[i].def;
	return 0;
}
