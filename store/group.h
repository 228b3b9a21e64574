/* Group commit (docs/design.md "Store"): the requests of many sessions of one
 * worker, each a run of rows, go to the store as one statement, in one
 * transaction, and each requester gets its own rows of the result.
 *
 * With a barrier (spec.barrier_sql), the group's statement commits without
 * waiting for its WAL to reach the disk (synchronous_commit off, set by the
 * statement itself): its rows are visible to every other transaction as soon
 * as its result is back, and each part's visible callback runs then. The
 * barrier, a statement whose commit waits for the WAL to be flushed (and
 * replicated, per synchronous_commit) up to its own commit record, is sent at
 * once on the same connection; the parts' done runs only when it has
 * completed, so a part is acknowledged only once its rows are durable. The
 * group's slot is free again as soon as the statement's result is back: the
 * next group runs while this one's WAL is being flushed.
 *
 * A group is sent at the end of the loop turn in which its first part
 * arrived, or, while max_inflight groups are in flight, as soon as one of
 * them completes: under load the next group gathers everything that arrived
 * during the previous commit, at no load a part waits for nothing. A part is
 * acknowledged only from its group's result, which comes after the group's
 * commit. A group that fails on a live connection (a statement error) is
 * split and each part is sent again on its own, so that one part's bad row
 * fails only that part; when the connection is lost every part fails (its
 * requester cannot know whether the group committed). Runs on the owning
 * worker's thread only. */
#ifndef ST_GROUP_H
#define ST_GROUP_H

#include "store/store.h"

struct event_base;
struct st_group;

struct st_group_spec {
	/* The statement (a literal: it is prepared once per connection):
	 * $1..$n_head are the head's parameters, then one array per column. */
	const char *sql;
	int n_cols;
	Oid elem[ST_MAX_PARAMS];       /* element type of each column */
	Oid array_type[ST_MAX_PARAMS]; /* its array type */
	/* Adds the leading scalar parameters when a group is sent. */
	void (*head)(struct st_params *p, void *arg);
	void *head_arg;
	/* The connection to send a group on (NULL: none is up). */
	struct st_conn *(*pick)(void *arg);
	void *pick_arg;
	int max_inflight; /* groups in flight at once */
	int linger_ms;    /* > 0: a group not full waits this long for more parts (< 1000) */
	size_t max_bytes; /* a group stops taking parts past this size */
	int max_rows;     /* ... or this many rows */
	/* NULL, or the durability barrier (see above), e.g. store/upload.c's:
	 * a literal, prepared once per connection. */
	const char *barrier_sql;
};

struct st_group *st_group_new(struct event_base *base, const struct st_group_spec *spec);
/* Fails every part not yet answered (their done gets NULL). */
void st_group_free(struct st_group *g);

/* The columns of the group being filled: add this part's rows to each
 * (st_array_add...), the same number to every column, then call
 * st_group_submit. Between the two, no other part may be started. */
struct st_array *st_group_columns(struct st_group *g);

/* The group being filled takes no more parts: the next st_group_columns
 * starts another, sent after it. */
void st_group_close(struct st_group *g);

/* Ends the part started with st_group_columns: done(arg, res, err) is
 * called once, with the group's whole result (use st_op_rows for this
 * part's rows) or NULL and why. Returns the part's operation, which
 * st_op_cancel cancels; NULL if n_rows is 0 or out of memory (the rows are
 * dropped, done is never called). */
struct st_op *st_group_submit(struct st_group *g, int n_rows, st_done_fn done, void *arg)
    __attribute__((warn_unused_result));

/* With a barrier: visible(arg, res, NULL) runs when the group's statement
 * has committed (its rows visible, not yet durable), before done. Not called
 * for a group that failed (done gets NULL), nor once the part is cancelled.
 * done still decides: a part whose barrier fails gets done(arg, NULL, why)
 * after its visible. */
void st_op_on_visible(struct st_op *op, st_done_fn visible);

/* This part's rows of the result passed to its done: first .. first+n-1. */
void st_op_rows(const struct st_op *op, int *first, int *n);

/* Which group st_group_columns fills: changes each time a new one starts. */
uint64_t st_group_filling(const struct st_group *g);

/* The spec's head_arg. */
void *st_group_head_arg(const struct st_group *g);

/* Groups sent and parts they carried, since the start (for metrics). */
void st_group_stats(const struct st_group *g, uint64_t *groups, uint64_t *parts);

#endif
