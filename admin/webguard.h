/* The admin port's defences against web pages (admin.md "Requests from web
 * pages"): which Host a request may name (against DNS rebinding), which
 * Origin may change state (against cross-site requests) and which body type
 * is accepted. Pure functions on header values; admin.c applies them to each
 * request. The allowed names are parsed once, at start (adm_guard_init). */
#ifndef ADM_WEBGUARD_H
#define ADM_WEBGUARD_H

#include <stddef.h>
#include <sys/socket.h>

#define ADM_GUARD_MAX_HOSTS 32

struct adm_guard {
	/* [admin] allowed_hosts, lowercased, without brackets or port */
	char hosts[ADM_GUARD_MAX_HOSTS][256];
	int n_hosts;
	/* the admin port's own listen address, when it is not a wildcard */
	struct sockaddr_storage listen_sa;
};

/* Parses allowed (comma-separated names or addresses, blanks ignored) and
 * records listen_sa (may be NULL). Returns 0, or -1 with err when an entry is
 * not a host name or address (the other entries are kept). */
int adm_guard_init(struct adm_guard *g, const char *allowed, const struct sockaddr *listen_sa,
                   char *err, size_t errlen);

/* 1 when a Host header value may be answered: a loopback name (localhost,
 * *.localhost) or address (127.0.0.0/8, [::1]), a name in allowed_hosts or
 * the listen address itself, each with or without ":port". NULL (no Host
 * header: HTTP/1.0, never a browser) is answered. */
int adm_guard_host_ok(const struct adm_guard *g, const char *host);

/* 1 when a request that may change state (any method but GET and HEAD) may
 * proceed: no Origin and no "Sec-Fetch-Site: cross-site" (a script, curl), or
 * an Origin "http://HOST" or "https://HOST" where HOST is the request's own
 * Host header (which adm_guard_host_ok has accepted). */
int adm_guard_origin_ok(const char *origin, const char *sec_fetch_site, const char *host);

/* 1 for "application/json", with optional parameters (a charset must be
 * utf-8); media type and parameter names in any case. */
int adm_guard_is_json(const char *content_type);

#endif
