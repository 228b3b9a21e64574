/* What each agent request does: HELLO, UPLOAD, FETCH, DELIVER_ACK and
 * STATUS, each one statement of the store's SQL API (store/schema.c). A
 * handler validates, submits, and answers from the completion callback; a
 * store failure answers ERROR store_unavailable and acknowledges nothing. */
#include "common/clock.h"
#include "common/log.h"
#include "gateway/credentials.h"
#include "gateway/pool.h"
#include "gateway/primary.h"
#include "gateway/session_int.h"
#include "gateway/worker.h"
#include "router/rt_pool.h"
#include "store/store.h"
#include "store/agent.h"
#include "store/upload.h"

#include <event2/bufferevent.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An UPLOAD read and not answered yet (s->up_head and on, in request
 * order; session_int.h GW_UPLOAD_PIPELINE). */
struct gw_upload {
	struct gw_upload *next;
	struct gw_session *s;
	struct st_op *op; /* in the store; NULL once it answered (or none was needed) */
	char *failed;     /* the store could not commit it: why (malloc'd) */
	uint32_t batch;
	uint16_t count;
	uint8_t (*ids)[16];
	uint8_t *results;
	uint16_t *sent;    /* sent[k] = index in the batch of the store's row k+1 */
	char (*rcpt)[121]; /* rcpt[k]: recipient of the store's row k+1 (for pushes) */
	int n_sent;
	int64_t started_ms; /* submit time (monotonic), for qagw_store_commit_seconds */
	uint32_t frame_len; /* counted in s->up_bytes */
};

static void free_upload(struct gw_upload *u)
{
	if (!u)
		return;
	if (u->op)
		st_op_cancel(u->op);
	free(u->failed);
	free(u->ids);
	free(u->results);
	free(u->sent);
	free(u->rcpt);
	free(u);
}

void gw_req_abandon(struct gw_session *s)
{
	struct gw_upload *u;
	while ((u = s->up_head)) {
		s->up_head = u->next;
		free_upload(u);
	}
	s->n_uploads = 0;
	s->up_bytes = 0;
}

/* The store could not run the request: nothing is acknowledged (neither the
 * UPLOADs read after it). */
static void store_failed(struct gw_session *s, const char *why)
{
	s->op = NULL;
	gw_req_abandon(s);
	gw_count(s->w, store_failures, 1);
	gw_slog(GW_LOG_WARN, s, "store: %s", why ? why : "unavailable");
	gw_session_error(s, QS_E_STORE_UNAVAILABLE, "the message store cannot commit right now");
}

/* The session waits for op, just submitted; NULL: the store could not take
 * it, and the session answers store_unavailable. */
static void waited(struct gw_session *s, struct st_op *op)
{
	if (!op) {
		store_failed(s, "store connection is down");
		return;
	}
	gw_session_wait(s, op);
}

static void copy_str(char *dst, size_t cap, struct qs_str v)
{
	size_t n = v.len < cap - 1 ? v.len : cap - 1;
	if (n) /* an empty string's ptr may be NULL: memcpy(dst, NULL, 0) is undefined */
		memcpy(dst, v.ptr, n);
	dst[n] = 0;
}

/* ---- HELLO ---- */

/* WELCOME goes out once the session and the agent's primary are registered
 * for the whole pool (protocol.md HELLO), or at once while Redis is down. */
static void finish_welcome(struct gw_session *s)
{
	if (s->state != GW_S_WELCOMING)
		return;
	int rc = bufferevent_write(s->bev, s->welcome.data, s->welcome.len);
	qs_buf_free(&s->welcome);
	if (rc != 0) {
		gw_session_error(s, QS_E_INTERNAL, "cannot write WELCOME");
		return;
	}
	gw_session_welcomed(s);
	s->gauged = 1;
	atomic_fetch_add(&s->w->gauges.sessions, 1);
	atomic_fetch_add(&s->w->gauges.on_primary, s->on_primary);
	s->gauged_unresolved = s->primary_sent[0] && !s->primary[0];
	atomic_fetch_add(&s->w->gauges.unresolved, s->gauged_unresolved);
	gw_slog(GW_LOG_INFO, s,
	        "HELLO: primary \"%s\" -> %s, on_primary %d, persist %d, epoch %llu",
	        s->primary_sent, s->primary[0] ? s->primary : "(unresolved)", s->on_primary,
	        s->persist, (unsigned long long)s->epoch);
	gw_push_after_welcome(s);
	gw_session_request_done(s);
	if (s->reassign_to) { /* moved while it was welcomed */
		char *to = s->reassign_to;
		s->reassign_to = NULL;
		if (strcmp(to, s->primary) != 0)
			gw_session_reassign(s, to);
		free(to);
	}
}

/* WELCOME, once the primary is known (pinned: resolved at HELLO; else the
 * router's answer, or the store's record while Redis is down). */
static void send_welcome(struct gw_session *s)
{
	struct gw_worker *w = s->w;
	int n = s->n_known;
	struct qs_server *servers = calloc((size_t)n + 1, sizeof(*servers));
	char(*streams)[320] = calloc((size_t)n + 1, sizeof(*streams));
	if (!servers || !streams) {
		free(servers), free(streams);
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	s->on_primary = s->primary[0] && strcmp(s->primary, w->wc->name) == 0;
	struct qs_frame f = {.type = QS_WELCOME};
	struct qs_welcome *wl = &f.u.welcome;
	wl->version = QS_VERSION;
	wl->server = qs_str_c(w->wc->name);
	wl->primary = qs_str_c(s->primary);
	wl->on_primary = (uint8_t)s->on_primary;
	wl->n_servers =
	    (uint16_t)gw_server_list(w, s->agent, s->primary, s->known, n, servers, streams);
	wl->servers = servers;
	wl->max_frame = w->conf->max_frame;
	wl->max_batch = (uint16_t)w->conf->max_batch;
	wl->heartbeat_s = (uint32_t)w->conf->heartbeat;
	s->welcome.len = 0;
	int rc = qs_encode(&f, &s->welcome);
	free(servers), free(streams);
	free(s->known);
	s->known = NULL;
	s->n_known = 0;
	if (rc != 0) {
		gw_session_error(s, QS_E_INTERNAL, "cannot encode WELCOME");
		return;
	}
	finish_welcome(s);
}

static int is_pinned(const struct gw_session *s)
{
	return s->primary_sent[0] != 0;
}

static void on_claimed(void *arg, uint64_t epoch, const char *primary)
{
	struct gw_session *s = gw_ticket_redeem(arg);
	if (!s) /* the session ended first; its entry is cleared by the next HELLO */
		return;
	s->epoch = epoch;
	if (!epoch)
		gw_slog(GW_LOG_WARN, s, "redis: session not registered for the pool");
	else if (!is_pinned(s)) {
		if (strcmp(primary, s->primary) != 0 && primary[0]) {
			const char *a[1] = {s->agent}, *pr[1] = {primary};
			gw_pool_record_assignments(s->w, a, pr, 1);
		}
		snprintf(s->primary, sizeof(s->primary), "%s", primary);
	}
	send_welcome(s);
}

/* Registers the session (and, for an agent that names no primary, gets
 * its primary from the router) for the whole pool, then WELCOME. */
static void claim_session(struct gw_session *s)
{
	struct gw_worker *w = s->w;
	if (w->pool && rt_pool_is_up(w->pool)) {
		struct rt_claim c;
		gw_session_claim_of(s, &c);
		struct gw_ticket *t = gw_ticket_new(s);
		if (t) {
			if (rt_pool_claim(w->pool, &c, 0, on_claimed, t) == 0)
				return;
			gw_ticket_redeem(t);
		}
	}
	send_welcome(s);
}

static void on_hello(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	struct gw_worker *w = s->w;
	if (!res) {
		store_failed(s, err);
		return;
	}
	int n = st_hello_rows(res);
	if (n < 0) {
		store_failed(s, "unexpected result from qa_hello");
		return;
	}
	struct gw_known_worker *ws = calloc((size_t)n + 1, sizeof(*ws));
	if (!ws) {
		s->op = NULL;
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	int self = -1;
	struct st_hello_row row = {0};
	for (int i = 0; i < n; i++) {
		st_hello_row(res, i, &row);
		snprintf(ws[i].name, sizeof(ws[i].name), "%.*s", row.name_len, row.name);
		snprintf(ws[i].advertise, sizeof(ws[i].advertise), "%.*s", row.advertise_len,
		         row.advertise);
		ws[i].tls = row.tls;
		if (strcmp(ws[i].name, w->wc->name) == 0)
			self = i;
	}
	s->pending_at_hello = n > 0 ? row.pending : 0;
	if (is_pinned(s)) {
		int prim = gw_resolve_primary(s->primary_sent, strlen(s->primary_sent), ws, n);
		snprintf(s->primary, sizeof(s->primary), "%s", prim >= 0 ? ws[prim].name : "");
	} else { /* the store's record of the router's assignment, if it names a worker */
		char hint[65] = "";
		if (n > 0)
			snprintf(hint, sizeof(hint), "%.*s", row.assigned_len, row.assigned);
		int known = 0;
		for (int i = 0; i < n && !known; i++)
			known = strcmp(ws[i].name, hint) == 0;
		snprintf(s->primary, sizeof(s->primary), "%s", known ? hint : "");
	}
	if (self < 0) { /* not registered yet (cannot happen after start): list ourselves */
		self = n++;
		snprintf(ws[self].name, sizeof(ws[self].name), "%s", w->wc->name);
		snprintf(ws[self].advertise, sizeof(ws[self].advertise), "%s", w->wc->advertise);
		ws[self].tls = w->wc->tls;
	}
	s->known = ws;
	s->n_known = n;
	s->op = NULL;
	claim_session(s);
}

/* The agent is who it says (or auth = off): register it and let the store
 * record the HELLO. */
static void start_hello(struct gw_session *s)
{
	struct gw_worker *w = s->w;
	gw_session_register(s); /* pushes arriving from now on follow WELCOME */
	waited(s, st_hello(gw_worker_hello_store(w), s->agent, s->primary_sent, w->wc->name,
	                   gw_wall_ms(), on_hello, s));
}

/* docs/operations.md "Agent credentials": the SHA-256 of the HELLO token against the
 * stored one, in constant time; an unknown agent is compared against a
 * dummy so that both failures take the same path and say the same. */
static void on_credentials(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	static const uint8_t dummy[32];
	const uint8_t *stored = dummy;
	int known = st_credential_read(res, &stored);
	int match = CRYPTO_memcmp(stored, s->token_sha256, 32) == 0;
	s->op = NULL;
	if (!known || !match) {
		gw_slog(GW_LOG_WARN, s, "HELLO refused: %s",
		        known ? "wrong token" : "unknown agent");
		explicit_bzero(s->token_sha256, sizeof(s->token_sha256));
		gw_count(s->w, hello_auth_failures, 1);
		int64_t backoff = gw_auth_failed(s->w->auth_guard, s->peer, gw_mono_ms());
		if (backoff) {
			gw_count(s->w, auth_backoffs, 1);
			gw_slog(GW_LOG_WARN, s,
			        "%d failed HELLOs from this address: its HELLOs are refused for "
			        "%lld ms",
			        GW_AUTH_BUDGET, (long long)backoff);
		}
		gw_session_error(s, QS_E_AUTH, "unknown agent or wrong token");
		return;
	}
	start_hello(s);
}

void gw_req_hello(struct gw_session *s, const struct qs_hello *h)
{
	struct gw_worker *w = s->w;
	copy_str(s->agent, sizeof(s->agent), h->agent_id);
	if (h->version != QS_VERSION) {
		gw_session_error(s, QS_E_VERSION,
		                 "version %u is not supported; supported versions: 1", h->version);
		return;
	}
	if (w->stopping || w->drained) {
		gw_session_error(s, QS_E_DRAINING, "worker %s is draining", w->wc->name);
		return;
	}
	/* Before any store lookup: an address that spent its failed-HELLO budget
	 * costs nothing more. overloaded (retryable), not auth: an agent sharing
	 * the address (NAT) comes back after the back-off instead of giving up,
	 * and the answer says nothing about this HELLO's token. */
	int64_t backoff = gw_auth_backoff_left(w->auth_guard, s->peer, gw_mono_ms());
	if (backoff) {
		gw_count(w, refused_auth_backoff, 1);
		gw_session_error(s, QS_E_OVERLOADED,
		                 "too many failed HELLOs from this address: retry in %lld s",
		                 (long long)(backoff + 999) / 1000);
		return;
	}
	/* Sessions being welcomed count: concurrent HELLOs cannot overshoot. */
	if (w->sessions->n_sessions + w->sessions->n_welcoming >= w->conf->max_sessions) {
		gw_count(w, refused_max_sessions, 1);
		gw_session_error(s, QS_E_OVERLOADED, "worker %s is at max_sessions (%d)",
		                 w->wc->name, w->conf->max_sessions);
		return;
	}
	if (h->primary.len > 0) {
		char *p = malloc((size_t)h->primary.len + 1);
		if (!p) {
			gw_session_error(s, QS_E_INTERNAL, "out of memory");
			return;
		}
		copy_str(p, (size_t)h->primary.len + 1, h->primary);
		if (s->primary_sent != gw_session_empty)
			free(s->primary_sent);
		s->primary_sent = p;
	}
	s->persist = (h->flags & QS_FLAG_PERSIST) != 0;
	/* now_ms is the agent's word: bounded (like expires_ms below) so that no
	 * shift or shifted expiry can overflow. */
	int64_t agent_now =
	    h->now_ms > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)h->now_ms;
	s->clock_shift_ms = gw_wall_ms() - agent_now;
	SHA256((const unsigned char *)h->token.ptr, h->token.len, s->token_sha256);
	/* The token itself is not kept: its bytes in the input buffer (the
	 * frame's decoded view points into it) are wiped before it is drained. */
	if (h->token.len)
		explicit_bzero((void *)h->token.ptr, h->token.len);
	if (w->conf->auth_off) {
		start_hello(s);
		return;
	}
	waited(s, st_credential_get(gw_worker_hello_store(w), s->agent, on_credentials, s));
}

/* ---- UPLOAD ---- */

static void send_upload_ack(struct gw_session *s, struct gw_upload *u)
{
	struct qs_ack_entry *e = calloc(u->count, sizeof(*e));
	if (!e) {
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	for (int i = 0; i < u->count; i++) {
		memcpy(e[i].id, u->ids[i], 16);
		e[i].result = u->results[i];
		if (e[i].result == QS_R_STORED)
			gw_count(s->w, messages_stored, 1);
		else if (e[i].result == QS_R_DUPLICATE)
			gw_count(s->w, messages_duplicate, 1);
		else
			gw_count(s->w, messages_refused, 1);
	}
	struct qs_frame f = {.type = QS_UPLOAD_ACK};
	f.u.upload_ack.batch = u->batch;
	f.u.upload_ack.count = u->count;
	f.u.upload_ack.entries = e;
	int rc = gw_session_send(s, &f);
	free(e);
	if (rc != 0)
		gw_session_error(s, QS_E_INTERNAL, "cannot encode UPLOAD_ACK");
}

/* One push per recipient that got at least one message in this commit, all
 * routed in one call. */
static void route_pushes(struct gw_worker *w, const struct gw_upload *u, int64_t commit_ms)
{
	const char **agents = malloc((size_t)u->n_sent * sizeof(*agents));
	int *ns = malloc((size_t)u->n_sent * sizeof(*ns));
	int count = 0;
	for (int k = 0; agents && ns && k < u->n_sent; k++) {
		if (u->results[u->sent[k]] != QS_R_STORED)
			continue;
		int j = 0;
		while (j < count && strcmp(agents[j], u->rcpt[k]) != 0)
			j++;
		if (j == count) {
			agents[count] = u->rcpt[k];
			ns[count++] = 0;
		}
		ns[j]++;
	}
	if (agents && ns)
		gw_push_route(w, agents, ns, count, commit_ms);
	else /* no memory: the recipients learn at their next sync */
		gw_log(GW_LOG_WARN, "%s: out of memory: no pushes for a committed batch",
		       w->wc->name);
	free(agents);
	free(ns);
}

/* Reads this part's results into u; 0, or -1 (not as expected). */
static int read_upload_results(struct gw_upload *u, const PGresult *res)
{
	for (int k = 0; k < u->n_sent; k++) {
		int result = st_upload_result(res, u->op, k);
		if (result < 0)
			return -1;
		u->results[u->sent[k]] = (uint8_t)result;
	}
	return 0;
}

/* Committed, visible to every session, not yet durable: pushes go now (a
 * message delivered before its flush and then lost in a crash is one its
 * sender was never told is stored: it sends it again, and the recipient drops
 * the repeat by id). */
static void on_upload_visible(void *arg, const PGresult *res, const char *err)
{
	struct gw_upload *u = arg;
	(void)err;
	if (read_upload_results(u, res) == 0)
		route_pushes(u->s->w, u, gw_wall_ms());
}

/* Answers the session's UPLOADs from the first on, in request order, as far
 * as their commits are done: an UPLOAD_ACK each, or, at the first that
 * failed, ERROR store_unavailable (the UPLOADs after it, committed or not,
 * are not acknowledged: their messages are sent again, duplicates by id). */
static void answer_uploads(struct gw_session *s)
{
	struct gw_upload *u;
	while ((u = s->up_head) && !u->op && s->state != GW_S_CLOSING) {
		if (u->failed) {
			char why[200];
			snprintf(why, sizeof(why), "%s", u->failed);
			store_failed(s, why);
			return;
		}
		s->up_head = u->next;
		s->n_uploads--;
		s->up_bytes -= u->frame_len;
		if (u->n_sent)
			gw_histogram_observe(&s->w->counters.store_commit,
			                     (double)(gw_mono_ms() - u->started_ms) / 1000.0);
		send_upload_ack(s, u);
		free_upload(u);
		gw_session_request_done(s);
	}
}

/* Durable (or failed): answered in turn. */
static void on_upload(void *arg, const PGresult *res, const char *err)
{
	struct gw_upload *u = arg;
	struct gw_session *s = u->s;
	if (!res)
		u->failed = strdup(err ? err : "unavailable");
	else if (read_upload_results(u, res) != 0)
		u->failed = strdup("unexpected result from qa_upload_group");
	u->op = NULL; /* the group frees it */
	if (!res && !u->failed) {
		store_failed(s, "out of memory");
		return;
	}
	answer_uploads(s);
}

void gw_req_upload(struct gw_session *s, const struct qs_upload *up, uint32_t len)
{
	struct gw_worker *w = s->w;
	struct gw_upload *u = calloc(1, sizeof(*u));
	struct st_upload_row *rows = calloc(up->count, sizeof(*rows));
	if (u) {
		u->ids = calloc(up->count, 16);
		u->results = calloc(up->count, 1);
		u->sent = calloc(up->count, sizeof(*u->sent));
		u->rcpt = calloc(up->count, sizeof(*u->rcpt));
	}
	if (!u || !rows || !u->ids || !u->results || !u->sent || !u->rcpt) {
		free_upload(u);
		free(rows);
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	u->batch = up->batch;
	u->count = up->count;
	int64_t now = gw_wall_ms();
	uint32_t too_large = w->conf->max_frame - QS_DELIVER_OVERHEAD;
	for (int i = 0; i < up->count; i++) {
		const struct qs_msg_out *m = &up->msgs[i];
		struct qs_str agent, q;
		memcpy(u->ids[i], m->id, 16);
		if (qs_msg_out_check(m) != QS_R_STORED ||
		    qs_split_address(m->to, &agent, &q) != 0) {
			u->results[i] = QS_R_INVALID;
			continue;
		}
		/* Expiry follows the agent's intent: its clock is shifted to ours. */
		int64_t exp = 0;
		if (m->expires_ms != 0) {
			exp = m->expires_ms > (uint64_t)INT64_MAX / 2
			          ? INT64_MAX / 2
			          : (int64_t)m->expires_ms + s->clock_shift_ms;
			if (exp < 1)
				exp = 1;
		}
		/* too_large also when delivery's two properties would not fit the u16 count */
		int16_t fl = exp != 0 && exp <= now                               ? QS_R_EXPIRED
		             : m->wire_len > too_large || m->props.n > 0xffff - 2 ? QS_R_TOO_LARGE
		                                                                  : 0;
		memcpy(u->rcpt[u->n_sent], agent.ptr, agent.len); /* valid agent id: <= 120 */
		rows[u->n_sent] = (struct st_upload_row){
		    .id = m->id,
		    .rcpt = agent.ptr,
		    .rcpt_len = agent.len,
		    .queue = q.ptr,
		    .queue_len = q.len,
		    .priority = m->priority,
		    .expires_ms = exp,
		    .flag = fl,
		    .props = m->props_raw.ptr,
		    .props_len = m->props_raw.len,
		    .body = m->body.ptr,
		    .body_len = m->body.len,
		};
		u->sent[u->n_sent++] = (uint16_t)i;
	}
	u->s = s;
	struct gw_upload **tail = &s->up_head; /* at most GW_UPLOAD_PIPELINE - 1 before it */
	while (*tail)
		tail = &(*tail)->next;
	*tail = u;
	s->n_uploads++;
	u->frame_len = len;
	s->up_bytes += len;
	if (u->n_sent == 0) { /* all invalid: nothing to commit; answered in turn */
		free(rows);
		int alone = s->n_uploads == 1;
		answer_uploads(s);
		if (!alone) /* behind others: the session waits for them */
			gw_session_wait_upload(s);
		return;
	}
	u->started_ms = gw_mono_ms();
	u->op = st_upload(w->uploads, s->agent, rows, u->n_sent, on_upload, u);
	free(rows);
	if (!u->op) {
		store_failed(s, "out of memory");
		return;
	}
	st_op_on_visible(u->op, on_upload_visible);
	gw_session_wait_upload(s);
}

/* ---- holds (protocol.md FETCH: held until acknowledged or the session ends) ----
 *
 * A session's holds live here, not in the store: s->held, sorted, with
 * held_counted[i] set once the store has counted that delivery (a STATUS
 * counts them). A DELIVER_ACK counts the deliveries it acknowledges; the end
 * of the session counts those left (qa_delivered), so that a later session
 * reports the next ias_DeliveryCount. */

static int held_find(const struct gw_session *s, int64_t seq)
{
	int lo = 0, hi = s->n_held - 1;
	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		if (s->held[mid] == seq)
			return mid;
		if (s->held[mid] < seq)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

static void held_remove(struct gw_session *s, int i)
{
	memmove(&s->held[i], &s->held[i + 1], (size_t)(s->n_held - i - 1) * sizeof(*s->held));
	memmove(&s->held_counted[i], &s->held_counted[i + 1], (size_t)(s->n_held - i - 1));
	s->n_held--;
}

static int cmp_seq(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* Adds n seqs (not held yet, not counted). -1: out of memory. */
static int held_add(struct gw_session *s, const int64_t *seqs, int n)
{
	if (n == 0)
		return 0;
	if (s->n_held + n > s->cap_held) {
		int cap = s->cap_held ? s->cap_held : 64;
		while (cap < s->n_held + n)
			cap *= 2;
		int64_t *h = realloc(s->held, (size_t)cap * sizeof(*h));
		if (h)
			s->held = h;
		uint8_t *c = h ? realloc(s->held_counted, (size_t)cap) : NULL;
		if (!c)
			return -1;
		s->held_counted = c;
		s->cap_held = cap;
	}
	memcpy(&s->held[s->n_held], seqs, (size_t)n * sizeof(*seqs));
	s->n_held += n;
	/* sorted again, keeping the counted flags with their seqs: new ones
	 * are uncounted, so sort seqs and rebuild the flags by lookup */
	uint8_t *was = malloc((size_t)s->n_held);
	int64_t *old = malloc((size_t)s->n_held * sizeof(*old));
	if (!was || !old) {
		free(was), free(old);
		s->n_held -= n;
		return -1;
	}
	int n_old = s->n_held - n;
	memcpy(old, s->held, (size_t)n_old * sizeof(*old));
	memcpy(was, s->held_counted, (size_t)n_old);
	qsort(s->held, (size_t)s->n_held, sizeof(*s->held), cmp_seq);
	for (int i = 0, j = 0; i < s->n_held; i++) { /* old is sorted: merge */
		while (j < n_old && old[j] < s->held[i])
			j++;
		s->held_counted[i] = j < n_old && old[j] == s->held[i] ? was[j] : 0;
	}
	free(was), free(old);
	return 0;
}

/* The holds whose deliveries the store has not counted: n of them into *out
 * (malloc'd; NULL if none). */
static int held_uncounted(const struct gw_session *s, int64_t **out)
{
	*out = NULL;
	int n = 0;
	for (int i = 0; i < s->n_held; i++)
		n += !s->held_counted[i];
	if (!n || !(*out = malloc((size_t)n * sizeof(**out))))
		return 0;
	for (int i = 0, k = 0; i < s->n_held; i++)
		if (!s->held_counted[i])
			(*out)[k++] = s->held[i];
	return n;
}

void gw_req_session_end(struct gw_session *s)
{
	int64_t *seqs;
	int n = s->agent[0] ? held_uncounted(s, &seqs) : 0;
	if (n > 0) {
		struct st_op *op = st_delivered(gw_worker_store(s->w), s->agent, seqs, n,
		                                gw_wall_ms(), NULL, NULL);
		if (!op)
			gw_slog(GW_LOG_WARN, s,
			        "store down: %d deliveries not counted (ias_DeliveryCount)", n);
		free(seqs);
	}
	free(s->held), free(s->held_counted);
	s->held = NULL, s->held_counted = NULL;
	s->n_held = s->cap_held = 0;
}

/* ---- FETCH ---- */

static void on_fetch(void *arg, const PGresult *res, const char *err);

static void fetch_next(struct gw_session *s)
{
	waited(s, st_fetch(s->w->fetches, s->agent, s->held, s->n_held, s->req_count, s->req_bytes,
	                   on_fetch, s));
}

/* A write the FETCH needed first is done (the message that blocked it is
 * unreceivable now, or the agent's due messages expired): ask again. */
static void on_fetch_again(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	s->op = NULL;
	fetch_next(s);
}

/* The first message of a FETCH that no DELIVER could carry (its DELIVER over
 * max_frame, e.g. stored before max_frame was lowered; or properties the u16
 * count cannot take with delivery's two): delivering it would fail every
 * sync of its recipient for ever. It becomes unreceivable (status 50, the
 * sender told) and the FETCH goes on with the messages behind it. */
static void make_unreceivable(struct gw_session *s, int64_t seq, const char *why)
{
	gw_slog(GW_LOG_WARN, s, "message seq %lld can never be delivered (%s): unreceivable",
	        (long long)seq, why);
	waited(s, st_unreceivable(gw_worker_store(s->w), s->agent, seq, gw_wall_ms(),
	                          on_fetch_again, s));
}

static void on_fetch(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	int row0;
	int n = st_fetch_rows(res, s->op, &row0);
	if (n < 0) {
		store_failed(s, "unexpected result from the FETCH statement");
		return;
	}
	if (st_fetch_due(res, row0)) { /* expire first (senders told), then ask again */
		s->op = NULL;
		waited(s, st_expire_due(gw_worker_store(s->w), s->agent, gw_wall_ms(),
		                        on_fetch_again, s));
		return;
	}
	struct qs_msg_in *msgs = calloc((size_t)n + 1, sizeof(*msgs));
	struct qs_prop **pv = calloc((size_t)n + 1, sizeof(*pv));
	char(*counts)[12] = calloc((size_t)n + 1, sizeof(*counts));
	int64_t *seqs = calloc((size_t)n + 1, sizeof(*seqs));
	int ok = msgs && pv && counts && seqs, more = 0, rows = n;
	int64_t blocked = 0; /* the first row, if no DELIVER can carry it */
	const char *why = NULL;
	n = 0; /* the rows delivered: in order, those that fit up to max_count */
	for (int i = 0; ok && i < rows; i++) {
		struct st_next_row r;
		st_next_row(res, row0 + i, &r);
		if (!r.fits || r.rn > s->req_count) {
			more = 1;
			break;
		}
		/* The whole DELIVER of it alone: type, count and more take 4. */
		if (i == 0 && r.cum > (int64_t)s->w->conf->max_frame - 4) {
			blocked = r.seq, why = "over max_frame";
			break;
		}
		struct qs_msg_in *m = &msgs[i];
		seqs[i] = r.seq;
		n = i + 1;
		m->seq = (uint64_t)r.seq;
		memcpy(m->id, r.id, 16);
		m->from.ptr = r.sender;
		m->from.len = (uint16_t)r.sender_len;
		m->queue.ptr = r.queue;
		m->queue.len = (uint16_t)r.queue_len;
		m->priority = (uint8_t)r.priority;
		m->created_ms = (uint64_t)r.created_ms;
		m->expires_ms = (uint64_t)r.expires_ms;
		m->body.ptr = r.body;
		m->body.len = (uint32_t)r.body_len;
		struct qs_props stored = {0};
		if (qs_decode_props(r.props, (size_t)r.props_len, &stored) != QS_OK) {
			gw_slog(GW_LOG_ERROR, s,
			        "message seq %llu has corrupt properties in the store",
			        (unsigned long long)m->seq);
			stored.n = 0;
			stored.v = NULL;
		}
		if (stored.n > 0xffff - 2) { /* no room for the server-set two */
			free(stored.v);
			n = i; /* not this one */
			if (i == 0)
				blocked = r.seq, why = "too many properties";
			else
				more = 1; /* the next FETCH's first */
			break;
		}
		/* Server-set properties: ias_Originator and ias_DeliveryCount. */
		pv[i] = calloc((size_t)stored.n + 2, sizeof(struct qs_prop));
		if (!pv[i]) {
			free(stored.v);
			ok = 0;
			break;
		}
		if (stored.n)
			memcpy(pv[i], stored.v, stored.n * sizeof(struct qs_prop));
		free(stored.v);
		snprintf(counts[i], sizeof(counts[i]), "%d", r.delivery_count + 1);
		pv[i][stored.n].key = qs_str_c("ias_Originator");
		pv[i][stored.n].value = m->from;
		pv[i][stored.n + 1].key = qs_str_c("ias_DeliveryCount");
		pv[i][stored.n + 1].value = qs_str_c(counts[i]);
		m->props.n = (uint16_t)(stored.n + 2);
		m->props.v = pv[i];
	}
	if (blocked) {
		for (int i = 0; pv && i < n; i++)
			free(pv[i]);
		free(pv), free(msgs), free(counts), free(seqs);
		s->op = NULL;
		make_unreceivable(s, blocked, why);
		return;
	}
	int rc = -1;
	if (ok && held_add(s, seqs, n) == 0) {
		struct qs_frame f = {.type = QS_DELIVER};
		f.u.deliver.count = (uint16_t)n;
		f.u.deliver.msgs = msgs;
		f.u.deliver.more = (uint8_t)more;
		rc = gw_session_send(s, &f);
	}
	for (int i = 0; pv && i < n; i++)
		free(pv[i]);
	free(pv), free(msgs), free(counts), free(seqs);
	s->op = NULL;
	if (rc != 0) {
		gw_session_error(s, QS_E_INTERNAL, "cannot encode DELIVER");
		return;
	}
	gw_count(s->w, messages_delivered, n);
	gw_session_request_done(s);
}

/* A session holds at most this many unacknowledged messages: beyond, FETCH
 * answers an empty DELIVER (more 1) until some are acknowledged. */
#define GW_HELD_MAX 8192

void gw_req_fetch(struct gw_session *s, const struct qs_fetch *f)
{
	const struct gw_config *conf = s->w->conf;
	int max_count = f->max_count < 1                 ? 1
	                : f->max_count > conf->max_batch ? conf->max_batch
	                                                 : f->max_count;
	if (max_count > GW_HELD_MAX - s->n_held)
		max_count = GW_HELD_MAX - s->n_held;
	if (max_count <= 0) {
		struct qs_frame d = {.type = QS_DELIVER};
		d.u.deliver.more = 1;
		if (gw_session_send(s, &d) != 0)
			gw_session_error(s, QS_E_INTERNAL, "cannot encode DELIVER");
		else
			gw_session_request_done(s);
		return;
	}
	/* The whole DELIVER must fit max_frame: type, count and more take 4. */
	int64_t max_bytes = f->max_bytes < conf->max_frame - 4 ? f->max_bytes : conf->max_frame - 4;
	s->req_count = max_count;
	s->req_bytes = max_bytes;
	fetch_next(s);
}

/* ---- DELIVER_ACK and STATUS ---- */

static void on_deliver_ack(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	int applied = st_ack_applied(res, s->op);
	gw_count(s->w, messages_acked, applied);
	gw_count(s->w, ignored_deliver_ack, s->req_count - applied);
	s->op = NULL;
	s->ack_group = 0;
	gw_session_request_done(s);
}

void gw_req_deliver_ack(struct gw_session *s, const struct qs_deliver_ack *a)
{
	if (a->count == 0) {
		gw_session_request_done(s);
		return;
	}
	int64_t *seqs = malloc(a->count * sizeof(*seqs));
	uint8_t *count_now = malloc(a->count);
	if (!seqs || !count_now) {
		free(seqs), free(count_now);
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	/* Held here: no longer held; its delivery is counted with the ack. */
	for (int i = 0; i < a->count; i++) {
		seqs[i] = (int64_t)a->seqs[i];
		int at = held_find(s, seqs[i]);
		count_now[i] = at >= 0 && !s->held_counted[at];
		if (at >= 0)
			held_remove(s, at);
	}
	s->req_count = a->count;
	struct st_op *op =
	    st_ack(s->w->acks, s->agent, seqs, count_now, a->count, on_deliver_ack, s);
	free(seqs), free(count_now);
	if (!op) {
		store_failed(s, "out of memory");
		return;
	}
	s->ack_group = st_group_filling(s->w->acks);
	gw_session_wait(s, op);
}

void gw_req_ack_hurry(struct gw_session *s)
{
	if (s->ack_group && s->op && st_group_filling(s->w->acks) == s->ack_group)
		st_group_close(s->w->acks);
}

static void on_status(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	int applied = st_status_read(res);
	gw_count(s->w, statuses_applied, applied);
	gw_count(s->w, ignored_status, s->req_count - applied);
	if (s->n_held) /* qa_status_held counted them */
		memset(s->held_counted, 1, (size_t)s->n_held);
	s->op = NULL;
	gw_session_request_done(s);
}

void gw_req_status(struct gw_session *s, const struct qs_status *st)
{
	if (st->count == 0) {
		gw_session_request_done(s);
		return;
	}
	uint8_t(*ids)[16] = malloc(st->count * 16);
	int16_t *codes = malloc(st->count * sizeof(*codes));
	if (!ids || !codes) {
		free(ids), free(codes);
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	for (int i = 0; i < st->count; i++) {
		memcpy(ids[i], st->entries[i].id, 16);
		codes[i] = st->entries[i].status;
	}
	int64_t *held;
	int n_held = held_uncounted(s, &held);
	s->req_count = st->count;
	waited(s,
	       st_status(gw_worker_store(s->w), s->agent, held, n_held, (const uint8_t(*)[16])ids,
	                 codes, st->count, gw_wall_ms(), on_status, s));
	free(held), free(ids), free(codes);
}
