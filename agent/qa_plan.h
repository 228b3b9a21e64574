/* The connection plan of an agent (libqaagent internal, used by qa_agent.c
 * and qa_agent_run.c): the streams a connection cycle tries (the -x list, or
 * for auto(...) the server list kept in the client store, then the
 * bootstrap), their labels for the log and the trace, the HELLO to say; what
 * a WELCOME or REASSIGN teaches (the last server, auto's list); and which
 * stream `run` tries in the background while on an alternate. A server list
 * never weakens the bootstrap: under auto(...;tls=on) its cleartext entries
 * are dropped, and tls entries always use the bootstrap's certificates. */
#ifndef QA_PLAN_H
#define QA_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "agent/qa_agent.h"
#include "agent/qa_cycle.h"
#include "agent/qa_session.h"

/* Everything one connection cycle needs. Holds pointers into itself: copy
 * it with qa_plan_copy. */
struct qa_plan {
	struct qa_stream streams[QA_MAX_STREAMS + 1];
	qa_cycle_label labels[QA_MAX_STREAMS + 1];
	char primary[QA_STREAM_TEXT_MAX]; /* HELLO's primary: HOST:PORT, "" for auto */
	struct qa_hello_params hello;
	struct qa_cycle_params cycle;
	int is_auto;
};

/* Builds the plan of a's configuration and store; flags: 0 for sync,
 * QS_FLAG_PERSIST for run. */
int qa_plan_make(struct qa_agent *a, uint8_t flags, struct qa_plan *c, struct qa_error *e)
    __attribute__((warn_unused_result));

void qa_plan_copy(struct qa_plan *dst, const struct qa_plan *src);

/* After WELCOME: records the server reached, and for auto(...) its server
 * list (an empty list does not erase the one kept). */
int qa_plan_record_welcome(struct qa_agent *a, const struct qa_plan *c, const struct qa_session *s,
                           struct qa_error *e) __attribute__((warn_unused_result));

/* After a REASSIGN (if s got one): records its list. Failures are logged. */
void qa_plan_record_reassign(struct qa_agent *a, const struct qa_session *s);

/* The stream `run` tries in the background while the session s (WELCOME from
 * plan's stream index) is on an alternate (agent.md step 6), as a plan whose
 * stream 0 is that primary: returns 1 and fills *probe; 0 when s is on the
 * primary (WELCOME's on_primary 1, or the first stream) or there is nothing
 * better to try; -1 on failure. With an -x list the primary is the first
 * entry; with auto(...) the first entry of the list this WELCOME gave, when
 * that is the primary the WELCOME names. */
int qa_plan_failback(struct qa_agent *a, const struct qa_plan *plan, size_t index,
                     const struct qa_session *s, struct qa_plan *probe, struct qa_error *e)
    __attribute__((warn_unused_result));

#endif
