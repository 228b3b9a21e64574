/* A connection cycle: see qa_cycle.h. */
#include "agent/qa_cycle.h"

#include <stdio.h>
#include <string.h>

int qa_cycle_connect(struct qa_session *s, const struct qa_cycle_params *p, size_t *index,
                     struct qa_error *e)
{
	char summary[QA_ERROR_MSG_MAX];
	size_t used = (size_t)snprintf(summary, sizeof summary, "no server could be reached:");
	struct qa_error attempt;

	for (size_t i = 0; i < p->n_streams; i++) {
		char text[QA_STREAM_TEXT_MAX];
		if (qa_stream_format(&p->streams[i], text, sizeof text) < 0)
			snprintf(text, sizeof text, "(stream %zu)", i + 1);
		QA_DEBUG(s->log, "attempt %zu %s: connecting", i + 1, text);
		qa_error_clear(&attempt);
		if (qa_session_open(s, &p->streams[i], p->hello, p->connect_timeout_ms, &attempt) ==
		    0) {
			QA_DEBUG(s->log,
			         "attempt %zu %s: WELCOME from %s (primary %s, on_primary %d)",
			         i + 1, text, s->welcome.server,
			         s->welcome.primary[0] ? s->welcome.primary : "unresolved",
			         s->welcome.on_primary);
			if (index != NULL)
				*index = i;
			return 0;
		}
		QA_DEBUG(s->log, "attempt %zu %s: %s", i + 1, text, attempt.msg);
		if (qa_error_is_final(&attempt)) {
			/* auth, version, superseded...: another server would say the
			 * same; not a failover case (agent.md). Or a stop was asked
			 * for (QA_FAIL_STOPPED). */
			if (e != NULL)
				*e = attempt;
			return -1;
		}
		if (used < sizeof summary)
			used += (size_t)snprintf(summary + used, sizeof summary - used,
			                         "\n  %s: %s", text, attempt.msg);
	}
	if (p->n_streams == 0)
		return qa_error_set(e, QA_FAIL_USAGE, "no -x stream to connect to");
	return qa_error_set(e, QA_FAIL_CONNECT, "%s", summary);
}
