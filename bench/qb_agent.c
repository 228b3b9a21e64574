/* One simulated agent's QASync v1 connection; see qb_agent.h.
 *
 * Many thousands of these share one event loop, so an agent is kept to its
 * bufferevent and a few bytes of state: the HELLO is encoded straight into
 * the bufferevent's output at creation (no copy of the configuration is
 * kept), frames are decoded in place from the input buffer, and encoding
 * uses one scratch buffer per thread. Every agent of a loop belongs to that
 * loop's thread.
 *
 * Lifetime: on_close is called at most once, as the last thing the agent
 * does in that callback chain; the bufferevent (socket, SSL) is freed before
 * it, so a closed agent holds only its struct until qb_agent_free. A
 * qb_agent_free called from inside one of the agent's own callbacks is
 * deferred until that callback returns. */
#include "bench/qb_agent.h"

#include "bench/qb.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum qb_agent_state {
	QB_A_HELLO,  /* HELLO queued or sent; waiting for WELCOME */
	QB_A_READY,  /* WELCOME received: frames go to on_frame */
	QB_A_CLOSED, /* on_close called (or about to be); bev freed */
};

struct qb_agent {
	struct bufferevent *bev; /* NULL once closed */
	struct qb_agent_cbs cbs; /* copied: the caller's struct may be short-lived */
	void *user;
	uint8_t state;     /* enum qb_agent_state */
	uint8_t in_cb;     /* inside one of this agent's libevent callbacks */
	uint8_t free_late; /* qb_agent_free was called during in_cb */
	uint8_t connected; /* connect (and TLS handshake) done */
};

static const struct qs_limits limits = {QS_DEFAULT_MAX_FRAME, QS_DEFAULT_MAX_BATCH};

/* Scratch space for encoding, one per thread (an agent never leaves its loop). */
static _Thread_local struct qs_buf scratch;
static _Thread_local char why_buf[256];

static void release_bev(struct qb_agent *a)
{
	if (a->bev) {
		bufferevent_free(a->bev); /* closes the socket and frees the SSL */
		a->bev = NULL;
	}
}

/* Ends the connection and tells the owner once. The caller must not touch
 * the agent after this returns (on_close may have freed it). */
static void close_agent(struct qb_agent *a, const char *why)
{
	if (a->state == QB_A_CLOSED)
		return;
	a->state = QB_A_CLOSED;
	release_bev(a);
	if (a->cbs.on_close)
		a->cbs.on_close(a, why);
}

static void ssl_errors(char *out, size_t n)
{
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, out, n);
	else
		snprintf(out, n, "%s", strerror(errno));
	ERR_clear_error();
}

static void handle_frame(struct qb_agent *a, const struct qs_frame *f)
{
	switch (f->type) {
	case QS_PING: {
		struct qs_frame pong = {.type = QS_PONG};
		pong.u.nonce = f->u.nonce;
		if (qb_agent_send(a, &pong) != 0)
			close_agent(a, "cannot queue PONG");
		return;
	}
	case QS_ERROR:
		snprintf(why_buf, sizeof(why_buf), "ERROR %u %s: %.*s", f->u.error.code,
		         qs_err_name(f->u.error.code), (int)f->u.error.text.len,
		         f->u.error.text.ptr);
		close_agent(a, why_buf);
		return;
	case QS_WELCOME:
		if (a->state != QB_A_HELLO) {
			close_agent(a, "second WELCOME");
			return;
		}
		a->state = QB_A_READY;
		if (a->cbs.on_welcome)
			a->cbs.on_welcome(a, &f->u.welcome);
		return;
	default:
		if (a->state != QB_A_READY) {
			snprintf(why_buf, sizeof(why_buf), "%s before WELCOME",
			         qs_type_name(f->type) ? qs_type_name(f->type) : "frame");
			close_agent(a, why_buf);
			return;
		}
		if (a->cbs.on_frame)
			a->cbs.on_frame(a, f);
	}
}

/* Decodes and dispatches every whole frame in the input buffer; stops at
 * a close or a deferred free. The caller holds in_cb. */
static void read_frames(struct qb_agent *a)
{
	if (!a->bev)
		return;
	struct evbuffer *in = bufferevent_get_input(a->bev);
	while (a->state != QB_A_CLOSED && !a->free_late) {
		uint8_t hdr[QS_HEADER_LEN];
		size_t have = evbuffer_get_length(in);
		if (have < QS_HEADER_LEN)
			break;
		evbuffer_copyout(in, hdr, QS_HEADER_LEN);
		uint32_t len;
		int rc = qs_check_header(hdr, limits.max_frame, &len);
		if (rc != QS_OK) {
			snprintf(why_buf, sizeof(why_buf), "bad frame header from server: %s",
			         qs_err_name(rc));
			close_agent(a, why_buf);
			break;
		}
		if (have < QS_HEADER_LEN + (size_t)len)
			break;
		const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(QS_HEADER_LEN + (size_t)len));
		if (!p) {
			close_agent(a, "out of memory");
			break;
		}
		struct qs_frame f;
		const char *why = NULL;
		rc = qs_decode(p + QS_HEADER_LEN, len, &limits, &f, &why);
		if (rc != QS_OK) {
			snprintf(why_buf, sizeof(why_buf), "undecodable frame from server: %s",
			         why ? why : qs_err_name(rc));
			close_agent(a, why_buf);
			break;
		}
		handle_frame(a, &f);
		qs_frame_release(&f);
		/* The frame pointed into the buffer: drain only now, and only if
		 * the connection (and so the buffer) still exists. */
		if (a->state == QB_A_CLOSED)
			break;
		evbuffer_drain(in, QS_HEADER_LEN + (size_t)len);
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct qb_agent *a = arg;
	a->in_cb = 1;
	read_frames(a);
	SSL *ssl = a->bev ? bufferevent_openssl_get_ssl(a->bev) : NULL;
	/* SSL_MODE_RELEASE_BUFFERS leaves the 16 KiB write buffer that the
	 * post-handshake messages (TLS 1.3 session tickets) made SSL_read set
	 * up; SSL_free_buffers drops both buffers when nothing is pending in
	 * them (it does nothing otherwise). An idle TLS agent: about 18 KiB of
	 * OpenSSL's memory instead of 34 KiB. */
	if (ssl)
		SSL_free_buffers(ssl);
	a->in_cb = 0;
	if (a->free_late)
		qb_agent_free(a);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct qb_agent *a = arg;
	if (what & BEV_EVENT_CONNECTED) {
		a->connected = 1;
		return;
	}
	a->in_cb = 1;
	if (what & BEV_EVENT_EOF) {
		/* Frames that arrived with the EOF are still owed to the owner. */
		int e = EVUTIL_SOCKET_ERROR();
		read_frames(a);
		if (!a->free_late && !a->connected) { /* a TLS connect that failed */
			snprintf(why_buf, sizeof(why_buf), "connection failed: %s",
			         e ? evutil_socket_error_to_string(e)
			           : "closed before the handshake");
			close_agent(a, why_buf);
		} else if (!a->free_late) {
			close_agent(a, "connection closed by server");
		}
	} else if (what & BEV_EVENT_ERROR) {
		char err[160];
		int e = EVUTIL_SOCKET_ERROR();
		/* libevent queues SSL_get_error's code first, then OpenSSL's
		 * error queue: the last library error says the most. */
		unsigned long ssl_err = 0, code;
		while ((code = bufferevent_get_openssl_error(bev)) != 0)
			if (ERR_GET_LIB(code) != 0)
				ssl_err = code;
		if (ssl_err)
			ERR_error_string_n(ssl_err, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "%s",
			         e ? evutil_socket_error_to_string(e) : "error");
		snprintf(why_buf, sizeof(why_buf), "connection error: %s", err);
		close_agent(a, why_buf);
	} else if (what & BEV_EVENT_TIMEOUT) {
		close_agent(a, "timeout");
	}
	a->in_cb = 0;
	if (a->free_late)
		qb_agent_free(a);
}

/* A non-blocking socket, bound to src_ip if given, and the address to
 * connect it to (bufferevent_socket_connect does, so that a failed connect
 * is reported as such and nothing is written before it succeeds). */
static int make_socket(const struct qb_agent_conf *c, struct sockaddr_storage *dstp,
                       socklen_t *dlenp, char *err, size_t errlen)
{
	struct sockaddr_storage dst = {0}, src = {0};
	socklen_t dlen, slen = 0;
	struct sockaddr_in *d4 = (struct sockaddr_in *)&dst;
	struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dst;
	if (inet_pton(AF_INET, c->host, &d4->sin_addr) == 1) {
		d4->sin_family = AF_INET;
		d4->sin_port = htons((uint16_t)c->port);
		dlen = sizeof(*d4);
	} else if (inet_pton(AF_INET6, c->host, &d6->sin6_addr) == 1) {
		d6->sin6_family = AF_INET6;
		d6->sin6_port = htons((uint16_t)c->port);
		dlen = sizeof(*d6);
	} else {
		snprintf(err, errlen, "host %s is not a numeric address", c->host);
		return -1;
	}
	if (c->src_ip) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&src;
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&src;
		if (dst.ss_family == AF_INET && inet_pton(AF_INET, c->src_ip, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			slen = sizeof(*s4);
		} else if (dst.ss_family == AF_INET6 &&
		           inet_pton(AF_INET6, c->src_ip, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			slen = sizeof(*s6);
		} else {
			snprintf(err, errlen,
			         "source %s is not a numeric address of the host's family",
			         c->src_ip);
			return -1;
		}
	}
	int fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (slen) {
		/* The port is picked at connect time, per destination: many more
		 * connections per source address than ephemeral ports. */
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&src, slen) != 0) {
			snprintf(err, errlen, "bind %s: %s", c->src_ip, strerror(errno));
			close(fd);
			return -1;
		}
	}
	*dstp = dst;
	*dlenp = dlen;
	return fd;
}

struct qb_agent *qb_agent_new(struct event_base *base, const struct qb_agent_conf *c,
                              const struct qb_agent_cbs *cbs, void *user)
{
	/* A write to a connection the server reset (or a connect that
	 * failed) must be an error event, not SIGPIPE killing the bench. */
	static bool sigpipe_ignored;
	if (!sigpipe_ignored) {
		signal(SIGPIPE, SIG_IGN);
		sigpipe_ignored = true;
	}
	char err[200];
	struct qb_agent *a = calloc(1, sizeof(*a));
	if (!a) {
		fprintf(stderr, "qabench: out of memory\n");
		return NULL;
	}
	a->cbs = *cbs;
	a->user = user;
	a->state = QB_A_HELLO;
	struct sockaddr_storage dst;
	socklen_t dlen;
	int fd = make_socket(c, &dst, &dlen, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "qabench: agent %s: %s\n", c->agent_id, err);
		free(a);
		return NULL;
	}
	if (c->tls) {
		SSL *ssl = SSL_new(c->tls);
		if (!ssl) {
			ssl_errors(err, sizeof(err));
			fprintf(stderr, "qabench: agent %s: SSL_new: %s\n", c->agent_id, err);
			close(fd);
			free(a);
			return NULL;
		}
		/* The handshake starts once the connect below has finished. */
		a->bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
		                                        BEV_OPT_CLOSE_ON_FREE);
		if (a->bev) /* a peer closing without close_notify is an EOF, not an error */
			bufferevent_openssl_set_allow_dirty_shutdown(a->bev, 1);
		else
			SSL_free(ssl);
	} else {
		a->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!a->bev) {
		fprintf(stderr, "qabench: agent %s: cannot create a bufferevent\n", c->agent_id);
		close(fd);
		free(a);
		return NULL;
	}
	bufferevent_setcb(a->bev, on_read, NULL, on_event, a);
	if (bufferevent_socket_connect(a->bev, (struct sockaddr *)&dst, (int)dlen) != 0) {
		fprintf(stderr, "qabench: agent %s: connect %s:%d: %s\n", c->agent_id, c->host,
		        c->port, strerror(errno));
		release_bev(a);
		free(a);
		return NULL;
	}
	struct qs_frame hello = {.type = QS_HELLO};
	hello.u.hello.version = QS_VERSION;
	hello.u.hello.agent_id = qs_str_c(c->agent_id);
	hello.u.hello.token = qs_str_c(c->token ? c->token : "");
	hello.u.hello.primary = qs_str_c(c->primary ? c->primary : "");
	hello.u.hello.flags = c->persist ? QS_FLAG_PERSIST : 0;
	hello.u.hello.now_ms = (uint64_t)gw_wall_ms();
	if (qb_agent_send(a, &hello) != 0 || bufferevent_enable(a->bev, EV_READ | EV_WRITE) != 0) {
		fprintf(stderr, "qabench: agent %s: cannot queue HELLO\n", c->agent_id);
		release_bev(a);
		free(a);
		return NULL;
	}
	return a;
}

int qb_agent_send(struct qb_agent *a, const struct qs_frame *f)
{
	if (!a->bev || a->state == QB_A_CLOSED)
		return -1;
	scratch.len = 0;
	if (qs_encode(f, &scratch) != 0)
		return -1;
	return bufferevent_write(a->bev, scratch.data, scratch.len) == 0 ? 0 : -1;
}

void *qb_agent_user(const struct qb_agent *a)
{
	return a->user;
}

int qb_agent_fetch(struct qb_agent *a)
{
	struct qs_frame f = {.type = QS_FETCH};
	f.u.fetch.max_count = QS_DEFAULT_MAX_BATCH;
	f.u.fetch.max_bytes = 1u << 20;
	return a ? qb_agent_send(a, &f) : -1;
}

int qb_agent_ack_all(struct qb_agent *a, const struct qs_deliver *d)
{
	uint64_t seqs[QS_DEFAULT_MAX_BATCH];
	uint16_t n = 0;
	for (uint16_t i = 0; i < d->count && n < QS_DEFAULT_MAX_BATCH; i++)
		seqs[n++] = d->msgs[i].seq;
	if (!n)
		return 0;
	struct qs_frame ack = {.type = QS_DELIVER_ACK};
	ack.u.deliver_ack.count = n;
	ack.u.deliver_ack.seqs = seqs;
	return a ? qb_agent_send(a, &ack) : -1;
}

int qb_stream_port(struct qs_str stream)
{
	char buf[512];
	size_t n = stream.len < sizeof(buf) - 1 ? stream.len : sizeof(buf) - 1;
	if (n) /* an empty str's ptr may be NULL */
		memcpy(buf, stream.ptr, n);
	buf[n] = 0;
	const char *p = strstr(buf, "port=");
	return p ? atoi(p + 5) : 0;
}

int qb_body_index(const struct qs_msg_in *m, uint32_t magic, uint32_t *idx)
{
	uint32_t got = 0;
	if (m->body.len < 8)
		return 0;
	memcpy(&got, m->body.ptr, 4);
	memcpy(idx, m->body.ptr + 4, 4);
	return got == magic;
}

void qb_agent_free(struct qb_agent *a)
{
	if (!a)
		return;
	if (a->in_cb) { /* the callback still uses it: freed when it returns */
		a->free_late = 1;
		a->state = QB_A_CLOSED; /* no on_close after an explicit free */
		return;
	}
	release_bev(a);
	free(a);
}

SSL_CTX *qb_tls_client_ctx(const char *ca_file)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* Thousands of idle sessions: no read/write buffers while idle. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			char err[200];
			ssl_errors(err, sizeof(err));
			fprintf(stderr, "qabench: cannot load CA %s: %s\n", ca_file, err);
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
}
