/* A fleet of libmosquitto clients on one epoll loop; see qb_mqfleet.h. */
#include "bench/qb_mqfleet.h"
#include "bench/qb.h"

#include <errno.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static void set_state(struct qb_mqclient *c, enum qb_mqc_state s)
{
	c->fleet->count[c->state]--;
	c->fleet->count[s]++;
	c->state = s;
}

/* A connection that ended or never got going. Its socket leaves the epoll
 * set here, while still open: every path that closes it (libmosquitto's
 * error handling) calls on_disconnect, and so this, before the close. */
static void drop(struct qb_mqclient *c, const char *why)
{
	struct qb_mqfleet *f = c->fleet;
	if (c->state == QB_MQC_FAILED || c->state == QB_MQC_LOST)
		return;
	if (f->errors_logged++ < 5)
		fprintf(stderr, "qabench mqtt: client %d: %s\n", f->base + c->index, why);
	else if (f->errors_logged == 6)
		fprintf(stderr, "qabench mqtt: further client errors counted, not logged\n");
	if (c->fd >= 0 && c->events)
		epoll_ctl(f->ep, EPOLL_CTL_DEL, c->fd, NULL);
	c->fd = -1;
	c->events = 0;
	set_state(c, c->state == QB_MQC_READY ? QB_MQC_LOST : QB_MQC_FAILED);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	struct qb_mqclient *c = obj;
	if (rc != 0) {
		drop(c, mosquitto_connack_string(rc));
		return;
	}
	if (!c->fleet->topic_prefix) {
		set_state(c, QB_MQC_READY);
		return;
	}
	char topic[96];
	snprintf(topic, sizeof(topic), "%s%d", c->fleet->topic_prefix, c->fleet->base + c->index);
	if (mosquitto_subscribe(mosq, NULL, topic, 1) != MOSQ_ERR_SUCCESS)
		drop(c, "subscribe failed");
	else
		set_state(c, QB_MQC_SUBSCRIBING);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                         const int *granted)
{
	struct qb_mqclient *c = obj;
	if (qos_count < 1 || granted[0] != 1)
		drop(c, "subscription not granted at QoS 1");
	else if (c->state == QB_MQC_SUBSCRIBING)
		set_state(c, QB_MQC_READY);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
	drop(obj, rc ? mosquitto_strerror(rc) : "disconnected");
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
	struct qb_mqfleet *f = ((struct qb_mqclient *)obj)->fleet;
	if (f->on_message)
		f->on_message(f->user, m);
}

/* Registers (or updates) the client's epoll interest: always readable, and
 * writable while libmosquitto has output queued (a packet queued inside a
 * callback is not written at once). */
static void watch(struct qb_mqclient *c)
{
	if (c->fd < 0)
		return;
	uint32_t want = EPOLLIN | (mosquitto_want_write(c->mosq) ? EPOLLOUT : 0);
	if (want == c->events)
		return;
	struct epoll_event ev = {.events = want, .data.ptr = c};
	int op = c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(c->fleet->ep, op, c->fd, &ev) == 0)
		c->events = want;
}

struct mosquitto *qb_mq_new(const char *id, bool clean, void *obj)
{
	struct mosquitto *m = mosquitto_new(id, clean, obj);
	if (m) /* latency is measured: no Nagle delay on the client side */
		mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
	return m;
}

/* Creates client i and sends its CONNECT. mosquitto_connect_bind connects the
 * socket blockingly, which on loopback is immediate while the broker's accept
 * queue has room; the window in qb_mqfleet_connect sees to that. */
static void start(struct qb_mqfleet *f, int i)
{
	struct qb_mqclient *c = &f->c[i];
	char id[64], src[32];
	snprintf(id, sizeof(id), "%s%d", f->id_prefix, f->base + i);
	c->mosq = qb_mq_new(id, f->clean_session, c);
	set_state(c, QB_MQC_CONNECTING);
	if (!c->mosq) {
		drop(c, "mosquitto_new failed");
		return;
	}
	mosquitto_connect_callback_set(c->mosq, on_connect);
	mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
	mosquitto_disconnect_callback_set(c->mosq, on_disconnect);
	mosquitto_message_callback_set(c->mosq, on_message);
	if (f->src_prefix)
		snprintf(src, sizeof(src), "%s%d", f->src_prefix, 2 + (f->base + i) % 253);
	int rc = mosquitto_connect_bind(c->mosq, f->host, f->port, f->keepalive,
	                                f->src_prefix ? src : NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		drop(c, rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
		return;
	}
	c->fd = mosquitto_socket(c->mosq);
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	watch(c);
}

void qb_mqfleet_poll(struct qb_mqfleet *f, int timeout_ms)
{
	struct epoll_event ev[256];
	int k = epoll_wait(f->ep, ev, 256, timeout_ms);
	for (int i = 0; i < k; i++) {
		struct qb_mqclient *c = ev[i].data.ptr;
		if (!c || c->fd < 0)
			continue; /* the caller's fd, or dropped earlier in this batch */
		int rc = MOSQ_ERR_SUCCESS;
		if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			rc = mosquitto_loop_read(c->mosq, 1);
		if (rc == MOSQ_ERR_SUCCESS && c->fd >= 0 && (ev[i].events & EPOLLOUT))
			rc = mosquitto_loop_write(c->mosq, 1);
		if (rc != MOSQ_ERR_SUCCESS)
			drop(c, mosquitto_strerror(rc));
		else
			watch(c);
	}
}

void qb_mqfleet_misc(struct qb_mqfleet *f)
{
	for (int i = 0; i < f->n; i++) {
		struct qb_mqclient *c = &f->c[i];
		if (c->fd < 0)
			continue;
		int rc = mosquitto_loop_misc(c->mosq);
		if (rc != MOSQ_ERR_SUCCESS)
			drop(c, mosquitto_strerror(rc));
		else
			watch(c);
	}
}

int qb_mqfleet_init(struct qb_mqfleet *f, int n)
{
	f->n = n;
	f->c = calloc((size_t)n, sizeof(*f->c));
	f->ep = epoll_create1(EPOLL_CLOEXEC);
	if (!f->c || f->ep < 0)
		return -1;
	for (int i = 0; i < n; i++)
		f->c[i] = (struct qb_mqclient){.fleet = f, .index = i, .fd = -1};
	memset(f->count, 0, sizeof(f->count));
	f->count[QB_MQC_NEW] = n;
	return 0;
}

/* The window keeps the broker's accept queue from overflowing: a connection
 * not yet accepted is one of those waiting, and an overflow drops the SYN,
 * which costs the blocking connect a 1 s retransmit. */
void qb_mqfleet_connect(struct qb_mqfleet *f, int window, double stall_s, int64_t deadline_us)
{
	int next = 0, done_before = 0;
	int64_t last_progress = gw_mono_us();
	int *waiting = &f->count[QB_MQC_CONNECTING], *subscribing = &f->count[QB_MQC_SUBSCRIBING];
	while (next < f->n || *waiting + *subscribing > 0) {
		while (next < f->n && *waiting + *subscribing < window)
			start(f, next++);
		qb_mqfleet_poll(f, 10);
		int done = f->count[QB_MQC_READY] + f->count[QB_MQC_FAILED] + f->count[QB_MQC_LOST];
		int64_t now = gw_mono_us();
		bool over = deadline_us && now >= deadline_us;
		if (done != done_before) {
			done_before = done;
			last_progress = now;
		} else if (now - last_progress > (int64_t)(stall_s * 1e6)) {
			over = true;
		}
		if (!over)
			continue;
		for (int i = 0; i < next; i++)
			if (f->c[i].state == QB_MQC_CONNECTING ||
			    f->c[i].state == QB_MQC_SUBSCRIBING)
				drop(&f->c[i], "no CONNACK/SUBACK (timed out)");
		if (deadline_us && now >= deadline_us) {
			for (; next < f->n; next++) /* never started: failed too */
				set_state(&f->c[next], QB_MQC_FAILED);
			fprintf(stderr, "qabench mqtt: connect time is up\n");
		}
		last_progress = now;
	}
}

void qb_mqfleet_free(struct qb_mqfleet *f)
{
	for (int i = 0; f->c && i < f->n; i++)
		if (f->c[i].mosq)
			mosquitto_destroy(f->c[i].mosq); /* closes its sockets */
	free(f->c);
	f->c = NULL;
	if (f->ep >= 0)
		close(f->ep);
	f->ep = -1;
}

rlim_t qb_mq_raise_nofile(long n)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	rlim_t need = (rlim_t)n * 3 + 64;
	if (rl.rlim_max < need) {
		struct rlimit up = {need, need};
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return need;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	getrlimit(RLIMIT_NOFILE, &rl);
	return rl.rlim_cur;
}
