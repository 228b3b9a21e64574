/* Request plumbing for the admin port; see http.h. */
#include "admin/http.h"

#include "common/clock.h"
#include "common/log.h"
#include "gateway/node.h"
#include "router/rt_redis.h"
#include "store/store.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void req_release(struct adm_req *r)
{
	if (--r->refs > 0)
		return;
	if (r->ctx_free)
		r->ctx_free(r->ctx);
	free(r);
}

/* Ends the HTTP side of r: no longer pending, no deadline, no reply to come. */
static void req_detach(struct adm_req *r)
{
	r->http = NULL;
	if (r->deadline) {
		event_free(r->deadline);
		r->deadline = NULL;
	}
	if (r->srv) {
		TAILQ_REMOVE(&r->srv->pending, r, link);
		r->srv->n_pending--;
		r->srv = NULL;
	}
	req_release(r);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct adm_req *r = arg;
	adm_reply_error(r, 504, "timeout", "no answer from Redis or the store within %d s",
	                ADM_DEADLINE_S);
}

struct adm_req *adm_req_new(struct adm_server *srv, struct evhttp_request *http, int method,
                            const char *path)
{
	struct adm_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->deadline = evtimer_new(srv->node->base, on_deadline, r);
	if (!r->deadline) {
		free(r);
		return NULL;
	}
	struct timeval tv = {ADM_DEADLINE_S, 0};
	evtimer_add(r->deadline, &tv);
	r->srv = srv;
	r->node = srv->node;
	r->http = http;
	r->method = method;
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->refs = 1;
	r->start_us = gw_mono_us();
	TAILQ_INSERT_TAIL(&srv->pending, r, link);
	srv->n_pending++;
	return r;
}

void adm_req_orphan_all(struct adm_server *srv)
{
	struct adm_req *r;
	while ((r = TAILQ_FIRST(&srv->pending)))
		req_detach(r);
}

/* ---- replies ---- */

void adm_add_header(struct adm_req *r, const char *key, const char *value)
{
	if (adm_req_live(r))
		evhttp_add_header(evhttp_request_get_output_headers(r->http), key, value);
}

void adm_reply_raw(struct adm_req *r, int code, const char *content_type, const void *data,
                   size_t len)
{
	if (!adm_req_live(r))
		return;
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->http);
	evhttp_add_header(h, "Content-Type", content_type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	struct evbuffer *body = evbuffer_new();
	if (body)
		evbuffer_add(body, data, len);
	evhttp_send_reply(r->http, code, NULL, body);
	if (body)
		evbuffer_free(body);
	if (gw_log_enabled(GW_LOG_DEBUG))
		gw_logf(GW_LOG_DEBUG, "admin: %s %s -> %d (%.1f ms)",
		        adm_method_name(r->method) ? adm_method_name(r->method) : "?", r->path,
		        code, (double)(gw_mono_us() - r->start_us) / 1000.0);
	req_detach(r);
}

void adm_reply_json(struct adm_req *r, int code, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
	json_decref(j);
	if (!s) {
		static const char oom[] =
		    "{\"error\":\"internal\",\"message\":\"out of memory\"}\n";
		adm_reply_raw(r, 500, "application/json", oom, sizeof(oom) - 1);
		return;
	}
	size_t n = strlen(s);
	/* json_dumps leaves room for nothing more: append the newline here. */
	char *line = realloc(s, n + 2);
	if (line) {
		s = line;
		s[n++] = '\n';
		s[n] = 0;
	}
	adm_reply_raw(r, code, "application/json", s, n);
	free(s);
}

static json_t *error_object(const char *error, const char *fmt, va_list ap)
{
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	json_t *j = json_object();
	json_object_set_new(j, "error", json_string(error));
	/* A message may quote client input that is not UTF-8: say so rather
	 * than send invalid JSON. */
	json_t *m = json_string(msg);
	json_object_set_new(j, "message", m ? m : json_string("(message not valid UTF-8)"));
	return j;
}

void adm_reply_error(struct adm_req *r, int code, const char *error, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	json_t *j = error_object(error, fmt, ap);
	va_end(ap);
	adm_reply_json(r, code, j);
}

void adm_reply_bad_field(struct adm_req *r, const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	json_t *j = error_object("bad_request", fmt, ap);
	va_end(ap);
	json_object_set_new(j, "field", field ? json_string(field) : json_null());
	adm_reply_json(r, 400, j);
}

json_t *adm_body_object(struct adm_req *r)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(r->http);
	size_t len = evbuffer_get_length(in);
	if (len == 0) {
		adm_reply_bad_field(r, NULL, "a JSON object body is required");
		return NULL;
	}
	const char *data = (const char *)evbuffer_pullup(in, -1);
	json_error_t e;
	json_t *j = data ? json_loadb(data, len, JSON_REJECT_DUPLICATES, &e) : NULL;
	if (!j) {
		adm_reply_bad_field(r, NULL, "body is not valid JSON: %s (line %d, column %d)",
		                    data ? e.text : "out of memory", data ? e.line : 0,
		                    data ? e.column : 0);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		adm_reply_bad_field(r, NULL, "body must be a JSON object");
		return NULL;
	}
	return j;
}

/* ---- async calls ---- */

struct adm_call {
	struct adm_req *r;
	adm_redis_fn redis_fn;
	adm_store_fn store_fn;
	int idx;
};

static void call_done(struct adm_req *r)
{
	if (--r->waiting == 0 && adm_req_live(r) && r->next) {
		adm_step_fn next = r->next;
		r->next = NULL;
		next(r);
	}
	req_release(r);
}

static void on_redis_reply(void *arg, redisReply *reply)
{
	struct adm_call *c = arg;
	struct adm_req *r = c->r;
	if (adm_req_live(r) && c->redis_fn) /* NULL: only completion matters (PUBLISH) */
		c->redis_fn(r, reply, c->idx);
	free(c);
	call_done(r);
}

static void on_store_done(void *arg, const PGresult *res, const char *err)
{
	struct adm_call *c = arg;
	struct adm_req *r = c->r;
	if (adm_req_live(r))
		c->store_fn(r, res, err);
	free(c);
	call_done(r);
}

#define ADM_REDIS_MAX_ARGS 8

int adm_redis(struct adm_req *r, adm_redis_fn fn, int idx, ...)
{
	const char *argv[ADM_REDIS_MAX_ARGS];
	size_t lens[ADM_REDIS_MAX_ARGS];
	int argc = 0;
	va_list ap;
	va_start(ap, idx);
	const char *a;
	while ((a = va_arg(ap, const char *)) && argc < ADM_REDIS_MAX_ARGS) {
		argv[argc] = a;
		lens[argc] = strlen(a);
		argc++;
	}
	va_end(ap);
	if (!adm_req_live(r) || !adm_redis_up(r->node))
		return -1;
	struct adm_call *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	c->r = r;
	c->redis_fn = fn;
	c->idx = idx;
	if (rt_redis_commandv(r->node->redis, on_redis_reply, c, argc, argv, lens) != 0) {
		free(c);
		return -1;
	}
	r->refs++;
	r->waiting++;
	return 0;
}

int adm_store(struct adm_req *r, adm_store_fn fn, adm_submit_fn submit, const void *args)
{
	if (!adm_req_live(r) || !adm_store_up(r->node))
		return -1;
	struct adm_call *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	c->r = r;
	c->store_fn = fn;
	if (!submit(r->node->store, args, on_store_done, c)) {
		free(c);
		return -1;
	}
	r->refs++;
	r->waiting++;
	return 0;
}

void adm_then(struct adm_req *r, adm_step_fn next)
{
	if (!adm_req_live(r))
		return;
	if (r->waiting == 0)
		next(r);
	else
		r->next = next;
}

struct adm_timer {
	struct adm_req *r;
	adm_step_fn fn;
	struct event *ev;
};

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct adm_timer *t = arg;
	struct adm_req *r = t->r;
	event_free(t->ev);
	if (adm_req_live(r))
		t->fn(r);
	free(t);
	req_release(r);
}

void adm_later(struct adm_req *r, adm_step_fn fn, int ms)
{
	struct adm_timer *t = calloc(1, sizeof(*t));
	if (t)
		t->ev = evtimer_new(r->node->base, on_later, t);
	if (!t || !t->ev) {
		free(t);
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	t->r = r;
	t->fn = fn;
	r->refs++;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(t->ev, &tv);
}

void adm_key(const struct adm_req *r, char *out, size_t outlen, const char *fmt, ...)
{
	int n = snprintf(out, outlen, "%s", r->node->conf.redis_prefix);
	if (n < 0 || (size_t)n >= outlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out + n, outlen - (size_t)n, fmt, ap);
	va_end(ap);
}

int adm_redis_up(const struct gw_node *node)
{
	return node->redis && rt_redis_is_up(node->redis);
}

int adm_store_up(const struct gw_node *node)
{
	return node->store && st_conn_is_up(node->store);
}
