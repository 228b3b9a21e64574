/* A connection cycle: see qa_cycle.h. */
#include "agent/qa_cycle.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>

#include "agent/qa_failover.h"
#include "common/clock.h"

int qa_cycle_sleep(int cancel_fd, uint64_t stop_at_ms, uint64_t ms, struct qa_error *e)
{
	const uint64_t start = gw_mono_ms();
	uint64_t until = start + ms;
	const int stop_first = stop_at_ms != 0 && stop_at_ms <= until;
	if (stop_first)
		until = stop_at_ms;
	for (;;) {
		const uint64_t now = gw_mono_ms();
		if (now >= until)
			break;
		struct pollfd p = {.fd = cancel_fd, .events = POLLIN};
		uint64_t left = until - now;
		int rc = poll(&p, cancel_fd >= 0 ? 1 : 0, left > 60000 ? 60000 : (int)left);
		if (rc < 0 && errno != EINTR)
			return qa_error_set(e, QA_FAIL_SYSTEM, "poll: %s", strerror(errno));
		if (rc > 0)
			return qa_error_set(e, QA_FAIL_STOPPED, "stopped");
	}
	if (stop_first)
		return qa_error_set(e, QA_FAIL_STOPPED, "stopped");
	return 0;
}

static void label_of(const struct qa_cycle_params *p, size_t i, char *buf, size_t n)
{
	if (p->labels != NULL && p->labels[i][0] != '\0')
		snprintf(buf, n, "%s", p->labels[i]);
	else if (i == 0)
		snprintf(buf, n, "primary");
	else
		snprintf(buf, n, "alt%zu", i);
}

/* A JSON string (quotes included) of text, control characters escaped. */
static void json_str(FILE *f, const char *text)
{
	fputc('"', f);
	for (const unsigned char *c = (const unsigned char *)text; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(f, "\\%c", *c);
		else if (*c == '\n')
			fputs("\\n", f);
		else if (*c < 0x20)
			fprintf(f, "\\u%04x", *c);
		else
			fputc(*c, f);
	}
	fputc('"', f);
}

/* What an attempt came to, for the log and the trace. */
struct attempt_report {
	const char *phase; /* "cycle" or "failback" */
	unsigned cycle_no;
	const char *label;
	const char *stream;
	unsigned try_no, tries;
	uint64_t start_ms; /* wall clock at the start of the attempt */
	uint64_t took_ms;
	const char *result; /* "welcome", "failed", "refused" (non-retryable), "stopped" */
	const char *outcome;
	const char *server; /* the WELCOME's server, or NULL */
	int on_primary;
};

static void trace(FILE *f, const struct attempt_report *r)
{
	if (f == NULL)
		return;
	flockfile(f);
	fprintf(f, "{\"ts_ms\":%" PRIu64 ",\"phase\":\"%s\",\"cycle\":%u,\"server\":", r->start_ms,
	        r->phase, r->cycle_no);
	json_str(f, r->label);
	fputs(",\"stream\":", f);
	json_str(f, r->stream);
	fprintf(f, ",\"try\":%u,\"of\":%u,\"result\":\"%s\",\"outcome\":", r->try_no, r->tries,
	        r->result);
	json_str(f, r->outcome);
	if (r->server != NULL) {
		fputs(",\"welcome_server\":", f);
		json_str(f, r->server);
		fprintf(f, ",\"on_primary\":%d", r->on_primary);
	}
	fprintf(f, ",\"took_ms\":%" PRIu64 "}\n", r->took_ms);
	fflush(f);
	funlockfile(f);
}

/* One attempt on stream i: connect, HELLO, WELCOME. Logged at -v as
 *   attempt LABEL STREAM try I/N: connecting
 *   attempt LABEL STREAM try I/N: OUTCOME
 * (" failback" after I/N for the return to the primary). */
static int attempt(struct qa_session *s, const struct qa_cycle_params *p, size_t i, unsigned try_no,
                   unsigned tries, const char *phase, struct qa_error *e)
{
	char text[QA_STREAM_TEXT_MAX];
	char label[QA_NAME_MAX + 8];
	if (qa_stream_format(&p->streams[i], text, sizeof text) < 0)
		snprintf(text, sizeof text, "(stream %zu)", i + 1);
	label_of(p, i, label, sizeof label);
	const char *tag = strcmp(phase, "cycle") == 0 ? "" : " failback";
	struct attempt_report r = {.phase = phase,
	                           .cycle_no = p->cycle_no,
	                           .label = label,
	                           .stream = text,
	                           .try_no = try_no,
	                           .tries = tries,
	                           .start_ms = (uint64_t)gw_wall_ms()};
	const uint64_t t0 = gw_mono_ms();
	QA_DEBUG(s->log, "attempt %s %s try %u/%u%s: connecting", label, text, try_no, tries, tag);
	qa_error_clear(e);
	int rc = qa_session_open(s, &p->streams[i], p->hello, p->connect_timeout_ms, e);
	r.took_ms = gw_mono_ms() - t0;
	char outcome[QA_ERROR_MSG_MAX + 128];
	if (rc == 0) {
		snprintf(outcome, sizeof outcome, "WELCOME from %s (primary %s, on_primary %d)",
		         s->welcome.server,
		         s->welcome.primary[0] ? s->welcome.primary : "unresolved",
		         s->welcome.on_primary);
		r.result = "welcome";
		r.server = s->welcome.server;
		r.on_primary = s->welcome.on_primary;
	} else {
		snprintf(outcome, sizeof outcome, "%s", e->msg);
		r.result = e->kind == QA_FAIL_STOPPED ? "stopped"
		           : qa_error_is_final(e)     ? "refused"
		                                      : "failed";
	}
	r.outcome = outcome;
	QA_DEBUG(s->log, "attempt %s %s try %u/%u%s: %s", label, text, try_no, tries, tag, outcome);
	trace(p->trace, &r);
	return rc;
}

int qa_cycle_probe(struct qa_session *s, const struct qa_cycle_params *p, size_t index,
                   struct qa_error *e)
{
	struct qa_error local;
	if (e == NULL)
		e = &local;
	if (index >= p->n_streams)
		return qa_error_set(e, QA_FAIL_USAGE, "no stream %zu to try", index);
	return attempt(s, p, index, 1, 1, "failback", e);
}

int qa_cycle_connect(struct qa_session *s, const struct qa_cycle_params *p, size_t *index,
                     struct qa_error *e)
{
	struct qa_error local;
	if (e == NULL)
		e = &local;
	if (p->n_streams == 0)
		return qa_error_set(e, QA_FAIL_USAGE, "no -x stream to connect to");
	const struct qa_failover f = {.n_streams = p->n_streams, .fr = p->fr, .fd_ms = p->fd_ms};
	const size_t total = qa_failover_attempts(&f);
	char summary[QA_ERROR_MSG_MAX];
	size_t used = (size_t)snprintf(
	    summary, sizeof summary,
	    "no server could be reached (cycle %u, %zu attempts):", p->cycle_no, total);
	struct qa_error last;
	if (p->n_streams > 1 || p->fr > 0)
		QA_DEBUG(s->log, "cycle %u: %zu streams, -fr %u, -fd %" PRIu64 ".%03u s",
		         p->cycle_no, p->n_streams, p->fr, p->fd_ms / 1000,
		         (unsigned)(p->fd_ms % 1000));

	struct qa_attempt_step step;
	for (size_t k = 0; qa_failover_step(&f, k, &step) == 0; k++) {
		if (step.delay_ms > 0 &&
		    qa_cycle_sleep(s->conn.cancel_fd, s->conn.stop_at_ms, step.delay_ms, e) != 0)
			return -1;
		if (attempt(s, p, step.stream, step.try_no, step.tries, "cycle", &last) == 0) {
			if (index != NULL)
				*index = step.stream;
			return 0;
		}
		if (qa_error_is_final(&last)) {
			/* auth, version, superseded...: another server would say the
			 * same; not a failover case (agent.md). Or a stop was asked
			 * for (QA_FAIL_STOPPED). */
			*e = last;
			return -1;
		}
		if (last.kind == QA_FAIL_STORE || last.kind == QA_FAIL_SYSTEM) {
			*e = last;
			return -1;
		}
		/* One summary line per server, after its last attempt. */
		if (step.try_no == step.tries && used < sizeof summary) {
			char text[QA_STREAM_TEXT_MAX], label[QA_NAME_MAX + 8];
			if (qa_stream_format(&p->streams[step.stream], text, sizeof text) < 0)
				snprintf(text, sizeof text, "(stream %zu)", step.stream + 1);
			label_of(p, step.stream, label, sizeof label);
			if (step.tries > 1)
				used += (size_t)snprintf(summary + used, sizeof summary - used,
				                         "\n  %s %s: %u attempts, last: %s", label,
				                         text, step.tries, last.msg);
			else
				used += (size_t)snprintf(summary + used, sizeof summary - used,
				                         "\n  %s %s: %s", label, text, last.msg);
		}
	}
	return qa_error_set(e, QA_FAIL_CONNECT, "%s", summary);
}
