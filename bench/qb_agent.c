/* Placeholder while the client is being written (issue 7). */
#include "bench/qb_agent.h"
