/* Unit tests: the agent's log keeps what a server sent on one line (agent/qa_log.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "agent/qa_log.h"

#include <stdio.h>
#include <string.h>

static void test_server_text_stays_on_one_line(void **state)
{
	(void)state;
	FILE *f = tmpfile();
	assert_non_null(f);
	struct qa_log log = {.out = f, .verbose = 0};
	qa_log_write(&log, "ERROR from server: %s", "bye\n2026-01-01T00:00:00.000Z FORGED\x1b[2J");
	rewind(f);
	char buf[512];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	assert_non_null(
	    strstr(buf, "ERROR from server: bye\\x0a2026-01-01T00:00:00.000Z FORGED\\x1b[2J\n"));
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_server_text_stays_on_one_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
