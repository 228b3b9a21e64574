/* libqaagent's entry points: see qa_agent.h. */
#include "agent/qa_agent.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "agent/qa_cycle.h"
#include "agent/qa_failover.h"
#include "agent/qa_session.h"

#define QA_RECV_POLL_MS 500
/* run -policy automatic: how often the client store's queues are looked at. */
#define QA_RUN_QUEUE_POLL_MS 500
/* A session lost sooner than this after its WELCOME: the next cycle waits
 * for the rest of it, so that a server that welcomes and drops at once is
 * not hammered (agent.md is silent; a choice). */
#define QA_RUN_MIN_SESSION_MS 1000

int qa_agent_open(struct qa_agent *a, const struct qa_config *cfg, FILE *log_out,
                  struct qa_error *e)
{
	memset(a, 0, sizeof *a);
	a->cfg = cfg;
	a->log.out = log_out;
	a->log.verbose = cfg->verbose;
	if (cfg->trace_path != NULL) {
		a->trace = fopen(cfg->trace_path, "ae");
		if (a->trace == NULL)
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad -trace \"%.200s\": cannot open it for writing",
			                    cfg->trace_path);
	}
	if (qa_store_open(&a->store, cfg->db_path, cfg->agent_id, e) != 0) {
		if (a->trace != NULL)
			fclose(a->trace);
		a->trace = NULL;
		return -1;
	}
	return 0;
}

void qa_agent_close(struct qa_agent *a)
{
	qa_store_close(a->store);
	a->store = NULL;
	if (a->trace != NULL)
		fclose(a->trace);
	a->trace = NULL;
}

int qa_agent_check(const struct qa_send_params *p, struct qa_error *e)
{
	const size_t alen = strlen(p->address);
	struct qs_str agent, queue;
	if (alen > 255 ||
	    qs_split_address((struct qs_str){p->address, (uint16_t)alen}, &agent, &queue) != 0)
		return qa_error_set(
		    e, QA_FAIL_USAGE,
		    "bad address \"%.300s\": AGENT\\QUEUE expected (agent id "
		    "[A-Za-z0-9._-]{1,120}, queue 1..128 bytes, at most 255 in all)",
		    p->address);
	if (queue.len == 6 && memcmp(queue.ptr, "system", 6) == 0)
		return qa_error_set(e, QA_FAIL_USAGE,
		                    "bad address \"%s\": the queue \"system\" is reserved",
		                    p->address);
	if (p->priority > 9)
		return qa_error_set(e, QA_FAIL_USAGE, "bad priority %u: 0..9", p->priority);
	const struct qs_props *pr = p->props;
	for (uint16_t i = 0; pr != NULL && i < pr->n; i++) {
		struct qs_str k = pr->v[i].key, v = pr->v[i].value;
		if (k.len == 0 || k.len > 128 || !qs_valid_utf8(k.ptr, k.len))
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad property key \"%.*s\": 1..128 bytes of UTF-8",
			                    (int)(k.len > 200 ? 200 : k.len), k.ptr);
		if (k.len >= 4 && strncasecmp(k.ptr, "ias_", 4) == 0)
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad property key \"%.*s\": ias_ keys are reserved",
			                    (int)k.len, k.ptr);
		if (!qs_valid_utf8(v.ptr, v.len))
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad value of property \"%.*s\": not UTF-8", (int)k.len,
			                    k.ptr);
		for (uint16_t j = 0; j < i; j++)
			if (pr->v[j].key.len == k.len &&
			    memcmp(pr->v[j].key.ptr, k.ptr, k.len) == 0)
				return qa_error_set(e, QA_FAIL_USAGE,
				                    "property \"%.*s\" given twice", (int)k.len,
				                    k.ptr);
	}
	if (p->body_len > UINT32_MAX)
		return qa_error_set(e, QA_FAIL_USAGE, "body too large");
	static const struct qs_props no_props = {0, NULL};
	struct qs_msg_out m = {
	    .to = qs_str_c(p->address),
	    .priority = p->priority,
	    .props = pr != NULL ? *pr : no_props,
	};
	/* The codec's rule is the server's: what it refuses would come back invalid. */
	if (qs_msg_out_check(&m) != QS_R_STORED)
		return qa_error_set(e, QA_FAIL_USAGE, "message refused by the protocol's rules");
	return 0;
}

int qa_agent_queue(struct qa_agent *a, const struct qa_send_params *p, uint8_t id[16],
                   struct qa_error *e)
{
	static const struct qs_props no_props = {0, NULL};
	const struct qs_props *props = p->props != NULL ? p->props : &no_props;
	if (qa_agent_check(p, e) != 0)
		return -1;

	struct qs_buf block = {0};
	if (qs_encode_props(props, &block) != 0) {
		qs_buf_free(&block);
		return qa_error_set(e, QA_FAIL_USAGE, "properties too large to encode");
	}
	uuid_t uu;
	uuid_generate(uu);
	memcpy(id, uu, 16);
	struct qa_out_msg out = {
	    .address = (char *)p->address,
	    .priority = p->priority,
	    .expires_ms = p->expires_ms,
	    .props = block.data,
	    .props_len = block.len,
	    .body = (uint8_t *)p->body,
	    .body_len = p->body_len,
	};
	memcpy(out.id, id, 16);
	int rc = qa_store_out_add(a->store, &out, e);
	qs_buf_free(&block);
	return rc;
}

/* auto(...): the servers of the last WELCOME or REASSIGN, kept in meta
 * "servers" as lines "NAME STREAM", primary first. */
static int save_servers(struct qa_agent *a, const struct qa_server_list *l, struct qa_error *e)
{
	size_t cap = 1;
	for (size_t i = 0; i < l->n; i++)
		cap += strlen(l->v[i].name) + strlen(l->v[i].stream) + 2;
	char *text = malloc(cap);
	if (text == NULL)
		return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
	size_t used = 0;
	text[0] = '\0';
	for (size_t i = 0; i < l->n; i++)
		used += (size_t)snprintf(text + used, cap - used, "%s %s\n", l->v[i].name,
		                         l->v[i].stream);
	int rc = qa_store_meta_set(a->store, "servers", text, e);
	free(text);
	return rc;
}

/* The streams to try: the -x list, or for auto(...) the stored server list
 * (labelled with the workers' names) then the bootstrap. Returns the count,
 * or -1. */
static int build_attempts(struct qa_agent *a, struct qa_stream *v, qa_cycle_label *labels,
                          size_t cap, struct qa_error *e)
{
	const struct qa_config *cfg = a->cfg;
	if (cfg->n_streams == 0)
		return qa_error_set(e, QA_FAIL_USAGE, "no -x stream given: nothing to connect to");
	memset(labels, 0, cap * sizeof *labels);
	if (cfg->streams[0].scheme != QA_SCHEME_AUTO) {
		memcpy(v, cfg->streams, cfg->n_streams * sizeof *v);
		return (int)cfg->n_streams;
	}
	const struct qa_stream *boot = &cfg->streams[0];
	char *text = NULL;
	size_t n = 0;
	int got = qa_store_meta_get(a->store, "servers", &text, e);
	if (got < 0)
		return -1;
	for (char *line = text, *next; got > 0 && line != NULL && *line != '\0'; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		char *stream = strchr(line, ' ');
		char err[256];
		if (stream == NULL || n + 1 >= cap ||
		    qa_stream_parse(stream + 1, &v[n], err, sizeof err) != 0 ||
		    v[n].scheme == QA_SCHEME_AUTO)
			continue; /* a server this agent cannot use; the bootstrap remains */
		if (v[n].tls && v[n].ca_file[0] == '\0')
			memcpy(v[n].ca_file, boot->ca_file, sizeof v[n].ca_file);
		const size_t name_len = (size_t)(stream - line);
		snprintf(labels[n], sizeof labels[n], "%.*s",
		         (int)(name_len < QA_NAME_MAX ? name_len : QA_NAME_MAX), line);
		n++;
	}
	free(text);
	snprintf(labels[n], sizeof labels[n], "bootstrap");
	v[n++] = *boot;
	return (int)n;
}

/* What every connection cycle of this agent needs: the streams to try and
 * the HELLO to say (flags: 0 for sync, QS_FLAG_PERSIST for run). */
struct connect_plan {
	struct qa_stream streams[QA_MAX_STREAMS + 1];
	qa_cycle_label labels[QA_MAX_STREAMS + 1];
	char primary[QA_STREAM_TEXT_MAX];
	struct qa_hello_params hello;
	struct qa_cycle_params cycle;
	int is_auto;
};

static int plan_connect(struct qa_agent *a, uint8_t flags, struct connect_plan *c,
                        struct qa_error *e)
{
	const struct qa_config *cfg = a->cfg;
	int n = build_attempts(a, c->streams, c->labels, QA_MAX_STREAMS + 1, e);
	if (n < 0)
		return -1;
	c->is_auto = cfg->streams[0].scheme == QA_SCHEME_AUTO;
	c->primary[0] = '\0';
	if (!c->is_auto && qa_stream_primary(&cfg->streams[0], c->primary, sizeof c->primary) < 0)
		return qa_error_set(e, QA_FAIL_USAGE, "primary stream too long");
	c->hello = (struct qa_hello_params){
	    .agent_id = cfg->agent_id,
	    .token = cfg->token != NULL ? cfg->token : "",
	    .primary = c->primary,
	    .flags = flags,
	};
	c->cycle = (struct qa_cycle_params){
	    .streams = c->streams,
	    .n_streams = (size_t)n,
	    .labels = c->labels,
	    .hello = &c->hello,
	    .connect_timeout_ms = QA_CONNECT_TIMEOUT_MS,
	    .fr = cfg->fr,
	    .fd_ms = cfg->fd_ms,
	    .trace = a->trace,
	    .cycle_no = 1,
	};
	return 0;
}

/* After WELCOME: the server reached, and for auto(...) its server list. */
static int record_welcome(struct qa_agent *a, const struct connect_plan *c,
                          const struct qa_session *s, struct qa_error *e)
{
	int rc = qa_store_meta_set(a->store, "last_server", s->welcome.server, e);
	/* An empty list (a server that knows no other) does not erase the one
	 * kept: the bootstrap alone would remain. */
	if (rc == 0 && c->is_auto && s->welcome.servers.n > 0)
		rc = save_servers(a, &s->welcome.servers, e);
	return rc;
}

static void record_reassign(struct qa_agent *a, const struct qa_session *s)
{
	struct qa_error ignored;
	if (s->reassigned && save_servers(a, &s->reassign, &ignored) != 0)
		qa_log_write(&a->log, "cannot record REASSIGN: %s", ignored.msg);
}

int qa_agent_sync(struct qa_agent *a, struct qa_sync_result *r, struct qa_error *e)
{
	struct connect_plan plan;
	if (plan_connect(a, 0 /* sync: no PERSIST */, &plan, e) != 0)
		return -1;
	struct qa_session s;
	qa_session_init(&s, &a->log);
	if (qa_cycle_connect(&s, &plan.cycle, NULL, e) != 0) {
		qa_session_free(&s);
		return -1;
	}
	int rc = record_welcome(a, &plan, &s, e);
	if (rc == 0)
		rc = qa_sync_run(&s, a->store, NULL, r, e);
	record_reassign(a, &s);
	if (rc == 0) {
		char now[24];
		snprintf(now, sizeof now, "%" PRIu64, qa_now_ms());
		rc = qa_store_meta_set(a->store, "last_sync_ms", now, e);
	}
	QA_DEBUG(&a->log, "sync with %s %s%s%s", s.welcome.server, rc == 0 ? "done" : "failed",
	         rc == 0 ? "" : ": ", rc == 0 ? "" : e->msg);
	/* BYE only after a clean end; after a failure the connection is gone or
	 * the server is closing it. */
	qa_session_close(&s, rc == 0);
	qa_session_free(&s);
	return rc;
}

/* The stream `run` tries in the background while the session is on an
 * alternate (agent.md step 6), as a one-stream plan in *probe; 0 when the
 * session is on the primary (WELCOME's on_primary 1, or the first stream),
 * or there is nothing better to try. With an -x list the primary is the
 * first entry; with auto(...) it is the first entry of the list this WELCOME
 * gave, when that is the primary the WELCOME names. */
static int failback_target(struct qa_agent *a, const struct connect_plan *plan, size_t index,
                           const struct qa_session *s, struct connect_plan *probe,
                           struct qa_error *e)
{
	if (s->welcome.on_primary)
		return 0;
	if (!plan->is_auto) {
		if (index == 0)
			return 0;
		*probe = *plan;
	} else {
		/* Only when the router named a primary and put it first: with no
		 * assignment (primary "") every worker is as good as another. */
		const struct qa_server_list *l = &s->welcome.servers;
		if (s->welcome.primary[0] == '\0' || l->n == 0 ||
		    strcmp(l->v[0].name, s->welcome.primary) != 0)
			return 0;
		if (plan_connect(a, QS_FLAG_PERSIST, probe, e) != 0)
			return -1;
		char here[QA_STREAM_TEXT_MAX], there[QA_STREAM_TEXT_MAX];
		if (probe->cycle.n_streams < 2 ||
		    qa_stream_format(&plan->streams[index], here, sizeof here) < 0 ||
		    qa_stream_format(&probe->streams[0], there, sizeof there) < 0 ||
		    strcmp(here, there) == 0)
			return 0;
	}
	probe->cycle.streams = probe->streams;
	probe->cycle.labels = probe->labels;
	probe->cycle.hello = &probe->hello;
	probe->hello.primary = probe->primary;
	return 1;
}

/* The state of qa_agent_run across cycles. */
struct runner {
	struct qa_agent *a;
	struct qa_run run;
	unsigned cycle_no;
	unsigned failed_in_a_row; /* k of agent.md step 5 */
	unsigned seed;            /* rand_r state for the backoff factor */
	uint64_t failback_ms;
};

/* One session and the sessions that replace it when the primary answers
 * again (step 6), until the run ends or the connection is lost. s holds a
 * session that just got WELCOME from plan's stream index; spare is a second
 * session object for the probes. Returns like qa_run_session; *cur says
 * which of the two was last used (closed on return). */
static int run_connected(struct runner *rn, struct connect_plan *plan, size_t index,
                         struct qa_session *s, struct qa_session *spare, enum qa_run_end *end,
                         uint64_t *welcome_at, struct qa_error *e)
{
	struct qa_agent *a = rn->a;
	struct qa_run *run = &rn->run;
	struct connect_plan probe;
	int rc;
	for (;;) {
		*welcome_at = qa_mono_ms();
		rc = record_welcome(a, plan, s, e);
		int target = 0;
		if (rc == 0 && (target = failback_target(a, plan, index, s, &probe, e)) < 0)
			rc = -1;
		run->probe_at_ms = target ? qa_mono_ms() + rn->failback_ms : 0;
		if (rc == 0)
			rc = qa_run_session(run, s, end, e);
		/* On an alternate: try the primary whenever the loop says it is time. */
		while (rc == 0 && *end == QA_RUN_END_PROBE) {
			qa_session_init(spare, &a->log);
			qa_run_prepare(run, spare);
			probe.cycle.cycle_no = rn->cycle_no;
			struct qa_error pe;
			if (qa_cycle_probe(spare, &probe.cycle, 0, &pe) == 0) {
				/* The primary answered: leave the alternate (BYE), keep
				 * the new session. The server ends the old one anyway
				 * (superseded); the BYE just says it first. */
				record_reassign(a, s);
				qa_run_close(run, s, 0, QA_RUN_END_FAILBACK, NULL);
				qa_session_free(s);
				*s = *spare; /* the connection's buffers move with it */
				qa_session_init(spare, &a->log);
				*plan = probe;
				plan->cycle.streams = plan->streams;
				plan->cycle.labels = plan->labels;
				plan->cycle.hello = &plan->hello;
				plan->hello.primary = plan->primary;
				index = 0;
				break;
			}
			qa_session_free(spare);
			if (pe.kind == QA_FAIL_STOPPED) {
				*end = qa_run_stopped(run);
				return 0;
			}
			if (qa_error_is_final(&pe) || pe.kind == QA_FAIL_STORE ||
			    pe.kind == QA_FAIL_SYSTEM) {
				/* auth, version...: the primary refuses this agent; the
				 * alternate would say the same at its next HELLO. */
				*e = pe;
				qa_run_close(run, s, -1, QA_RUN_END_NONE, e);
				return -1;
			}
			run->probe_at_ms = qa_mono_ms() + rn->failback_ms;
			rc = qa_run_resume(run, s, end, e);
		}
		if (rc == 0 && *end == QA_RUN_END_PROBE)
			continue; /* switched to the primary: run the new session */
		break;
	}
	/* The new list is kept before BYE, so a crash after BYE still follows it. */
	record_reassign(a, s);
	QA_DEBUG(&a->log, "run session with %s ended: %s", s->welcome.server,
	         rc == 0 ? qa_run_end_reason(*end) : e->msg);
	qa_run_close(run, s, rc, *end, e);
	return rc;
}

/* Whether a failure ends `run` (1) or a new cycle follows (0). */
static int run_fails_for_good(const struct qa_error *e)
{
	return qa_error_is_final(e) || e->kind == QA_FAIL_STORE || e->kind == QA_FAIL_SYSTEM;
}

/* `run -push none`: no persistent session. A transmission (a cycle with
 * HELLO flags 0, the sync transaction, BYE) at the start, then per -policy:
 * when something new is queued (automatic, looked at every 0.5 s), every S
 * seconds (scheduled), never again (ondemand). A cycle where everything
 * failed waits the backoff of step 5 before the next try; a transmission cut
 * short is tried again after 1 s. */
static int run_without_session(struct runner *rn, enum qa_run_end *end, struct qa_error *e)
{
	struct qa_agent *a = rn->a;
	struct qa_run *run = &rn->run;
	const struct qa_run_params *p = &run->p;
	uint64_t next_due = qa_mono_ms(); /* the first transmission at once */
	uint64_t mark_done = 0;
	int have_mark = 0;
	for (;;) {
		uint64_t now = qa_mono_ms();
		if (run->deadline_ms != 0 && now >= run->deadline_ms) {
			*end = QA_RUN_END_TIME;
			return 0;
		}
		if (p->count != 0 && run->received >= p->count) {
			*end = QA_RUN_END_COUNT;
			return 0;
		}
		int due = now >= next_due;
		if (!due && p->outbox_poll_ms != 0 && have_mark && next_due == UINT64_MAX) {
			uint64_t mark;
			if (qa_store_queue_mark(a->store, &mark, e) != 0)
				return -1;
			due = mark > mark_done;
		}
		if (!due) {
			uint64_t wake = next_due;
			if (p->outbox_poll_ms != 0 && now + p->outbox_poll_ms < wake)
				wake = now + p->outbox_poll_ms;
			if (wake == UINT64_MAX)
				wake = now + 60000;
			struct qa_error we;
			if (qa_cycle_sleep(p->stop_fd, run->deadline_ms, wake - now, &we) != 0) {
				if (we.kind != QA_FAIL_STOPPED) {
					*e = we;
					return -1;
				}
				*end = qa_run_stopped(run);
				return 0;
			}
			continue;
		}
		struct connect_plan plan;
		if (plan_connect(a, 0, &plan, e) != 0)
			return -1;
		plan.cycle.cycle_no = ++rn->cycle_no;
		struct qa_session s;
		qa_session_init(&s, &a->log);
		qa_run_prepare(run, &s);
		if (qa_cycle_connect(&s, &plan.cycle, NULL, e) != 0) {
			qa_session_free(&s);
			if (e->kind == QA_FAIL_STOPPED) {
				*end = qa_run_stopped(run);
				return 0;
			}
			if (run_fails_for_good(e)) {
				if (e->kind == QA_FAIL_SERVER)
					qa_run_report_error(run, e);
				return -1;
			}
			rn->failed_in_a_row++;
			const double r = (double)rand_r(&rn->seed) / (double)RAND_MAX;
			const uint64_t wait_ms = qa_failover_backoff_ms(rn->failed_in_a_row, r);
			qa_log_write(&a->log,
			             "run: %s\nnext cycle in %" PRIu64 " ms (%u failed in a row)",
			             e->msg, wait_ms, rn->failed_in_a_row);
			qa_run_report_unreachable(run, e->msg, wait_ms);
			next_due = qa_mono_ms() + wait_ms;
			continue;
		}
		rn->failed_in_a_row = 0;
		uint64_t mark = 0;
		int rc = record_welcome(a, &plan, &s, e);
		if (rc == 0)
			rc = qa_run_transmit_once(run, &s, &mark, e);
		record_reassign(a, &s);
		qa_run_close(run, &s, rc, QA_RUN_END_DONE, e);
		qa_session_free(&s);
		if (rc != 0 && e->kind == QA_FAIL_STOPPED) {
			*end = qa_run_stopped(run);
			return 0;
		}
		if (rc != 0 && run_fails_for_good(e))
			return -1;
		if (rc != 0) {
			next_due = qa_mono_ms() + QA_RUN_MIN_SESSION_MS;
			continue;
		}
		mark_done = mark;
		have_mark = 1;
		next_due = p->schedule_ms != 0 ? qa_mono_ms() + p->schedule_ms : UINT64_MAX;
	}
}

int qa_agent_run(struct qa_agent *a, const struct qa_run_params *p, enum qa_run_end *end,
                 struct qa_error *e)
{
	*end = QA_RUN_END_NONE;
	const struct qa_config *cfg = a->cfg;
	struct qa_run_params params = *p;
	params.outbox_poll_ms = cfg->policy == QA_POLICY_AUTOMATIC ? QA_RUN_QUEUE_POLL_MS : 0;
	params.schedule_ms =
	    cfg->policy == QA_POLICY_SCHEDULED ? (uint64_t)cfg->schedule_s * 1000u : 0;
	struct runner rn = {.a = a, .failback_ms = qa_failover_failback_ms(cfg->fd_ms)};
	rn.seed = (unsigned)(qa_mono_ms() ^ qa_now_ms() ^ ((uint64_t)getpid() << 16));
	qa_run_init(&rn.run, &params, a->store, &a->log);
	if (cfg->push == QA_PUSH_NONE)
		return run_without_session(&rn, end, e);

	struct qa_session sessions[2];
	qa_session_init(&sessions[0], &a->log);
	qa_session_init(&sessions[1], &a->log);
	int rc = 0;
	for (;;) {
		struct connect_plan plan;
		if (plan_connect(a, QS_FLAG_PERSIST, &plan, e) != 0) {
			rc = -1;
			break;
		}
		plan.cycle.cycle_no = ++rn.cycle_no;
		struct qa_session *s = &sessions[0];
		qa_session_init(s, &a->log);
		qa_run_prepare(&rn.run, s);
		size_t index = 0;
		if (qa_cycle_connect(s, &plan.cycle, &index, e) != 0) {
			qa_session_free(s);
			if (e->kind == QA_FAIL_STOPPED) {
				*end = qa_run_stopped(&rn.run);
				break;
			}
			if (run_fails_for_good(e)) {
				if (e->kind == QA_FAIL_SERVER)
					qa_run_report_error(&rn.run, e);
				rc = -1;
				break;
			}
			/* Step 5: every attempt failed. */
			rn.failed_in_a_row++;
			const double r = (double)rand_r(&rn.seed) / (double)RAND_MAX;
			const uint64_t wait_ms = qa_failover_backoff_ms(rn.failed_in_a_row, r);
			qa_log_write(&a->log,
			             "run: %s\nnext cycle in %" PRIu64 " ms (%u failed in a row)",
			             e->msg, wait_ms, rn.failed_in_a_row);
			qa_run_report_unreachable(&rn.run, e->msg, wait_ms);
			struct qa_error we;
			if (qa_cycle_sleep(params.stop_fd, rn.run.deadline_ms, wait_ms, &we) != 0) {
				if (we.kind == QA_FAIL_STOPPED) {
					*end = qa_run_stopped(&rn.run);
					break;
				}
				*e = we;
				rc = -1;
				break;
			}
			continue;
		}
		rn.failed_in_a_row = 0;
		uint64_t welcome_at = 0;
		rc = run_connected(&rn, &plan, index, s, &sessions[1], end, &welcome_at, e);
		qa_session_free(s);
		if (rc == 0 && *end == QA_RUN_END_REASSIGN) {
			/* Step 8: the new list is recorded; the next cycle starts with
			 * the new primary. */
			QA_DEBUG(&a->log, "REASSIGN: reconnecting to the new primary");
			continue;
		}
		if (rc == 0)
			break; /* time limit, count, stop */
		if (run_fails_for_good(e))
			break;
		/* The session was lost: a new cycle from step 1. */
		QA_DEBUG(&a->log, "session lost (%s): new cycle", e->msg);
		const uint64_t now = qa_mono_ms();
		if (now < welcome_at + QA_RUN_MIN_SESSION_MS) {
			struct qa_error we;
			if (qa_cycle_sleep(params.stop_fd, rn.run.deadline_ms,
			                   welcome_at + QA_RUN_MIN_SESSION_MS - now, &we) != 0) {
				if (we.kind == QA_FAIL_STOPPED) {
					*end = qa_run_stopped(&rn.run);
					rc = 0;
					break;
				}
				*e = we;
				break;
			}
		}
		rc = 0;
	}
	qa_session_free(&sessions[0]);
	qa_session_free(&sessions[1]);
	return rc;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

int qa_agent_unread(struct qa_agent *a, const char *queue, uint64_t wait_ms,
                    struct qa_in_list *list, int *synced, struct qa_error *e)
{
	const uint64_t deadline = qa_mono_ms() + wait_ms;
	*synced = 0;
	for (;;) {
		if (qa_store_inbox_unread(a->store, queue, list, e) != 0)
			return -1;
		uint64_t now = qa_mono_ms();
		if (list->n > 0 || wait_ms == 0 || now >= deadline)
			return 0;
		qa_in_list_free(list);
		const uint64_t started = now;
		struct qa_sync_result r;
		struct qa_error err;
		if (qa_agent_sync(a, &r, &err) == 0) {
			*synced = 1;
			if (r.received > 0)
				continue;
		} else if (qa_error_is_final(&err) || err.kind == QA_FAIL_STORE ||
		           err.kind == QA_FAIL_SYSTEM) {
			*e = err;
			return -1;
		} else {
			QA_DEBUG(&a->log, "recv --wait: sync failed: %s", err.msg);
		}
		now = qa_mono_ms();
		if (now >= deadline)
			continue; /* one last look at the inbox */
		uint64_t next = started + QA_RECV_POLL_MS;
		if (next > deadline)
			next = deadline;
		if (next > now)
			sleep_ms(next - now);
	}
}

int qa_agent_take(struct qa_agent *a, const struct qa_in_list *list, struct qa_error *e)
{
	return qa_store_inbox_take(a->store, list, QS_ST_RECEIVED, e);
}

int qa_agent_status(struct qa_agent *a, struct qa_store_counts *c, char **last_server,
                    uint64_t *last_sync_ms, struct qa_error *e)
{
	char *sync_text = NULL;
	*last_server = NULL;
	*last_sync_ms = 0;
	if (qa_store_counts(a->store, c, e) != 0 ||
	    qa_store_meta_get(a->store, "last_server", last_server, e) < 0 ||
	    qa_store_meta_get(a->store, "last_sync_ms", &sync_text, e) < 0) {
		free(*last_server);
		*last_server = NULL;
		return -1;
	}
	if (sync_text != NULL)
		*last_sync_ms = strtoull(sync_text, NULL, 10);
	free(sync_text);
	return 0;
}
