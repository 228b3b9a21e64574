/* Leveled logging, the bottom layer every part of qagw may use (gateway,
 * router, store, admin; the agent's own log borrows gw_log_escape). The gw_
 * prefix is kept from when this lived in gateway/. One line per event, with a UTC timestamp and
 * level, written with one write(2) to file descriptor 2. That descriptor is
 * stderr, or the [node] log_file dup2'ed over it (gw_log_open), so a reopen
 * on SIGHUP swaps the file under every thread at once. When stderr is the
 * journal (JOURNAL_STREAM), lines carry a syslog priority prefix instead of
 * our timestamp. The level is checked before anything is formatted and can be
 * changed at run time (SIGHUP reload) from any thread. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stdatomic.h>
#include <stddef.h>

enum gw_log_level {
	GW_LOG_ERROR = 0,
	GW_LOG_WARN = 1,
	GW_LOG_INFO = 2,
	GW_LOG_DEBUG = 3,
};

extern _Atomic int gw_log_threshold;

/* Returns the level for "error", "warn", "info" or "debug", or -1. */
int gw_log_parse_level(const char *name);
/* Writes one line: the formatted message with every control character
 * (below 0x20, and 0x7f) written as \xNN, so that no string a peer sent
 * (an agent id, a HELLO primary, an error text) can end the line, forge
 * another or reach a terminal as an escape sequence. */
void gw_logf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* src[0..len) into dst (at most cap bytes, not terminated) with every
 * control character (below 0x20, and 0x7f) as \xNN, so that a string a peer
 * sent can neither end a log line nor reach a terminal as an escape sequence;
 * stops before a character that does not fit whole. Returns the bytes
 * written. gw_logf and the agent's qa_log_write use it. */
size_t gw_log_escape(char *dst, size_t cap, const char *src, size_t len);

/* Main thread only. Directs the log to path (opened O_APPEND, created 0640
 * if missing) or, for "" or NULL, back to the stderr the process started
 * with. Called again with the same path it reopens the file (logrotate).
 * Returns 0, or -1 with err (the log stays where it was). */
int gw_log_open(const char *path, char *err, size_t errlen) __attribute__((warn_unused_result));

/* 1 while the log goes to a file rather than to the original stderr. */
int gw_log_to_file(void);

/* The stderr the process started with (a terminal, the journal), for the
 * few messages an operator must see there even when logging to a file. */
int gw_log_original_stderr(void);

#define gw_log(level, ...)                                                                         \
	do {                                                                                       \
		if ((level) <= atomic_load_explicit(&gw_log_threshold, memory_order_relaxed))      \
			gw_logf((level), __VA_ARGS__);                                             \
	} while (0)

#define gw_log_enabled(level)                                                                      \
	((level) <= atomic_load_explicit(&gw_log_threshold, memory_order_relaxed))

#endif
