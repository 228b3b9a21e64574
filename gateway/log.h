/* Leveled logging for qagw: one line per event on stderr, with a UTC
 * timestamp and level. The level is checked before anything is formatted and
 * can be changed at run time (SIGHUP reload) from any thread. */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdatomic.h>

enum gw_log_level {
	GW_LOG_ERROR = 0,
	GW_LOG_WARN = 1,
	GW_LOG_INFO = 2,
	GW_LOG_DEBUG = 3,
};

extern _Atomic int gw_log_threshold;

/* Returns the level for "error", "warn", "info" or "debug", or -1. */
int gw_log_parse_level(const char *name);
void gw_logf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define gw_log(level, ...)                                                                         \
	do {                                                                                       \
		if ((level) <= atomic_load_explicit(&gw_log_threshold, memory_order_relaxed))      \
			gw_logf((level), __VA_ARGS__);                                             \
	} while (0)

#define gw_log_enabled(level)                                                                      \
	((level) <= atomic_load_explicit(&gw_log_threshold, memory_order_relaxed))

#endif
