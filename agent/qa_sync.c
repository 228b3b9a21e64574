/* The sync transaction: see qa_sync.h. UPLOADs are pipelined (up to
 * UPLOAD_PIPELINE in flight); every other request is sent on its own and
 * waits for its response. */
#include "agent/qa_sync.h"

#include <stdlib.h>
#include <string.h>

#include "proto/qs_codec.h"

/* Bytes of an UPLOAD frame (type byte + payload) before its messages. */
#define UPLOAD_HEAD (1 + 4 + 2)

const char *qa_sync_result_name(int result)
{
	static const char *const names[QA_RESULT_COUNT] = {
	    "stored", "duplicate", "invalid", "expired", "too_large", "quota", "conflict",
	};
	return result >= 0 && result < QA_RESULT_COUNT ? names[result] : "unknown";
}

static size_t msg_out_size(const struct qa_out_msg *m)
{
	return 16 + 2 + strlen(m->address) + 1 + 8 + m->props_len + 4 + m->body_len;
}

static void count_results(struct qa_sync_result *r, const struct qa_out_result *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].result < QA_RESULT_COUNT)
			r->uploaded[v[i].result]++;
}

/* An UPLOAD sent, its UPLOAD_ACK not read yet. */
struct inflight {
	uint32_t batch;
	size_t n;
	uint8_t (*ids)[16];
};

/* Sends one UPLOAD of msgs[0..n) and records it in *b (its UPLOAD_ACK is
 * read later by apply_ack). */
static int send_batch(struct qa_session *s, const struct qa_out_msg *msgs, size_t n,
                      struct inflight *b, struct qa_error *e)
{
	struct qs_msg_out *out = calloc(n, sizeof *out);
	b->ids = calloc(n, sizeof *b->ids);
	int rc = -1;
	size_t decoded = 0;
	if (out == NULL || b->ids == NULL) {
		qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
		goto done;
	}
	for (; decoded < n; decoded++) {
		const struct qa_out_msg *m = &msgs[decoded];
		struct qs_msg_out *o = &out[decoded];
		memcpy(o->id, m->id, 16);
		memcpy(b->ids[decoded], m->id, 16);
		o->to = qs_str_c(m->address);
		o->priority = m->priority;
		o->expires_ms = m->expires_ms;
		o->body.ptr = m->body;
		o->body.len = (uint32_t)m->body_len;
		if (qs_decode_props(m->props, m->props_len, &o->props) != 0) {
			qa_error_set(e, QA_FAIL_STORE, "outbox message has a corrupt props block");
			goto done;
		}
	}
	b->batch = s->next_batch++;
	b->n = n;
	struct qs_frame f = {.type = QS_UPLOAD};
	f.u.upload.batch = b->batch;
	f.u.upload.count = (uint16_t)n;
	f.u.upload.msgs = out;
	if (qa_session_send(s, &f, e) != 0)
		goto done;
	QA_DEBUG(s->log, "UPLOAD batch %u: %zu messages", (unsigned)b->batch, n);
	rc = 0;
done:
	for (size_t i = 0; out != NULL && i < decoded; i++)
		free(out[i].props.v);
	free(out);
	if (rc != 0) {
		free(b->ids);
		b->ids = NULL;
	}
	return rc;
}

/* Reads the UPLOAD_ACK of b, the oldest UPLOAD in flight, and applies it. */
static int apply_ack(struct qa_session *s, struct qa_store *st, const struct inflight *b,
                     struct qa_sync_result *r, struct qa_error *e)
{
	struct qs_frame ack;
	if (qa_session_expect(s, QS_UPLOAD_ACK, &ack, e) != 0)
		return -1;
	const struct qs_upload_ack *a = &ack.u.upload_ack;
	int rc = -1;
	struct qa_out_result *res = NULL;
	if (a->batch != b->batch || a->count != b->n) {
		qa_error_set(e, QA_FAIL_PROTOCOL,
		             "UPLOAD_ACK for batch %u with %u entries; sent batch %u with %zu",
		             (unsigned)a->batch, (unsigned)a->count, (unsigned)b->batch, b->n);
		goto done;
	}
	res = calloc(b->n, sizeof *res);
	if (res == NULL) {
		qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
		goto done;
	}
	size_t known = 0;
	for (size_t i = 0; i < b->n; i++) {
		if (memcmp(a->entries[i].id, b->ids[i], 16) != 0) {
			qa_error_set(e, QA_FAIL_PROTOCOL,
			             "UPLOAD_ACK entry %zu names another message than sent", i);
			goto done;
		}
		/* A result this agent does not know leaves the message queued. */
		if (a->entries[i].result >= QA_RESULT_COUNT) {
			QA_DEBUG(s->log, "UPLOAD_ACK result %u unknown: message kept queued",
			         (unsigned)a->entries[i].result);
			continue;
		}
		memcpy(res[known].id, a->entries[i].id, 16);
		res[known].result = a->entries[i].result;
		known++;
	}
	if (qa_store_out_resolve(st, res, known, e) != 0)
		goto done;
	count_results(r, res, known);
	rc = 0;
done:
	qs_frame_release(&ack);
	free(res);
	return rc;
}

/* UPLOADs in flight at once: each goes out without waiting for the previous
 * one's UPLOAD_ACK (protocol.md "Transport and ordering": the server answers
 * in order), so one busy agent is not held to one commit per round trip. */
#define UPLOAD_PIPELINE 4

/* The in-flight window of upload_outbox: a ring of UPLOAD_PIPELINE. */
struct window {
	struct inflight v[UPLOAD_PIPELINE];
	size_t head, n;
};

static int window_pop(struct qa_session *s, struct qa_store *st, struct window *w,
                      struct qa_sync_result *r, struct qa_error *e)
{
	struct inflight *b = &w->v[w->head];
	int rc = apply_ack(s, st, b, r, e);
	free(b->ids);
	b->ids = NULL;
	w->head = (w->head + 1) % UPLOAD_PIPELINE;
	w->n--;
	return rc;
}

static void window_clear(struct window *w)
{
	for (size_t i = 0; i < UPLOAD_PIPELINE; i++) {
		free(w->v[i].ids);
		w->v[i].ids = NULL;
	}
	w->n = 0;
}

/* Sends msgs[0..n) as the next UPLOAD of the window, first making room. */
static int window_push(struct qa_session *s, struct qa_store *st, struct window *w,
                       const struct qa_out_msg *msgs, size_t n, struct qa_sync_result *r,
                       struct qa_error *e)
{
	if (w->n == UPLOAD_PIPELINE && window_pop(s, st, w, r, e) != 0)
		return -1;
	struct inflight *b = &w->v[(w->head + w->n) % UPLOAD_PIPELINE];
	if (send_batch(s, msgs, n, b, e) != 0)
		return -1;
	w->n++;
	return 0;
}

/* (1) The outbox, in queue order, in UPLOADs of at most max_batch messages
 * and max_frame bytes, up to UPLOAD_PIPELINE of them in flight. A message
 * that cannot fit in any frame is resolved here as too_large, the answer the
 * server would give. quota messages stay queued; after_qid makes sure they
 * are not offered twice in one sync (nor one in flight again). */
static int upload_outbox(struct qa_session *s, struct qa_store *st, struct qa_sync_result *r,
                         struct qa_error *e)
{
	const size_t frame_room = s->welcome.max_frame - UPLOAD_HEAD;
	int64_t after_qid = 0;
	struct window w = {0};
	int rc = 0;
	while (rc == 0) {
		struct qa_out_list list;
		if (qa_store_out_next(st, after_qid, s->welcome.max_batch, &list, e) != 0) {
			rc = -1;
			break;
		}
		if (list.n == 0) {
			qa_out_list_free(&list);
			while (rc == 0 && w.n > 0)
				rc = window_pop(s, st, &w, r, e);
			break;
		}
		size_t first = 0, n = 0, bytes = 0;
		for (size_t i = 0; i < list.n && rc == 0; i++) {
			size_t sz = msg_out_size(&list.v[i]);
			if (sz > frame_room) {
				struct qa_out_result tl = {.result = QS_R_TOO_LARGE};
				memcpy(tl.id, list.v[i].id, 16);
				QA_DEBUG(s->log,
				         "message of %zu bytes cannot fit a frame: too_large", sz);
				if (n > 0) /* keep queue order: send what came before */
					break;
				rc = qa_store_out_resolve(st, &tl, 1, e);
				count_results(r, &tl, rc == 0);
				after_qid = list.v[i].qid;
				first = i + 1;
				continue;
			}
			if (bytes + sz > frame_room)
				break;
			bytes += sz;
			n++;
		}
		if (rc == 0 && n > 0) {
			rc = window_push(s, st, &w, &list.v[first], n, r, e);
			after_qid = list.v[first + n - 1].qid;
		}
		qa_out_list_free(&list);
	}
	window_clear(&w);
	return rc;
}

/* (2) Queued STATUS reports, in frames of at most max_batch entries. The
 * lists sent are returned in *sent, to be removed after the PONG. */
static int send_statuses(struct qa_session *s, struct qa_store *st, struct qa_status_list *sent,
                         struct qa_error *e)
{
	size_t chunk = (s->welcome.max_frame - 3) / 17;
	if (chunk > s->welcome.max_batch)
		chunk = s->welcome.max_batch;
	int64_t after_sid = 0;
	sent->n = 0;
	sent->v = NULL;
	for (;;) {
		struct qa_status_list list;
		if (qa_store_status_next(st, after_sid, chunk, &list, e) != 0)
			return -1;
		if (list.n == 0) {
			qa_status_list_free(&list);
			return 0;
		}
		struct qs_status_entry *entries = calloc(list.n, sizeof *entries);
		struct qa_status_report *grown =
		    realloc(sent->v, (sent->n + list.n) * sizeof *sent->v);
		if (entries == NULL || grown == NULL) {
			free(entries);
			if (grown != NULL)
				sent->v = grown;
			qa_status_list_free(&list);
			return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
		}
		sent->v = grown;
		for (size_t i = 0; i < list.n; i++) {
			memcpy(entries[i].id, list.v[i].id, 16);
			entries[i].status = list.v[i].status;
		}
		struct qs_frame f = {.type = QS_STATUS};
		f.u.status.count = (uint16_t)list.n;
		f.u.status.entries = entries;
		int rc = qa_session_send(s, &f, e);
		free(entries);
		if (rc == 0) {
			memcpy(sent->v + sent->n, list.v, list.n * sizeof *list.v);
			sent->n += list.n;
			after_sid = list.v[list.n - 1].sid;
			QA_DEBUG(s->log, "STATUS: %zu reports", list.n);
		}
		qa_status_list_free(&list);
		if (rc != 0)
			return -1;
	}
}

static char *dup_str(struct qs_str s)
{
	char *p = malloc((size_t)s.len + 1);
	if (p != NULL) {
		memcpy(p, s.ptr, s.len);
		p[s.len] = '\0';
	}
	return p;
}

/* Stores one DELIVER's messages in one transaction, then acknowledges all of
 * them (repeats included: they are committed too, from an earlier delivery). */
static int take_delivery(struct qa_session *s, struct qa_store *st, const struct qs_deliver *d,
                         const struct qa_sync_hooks *hooks, struct qa_sync_result *r,
                         struct qa_error *e)
{
	struct qa_in_msg *in = calloc(d->count, sizeof *in);
	uint64_t *seqs = calloc(d->count, sizeof *seqs);
	struct qs_buf props = {0};
	size_t *props_at = calloc(d->count, sizeof *props_at);
	uint8_t *is_new = calloc(d->count, 1);
	uint8_t(*new_ids)[16] = calloc(d->count, sizeof *new_ids);
	int rc = -1;
	if (in == NULL || seqs == NULL || props_at == NULL || is_new == NULL || new_ids == NULL) {
		qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < d->count; i++) {
		props_at[i] = props.len;
		if (qs_encode_props(&d->msgs[i].props, &props) != 0) {
			qa_error_set(e, QA_FAIL_SYSTEM, "cannot re-encode message properties");
			goto done;
		}
	}
	for (size_t i = 0; i < d->count; i++) {
		const struct qs_msg_in *m = &d->msgs[i];
		in[i].seq = m->seq;
		memcpy(in[i].id, m->id, 16);
		in[i].from = dup_str(m->from);
		in[i].queue = dup_str(m->queue);
		in[i].priority = m->priority;
		in[i].created_ms = m->created_ms;
		in[i].expires_ms = m->expires_ms;
		in[i].props = props.data + props_at[i];
		in[i].props_len = (i + 1 < d->count ? props_at[i + 1] : props.len) - props_at[i];
		in[i].body = (uint8_t *)m->body.ptr;
		in[i].body_len = m->body.len;
		seqs[i] = m->seq;
		if (in[i].from == NULL || in[i].queue == NULL) {
			qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
			goto done;
		}
	}
	size_t added = 0;
	if (qa_store_inbox_add(st, in, d->count, is_new, &added, e) != 0)
		goto done;
	r->received += added;
	/* Committed: only now may the server forget them. */
	struct qs_frame ack = {.type = QS_DELIVER_ACK};
	ack.u.deliver_ack.count = d->count;
	ack.u.deliver_ack.seqs = seqs;
	if (qa_session_send(s, &ack, e) != 0)
		goto done;
	QA_DEBUG(s->log, "DELIVER: %u messages, %zu new, acknowledged", (unsigned)d->count, added);
	if (hooks != NULL && hooks->delivered != NULL) {
		size_t k = 0;
		for (size_t i = 0; i < d->count; i++)
			if (is_new[i])
				memcpy(new_ids[k++], in[i].id, 16);
		hooks->delivered(hooks->ctx, (const uint8_t(*)[16])new_ids, k);
	}
	rc = 0;
done:
	for (size_t i = 0; in != NULL && i < d->count; i++) {
		free(in[i].from);
		free(in[i].queue);
	}
	free(in);
	free(seqs);
	free(props_at);
	free(is_new);
	free(new_ids);
	qs_buf_free(&props);
	return rc;
}

/* (3) FETCH until a DELIVER is empty or says no more. */
static int fetch_all(struct qa_session *s, struct qa_store *st, const struct qa_sync_hooks *hooks,
                     struct qa_sync_result *r, struct qa_error *e)
{
	const uint32_t max_frame = s->welcome.max_frame;
	for (;;) {
		struct qs_frame f = {.type = QS_FETCH};
		f.u.fetch.max_count = s->welcome.max_batch;
		f.u.fetch.max_bytes =
		    max_frame > QS_DELIVER_OVERHEAD ? max_frame - QS_DELIVER_OVERHEAD : 1;
		if (qa_session_send(s, &f, e) != 0)
			return -1;
		struct qs_frame d;
		if (qa_session_expect(s, QS_DELIVER, &d, e) != 0)
			return -1;
		const uint16_t count = d.u.deliver.count;
		const uint8_t more = d.u.deliver.more;
		int rc = count > 0 ? take_delivery(s, st, &d.u.deliver, hooks, r, e) : 0;
		qs_frame_release(&d);
		if (rc != 0)
			return -1;
		if (count == 0 || !more)
			return 0;
	}
}

static void result_init(struct qa_session *s, struct qa_sync_result *r)
{
	memset(r, 0, sizeof *r);
	snprintf(r->server, sizeof r->server, "%s", s->welcome.server);
	r->on_primary = s->welcome.on_primary;
}

/* (4) On PONG, every DELIVER_ACK and STATUS before it is committed: only
 * then do the STATUS reports sent leave the queue. */
static int confirm(struct qa_session *s, struct qa_store *st, const struct qa_status_list *sent,
                   struct qa_sync_result *r, struct qa_error *e)
{
	if (qa_session_ping(s, e) != 0 || qa_store_status_done(st, sent, e) != 0)
		return -1;
	r->statuses_sent = sent->n;
	return 0;
}

int qa_sync_run(struct qa_session *s, struct qa_store *st, const struct qa_sync_hooks *hooks,
                struct qa_sync_result *r, struct qa_error *e)
{
	result_init(s, r);
	struct qa_status_list sent = {0};
	int rc = -1;
	if (upload_outbox(s, st, r, e) == 0 && send_statuses(s, st, &sent, e) == 0 &&
	    fetch_all(s, st, hooks, r, e) == 0 && confirm(s, st, &sent, r, e) == 0)
		rc = 0;
	qa_status_list_free(&sent);
	return rc;
}

int qa_sync_after_push(struct qa_session *s, struct qa_store *st, const struct qa_sync_hooks *hooks,
                       struct qa_sync_result *r, struct qa_error *e)
{
	result_init(s, r);
	struct qa_status_list sent = {0};
	int rc = -1;
	/* Fetch first: the push said something is waiting, and its latency is
	 * what the device's user feels. The outbox goes next: `send -policy
	 * ondemand` from another process may have queued messages meanwhile. */
	if (fetch_all(s, st, hooks, r, e) == 0 && upload_outbox(s, st, r, e) == 0 &&
	    send_statuses(s, st, &sent, e) == 0 && confirm(s, st, &sent, r, e) == 0)
		rc = 0;
	qa_status_list_free(&sent);
	return rc;
}
