/* Resolution of the primary an agent names in HELLO (protocol.md "Primary",
 * "Resolution") against the workers the pool knows, and the server list of
 * WELCOME and REASSIGN. No I/O: gw_resolve_primary and gw_worker_stream are
 * pure functions (unit-tested); gw_server_list also reads the router's view
 * of the pool, so it runs on the worker's thread. */
#ifndef GW_PRIMARY_H
#define GW_PRIMARY_H

#include "proto/qs_codec.h"

#include <stddef.h>

struct gw_worker;

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

/* The server list of WELCOME and REASSIGN (protocol.md): the primary (or,
 * unresolved, this worker) first, then the other serving workers in the
 * agent's ring order. ws: the workers to take streams from; servers and
 * streams hold n + 1. Returns the number of servers written. */
int gw_server_list(struct gw_worker *w, const char *agent, const char *primary,
                   const struct gw_known_worker *ws, int n, struct qs_server *servers,
                   char (*streams)[320]);

#endif
