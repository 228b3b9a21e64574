/* The clocks, defined once for the gateway, router, store, admin port, agent
 * and bench. Two kinds, never mixed in one computation:
 *   wall (CLOCK_REALTIME, ms since the epoch): what is stored, sent or shown
 *     as a point in time (created_ms, status_ms, HELLO now_ms, since_ms);
 *   monotonic (CLOCK_MONOTONIC): deadlines, pacing and durations within one
 *     process; never steps when the wall clock is set, so a duration taken
 *     from it is never negative.
 * Any thread may call them. */
#ifndef COMMON_CLOCK_H
#define COMMON_CLOCK_H

#include <stdint.h>

/* Wall-clock time in ms since 1970-01-01 UTC. */
int64_t gw_wall_ms(void);
/* Monotonic time in ms and in us, from an unspecified start (the boot). */
int64_t gw_mono_ms(void);
int64_t gw_mono_us(void);

#endif
