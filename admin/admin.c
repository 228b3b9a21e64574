/* The admin port's front door: the listener, the route table (every path the
 * port serves, in one place), authentication and dispatch. Handlers live in
 * api_*.c, metrics.c and dashboard.c; request plumbing in http.c. */
#include "admin/admin.h"

#include "admin/api.h"
#include "admin/http.h"
#include "admin/route.h"
#include "common/clock.h"
#include "common/log.h"
#include "gateway/node.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct adm_route routes[] = {
    {ADM_GET, "/healthz", adm_get_healthz, ADM_OPEN},
    {ADM_GET, "/metrics", adm_get_metrics, ADM_TOKEN},
    {ADM_GET, "/", adm_get_dashboard, ADM_TOKEN_OR_QUERY},
    {ADM_GET, "/api/workers", adm_get_workers, ADM_TOKEN},
    {ADM_POST, "/api/workers/{}/drain", adm_post_worker_drain, ADM_TOKEN},
    {ADM_POST, "/api/workers/{}/resume", adm_post_worker_resume, ADM_TOKEN},
    {ADM_DELETE, "/api/workers/{}", adm_delete_worker, ADM_TOKEN},
    {ADM_GET, "/api/agents", adm_get_agents, ADM_TOKEN},
    {ADM_POST, "/api/agents", adm_post_agent, ADM_TOKEN},
    {ADM_GET, "/api/agents/{}", adm_get_agent, ADM_TOKEN},
    {ADM_DELETE, "/api/agents/{}/token", adm_delete_agent_token, ADM_TOKEN},
    {ADM_PUT, "/api/agents/{}/primary", adm_put_agent_primary, ADM_TOKEN},
    {ADM_GET, "/api/agents-off-primary", adm_get_agents_off_primary, ADM_TOKEN},
    {ADM_GET, "/api/agents-near-quota", adm_get_agents_near_quota, ADM_TOKEN},
    {ADM_GET, "/api/push", adm_get_push, ADM_TOKEN},
    {ADM_POST, "/api/messages", adm_post_message, ADM_TOKEN},
    {ADM_GET, "/api/messages/{}", adm_get_message, ADM_TOKEN},
    {ADM_DELETE, "/api/messages/{}", adm_delete_message, ADM_TOKEN},
};
#define N_ROUTES ((int)(sizeof(routes) / sizeof(routes[0])))

/* Compares two secrets in time independent of where they differ and of their
 * lengths: both are hashed first, then the digests compared. */
static int secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned char da[EVP_MAX_MD_SIZE], db[EVP_MAX_MD_SIZE];
	unsigned int na = 0, nb = 0;
	if (!EVP_Digest(a, alen, da, &na, EVP_sha256(), NULL) ||
	    !EVP_Digest(b, blen, db, &nb, EVP_sha256(), NULL) || na != nb) {
		explicit_bzero(da, sizeof(da));
		explicit_bzero(db, sizeof(db));
		return 0;
	}
	int equal = CRYPTO_memcmp(da, db, na) == 0;
	explicit_bzero(da, sizeof(da)); /* digests of the admin token: secrets too */
	explicit_bzero(db, sizeof(db));
	return equal;
}

/* The bearer token of the Authorization header, or NULL. */
static const char *bearer(struct evhttp_request *req, size_t *len)
{
	const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	if (!h)
		return NULL;
	while (*h == ' ')
		h++;
	if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
		return NULL;
	h += 6;
	while (*h == ' ' || *h == '\t')
		h++;
	size_t n = strlen(h);
	while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
		n--;
	*len = n;
	return h;
}

/* 1 when the request may proceed. The token is never logged. */
static int authorized(struct adm_req *r, enum adm_access access)
{
	const char *token = r->node->conf.admin_token;
	if (access == ADM_OPEN || !token[0])
		return 1;
	size_t tlen = strlen(token), n = 0;
	const char *given = bearer(r->http, &n);
	if (given && secret_equal(given, n, token, tlen))
		return 1;
	if (access == ADM_TOKEN_OR_QUERY) {
		const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->http));
		struct evkeyvalq args;
		TAILQ_INIT(&args);
		int ok = 0;
		if (q && evhttp_parse_query_str(q, &args) == 0) {
			const char *t = evhttp_find_header(&args, "token");
			ok = t && secret_equal(t, strlen(t), token, tlen);
		}
		evhttp_clear_headers(&args);
		if (ok)
			return 1;
	}
	adm_add_header(r, "WWW-Authenticate", "Bearer realm=\"qagw admin\"");
	adm_reply_error(r, 401, "unauthorized",
	                given ? "wrong admin token"
	                      : "this path needs \"Authorization: Bearer TOKEN\" ([admin] token)");
	return 0;
}

/* Logs a refusal at most every 10 s (a web page can send them in a loop), with
 * the offending value made printable. */
static void log_refusal(struct adm_req *r, const char *what, const char *value)
{
	int64_t now = gw_mono_us();
	if (!r->srv || now - r->srv->refused_logged_us < 10 * 1000000LL)
		return;
	r->srv->refused_logged_us = now;
	char v[80];
	size_t n = 0;
	for (const char *p = value ? value : "(none)"; *p && n < sizeof(v) - 1; p++)
		v[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
	v[n] = 0;
	gw_log(GW_LOG_WARN, "admin: refused %s %s: %s %s (logged at most every 10 s)",
	       adm_method_name(r->method) ? adm_method_name(r->method) : "?", r->path, what, v);
}

/* admin.md "Requests from web pages": 1 when the request may proceed, else
 * answers 403. A Host that is not ours is a DNS-rebinding page reading our
 * answers; an Origin that is not ours is another site's page writing. Both
 * come before authentication: they are refused with or without a token. */
static int allowed_from_web(struct adm_req *r)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(r->http);
	const char *host = evhttp_find_header(h, "Host");
	if (!adm_guard_host_ok(&r->srv->guard, host)) {
		log_refusal(r, "Host", host);
		adm_reply_error(r, 403, "host_not_allowed",
		                "Host \"%.100s\" is not a loopback name or address, the admin "
		                "listen address, or a name in [admin] allowed_hosts",
		                host);
		return 0;
	}
	if (r->method == ADM_GET || r->method == ADM_HEAD)
		return 1;
	const char *origin = evhttp_find_header(h, "Origin");
	const char *site = evhttp_find_header(h, "Sec-Fetch-Site");
	if (!adm_guard_origin_ok(origin, site, host)) {
		log_refusal(r, origin ? "Origin" : "Sec-Fetch-Site", origin ? origin : site);
		if (origin)
			adm_reply_error(
			    r, 403, "cross_origin",
			    "%s from Origin \"%.100s\": only the admin port's own "
			    "origin may change state",
			    adm_method_name(r->method) ? adm_method_name(r->method) : "?", origin);
		else
			adm_reply_error(r, 403, "cross_origin",
			                "%s with Sec-Fetch-Site: cross-site: only the admin port's "
			                "own origin may change state",
			                adm_method_name(r->method) ? adm_method_name(r->method)
			                                           : "?");
		return 0;
	}
	return 1;
}

/* 1 when the request has no body and no Content-Type, or a JSON one; else
 * answers 415. A page can send a cross-site form or text/plain body without
 * asking first (no CORS preflight); application/json it cannot. */
static int json_body(struct adm_req *r)
{
	const char *ct =
	    evhttp_find_header(evhttp_request_get_input_headers(r->http), "Content-Type");
	size_t len = evbuffer_get_length(evhttp_request_get_input_buffer(r->http));
	if ((!ct && len == 0) || adm_guard_is_json(ct))
		return 1;
	adm_reply_error(
	    r, 415, "unsupported_media_type",
	    "a request body must be \"Content-Type: application/json\" (got %s%.100s%s)",
	    ct ? "\"" : "", ct ? ct : "none", ct ? "\"" : "");
	return 0;
}

/* Answers without an adm_req (none could be made, or too many are open). */
static void reply_direct(struct evhttp_request *req, int code, const char *json)
{
	struct evbuffer *b = evbuffer_new();
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "application/json");
	if (code == 503)
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
	if (b)
		evbuffer_add(b, json, strlen(json));
	evhttp_send_reply(req, code, NULL, b);
	if (b)
		evbuffer_free(b);
}

/* At start-up the node's own store and Redis connections come up at about
 * the same time as the workers' listeners: a request in the first
 * ADM_START_GRACE_MS waits (polling) for them rather than being answered as
 * if they were down. Later, a service that is down is answered at once. */
static void run_handler(struct adm_req *r)
{
	struct gw_node *node = r->node;
	int up = adm_store_up(node) && adm_redis_up(node);
	if (!up && r->srv &&
	    gw_mono_us() - r->srv->started_us < (int64_t)ADM_START_GRACE_MS * 1000) {
		adm_later(r, run_handler, 20);
		return;
	}
	r->handler(r);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct adm_server *srv = arg;
	if (srv->n_pending >= ADM_MAX_PENDING) {
		gw_log(GW_LOG_WARN, "admin: %d requests in progress: answering 503",
		       srv->n_pending);
		reply_direct(req, 503,
		             "{\"error\":\"busy\",\"message\":\"too many admin requests in "
		             "progress\"}\n");
		return;
	}
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (!path || !*path)
		path = "/";
	int method = (int)evhttp_request_get_command(req);
	struct adm_req *r = adm_req_new(srv, req, method, path);
	if (!r) {
		reply_direct(req, 500, "{\"error\":\"internal\",\"message\":\"out of memory\"}\n");
		return;
	}
	struct adm_params params;
	int allowed = 0;
	int i = adm_route_find(routes, N_ROUTES, method, path, &params, &allowed);
	if (!allowed_from_web(r) || !authorized(r, i >= 0 ? routes[i].access : ADM_TOKEN))
		return;
	if (i == ADM_ROUTE_NOT_FOUND) {
		adm_reply_error(r, 404, "not_found", "no such path: %s", r->path);
		return;
	}
	if (i == ADM_ROUTE_BAD_METHOD) {
		char allow[64];
		adm_route_allow_header(allowed, allow, sizeof(allow));
		adm_add_header(r, "Allow", allow);
		adm_reply_error(r, 405, "method_not_allowed", "%s takes %s", r->path, allow);
		return;
	}
	if (!json_body(r))
		return;
	r->params = params;
	r->handler = routes[i].handler;
	run_handler(r);
}

/* The node's one admin server. Its listener's error callback gets the arg
 * evhttp_bind_listener gave it (the evhttp), not ours: this is how it finds
 * the guard. Main thread only. */
static struct adm_server *the_server;

/* EMFILE and friends: the guard pauses the listener (accept_guard.h). */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();
	if (!the_server || !gw_accept_guard_on_error(&the_server->accept_guard, err))
		gw_log(GW_LOG_WARN, "admin: accept failed: %s", strerror(err));
}

struct adm_server *adm_start(struct gw_node *node, char *err, size_t errlen)
{
	struct adm_server *a = calloc(1, sizeof(*a));
	struct evconnlistener *l = NULL;
	if (!a) {
		snprintf(err, errlen, "admin: out of memory");
		return NULL;
	}
	a->node = node;
	a->started_us = gw_mono_us();
	TAILQ_INIT(&a->pending);
	if (adm_guard_init(&a->guard, node->conf.admin_allowed_hosts,
	                   (const struct sockaddr *)&node->conf.admin_sa, err, errlen) != 0) {
		free(a);
		return NULL;
	}
	if (gw_accept_guard_init(&a->accept_guard, node->base, "admin", &a->listener_paused) != 0) {
		snprintf(err, errlen, "admin: out of memory");
		free(a);
		return NULL;
	}
	a->http = evhttp_new(node->base);
	if (a->http)
		l = evconnlistener_new_bind(
		    node->base, NULL, NULL,
		    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 128,
		    (const struct sockaddr *)&node->conf.admin_sa, (int)node->conf.admin_sa_len);
	if (!l || !evhttp_bind_listener(a->http, l)) {
		snprintf(err, errlen, "admin: cannot listen on %s: %s", node->conf.admin_listen,
		         strerror(errno));
		if (l)
			evconnlistener_free(l);
		if (a->http)
			evhttp_free(a->http);
		gw_accept_guard_free(&a->accept_guard);
		free(a);
		return NULL;
	}
	evconnlistener_set_error_cb(l, on_accept_error);
	gw_accept_guard_attach(&a->accept_guard, l);
	the_server = a;
	evhttp_set_max_body_size(a->http, ADM_MAX_BODY);
	evhttp_set_max_headers_size(a->http, 16384);
	evhttp_set_timeout(a->http, ADM_CONN_TIMEOUT);
	/* Every method reaches on_request, which answers 405 in JSON itself. */
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                        EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                        EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(a->http, on_request, a);
	gw_log(GW_LOG_INFO, "admin: listening on %s (%s)", node->conf.admin_listen,
	       node->conf.admin_token[0] ? "token required" : "no token");
	return a;
}

void adm_stop(struct adm_server *a)
{
	if (!a)
		return;
	adm_req_orphan_all(a);
	gw_accept_guard_detach(&a->accept_guard);
	gw_accept_guard_free(&a->accept_guard);
	the_server = NULL;
	evhttp_free(a->http);
	free(a);
}
