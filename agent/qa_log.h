/* The agent's log: timestamped lines (UTC, milliseconds) to stderr or to the
 * -o LOGFILE. Debug lines (connection attempts, frames) appear only at -v; the
 * level is checked before anything is formatted. */
#ifndef QA_LOG_H
#define QA_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct qa_log {
	FILE *out;   /* where lines go; NULL means stderr */
	int verbose; /* 1 with -v: debug lines are written */
};

/* Writes one line: "2026-11-28T06:40:01.123Z " + the formatted text, its
 * control characters (a newline in a server's error text) as \xNN. */
void qa_log_write(const struct qa_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define QA_DEBUG(log, ...)                                                                         \
	do {                                                                                       \
		if ((log) != NULL && (log)->verbose)                                               \
			qa_log_write((log), __VA_ARGS__);                                          \
	} while (0)

/* Formats a unix time in ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (>= 25 bytes). */
void qa_log_timestamp(uint64_t unix_ms, char *buf, size_t n);

#endif
