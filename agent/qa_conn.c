/* One connection to one stream: see qa_conn.h. */
#include "agent/qa_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "agent/qa_log.h"
#include "common/clock.h"

static void conn_set_state(struct qa_conn *c, enum qa_conn_state state)
{
	c->state = state;
}

/* Plain TCP. MSG_NOSIGNAL: a peer that went away is an EPIPE, not a SIGPIPE. */
static ssize_t tcp_read(struct qa_conn *c, void *buf, size_t n)
{
	return recv(c->fd, buf, n, 0);
}

static ssize_t tcp_write(struct qa_conn *c, const void *buf, size_t n)
{
	return send(c->fd, buf, n, MSG_NOSIGNAL);
}

static void tcp_close(struct qa_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static const struct qa_conn_io tcp_io = {"tcp", tcp_read, tcp_write, tcp_close};

void qa_conn_init(struct qa_conn *c)
{
	memset(c, 0, sizeof *c);
	c->fd = -1;
	c->cancel_fd = -1;
	c->max_frame = QS_DEFAULT_MAX_FRAME;
	conn_set_state(c, QA_CONN_CLOSED);
}

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = gw_mono_ms();
	return now >= deadline ? 0 : (int)(deadline - now);
}

/* A wait ended because cancel_fd became readable or stop_at_ms came. When no
 * byte of a frame was moved, both directions are still in step and the
 * connection stays open (for a BYE). */
static int cancelled(struct qa_error *e)
{
	return qa_error_set(e, QA_FAIL_STOPPED, "stopped");
}

enum wait_result { WAIT_ERROR = -1, WAIT_TIMEOUT = 0, WAIT_READY = 1, WAIT_CANCELLED = 2 };

/* Waits for events on fd (c's socket, or one being connected) until
 * deadline, watching c's cancel_fd and stop_at_ms. */
static enum wait_result wait_fd(const struct qa_conn *c, int fd, short events, uint64_t deadline)
{
	const int stop_first = c->stop_at_ms != 0 && c->stop_at_ms <= deadline;
	if (stop_first)
		deadline = c->stop_at_ms;
	struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = c->cancel_fd, .events = POLLIN}};
	const nfds_t n = c->cancel_fd >= 0 ? 2 : 1;
	int rc;
	do
		rc = poll(p, n, remaining_ms(deadline));
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return WAIT_ERROR;
	if (rc == 0)
		return stop_first ? WAIT_CANCELLED : WAIT_TIMEOUT;
	if (n == 2 && p[1].revents != 0)
		return WAIT_CANCELLED;
	return WAIT_READY;
}

/* TLS (OpenSSL) over the same non-blocking socket. io_ctx is the SSL; its
 * context is freed with it. WANT_READ/WANT_WRITE map to EAGAIN, so the
 * callers' waits work unchanged (a renegotiation-free TLS 1.2/1.3 peer only
 * wants the direction being used, apart from the handshake below). */
static ssize_t tls_map(SSL *ssl, int r)
{
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0)
			return 0; /* EOF without close_notify */
		return -1;
	default:
		errno = EPROTO;
		return -1;
	}
}

static ssize_t tls_read(struct qa_conn *c, void *buf, size_t n)
{
	int r = SSL_read(c->io_ctx, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	return r > 0 ? r : tls_map(c->io_ctx, r);
}

static ssize_t tls_write(struct qa_conn *c, const void *buf, size_t n)
{
	int r = SSL_write(c->io_ctx, buf, n > INT32_MAX ? INT32_MAX : (int)n);
	return r > 0 ? r : tls_map(c->io_ctx, r);
}

static void tls_close(struct qa_conn *c)
{
	if (c->io_ctx) {
		SSL_shutdown(c->io_ctx); /* best effort: non-blocking, one try */
		SSL_free(c->io_ctx);
	}
	c->io_ctx = NULL;
	tcp_close(c);
}

static const struct qa_conn_io tls_io = {"tls", tls_read, tls_write, tls_close};

int qa_conn_pending(const struct qa_conn *c)
{
	return c->io == &tls_io && c->io_ctx && SSL_pending(c->io_ctx) > 0;
}

/* The TLS handshake on a connected socket, verifying the chain against the
 * stream's trusted_certificates (else the system's store) and the host name
 * (or IP address). A failure is a failed attempt with OpenSSL's reason. */
static int tls_start(struct qa_conn *c, const struct qa_stream *s, uint64_t deadline,
                     struct qa_error *e)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return qa_error_set(e, QA_FAIL_SYSTEM, "TLS: cannot create a context");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int loaded = s->ca_file[0] ? SSL_CTX_load_verify_locations(ctx, s->ca_file, NULL)
	                           : SSL_CTX_set_default_verify_paths(ctx);
	if (loaded != 1) {
		SSL_CTX_free(ctx);
		return qa_error_set(e, QA_FAIL_CONNECT, "TLS: cannot load trusted certificates %s",
		                    s->ca_file[0] ? s->ca_file : "(system)");
	}
	SSL *ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (!ssl)
		return qa_error_set(e, QA_FAIL_SYSTEM, "TLS: cannot create a session");
	struct in6_addr a6;
	struct in_addr a4;
	int is_ip = inet_pton(AF_INET, s->host, &a4) == 1 || inet_pton(AF_INET6, s->host, &a6) == 1;
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
	if (is_ip) {
		X509_VERIFY_PARAM_set1_ip_asc(vp, s->host);
	} else {
		SSL_set_tlsext_host_name(ssl, s->host);
		SSL_set1_host(ssl, s->host);
	}
	SSL_set_fd(ssl, c->fd);
	c->io_ctx = ssl;
	c->io = &tls_io;
	for (;;) {
		ERR_clear_error();
		int r = SSL_connect(ssl);
		if (r == 1)
			return 0;
		int err = SSL_get_error(ssl, r);
		short ev = err == SSL_ERROR_WANT_READ    ? POLLIN
		           : err == SSL_ERROR_WANT_WRITE ? POLLOUT
		                                         : 0;
		if (ev) {
			enum wait_result w = wait_fd(c, c->fd, ev, deadline);
			if (w == WAIT_READY)
				continue;
			if (w == WAIT_CANCELLED)
				return cancelled(e);
			return qa_error_set(e, QA_FAIL_CONNECT, "TLS handshake timed out");
		}
		long vr = SSL_get_verify_result(ssl);
		if (vr != X509_V_OK)
			return qa_error_set(e, QA_FAIL_CONNECT,
			                    "TLS certificate verification failed: %s",
			                    X509_verify_cert_error_string(vr));
		char reason[256] = "connection closed during the handshake";
		unsigned long ec = ERR_get_error();
		if (ec)
			ERR_error_string_n(ec, reason, sizeof reason);
		return qa_error_set(e, QA_FAIL_CONNECT, "TLS handshake failed: %s", reason);
	}
}

/* One non-blocking connect to one address; 0 when connected, else errno
 * (ECANCELED when a stop was asked for first). */
static int connect_one(const struct qa_conn *c, const struct addrinfo *ai, uint64_t deadline,
                       int *fd_out)
{
	int fd =
	    socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return errno;
	int err = 0;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		if (errno != EINPROGRESS) {
			err = errno;
		} else {
			socklen_t len = sizeof err;
			switch (wait_fd(c, fd, POLLOUT, deadline)) {
			case WAIT_TIMEOUT:
				err = ETIMEDOUT;
				break;
			case WAIT_CANCELLED:
				err = ECANCELED;
				break;
			case WAIT_ERROR:
				err = errno;
				break;
			default:
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
					err = errno;
			}
		}
	}
	if (err != 0) {
		close(fd);
		return err;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	*fd_out = fd;
	return 0;
}

int qa_conn_open(struct qa_conn *c, const struct qa_stream *s, int timeout_ms, struct qa_error *e)
{
	qa_conn_close(c);
	if (qa_stream_format(s, c->peer, sizeof c->peer) < 0)
		c->peer[0] = '\0';

	const uint64_t deadline = gw_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	char port[8];
	snprintf(port, sizeof port, "%u", (unsigned)s->port);
	/* getaddrinfo blocks; for the command-line agent that is acceptable (the
	 * resolver has its own timeouts). A later event loop resolves elsewhere. */
	int gai = getaddrinfo(s->host, port, &hints, &res);
	if (gai != 0)
		return qa_error_set(e, QA_FAIL_CONNECT, "cannot resolve %s: %s", s->host,
		                    gai_strerror(gai));
	int err = ETIMEDOUT;
	int fd = -1;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		if (remaining_ms(deadline) == 0) {
			err = ETIMEDOUT;
			break;
		}
		err = connect_one(c, ai, deadline, &fd);
		if (err == 0 || err == ECANCELED)
			break;
	}
	freeaddrinfo(res);
	if (err != 0) {
		if (err == ECANCELED)
			return cancelled(e);
		if (err == ETIMEDOUT)
			return qa_error_set(e, QA_FAIL_CONNECT, "connect timed out after %d ms",
			                    timeout_ms);
		return qa_error_set(e, QA_FAIL_CONNECT, "connect failed: %s", strerror(err));
	}
	c->fd = fd;
	c->io = &tcp_io;
	c->max_frame = QS_DEFAULT_MAX_FRAME;
	if (s->tls && tls_start(c, s, deadline, e) != 0) {
		qa_conn_close(c);
		return -1;
	}
	conn_set_state(c, QA_CONN_OPEN);
	return 0;
}

int qa_conn_attach(struct qa_conn *c, int fd, const struct qa_conn_io *io, const char *peer,
                   struct qa_error *e)
{
	qa_conn_close(c);
	snprintf(c->peer, sizeof c->peer, "%s", peer != NULL ? peer : "");
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
		int err = errno;
		close(fd);
		return qa_error_set(e, QA_FAIL_SYSTEM, "cannot make the socket non-blocking: %s",
		                    strerror(err));
	}
	c->fd = fd;
	c->io = io != NULL ? io : &tcp_io;
	c->max_frame = QS_DEFAULT_MAX_FRAME;
	conn_set_state(c, QA_CONN_OPEN);
	return 0;
}

/* Fails the connection: from here on only close is allowed. */
static int broken(struct qa_conn *c, struct qa_error *e, enum qa_fail kind, const char *what)
{
	conn_set_state(c, QA_CONN_BROKEN);
	return qa_error_set(e, kind, "%s", what);
}

static int write_all(struct qa_conn *c, const uint8_t *p, size_t n, uint64_t deadline,
                     struct qa_error *e)
{
	const uint8_t *const start = p;
	while (n > 0) {
		ssize_t w = c->io->write(c, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			enum wait_result rc = wait_fd(c, c->fd, POLLOUT, deadline);
			if (rc == WAIT_CANCELLED && p == start)
				return cancelled(e);
			if (rc == WAIT_CANCELLED)
				/* Half a frame is out: only close remains. */
				return broken(c, e, QA_FAIL_STOPPED, "stopped");
			if (rc == WAIT_TIMEOUT)
				return broken(c, e, QA_FAIL_IO, "write timed out");
			if (rc == WAIT_ERROR)
				return broken(c, e, QA_FAIL_IO, strerror(errno));
			continue;
		}
		char why[256];
		snprintf(why, sizeof why, "connection lost: %s", strerror(w < 0 ? errno : EPIPE));
		return broken(c, e, QA_FAIL_IO, why);
	}
	return 0;
}

int qa_conn_send(struct qa_conn *c, const struct qs_frame *f, int timeout_ms, struct qa_error *e)
{
	if (c->state != QA_CONN_OPEN)
		return qa_error_set(e, QA_FAIL_IO, "connection is not open");
	c->wbuf.len = 0;
	if (qs_encode(f, &c->wbuf) != 0)
		return qa_error_set(e, QA_FAIL_SYSTEM, "cannot encode %s frame",
		                    qs_type_name(f->type) ? qs_type_name(f->type) : "?");
	return write_all(c, c->wbuf.data, c->wbuf.len, gw_mono_ms() + (uint64_t)timeout_ms, e);
}

/* The header of the frame being read is complete: check it, make room. */
static int take_header(struct qa_conn *c, struct qa_error *e)
{
	uint32_t limit = c->max_frame < QA_CONN_FRAME_CAP ? c->max_frame : QA_CONN_FRAME_CAP;
	int rc = qs_check_header(c->rhdr, limit, &c->rlen);
	if (rc != QS_OK) {
		char why[128];
		snprintf(why, sizeof why, "server sent a frame with a bad length (%s)",
		         qs_err_name(rc));
		return broken(c, e, QA_FAIL_PROTOCOL, why);
	}
	if (c->rlen > c->rcap) {
		uint8_t *nb = realloc(c->rbuf, c->rlen);
		if (nb == NULL)
			return broken(c, e, QA_FAIL_SYSTEM, "out of memory");
		c->rbuf = nb;
		c->rcap = c->rlen;
	}
	return 0;
}

static int decode_frame(struct qa_conn *c, struct qs_frame *f, struct qa_error *e)
{
	uint32_t limit = c->max_frame < QA_CONN_FRAME_CAP ? c->max_frame : QA_CONN_FRAME_CAP;
	/* The agent never receives UPLOAD: no batch limit applies to what it reads. */
	struct qs_limits lim = {.max_frame = limit, .max_batch = UINT16_MAX};
	const char *why = NULL;
	int rc = qs_decode(c->rbuf, c->rlen, &lim, f, &why);
	if (rc != QS_OK) {
		char msg[256];
		snprintf(msg, sizeof msg, "server sent a malformed frame (type 0x%02x): %s",
		         (unsigned)c->rbuf[0], why ? why : qs_err_name(rc));
		return broken(c, e, QA_FAIL_PROTOCOL, msg);
	}
	return 0;
}

int qa_conn_try_recv(struct qa_conn *c, struct qs_frame *f, struct qa_error *e)
{
	if (c->state != QA_CONN_OPEN)
		return qa_error_set(e, QA_FAIL_IO, "connection is not open");
	for (;;) {
		/* Read only what the current frame still needs, never past it: the
		 * socket's readiness then tells the whole truth to a poll loop. */
		uint8_t *dst;
		size_t need;
		if (c->rhave < QS_HEADER_LEN) {
			dst = c->rhdr + c->rhave;
			need = QS_HEADER_LEN - c->rhave;
		} else {
			dst = c->rbuf + (c->rhave - QS_HEADER_LEN);
			need = QS_HEADER_LEN + (size_t)c->rlen - c->rhave;
		}
		if (need == 0)
			break;
		ssize_t r = c->io->read(c, dst, need);
		if (r > 0) {
			c->rhave += (size_t)r;
			if (c->rhave == QS_HEADER_LEN && take_header(c, e) != 0)
				return -1;
			continue;
		}
		if (r == 0)
			return broken(c, e, QA_FAIL_IO,
			              c->rhave == 0 ? "connection closed by the server"
			                            : "connection closed inside a frame");
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		char why[256];
		snprintf(why, sizeof why, "connection lost: %s", strerror(errno));
		return broken(c, e, QA_FAIL_IO, why);
	}
	c->rhave = 0;
	return decode_frame(c, f, e) == 0 ? 1 : -1;
}

int qa_conn_recv(struct qa_conn *c, struct qs_frame *f, int timeout_ms, struct qa_error *e)
{
	const uint64_t deadline = gw_mono_ms() + (uint64_t)timeout_ms;
	for (;;) {
		int rc = qa_conn_try_recv(c, f, e);
		if (rc != 0)
			return rc == 1 ? 0 : -1;
		switch (wait_fd(c, c->fd, POLLIN, deadline)) {
		case WAIT_READY:
			continue;
		case WAIT_CANCELLED:
			/* A partial frame stays buffered; writing is still in step. */
			return cancelled(e);
		case WAIT_TIMEOUT:
			return broken(c, e, QA_FAIL_IO, "no answer in time (read timed out)");
		default:
			return broken(c, e, QA_FAIL_IO, strerror(errno));
		}
	}
}

void qa_conn_close(struct qa_conn *c)
{
	if (c->io != NULL)
		c->io->close(c);
	else if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->io = NULL;
	free(c->rbuf);
	c->rbuf = NULL;
	c->rcap = 0;
	c->rhave = 0;
	c->rlen = 0;
	qs_buf_free(&c->wbuf);
	conn_set_state(c, QA_CONN_CLOSED);
}
