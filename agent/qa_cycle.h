/* A connection cycle: the agent's choice of server (agent.md "Failover",
 * steps 1-4). The primary first; -fr retries of it, -fd apart; then each
 * alternate once, in order, at once (the schedule is qa_failover's). The
 * first WELCOME wins; a non-retryable ERROR ends the cycle at once. Every
 * attempt is logged at -v with its wall-clock time, stream and outcome, and
 * written as one JSON line to the trace file if there is one. Also the single
 * attempt `run` makes on the primary while on an alternate (step 6). */
#ifndef QA_CYCLE_H
#define QA_CYCLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "agent/qa_error.h"
#include "agent/qa_session.h"
#include "agent/qa_stream.h"

/* A label per stream for logs and traces: the worker name when the list came
 * from the router (auto mode), else "primary", "alt1", "alt2"... */
typedef char qa_cycle_label[QA_NAME_MAX + 1];

struct qa_cycle_params {
	const struct qa_stream *streams; /* in the order to try them: primary first */
	size_t n_streams;
	const qa_cycle_label *labels; /* NULL: "primary", "alt1", ... */
	const struct qa_hello_params *hello;
	int connect_timeout_ms; /* per attempt; QA_CONNECT_TIMEOUT_MS by default */
	unsigned fr;            /* -fr: retries of the primary */
	uint64_t fd_ms;         /* -fd: wait after a failed primary attempt, before a retry */
	FILE *trace;            /* NULL, or where one JSON line per attempt goes */
	unsigned cycle_no;      /* for logs and traces: 1 for the first cycle of a process */
};

/* Runs one cycle. Waits (the -fd delays) and attempts end early when the
 * session's cancel fd becomes readable or its stop time comes
 * (QA_FAIL_STOPPED). On success s holds an open session and *index (if not
 * NULL) the position of its stream. On failure e says why: a non-retryable
 * ERROR as received, or QA_FAIL_CONNECT naming every server tried, one line
 * each, with the number of attempts and the last reason:
 *   no server could be reached (cycle 3, 4 attempts):
 *     primary tcpip(host=a;port=2439): 3 attempts, last: connect failed: Connection refused
 *     alt1 tcpip(host=b;port=2439): ERROR draining (code 8, retryable): shutting down */
int qa_cycle_connect(struct qa_session *s, const struct qa_cycle_params *p, size_t *index,
                     struct qa_error *e) __attribute__((warn_unused_result));

/* One attempt on p->streams[index] outside a cycle (the return to the
 * primary of `run`), logged and traced as phase "failback". */
int qa_cycle_probe(struct qa_session *s, const struct qa_cycle_params *p, size_t index,
                   struct qa_error *e) __attribute__((warn_unused_result));

/* Waits ms milliseconds, or until cancel_fd (if >= 0) becomes readable or the
 * monotonic time stop_at_ms (if not 0) comes: then QA_FAIL_STOPPED. */
int qa_cycle_sleep(int cancel_fd, uint64_t stop_at_ms, uint64_t ms, struct qa_error *e)
    __attribute__((warn_unused_result));

#endif
