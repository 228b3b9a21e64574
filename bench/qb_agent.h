/* One simulated agent's QASync v1 connection on a libevent loop (plain TCP
 * or TLS through bufferevent_openssl): connect (optionally from a given
 * source address), HELLO, WELCOME, then frames both ways. PING is answered
 * with PONG here; every other frame after WELCOME goes to on_frame. */
#ifndef QB_AGENT_H
#define QB_AGENT_H

#include "proto/qs_codec.h"

#include <openssl/ssl.h>

struct event_base;
struct qb_agent;

struct qb_agent_cbs {
	void (*on_welcome)(struct qb_agent *a, const struct qs_welcome *w);
	void (*on_frame)(struct qb_agent *a, const struct qs_frame *f);
	/* The connection ended (ERROR, EOF, failure); why says which. The
	 * agent must not be used after this except for qb_agent_free. */
	void (*on_close)(struct qb_agent *a, const char *why);
};

struct qb_agent_conf {
	const char *host; /* numeric IPv4/IPv6 */
	int port;
	const char *src_ip;   /* bind to this source address first, or NULL */
	SSL_CTX *tls;         /* NULL: plain TCP */
	const char *agent_id; /* HELLO agent id */
	const char *token;    /* HELLO token ("" with auth = off) */
	const char *primary;  /* HELLO primary ("" : router-assigned) */
	int persist;          /* HELLO flags PERSIST */
};

struct qb_agent *qb_agent_new(struct event_base *base, const struct qb_agent_conf *c,
                              const struct qb_agent_cbs *cbs, void *user);
/* Encodes and queues one frame; 0 or -1. */
int qb_agent_send(struct qb_agent *a, const struct qs_frame *f);
void *qb_agent_user(const struct qb_agent *a);
/* A FETCH of up to QS_DEFAULT_MAX_BATCH messages and 1 MiB; 0 or -1. */
int qb_agent_fetch(struct qb_agent *a);
/* One DELIVER_ACK for every message of d (none when d is empty); 0 or -1. */
int qb_agent_ack_all(struct qb_agent *a, const struct qs_deliver *d);

/* The port of a WELCOME/REASSIGN stream, "tcpip(host=H;port=P)" or
 * "tls(...)"; 0 without one. The host is not used: benches connect to their
 * --host (numeric). */
int qb_stream_port(struct qs_str stream);
/* Whether m's body starts with magic (4 bytes) and a bench index (4 bytes,
 * into *idx): the messages a mode sent itself. */
int qb_body_index(const struct qs_msg_in *m, uint32_t magic, uint32_t *idx);
void qb_agent_free(struct qb_agent *a);

/* A client SSL_CTX trusting ca_file (NULL: no verification, for benches). */
SSL_CTX *qb_tls_client_ctx(const char *ca_file);

#endif
