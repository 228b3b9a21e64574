/* Counter tables and histograms; see counters.h. */
#include "gateway/counters.h"

const double gw_hist_bounds[GW_HIST_N] = {
#define GW_HIST_BOUND(bound) bound,
    GW_HIST_BUCKETS(GW_HIST_BOUND)
#undef GW_HIST_BOUND
};

void gw_histogram_observe(struct gw_histogram *h, double seconds)
{
	/* A duration is never negative (callers take it from the monotonic
	 * clock), but the conversion to uint64_t below must never see one
	 * (undefined behaviour), nor a NaN. */
	if (!(seconds >= 0.0))
		seconds = 0.0;
	for (int i = 0; i < GW_HIST_N; i++)
		if (seconds <= gw_hist_bounds[i]) {
			atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
			break;
		}
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}
