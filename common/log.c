/* Leveled logging; see log.h. */
#include "common/log.h"

#include "common/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Atomic int gw_log_threshold = GW_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities (err, warning, info, debug) for journald's "<N>" prefix */
static const int level_priority[] = {3, 4, 6, 7};

/* 1: fd 2 is the journal's stream, so journald stamps the time itself. */
static _Atomic int to_journal = -1; /* -1: not looked at yet */
static _Atomic int to_file;
static int original_stderr = -1; /* main thread only, set by the first gw_log_open */

int gw_log_parse_level(const char *name)
{
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

/* systemd sets JOURNAL_STREAM=DEV:INODE for a stderr connected to the
 * journal; it is inherited by children whose stderr is elsewhere, so the
 * descriptor itself is compared. */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* nowhere to report it */
		p += w;
		len -= (size_t)w;
	}
}

size_t gw_log_escape(char *dst, size_t cap, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c >= 0x20 && c != 0x7f) {
			if (o + 1 > cap)
				break;
			dst[o++] = (char)c;
			continue;
		}
		if (o + 4 > cap)
			break;
		dst[o++] = '\\';
		dst[o++] = 'x';
		dst[o++] = hex[c >> 4];
		dst[o++] = hex[c & 15];
	}
	return o;
}

void gw_logf(int level, const char *fmt, ...)
{
	char line[2048];
	int lv = level < 0 ? 0 : level > 3 ? 3 : level;
	int journal = atomic_load_explicit(&to_journal, memory_order_relaxed);
	if (journal < 0) {
		journal = stderr_is_journal();
		atomic_store(&to_journal, journal);
	}
	int n;
	if (journal && !atomic_load_explicit(&to_file, memory_order_relaxed)) {
		n = snprintf(line, sizeof(line), "<%d>%-5s ", level_priority[lv], level_names[lv]);
	} else {
		int64_t ms = gw_wall_ms();
		time_t secs = (time_t)(ms / 1000);
		struct tm tm;
		gmtime_r(&secs, &tm);
		n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
		             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		             tm.tm_sec, (int)(ms % 1000), level_names[lv]);
	}
	char msg[sizeof(line)];
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t mlen = m < 0 ? 0 : (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
	size_t len = (size_t)n + gw_log_escape(line + n, sizeof(line) - (size_t)n - 1, msg, mlen);
	line[len++] = '\n';
	/* One write per line keeps lines from different threads whole (and,
	 * with O_APPEND, lines of several writers of one file). */
	write_all(STDERR_FILENO, line, len);
}

int gw_log_open(const char *path, char *err, size_t errlen)
{
	if (original_stderr < 0) {
		original_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
		if (original_stderr < 0) {
			snprintf(err, errlen, "cannot keep stderr: %s", strerror(errno));
			return -1;
		}
		atomic_store(&to_journal, stderr_is_journal());
	}
	int fd = original_stderr;
	if (path && path[0]) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (fd < 0) {
			snprintf(err, errlen, "log_file %s: cannot open: %s", path,
			         strerror(errno));
			return -1;
		}
	}
	/* dup2 swaps descriptor 2 in one step: a line written by another
	 * thread at this moment lands whole in the old file or the new one. */
	int rc = dup2(fd, STDERR_FILENO);
	int saved = errno;
	if (fd != original_stderr)
		close(fd);
	if (rc < 0) {
		snprintf(err, errlen, "log_file %s: dup2: %s", path ? path : "", strerror(saved));
		return -1;
	}
	atomic_store(&to_file, fd != original_stderr);
	return 0;
}

int gw_log_to_file(void)
{
	return atomic_load(&to_file);
}

int gw_log_original_stderr(void)
{
	return original_stderr >= 0 ? original_stderr : STDERR_FILENO;
}
