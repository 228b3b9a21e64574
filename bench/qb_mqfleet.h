/* A fleet of libmosquitto clients served by one thread from one epoll set:
 * mosquitto_loop_read/write on readiness and a once-a-second
 * mosquitto_loop_misc (keepalive), never a thread per client
 * (mosquitto_loop_start). Used by qb_mqtt.c: the mqtt-push subscribers and
 * the mqtt-idle sessions.
 *
 * libmosquitto 2.0 quirk: every mosquitto_new opens a socket pair (used only
 * by its own loop functions), so each client costs 3 fds. */
#ifndef QB_MQFLEET_H
#define QB_MQFLEET_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>

struct mosquitto;
struct mosquitto_message;

enum qb_mqc_state {
	QB_MQC_NEW,         /* not started yet */
	QB_MQC_CONNECTING,  /* CONNECT sent, waiting for CONNACK */
	QB_MQC_SUBSCRIBING, /* CONNACK accepted, SUBSCRIBE sent, waiting for SUBACK */
	QB_MQC_READY,       /* connected (and subscribed, when the fleet subscribes) */
	QB_MQC_FAILED,      /* never became ready (refused, error, timed out) */
	QB_MQC_LOST,        /* was ready, then the connection ended */
	QB_MQC_NSTATES
};

struct qb_mqfleet;

/* One client. Owned by its fleet; touched only by the fleet's thread. */
struct qb_mqclient {
	struct qb_mqfleet *fleet;
	struct mosquitto *mosq;
	int index;
	int fd;          /* in the epoll set while >= 0; libmosquitto owns it */
	uint32_t events; /* epoll interest currently registered */
	enum qb_mqc_state state;
};

/* Settings are the caller's to fill before qb_mqfleet_init; the rest is the
 * fleet's. */
struct qb_mqfleet {
	const char *host; /* numeric address or name of the broker */
	int port, keepalive;
	bool clean_session;
	const char *src_prefix;   /* "127.0.0.": sources .2-.254 round robin; NULL: none */
	const char *id_prefix;    /* client id = id_prefix + (base + index) */
	int base;                 /* first client's number (a slice of a larger set) */
	const char *topic_prefix; /* subscribe QoS 1 to topic_prefix + number; NULL: none */
	/* Every PUBLISH received by any client (the fleet's thread); NULL: dropped. */
	void (*on_message)(void *user, const struct mosquitto_message *m);
	void *user;

	int count[QB_MQC_NSTATES]; /* clients in each state */
	int ep;
	struct qb_mqclient *c;
	int n;
	int errors_logged;
};

/* Connect at most this many at once: below Mosquitto's listen backlog (100). */
#define QB_MQFLEET_WINDOW 64

int qb_mqfleet_init(struct qb_mqfleet *f, int n); /* 0 or -1 */
/* Starts every client, with at most `window` of them waiting for CONNACK or
 * SUBACK at once; returns when each is ready or failed. Those waiting fail
 * after stall_s seconds without progress; at deadline_us (gw_mono_us clock, 0:
 * none) the waiting and the not yet started fail. */
void qb_mqfleet_connect(struct qb_mqfleet *f, int window, double stall_s, int64_t deadline_us);
/* Serves ready sockets for up to timeout_ms. An epoll entry whose data.ptr
 * is NULL (the caller's own fd, e.g. stdin) only wakes the wait. */
void qb_mqfleet_poll(struct qb_mqfleet *f, int timeout_ms);
/* Keepalive for every live client: call about once a second. */
void qb_mqfleet_misc(struct qb_mqfleet *f);
void qb_mqfleet_free(struct qb_mqfleet *f);

/* mosquitto_new with the options every qabench client uses (TCP_NODELAY). */
struct mosquitto *qb_mq_new(const char *id, bool clean, void *obj);
/* Raises RLIMIT_NOFILE toward what n clients need (3 fds each, plus slack),
 * the hard limit too when permitted; returns the soft limit now in force. */
rlim_t qb_mq_raise_nofile(long n);

#endif
