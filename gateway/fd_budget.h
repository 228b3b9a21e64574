/* The node's descriptor budget: what its caps may hold open, checked at start
 * and by --check against RLIMIT_NOFILE (after the soft limit is raised to
 * the hard one), so that a configuration whose caps cannot fit is refused
 * rather than discovered under a flood. Used by gateway/main.c.
 *
 * Refused when it does not fit (conf/qagw.conf [limits] states the formula):
 *   required = workers x (max_pending_hello + [store] connections + GW_FD_PER_WORKER)
 *            + GW_FD_NODE
 * The caps on connections awaiting HELLO count in full: they are what an
 * unauthenticated peer can make the node hold. max_sessions does not count:
 * sessions are agents that authenticated, and its default (100000 per worker)
 * is a ceiling, not a reservation; when sessions use up what is left the
 * listeners pause (accept_guard.h) rather than fail. A note says so when
 * workers x max_sessions exceeds what is left. */
#ifndef GW_FD_BUDGET_H
#define GW_FD_BUDGET_H

#include "gateway/config.h"

#include <stddef.h>
#include <stdint.h>

/* Per worker besides its store connections: listener, event loop (epoll and
 * its notification descriptor), HELLO's own store connection, two Redis
 * connections (commands, subscriptions), one Sentinel lookup, and room for a
 * reconnect overlapping the old connection and for connections being shed. */
#define GW_FD_PER_WORKER 8
/* Per node: standard streams and the log, the main loop and its signal
 * pipe, the admin listener and its connections (up to 64 requests at once),
 * the node's own store and Redis connections, files read at a reload. */
#define GW_FD_NODE 128

struct gw_fd_budget {
	uint64_t limit;    /* RLIMIT_NOFILE (soft, as raised) */
	uint64_t required; /* the formula above */
	uint64_t fixed;    /* required without the max_pending_hello part */
	uint64_t sessions; /* workers x max_sessions */
};

/* Raises the soft RLIMIT_NOFILE to the hard limit (best effort) and returns
 * the soft limit now in force. */
uint64_t gw_fd_limit_raise(void);

/* Computes b for c under limit. Returns 0 when required fits; otherwise -1
 * with err naming the file, the figures and the key to lower. */
int gw_fd_budget_check(const struct gw_config *c, uint64_t limit, struct gw_fd_budget *b, char *err,
                       size_t errlen) __attribute__((warn_unused_result));

/* A note (for the log, or --check's stderr) when workers x max_sessions
 * does not fit in what the caps leave; returns 0 and writes nothing when it
 * fits. */
int gw_fd_budget_note(const struct gw_config *c, const struct gw_fd_budget *b, char *note,
                      size_t notelen);

#endif
