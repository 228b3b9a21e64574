/* The failover schedule of agent.md "Failover", as pure functions with no I/O
 * and no clock, so that unit tests can pin it down: which stream each attempt
 * of a connection cycle goes to and how long to wait before it (steps 1-4),
 * the wait between cycles of `run` after a cycle where every attempt failed
 * (step 5), and how often `run` tries the primary again while it is on an
 * alternate (step 6). qa_cycle and qa_agent_run follow what these say. */
#ifndef QA_FAILOVER_H
#define QA_FAILOVER_H

#include <stddef.h>
#include <stdint.h>

#define QA_BACKOFF_CAP_S       300   /* step 5: min(2^k, 300) s */
#define QA_FAILBACK_DEFAULT_MS 30000 /* step 6: -fd 0 means every 30 s */

/* The policy of one cycle: the number of streams (primary first), -fr and
 * -fd (ms). -fr and -fd apply to the primary only. */
struct qa_failover {
	size_t n_streams;
	unsigned fr;
	uint64_t fd_ms;
};

/* One attempt of a cycle. */
struct qa_attempt_step {
	size_t stream;     /* index into the list: 0 is the primary */
	unsigned try_no;   /* 1-based attempt number on this stream */
	unsigned tries;    /* attempts this stream gets in the cycle: fr + 1 for the
	                      primary, 1 for each alternate */
	uint64_t delay_ms; /* wait after the previous failed attempt, before this one */
};

/* How many attempts a full cycle makes: fr + 1 on the primary, then one per
 * alternate (0 when there is no stream). */
size_t qa_failover_attempts(const struct qa_failover *f);

/* The k-th attempt (0-based) of a cycle into *out; -1 when k is past the
 * end. Attempt 0 is the primary at once; attempts 1..fr retry the primary,
 * each fd_ms after the previous failure; then each alternate once, in order,
 * with no delay. */
int qa_failover_step(const struct qa_failover *f, size_t k, struct qa_attempt_step *out);

/* The wait of `run` before the next cycle after k cycles failed in a row
 * (k >= 1): min(2^k, 300) s times a factor 0.5 + r, r a uniform random
 * number in [0, 1] (clamped). k 0 is treated as 1. */
uint64_t qa_failover_backoff_ms(unsigned k, double r);

/* How often `run` tries the primary while on an alternate: -fd, or 30 s when
 * -fd is 0. */
uint64_t qa_failover_failback_ms(uint64_t fd_ms);

#endif
