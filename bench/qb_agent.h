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
void qb_agent_free(struct qb_agent *a);

/* A client SSL_CTX trusting ca_file (NULL: no verification, for benches). */
SSL_CTX *qb_tls_client_ctx(const char *ca_file);

#endif
