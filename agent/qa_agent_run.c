/* `run` (agent.md "Failover" steps 1-9 around the persistent session of
 * qa_run): connection cycles, the backoff after a cycle where everything
 * failed, the return to the primary while on an alternate, REASSIGN, and
 * `run -push none`. See qa_agent.h for the entry point. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/qa_agent.h"
#include "agent/qa_cycle.h"
#include "agent/qa_failover.h"
#include "agent/qa_plan.h"
#include "agent/qa_session.h"
#include "common/clock.h"
#include "proto/qs_codec.h"

/* run -policy automatic: how often the client store's queues are looked at. */
#define QA_RUN_QUEUE_POLL_MS 500
/* A session lost sooner than this after its WELCOME: the next cycle waits
 * for the rest of it, so that a server that welcomes and drops at once is
 * not hammered (agent.md is silent; a choice). */
#define QA_RUN_MIN_SESSION_MS 1000

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
 * session object for the probes (when the primary answers, the new session
 * moves into *s). Returns like qa_run_session, with the session closed;
 * *welcome_at is when the last WELCOME came (monotonic ms). */
/* A failback probe's HELLO claims the agent on the primary before its WELCOME:
 * a primary that dies in between leaves the probe failed, and the session on
 * the alternate is ended "superseded" by that claim, which was this agent's
 * own. Within this long of a failed probe, superseded is not final: a new
 * cycle follows. */
#define PROBE_SUPERSEDE_MS 5000

static int superseded_by_own_probe(const struct qa_error *e, int64_t probe_failed_at)
{
	return probe_failed_at != 0 && e->kind == QA_FAIL_SERVER && e->code == QS_E_SUPERSEDED &&
	       gw_mono_ms() - probe_failed_at <= PROBE_SUPERSEDE_MS;
}

static int run_connected(struct runner *rn, struct qa_plan *plan, size_t index,
                         struct qa_session *s, struct qa_session *spare, enum qa_run_end *end,
                         uint64_t *welcome_at, struct qa_error *e)
{
	struct qa_agent *a = rn->a;
	struct qa_run *run = &rn->run;
	struct qa_plan probe;
	int64_t probe_failed_at = 0;
	int rc;
	for (;;) {
		*welcome_at = gw_mono_ms();
		rc = qa_plan_record_welcome(a, plan, s, e);
		int target = 0;
		if (rc == 0 && (target = qa_plan_failback(a, plan, index, s, &probe, e)) < 0)
			rc = -1;
		run->probe_at_ms = target ? gw_mono_ms() + rn->failback_ms : 0;
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
				qa_plan_record_reassign(a, s);
				qa_run_close(run, s, 0, QA_RUN_END_FAILBACK, NULL);
				qa_session_free(s);
				*s = *spare; /* the connection's buffers move with it */
				qa_session_init(spare, &a->log);
				qa_plan_copy(plan, &probe);
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
			probe_failed_at = gw_mono_ms();
			run->probe_at_ms = gw_mono_ms() + rn->failback_ms;
			rc = qa_run_resume(run, s, end, e);
		}
		if (rc == 0 && *end == QA_RUN_END_PROBE)
			continue; /* switched to the primary: run the new session */
		break;
	}
	if (rc != 0 && superseded_by_own_probe(e, probe_failed_at)) {
		qa_log_write(&a->log,
		             "superseded by this agent's own failback attempt, which failed: "
		             "not final, a new cycle follows");
		e->retryable = 1;
	}
	/* The new list is kept before BYE, so a crash after BYE still follows it. */
	qa_plan_record_reassign(a, s);
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
	uint64_t next_due = gw_mono_ms(); /* the first transmission at once */
	uint64_t mark_done = 0;
	int have_mark = 0;
	for (;;) {
		uint64_t now = gw_mono_ms();
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
		struct qa_plan plan;
		if (qa_plan_make(a, 0, &plan, e) != 0)
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
			next_due = gw_mono_ms() + wait_ms;
			continue;
		}
		rn->failed_in_a_row = 0;
		uint64_t mark = 0;
		int rc = qa_plan_record_welcome(a, &plan, &s, e);
		if (rc == 0)
			rc = qa_run_transmit_once(run, &s, &mark, e);
		qa_plan_record_reassign(a, &s);
		qa_run_close(run, &s, rc, QA_RUN_END_DONE, e);
		qa_session_free(&s);
		if (rc != 0 && e->kind == QA_FAIL_STOPPED) {
			*end = qa_run_stopped(run);
			return 0;
		}
		if (rc != 0 && run_fails_for_good(e))
			return -1;
		if (rc != 0) {
			next_due = gw_mono_ms() + QA_RUN_MIN_SESSION_MS;
			continue;
		}
		mark_done = mark;
		have_mark = 1;
		next_due = p->schedule_ms != 0 ? gw_mono_ms() + p->schedule_ms : UINT64_MAX;
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
	rn.seed = (unsigned)(gw_mono_ms() ^ gw_wall_ms() ^ ((uint64_t)getpid() << 16));
	qa_run_init(&rn.run, &params, a->store, &a->log);
	if (cfg->push == QA_PUSH_NONE)
		return run_without_session(&rn, end, e);

	struct qa_session sessions[2];
	qa_session_init(&sessions[0], &a->log);
	qa_session_init(&sessions[1], &a->log);
	int rc = 0;
	for (;;) {
		struct qa_plan plan;
		if (qa_plan_make(a, QS_FLAG_PERSIST, &plan, e) != 0) {
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
		const uint64_t now = gw_mono_ms();
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
