/* Resolution of the primary an agent names in HELLO (protocol.md "Primary",
 * "Resolution") against the workers the pool knows, and the server list of
 * WELCOME. Pure functions: no I/O, unit-tested. */
#ifndef GW_PRIMARY_H
#define GW_PRIMARY_H

#include <stddef.h>

struct gw_known_worker {
	char name[65];
	char advertise[1024]; /* comma-separated HOST:PORT, as the store keeps it */
	int tls;
};

/* Returns the index in ws of the worker the primary names, or -1 when it is
 * empty or unresolved. "NAME" without a colon is a worker name; "HOST:PORT"
 * matches any advertised address: host case-insensitive, trailing dot
 * ignored, IPv6 in brackets, ports compared as numbers. */
int gw_resolve_primary(const char *primary, size_t len, const struct gw_known_worker *ws, int n);

/* Writes the stream of a worker's first advertised address, e.g.
 * "tcpip(host=ml1.example.com;port=2439)". Returns 0, or -1 if it does not fit. */
int gw_worker_stream(const struct gw_known_worker *w, char *out, size_t outlen);

#endif
