/* The message lifecycle's background job (docs/design.md "Store (store/)", docs/operations.md
 * "Retention"): on the node's first worker, it expires due pending messages (status 30,
 * the sender told) and purges final messages older than keep_days, in small batches
 * on a store connection of its own, paced so that it keeps that connection busy at
 * most a fifth of the time. Runs on the worker's thread. */
#ifndef GW_RETENTION_H
#define GW_RETENTION_H

#include <stdint.h>

struct event_base;
struct gw_config;
struct gw_counters;
struct gw_gauges;
struct gw_retention;

/* Creates the job on the worker's loop and schedules its first run 5 s from
 * now. name (the worker's, for the log), conf, counters (where the job
 * counts what it expired and purged, its runs and failures) and gauges (its
 * last run, and the store's backlog read after each run) outlive the job. */
struct gw_retention *gw_retention_new(struct event_base *base, const struct gw_config *conf,
                                      const char *name, struct gw_counters *counters,
                                      struct gw_gauges *gauges);
/* The worker drains for SIGTERM: no run starts after the batch in flight. */
void gw_retention_stop(struct gw_retention *r);
/* Frees the job; a statement in flight is abandoned (its result ignored). */
void gw_retention_free(struct gw_retention *r);

/* The job's pacing decisions, apart from its timer, store connection and clocks
 * so that tests/unit/test_gw_retention.c can drive them with a fake clock: the
 * caller reads the clocks (gw_mono_ms, gw_wall_ms) and passes the readings. */
#define GW_RETENTION_BATCH 1000 /* rows per batch; a shorter batch ends its step */

enum gw_retention_step {
	GW_RETENTION_EXPIRE, /* qa_expire batches: due pending messages */
	GW_RETENTION_PURGE,  /* qa_purge batches: final messages older than keep */
};

struct gw_retention_pace {
	int in_run; /* between the first batch of a run and its last */
	enum gw_retention_step step;
	int64_t batch_start_ms; /* monotonic: the pacing must not follow a clock step */
};

/* How often a run starts: keep/4, between 1 s and 60 s. */
int64_t gw_retention_interval_ms(int64_t keep_ms);
/* A run starts: expiry first. */
void gw_retention_run_begin(struct gw_retention_pace *p);
/* A batch starts at mono_ms (monotonic) and wall_ms (epoch): returns its cutoff in
 * epoch ms (expiry: due before wall_ms; purge: final before wall_ms - keep_ms). */
int64_t gw_retention_batch_begin(struct gw_retention_pace *p, int64_t mono_ms, int64_t wall_ms,
                                 int64_t keep_ms);
/* How long the batch in flight has taken at mono_ms. */
int64_t gw_retention_batch_took(const struct gw_retention_pace *p, int64_t mono_ms);
/* The batch came back at mono_ms with rows rows: returns the pause before the next
 * batch, PACE (4) times what this one took, at least 20 ms, so that the job keeps
 * its connection busy at most a fifth of the time; a short batch moves expiry on to
 * the purge, and ends the run after the purge (in_run = 0): the pause is then
 * gw_retention_interval_ms(keep_ms), the idle period until the next run. */
int64_t gw_retention_batch_end(struct gw_retention_pace *p, int rows, int64_t mono_ms,
                               int64_t keep_ms);
/* The run ends early (a failed or unsent batch, or the worker stopping). */
void gw_retention_run_abort(struct gw_retention_pace *p);

#endif
