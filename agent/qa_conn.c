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

#include "agent/qa_log.h"

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
	c->max_frame = QS_DEFAULT_MAX_FRAME;
	conn_set_state(c, QA_CONN_CLOSED);
}

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = qa_mono_ms();
	return now >= deadline ? 0 : (int)(deadline - now);
}

/* One non-blocking connect to one address; 0 when connected, else errno. */
static int connect_one(const struct addrinfo *ai, uint64_t deadline, int *fd_out)
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
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int rc;
			do
				rc = poll(&p, 1, remaining_ms(deadline));
			while (rc < 0 && errno == EINTR);
			socklen_t len = sizeof err;
			if (rc == 0)
				err = ETIMEDOUT;
			else if (rc < 0)
				err = errno;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
				err = errno;
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
	if (s->tls)
		return qa_error_set(e, QA_FAIL_CONNECT, "TLS not supported yet");

	const uint64_t deadline = qa_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
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
		err = connect_one(ai, deadline, &fd);
		if (err == 0)
			break;
	}
	freeaddrinfo(res);
	if (err != 0) {
		if (err == ETIMEDOUT)
			return qa_error_set(e, QA_FAIL_CONNECT, "connect timed out after %d ms",
			                    timeout_ms);
		return qa_error_set(e, QA_FAIL_CONNECT, "connect failed: %s", strerror(err));
	}
	c->fd = fd;
	c->io = &tcp_io;
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

/* Waits for the socket; 1 ready, 0 timeout, -1 error. */
static int wait_fd(struct qa_conn *c, short events, uint64_t deadline)
{
	struct pollfd p = {.fd = c->fd, .events = events};
	int rc;
	do
		rc = poll(&p, 1, remaining_ms(deadline));
	while (rc < 0 && errno == EINTR);
	return rc;
}

static int write_all(struct qa_conn *c, const uint8_t *p, size_t n, uint64_t deadline,
                     struct qa_error *e)
{
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
			int rc = wait_fd(c, POLLOUT, deadline);
			if (rc == 0)
				return broken(c, e, QA_FAIL_IO, "write timed out");
			if (rc < 0)
				return broken(c, e, QA_FAIL_IO, strerror(errno));
			continue;
		}
		char why[256];
		snprintf(why, sizeof why, "connection lost: %s", strerror(w < 0 ? errno : EPIPE));
		return broken(c, e, QA_FAIL_IO, why);
	}
	return 0;
}

/* Reads exactly n bytes; at_start says whether a clean end of stream here
 * is a close between frames rather than inside one. */
static int read_all(struct qa_conn *c, uint8_t *p, size_t n, uint64_t deadline, int at_start,
                    struct qa_error *e)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = c->io->read(c, p + got, n - got);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == 0)
			return broken(c, e, QA_FAIL_IO,
			              at_start && got == 0 ? "connection closed by the server"
			                                   : "connection closed inside a frame");
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int rc = wait_fd(c, POLLIN, deadline);
			if (rc == 0)
				return broken(c, e, QA_FAIL_IO,
				              "no answer in time (read timed out)");
			if (rc < 0)
				return broken(c, e, QA_FAIL_IO, strerror(errno));
			continue;
		}
		char why[256];
		snprintf(why, sizeof why, "connection lost: %s", strerror(errno));
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
	return write_all(c, c->wbuf.data, c->wbuf.len, qa_mono_ms() + (uint64_t)timeout_ms, e);
}

int qa_conn_recv(struct qa_conn *c, struct qs_frame *f, int timeout_ms, struct qa_error *e)
{
	if (c->state != QA_CONN_OPEN)
		return qa_error_set(e, QA_FAIL_IO, "connection is not open");
	const uint64_t deadline = qa_mono_ms() + (uint64_t)timeout_ms;
	uint8_t hdr[QS_HEADER_LEN];
	if (read_all(c, hdr, sizeof hdr, deadline, 1, e) != 0)
		return -1;
	uint32_t len;
	uint32_t limit = c->max_frame < QA_CONN_FRAME_CAP ? c->max_frame : QA_CONN_FRAME_CAP;
	int rc = qs_check_header(hdr, limit, &len);
	if (rc != QS_OK) {
		char why[128];
		snprintf(why, sizeof why, "server sent a frame with a bad length (%s)",
		         qs_err_name(rc));
		return broken(c, e, QA_FAIL_PROTOCOL, why);
	}
	if (len > c->rcap) {
		uint8_t *nb = realloc(c->rbuf, len);
		if (nb == NULL)
			return broken(c, e, QA_FAIL_SYSTEM, "out of memory");
		c->rbuf = nb;
		c->rcap = len;
	}
	if (read_all(c, c->rbuf, len, deadline, 0, e) != 0)
		return -1;
	/* The agent never receives UPLOAD: no batch limit applies to what it reads. */
	struct qs_limits lim = {.max_frame = limit, .max_batch = UINT16_MAX};
	const char *why = NULL;
	rc = qs_decode(c->rbuf, len, &lim, f, &why);
	if (rc != QS_OK) {
		char msg[256];
		snprintf(msg, sizeof msg, "server sent a malformed frame (type 0x%02x): %s",
		         (unsigned)c->rbuf[0], why ? why : qs_err_name(rc));
		return broken(c, e, QA_FAIL_PROTOCOL, msg);
	}
	return 0;
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
	qs_buf_free(&c->wbuf);
	conn_set_state(c, QA_CONN_CLOSED);
}
