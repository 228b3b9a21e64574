/* Group commit; see group.h. A batch is one group statement: its columns,
 * the parts (requesters) whose rows it carries, in order. */
#include "store/group.h"

#include "common/log.h"
#include "store/store_int.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct part {
	struct st_op *op;
	size_t from[ST_MAX_PARAMS], to[ST_MAX_PARAMS]; /* its bytes in each column */
};

struct batch {
	TAILQ_ENTRY(batch) link;
	struct st_group *g; /* NULL once the group is freed while this is in flight */
	struct st_array cols[ST_MAX_PARAMS];
	struct st_params p; /* once sent: the columns' buffers are here */
	int n_head;         /* leading scalar parameters of p */
	struct part *parts;
	int n_parts, cap_parts;
	int rows;
	size_t bytes;
	int solo; /* a part of a failed group sent again alone: never split */
	struct st_conn *conn;
	PGresult *kept; /* with a barrier: the statement's result, while it flushes */
};

struct st_group {
	struct st_group_spec spec;
	struct event *kick;
	struct batch *filling;
	TAILQ_HEAD(batches, batch) ready;
	struct batches sent;     /* in flight */
	struct batches flushing; /* committed, their barrier in flight */
	int inflight;
	size_t mark[ST_MAX_PARAMS];
	uint64_t n_groups, n_parts;
	uint64_t filling_gen; /* incremented for each new filling batch */
};

static struct batch *batch_new(struct st_group *g, int solo)
{
	struct batch *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->g = g;
	b->solo = solo;
	for (int i = 0; i < g->spec.n_cols; i++)
		st_array_begin(&b->cols[i], g->spec.elem[i]);
	return b;
}

/* Answers every part still waiting (res NULL: why), then frees b. */
static void batch_free(struct batch *b, const PGresult *res, const char *why)
{
	for (int i = 0; i < b->n_parts; i++) {
		struct st_op *op = b->parts[i].op;
		if (op && op->done)
			op->done(op->arg, res, res ? NULL : why);
		free(op);
	}
	for (int i = 0; i < ST_MAX_PARAMS; i++)
		free(b->cols[i].buf);
	PQclear(b->kept);
	st_params_clear(&b->p);
	free(b->parts);
	free(b);
}

static void schedule(struct st_group *g)
{
	if (g->inflight >= g->spec.max_inflight)
		return;
	if (g->spec.linger_ms > 0 && TAILQ_EMPTY(&g->ready)) {
		/* only a filling group: it waits linger_ms for more parts */
		if (!evtimer_pending(g->kick, NULL)) {
			struct timeval tv = {0, g->spec.linger_ms * 1000};
			evtimer_add(g->kick, &tv);
		}
		return;
	}
	event_active(g->kick, EV_TIMEOUT, 0);
}

static void close_filling(struct st_group *g)
{
	if (g->filling && g->filling->n_parts > 0)
		TAILQ_INSERT_TAIL(&g->ready, g->filling, link);
	else if (g->filling)
		batch_free(g->filling, NULL, "empty");
	g->filling = NULL;
}

struct st_array *st_group_columns(struct st_group *g)
{
	if (!g->filling) {
		g->filling = batch_new(g, 0);
		g->filling_gen++;
	}
	if (!g->filling)
		return NULL;
	for (int i = 0; i < g->spec.n_cols; i++)
		g->mark[i] = g->filling->cols[i].len;
	return g->filling->cols;
}

static int add_part(struct batch *b, struct st_op *op, const size_t *from, const size_t *to,
                    int ncols)
{
	if (b->n_parts == b->cap_parts) {
		int cap = b->cap_parts ? 2 * b->cap_parts : 8;
		struct part *p = realloc(b->parts, (size_t)cap * sizeof(*p));
		if (!p)
			return -1;
		b->parts = p;
		b->cap_parts = cap;
	}
	struct part *p = &b->parts[b->n_parts++];
	p->op = op;
	memcpy(p->from, from, (size_t)ncols * sizeof(*from));
	memcpy(p->to, to, (size_t)ncols * sizeof(*to));
	return 0;
}

struct st_op *st_group_submit(struct st_group *g, int n_rows, st_done_fn done, void *arg)
{
	struct batch *b = g->filling;
	int ncols = g->spec.n_cols;
	if (!b)
		return NULL;
	size_t to[ST_MAX_PARAMS] = {0}, bytes = 0;
	for (int i = 0; i < ncols; i++) {
		to[i] = b->cols[i].len;
		bytes += b->cols[i].len;
	}
	struct st_op *op = n_rows > 0 ? calloc(1, sizeof(*op)) : NULL;
	if (!op || add_part(b, op, g->mark, to, ncols) != 0) {
		/* drop this part's rows: the columns end where it began */
		for (int i = 0; i < ncols; i++)
			b->cols[i].len = g->mark[i];
		for (int i = 0; i < ncols && n_rows > 0; i++)
			b->cols[i].count -= (uint32_t)n_rows;
		free(op);
		return NULL;
	}
	op->done = done;
	op->arg = arg;
	op->first = b->rows;
	op->n = n_rows;
	b->rows += n_rows;
	b->bytes = bytes;
	if (b->rows >= g->spec.max_rows || b->bytes >= g->spec.max_bytes)
		close_filling(g);
	schedule(g);
	return op;
}

void st_op_on_visible(struct st_op *op, st_done_fn visible)
{
	op->visible = visible;
}

void st_op_rows(const struct st_op *op, int *first, int *n)
{
	*first = op->first;
	*n = op->n;
}

static void on_group_done(void *arg, const PGresult *res, const char *err);

static void send_batch(struct st_group *g, struct batch *b)
{
	b->conn = g->spec.pick ? g->spec.pick(g->spec.pick_arg) : NULL;
	if (g->spec.head)
		g->spec.head(&b->p, g->spec.head_arg);
	b->n_head = b->p.n;
	b->p.reuse = 1; /* the spec's statement: a literal */
	for (int i = 0; i < g->spec.n_cols; i++)
		st_params_array(&b->p, &b->cols[i], g->spec.array_type[i]);
	struct st_op *op =
	    b->conn ? st_submit(b->conn, g->spec.sql, &b->p, on_group_done, b) : NULL;
	if (!op) {
		batch_free(b, NULL, "store connection is down");
		return;
	}
	TAILQ_INSERT_TAIL(&g->sent, b, link);
	g->inflight++;
	g->n_groups++;
	g->n_parts += (uint64_t)b->n_parts;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct st_group *g = arg;
	while (g->inflight < g->spec.max_inflight) {
		struct batch *b = TAILQ_FIRST(&g->ready);
		if (!b) {
			close_filling(g);
			b = TAILQ_FIRST(&g->ready);
		}
		if (!b)
			return;
		TAILQ_REMOVE(&g->ready, b, link);
		send_batch(g, b);
	}
}

/* Each part of the failed batch b again, alone, ahead of what waits. */
static void split(struct st_group *g, struct batch *b)
{
	struct batch *after = NULL;
	for (int i = 0; i < b->n_parts; i++) {
		struct st_op *op = b->parts[i].op;
		struct batch *s = op && op->done ? batch_new(g, 1) : NULL;
		if (!s)
			continue; /* cancelled (or out of memory: answered below) */
		size_t from[ST_MAX_PARAMS], to[ST_MAX_PARAMS];
		for (int c = 0; c < g->spec.n_cols; c++) {
			struct st_array src = {.buf = b->p.values[b->n_head + c],
			                       .len = (size_t)b->p.lengths[b->n_head + c]};
			from[c] = s->cols[c].len;
			st_array_append(&s->cols[c], &src, b->parts[i].from[c], b->parts[i].to[c],
			                (uint32_t)op->n);
			to[c] = s->cols[c].len;
		}
		if (add_part(s, op, from, to, g->spec.n_cols) != 0) {
			batch_free(s, NULL, NULL);
			continue;
		}
		b->parts[i].op = NULL; /* s answers it now */
		op->first = 0;
		s->rows = op->n;
		if (after)
			TAILQ_INSERT_AFTER(&g->ready, after, s, link);
		else
			TAILQ_INSERT_HEAD(&g->ready, s, link);
		after = s;
	}
}

static void on_barrier_done(void *arg, const PGresult *res, const char *err)
{
	struct batch *b = arg;
	if (b->g)
		TAILQ_REMOVE(&b->g->flushing, b, link);
	if (!res && b->g)
		gw_log(GW_LOG_WARN,
		       "store: a group of %d parts committed but its flush was not confirmed (%s):"
		       " each part fails (its rows may be stored: a retry reports them duplicate)",
		       b->n_parts, err ? err : "?");
	batch_free(b, res ? b->kept : NULL, err ? err : "the store did not confirm the commit");
}

/* The group's statement committed (not yet durable): keep its result, send
 * the barrier, tell each part its rows are visible. -1: the barrier could
 * not be sent (nothing was called). */
static int flush_after(struct st_group *g, struct batch *b, const PGresult *res)
{
	b->kept = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
	struct st_params p = {.reuse = 1}; /* the spec's barrier: a literal */
	struct st_op *op = b->kept && b->conn && st_conn_is_up(b->conn)
	                       ? st_submit(b->conn, g->spec.barrier_sql, &p, on_barrier_done, b)
	                       : NULL;
	if (!op)
		return -1;
	TAILQ_INSERT_TAIL(&g->flushing, b, link);
	for (int i = 0; i < b->n_parts; i++) {
		struct st_op *part = b->parts[i].op;
		if (part && part->done && part->visible)
			part->visible(part->arg, res, NULL);
	}
	return 0;
}

static void on_group_done(void *arg, const PGresult *res, const char *err)
{
	struct batch *b = arg;
	struct st_group *g = b->g;
	if (!g) { /* the group is gone: nobody to answer */
		batch_free(b, NULL, NULL);
		return;
	}
	TAILQ_REMOVE(&g->sent, b, link);
	g->inflight--;
	/* A statement error on a live connection: one part's rows may be the
	 * cause, so each part is tried alone. A lost connection fails all. */
	if (!res && !b->solo && b->n_parts > 1 && b->conn && st_conn_is_up(b->conn)) {
		gw_log(GW_LOG_WARN, "store: a group of %d parts failed (%s): each part again alone",
		       b->n_parts, err ? err : "?");
		split(g, b);
	}
	if (res && g->spec.barrier_sql) {
		if (flush_after(g, b, res) == 0) {
			schedule(g);
			return;
		}
		res = NULL;
		err = "cannot send the commit's flush barrier";
	}
	batch_free(b, res, err ? err : "the store did not answer");
	schedule(g);
}

struct st_group *st_group_new(struct event_base *base, const struct st_group_spec *spec)
{
	struct st_group *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->spec = *spec;
	if (g->spec.max_inflight < 1)
		g->spec.max_inflight = 1;
	TAILQ_INIT(&g->ready);
	TAILQ_INIT(&g->sent);
	TAILQ_INIT(&g->flushing);
	g->kick = event_new(base, -1, 0, on_kick, g);
	if (!g->kick) {
		free(g);
		return NULL;
	}
	return g;
}

/* Batches whose statement is in flight are freed when it completes (or by
 * their connection's st_conn_free, without a callback): nobody to answer. */
static void detach(struct batches *list)
{
	struct batch *b;
	while ((b = TAILQ_FIRST(list))) {
		TAILQ_REMOVE(list, b, link);
		b->g = NULL;
		for (int i = 0; i < b->n_parts; i++)
			if (b->parts[i].op)
				b->parts[i].op->done = NULL;
	}
}

void st_group_free(struct st_group *g)
{
	if (!g)
		return;
	struct batch *b;
	while ((b = TAILQ_FIRST(&g->ready))) {
		TAILQ_REMOVE(&g->ready, b, link);
		batch_free(b, NULL, "the worker is stopping");
	}
	if (g->filling)
		batch_free(g->filling, NULL, "the worker is stopping");
	detach(&g->sent);
	detach(&g->flushing);
	event_free(g->kick);
	free(g);
}

void st_group_stats(const struct st_group *g, uint64_t *groups, uint64_t *parts)
{
	*groups = g->n_groups;
	*parts = g->n_parts;
}

void *st_group_head_arg(const struct st_group *g)
{
	return g->spec.head_arg;
}

uint64_t st_group_filling(const struct st_group *g)
{
	return g->filling_gen;
}

void st_group_close(struct st_group *g)
{
	close_filling(g);
	schedule(g);
}
