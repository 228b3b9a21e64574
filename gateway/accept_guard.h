/* Accept back-off for a listener whose accept(2) fails for want of
 * descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM). The pending
 * connection stays in the backlog, so a listener left enabled would be called
 * again at once and spin; instead the guard disables it and re-enables it from
 * a timer every GW_ACCEPT_RETRY_MS until an accept goes through. An episode is
 * logged twice: when it begins, and when it ends with the count of failed
 * accepts. Used by the workers' listeners (worker.c) and the admin port's
 * (admin/admin.c); a guard belongs to the thread of its event base. */
#ifndef GW_ACCEPT_GUARD_H
#define GW_ACCEPT_GUARD_H

#include <stdatomic.h>
#include <stdint.h>

struct event_base;
struct event;
struct evconnlistener;

#define GW_ACCEPT_RETRY_MS 250

struct gw_accept_guard {
	struct evconnlistener *listener; /* the guarded listener; NULL while there is none */
	struct event *timer;             /* re-enables it, then checks the episode is over */
	const char *what;                /* for the log: "worker ml1", "admin" (not owned) */
	_Atomic int *paused;             /* gauge: 1 from an episode's start to its end */
	int disabled;                    /* the guard disabled the listener; the timer is armed */
	int err;                         /* errno of the episode's first failure (0: none) */
	uint64_t failures;               /* failed accepts in this episode */
	uint64_t failures_at_enable;     /* ... when the listener was last re-enabled */
	int64_t since_ms;                /* when the episode began (monotonic) */
};

/* Prepares g on base. what and paused (may be NULL) must outlive g.
 * Returns 0, or -1 when out of memory. */
int gw_accept_guard_init(struct gw_accept_guard *g, struct event_base *base, const char *what,
                         _Atomic int *paused) __attribute__((warn_unused_result));
/* Guards listener l (which the caller created and still owns). */
void gw_accept_guard_attach(struct gw_accept_guard *g, struct evconnlistener *l);
/* The listener is going away (drain, stop): ends any episode, silently. */
void gw_accept_guard_detach(struct gw_accept_guard *g);
/* From the listener's error callback, with the accept's errno. Returns 1 when
 * err is one the guard handles (the listener is now paused), else 0 (the
 * caller logs it: such a failure consumed its connection and cannot spin). */
int gw_accept_guard_on_error(struct gw_accept_guard *g, int err);
void gw_accept_guard_free(struct gw_accept_guard *g);

#endif
