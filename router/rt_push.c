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
