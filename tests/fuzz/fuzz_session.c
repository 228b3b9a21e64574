/* libFuzzer target: one worker's session state machine (gateway/session.c,
 * requests.c) fed an arbitrary byte stream as one agent connection.
 *
 * A minimal struct gw_worker is built by hand once: the configuration from a
 * small file in a memfd, its own event_base, no Redis (w->pool NULL) and a
 * store connection to a closed port, so the store is down and every request
 * that needs it answers ERROR store_unavailable. Each input is written to one
 * end of a socketpair, whose other end is handed to gw_session_accept; then
 * the write side is shut down and the loop is run (non-blocking) until the
 * session is gone. Whatever the gateway writes back is read and discarded.
 * Every session is freed before the next input, so ASan's leak check covers
 * the session's whole life. */
#include "gateway/config.h"
#include "gateway/log.h"
#include "gateway/session.h"
#include "gateway/worker.h"
#include "store/store.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_TURNS 2000 /* loop turns per input before the session is freed by force */

static const char config_text[] = "[node]\n"
                                  "name = fuzz\n"
                                  "auth = off\n"
                                  "[worker ml1]\n"
                                  "listen = 127.0.0.1:1\n"
                                  "[store]\n"
                                  "conninfo = host=127.0.0.1 port=1 dbname=qagw user=qagw "
                                  "connect_timeout=1\n"
                                  "[limits]\n"
                                  "max_frame = 4096\n"
                                  "max_batch = 8\n"
                                  "hello_timeout = 1\n"
                                  "heartbeat = 1\n"
                                  "max_sessions = 4\n"
                                  "max_pending_hello = 4\n"
                                  "max_output = 65536\n";

static struct gw_config conf;
static struct gw_worker *w;

static void on_store_state(void *arg, int up)
{
}

static void setup(void)
{
	char path[64], err[1024];
	int fd = memfd_create("qagw-fuzz-session.conf", 0);
	if (fd < 0 || write(fd, config_text, sizeof(config_text) - 1) != sizeof(config_text) - 1)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (gw_config_load(path, &conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_session: %s\n", err);
		abort();
	}
	close(fd);
	/* Quiet (not even errors), unless FUZZ_SESSION_LOG=debug|info|... asks. */
	const char *lv = getenv("FUZZ_SESSION_LOG");
	atomic_store(&gw_log_threshold, lv ? gw_log_parse_level(lv) : -1);
	signal(SIGPIPE, SIG_IGN);

	w = calloc(1, sizeof(*w));
	if (!w)
		abort();
	w->conf = &conf;
	w->wc = &conf.workers[0];
	w->limits.max_frame = conf.max_frame;
	w->limits.max_batch = (uint16_t)conf.max_batch;
	TAILQ_INIT(&w->sessions);
	w->base = event_base_new();
	if (!w->base)
		abort();
	w->store = st_conn_new(w->base, conf.conninfo, w->wc->name, on_store_state, w);
	if (!w->store)
		abort();
	w->pool = NULL; /* no Redis: sessions are not claimed for the pool */
	w->accepting = 1;
}

static void drain_output(int fd)
{
	char buf[65536];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!w)
		setup();
	int fds[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
		abort();
	gw_session_accept(w, fds[0], "192.0.2.1:1", "192.0.2.1");

	size_t off = 0;
	int shut = 0;
	for (int turn = 0; turn < MAX_TURNS; turn++) {
		/* Feed what the socket takes; the rest on later turns. */
		while (off < size) {
			ssize_t n = write(fds[1], data + off, size - off);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		if (off == size && !shut) {
			shutdown(fds[1], SHUT_WR);
			shut = 1;
		}
		event_base_loop(w->base, EVLOOP_NONBLOCK);
		drain_output(fds[1]);
		if (TAILQ_EMPTY(&w->sessions))
			break;
	}
	/* A session still alive (e.g. waiting on a timer): free it here so the
	 * next input starts clean and nothing leaks. */
	struct gw_session *s;
	while ((s = TAILQ_FIRST(&w->sessions)))
		gw_session_free(s);
	event_base_loop(w->base, EVLOOP_NONBLOCK);
	if (w->n_sessions != 0 || w->n_pending_hello != 0 || w->by_agent != NULL ||
	    w->pending_by_ip != NULL) {
		fprintf(stderr,
		        "fuzz_session: worker counts off after the session: sessions %d, "
		        "pending_hello %d, agent map %s, per-address map %s\n",
		        w->n_sessions, w->n_pending_hello, w->by_agent ? "not empty" : "empty",
		        w->pending_by_ip ? "not empty" : "empty");
		abort();
	}
	close(fds[1]);
	return 0;
}
