/* Admin-port subcommands of the qagw program; see cli.h. One request per
 * connection (Connection: close), blocking I/O bounded by a deadline. */
#include "gateway/cli.h"
#include "router/rt_push.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef QAGW_VERSION /* the Makefile defines it; builds that do not (fuzz) still link */
#define QAGW_VERSION "unknown"
#endif

#define CONNECT_TIMEOUT_MS 3000
#define REQUEST_TIMEOUT_MS 15000      /* the admin port answers within its own 10 s */
#define MAX_RESPONSE       (16 << 20) /* bytes */

struct http_reply {
	int status;
	char *head; /* the whole response; body points into it */
	char *body;
	size_t body_len;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {fd, events, 0};
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		return r < 0 ? -1 : r;
	}
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

/* Connects with a timeout; returns the socket or -1 with err. */
static int dial(const struct gw_config *c, const char *where, char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	char addr[80];
	admin_target(c, &sa, addr, sizeof(addr));
	int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	socklen_t salen =
	    sa.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	int rc = connect(fd, (struct sockaddr *)&sa, salen);
	if (rc != 0 && errno == EINPROGRESS) {
		int w = wait_fd(fd, POLLOUT, now_ms() + CONNECT_TIMEOUT_MS);
		int soerr = 0;
		socklen_t l = sizeof(soerr);
		if (w <= 0) {
			errno = w == 0 ? ETIMEDOUT : errno;
			rc = -1;
		} else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) != 0 || soerr) {
			errno = soerr ? soerr : errno;
			rc = -1;
		} else {
			rc = 0;
		}
	}
	if (rc != 0) {
		snprintf(err, errlen, "cannot reach the admin port %s (from %.200s): %s", addr,
		         where, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Decodes a chunked body in place; returns its length or -1. */
static long dechunk(char *p, size_t len)
{
	char *out = p, *end = p + len;
	for (;;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			return -1;
		char *e;
		unsigned long n = strtoul(p, &e, 16);
		if (e == p || n > (size_t)(end - nl - 1))
			return -1;
		if (n == 0)
			return out - (end - len);
		memmove(out, nl + 1, n);
		out += n;
		p = nl + 1 + n;
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
			p++;
	}
}

/* GET path. Returns GW_EXIT_OK with reply filled, GW_EXIT_UNREACHABLE (no
 * connection or no answer) or GW_EXIT_FAILURE (not HTTP), with err. */
static int http_get(const struct gw_config *c, const char *path, struct http_reply *reply,
                    char *err, size_t errlen)
{
	memset(reply, 0, sizeof(*reply));
	int fd = dial(c, c->path, err, errlen);
	if (fd < 0)
		return GW_EXIT_UNREACHABLE;
	/* Host names the address dialled (a wildcard listen is reached on
	 * loopback): the admin port accepts a loopback address or its own listen
	 * address (docs/admin.md), and refuses "0.0.0.0:8439". */
	struct sockaddr_storage sa;
	char host[80];
	admin_target(c, &sa, host, sizeof(host));
	char req[2048];
	int n = snprintf(req, sizeof(req),
	                 "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: qagw/" QAGW_VERSION
	                 "\r\nAccept: application/json\r\n%s%s%sConnection: close\r\n\r\n",
	                 path, host, c->admin_token[0] ? "Authorization: Bearer " : "",
	                 c->admin_token, c->admin_token[0] ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(req)) {
		close(fd);
		snprintf(err, errlen, "request too long");
		return GW_EXIT_FAILURE;
	}
	int64_t deadline = now_ms() + REQUEST_TIMEOUT_MS;
	for (size_t off = 0; off < (size_t)n;) {
		ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(fd, POLLOUT, deadline) <= 0)
				goto no_answer;
			continue;
		}
		if (w <= 0)
			goto no_answer;
		off += (size_t)w;
	}
	size_t len = 0, cap = 8192;
	char *buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return GW_EXIT_FAILURE;
	}
	for (;;) {
		if (len == cap) {
			if (cap >= MAX_RESPONSE) {
				free(buf);
				close(fd);
				snprintf(err, errlen, "response larger than %d bytes",
				         MAX_RESPONSE);
				return GW_EXIT_FAILURE;
			}
			char *more = realloc(buf, cap * 2 + 1);
			if (!more) {
				free(buf);
				close(fd);
				snprintf(err, errlen, "out of memory");
				return GW_EXIT_FAILURE;
			}
			buf = more;
			cap *= 2;
		}
		ssize_t r = recv(fd, buf + len, cap - len, 0);
		if (r > 0) {
			len += (size_t)r;
			continue;
		}
		if (r == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && wait_fd(fd, POLLIN, deadline) > 0)
			continue;
		free(buf);
		goto no_answer;
	}
	close(fd);
	buf[len] = 0;
	char *sep = strstr(buf, "\r\n\r\n");
	int status;
	if (!sep || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
		free(buf);
		snprintf(err, errlen, "the admin port %s sent no HTTP response", c->admin_listen);
		return len == 0 ? GW_EXIT_UNREACHABLE : GW_EXIT_FAILURE;
	}
	*sep = 0;
	reply->status = status;
	reply->head = buf;
	reply->body = sep + 4;
	reply->body_len = len - (size_t)(reply->body - buf);
	if (strcasestr(buf, "\ntransfer-encoding: chunked")) {
		long b = dechunk(reply->body, reply->body_len);
		if (b < 0) {
			free(buf);
			snprintf(err, errlen, "bad chunked response");
			return GW_EXIT_FAILURE;
		}
		reply->body_len = (size_t)b;
	}
	reply->body[reply->body_len] = 0;
	return GW_EXIT_OK;
no_answer:
	snprintf(err, errlen, "the admin port %s did not answer within %d s: %s", c->admin_listen,
	         REQUEST_TIMEOUT_MS / 1000, strerror(errno ? errno : ETIMEDOUT));
	close(fd);
	return GW_EXIT_UNREACHABLE;
}

/* GET path and parse the JSON. Returns GW_EXIT_OK with *out and the raw
 * body in *raw (caller frees), or the exit code, having said why. */
static int get_json(const struct gw_config *c, const char *what, const char *path, json_t **out,
                    struct http_reply *reply)
{
	char err[512];
	int rc = http_get(c, path, reply, err, sizeof(err));
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
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long long age = (long long)now.tv_sec - (long long)t;
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02dZ (%lld s ago)", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, age < 0 ? 0 : age);
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
		free(reply.head);
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
	free(reply.head);
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
		free(reply.head);
		return rc;
	}
	if (json) {
		rc = print_raw(&reply);
		json_decref(a);
		free(reply.head);
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
	} else {
		line("session:", "none");
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
	free(reply.head);
	return rc;
}
