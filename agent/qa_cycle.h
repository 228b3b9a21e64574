/* A connection cycle: the agent's choice of server. Tries a list of streams
 * in order, one connection attempt each, until one gives WELCOME; logs every
 * attempt (time, stream, outcome) at -v. A non-retryable ERROR ends the cycle
 * at once. This is where -fr/-fd retries of the primary and the backoff
 * between cycles of `run` belong (failover issue). */
#ifndef QA_CYCLE_H
#define QA_CYCLE_H

#include <stddef.h>

#include "agent/qa_error.h"
#include "agent/qa_session.h"
#include "agent/qa_stream.h"

struct qa_cycle_params {
	const struct qa_stream *streams; /* in the order to try them */
	size_t n_streams;
	const struct qa_hello_params *hello;
	int connect_timeout_ms; /* per attempt; QA_CONNECT_TIMEOUT_MS by default */
};

/* Runs one cycle. On success s holds an open session and *index (if not NULL)
 * the position of its stream. On failure e says why: a non-retryable ERROR
 * as received, otherwise QA_FAIL_CONNECT with one line per server tried:
 *   no server could be reached:
 *     tcpip(host=a;port=2439): connect failed: Connection refused
 */
int qa_cycle_connect(struct qa_session *s, const struct qa_cycle_params *p, size_t *index,
                     struct qa_error *e) __attribute__((warn_unused_result));

#endif
