/* Server TLS context; see tls.h. */
#include "gateway/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct gw_tls {
	pthread_mutex_t lock; /* guards ctx: swapped by the main thread, read by workers */
	SSL_CTX *ctx;
};

static void ssl_reason(char *err, size_t errlen, const char *what, const char *path)
{
	char buf[256] = "unknown error";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	snprintf(err, errlen, "[tls] %s %s: %s", what, path, buf);
}

static SSL_CTX *make_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		ssl_reason(err, errlen, "cannot create a context for", cert);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* No resumption state kept per connection (agents reconnect rarely and
	 * a full handshake is cheap next to a session's life): no session
	 * cache and no TLS 1.3 tickets, so an idle session keeps no SSL_SESSION
	 * copies (docs/benchmarks.md: idle TLS memory). */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		ssl_reason(err, errlen, "cert", cert);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		ssl_reason(err, errlen, "key", key);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_reason(err, errlen, "key does not match the certificate", cert);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct gw_tls *gw_tls_new(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = make_ctx(cert, key, err, errlen);
	if (!ctx)
		return NULL;
	struct gw_tls *t = calloc(1, sizeof(*t));
	if (!t) {
		SSL_CTX_free(ctx);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->ctx = ctx;
	return t;
}

int gw_tls_reload(struct gw_tls *t, const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = make_ctx(cert, key, err, errlen);
	if (!ctx)
		return -1;
	pthread_mutex_lock(&t->lock);
	SSL_CTX *old = t->ctx;
	t->ctx = ctx;
	pthread_mutex_unlock(&t->lock);
	SSL_CTX_free(old); /* SSLs made from it hold their own references */
	return 0;
}

SSL *gw_tls_ssl(struct gw_tls *t)
{
	pthread_mutex_lock(&t->lock);
	SSL *ssl = SSL_new(t->ctx);
	pthread_mutex_unlock(&t->lock);
	return ssl;
}

void gw_tls_free(struct gw_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	pthread_mutex_destroy(&t->lock);
	free(t);
}
