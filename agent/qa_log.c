/* The agent's log: see qa_log.h. */
#include "agent/qa_log.h"

#include "common/clock.h"
#include "common/log.h"

#include <stdarg.h>
#include <time.h>

void qa_log_timestamp(uint64_t unix_ms, char *buf, size_t n)
{
	time_t secs = (time_t)(unix_ms / 1000u);
	struct tm tm;
	gmtime_r(&secs, &tm);
	snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(unix_ms % 1000u));
}

void qa_log_write(const struct qa_log *log, const char *fmt, ...)
{
	FILE *out = (log != NULL && log->out != NULL) ? log->out : stderr;
	char ts[40];
	qa_log_timestamp((uint64_t)gw_wall_ms(), ts, sizeof ts);
	char msg[4096], line[4096];
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	size_t mlen = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
	/* what the server sent (error texts, server lists) stays on this line */
	size_t n = gw_log_escape(line, sizeof line, msg, mlen);
	/* One fprintf under the stream lock, so that lines from threads (a
	 * later `run`) do not interleave. */
	flockfile(out);
	fprintf(out, "%s %.*s\n", ts, (int)n, line);
	fflush(out);
	funlockfile(out);
}
