/* The lifecycle job; see retention.h. One run: qa_expire batches until one
 * comes back short, then qa_purge batches likewise. The job has a store
 * connection of its own, so a batch never waits behind the worker's syncs
 * nor they behind it, and the time a batch takes is PostgreSQL's. After
 * every batch the job waits PACE times as long as the batch took (at least
 * MIN_PAUSE_MS), so a purge of millions of rows uses at most a fifth of one
 * backend; each batch is a short transaction over at most BATCH rows, found
 * through an index, that skips rows a session has locked. */
#include "gateway/retention.h"

#include "common/clock.h"
#include "common/log.h"
#include "gateway/config.h"
#include "gateway/counters.h"
#include "store/queries.h"
#include "store/store.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#define BATCH        GW_RETENTION_BATCH
#define PACE         4
#define MIN_PAUSE_MS 20
#define FIRST_RUN_S  5

struct gw_retention {
	struct event_base *base; /* the worker's loop: the job runs on its thread */
	const struct gw_config *conf;
	const char *name;             /* the worker's, for the log */
	struct gw_counters *counters; /* the worker's: messages_expired, messages_purged */
	struct gw_gauges *gauges;     /* the worker's: retention_last_run, backlog_* */
	int failed;                   /* this run was cut short */
	int stopping;                 /* the worker drains for SIGTERM: no further run */
	struct st_conn *store;        /* the job's own connection */
	struct event *timer;
	struct st_op *op;
	struct gw_retention_pace pace;
	int64_t run_start_ms; /* monotonic */
	int64_t run_expired, run_purged;
};

/* ---- the pacing (no timer, no store, no clock of its own) ---- */

int64_t gw_retention_interval_ms(int64_t keep_ms)
{
	int64_t ms = keep_ms / 4;
	return ms < 1000 ? 1000 : ms > 60000 ? 60000 : ms;
}

void gw_retention_run_begin(struct gw_retention_pace *p)
{
	p->in_run = 1;
	p->step = GW_RETENTION_EXPIRE;
}

int64_t gw_retention_batch_begin(struct gw_retention_pace *p, int64_t mono_ms, int64_t wall_ms,
                                 int64_t keep_ms)
{
	p->batch_start_ms = mono_ms;
	/* expiry and keep are epoch ms in the store */
	return p->step == GW_RETENTION_EXPIRE ? wall_ms : wall_ms - keep_ms;
}

int64_t gw_retention_batch_took(const struct gw_retention_pace *p, int64_t mono_ms)
{
	return mono_ms - p->batch_start_ms;
}

int64_t gw_retention_batch_end(struct gw_retention_pace *p, int rows, int64_t mono_ms,
                               int64_t keep_ms)
{
	if (rows < BATCH) {
		if (p->step == GW_RETENTION_PURGE) {
			p->in_run = 0;
			return gw_retention_interval_ms(keep_ms);
		}
		p->step = GW_RETENTION_PURGE;
	}
	int64_t pause = gw_retention_batch_took(p, mono_ms) * PACE;
	return pause < MIN_PAUSE_MS ? MIN_PAUSE_MS : pause;
}

void gw_retention_run_abort(struct gw_retention_pace *p)
{
	p->in_run = 0;
}

/* ---- the job ---- */

static const char *step_name(const struct gw_retention *r)
{
	return r->pace.step == GW_RETENTION_EXPIRE ? "expiry" : "purge";
}

static void arm(struct gw_retention *r, int64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(r->timer, &tv);
}

static void on_backlog(void *arg, const PGresult *res, const char *err)
{
	struct gw_retention *r = arg;
	r->op = NULL;
	int64_t pending, oldest;
	if (!res || st_backlog_read(res, &pending, &oldest) != 0) {
		gw_log(GW_LOG_WARN, "worker %s: the store's backlog not read: %s", r->name,
		       err ? err : "unexpected result");
		return;
	}
	atomic_store(&r->gauges->backlog_oldest_ms, oldest);
	atomic_store(&r->gauges->backlog_pending, pending);
}

/* The run is over (pace.in_run is 0): logs it, counts it, reads the
 * store's backlog (the job's connection is free now) and arms the next. */
static void end_run(struct gw_retention *r)
{
	if (r->failed) {
		atomic_fetch_add_explicit(&r->counters->retention_failures, 1,
		                          memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&r->counters->retention_runs, 1, memory_order_relaxed);
		atomic_store(&r->gauges->retention_last_run, (int)(gw_wall_ms() / 1000));
		r->op = st_backlog(r->store, on_backlog, r);
	}
	gw_log(GW_LOG_DEBUG, "worker %s: retention run %s: expired %lld, purged %lld in %lld ms",
	       r->name, r->failed ? "failed" : "done", (long long)r->run_expired,
	       (long long)r->run_purged, (long long)(gw_mono_ms() - r->run_start_ms));
	if (r->run_expired || r->run_purged)
		gw_log(GW_LOG_INFO,
		       "worker %s: retention: expired %lld, purged %lld (final and older than "
		       "%lld s) in %lld ms",
		       r->name, (long long)r->run_expired, (long long)r->run_purged,
		       (long long)(r->conf->keep_ms / 1000),
		       (long long)(gw_mono_ms() - r->run_start_ms));
	arm(r, gw_retention_interval_ms(r->conf->keep_ms));
}

static void on_batch(void *arg, const PGresult *res, const char *err)
{
	struct gw_retention *r = arg;
	r->op = NULL;
	if (!res) {
		gw_log(GW_LOG_WARN, "worker %s: retention %s failed: %s", r->name, step_name(r),
		       err);
		r->failed = 1;
		gw_retention_run_abort(&r->pace);
		end_run(r);
		return;
	}
	int64_t now = gw_mono_ms();
	int n = st_batch_read(res);
	gw_log(GW_LOG_DEBUG, "worker %s: retention %s batch: %d rows in %lld ms", r->name,
	       step_name(r), n, (long long)gw_retention_batch_took(&r->pace, now));
	if (r->pace.step == GW_RETENTION_EXPIRE) {
		atomic_fetch_add_explicit(&r->counters->messages_expired, (uint64_t)n,
		                          memory_order_relaxed);
		r->run_expired += n;
	} else {
		atomic_fetch_add_explicit(&r->counters->messages_purged, (uint64_t)n,
		                          memory_order_relaxed);
		r->run_purged += n;
	}
	int64_t pause = gw_retention_batch_end(&r->pace, n, now, r->conf->keep_ms);
	if (!r->pace.in_run)
		end_run(r);
	else
		arm(r, pause);
}

static void submit(struct gw_retention *r)
{
	int64_t cutoff =
	    gw_retention_batch_begin(&r->pace, gw_mono_ms(), gw_wall_ms(), r->conf->keep_ms);
	if (r->pace.step == GW_RETENTION_EXPIRE)
		r->op = st_expire(r->store, cutoff, BATCH, on_batch, r);
	else
		r->op = st_purge(r->store, cutoff, BATCH, on_batch, r);
	if (!r->op) { /* the store is down: try again at the next run */
		r->failed = 1;
		gw_retention_run_abort(&r->pace);
		end_run(r);
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct gw_retention *r = arg;
	if (r->op) { /* the backlog read of the last run is still out */
		arm(r, 1000);
		return;
	}
	if (r->stopping) {
		gw_retention_run_abort(&r->pace);
		return;
	}
	if (!r->pace.in_run) { /* a new run: expiry first, then the purge */
		gw_retention_run_begin(&r->pace);
		r->run_start_ms = gw_mono_ms();
		r->run_expired = r->run_purged = 0;
		r->failed = 0;
	}
	submit(r);
}

struct gw_retention *gw_retention_new(struct event_base *base, const struct gw_config *conf,
                                      const char *name, struct gw_counters *counters,
                                      struct gw_gauges *gauges)
{
	struct gw_retention *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->base = base;
	r->conf = conf;
	r->name = name;
	r->counters = counters;
	r->gauges = gauges;
	atomic_store(&gauges->backlog_pending, -1);
	char cname[160];
	snprintf(cname, sizeof(cname), "%s/%s/retention", conf->node_name, name);
	r->store = st_conn_new(base, conf->conninfo, cname, NULL, NULL);
	r->timer = evtimer_new(base, on_timer, r);
	if (!r->store || !r->timer) {
		gw_retention_free(r);
		return NULL;
	}
	st_conn_set_timeout(r->store, conf->store_timeout * 1000);
	arm(r, FIRST_RUN_S * 1000);
	return r;
}

void gw_retention_stop(struct gw_retention *r)
{
	if (r)
		r->stopping = 1;
}

void gw_retention_free(struct gw_retention *r)
{
	if (!r)
		return;
	if (r->op)
		st_op_cancel(r->op);
	if (r->timer)
		event_free(r->timer);
	if (r->store)
		st_conn_free(r->store);
	free(r);
}
