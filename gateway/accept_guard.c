/* Accept back-off on descriptor or memory exhaustion; see accept_guard.h. */
#include "gateway/accept_guard.h"

#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <string.h>

static void arm(struct gw_accept_guard *g)
{
	struct timeval tv = {0, GW_ACCEPT_RETRY_MS * 1000};
	evtimer_add(g->timer, &tv);
}

static void set_paused(struct gw_accept_guard *g, int on)
{
	if (g->paused)
		atomic_store_explicit(g->paused, on, memory_order_relaxed);
}

static void end_episode(struct gw_accept_guard *g)
{
	g->err = 0;
	g->failures = g->failures_at_enable = 0;
	g->disabled = 0;
	set_paused(g, 0);
}

/* The timer: re-enables a paused listener, then one period later, if no
 * accept failed in between, ends the episode. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct gw_accept_guard *g = arg;
	if (!g->listener || !g->err)
		return;
	if (g->disabled) {
		g->disabled = 0;
		g->failures_at_enable = g->failures;
		evconnlistener_enable(g->listener);
		arm(g);
		return;
	}
	if (g->failures != g->failures_at_enable)
		return; /* failed again: on_error paused it and re-armed the timer */
	gw_log(GW_LOG_INFO, "%s: accepting again after %llu failed accepts in %.1f s (%s)", g->what,
	       (unsigned long long)g->failures, (double)(gw_mono_ms() - g->since_ms) / 1000.0,
	       strerror(g->err));
	end_episode(g);
}

int gw_accept_guard_init(struct gw_accept_guard *g, struct event_base *base, const char *what,
                         _Atomic int *paused)
{
	memset(g, 0, sizeof(*g));
	g->what = what;
	g->paused = paused;
	g->timer = evtimer_new(base, on_timer, g);
	return g->timer ? 0 : -1;
}

void gw_accept_guard_attach(struct gw_accept_guard *g, struct evconnlistener *l)
{
	g->listener = l;
}

void gw_accept_guard_detach(struct gw_accept_guard *g)
{
	if (g->timer)
		evtimer_del(g->timer);
	g->listener = NULL;
	end_episode(g);
}

int gw_accept_guard_on_error(struct gw_accept_guard *g, int err)
{
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
		return 0;
	if (!g->listener)
		return 1;
	if (!g->err) {
		g->err = err;
		g->since_ms = gw_mono_ms();
		set_paused(g, 1);
		gw_log(GW_LOG_WARN,
		       "%s: accept failed: %s: listener paused, retried every %d ms (logged "
		       "again when it accepts)",
		       g->what, strerror(err), GW_ACCEPT_RETRY_MS);
	}
	g->failures++;
	g->disabled = 1;
	evconnlistener_disable(g->listener);
	arm(g);
	return 1;
}

void gw_accept_guard_free(struct gw_accept_guard *g)
{
	if (g->timer)
		event_free(g->timer);
	g->timer = NULL;
	g->listener = NULL;
}
