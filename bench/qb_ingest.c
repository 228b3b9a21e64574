/* Mode `ingest` (issue 7, scenario 1): agents spread round-robin over the
 * given worker ports, each keeping exactly one UPLOAD of --batch messages in
 * flight and sending the next as soon as its UPLOAD_ACK returns.
 *
 * Figures cover the window [warmup, warmup + seconds) counted from the
 * moment every agent has its WELCOME: a batch counts when it was sent and
 * acknowledged inside the window. committed counts results "stored" (0);
 * every other result, a mismatched ack and a lost connection is an error.
 *
 * Recipients: agent i sends batch k to PREFIX-sink-i.(k % --recipients),
 * one recipient per batch (64 agents x 16: 1,024 recipients), so that no
 * recipient's pending count grows much in a run. With --shared-recipients N
 * every batch of every agent goes to one of N fixed recipients instead,
 * RPREFIX.0 .. RPREFIX.(N-1) (RPREFIX: --recipient-prefix, default
 * PREFIX-shared), agent i's batch k to RPREFIX.((i + k) % N): the backlog
 * scenario seeds those recipients with pending messages and measures the
 * same ingest into them and into empty ones.
 *
 * --marks: a line {"mark":"window_start"} on stdout when the measured window
 * opens and {"mark":"window_end"} when it closes, before the result, so that
 * the orchestrator can read CPU and store counters at those moments; the
 * messages whose UPLOAD_ACK (stored) came back inside the window, whenever
 * their batch was sent, are acked_in_window: the work those readings cover. */
#include "bench/qb.h"
#include "bench/qb_agent.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct ingest;

struct ing_agent {
	struct ingest *run;
	struct qb_agent *a;
	int idx;
	bool welcomed;
	bool in_flight;
	uint32_t batch_no; /* of the UPLOAD in flight */
	int64_t sent_us;
};

struct ingest {
	struct event_base *base;
	struct ing_agent *agents;
	int n_agents, batch, size, recipients, shared;
	const char *prefix, *rprefix;
	bool marks;
	uint8_t *body;
	struct qs_msg_out *msgs; /* scratch for one UPLOAD */
	char *to;                /* scratch: the batch's address */
	int n_welcomed, n_closed;
	int64_t warmup_us, seconds_us;
	int64_t start_us, measure_us, end_us; /* 0 until every agent is welcomed */
	bool stopping;
	uint64_t committed, batches, errors, bad_results[8];
	uint64_t acked_in_window; /* stored results acked in the window, whenever sent */
	struct qb_lat ack;
	struct event *timer;
};

static void send_upload(struct ing_agent *g)
{
	struct ingest *r = g->run;
	if (r->shared)
		snprintf(r->to, 160, "%s.%u\\q", r->rprefix,
		         ((uint32_t)g->idx + g->batch_no) % (uint32_t)r->shared);
	else
		snprintf(r->to, 160, "%s-sink-%d.%u\\q", r->prefix, g->idx,
		         g->batch_no % (uint32_t)r->recipients);
	for (int i = 0; i < r->batch; i++) {
		struct qs_msg_out *m = &r->msgs[i];
		qb_uuid(m->id);
		m->to = qs_str_c(r->to);
	}
	struct qs_frame f = {.type = QS_UPLOAD};
	f.u.upload.batch = g->batch_no;
	f.u.upload.count = (uint16_t)r->batch;
	f.u.upload.msgs = r->msgs;
	g->sent_us = gw_mono_us();
	if (qb_agent_send(g->a, &f) != 0) {
		fprintf(stderr, "qabench ingest: agent %d: cannot queue UPLOAD\n", g->idx);
		r->errors++;
		return;
	}
	g->in_flight = true;
}

static void on_welcome(struct qb_agent *a, const struct qs_welcome *w)
{
	struct ing_agent *g = qb_agent_user(a);
	struct ingest *r = g->run;
	if (w->max_batch < r->batch) {
		fprintf(stderr, "qabench ingest: the worker's max_batch %u < --batch %d\n",
		        w->max_batch, r->batch);
		r->errors++;
		return;
	}
	g->welcomed = true;
	r->n_welcomed++;
	send_upload(g);
}

static void on_frame(struct qb_agent *a, const struct qs_frame *f)
{
	struct ing_agent *g = qb_agent_user(a);
	struct ingest *r = g->run;
	if (f->type != QS_UPLOAD_ACK)
		return; /* PUSH, REASSIGN, ...: not this scenario's concern */
	const struct qs_upload_ack *ack = &f->u.upload_ack;
	int64_t now = gw_mono_us();
	if (!g->in_flight || ack->batch != g->batch_no || ack->count != r->batch) {
		fprintf(stderr,
		        "qabench ingest: agent %d: unexpected UPLOAD_ACK (batch %u count %u)\n",
		        g->idx, ack->batch, ack->count);
		r->errors++;
		return;
	}
	g->in_flight = false;
	if (r->measure_us && now >= r->measure_us && now < r->end_us)
		for (int i = 0; i < ack->count; i++)
			r->acked_in_window += ack->entries[i].result == QS_R_STORED;
	if (r->measure_us && g->sent_us >= r->measure_us && now < r->end_us) {
		r->batches++;
		qb_lat_add(&r->ack, now - g->sent_us);
		for (int i = 0; i < ack->count; i++) {
			uint8_t res = ack->entries[i].result;
			if (res == QS_R_STORED) {
				r->committed++;
			} else {
				r->errors++;
				r->bad_results[res < 8 ? res : 7]++;
			}
		}
	}
	g->batch_no++;
	if (!r->stopping)
		send_upload(g);
}

static void on_close(struct qb_agent *a, const char *why)
{
	struct ing_agent *g = qb_agent_user(a);
	struct ingest *r = g->run;
	if (!r->stopping) {
		fprintf(stderr, "qabench ingest: agent %d closed: %s\n", g->idx, why);
		r->errors++;
	}
	r->n_closed++;
	g->in_flight = false;
	if (!r->stopping && r->n_closed == r->n_agents)
		event_base_loopbreak(r->base);
}

static void on_mark(evutil_socket_t fd, short what, void *arg)
{
	printf("{\"mark\":\"%s\"}\n", (const char *)arg);
	fflush(stdout);
}

static void mark_at(struct ingest *r, int64_t delay_us, const char *name)
{
	struct timeval tv = {(time_t)(delay_us / 1000000), (suseconds_t)(delay_us % 1000000)};
	if (event_base_once(r->base, -1, EV_TIMEOUT, on_mark, (void *)name, &tv) != 0)
		fprintf(stderr, "qabench ingest: no timer for the %s mark\n", name);
}

/* Ticks every 100 ms: starts the clock once every agent is in, then ends the run. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct ingest *r = arg;
	int64_t now = gw_mono_us();
	if (!r->start_us && r->n_welcomed + r->n_closed >= r->n_agents) {
		r->start_us = now;
		r->measure_us = now + r->warmup_us;
		r->end_us = r->measure_us + r->seconds_us;
		if (r->marks) {
			mark_at(r, r->warmup_us, "window_start");
			mark_at(r, r->warmup_us + r->seconds_us, "window_end");
		}
	}
	if (r->start_us && now >= r->end_us) {
		r->stopping = true;
		event_base_loopbreak(r->base);
	}
}

int qb_mode_ingest(const struct qb_opts *o)
{
	struct ingest r = {0};
	const char *host = qb_opt(o, "host", "127.0.0.1");
	const char *ports_s = qb_opt(o, "ports", "2439,2440,2441");
	r.n_agents = (int)qb_opt_int(o, "agents", 64);
	r.batch = (int)qb_opt_int(o, "batch", 32);
	r.size = (int)qb_opt_int(o, "size", 128);
	r.recipients = (int)qb_opt_int(o, "recipients", 16);
	r.shared = (int)qb_opt_int(o, "shared-recipients", 0);
	r.marks = qb_opt_flag(o, "marks");
	double seconds = qb_opt_double(o, "seconds", 20);
	double warmup = qb_opt_double(o, "warmup", 2);
	int tls = qb_opt_flag(o, "tls");
	const char *ca = qb_opt(o, "ca", NULL);
	const char *token = qb_opt(o, "token", "");
	r.prefix = qb_opt(o, "prefix", "ingest");
	char rprefix_def[140];
	snprintf(rprefix_def, sizeof(rprefix_def), "%.100s-shared", r.prefix);
	r.rprefix = qb_opt(o, "recipient-prefix", rprefix_def);
	double connect_s = qb_opt_double(o, "connect-timeout", 15);

	int ports[64], n_ports = 0;
	for (const char *p = ports_s; *p && n_ports < 64;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p || v < 1 || v > 65535) {
			fprintf(stderr, "qabench ingest: bad --ports %s\n", ports_s);
			return 2;
		}
		ports[n_ports++] = (int)v;
		p = *end == ',' ? end + 1 : end;
	}
	if (n_ports == 0 || r.n_agents < 1 || r.batch < 1 || r.batch > QS_DEFAULT_MAX_BATCH ||
	    r.size < 0 || r.recipients < 1 || r.shared < 0 || r.shared > 1000000 ||
	    strlen(r.prefix) > 100 || strlen(r.rprefix) > 100 || seconds <= 0 || warmup < 0) {
		fprintf(stderr, "qabench ingest: bad options\n");
		return 2;
	}

	SSL_CTX *ctx = NULL;
	if (tls && !(ctx = qb_tls_client_ctx(ca)))
		return 1;
	r.base = event_base_new();
	r.agents = calloc((size_t)r.n_agents, sizeof(*r.agents));
	r.body = malloc((size_t)r.size + 1);
	r.msgs = calloc((size_t)r.batch, sizeof(*r.msgs));
	r.to = malloc(160);
	if (!r.base || !r.agents || !r.body || !r.msgs || !r.to) {
		fprintf(stderr, "qabench ingest: out of memory\n");
		return 1;
	}
	for (int i = 0; i < r.size; i++)
		r.body[i] = (uint8_t)('a' + i % 26);
	for (int i = 0; i < r.batch; i++) {
		r.msgs[i].priority = 4;
		r.msgs[i].body.ptr = r.body;
		r.msgs[i].body.len = (uint32_t)r.size;
	}

	const struct qb_agent_cbs cbs = {on_welcome, on_frame, on_close};
	for (int i = 0; i < r.n_agents; i++) {
		char id[128];
		snprintf(id, sizeof(id), "%s-%d", r.prefix, i);
		struct qb_agent_conf c = {
		    .host = host,
		    .port = ports[i % n_ports],
		    .tls = ctx,
		    .agent_id = id,
		    .token = token,
		    .primary = "",
		    .persist = 0,
		};
		r.agents[i].run = &r;
		r.agents[i].idx = i;
		r.agents[i].a = qb_agent_new(r.base, &c, &cbs, &r.agents[i]);
		if (!r.agents[i].a) {
			r.errors++;
			r.n_closed++;
		}
	}

	r.warmup_us = (int64_t)(warmup * 1e6);
	r.seconds_us = (int64_t)(seconds * 1e6);
	int64_t t_connect = gw_mono_us();
	r.timer = event_new(r.base, -1, EV_PERSIST, on_tick, &r);
	struct timeval tick = {0, 100000};
	event_add(r.timer, &tick);
	bool ok = true;
	while (!r.stopping) {
		event_base_loop(r.base, EVLOOP_ONCE);
		int64_t now = gw_mono_us();
		if (!r.start_us && now - t_connect > (int64_t)(connect_s * 1e6)) {
			fprintf(stderr, "qabench ingest: only %d of %d agents welcomed in %.0f s\n",
			        r.n_welcomed, r.n_agents, connect_s);
			ok = false;
			break;
		}
		if (r.n_closed == r.n_agents) {
			fprintf(stderr, "qabench ingest: every agent's connection ended\n");
			ok = false;
			break;
		}
	}
	r.stopping = true;
	int64_t measured_us = r.seconds_us;

	if (ok) {
		double secs = (double)measured_us / 1e6;
		printf("{\"mode\":\"ingest\",\"tls\":%s,\"agents\":%d,\"batch\":%d,\"size\":%d,"
		       "\"shared_recipients\":%d,\"recipient_prefix\":\"%s\",\"seconds\":%.3f,"
		       "\"committed\":%llu,\"acked_in_window\":%llu,\"msgs_per_s\":%.1f,"
		       "\"batches\":%llu,"
		       "\"errors\":%llu,\"closed\":%d,\"results\":{\"duplicate\":%llu,"
		       "\"invalid\":%llu,\"expired\":%llu,\"too_large\":%llu,\"quota\":%llu,"
		       "\"conflict\":%llu},",
		       tls ? "true" : "false", r.n_agents, r.batch, r.size, r.shared,
		       r.shared ? r.rprefix : "", secs, (unsigned long long)r.committed,
		       (unsigned long long)r.acked_in_window,
		       secs > 0 ? (double)r.committed / secs : 0, (unsigned long long)r.batches,
		       (unsigned long long)r.errors, r.n_closed,
		       (unsigned long long)r.bad_results[QS_R_DUPLICATE],
		       (unsigned long long)r.bad_results[QS_R_INVALID],
		       (unsigned long long)r.bad_results[QS_R_EXPIRED],
		       (unsigned long long)r.bad_results[QS_R_TOO_LARGE],
		       (unsigned long long)r.bad_results[QS_R_QUOTA],
		       (unsigned long long)r.bad_results[QS_R_CONFLICT]);
		qb_lat_json(stdout, "ack", &r.ack);
		printf("}\n");
		fflush(stdout);
	}

	for (int i = 0; i < r.n_agents; i++)
		qb_agent_free(r.agents[i].a);
	event_free(r.timer);
	event_base_free(r.base);
	if (ctx)
		SSL_CTX_free(ctx);
	qb_lat_free(&r.ack);
	free(r.agents);
	free(r.body);
	free(r.msgs);
	free(r.to);
	return ok ? 0 : 1;
}
