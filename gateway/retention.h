/* The message lifecycle's background job (gateway.md "Store", docs/operations.md
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
struct gw_retention;

/* Creates the job on the worker's loop and schedules its first run 5 s from
 * now. name (the worker's, for the log), conf and counters (where the job
 * counts what it expired and purged) outlive the job. */
struct gw_retention *gw_retention_new(struct event_base *base, const struct gw_config *conf,
                                      const char *name, struct gw_counters *counters);
/* The worker drains for SIGTERM: no run starts after the batch in flight. */
void gw_retention_stop(struct gw_retention *r);
/* Frees the job; a statement in flight is abandoned (its result ignored). */
void gw_retention_free(struct gw_retention *r);

#endif
