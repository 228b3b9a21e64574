/* Unit tests: the retention job's pacing (gateway/retention.c, the
 * gw_retention_pace functions of retention.h) driven by a fake clock. The job
 * reads the clocks and hands the readings to the pacing; here a fake clock of
 * two readings, monotonic and wall, stands in for gw_mono_ms and gw_wall_ms, and
 * a scripted store answers each batch with a row count after a chosen time.
 *
 * Covered: the pause is PACE (4) times the batch's time, at least 20 ms, in both
 * steps; a wall clock stepped back or forward during a batch changes neither the
 * pause nor the number of batches (the pacing is monotonic) while the cutoffs
 * follow the wall clock (the store's times are epoch ms); a short or empty batch
 * moves expiry on to the purge and ends the run after the purge, which then waits
 * the idle period (keep/4, between 1 s and 60 s); the job stays within a fifth of
 * its connection's time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/retention.h"

#define DAY_MS  (24 * 3600 * 1000LL)
#define HOUR_MS (3600 * 1000LL)
#define KEEP_MS (7 * DAY_MS) /* keep_days = 7 */

/* The fake clock: what gw_mono_ms and gw_wall_ms would return. */
struct fake_clock {
	int64_t mono_ms;
	int64_t wall_ms;
};

/* Time passes: both clocks move on. */
static void pass(struct fake_clock *k, int64_t ms)
{
	k->mono_ms += ms;
	k->wall_ms += ms;
}

/* The wall clock is set (NTP step, an operator): only it moves. */
static void step_wall(struct fake_clock *k, int64_t ms)
{
	k->wall_ms += ms;
}

/* One batch as the job runs it: begins at the clock's readings, the store
 * answers rows after took ms (the wall clock stepped by wall_step meanwhile),
 * ends. Returns the pause the job arms; *cutoff gets the batch's cutoff. */
static int64_t batch(struct gw_retention_pace *p, struct fake_clock *k, int rows, int64_t took,
                     int64_t wall_step, int64_t *cutoff)
{
	int64_t c = gw_retention_batch_begin(p, k->mono_ms, k->wall_ms, KEEP_MS);
	if (cutoff)
		*cutoff = c;
	pass(k, took);
	step_wall(k, wall_step);
	return gw_retention_batch_end(p, rows, k->mono_ms, KEEP_MS);
}

static void test_pause_scales_with_batch_time(void **state)
{
	static const struct {
		int64_t took, pause;
	} cases[] = {
	    {0, 20}, {1, 20}, {5, 20}, {6, 24}, {10, 40}, {100, 400}, {2500, 10000},
	};
	struct fake_clock k = {.mono_ms = 1000, .wall_ms = 1700000000000LL};
	for (int step = 0; step < 2; step++)
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			struct gw_retention_pace p = {0};
			gw_retention_run_begin(&p);
			p.step = step ? GW_RETENTION_PURGE : GW_RETENTION_EXPIRE;
			/* a full batch: the step goes on, paced */
			int64_t pause = batch(&p, &k, GW_RETENTION_BATCH, cases[i].took, 0, NULL);
			assert_int_equal(pause, cases[i].pause);
			assert_true(p.in_run);
			assert_int_equal(p.step, step ? GW_RETENTION_PURGE : GW_RETENTION_EXPIRE);
			pass(&k, pause);
		}
}

static void test_wall_clock_step_does_not_stall(void **state)
{
	/* Steps of an hour back, a day forward, a year back, during a batch. */
	static const int64_t steps[] = {-HOUR_MS, DAY_MS, -365 * DAY_MS, 1};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct fake_clock k = {.mono_ms = 5000, .wall_ms = 1700000000000LL};
		struct gw_retention_pace p = {0};
		gw_retention_run_begin(&p);
		int64_t cutoff;
		int64_t pause = batch(&p, &k, GW_RETENTION_BATCH, 30, steps[i], &cutoff);
		assert_int_equal(cutoff, 1700000000000LL); /* expiry: due before now */
		assert_int_equal(pause, 120);
		assert_int_equal(gw_retention_batch_took(&p, k.mono_ms), 30);
		pass(&k, pause);
		/* the next batch's cutoff follows the stepped wall clock */
		pause = batch(&p, &k, 0, 50, 0, &cutoff);
		assert_int_equal(cutoff, 1700000000000LL + 30 + steps[i] + 120);
		assert_int_equal(pause, 200);
		assert_int_equal(p.step, GW_RETENTION_PURGE);
		pass(&k, pause);
		pause = batch(&p, &k, 0, 5, 0, &cutoff);
		assert_int_equal(cutoff,
		                 1700000000000LL + 30 + steps[i] + 120 + 50 + 200 - KEEP_MS);
		assert_false(p.in_run);
		assert_int_equal(pause, 60000);
	}
}

static void test_short_batch_ends_step_and_run(void **state)
{
	struct fake_clock k = {.mono_ms = 0, .wall_ms = 1700000000000LL};
	struct gw_retention_pace p = {0};
	gw_retention_run_begin(&p);
	assert_true(p.in_run);
	assert_int_equal(p.step, GW_RETENTION_EXPIRE);
	/* an empty expiry batch: on to the purge, still paced (not the idle period) */
	int64_t pause = batch(&p, &k, 0, 3, 0, NULL);
	assert_true(p.in_run);
	assert_int_equal(p.step, GW_RETENTION_PURGE);
	assert_int_equal(pause, 20);
	/* a batch one short of full ends the purge too: the run is over and the
	 * job waits the idle period, whatever the batch took */
	pause = batch(&p, &k, GW_RETENTION_BATCH - 1, 700, 0, NULL);
	assert_false(p.in_run);
	assert_int_equal(pause, gw_retention_interval_ms(KEEP_MS));
	assert_int_equal(pause, 60000);

	/* the idle period: keep/4, between 1 s and 60 s */
	assert_int_equal(gw_retention_interval_ms(0), 1000);
	assert_int_equal(gw_retention_interval_ms(2000), 1000);
	assert_int_equal(gw_retention_interval_ms(100000), 25000);
	assert_int_equal(gw_retention_interval_ms(240000), 60000);
	assert_int_equal(gw_retention_interval_ms(KEEP_MS), 60000);

	/* an empty purge batch after a full one: idle too (keep of 100 s) */
	gw_retention_run_begin(&p);
	p.step = GW_RETENTION_PURGE;
	gw_retention_batch_begin(&p, k.mono_ms, k.wall_ms, 100000);
	pass(&k, 1);
	pause = gw_retention_batch_end(&p, 0, k.mono_ms, 100000);
	assert_false(p.in_run);
	assert_int_equal(pause, 25000);

	/* an aborted run starts over with expiry */
	gw_retention_run_begin(&p);
	p.step = GW_RETENTION_PURGE;
	gw_retention_run_abort(&p);
	assert_false(p.in_run);
	gw_retention_run_begin(&p);
	assert_int_equal(p.step, GW_RETENTION_EXPIRE);
}

/* A whole run over a scripted store: 2,500 due messages (three expiry
 * batches), 3,000 purgeable (four purge batches), each batch taking 5 ms per
 * 100 rows plus 2 ms; the wall clock is stepped back an hour in the middle.
 * After every pause, the job has kept its connection busy at most a fifth of
 * the run's time so far. */
static void test_whole_run_duty_cycle(void **state)
{
	struct fake_clock k = {.mono_ms = 10, .wall_ms = 1700000000000LL};
	struct gw_retention_pace p = {0};
	int due = 2500, purgeable = 3000, batches = 0;
	int64_t busy = 0, start = k.mono_ms, pause = 0;
	gw_retention_run_begin(&p);
	while (p.in_run) {
		int *left = p.step == GW_RETENTION_EXPIRE ? &due : &purgeable;
		int rows = *left < GW_RETENTION_BATCH ? *left : GW_RETENTION_BATCH;
		*left -= rows;
		int64_t took = 2 + rows / 20;
		pause = batch(&p, &k, rows, took, batches == 2 ? -HOUR_MS : 0, NULL);
		busy += took;
		batches++;
		assert_true(batches <= 7);
		if (p.in_run) {
			assert_true(pause >= took * 4);
			pass(&k, pause);
			/* every batch so far, and its pause, over: at most a fifth busy */
			assert_true(busy * 5 <= k.mono_ms - start);
		}
	}
	assert_int_equal(batches, 7);
	assert_int_equal(due, 0);
	assert_int_equal(purgeable, 0);
	assert_int_equal(pause, 60000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pause_scales_with_batch_time),
	    cmocka_unit_test(test_wall_clock_step_does_not_stall),
	    cmocka_unit_test(test_short_batch_ends_step_and_run),
	    cmocka_unit_test(test_whole_run_duty_cycle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
