/* Private to store/: what an operation is, for the files that make them
 * (store.c for a statement, group.c for a part of a group statement). */
#ifndef ST_STORE_INT_H
#define ST_STORE_INT_H

#include "store/store.h"

#include <stdint.h>
#include <sys/queue.h>

struct st_op {
	TAILQ_ENTRY(st_op) link;
	st_done_fn done; /* NULL once cancelled */
	void *arg;
	st_done_fn visible; /* a group's part: see st_op_on_visible (NULL: none) */
	PGresult *res;
	int failed;
	char err[200];
	int64_t sent_ms; /* gw_mono_ms, for the answer deadline */
	int first, n;    /* a group's part: its rows of the group's result */
	int skip;        /* results to pass over first (a PQsendPrepare's) */
	int slot;        /* the prepared statement this op created (-1: none) */
};

#endif
