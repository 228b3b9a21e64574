/* The qagw program's exit codes and its admin-port subcommands
 * (`qagw -c FILE workers`, `qagw -c FILE agents ID`): a blocking HTTP/1.1
 * client of a running node's admin port, for the command line only (never
 * called from an event loop). docs/service.md documents both. */
#ifndef GW_CLI_H
#define GW_CLI_H

#include "gateway/config.h"

/* Exit codes of qagw (docs/service.md "Exit codes"). */
enum gw_exit {
	GW_EXIT_OK = 0,          /* stopped cleanly; --check, --version, a subcommand succeeded */
	GW_EXIT_FAILURE = 1,     /* runtime failure (store, bind, TLS files, threads, 2nd signal) */
	GW_EXIT_USAGE = 2,       /* usage error or invalid configuration */
	GW_EXIT_REFUSED = 3,     /* the admin port refused the request (401, 404, ...) */
	GW_EXIT_UNREACHABLE = 4, /* the admin port could not be reached (or did not answer) */
};

/* GET /api/workers: a table on stdout, or the raw JSON with json. Returns
 * a gw_exit code; messages for the failures go to stderr. */
int gw_cli_workers(const struct gw_config *c, int json);

/* DELETE /api/workers/{name}: a worker that is down leaves the pool (its
 * agents move); one line on stdout, or the raw JSON. */
int gw_cli_worker_remove(const struct gw_config *c, const char *name, int json);

/* GET /api/agents/{id}: key: value lines on stdout, or the raw JSON. */
int gw_cli_agent(const struct gw_config *c, const char *id, int json);

#endif
