/* The store's schema and start-up work: versioned migrations (serialised
 * across nodes by an advisory lock) and the persistent list of known workers.
 * Blocking libpq calls: for the main thread at start, never for a worker. */
#ifndef ST_SCHEMA_H
#define ST_SCHEMA_H

#include <stddef.h>

struct st_worker_row {
	const char *name;
	const char *node;
	const char *advertise; /* comma-separated HOST:PORT list, first is the stream agents get */
	int tls;
	int capacity;
};

/* Connects as "qagw/" name (retrying until wait_s seconds have passed),
 * applies pending migrations, and records this node's workers. Returns 0,
 * or -1 with err. */
int st_startup(const char *conninfo, const char *name, int wait_s, const struct st_worker_row *rows,
               int n, char *err, size_t errlen) __attribute__((warn_unused_result));

/* The newest schema version this build knows. */
int st_schema_version(void);

#endif
