/* Counter tables and histograms; see counters.h. */
#include "gateway/counters.h"

const char *const gw_push_result_names[GW_PUSH_N] = {
#define GW_PUSH_NAME(e, name) name,
    GW_PUSH_RESULTS(GW_PUSH_NAME)
#undef GW_PUSH_NAME
};

void gw_histogram_observe(struct gw_histogram *h, double seconds)
{
	static const double bounds[GW_HIST_N] = GW_HIST_BUCKETS;
	/* A duration is never negative (callers take it from the monotonic
	 * clock), but the conversion to uint64_t below must never see one
	 * (undefined behaviour), nor a NaN. */
	if (!(seconds >= 0.0))
		seconds = 0.0;
	for (int i = 0; i < GW_HIST_N; i++)
		if (seconds <= bounds[i]) {
			atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
			break;
		}
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}
