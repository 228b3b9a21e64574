/* See fake_qs.h. */
#include "tests/unit/fake_qs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

int fq_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *at = p;
	while (n > 0) {
		ssize_t w = send(fd, at, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		at += w;
		n -= (size_t)w;
	}
	return 0;
}

int fq_read_all(int fd, void *p, size_t n)
{
	uint8_t *at = p;
	while (n > 0) {
		ssize_t r = recv(fd, at, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		at += r;
		n -= (size_t)r;
	}
	return 0;
}

int fq_send(int fd, const struct qs_frame *f)
{
	struct qs_buf b = {0};
	int rc = qs_encode(f, &b) == 0 ? fq_write_all(fd, b.data, b.len) : -1;
	qs_buf_free(&b);
	return rc;
}

int fq_recv(int fd, uint8_t *buf, uint32_t cap, struct qs_frame *out)
{
	const struct qs_limits lim = {cap, QS_DEFAULT_MAX_BATCH};
	uint8_t hdr[QS_HEADER_LEN];
	uint32_t len;
	if (fq_read_all(fd, hdr, sizeof hdr) != 0 || qs_check_header(hdr, cap, &len) != QS_OK ||
	    fq_read_all(fd, buf, len) != 0)
		return -1;
	return qs_decode(buf, len, &lim, out, NULL) == QS_OK ? 0 : -1;
}

int fq_listen(uint16_t *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}
