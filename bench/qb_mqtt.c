/* qabench mqtt-push and mqtt-idle (issue 7): the Mosquitto baselines of
 * scenario 2 (push latency) and scenario 4 (idle sessions), driven through
 * libmosquitto.
 *
 * The subscribers (mqtt-push) and the idle sessions (mqtt-idle) are a fleet
 * of clients on one thread's epoll loop (qb_mqfleet.h). mqtt-push runs its
 * single publisher on a second thread with its own poll loop, so publishing
 * on schedule never waits for the subscribers' work; the two threads share
 * nothing but the "sending is over" and "stop" flags (every figure the
 * receiving side needs travels in the payload). */
#include "bench/qb.h"
#include "bench/qb_mqfleet.h"

#include <errno.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- mqtt-push: the receiving side (the fleet's thread) ----------------- */

/* What a received PUBLISH is checked and counted against. */
struct mq_inbox {
	uint32_t tag;    /* this run's tag: anything else is foreign */
	uint8_t *seen;   /* per sequence number: received already */
	uint32_t cap;    /* size of seen */
	long received;   /* distinct measured messages received */
	long duplicates; /* QoS 1 redeliveries */
	long foreign;    /* not from this run's publisher */
	struct qb_lat deliver;
};

/* Payload layout, host byte order (the same process at both ends):
 * [0,4) run tag, [4,8) sequence, [8,16) qb_now_us at publish, [16] measured. */
#define MQ_HDR 17

static void mq_on_message(void *user, const struct mosquitto_message *m)
{
	int64_t now = qb_now_us();
	struct mq_inbox *in = user;
	uint32_t tag, seq;
	int64_t sent;
	const uint8_t *p = m->payload;
	if (m->payloadlen < MQ_HDR) {
		in->foreign++;
		return;
	}
	memcpy(&tag, p, 4);
	memcpy(&seq, p + 4, 4);
	memcpy(&sent, p + 8, 8);
	if (tag != in->tag || seq >= in->cap) {
		in->foreign++;
	} else if (in->seen[seq]) {
		in->duplicates++;
	} else {
		in->seen[seq] = 1;
		if (p[16]) {
			in->received++;
			qb_lat_add(&in->deliver, now - sent);
		}
	}
}

static uint32_t mq_run_tag(void)
{
	uint8_t id[16];
	uint32_t t;
	qb_uuid(id);
	memcpy(&t, id, 4);
	return t & 0xffffff;
}

/* ---- mqtt-push: the publisher thread ------------------------------------ */

/* Owned by the publisher thread while it runs; the main thread reads the
 * figures after joining it. sending_over/stop are the only shared words. */
struct mq_pub {
	double rate, warmup, seconds;
	int size;
	uint32_t tag, cap;
	const char *topic_prefix;
	int subscribers;
	struct mosquitto *mosq;
	bool connected;
	int64_t sent_us[65536]; /* by mid: publish time, 0 when acked */
	uint8_t measured[65536];
	long sent, sent_measured;
	struct qb_lat puback;
	int error;
	atomic_int sending_over; /* set by the publisher */
	atomic_int stop;         /* set by the main thread */
};

static void mq_pub_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	struct mq_pub *p = obj;
	if (rc == 0)
		p->connected = true;
	else
		p->error = 1;
}

static void mq_pub_on_publish(struct mosquitto *mosq, void *obj, int mid)
{
	struct mq_pub *p = obj;
	uint16_t k = (uint16_t)mid;
	if (p->sent_us[k]) {
		if (p->measured[k])
			qb_lat_add(&p->puback, qb_now_us() - p->sent_us[k]);
		p->sent_us[k] = 0;
	}
}

static void mq_pub_on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
	struct mq_pub *p = obj;
	if (!atomic_load(&p->stop)) {
		fprintf(stderr, "qabench mqtt-push: publisher disconnected: %s\n",
		        mosquitto_strerror(rc));
		p->error = 1;
	}
}

/* One pass of the publisher's socket: waits up to wait_us for it. */
static int mq_pub_service(struct mq_pub *p, int64_t wait_us)
{
	int fd = mosquitto_socket(p->mosq);
	if (fd < 0)
		return -1;
	struct pollfd pfd = {fd, POLLIN | (mosquitto_want_write(p->mosq) ? POLLOUT : 0), 0};
	if (wait_us < 0)
		wait_us = 0;
	struct timespec ts = {wait_us / 1000000, (wait_us % 1000000) * 1000};
	if (ppoll(&pfd, 1, &ts, NULL) > 0) {
		int rc = MOSQ_ERR_SUCCESS;
		if (pfd.revents & (POLLIN | POLLERR | POLLHUP))
			rc = mosquitto_loop_read(p->mosq, 1);
		if (rc == MOSQ_ERR_SUCCESS && (pfd.revents & POLLOUT))
			rc = mosquitto_loop_write(p->mosq, 1);
		if (rc != MOSQ_ERR_SUCCESS)
			return -1;
	}
	return mosquitto_loop_misc(p->mosq) == MOSQ_ERR_SUCCESS ? 0 : -1;
}

/* Publishes message i: QoS 1, to the next subscriber's topic round robin. */
static int mq_pub_send(struct mq_pub *p, uint32_t i, int64_t measure_from, int64_t end,
                       uint8_t *payload)
{
	char topic[96];
	snprintf(topic, sizeof(topic), "%s%u", p->topic_prefix, i % (uint32_t)p->subscribers);
	int64_t now = qb_now_us();
	uint8_t measured = now >= measure_from && now < end;
	memcpy(payload, &p->tag, 4);
	memcpy(payload + 4, &i, 4);
	memcpy(payload + 8, &now, 8);
	payload[16] = measured;
	int mid = 0;
	int rc = mosquitto_publish(p->mosq, &mid, topic, p->size, payload, 1, false);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "qabench mqtt-push: publish: %s\n", mosquitto_strerror(rc));
		return -1;
	}
	p->sent_us[(uint16_t)mid] = now;
	p->measured[(uint16_t)mid] = measured;
	p->sent++;
	p->sent_measured += measured;
	return 0;
}

static void *mq_pub_main(void *arg)
{
	struct mq_pub *p = arg;
	uint8_t *payload = calloc(1, (size_t)p->size);
	int64_t give_up = qb_now_us() + 10000000;
	while (payload && !p->connected && !p->error && qb_now_us() < give_up)
		if (mq_pub_service(p, 10000) != 0)
			p->error = 1;
	if (!payload || !p->connected)
		p->error = 1;

	/* Open loop: message i is due at t0 + i/rate whatever the acks do, so a
	 * broker stall shows as latency, not as a lower send rate. */
	int64_t t0 = qb_now_us();
	int64_t measure_from = t0 + (int64_t)(p->warmup * 1e6);
	int64_t end = measure_from + (int64_t)(p->seconds * 1e6);
	double step_us = 1e6 / p->rate;
	uint32_t i = 0;
	while (!p->error) {
		int64_t now = qb_now_us();
		int64_t due = t0 + (int64_t)(i * step_us);
		if (due >= end || i >= p->cap)
			break;
		if (now >= due) {
			if (mq_pub_send(p, i++, measure_from, end, payload) != 0)
				p->error = 1;
			continue;
		}
		if (mq_pub_service(p, due - now) != 0)
			p->error = 1;
	}
	atomic_store(&p->sending_over, 1);
	/* Keep collecting PUBACKs until the main thread has waited out the drain. */
	while (!p->error && !atomic_load(&p->stop))
		if (mq_pub_service(p, 20000) != 0)
			p->error = 1;
	free(payload);
	return NULL;
}

int qb_mode_mqtt_push(const struct qb_opts *o)
{
	const char *host = qb_opt(o, "host", "127.0.0.1");
	int port = (int)qb_opt_int(o, "port", 1883);
	int subscribers = (int)qb_opt_int(o, "subscribers", 1000);
	double rate = qb_opt_double(o, "rate", 1000);
	double seconds = qb_opt_double(o, "seconds", 20);
	double warmup = qb_opt_double(o, "warmup", 2);
	double drain = qb_opt_double(o, "drain", 2);
	int size = (int)qb_opt_int(o, "size", 128);
	if (subscribers < 1 || subscribers > 1000000 || rate <= 0 || seconds <= 0 || warmup < 0 ||
	    size < MQ_HDR || size > 1 << 20 || rate * (seconds + warmup) > 4e9) {
		fprintf(stderr, "qabench mqtt-push: bad --subscribers/--rate/--seconds/--size\n");
		return 2;
	}
	rlim_t nofile = qb_mq_raise_nofile(subscribers + 1);
	if (nofile < (rlim_t)subscribers * 3 + 64)
		fprintf(stderr,
		        "qabench mqtt-push: RLIMIT_NOFILE %llu is short of 3 fds per client\n",
		        (unsigned long long)nofile);
	mosquitto_lib_init();

	/* Per-run names: a broker that outlives the run keeps persistent
	 * sessions, and a later run must not inherit their subscriptions. */
	uint32_t tag = mq_run_tag();
	char id_prefix[32], topic_prefix[32];
	snprintf(id_prefix, sizeof(id_prefix), "qbs%06x-", tag);
	snprintf(topic_prefix, sizeof(topic_prefix), "qb/%06x/", tag);

	static struct mq_inbox inbox;
	inbox.tag = tag;
	inbox.cap = (uint32_t)(rate * (seconds + warmup)) + 16;
	inbox.seen = calloc(inbox.cap, 1);
	struct qb_mqfleet f = {.host = host,
	                       .port = port,
	                       .keepalive = 60,
	                       .clean_session = false, /* persistent sessions, as PERSIST */
	                       .id_prefix = id_prefix,
	                       .topic_prefix = topic_prefix,
	                       .on_message = mq_on_message,
	                       .user = &inbox};
	if (!inbox.seen || qb_mqfleet_init(&f, subscribers) != 0)
		return 1;
	int64_t t_conn = qb_now_us();
	qb_mqfleet_connect(&f, QB_MQFLEET_WINDOW, 10, 0);
	fprintf(stderr, "qabench mqtt-push: %d/%d subscribers ready in %.2f s\n",
	        f.count[QB_MQC_READY], subscribers, (double)(qb_now_us() - t_conn) / 1e6);
	if (f.count[QB_MQC_READY] != subscribers) {
		fprintf(stderr, "qabench mqtt-push: %d subscriber(s) failed\n",
		        f.count[QB_MQC_FAILED]);
		qb_mqfleet_free(&f);
		return 1;
	}

	static struct mq_pub pub;
	pub = (struct mq_pub){.rate = rate,
	                      .warmup = warmup,
	                      .seconds = seconds,
	                      .size = size,
	                      .tag = tag,
	                      .cap = inbox.cap,
	                      .topic_prefix = topic_prefix,
	                      .subscribers = subscribers};
	char pub_id[32];
	snprintf(pub_id, sizeof(pub_id), "qbp%06x", tag);
	pub.mosq = qb_mq_new(pub_id, true, &pub);
	int rc = 1;
	pthread_t tid;
	if (pub.mosq) {
		/* No client-side cap on QoS 1 messages in flight (default 20): the
		 * publisher must never queue behind its own acks. */
		mosquitto_max_inflight_messages_set(pub.mosq, 0);
		mosquitto_connect_callback_set(pub.mosq, mq_pub_on_connect);
		mosquitto_publish_callback_set(pub.mosq, mq_pub_on_publish);
		mosquitto_disconnect_callback_set(pub.mosq, mq_pub_on_disconnect);
		rc = mosquitto_connect(pub.mosq, host, port, 60);
		if (rc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "qabench mqtt-push: publisher connect: %s\n",
			        mosquitto_strerror(rc));
		} else {
			/* loop_read reads as many packets as there are messages in
			 * flight: on a blocking socket it would wait for them. */
			int fd = mosquitto_socket(pub.mosq);
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		}
	}
	if (rc == MOSQ_ERR_SUCCESS && pthread_create(&tid, NULL, mq_pub_main, &pub) == 0) {
		int64_t last_misc = qb_now_us(), drain_until = 0;
		for (;;) {
			qb_mqfleet_poll(&f, 5);
			int64_t now = qb_now_us();
			if (now - last_misc >= 1000000) {
				qb_mqfleet_misc(&f);
				last_misc = now;
			}
			if (!drain_until && atomic_load(&pub.sending_over))
				drain_until = now + (int64_t)(drain * 1e6);
			if (drain_until && now >= drain_until)
				break;
		}
		atomic_store(&pub.stop, 1);
		pthread_join(tid, NULL);
		rc = pub.error;
		if (pub.error)
			fprintf(stderr, "qabench mqtt-push: the publisher failed\n");
		if (f.count[QB_MQC_LOST]) /* their messages count as lost below */
			fprintf(stderr,
			        "qabench mqtt-push: %d subscriber(s) lost their connection\n",
			        f.count[QB_MQC_LOST]);
	} else {
		rc = 1;
	}
	if (rc == 0) {
		long lost = pub.sent_measured - inbox.received;
		printf("{\"mode\":\"mqtt-push\",\"subscribers\":%d,\"rate\":%.0f,\"seconds\":%.3f,"
		       "\"sent\":%ld,\"received\":%ld,\"lost\":%ld,\"duplicates\":%ld,"
		       "\"disconnected\":%d,",
		       subscribers, rate, seconds, pub.sent_measured, inbox.received, lost,
		       inbox.duplicates, f.count[QB_MQC_LOST]);
		qb_lat_json(stdout, "deliver", &inbox.deliver);
		printf(",");
		qb_lat_json(stdout, "puback", &pub.puback);
		printf("}\n");
		fflush(stdout);
	}
	if (inbox.foreign)
		fprintf(stderr, "qabench mqtt-push: %ld foreign message(s) ignored\n",
		        inbox.foreign);
	if (pub.mosq)
		mosquitto_destroy(pub.mosq);
	qb_mqfleet_free(&f);
	qb_lat_free(&inbox.deliver);
	qb_lat_free(&pub.puback);
	free(inbox.seen);
	mosquitto_lib_cleanup();
	return rc;
}

/* ---- mqtt-idle ----------------------------------------------------------- */

/* stdin is watched only when it is a pipe or socket: its end is the
 * orchestrator's "stop" (a terminal or /dev/null would end the hold at once
 * or cannot be polled). */
static bool mq_stdin_is_stop(void)
{
	struct stat st;
	return fstat(0, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

/* True once stdin (a pipe) has reached its end; consumes anything written. */
static bool mq_stdin_closed(void)
{
	struct pollfd in = {0, POLLIN, 0};
	if (poll(&in, 1, 0) <= 0)
		return false;
	char buf[256];
	ssize_t r = read(0, buf, sizeof(buf));
	return r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
}

struct mq_idle_conf {
	const char *host;
	int port, keepalive;
	const char *src_prefix;
	char id_prefix[32];
	double hold_s;
	double connect_timeout_s; /* 0: none (only the 10 s stall rule) */
	int window;               /* CONNACKs awaited at once, by this process */
};

/* Connects sessions [base, base + n), prints the ready line, then keeps them
 * (keepalives answered) until the hold time is over or stdin closes. */
static int mq_idle_slice(const struct mq_idle_conf *ic, int base, int n)
{
	mosquitto_lib_init();
	struct qb_mqfleet f = {.host = ic->host,
	                       .port = ic->port,
	                       .keepalive = ic->keepalive,
	                       .clean_session = false, /* the peer of idle PERSIST sessions */
	                       .src_prefix = ic->src_prefix,
	                       .id_prefix = ic->id_prefix,
	                       .base = base};
	if (qb_mqfleet_init(&f, n) != 0)
		return 1;
	int64_t t0 = qb_now_us();
	qb_mqfleet_connect(&f, ic->window, 10,
	                   ic->connect_timeout_s > 0 ? t0 + (int64_t)(ic->connect_timeout_s * 1e6)
	                                             : 0);
	fprintf(stderr, "qabench mqtt-idle: sessions %d-%d: %d connected, %d failed in %.2f s\n",
	        base, base + n - 1, f.count[QB_MQC_READY], f.count[QB_MQC_FAILED],
	        (double)(qb_now_us() - t0) / 1e6);
	printf("{\"mode\":\"mqtt-idle\",\"connected\":%d,\"failed\":%d,\"ready\":true}\n",
	       f.count[QB_MQC_READY], f.count[QB_MQC_FAILED]);
	fflush(stdout);

	/* stdin joins the epoll set (data.ptr NULL, skipped by qb_mqfleet_poll) only to
	 * wake the wait; it is read below. */
	bool watch_stdin = mq_stdin_is_stop();
	if (watch_stdin) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
		watch_stdin = epoll_ctl(f.ep, EPOLL_CTL_ADD, 0, &ev) == 0;
	}
	int64_t until = qb_now_us() + (int64_t)(ic->hold_s * 1e6), last_misc = 0;
	const char *why = "hold time over";
	for (;;) {
		int64_t now = qb_now_us();
		if (now >= until)
			break;
		if (watch_stdin && mq_stdin_closed()) {
			why = "stdin closed";
			break;
		}
		if (now - last_misc >= 1000000) {
			qb_mqfleet_misc(&f);
			last_misc = now;
		}
		int64_t left_ms = (until - now) / 1000;
		qb_mqfleet_poll(&f, left_ms < 1000 ? (int)left_ms + 1 : 1000);
	}
	fprintf(stderr, "qabench mqtt-idle: sessions %d-%d: %s; %d still connected, %d lost\n",
	        base, base + n - 1, why, f.count[QB_MQC_READY], f.count[QB_MQC_LOST]);
	qb_mqfleet_free(&f);
	mosquitto_lib_cleanup();
	return 0;
}

/* More sessions than one process has fds for (libmosquitto's 3 per client
 * against an RLIMIT_NOFILE hard limit this process may not raise): one child
 * per slice, each running mq_idle_slice with its stdout on a pipe to us (its
 * ready line) and its stdin on a pipe from us (closed to stop it). The
 * parent sums the ready lines into its own and relays the stop. */
static int mq_idle_forked(const struct mq_idle_conf *ic, int sessions, int per)
{
	int nchild = (sessions + per - 1) / per;
	struct mq_idle_conf share = *ic;
	share.window =
	    QB_MQFLEET_WINDOW / nchild > 4 ? QB_MQFLEET_WINDOW / nchild : 4; /* one backlog */
	share.hold_s = 1e9; /* the parent keeps the time: children stop when their stdin ends */
	double hold_s = ic->hold_s;
	ic = &share;
	pid_t *pid = calloc((size_t)nchild, sizeof(*pid));
	int *out = calloc((size_t)nchild, sizeof(*out)),
	    *stop = calloc((size_t)nchild, sizeof(*stop));
	if (!pid || !out || !stop)
		return 1;
	fflush(stdout);
	fflush(stderr);
	int started = 0;
	for (int k = 0; k < nchild; k++, started++) {
		int up[2], down[2];
		if (pipe2(up, O_CLOEXEC) != 0)
			break;
		if (pipe2(down, O_CLOEXEC) != 0) {
			close(up[0]);
			close(up[1]);
			break;
		}
		int base = k * per, n = sessions - base < per ? sessions - base : per;
		pid[k] = fork();
		if (pid[k] == 0) {
			/* Drop the parent's ends of earlier children's pipes, so
			 * that their stop is not held open by a sibling. */
			for (int j = 0; j < k; j++) {
				close(out[j]);
				close(stop[j]);
			}
			dup2(up[1], 1);
			dup2(down[0], 0);
			close(up[0]); /* ours to read, not the child's */
			close(up[1]);
			close(down[0]);
			close(down[1]); /* else the child would hold its own stop open */
			_exit(mq_idle_slice(ic, base, n));
		}
		close(up[1]);
		close(down[0]);
		out[k] = up[0];
		stop[k] = down[1];
		if (pid[k] < 0) {
			close(out[k]);
			close(stop[k]);
			break;
		}
	}

	/* Every child's ready line (or its end, counted as all failed). */
	long connected = 0,
	     failed = (long)(sessions - (started * per < sessions ? started * per : sessions));
	for (int k = 0; k < started; k++) {
		int base = k * per, n = sessions - base < per ? sessions - base : per;
		char line[256];
		size_t len = 0;
		while (len < sizeof(line) - 1) {
			ssize_t r = read(out[k], line + len, sizeof(line) - 1 - len);
			if (r <= 0)
				break;
			len += (size_t)r;
			if (memchr(line, '\n', len))
				break;
		}
		line[len] = '\0';
		int c = 0, fl = 0;
		const char *pc = strstr(line, "\"connected\":"), *pf = strstr(line, "\"failed\":");
		if (pc && pf && sscanf(pc, "\"connected\":%d", &c) == 1 &&
		    sscanf(pf, "\"failed\":%d", &fl) == 1) {
			connected += c;
			failed += fl;
		} else {
			failed += n;
		}
	}
	printf("{\"mode\":\"mqtt-idle\",\"connected\":%ld,\"failed\":%ld,\"ready\":true,"
	       "\"processes\":%d}\n",
	       connected, failed, started);
	fflush(stdout);

	bool watch_stdin = mq_stdin_is_stop();
	int64_t until = qb_now_us() + (int64_t)(hold_s * 1e6);
	while (qb_now_us() < until) {
		struct pollfd in = {0, POLLIN, 0};
		int64_t left_ms = (until - qb_now_us()) / 1000;
		if (poll(&in, watch_stdin ? 1 : 0, left_ms < 1000 ? (int)left_ms + 1 : 1000) > 0 &&
		    mq_stdin_closed())
			break;
	}
	for (int k = 0; k < started; k++)
		close(stop[k]); /* the child's stdin ends: it lets go and exits */
	int rc = 0;
	for (int k = 0; k < started; k++) {
		int st = 0;
		if (waitpid(pid[k], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			rc = 1;
		close(out[k]);
	}
	free(pid);
	free(out);
	free(stop);
	return rc;
}

int qb_mode_mqtt_idle(const struct qb_opts *o)
{
	long sessions = qb_opt_int(o, "sessions", 1000);
	struct mq_idle_conf ic = {.host = qb_opt(o, "host", "127.0.0.1"),
	                          .port = (int)qb_opt_int(o, "port", 1883),
	                          .keepalive = (int)qb_opt_int(o, "keepalive", 60),
	                          .src_prefix = qb_opt(o, "src-prefix", "127.0.0."),
	                          .hold_s = qb_opt_double(o, "hold-seconds", 60),
	                          .connect_timeout_s = qb_opt_double(o, "connect-timeout", 0),
	                          .window = QB_MQFLEET_WINDOW};
	if (sessions < 1 || sessions > 10000000 || ic.hold_s < 0) {
		fprintf(stderr, "qabench mqtt-idle: bad --sessions/--hold-seconds\n");
		return 2;
	}
	if (strcmp(ic.src_prefix, "none") == 0)
		ic.src_prefix = NULL;
	snprintf(ic.id_prefix, sizeof(ic.id_prefix), "qbi%06x-", mq_run_tag());
	rlim_t nofile = qb_mq_raise_nofile(sessions);
	long per = nofile > 64 + 3 ? (long)(nofile - 64) / 3 : 1;
	if (sessions <= per)
		return mq_idle_slice(&ic, 0, (int)sessions);
	fprintf(stderr,
	        "qabench mqtt-idle: %ld sessions need %ld fds (3 each), RLIMIT_NOFILE is %llu: "
	        "spreading them over %ld processes\n",
	        sessions, sessions * 3 + 64, (unsigned long long)nofile,
	        (sessions + per - 1) / per);
	return mq_idle_forked(&ic, (int)sessions, (int)per);
}
