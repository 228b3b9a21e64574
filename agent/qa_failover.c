/* The failover schedule: see qa_failover.h. */
#include "agent/qa_failover.h"

size_t qa_failover_attempts(const struct qa_failover *f)
{
	if (f->n_streams == 0)
		return 0;
	return (size_t)f->fr + f->n_streams;
}

int qa_failover_step(const struct qa_failover *f, size_t k, struct qa_attempt_step *out)
{
	if (k >= qa_failover_attempts(f))
		return -1;
	if (k <= f->fr) {
		/* Step 1 and step 3: the primary first, then up to fr retries,
		 * each waiting fd after the failure before it. */
		out->stream = 0;
		out->try_no = (unsigned)k + 1;
		out->tries = f->fr + 1;
		out->delay_ms = k == 0 ? 0 : f->fd_ms;
		return 0;
	}
	/* Steps 2 and 4: each alternate once, in order, at once. */
	out->stream = k - f->fr;
	out->try_no = 1;
	out->tries = 1;
	out->delay_ms = 0;
	return 0;
}

_Static_assert(QA_BACKOFF_CAP_S >= 256 && QA_BACKOFF_CAP_S < 512,
               "qa_failover_backoff_ms takes 2^k for k <= 8, the cap above");

uint64_t qa_failover_backoff_ms(unsigned k, double r)
{
	if (k == 0)
		k = 1;
	/* 2^8 = 256 is the last power under the cap of 300 (and no shift
	 * overflows for large k). */
	const uint64_t base_s = k <= 8 ? (uint64_t)1 << k : QA_BACKOFF_CAP_S;
	if (!(r >= 0.0)) /* also NaN */
		r = 0.0;
	if (r > 1.0)
		r = 1.0;
	return (uint64_t)((double)base_s * 1000.0 * (0.5 + r) + 0.5);
}

uint64_t qa_failover_failback_ms(uint64_t fd_ms)
{
	return fd_ms != 0 ? fd_ms : QA_FAILBACK_DEFAULT_MS;
}
