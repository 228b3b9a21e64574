/* What each agent request does: HELLO, UPLOAD, FETCH, DELIVER_ACK and
 * STATUS, each one statement of the store's SQL API (store/schema.c). A
 * handler validates, submits, and answers from the completion callback; a
 * store failure answers ERROR store_unavailable and acknowledges nothing. */
#include "gateway/log.h"
#include "gateway/primary.h"
#include "gateway/session.h"
#include "gateway/worker.h"
#include "router/rt_pool.h"
#include "store/store.h"
#include "store/upload.h"

#include <event2/bufferevent.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct upload_req {
	uint32_t batch;
	uint16_t count;
	uint8_t (*ids)[16];
	uint8_t *results;
	uint16_t *sent;    /* sent[k] = index in the batch of the store's row k+1 */
	char (*rcpt)[121]; /* rcpt[k]: recipient of the store's row k+1 (for pushes) */
	int n_sent;
	int64_t started_ms; /* submit time, for qagw_store_commit_seconds */
};

static void free_upload(struct upload_req *u)
{
	if (!u)
		return;
	free(u->ids);
	free(u->results);
	free(u->sent);
	free(u->rcpt);
	free(u);
}

void gw_req_abandon(struct gw_session *s)
{
	free_upload(s->req);
	s->req = NULL;
}

/* The store could not run the request: nothing is acknowledged. */
static void store_failed(struct gw_session *s, const char *why)
{
	s->op = NULL;
	gw_req_abandon(s);
	gw_count(s->w, store_failures, 1);
	gw_slog(GW_LOG_WARN, s, "store: %s", why ? why : "unavailable");
	gw_session_error(s, QS_E_STORE_UNAVAILABLE, "the message store cannot commit right now");
}

static int submit_on(struct gw_session *s, struct st_conn *c, const char *sql, struct st_params *p,
                     st_done_fn done)
{
	struct st_op *op = st_submit(c, sql, p, done, s);
	st_params_clear(p);
	if (!op) {
		store_failed(s, "store connection is down");
		return -1;
	}
	gw_session_wait(s, op);
	return 0;
}

static int submit(struct gw_session *s, const char *sql, struct st_params *p, st_done_fn done)
{
	return submit_on(s, gw_worker_store(s->w), sql, p, done);
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
	gw_slog(GW_LOG_INFO, s,
	        "HELLO: primary \"%s\" -> %s, on_primary %d, persist %d, epoch %llu",
	        s->primary_sent, s->primary[0] ? s->primary : "(unresolved)", s->on_primary,
	        s->persist, (unsigned long long)s->epoch);
	gw_push_after_welcome(s);
	gw_session_request_done(s);
}

/* The server list of WELCOME and REASSIGN (protocol.md): the primary (or,
 * unresolved, this worker) first, then the other serving workers in the
 * agent's ring order; while the router has no view of the pool (Redis
 * down), every known worker by name. ws gives each worker's streams. */
int gw_server_list(struct gw_worker *w, const char *agent, const char *primary,
                   const struct gw_known_worker *ws, int n, struct qs_server *servers,
                   char (*streams)[320])
{
	const char *names[RT_VIEW_MAX + 1];
	int nn = 0;
	names[nn++] = primary[0] ? primary : w->wc->name;
	const struct rt_view *v = w->pool ? rt_pool_view(w->pool) : NULL;
	if (v && v->n > 0) {
		int order[RT_VIEW_MAX];
		int k = rt_pool_order(w->pool, agent, order);
		for (int i = 0; i < k; i++)
			names[nn++] = v->w[order[i]].name;
		/* Workers the view has not seen yet (a node starting): not known to be
		 * down, so listed last. */
		for (int i = 0; i < n && nn < RT_VIEW_MAX + 1; i++) {
			int seen = 0;
			for (int j = 0; j < v->n && !seen; j++)
				seen = strcmp(v->w[j].name, ws[i].name) == 0;
			if (!seen)
				names[nn++] = ws[i].name;
		}
	} else {
		for (int i = 0; i < n && nn < RT_VIEW_MAX + 1; i++)
			names[nn++] = ws[i].name;
	}
	int k = 0;
	for (int i = 0; i < nn; i++) {
		int dup = 0;
		for (int j = 0; j < k && !dup; j++)
			dup = strcmp(servers[j].name.ptr, names[i]) == 0;
		int at = -1;
		for (int j = 0; j < n && at < 0; j++)
			if (strcmp(ws[j].name, names[i]) == 0)
				at = j;
		if (dup || at < 0 || gw_worker_stream(&ws[at], streams[k], sizeof(streams[k])) != 0)
			continue;
		servers[k].name = qs_str_c(ws[at].name);
		servers[k].stream = qs_str_c(streams[k]);
		k++;
	}
	return k;
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
	struct gw_ticket *t = arg;
	struct gw_session *s = t->s;
	free(t);
	if (!s) /* the session ended first; its entry is cleared by the next HELLO */
		return;
	s->ticket = NULL;
	s->epoch = epoch;
	if (!epoch)
		gw_slog(GW_LOG_WARN, s, "redis: session not registered for the pool");
	else if (!is_pinned(s)) {
		if (strcmp(primary, s->primary) != 0 && primary[0]) {
			const char *a[1] = {s->agent}, *pr[1] = {primary};
			gw_worker_record_assignments(s->w, a, pr, 1);
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
		struct gw_ticket *t = malloc(sizeof(*t));
		struct rt_claim c = {
		    .agent = s->agent,
		    .primary = s->primary,
		    .pinned = is_pinned(s),
		    .primary_as_sent = s->primary_sent,
		    .hint = s->primary, /* unpinned: the store's record */
		    .persist = s->persist,
		    .since_ms = s->since_ms,
		};
		if (t) {
			t->s = s;
			s->ticket = t;
			if (rt_pool_claim(w->pool, &c, 0, on_claimed, t) == 0)
				return;
			s->ticket = NULL;
			free(t);
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
	int n = PQntuples(res);
	struct gw_known_worker *ws = calloc((size_t)n + 1, sizeof(*ws));
	if (!ws) {
		s->op = NULL;
		gw_session_error(s, QS_E_INTERNAL, "out of memory");
		return;
	}
	int self = -1;
	for (int i = 0; i < n; i++) {
		snprintf(ws[i].name, sizeof(ws[i].name), "%.*s", PQgetlength(res, i, 0),
		         PQgetvalue(res, i, 0));
		snprintf(ws[i].advertise, sizeof(ws[i].advertise), "%.*s", PQgetlength(res, i, 1),
		         PQgetvalue(res, i, 1));
		ws[i].tls = *PQgetvalue(res, i, 2) != 0;
		if (strcmp(ws[i].name, w->wc->name) == 0)
			self = i;
	}
	s->pending_at_hello = n > 0 ? st_get_int8(res, 0, 3) : 0;
	if (is_pinned(s)) {
		int prim = gw_resolve_primary(s->primary_sent, strlen(s->primary_sent), ws, n);
		snprintf(s->primary, sizeof(s->primary), "%s", prim >= 0 ? ws[prim].name : "");
	} else { /* the store's record of the router's assignment, if it names a worker */
		char hint[65] = "";
		if (n > 0)
			snprintf(hint, sizeof(hint), "%.*s", PQgetlength(res, 0, 4),
			         PQgetvalue(res, 0, 4));
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
	struct st_params p = {0};
	st_params_text(&p, s->agent, strlen(s->agent));
	st_params_text(&p, s->primary_sent, strlen(s->primary_sent));
	st_params_text(&p, w->wc->name, strlen(w->wc->name));
	st_params_int8(&p, gw_now_ms());
	submit_on(s, gw_worker_hello_store(w),
	          "SELECT name, advertise, tls, pending, assigned FROM qa_hello($1, $2, $3, $4)", &p,
	          on_hello);
}

/* gateway.md "Authentication": the SHA-256 of the HELLO token against the
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
	int known = PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 32;
	const void *stored = known ? (const void *)PQgetvalue(res, 0, 0) : (const void *)dummy;
	int match = CRYPTO_memcmp(stored, s->token_sha256, 32) == 0;
	s->op = NULL;
	if (!known || !match) {
		gw_slog(GW_LOG_WARN, s, "HELLO refused: %s",
		        known ? "wrong token" : "unknown agent");
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
	if (w->n_sessions >= w->conf->max_sessions) {
		gw_session_error(s, QS_E_OVERLOADED, "worker %s is at max_sessions (%d)",
		                 w->wc->name, w->conf->max_sessions);
		return;
	}
	copy_str(s->primary_sent, sizeof(s->primary_sent), h->primary);
	s->persist = (h->flags & QS_FLAG_PERSIST) != 0;
	/* now_ms is the agent's word: bounded (like expires_ms below) so that no
	 * shift or shifted expiry can overflow. */
	int64_t agent_now =
	    h->now_ms > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)h->now_ms;
	s->clock_shift_ms = gw_now_ms() - agent_now;
	SHA256((const unsigned char *)h->token.ptr, h->token.len, s->token_sha256);
	if (w->conf->auth_off) {
		start_hello(s);
		return;
	}
	struct st_params p = {0};
	st_params_text(&p, s->agent, strlen(s->agent));
	submit_on(s, gw_worker_hello_store(w),
	          "SELECT token_sha256 FROM qa_credentials WHERE agent_id = $1", &p, on_credentials);
}

/* ---- UPLOAD ---- */

static void send_upload_ack(struct gw_session *s, struct upload_req *u)
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

/* One push per recipient that got at least one message in this commit. */
static void route_pushes(struct gw_worker *w, const struct upload_req *u, int64_t commit_ms)
{
	for (int k = 0; k < u->n_sent; k++) {
		if (u->results[u->sent[k]] != QS_R_STORED)
			continue;
		int first = 1, n = 0;
		for (int j = 0; j < u->n_sent; j++) {
			if (u->results[u->sent[j]] != QS_R_STORED ||
			    strcmp(u->rcpt[j], u->rcpt[k]) != 0)
				continue;
			if (j < k) {
				first = 0;
				break;
			}
			n++;
		}
		if (first)
			gw_push_route(w, u->rcpt[k], commit_ms, n);
	}
}

static void on_upload(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	struct upload_req *u = s->req;
	if (!res) {
		store_failed(s, err);
		return;
	}
	for (int k = 0; k < u->n_sent; k++) {
		int result = st_upload_result(res, s->op, k);
		if (result < 0) {
			store_failed(s, "unexpected result from qa_upload_group");
			return;
		}
		u->results[u->sent[k]] = (uint8_t)result;
	}
	s->op = NULL;
	int64_t now = gw_now_ms();
	gw_histogram_observe(&s->w->counters.store_commit, (double)(now - u->started_ms) / 1000.0);
	send_upload_ack(s, u);
	route_pushes(s->w, u, now);
	gw_req_abandon(s);
	gw_session_request_done(s);
}

void gw_req_upload(struct gw_session *s, const struct qs_upload *up)
{
	struct gw_worker *w = s->w;
	struct upload_req *u = calloc(1, sizeof(*u));
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
	int64_t now = gw_now_ms();
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
		int16_t fl = exp != 0 && exp <= now    ? QS_R_EXPIRED
		             : m->wire_len > too_large ? QS_R_TOO_LARGE
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
	if (u->n_sent == 0) { /* all invalid: nothing to commit */
		free(rows);
		send_upload_ack(s, u);
		free_upload(u);
		gw_session_request_done(s);
		return;
	}
	s->req = u;
	u->started_ms = gw_now_ms();
	struct st_op *op = st_upload(w->uploads, s->agent, rows, u->n_sent, on_upload, s);
	free(rows);
	if (!op) {
		store_failed(s, "out of memory");
		return;
	}
	gw_session_wait(s, op);
}

/* ---- FETCH ---- */

static void on_fetch(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	int n = PQntuples(res);
	struct qs_msg_in *msgs = calloc((size_t)n + 1, sizeof(*msgs));
	struct qs_prop **pv = calloc((size_t)n + 1, sizeof(*pv));
	char(*counts)[12] = calloc((size_t)n + 1, sizeof(*counts));
	int ok = msgs && pv && counts;
	for (int i = 0; ok && i < n; i++) {
		struct qs_msg_in *m = &msgs[i];
		m->seq = (uint64_t)st_get_int8(res, i, 0);
		memcpy(m->id, PQgetvalue(res, i, 1), 16);
		m->from.ptr = PQgetvalue(res, i, 2);
		m->from.len = (uint16_t)PQgetlength(res, i, 2);
		m->queue.ptr = PQgetvalue(res, i, 3);
		m->queue.len = (uint16_t)PQgetlength(res, i, 3);
		m->priority = (uint8_t)st_get_int2(res, i, 4);
		m->created_ms = (uint64_t)st_get_int8(res, i, 5);
		m->expires_ms = (uint64_t)st_get_int8(res, i, 6);
		m->body.ptr = (const uint8_t *)PQgetvalue(res, i, 8);
		m->body.len = (uint32_t)PQgetlength(res, i, 8);
		struct qs_props stored = {0};
		if (qs_decode_props((const uint8_t *)PQgetvalue(res, i, 7),
		                    (size_t)PQgetlength(res, i, 7), &stored) != QS_OK) {
			gw_slog(GW_LOG_ERROR, s,
			        "message seq %llu has corrupt properties in the store",
			        (unsigned long long)m->seq);
			stored.n = 0;
			stored.v = NULL;
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
		snprintf(counts[i], sizeof(counts[i]), "%d", st_get_int4(res, i, 9));
		pv[i][stored.n].key = qs_str_c("ias_Originator");
		pv[i][stored.n].value = m->from;
		pv[i][stored.n + 1].key = qs_str_c("ias_DeliveryCount");
		pv[i][stored.n + 1].value = qs_str_c(counts[i]);
		m->props.n = (uint16_t)(stored.n + 2);
		m->props.v = pv[i];
	}
	int rc = -1;
	if (ok) {
		struct qs_frame f = {.type = QS_DELIVER};
		f.u.deliver.count = (uint16_t)n;
		f.u.deliver.msgs = msgs;
		f.u.deliver.more = n > 0 && *PQgetvalue(res, 0, 10) != 0;
		rc = gw_session_send(s, &f);
	}
	for (int i = 0; pv && i < n; i++)
		free(pv[i]);
	free(pv), free(msgs), free(counts);
	s->op = NULL;
	if (rc != 0) {
		gw_session_error(s, QS_E_INTERNAL, "cannot encode DELIVER");
		return;
	}
	gw_count(s->w, messages_delivered, n);
	gw_session_request_done(s);
}

void gw_req_fetch(struct gw_session *s, const struct qs_fetch *f)
{
	const struct gw_config *conf = s->w->conf;
	int max_count = f->max_count < 1                 ? 1
	                : f->max_count > conf->max_batch ? conf->max_batch
	                                                 : f->max_count;
	/* The whole DELIVER must fit max_frame: type, count and more take 4. */
	int64_t max_bytes = f->max_bytes < conf->max_frame - 4 ? f->max_bytes : conf->max_frame - 4;
	struct st_params p = {0};
	st_params_text(&p, s->agent, strlen(s->agent));
	st_params_int8(&p, (int64_t)s->id);
	st_params_int4(&p, max_count);
	st_params_int8(&p, max_bytes);
	st_params_int8(&p, gw_now_ms());
	submit(s,
	       "SELECT seq, id, sender, queue, priority, created_ms, expires_ms, props, body,"
	       " delivery_count, more FROM qa_fetch_async($1, $2, $3, $4, $5)",
	       &p, on_fetch);
}

/* ---- DELIVER_ACK and STATUS ---- */

static void on_deliver_ack(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	int applied = PQntuples(res) == 1 ? st_get_int4(res, 0, 0) : 0;
	gw_count(s->w, messages_acked, applied);
	gw_count(s->w, ignored_deliver_ack, s->req_count - applied);
	s->op = NULL;
	gw_session_request_done(s);
}

void gw_req_deliver_ack(struct gw_session *s, const struct qs_deliver_ack *a)
{
	if (a->count == 0) {
		gw_session_request_done(s);
		return;
	}
	struct st_array seqs;
	st_array_begin(&seqs, ST_OID_INT8);
	for (int i = 0; i < a->count; i++)
		st_array_add_int8(&seqs, (int64_t)a->seqs[i]);
	struct st_params p = {0};
	st_params_text(&p, s->agent, strlen(s->agent));
	st_params_array(&p, &seqs, ST_OID_INT8_ARRAY);
	st_params_int8(&p, gw_now_ms());
	s->req_count = a->count;
	submit(s, "SELECT qa_ack_async($1, $2, $3)", &p, on_deliver_ack);
}

static void on_status(void *arg, const PGresult *res, const char *err)
{
	struct gw_session *s = arg;
	if (!res) {
		store_failed(s, err);
		return;
	}
	int applied = PQntuples(res) == 1 ? st_get_int4(res, 0, 0) : 0;
	gw_count(s->w, statuses_applied, applied);
	gw_count(s->w, ignored_status, s->req_count - applied);
	s->op = NULL;
	gw_session_request_done(s);
}

void gw_req_status(struct gw_session *s, const struct qs_status *st)
{
	if (st->count == 0) {
		gw_session_request_done(s);
		return;
	}
	struct st_array ids, codes;
	st_array_begin(&ids, ST_OID_UUID);
	st_array_begin(&codes, ST_OID_INT2);
	for (int i = 0; i < st->count; i++) {
		st_array_add(&ids, st->entries[i].id, 16);
		st_array_add_int2(&codes, st->entries[i].status);
	}
	struct st_params p = {0};
	st_params_text(&p, s->agent, strlen(s->agent));
	st_params_array(&p, &ids, ST_OID_UUID_ARRAY);
	st_params_array(&p, &codes, ST_OID_INT2_ARRAY);
	st_params_int8(&p, gw_now_ms());
	s->req_count = st->count;
	submit(s, "SELECT qa_status($1, $2, $3, $4)", &p, on_status);
}
