/* Admin-port subcommands of the qagw program; see cli.h. One blocking GET per
 * connection (Connection: close) through libcurl's easy API, bounded by a
 * connect and a total timeout; libcurl decodes chunked bodies. */
#include "gateway/cli.h"
#include "proto/qs_codec.h"
#include "router/rt_push.h"

#include "common/clock.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef QAGW_VERSION /* the Makefile defines it; builds that do not (fuzz) still link */
#define QAGW_VERSION "unknown"
#endif

#define CONNECT_TIMEOUT_MS 3000
#define REQUEST_TIMEOUT_MS 15000      /* the whole GET; the admin port answers within 10 s */
#define MAX_RESPONSE       (16 << 20) /* body bytes */

struct http_reply {
	int status;
	char *body; /* owned, NUL-terminated, never NULL after http_get */
	size_t body_len;
	size_t cap;    /* bytes allocated for body, its NUL included */
	int too_large; /* the body passed MAX_RESPONSE: the transfer was cut */
	int no_memory;
};

/* libcurl's write callback: appends to reply->body. A short count ends the
 * transfer with CURLE_WRITE_ERROR; the flags say why. */
static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct http_reply *reply = arg;
	size_t len = size * n;
	if (len > MAX_RESPONSE - reply->body_len) {
		reply->too_large = 1;
		return 0;
	}
	if (reply->body_len + len + 1 > reply->cap) {
		size_t cap = reply->cap * 2;
		if (cap < reply->body_len + len + 1)
			cap = reply->body_len + len + 1;
		char *more = realloc(reply->body, cap);
		if (!more) {
			reply->no_memory = 1;
			return 0;
		}
		reply->body = more;
		reply->cap = cap;
	}
	memcpy(reply->body + reply->body_len, p, len);
	reply->body_len += len;
	reply->body[reply->body_len] = 0;
	return len;
}

/* The admin listen address as a client reaches it: a wildcard listen
 * (0.0.0.0, ::) is reached on loopback. */
static void admin_target(const struct gw_config *c, struct sockaddr_storage *sa, char *text,
                         size_t len)
{
	*sa = c->admin_sa;
	if (sa->ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)sa;
		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(text, len, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			in6->sin6_addr = in6addr_loopback;
		char ip[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(text, len, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
	}
}

/* Says why a transfer failed; returns the exit code: UNREACHABLE when there
 * was no connection or no (whole) answer, FAILURE otherwise. */
static int transfer_error(CURL *h, CURLcode rc, const struct gw_config *c, const char *addr,
                          const char *detail, const struct http_reply *reply, char *err,
                          size_t errlen)
{
	long os_errno = 0;
	curl_off_t connect_us = 0;
	curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
	curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
	if (!detail[0])
		detail = curl_easy_strerror(rc);
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
		if (rc == CURLE_COULDNT_CONNECT || connect_us == 0) {
			int e = rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT : ECONNREFUSED;
			if (os_errno)
				e = (int)os_errno;
			snprintf(err, errlen, "cannot reach the admin port %s (from %.200s): %s",
			         addr, c->path, strerror(e));
			return GW_EXIT_UNREACHABLE;
		}
		snprintf(err, errlen, "the admin port %s did not answer within %d s: %s",
		         c->admin_listen, REQUEST_TIMEOUT_MS / 1000, strerror(ETIMEDOUT));
		return GW_EXIT_UNREACHABLE;
	case CURLE_GOT_NOTHING:
		snprintf(err, errlen, "the admin port %s sent no HTTP response", c->admin_listen);
		return GW_EXIT_UNREACHABLE;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
		snprintf(err, errlen, "the admin port %s did not answer: %.150s", c->admin_listen,
		         os_errno ? strerror((int)os_errno) : detail);
		return GW_EXIT_UNREACHABLE;
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL: /* an HTTP/0.9 answer, i.e. not HTTP */
		snprintf(err, errlen, "the admin port %s sent no HTTP response", c->admin_listen);
		return GW_EXIT_FAILURE;
	case CURLE_WRITE_ERROR:
	case CURLE_OUT_OF_MEMORY:
		if (reply->too_large)
			snprintf(err, errlen, "response larger than %d bytes", MAX_RESPONSE);
		else
			snprintf(err, errlen, "out of memory");
		return GW_EXIT_FAILURE;
	default:
		snprintf(err, errlen, "the admin port %s: %.150s", c->admin_listen, detail);
		return GW_EXIT_FAILURE;
	}
}

/* The GET's options. No proxy whatever the environment says (http_proxy,
 * ...): the admin port is dialled directly, at its configured address. */
static int set_options(CURL *h, const char *url, struct curl_slist *headers,
                       struct http_reply *reply, char *detail)
{
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROXY, "") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERAGENT, "qagw/" QAGW_VERSION) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)REQUEST_TIMEOUT_MS) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, reply) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail) != CURLE_OK)
		return -1;
	return 0;
}

/* method (GET, or DELETE for workers remove) path. Returns GW_EXIT_OK with reply filled
 * (reply->body is the caller's to free, also on failure), GW_EXIT_UNREACHABLE (no connection or no
 * answer) or GW_EXIT_FAILURE (not HTTP), with err. */
static int http_request(const struct gw_config *c, const char *method, const char *path,
                        struct http_reply *reply, char *err, size_t errlen)
{
	memset(reply, 0, sizeof(*reply));
	reply->cap = 8192;
	reply->body = malloc(reply->cap);
	if (!reply->body) {
		snprintf(err, errlen, "out of memory");
		return GW_EXIT_FAILURE;
	}
	reply->body[0] = 0;
	/* Host names the address dialled (a wildcard listen is reached on
	 * loopback): the admin port accepts a loopback address or its own listen
	 * address (docs/admin.md), and refuses "0.0.0.0:8439". */
	struct sockaddr_storage sa;
	char host[80], url[2048], host_h[100], auth_h[sizeof(c->admin_token) + 32];
	admin_target(c, &sa, host, sizeof(host));
	int n = snprintf(url, sizeof(url), "http://%s%s", host, path);
	if (n < 0 || (size_t)n >= sizeof(url)) {
		snprintf(err, errlen, "request too long");
		return GW_EXIT_FAILURE;
	}
	snprintf(host_h, sizeof(host_h), "Host: %s", host);
	snprintf(auth_h, sizeof(auth_h), "Authorization: Bearer %s", c->admin_token);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "cannot initialise libcurl");
		return GW_EXIT_FAILURE;
	}
	CURL *h = curl_easy_init();
	struct curl_slist *headers = NULL, *more;
	int ok = h != NULL;
	const char *lines[] = {host_h, "Accept: application/json",
	                       c->admin_token[0] ? auth_h : NULL, "Connection: close"};
	for (size_t i = 0; ok && i < sizeof(lines) / sizeof(lines[0]); i++) {
		if (!lines[i])
			continue;
		more = curl_slist_append(headers, lines[i]);
		if (!more)
			ok = 0;
		else
			headers = more;
	}
	char detail[CURL_ERROR_SIZE] = "";
	if (ok && set_options(h, url, headers, reply, detail) != 0)
		ok = 0;
	if (ok && strcmp(method, "GET") != 0 &&
	    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK)
		ok = 0;
	int rc;
	if (!ok) {
		snprintf(err, errlen, "cannot set up the request (libcurl)");
		rc = GW_EXIT_FAILURE;
	} else {
		CURLcode cr = curl_easy_perform(h);
		long status = 0;
		if (cr == CURLE_OK) {
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
			reply->status = (int)status;
			rc = GW_EXIT_OK;
		} else {
			rc = transfer_error(h, cr, c, host, detail, reply, err, errlen);
		}
	}
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	curl_global_cleanup();
	return rc;
}

/* method path and parse the JSON. Returns GW_EXIT_OK with *out and the raw
 * body in *raw (caller frees), or the exit code, having said why. */
static int request_json(const struct gw_config *c, const char *what, const char *method,
                        const char *path, json_t **out, struct http_reply *reply)
{
	char err[512];
	int rc = http_request(c, method, path, reply, err, sizeof(err));
	if (rc != GW_EXIT_OK) {
		fprintf(stderr, "qagw: %s: %s\n", what, err);
		return rc;
	}
	json_error_t jerr;
	json_t *j = json_loadb(reply->body, reply->body_len, 0, &jerr);
	if (reply->status < 200 || reply->status > 299) {
		const char *code = json_string_value(json_object_get(j, "error"));
		const char *msg = json_string_value(json_object_get(j, "message"));
		fprintf(stderr, "qagw: %s: refused by the admin port %s: HTTP %d%s%s%s%s\n", what,
		        c->admin_listen, reply->status, code ? " " : "", code ? code : "",
		        msg ? ": " : "", msg ? msg : "");
		json_decref(j);
		return GW_EXIT_REFUSED;
	}
	if (!j) {
		fprintf(stderr, "qagw: %s: the admin port sent bad JSON: %s\n", what, jerr.text);
		return GW_EXIT_FAILURE;
	}
	*out = j;
	return GW_EXIT_OK;
}

/* A JSON scalar as table text: null "-", booleans yes/no. */
static void scalar(const json_t *v, char *out, size_t len)
{
	if (!v || json_is_null(v))
		snprintf(out, len, "-");
	else if (json_is_string(v))
		snprintf(out, len, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(out, len, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(out, len, "%.2f", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(out, len, "%s", json_is_true(v) ? "yes" : "no");
	else
		snprintf(out, len, "?");
}

/* UTC time of a wall-clock millisecond stamp, with its age. */
static void stamp(const json_t *v, char *out, size_t len)
{
	if (!json_is_integer(v)) {
		snprintf(out, len, "-");
		return;
	}
	long long ms = (long long)json_integer_value(v);
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	long long age = (long long)(gw_wall_ms() / 1000) - (long long)t;
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02dZ (%lld s ago)", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, age < 0 ? 0 : age);
}

static int get_json(const struct gw_config *c, const char *what, const char *path, json_t **out,
                    struct http_reply *reply)
{
	return request_json(c, what, "GET", path, out, reply);
}

static int print_raw(const struct http_reply *reply)
{
	fwrite(reply->body, 1, reply->body_len, stdout);
	if (reply->body_len == 0 || reply->body[reply->body_len - 1] != '\n')
		putchar('\n');
	return fflush(stdout) == 0 ? GW_EXIT_OK : GW_EXIT_FAILURE;
}

/* ---- workers ---- */

static const struct {
	const char *field, *title;
} worker_cols[] = {
    {"name", "NAME"},         {"node", "NODE"},           {"state", "STATE"},
    {"sessions", "SESSIONS"}, {"primaries", "PRIMARIES"}, {"assigned", "ASSIGNED"},
    {"load", "LOAD"},         {"capacity", "CAPACITY"},   {"address", "ADDRESS"},
};
#define N_WORKER_COLS (sizeof(worker_cols) / sizeof(worker_cols[0]))

int gw_cli_workers(const struct gw_config *c, int json)
{
	json_t *list = NULL;
	struct http_reply reply;
	int rc = get_json(c, "workers", "/api/workers", &list, &reply);
	if (rc != GW_EXIT_OK) {
		free(reply.body);
		return rc;
	}
	if (json) {
		rc = print_raw(&reply);
	} else if (!json_is_array(list)) {
		fprintf(stderr, "qagw: workers: the admin port did not answer a list\n");
		rc = GW_EXIT_FAILURE;
	} else {
		size_t width[N_WORKER_COLS];
		char cell[256];
		for (size_t k = 0; k < N_WORKER_COLS; k++)
			width[k] = strlen(worker_cols[k].title);
		size_t i;
		json_t *w;
		json_array_foreach(list, i, w) for (size_t k = 0; k < N_WORKER_COLS; k++)
		{
			scalar(json_object_get(w, worker_cols[k].field), cell, sizeof(cell));
			if (strlen(cell) > width[k])
				width[k] = strlen(cell);
		}
		for (size_t k = 0; k < N_WORKER_COLS; k++)
			printf("%-*s%s", k + 1 < N_WORKER_COLS ? (int)width[k] : 0,
			       worker_cols[k].title, k + 1 < N_WORKER_COLS ? "  " : "\n");
		json_array_foreach(list, i, w) for (size_t k = 0; k < N_WORKER_COLS; k++)
		{
			scalar(json_object_get(w, worker_cols[k].field), cell, sizeof(cell));
			printf("%-*s%s", k + 1 < N_WORKER_COLS ? (int)width[k] : 0, cell,
			       k + 1 < N_WORKER_COLS ? "  " : "\n");
		}
		rc = fflush(stdout) == 0 ? GW_EXIT_OK : GW_EXIT_FAILURE;
	}
	json_decref(list);
	free(reply.body);
	return rc;
}

/* ---- agents ID ---- */

/* Percent-encodes everything but RFC 3986 unreserved characters. */
static int encode_segment(const char *s, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t k = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		            (*p >= '0' && *p <= '9') || strchr("-._~", *p);
		if (k + (plain ? 1 : 3) >= len)
			return -1;
		if (plain) {
			out[k++] = (char)*p;
		} else {
			out[k++] = '%';
			out[k++] = hex[*p >> 4];
			out[k++] = hex[*p & 15];
		}
	}
	out[k] = 0;
	return 0;
}

static void line(const char *key, const char *value)
{
	printf("%-28s %s\n", key, value);
}

static void line_of(const char *key, const json_t *v)
{
	char cell[512];
	scalar(v, cell, sizeof(cell));
	line(key, cell);
}

int gw_cli_agent(const struct gw_config *c, const char *id, int json)
{
	char enc[1024], path[1100];
	if (!id[0] || encode_segment(id, enc, sizeof(enc)) != 0) {
		fprintf(stderr, "qagw: agents: bad agent id\n");
		return GW_EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/api/agents/%s", enc);
	json_t *a = NULL;
	struct http_reply reply;
	char what[300];
	snprintf(what, sizeof(what), "agents %.256s", id);
	int rc = get_json(c, what, path, &a, &reply);
	if (rc != GW_EXIT_OK) {
		free(reply.body);
		return rc;
	}
	if (json) {
		rc = print_raw(&reply);
		json_decref(a);
		free(reply.body);
		return rc;
	}
	char cell[512];
	line_of("agent:", json_object_get(a, "agent"));
	line_of("primary:", json_object_get(a, "primary"));
	line_of("pinned:", json_object_get(a, "pinned"));
	line_of("primary as sent:", json_object_get(a, "primary_as_sent"));
	const json_t *s = json_object_get(a, "session");
	if (json_is_object(s)) {
		line_of("session worker:", json_object_get(s, "worker"));
		line_of("session node:", json_object_get(s, "node"));
		line_of("session on primary:", json_object_get(s, "on_primary"));
		line_of("session persist:", json_object_get(s, "persist"));
		stamp(json_object_get(s, "since_ms"), cell, sizeof(cell));
		line("session since:", cell);
	} else { /* with Redis down the node cannot tell: "-" (docs/service.md) */
		const char *src = json_string_value(json_object_get(a, "source"));
		line("session:", src && strcmp(src, "redis") == 0 ? "none" : "-");
	}
	line_of("pending:", json_object_get(a, "pending"));
	stamp(json_object_get(a, "last_sync_ms"), cell, sizeof(cell));
	line("last sync:", cell);
	const json_t *p = json_object_get(a, "push");
	for (int i = 0; i <= RT_PUSH_N; i++) { /* the per-agent results, then the latency */
		const char *field = i < RT_PUSH_N ? rt_push_result_names[i] : "last_latency_ms";
		if (i < RT_PUSH_N && !rt_push_result_per_agent(field))
			continue;
		char key[64];
		snprintf(key, sizeof(key), "push %s:", field);
		line_of(key, json_is_object(p) ? json_object_get(p, field) : NULL);
	}
	line_of("source:", json_object_get(a, "source"));
	rc = fflush(stdout) == 0 ? GW_EXIT_OK : GW_EXIT_FAILURE;
	json_decref(a);
	free(reply.body);
	return rc;
}

/* ---- workers remove NAME ---- */

int gw_cli_worker_remove(const struct gw_config *c, const char *name, int json)
{
	char path[200];
	if (!qs_valid_worker_name(name, strlen(name))) {
		fprintf(stderr, "qagw: workers remove: bad worker name \"%.80s\"\n", name);
		return GW_EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/api/workers/%s", name);
	json_t *j = NULL;
	struct http_reply reply;
	int rc = request_json(c, "workers remove", "DELETE", path, &j, &reply);
	if (rc == GW_EXIT_OK && json) {
		rc = print_raw(&reply);
	} else if (rc == GW_EXIT_OK) {
		char state[64], moving[32], pinned[32];
		scalar(json_object_get(j, "state"), state, sizeof(state));
		scalar(json_object_get(j, "agents_to_move"), moving, sizeof(moving));
		scalar(json_object_get(j, "pinned_unresolved"), pinned, sizeof(pinned));
		printf("worker %s: %s (router-assigned agents to move: %s; pinned agents now "
		       "unresolved: %s)\n",
		       name, state, moving, pinned);
		rc = fflush(stdout) == 0 ? GW_EXIT_OK : GW_EXIT_FAILURE;
	}
	json_decref(j);
	free(reply.body);
	return rc;
}
