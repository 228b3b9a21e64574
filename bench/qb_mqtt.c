/* qabench mqtt-push and mqtt-idle (issue 7): the Mosquitto baselines of
 * scenario 2 (push latency) and scenario 4 (idle sessions), driven through
 * libmosquitto.
 *
 * mqtt-push measures as qabench push does (bench/qb_push.c): open loop, every
 * latency from the message's due time on the schedule, the achieved rate
 * beside the offered one, optionally in steps of rising rate (--steps).
 *
 * The subscribers (mqtt-push) and the idle sessions (mqtt-idle) are a fleet
 * of clients on one thread's epoll loop (qb_mqfleet.h). mqtt-push runs its
 * single publisher on a second thread with its own poll loop, so publishing
 * on schedule never waits for the subscribers' work; the two threads share
 * the schedule (struct mq_sched: per message its due, publish and arrival
 * times, each written by one thread) and the step and stop flags. */
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

/* ---- mqtt-push: the schedule -------------------------------------------- */

/* Open loop, as qabench push: message i of a step of rate R is due at
 * t0 + i / R whatever the broker does, and every latency starts at the due
 * time (so a publisher that falls behind shows it as latency). Each step is
 * --warmup s of unmeasured messages, then --seconds s of measured ones; a
 * step ends when every message of it has arrived, or --drain s after its last
 * one was published, and the next starts --gap s later. With --stop-p99-ms P
 * stepping stops after the first step whose publish -> arrival p99 is P or
 * more or whose achieved rate is under --stop-achieved of its offered rate. */
#define MQ_MAX_STEPS 16

struct mq_step {
	double rate;
	uint32_t first, count, warm; /* sequence numbers [first, first + count) */
	int64_t t0;                  /* publisher: when its message 0 was due */
	/* main thread */
	uint32_t received; /* distinct messages of the step received */
	int64_t t_settled;
	int pass;
};

/* What the two threads share. steps[k].t0, due_us[] and sent_us[] of step k
 * are written by the publisher before it raises sent_steps past k, and read
 * by the main thread only after it has seen that (release/acquire). */
struct mq_sched {
	struct mq_step steps[MQ_MAX_STEPS];
	int n_steps;
	uint32_t total;
	int64_t *due_us, *sent_us, *recv_us; /* per sequence number; 0: not yet */
	atomic_int go_steps;                 /* main -> publisher: steps it may run */
	atomic_int sent_steps;               /* publisher -> main: steps fully published */
	int marks;
};

static int mq_step_of(const struct mq_sched *s, uint32_t seq)
{
	for (int k = 0; k < s->n_steps; k++)
		if (seq < s->steps[k].first + s->steps[k].count)
			return k;
	return s->n_steps - 1;
}

/* ---- mqtt-push: the receiving side (the fleet's thread) ----------------- */

/* What a received PUBLISH is checked and counted against. */
struct mq_inbox {
	uint32_t tag; /* this run's tag: anything else is foreign */
	struct mq_sched *sched;
	long received;   /* distinct messages received (all steps, warmup included) */
	long duplicates; /* QoS 1 redeliveries */
	long foreign;    /* not from this run's publisher */
};

/* Payload layout, host byte order (the same process at both ends):
 * [0,4) run tag, [4,8) sequence, [8,16) gw_mono_us of the due time, [16] measured. */
#define MQ_HDR 17

static void mq_on_message(void *user, const struct mosquitto_message *m)
{
	int64_t now = gw_mono_us();
	struct mq_inbox *in = user;
	uint32_t tag, seq;
	const uint8_t *p = m->payload;
	if (m->payloadlen < MQ_HDR) {
		in->foreign++;
		return;
	}
	memcpy(&tag, p, 4);
	memcpy(&seq, p + 4, 4);
	if (tag != in->tag || seq >= in->sched->total) {
		in->foreign++;
	} else if (in->sched->recv_us[seq]) {
		in->duplicates++;
	} else {
		in->sched->recv_us[seq] = now;
		in->sched->steps[mq_step_of(in->sched, seq)].received++;
		in->received++;
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
 * figures after joining it. The schedule's atomics and stop are shared. */
struct mq_pub {
	int size;
	uint32_t tag;
	const char *topic_prefix;
	int subscribers;
	struct mq_sched *sched;
	struct mosquitto *mosq;
	bool connected;
	int64_t due_of_mid[65536]; /* by mid: due time of the message, 0 when acked */
	uint8_t measured[65536];
	struct qb_lat puback; /* due -> PUBACK, measured messages */
	atomic_int error;     /* read by the main thread while the publisher runs */
	atomic_int stop;      /* set by the main thread */
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
	if (p->due_of_mid[k]) {
		if (p->measured[k])
			qb_lat_add(&p->puback, gw_mono_us() - p->due_of_mid[k]);
		p->due_of_mid[k] = 0;
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

/* Publishes message seq (due at due): QoS 1, to the next subscriber's topic
 * round robin. */
static int mq_pub_send(struct mq_pub *p, uint32_t seq, int64_t due, uint8_t measured,
                       uint8_t *payload)
{
	char topic[96];
	snprintf(topic, sizeof(topic), "%s%u", p->topic_prefix, seq % (uint32_t)p->subscribers);
	memcpy(payload, &p->tag, 4);
	memcpy(payload + 4, &seq, 4);
	memcpy(payload + 8, &due, 8);
	payload[16] = measured;
	int mid = 0;
	p->sched->due_us[seq] = due;
	int rc = mosquitto_publish(p->mosq, &mid, topic, p->size, payload, 1, false);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "qabench mqtt-push: publish: %s\n", mosquitto_strerror(rc));
		return -1;
	}
	p->sched->sent_us[seq] = gw_mono_us();
	p->due_of_mid[(uint16_t)mid] = due;
	p->measured[(uint16_t)mid] = measured;
	return 0;
}

static void *mq_pub_main(void *arg)
{
	struct mq_pub *p = arg;
	struct mq_sched *s = p->sched;
	uint8_t *payload = calloc(1, (size_t)p->size);
	int64_t give_up = gw_mono_us() + 10000000;
	while (payload && !p->connected && !p->error && gw_mono_us() < give_up)
		if (mq_pub_service(p, 10000) != 0)
			p->error = 1;
	if (!payload || !p->connected)
		p->error = 1;

	for (int k = 0; k < s->n_steps && !p->error; k++) {
		/* the main thread lets each step go once the previous one is settled */
		while (!p->error && !atomic_load(&p->stop) && atomic_load(&s->go_steps) <= k)
			if (mq_pub_service(p, 2000) != 0)
				p->error = 1;
		if (p->error || atomic_load(&p->stop))
			break;
		struct mq_step *st = &s->steps[k];
		int64_t t0 = gw_mono_us();
		st->t0 = t0;
		if (s->marks) {
			printf("{\"mark\":\"step_start\",\"step\":%d,\"rate\":%.0f}\n", k,
			       st->rate);
			fflush(stdout);
		}
		double step_us = 1e6 / st->rate;
		uint32_t i = 0;
		while (!p->error && i < st->count) {
			int64_t now = gw_mono_us();
			int64_t due = t0 + (int64_t)(i * step_us);
			if (now >= due) {
				if (mq_pub_send(p, st->first + i, due, i >= st->warm, payload) != 0)
					p->error = 1;
				i++;
				continue;
			}
			if (mq_pub_service(p, due - now) != 0)
				p->error = 1;
		}
		atomic_store(&s->sent_steps, k + 1);
	}
	/* Keep collecting PUBACKs until the main thread is done. */
	while (!p->error && !atomic_load(&p->stop))
		if (mq_pub_service(p, 20000) != 0)
			p->error = 1;
	free(payload);
	return NULL;
}

/* ---- mqtt-push: figures ---------------------------------------------------- */

struct mq_figs {
	long measured, sent, received, lost;
	double send_s, sched_s; /* first due -> last publish (+1 interval); the schedule's span */
	struct qb_lat deliver, queue;
};

static void mq_figs_add(const struct mq_sched *s, const struct mq_step *st, struct mq_figs *f)
{
	uint32_t a = st->first + st->warm, z = st->first + st->count;
	int64_t end = st->t_settled, last_sent = 0;
	long sent = 0;
	for (uint32_t q = a; q < z; q++) {
		f->measured++;
		if (!s->sent_us[q]) {
			f->lost++;
			continue;
		}
		sent++;
		last_sent = s->sent_us[q];
		qb_lat_add(&f->queue, s->sent_us[q] - s->due_us[q]);
		if (s->recv_us[q]) {
			f->received++;
			qb_lat_add(&f->deliver, s->recv_us[q] - s->due_us[q]);
		} else {
			f->lost++; /* counted at the end of its step: a lower bound */
			qb_lat_add(&f->deliver, end - s->due_us[q]);
		}
	}
	f->sent += sent;
	if (sent && z > a) {
		f->send_s += (double)(last_sent - s->due_us[a]) / 1e6 + 1.0 / st->rate;
		f->sched_s += (double)(z - a) / st->rate;
	}
}

static void mq_figs_json(struct mq_figs *f)
{
	double achieved = f->send_s > 0 ? (double)f->sent / f->send_s : 0;
	double offered = f->sched_s > 0 ? (double)f->measured / f->sched_s : 0;
	printf("\"offered_rate\":%.1f,\"achieved_rate\":%.1f,\"achieved_ratio\":%.4f,"
	       "\"send_seconds\":%.3f,\"measured\":%ld,\"sent\":%ld,\"received\":%ld,\"lost\":%ld,",
	       offered, achieved, offered > 0 ? achieved / offered : 0, f->send_s, f->measured,
	       f->sent, f->received, f->lost);
	qb_lat_json(stdout, "deliver", &f->deliver);
	putchar(',');
	qb_lat_json(stdout, "sender_queue", &f->queue);
}

static void mq_figs_free(struct mq_figs *f)
{
	qb_lat_free(&f->deliver);
	qb_lat_free(&f->queue);
}

/* Step k has ended (main thread): its verdict and its mark. */
static void mq_step_end(struct mq_sched *s, int k, int64_t now, double stop_p99_ms,
                        double stop_achieved)
{
	struct mq_step *st = &s->steps[k];
	st->t_settled = now;
	struct mq_figs f = {0};
	mq_figs_add(s, st, &f);
	double p99 = qb_lat_pct_ms(&f.deliver, 99);
	double achieved = f.send_s > 0 ? (double)f.sent / f.send_s : 0;
	st->pass = f.measured > 0 && f.sent == f.measured &&
	           (stop_p99_ms <= 0 || p99 < stop_p99_ms) && achieved >= stop_achieved * st->rate;
	fprintf(stderr,
	        "qabench mqtt-push: step %d (%.0f/s) ended: achieved %.0f/s, p99 %.2f ms, "
	        "lost %ld: %s\n",
	        k, st->rate, achieved, p99, f.lost, st->pass ? "passed" : "missed");
	if (s->marks) {
		printf("{\"mark\":\"step_end\",\"step\":%d,\"rate\":%.0f,\"msgs\":%u,"
		       "\"received\":%u,\"pass\":%s}\n",
		       k, st->rate, st->count, st->received, st->pass ? "true" : "false");
		fflush(stdout);
	}
	mq_figs_free(&f);
}

int qb_mode_mqtt_push(const struct qb_opts *o)
{
	const char *host = qb_opt(o, "host", "127.0.0.1");
	int port = (int)qb_opt_int(o, "port", 1883);
	int subscribers = (int)qb_opt_int(o, "subscribers", 1000);
	double rate = qb_opt_double(o, "rate", 1000);
	const char *steps_s = qb_opt(o, "steps", NULL);
	double seconds = qb_opt_double(o, "seconds", 20);
	double warmup = qb_opt_double(o, "warmup", 2);
	double drain = qb_opt_double(o, "drain", 3);
	double gap = qb_opt_double(o, "gap", 0.5);
	double stop_p99_ms = qb_opt_double(o, "stop-p99-ms", 0);
	double stop_achieved = qb_opt_double(o, "stop-achieved", 0.99);
	int size = (int)qb_opt_int(o, "size", 128);
	static struct mq_sched sched;
	sched.marks = qb_opt_flag(o, "marks");
	int bad = 0;
	double total = 0;
	if (steps_s) {
		for (const char *p = steps_s; *p && !bad;) {
			char *end;
			double v = strtod(p, &end);
			if (end == p || v <= 0 || sched.n_steps == MQ_MAX_STEPS)
				bad = 1;
			else
				sched.steps[sched.n_steps++].rate = v;
			p = *end == ',' ? end + 1 : end;
			if (*end && *end != ',')
				bad = 1;
		}
	} else {
		sched.steps[sched.n_steps++].rate = rate;
	}
	for (int k = 0; k < sched.n_steps; k++)
		total += sched.steps[k].rate * (seconds + warmup) + 1;
	if (bad || !sched.n_steps || subscribers < 1 || subscribers > 1000000 || rate <= 0 ||
	    seconds <= 0 || warmup < 0 || drain < 0 || gap < 0 || size < MQ_HDR || size > 1 << 20 ||
	    total > 1e9) {
		fprintf(stderr, "qabench mqtt-push: bad --subscribers/--rate/--steps/--seconds/"
		                "--size\n");
		return 2;
	}
	for (int k = 0; k < sched.n_steps; k++) {
		struct mq_step *st = &sched.steps[k];
		st->first = sched.total;
		st->warm = (uint32_t)(warmup * st->rate);
		st->count = st->warm + (uint32_t)(seconds * st->rate);
		if (st->count <= st->warm)
			st->count = st->warm + 1;
		sched.total += st->count;
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
	inbox.sched = &sched;
	sched.due_us = calloc(sched.total, sizeof(int64_t));
	sched.sent_us = calloc(sched.total, sizeof(int64_t));
	sched.recv_us = calloc(sched.total, sizeof(int64_t));
	struct qb_mqfleet f = {.host = host,
	                       .port = port,
	                       .keepalive = 60,
	                       .clean_session = false, /* persistent sessions, as PERSIST */
	                       .id_prefix = id_prefix,
	                       .topic_prefix = topic_prefix,
	                       .on_message = mq_on_message,
	                       .user = &inbox};
	if (!sched.due_us || !sched.sent_us || !sched.recv_us ||
	    qb_mqfleet_init(&f, subscribers) != 0)
		return 1;
	int64_t t_conn = gw_mono_us();
	qb_mqfleet_connect(&f, QB_MQFLEET_WINDOW, 10, 0);
	fprintf(stderr, "qabench mqtt-push: %d/%d subscribers ready in %.2f s\n",
	        f.count[QB_MQC_READY], subscribers, (double)(gw_mono_us() - t_conn) / 1e6);
	if (f.count[QB_MQC_READY] != subscribers) {
		fprintf(stderr, "qabench mqtt-push: %d subscriber(s) failed\n",
		        f.count[QB_MQC_FAILED]);
		qb_mqfleet_free(&f);
		return 1;
	}

	static struct mq_pub pub;
	pub = (struct mq_pub){.size = size,
	                      .tag = tag,
	                      .topic_prefix = topic_prefix,
	                      .subscribers = subscribers,
	                      .sched = &sched};
	char pub_id[32];
	snprintf(pub_id, sizeof(pub_id), "qbp%06x", tag);
	pub.mosq = qb_mq_new(pub_id, true, &pub);
	int rc = 1, ran = 0;
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
	atomic_store(&sched.go_steps, 1);
	if (rc == MOSQ_ERR_SUCCESS && pthread_create(&tid, NULL, mq_pub_main, &pub) == 0) {
		int64_t last_misc = gw_mono_us(), drain_from = 0, next_at = 0;
		int cur = 0;
		for (;;) {
			qb_mqfleet_poll(&f, 2);
			int64_t now = gw_mono_us();
			if (now - last_misc >= 1000000) {
				qb_mqfleet_misc(&f);
				last_misc = now;
			}
			if (pub.error)
				break;
			if (next_at) { /* the gap before step cur */
				if (now >= next_at) {
					atomic_store(&sched.go_steps, cur + 1);
					next_at = 0;
				}
				continue;
			}
			if (atomic_load(&sched.sent_steps) <= cur)
				continue;
			if (!drain_from)
				drain_from = now;
			if (sched.steps[cur].received < sched.steps[cur].count &&
			    now - drain_from < (int64_t)(drain * 1e6))
				continue;
			mq_step_end(&sched, cur, now, stop_p99_ms, stop_achieved);
			ran = cur + 1;
			if (cur + 1 >= sched.n_steps || (stop_p99_ms > 0 && !sched.steps[cur].pass))
				break;
			cur++;
			drain_from = 0;
			next_at = now + (int64_t)(gap * 1e6);
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
		double capacity = 0;
		for (int k = 0; k < ran && sched.steps[k].pass; k++)
			capacity = sched.steps[k].rate;
		struct mq_figs all = {0};
		for (int k = 0; k < ran; k++)
			mq_figs_add(&sched, &sched.steps[k], &all);
		printf("{\"mode\":\"mqtt-push\",\"subscribers\":%d,\"rate\":%.0f,\"seconds\":%.3f,"
		       "\"latency_from\":\"due\",\"duplicates\":%ld,\"disconnected\":%d,"
		       "\"steps_run\":%d,\"stop_p99_ms\":%.1f,\"stop_achieved\":%.3f,"
		       "\"capacity_msgs_per_s\":%.0f,",
		       subscribers, sched.steps[0].rate, seconds, inbox.duplicates,
		       f.count[QB_MQC_LOST], ran, stop_p99_ms, stop_achieved, capacity);
		mq_figs_json(&all);
		mq_figs_free(&all);
		printf(",");
		qb_lat_json(stdout, "puback", &pub.puback);
		printf(",\"steps\":[");
		for (int k = 0; k < ran; k++) {
			struct mq_figs sf = {0};
			mq_figs_add(&sched, &sched.steps[k], &sf);
			printf("%s{\"rate\":%.0f,\"msgs\":%u,\"warmup_msgs\":%u,\"pass\":%s,",
			       k ? "," : "", sched.steps[k].rate, sched.steps[k].count,
			       sched.steps[k].warm, sched.steps[k].pass ? "true" : "false");
			mq_figs_json(&sf);
			putchar('}');
			mq_figs_free(&sf);
		}
		printf("]}\n");
		fflush(stdout);
	}
	if (inbox.foreign)
		fprintf(stderr, "qabench mqtt-push: %ld foreign message(s) ignored\n",
		        inbox.foreign);
	if (pub.mosq)
		mosquitto_destroy(pub.mosq);
	qb_mqfleet_free(&f);
	qb_lat_free(&pub.puback);
	free(sched.due_us);
	free(sched.sent_us);
	free(sched.recv_us);
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
	int64_t t0 = gw_mono_us();
	qb_mqfleet_connect(&f, ic->window, 10,
	                   ic->connect_timeout_s > 0 ? t0 + (int64_t)(ic->connect_timeout_s * 1e6)
	                                             : 0);
	fprintf(stderr, "qabench mqtt-idle: sessions %d-%d: %d connected, %d failed in %.2f s\n",
	        base, base + n - 1, f.count[QB_MQC_READY], f.count[QB_MQC_FAILED],
	        (double)(gw_mono_us() - t0) / 1e6);
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
	int64_t until = gw_mono_us() + (int64_t)(ic->hold_s * 1e6), last_misc = 0;
	const char *why = "hold time over";
	for (;;) {
		int64_t now = gw_mono_us();
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
	int64_t until = gw_mono_us() + (int64_t)(hold_s * 1e6);
	while (gw_mono_us() < until) {
		struct pollfd in = {0, POLLIN, 0};
		int64_t left_ms = (until - gw_mono_us()) / 1000;
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
