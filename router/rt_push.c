/* The push result table; see rt_push.h. */
#include "router/rt_push.h"

#include <string.h>

const char *const rt_push_result_names[RT_PUSH_N] = {
#define RT_PUSH_NAME(e, name, per_agent) name,
    RT_PUSH_RESULTS(RT_PUSH_NAME)
#undef RT_PUSH_NAME
};

int rt_push_result_per_agent(const char *result)
{
#define RT_PUSH_PER_AGENT(e, name, per_agent)                                                      \
	if (strcmp(result, name) == 0)                                                             \
		return per_agent;
	RT_PUSH_RESULTS(RT_PUSH_PER_AGENT)
#undef RT_PUSH_PER_AGENT
	return 0;
}

enum rt_push_result rt_push_routed(int failed, int delivered, const char *target,
                                   const char *session_worker)
{
	if (failed)
		return RT_PUSH_FAILED;
	if (!target[0]) /* no primary, no session */
		return RT_PUSH_NO_SESSION;
	if (delivered == 0) /* the target worker is down: nobody decided */
		return session_worker[0] ? RT_PUSH_SUPPRESSED_OFF_PRIMARY : RT_PUSH_NO_SESSION;
	return RT_PUSH_N;
}
