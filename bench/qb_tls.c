/* qabench handshakes (issue 7, scenario 5): new full TLS handshakes per
 * second against any TLS server — a qagw TLS worker or `openssl s_server`
 * with the same certificate, measured by the same client in the same run.
 *
 * --conns threads each loop: connect, SSL_connect, close. Blocking sockets in
 * threads keep it simple; the server is the side under test. Every handshake
 * is a full one: the client context has no session cache and refuses tickets,
 * and each SSL object is fresh, so nothing can be resumed. The client's own
 * CPU use is reported ("client_cpu", CPU seconds per second) so a reader can
 * tell when the client, not the server, was the limit: a TLS 1.3 client does
 * as much work as the server (key share, CertificateVerify check, certificate
 * parsing) — with OpenSSL 3.0 and the P-256 dev certificate, about 1 ms of
 * client CPU per handshake against s_server's 0.8 ms on the 2-core box.
 * Against a 127.x target the sources are spread over 127.0.0.2-254 (the
 * client closes first, so its TIME_WAIT sockets pile up per source address);
 * --src-prefix none turns that off. */
#include "bench/qb.h"
#include "bench/qb_agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Shared by every handshaker thread: read-only after start except the
 * atomic counters. */
struct hs_run {
	SSL_CTX *ctx;
	struct sockaddr_in dst;
	const char *src_prefix; /* "127.0.0." spreads sources over .2-.254; NULL: none */
	int64_t deadline_us;
	atomic_long done, failed;
	atomic_int last_version; /* SSL_version() of a successful handshake */
	atomic_int errors_logged;
};

struct hs_thread {
	struct hs_run *run;
	int index;
	pthread_t tid;
};

/* qabench's client context, without resumption of any kind: every
 * handshake is a full one. */
static SSL_CTX *hs_client_ctx(const char *ca_file)
{
	SSL_CTX *ctx = qb_tls_client_ctx(ca_file);
	if (!ctx)
		return NULL;
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	return ctx;
}

static void hs_log_error(struct hs_run *r, const char *what)
{
	if (atomic_fetch_add(&r->errors_logged, 1) >= 5)
		return; /* the count says the rest */
	unsigned long e = ERR_peek_last_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	fprintf(stderr, "qabench handshakes: %s failed: %s\n", what, e ? buf : strerror(errno));
}

/* Connects a fresh socket, from a spread source address when asked: the
 * client closes first, so its TIME_WAIT sockets would otherwise pile up on
 * one source address. */
static int hs_connect(struct hs_run *r, unsigned seq)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A server that stops answering fails the handshake, not the run. */
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (r->src_prefix) {
		char ip[INET_ADDRSTRLEN + 8];
		snprintf(ip, sizeof(ip), "%s%u", r->src_prefix, 2 + seq % 253);
		struct sockaddr_in src = {.sin_family = AF_INET};
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (inet_pton(AF_INET, ip, &src.sin_addr) != 1 ||
		    bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
			close(fd);
			return -1;
		}
	}
	if (connect(fd, (struct sockaddr *)&r->dst, sizeof(r->dst)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void *hs_thread_main(void *arg)
{
	struct hs_thread *t = arg;
	struct hs_run *r = t->run;
	unsigned seq = (unsigned)t->index * 7919u;
	while (gw_mono_us() < r->deadline_us) {
		int fd = hs_connect(r, seq++);
		if (fd < 0) {
			hs_log_error(r, "connect");
			atomic_fetch_add(&r->failed, 1);
			usleep(1000); /* do not spin on a refused port */
			continue;
		}
		SSL *ssl = SSL_new(r->ctx);
		int ok = ssl && SSL_set_fd(ssl, fd) == 1 && SSL_connect(ssl) == 1;
		int64_t now = gw_mono_us();
		if (ok && now < r->deadline_us) {
			atomic_fetch_add(&r->done, 1);
			atomic_store(&r->last_version, SSL_version(ssl));
		} else if (!ok) {
			hs_log_error(r, "SSL_connect");
			atomic_fetch_add(&r->failed, 1);
		}
		ERR_clear_error();
		SSL_free(ssl); /* no SSL_shutdown: the close is what ends it */
		close(fd);
	}
	return NULL;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

int qb_mode_handshakes(const struct qb_opts *o)
{
	const char *host = qb_opt(o, "host", "127.0.0.1");
	long port = qb_opt_int(o, "port", 0);
	double seconds = qb_opt_double(o, "seconds", 10);
	long conns = qb_opt_int(o, "conns", 8);
	const char *ca = qb_opt(o, "ca", NULL);
	/* Source spreading: default on for a 127.x target; "none" turns it off. */
	const char *src =
	    qb_opt(o, "src-prefix", strncmp(host, "127.", 4) == 0 ? "127.0.0." : NULL);
	if (src && strcmp(src, "none") == 0)
		src = NULL;

	static struct hs_run run; /* static: atomics need no init dance */
	run.dst.sin_family = AF_INET;
	run.dst.sin_port = htons((uint16_t)port);
	if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &run.dst.sin_addr) != 1 ||
	    conns < 1 || conns > 1024 || seconds <= 0) {
		fprintf(stderr, "qabench handshakes: need --host IPv4 --port P (--conns 1..1024, "
		                "--seconds > 0)\n");
		return 2;
	}
	run.ctx = hs_client_ctx(ca);
	if (!run.ctx)
		return 1;
	run.src_prefix = src;

	struct hs_thread *threads = calloc((size_t)conns, sizeof(*threads));
	if (!threads)
		return 1;
	double cpu0 = cpu_seconds();
	int64_t t0 = gw_mono_us();
	run.deadline_us = t0 + (int64_t)(seconds * 1e6);
	long started = 0;
	for (long i = 0; i < conns; i++) {
		threads[i] = (struct hs_thread){.run = &run, .index = (int)i};
		if (pthread_create(&threads[i].tid, NULL, hs_thread_main, &threads[i]) != 0)
			break;
		started++;
	}
	for (long i = 0; i < started; i++)
		pthread_join(threads[i].tid, NULL);
	double wall = (double)(gw_mono_us() - t0) / 1e6;
	double cpu = cpu_seconds() - cpu0;
	free(threads);
	SSL_CTX_free(run.ctx);
	if (started == 0) {
		fprintf(stderr, "qabench handshakes: no thread started\n");
		return 1;
	}

	long done = atomic_load(&run.done);
	int ver = atomic_load(&run.last_version);
	const char *proto = ver == TLS1_3_VERSION   ? "TLSv1.3"
	                    : ver == TLS1_2_VERSION ? "TLSv1.2"
	                    : ver                   ? "other"
	                                            : "none";
	printf("{\"mode\":\"handshakes\",\"seconds\":%.3f,\"conns\":%ld,\"handshakes\":%ld,"
	       "\"per_s\":%.1f,\"failed\":%ld,\"protocol\":\"%s\",\"client_cpu\":%.2f}\n",
	       seconds, started, done, (double)done / seconds, atomic_load(&run.failed), proto,
	       wall > 0 ? cpu / wall : 0);
	fflush(stdout);
	if (done == 0) {
		fprintf(stderr, "qabench handshakes: no handshake succeeded\n");
		return 1;
	}
	return 0;
}
