/* Unit tests: log lines stay one line whatever a peer sent (common/log.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_escape_controls(void **state)
{
	(void)state;
	char out[64];
	const char in[] = "a\nb\r\x1b[31mc\x7f\t";
	size_t n = gw_log_escape(out, sizeof(out), in, sizeof(in) - 1);
	out[n] = 0;
	assert_string_equal(out, "a\\x0ab\\x0d\\x1b[31mc\\x7f\\x09");
}

static void test_escape_keeps_utf8_and_backslash(void **state)
{
	(void)state;
	char out[64];
	const char in[] = "AGENT\\Q \xc3\xa9";
	size_t n = gw_log_escape(out, sizeof(out), in, sizeof(in) - 1);
	out[n] = 0;
	assert_string_equal(out, in);
}

static void test_escape_never_splits_an_escape(void **state)
{
	(void)state;
	char out[8];
	size_t n = gw_log_escape(out, 5, "ab\ncd", 5);
	assert_int_equal(n, 2); /* "ab" fits, "\x0a" (4) does not: stop before it */
	n = gw_log_escape(out, 7, "ab\ncd", 5);
	assert_int_equal(n, 7);
	assert_memory_equal(out, "ab\\x0ac", 7);
}

/* gw_logf through a pipe on fd 2: one line, with the newline escaped. */
static void test_logf_writes_one_line(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(p[1], STDERR_FILENO) >= 0);
	gw_logf(GW_LOG_WARN, "HELLO: primary \"%s\"", "ml1\n2026-01-01T00:00:00.000Z error FORGED");
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	close(p[1]);
	char buf[4096];
	ssize_t n = read(p[0], buf, sizeof(buf) - 1);
	close(p[0]);
	assert_true(n > 0);
	buf[n] = 0;
	char *nl = strchr(buf, '\n');
	assert_non_null(nl);
	assert_int_equal(nl - buf, n - 1); /* the only newline ends the line */
	assert_non_null(strstr(buf, "ml1\\x0a2026-01-01T00:00:00.000Z error FORGED\""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escape_controls),
	    cmocka_unit_test(test_escape_keeps_utf8_and_backslash),
	    cmocka_unit_test(test_escape_never_splits_an_escape),
	    cmocka_unit_test(test_logf_writes_one_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
