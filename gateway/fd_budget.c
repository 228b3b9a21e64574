/* The descriptor budget; see fd_budget.h. */
#include "gateway/fd_budget.h"

#include <stdio.h>
#include <sys/resource.h>

/* The most a process may open when the hard limit is "unlimited". */
static rlim_t nr_open(void)
{
	unsigned long long n = 0;
	FILE *f = fopen("/proc/sys/fs/nr_open", "r");
	if (f) {
		if (fscanf(f, "%llu", &n) != 1)
			n = 0;
		fclose(f);
	}
	return n ? (rlim_t)n : 1048576;
}

uint64_t gw_fd_limit_raise(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	rlim_t want = rl.rlim_max == RLIM_INFINITY ? nr_open() : rl.rlim_max;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		struct rlimit raised = {want, rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			rl.rlim_cur = want;
	}
	return rl.rlim_cur == RLIM_INFINITY ? (uint64_t)nr_open() : (uint64_t)rl.rlim_cur;
}

int gw_fd_budget_check(const struct gw_config *c, uint64_t limit, struct gw_fd_budget *b, char *err,
                       size_t errlen)
{
	uint64_t n = (uint64_t)c->n_workers;
	uint64_t conns = (uint64_t)(c->store_connections > 0 ? c->store_connections : 1);
	b->limit = limit;
	b->fixed = n * (conns + GW_FD_PER_WORKER) + GW_FD_NODE;
	b->required = b->fixed + n * (uint64_t)c->max_pending_hello;
	b->sessions = n * (uint64_t)c->max_sessions;
	if (b->required <= limit)
		return 0;
	const char *key = "[limits] max_pending_hello";
	char most[64] = "";
	if (b->fixed < limit && n)
		snprintf(most, sizeof(most), " (to at most %llu)",
		         (unsigned long long)((limit - b->fixed) / n));
	else if (n * conns > GW_FD_NODE)
		key = "[store] connections", most[0] = 0;
	else
		key = "the number of [worker] sections", most[0] = 0;
	snprintf(err, errlen,
	         "%s: the descriptor budget is %llu (%llu workers x (max_pending_hello %d + "
	         "[store] connections %llu + %d) + %d) but RLIMIT_NOFILE allows %llu: lower "
	         "%s%s, or raise the limit (ulimit -n, LimitNOFILE=)",
	         c->path, (unsigned long long)b->required, (unsigned long long)n,
	         c->max_pending_hello, (unsigned long long)conns, GW_FD_PER_WORKER, GW_FD_NODE,
	         (unsigned long long)limit, key, most);
	return -1;
}

int gw_fd_budget_note(const struct gw_config *c, const struct gw_fd_budget *b, char *note,
                      size_t notelen)
{
	uint64_t left = b->limit > b->required ? b->limit - b->required : 0;
	if (b->sessions <= left)
		return 0;
	return snprintf(note, notelen,
	                "%s: [limits] max_sessions (%d per worker, %llu in all) exceeds the %llu "
	                "descriptors RLIMIT_NOFILE (%llu) leaves once the caps awaiting HELLO are "
	                "full: past about that many sessions the listeners pause "
	                "(qagw_listeners_paused) until descriptors free up",
	                c->path, c->max_sessions, (unsigned long long)b->sessions,
	                (unsigned long long)left, (unsigned long long)b->limit);
}
