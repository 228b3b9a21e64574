/* The node's server-side TLS context (OpenSSL 3) for workers with tls = on:
 * TLS 1.2 minimum (1.3 preferred by OpenSSL's defaults), SSL_MODE_RELEASE_BUFFERS
 * so idle sessions stay small, the [tls] certificate chain and key. A SIGHUP
 * reload builds a fresh context and swaps it in only if it loads; sessions
 * already open keep theirs. Workers take new SSL objects from any thread. */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <stddef.h>

struct gw_tls;
typedef struct ssl_st SSL;

/* Returns NULL with err naming the file when the certificate or key does not load. */
struct gw_tls *gw_tls_new(const char *cert, const char *key, char *err, size_t errlen);
/* Loads cert and key into a new context; on failure keeps the old one and says why. */
int gw_tls_reload(struct gw_tls *t, const char *cert, const char *key, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* A new server SSL from the current context (thread-safe), or NULL. */
SSL *gw_tls_ssl(struct gw_tls *t);
void gw_tls_free(struct gw_tls *t);

#endif
