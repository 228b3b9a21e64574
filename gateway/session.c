/* The session state machine: framing, ordering, timeouts and close rules,
 * and the worker's session table; see session.h. What each request does is
 * in requests.c. */
#include "gateway/session_int.h"

#include "common/clock.h"
#include "common/log.h"
#include "gateway/primary.h"
#include "gateway/tls.h"
#include "gateway/worker.h"
#include "router/rt_pool.h"
#include "store/store.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>

#define CLOSE_GRACE_S 5 /* most time given to flush an ERROR to a peer */

static void pump(struct gw_session *s);

static void on_timer(evutil_socket_t fd, short what, void *arg);

/* Not welcomed yet: from accept until WELCOME is written (TLS handshake,
 * awaiting HELLO, and WELCOMING while the store checks the token and
 * registers the agent). Such a connection counts against max_pending_hello
 * and max_pending_hello_per_ip, so one address can hold at most its cap of
 * them whatever it sends; a WELCOMING one counts in max_sessions as well
 * (n_welcoming), so that concurrent HELLOs cannot overshoot max_sessions. */
static int not_welcomed(enum gw_session_state st)
{
	return st == GW_S_TLS_HANDSHAKE || st == GW_S_AWAIT_HELLO || st == GW_S_WELCOMING;
}

/* The input a session may buffer: one whole frame of up to max_len bytes,
 * with room for the next header and some read-ahead. */
static size_t read_high(uint32_t max_len)
{
	return (size_t)max_len + QS_HEADER_LEN + 65536;
}

static void set_state(struct gw_session *s, enum gw_session_state next)
{
	struct gw_session_table *t = s->w->sessions;
	if (not_welcomed(s->state) && !not_welcomed(next)) {
		t->n_pending_hello--;
		if (s->ipc && --s->ipc->n == 0) {
			HASH_DEL(t->pending_by_ip, s->ipc);
			free(s->ipc);
		}
		s->ipc = NULL;
	}
	if (next == GW_S_WELCOMING && s->state != GW_S_WELCOMING)
		t->n_welcoming++;
	if (s->state == GW_S_WELCOMING && next != GW_S_WELCOMING)
		t->n_welcoming--;
	if (next == GW_S_READY && s->state == GW_S_WELCOMING) {
		t->n_sessions++;
		/* welcomed: a whole frame of any allowed length may now wait */
		bufferevent_setwatermark(s->bev, EV_READ, 0, read_high(s->w->conf->max_frame));
	}
	if (next == GW_S_CLOSING && (s->state == GW_S_READY || s->state == GW_S_BUSY))
		t->n_sessions--;
	s->state = next;
}

void gw_session_free(struct gw_session *s)
{
	struct gw_worker *w = s->w;
	if (s->op)
		st_op_cancel(s->op);
	s->op = NULL;
	gw_req_abandon(s);
	gw_req_session_end(s);
	if (s->state != GW_S_CLOSING)
		set_state(s, GW_S_CLOSING);
	if (s->ticket)
		s->ticket->s = NULL;
	if (s->gauged) {
		atomic_fetch_sub(&w->gauges.sessions, 1);
		atomic_fetch_sub(&w->gauges.on_primary, s->on_primary);
		atomic_fetch_sub(&w->gauges.unresolved, s->gauged_unresolved);
	}
	if (s->in_agent_map)
		HASH_DEL(w->sessions->by_agent, s);
	if (s->epoch && w->pool)
		rt_pool_release(w->pool, s->agent, s->epoch);
	qs_buf_free(&s->welcome);
	free(s->known);
	free(s->pending_text);
	free(s->reassign_to);
	if (s->primary_sent != gw_session_empty)
		free(s->primary_sent);
	if (s->reassign_timer)
		event_free(s->reassign_timer);
	TAILQ_REMOVE(&w->sessions->all, s, link);
	if (s->timer)
		event_free(s->timer);
	bufferevent_free(s->bev);
	explicit_bzero(s->token_sha256, sizeof(s->token_sha256));
	free(s);
	gw_worker_session_gone(w);
}

/* The session's timer, armed for tv: made again if it was freed at WELCOME
 * (a welcomed session has none: gw_session_welcomed). -1 without memory. */
static int arm_timer(struct gw_session *s, const struct timeval *tv)
{
	if (!s->timer && !(s->timer = evtimer_new(s->w->base, on_timer, s)))
		return -1;
	return evtimer_add(s->timer, tv);
}

/* Frees on the next loop turn, never inside a caller that may still use s:
 * through the timer, or without memory for one, through the bufferevent's own
 * deferred event callback (on_event; it needs no allocation). */
static void reap(struct gw_session *s)
{
	struct timeval now = {0, 0};
	s->reaping = 1;
	if (arm_timer(s, &now) != 0)
		bufferevent_trigger_event(s->bev, BEV_EVENT_EOF, BEV_TRIG_DEFER_CALLBACKS);
}

static void enter_closing(struct gw_session *s)
{
	set_state(s, GW_S_CLOSING);
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		reap(s);
		return;
	}
	/* The write callback frees once the output is flushed; the timer
	 * bounds how long a peer that does not read can keep us. */
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	struct timeval tv = {CLOSE_GRACE_S, 0};
	if (arm_timer(s, &tv) != 0) { /* no grace without memory: closed now */
		gw_slog(GW_LOG_WARN, s, "out of memory: closed without waiting for the output");
		reap(s);
	}
}

int gw_session_send(struct gw_session *s, const struct qs_frame *f)
{
	struct qs_buf *b = &s->w->scratch;
	b->len = 0;
	if (qs_encode(f, b) != 0)
		return -1;
	return bufferevent_write(s->bev, b->data, b->len);
}

void gw_session_error(struct gw_session *s, int code, const char *fmt, ...)
{
	char text[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (s->state == GW_S_CLOSING)
		return;
	if (gw_session_owes(s)) { /* the in-flight requests' responses go first */
		if (!s->pending_error) {
			s->pending_error = code;
			s->pending_text = strdup(text); /* NULL: the ERROR says less */
		}
		return;
	}
	gw_slog(code == QS_E_DRAINING || code == QS_E_TIMEOUT ? GW_LOG_INFO : GW_LOG_WARN, s,
	        "ERROR %s: %s", qs_err_name(code), text);
	if (code > QS_OK && code < QS_E_END)
		atomic_fetch_add_explicit(&s->w->counters.errors[code], 1, memory_order_relaxed);
	struct qs_frame f = {.type = QS_ERROR};
	f.u.error.code = (uint16_t)code;
	f.u.error.retryable = (uint8_t)qs_err_retryable(code);
	f.u.error.text = qs_str_c(text);
	if (gw_session_send(s, &f) != 0)
		gw_slog(GW_LOG_ERROR, s, "cannot encode ERROR");
	enter_closing(s);
}

void gw_session_request_done(struct gw_session *s)
{
	if (s->state == GW_S_CLOSING)
		return;
	/* A request answered at once leaves the session READY, and the pump
	 * that dispatched it goes on; one answered from a store callback
	 * resumes reading here. */
	int was_waiting = s->state == GW_S_BUSY || s->state == GW_S_WELCOMING;
	s->op = NULL;
	gw_count(s->w, requests, 1);
	if (!was_waiting)
		return;
	if (gw_session_owes(s)) { /* UPLOADs still in flight: another may be read */
		pump(s);
		return;
	}
	set_state(s, GW_S_READY);
	if (s->pending_error) {
		int code = s->pending_error;
		s->pending_error = 0;
		char *text = s->pending_text;
		s->pending_text = NULL;
		gw_session_error(s, code, "%s", text ? text : "");
		free(text);
		return;
	}
	pump(s);
}

static void dispatch(struct gw_session *s, const struct qs_frame *f, uint32_t len)
{
	if (s->state == GW_S_AWAIT_HELLO) {
		if (f->type != QS_HELLO) {
			gw_session_error(s, QS_E_SEQUENCE, "%s before HELLO",
			                 qs_type_name(f->type));
			return;
		}
		gw_req_hello(s, &f->u.hello);
		return;
	}
	switch (f->type) {
	case QS_UPLOAD:
		gw_req_upload(s, &f->u.upload, len);
		return;
	case QS_FETCH:
		gw_push_fetched(s);
		gw_req_fetch(s, &f->u.fetch);
		return;
	case QS_DELIVER_ACK:
		gw_req_deliver_ack(s, &f->u.deliver_ack);
		return;
	case QS_STATUS:
		gw_req_status(s, &f->u.status);
		return;
	case QS_PING: {
		struct qs_frame pong = {.type = QS_PONG};
		pong.u.nonce = f->u.nonce;
		if (gw_session_send(s, &pong) != 0)
			gw_session_error(s, QS_E_INTERNAL, "cannot encode PONG");
		return;
	}
	case QS_PUSH_ACK:
		gw_push_ack(s, f->u.push_id);
		return;
	case QS_PONG:
		return;
	case QS_BYE:
		gw_slog(GW_LOG_DEBUG, s, "BYE");
		enter_closing(s);
		return;
	default: /* a second HELLO, or a server-to-agent frame */
		gw_session_error(s, QS_E_SEQUENCE, "%s not allowed from an agent now",
		                 qs_type_name(f->type));
		return;
	}
}

/* BUSY with UPLOADs only, room for one more, nothing else owed: the next
 * request is read if it is an UPLOAD (session_int.h GW_UPLOAD_PIPELINE). */
static int may_pipeline(const struct gw_session *s)
{
	return s->state == GW_S_BUSY && !s->op && s->n_uploads > 0 &&
	       s->n_uploads < GW_UPLOAD_PIPELINE && !s->pending_error && !s->peer_eof;
}

/* pump's reading: handles the frames in the input while the session may take one. */
static void pump_frames(struct gw_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer *out = bufferevent_get_output(s->bev);
	const struct gw_config *conf = s->w->conf;
	while (s->state == GW_S_AWAIT_HELLO || s->state == GW_S_READY || may_pipeline(s)) {
		if (evbuffer_get_length(out) >= (size_t)conf->max_output) {
			/* Backpressure: the write callback resumes once the agent
			 * has read half of it; the write timeout ends a peer
			 * that reads nothing. */
			bufferevent_setwatermark(s->bev, EV_WRITE, (size_t)conf->max_output / 2, 0);
			return;
		}
		size_t avail = evbuffer_get_length(in);
		uint8_t hdr[QS_HEADER_LEN];
		uint32_t len = 0;
		if (avail >= QS_HEADER_LEN) {
			evbuffer_copyout(in, hdr, QS_HEADER_LEN);
			/* Before HELLO, nothing longer than the largest HELLO
			 * is buffered: refused on its length prefix alone. */
			int hello_seen = s->state != GW_S_AWAIT_HELLO;
			uint32_t limit = qs_frame_limit(conf->max_frame, hello_seen);
			int e = qs_check_header(hdr, limit, &len);
			if (e != QS_OK) {
				if (e == QS_E_TOO_LARGE)
					gw_session_error(s, e, "frame length %u over %s %u", len,
					                 limit < conf->max_frame
					                     ? "the largest HELLO"
					                     : "max_frame",
					                 limit);
				else
					gw_session_error(s, e, "frame length 0");
				return;
			}
		}
		if (avail < QS_HEADER_LEN || avail < QS_HEADER_LEN + (size_t)len) {
			if (s->peer_eof) {
				if (avail)
					gw_session_error(
					    s, QS_E_BAD_FRAME,
					    "truncated frame (%zu bytes, then end of stream)",
					    avail);
				else
					enter_closing(s);
			}
			return;
		}
		const uint8_t *p = evbuffer_pullup(in, QS_HEADER_LEN + (ssize_t)len);
		if (s->state == GW_S_BUSY &&
		    (!p || p[QS_HEADER_LEN] != QS_UPLOAD ||
		     (uint64_t)s->up_bytes + len > (uint64_t)conf->max_frame))
			return; /* pipelining takes UPLOADs within max_frame: this waits its turn */
		if (s->state == GW_S_BUSY)
			gw_count(s->w, uploads_pipelined, 1);
		struct qs_frame f;
		const char *why = NULL;
		int e = qs_decode(p + QS_HEADER_LEN, len, &s->w->limits, &f, &why);
		if (e != QS_OK) {
			evbuffer_drain(in, QS_HEADER_LEN + (size_t)len);
			gw_session_error(s, e, "%s", why ? why : "malformed frame");
			return;
		}
		if (gw_log_enabled(GW_LOG_DEBUG))
			gw_slog(GW_LOG_DEBUG, s, "<- %s (%u bytes)", qs_type_name(f.type), len);
		dispatch(s, &f, len);
		qs_frame_release(&f);
		evbuffer_drain(in, QS_HEADER_LEN + (size_t)len);
	}
}

/* Reads and handles requests while the session may take one. A request
 * behind a DELIVER_ACK (read with it, or since) sends that ack's lingering
 * group at once. */
static void pump(struct gw_session *s)
{
	pump_frames(s);
	if (s->ack_group && s->state == GW_S_BUSY &&
	    evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
		gw_req_ack_hurry(s);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	pump(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct gw_session *s = arg;
	if (s->state == GW_S_CLOSING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			reap(s);
		return;
	}
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	pump(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct gw_session *s = arg;
	if (s->reaping) { /* reap's deferred call, or anything after it */
		gw_session_free(s);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done: now the HELLO deadline */
		if (s->state == GW_S_TLS_HANDSHAKE) {
			s->state = GW_S_AWAIT_HELLO; /* both count as awaiting HELLO */
			struct timeval hello = {s->w->conf->hello_timeout, 0};
			evtimer_add(s->timer, &hello);
			pump(s);
		}
		return;
	}
	if (what & BEV_EVENT_ERROR && s->state == GW_S_TLS_HANDSHAKE) {
		char reason[200] = "connection closed";
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (e)
			ERR_error_string_n(e, reason, sizeof(reason));
		gw_slog(GW_LOG_INFO, s, "TLS handshake failed: %s", reason);
		gw_session_free(s);
		return;
	}
	if (what & BEV_EVENT_EOF && !(what & BEV_EVENT_ERROR) && s->state != GW_S_CLOSING) {
		/* Half-close: requests already read are still answered. */
		s->peer_eof = 1;
		pump(s);
		return;
	}
	size_t queued = evbuffer_get_length(bufferevent_get_output(bev));
	if (what & BEV_EVENT_TIMEOUT && queued >= (size_t)s->w->conf->max_output / 2) {
		/* Its requests wait behind output it does not read: not silence. */
		gw_slog(GW_LOG_WARN, s, "closing a peer that does not read (%zu bytes queued)",
		        queued);
		gw_session_free(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT && what & BEV_EVENT_READING && s->state != GW_S_CLOSING) {
		gw_session_error(s, QS_E_TIMEOUT, "silent for %d s (3 x heartbeat)",
		                 3 * s->w->conf->heartbeat);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT && what & BEV_EVENT_WRITING)
		gw_slog(GW_LOG_WARN, s, "closing a peer that does not read (%zu bytes queued)",
		        queued);
	else if (s->state != GW_S_CLOSING)
		gw_slog(GW_LOG_DEBUG, s, "connection closed by peer");
	gw_session_free(s);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct gw_session *s = arg;
	if (s->reaping) {
		gw_session_free(s);
		return;
	}
	if (s->state == GW_S_TLS_HANDSHAKE) {
		gw_slog(GW_LOG_INFO, s, "TLS handshake not finished within %d s: closed",
		        s->w->conf->tls_handshake_timeout);
		gw_session_free(s);
		return;
	}
	if (s->state == GW_S_AWAIT_HELLO) {
		gw_session_error(s, QS_E_TIMEOUT, "no HELLO within %d s",
		                 s->w->conf->hello_timeout);
		return;
	}
	if (s->state == GW_S_CLOSING) {
		size_t queued = evbuffer_get_length(bufferevent_get_output(s->bev));
		if (queued)
			gw_slog(GW_LOG_WARN, s,
			        "closing a peer that does not read (%zu bytes queued)", queued);
		gw_session_free(s);
	}
	/* WELCOMING past the deadline: the store answers (or fails) soon. */
}

char gw_session_empty[1];

void gw_session_accept(struct gw_worker *w, int fd, const char *peer, const char *ip)
{
	struct gw_session *s = calloc(1, sizeof(*s));
	if (s)
		s->primary_sent = gw_session_empty;
	struct bufferevent *bev = NULL;
	/* Responses are small frames written as they are ready: Nagle would hold
	 * an UPLOAD_ACK behind the agent's delayed ACK. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (s && w->wc->tls && w->tls) {
		SSL *ssl = gw_tls_ssl(w->tls);
		if (ssl)
			bev = bufferevent_openssl_socket_new(
			    w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (bev)
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
		else if (ssl)
			SSL_free(ssl);
	} else if (s && !w->wc->tls) {
		bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!s || !bev) {
		free(s);
		if (bev)
			bufferevent_free(bev);
		else
			evutil_closesocket(fd);
		return;
	}
	s->w = w;
	s->bev = bev;
	s->state = w->wc->tls ? GW_S_TLS_HANDSHAKE : GW_S_AWAIT_HELLO;
	s->since_ms = gw_wall_ms();
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	if (getrandom(&s->id, sizeof(s->id), 0) != sizeof(s->id))
		s->id = (uint64_t)s->since_ms ^ (uint64_t)(uintptr_t)s;
	s->id &= 0x7fffffffffffffffULL; /* a positive bigint */
	if (!(s->timer = evtimer_new(w->base, on_timer, s))) {
		bufferevent_free(bev);
		free(s);
		return;
	}
	struct gw_session_table *t = w->sessions;
	t->n_pending_hello++;
	HASH_FIND_STR(t->pending_by_ip, ip, s->ipc);
	if (!s->ipc && (s->ipc = calloc(1, sizeof(*s->ipc)))) {
		snprintf(s->ipc->ip, sizeof(s->ipc->ip), "%s", ip);
		HASH_ADD_STR(t->pending_by_ip, ip, s->ipc);
	}
	if (s->ipc)
		s->ipc->n++;
	TAILQ_INSERT_TAIL(&t->all, s, link);
	gw_count(w, sessions_accepted, 1);

	const struct gw_config *conf = w->conf;
	bufferevent_setcb(bev, on_read, on_write, on_event, s);
	/* A whole frame must fit below the high watermark; until WELCOME the
	 * largest frame is a HELLO (what follows it waits in the kernel). */
	bufferevent_setwatermark(bev, EV_READ, 0, read_high(qs_frame_limit(conf->max_frame, 0)));
	struct timeval idle = {3 * conf->heartbeat, 0};
	bufferevent_set_timeouts(bev, &idle, &idle);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	/* Load shedding: on a TLS worker the ERROR is queued and goes out once
	 * the handshake has made a channel. */
	if (w->stopping || w->drained) {
		gw_session_error(s, QS_E_DRAINING, "worker %s is draining", w->wc->name);
		return;
	}
	/* Not welcomed yet: a connection counts until WELCOME is written, so a
	 * HELLO the store is slow to check does not free its place. */
	if (t->n_pending_hello > conf->max_pending_hello) {
		gw_count(w, refused_pending_hello, 1);
		gw_session_error(s, QS_E_OVERLOADED, "too many connections not welcomed yet on %s",
		                 w->wc->name);
		return;
	}
	if (s->ipc && s->ipc->n > conf->max_pending_hello_per_ip) {
		gw_count(w, refused_pending_hello_per_ip, 1);
		gw_session_error(s, QS_E_OVERLOADED,
		                 "too many connections not welcomed yet from %s", ip);
		return;
	}
	struct timeval deadline = {
	    s->state == GW_S_TLS_HANDSHAKE ? conf->tls_handshake_timeout : conf->hello_timeout, 0};
	evtimer_add(s->timer, &deadline);
}

void gw_session_wait(struct gw_session *s, struct st_op *op)
{
	s->op = op;
	if (s->state == GW_S_AWAIT_HELLO)
		set_state(s, GW_S_WELCOMING);
	else if (s->state == GW_S_READY)
		set_state(s, GW_S_BUSY);
}

void gw_session_wait_upload(struct gw_session *s)
{
	if (s->state == GW_S_READY && s->n_uploads > 0)
		set_state(s, GW_S_BUSY);
}

/* Welcomed: no deadline until it closes, and no timer (an idle session's
 * memory: arm_timer makes one again for the close). */
void gw_session_welcomed(struct gw_session *s)
{
	event_free(s->timer);
	s->timer = NULL;
}

/* ---- the worker's session table ---- */

struct gw_session_table *gw_session_table_new(void)
{
	struct gw_session_table *t = calloc(1, sizeof(*t));
	if (t)
		TAILQ_INIT(&t->all);
	return t;
}

void gw_session_table_free(struct gw_session_table *t)
{
	free(t);
}

int gw_session_free_all(struct gw_worker *w)
{
	struct gw_session *s;
	int n = 0;
	while ((s = TAILQ_FIRST(&w->sessions->all))) {
		gw_session_free(s);
		n++;
	}
	return n;
}

int gw_session_any(const struct gw_worker *w)
{
	return !TAILQ_EMPTY(&w->sessions->all);
}

int gw_session_connections(const struct gw_worker *w)
{
	return w->sessions->n_sessions + w->sessions->n_pending_hello;
}

void gw_session_tally(const struct gw_worker *w, int *sessions, int *on_primary)
{
	*sessions = *on_primary = 0;
	for (struct gw_session *s = w->sessions->by_agent; s; s = s->hh.next) {
		(*sessions)++;
		*on_primary += s->on_primary;
	}
}

struct gw_session *gw_session_find(struct gw_worker *w, const char *agent)
{
	struct gw_session *s = NULL;
	HASH_FIND_STR(w->sessions->by_agent, agent, s);
	return s;
}

void gw_session_each_agent(struct gw_worker *w, int (*fn)(struct gw_session *s, void *arg),
                           void *arg)
{
	for (struct gw_session *s = w->sessions->by_agent; s; s = s->hh.next)
		if (fn(s, arg))
			return;
}

void gw_session_register(struct gw_session *s)
{
	struct gw_worker *w = s->w;
	struct gw_session *old = gw_session_find(w, s->agent);
	if (old) {
		gw_session_unregister(old);
		gw_session_error(old, QS_E_SUPERSEDED,
		                 "a newer session of agent %s took over on worker %s", s->agent,
		                 w->wc->name);
	}
	HASH_ADD_STR(w->sessions->by_agent, agent, s);
	s->in_agent_map = 1;
}

void gw_session_unregister(struct gw_session *s)
{
	HASH_DEL(s->w->sessions->by_agent, s);
	s->in_agent_map = 0;
}

const char *gw_session_agent(const struct gw_session *s)
{
	return s->agent;
}

const uint8_t *gw_session_token_sha256(const struct gw_session *s)
{
	return s->token_sha256;
}

int gw_session_closing(const struct gw_session *s)
{
	return s->state == GW_S_CLOSING;
}

/* ---- drain ---- */

static int awaits_reassign(const struct gw_worker *w, const struct gw_session *s)
{
	return s->primary_sent[0] == 0 && strcmp(s->primary, w->wc->name) == 0 &&
	       (s->state == GW_S_READY || s->state == GW_S_BUSY);
}

void gw_session_drain(struct gw_worker *w, int moving, const char *why)
{
	for (struct gw_session *s = TAILQ_FIRST(&w->sessions->all), *next; s; s = next) {
		next = TAILQ_NEXT(s, link);
		if (s->reassign_timer)
			continue; /* told already */
		if (moving && awaits_reassign(w, s))
			s->awaiting_reassign = 1;
		else
			gw_session_error(s, QS_E_DRAINING, "worker %s is %s", w->wc->name, why);
	}
}

void gw_session_end_reassign_wait(struct gw_worker *w, const char *why)
{
	for (struct gw_session *s = TAILQ_FIRST(&w->sessions->all), *next; s; s = next) {
		next = TAILQ_NEXT(s, link);
		if (s->awaiting_reassign) {
			s->awaiting_reassign = 0;
			gw_session_error(s, QS_E_DRAINING, "worker %s is %s", w->wc->name, why);
		}
	}
}

/* ---- the pool's registration (pool.c) ---- */

int gw_session_announceable(const struct gw_session *s)
{
	return !(s->state == GW_S_CLOSING || s->state == GW_S_WELCOMING || s->ticket);
}

void gw_session_claim_of(const struct gw_session *s, struct rt_claim *c)
{
	*c = (struct rt_claim){
	    .agent = s->agent,
	    .primary = s->primary,
	    .pinned = s->primary_sent[0] != 0,
	    .primary_as_sent = s->primary_sent,
	    .hint = s->primary, /* unpinned: the store's record */
	    .persist = s->persist,
	    .since_ms = s->since_ms,
	};
}

struct gw_ticket *gw_ticket_new(struct gw_session *s)
{
	struct gw_ticket *t = malloc(sizeof(*t));
	if (t) {
		t->s = s;
		s->ticket = t;
	}
	return t;
}

struct gw_session *gw_ticket_redeem(struct gw_ticket *t)
{
	struct gw_session *s = t->s;
	free(t);
	if (s)
		s->ticket = NULL;
	return s;
}

void gw_session_announced(struct gw_session *s, uint64_t epoch, const char *primary)
{
	s->epoch = epoch;
	/* Router-assigned, and its worker is gone meanwhile: the router chose
	 * again. */
	if (!s->primary_sent[0] && primary[0] && strcmp(primary, s->primary) != 0)
		gw_session_reassign(s, primary);
}

void gw_session_announce_refused(struct gw_session *s)
{
	if (s->state == GW_S_CLOSING)
		return;
	gw_session_unregister(s);
	s->epoch = 0; /* the agent's Redis entry is the other session's */
	gw_session_error(s, QS_E_INTERNAL,
	                 "the pool's routing names another session of agent %s (Redis came back "
	                 "without this one's claim): reconnect",
	                 s->agent);
}

/* ---- REASSIGN (protocol.md) ---- */

static void on_reassign_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct gw_session *s = arg;
	if (s->state == GW_S_CLOSING)
		return;
	if (gw_session_owes(s)) { /* owed a response: it goes first */
		struct timeval tv = {1, 0};
		evtimer_add(s->reassign_timer, &tv);
		return;
	}
	gw_slog(GW_LOG_INFO, s, "closed 5 s after REASSIGN");
	enter_closing(s);
}

void gw_session_reassign(struct gw_session *s, const char *primary)
{
	struct gw_worker *w = s->w;
	if (!s->primary_sent[0] && s->state == GW_S_WELCOMING) {
		/* The router moved the agent while its HELLO was under way: the
		 * WELCOME (already made) names the old primary; REASSIGN follows it
		 * (issue 18: else the agent would wait for a primary that is gone). */
		free(s->reassign_to);
		if (!(s->reassign_to = strdup(primary)))
			gw_slog(GW_LOG_WARN, s, "out of memory: the move to %s is not sent",
			        primary);
		return;
	}
	if (s->primary_sent[0] || (s->state != GW_S_READY && s->state != GW_S_BUSY) ||
	    s->reassign_timer || !w->pool)
		return;
	const struct rt_view *v = rt_pool_view(w->pool);
	struct gw_known_worker *ws = calloc((size_t)v->n + 1, sizeof(*ws));
	struct qs_server *servers = calloc((size_t)v->n + 1, sizeof(*servers));
	char(*streams)[320] = calloc((size_t)v->n + 1, sizeof(*streams));
	s->reassign_timer = evtimer_new(w->base, on_reassign_deadline, s);
	if (!ws || !servers || !streams || !s->reassign_timer) {
		free(ws), free(servers), free(streams);
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	for (int i = 0; i < v->n; i++) {
		snprintf(ws[i].name, sizeof(ws[i].name), "%s", v->w[i].name);
		snprintf(ws[i].advertise, sizeof(ws[i].advertise), "%s", v->w[i].address);
		ws[i].tls = v->w[i].tls;
	}
	struct qs_frame f = {.type = QS_REASSIGN};
	f.u.reassign.primary = qs_str_c(primary);
	f.u.reassign.n_servers =
	    (uint16_t)gw_server_list(w, s->agent, primary, ws, v->n, servers, streams);
	f.u.reassign.servers = servers;
	int rc = gw_session_send(s, &f);
	free(ws), free(servers), free(streams);
	if (rc != 0) {
		gw_session_error(s, QS_E_INTERNAL, "cannot encode REASSIGN");
		return;
	}
	gw_slog(GW_LOG_INFO, s, "REASSIGN: primary %s -> %s", s->primary, primary);
	gw_count(w, reassigned, 1);
	int now_on = strcmp(primary, w->wc->name) == 0;
	if (s->gauged)
		atomic_fetch_add(&w->gauges.on_primary, now_on - s->on_primary);
	snprintf(s->primary, sizeof(s->primary), "%s", primary);
	s->on_primary = now_on;
	s->awaiting_reassign = 0;
	struct timeval tv = {5, 0};
	evtimer_add(s->reassign_timer, &tv);
}
