/* Unit tests of the agent's command-line options (agent/qa_config.c): the
 * defaults, each option's accepted values, and each bad value refused with a
 * message naming the option. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/qa_config.h"

#define MAX_ARGS 32

/* Parses "qaagent" + the given words (NULL-terminated); returns the rc. */
static int parse(struct qa_config *c, int *cmd, char *err, size_t errlen, const char *first, ...)
{
	char *argv[MAX_ARGS] = {"qaagent"};
	int argc = 1;
	va_list ap;
	va_start(ap, first);
	for (const char *w = first; w != NULL && argc < MAX_ARGS - 1; w = va_arg(ap, const char *))
		argv[argc++] = (char *)w;
	va_end(ap);
	qa_config_init(c);
	err[0] = '\0';
	return qa_config_parse(c, argc, argv, cmd, err, errlen);
}

static void expect_bad(const char *want, const char *opt, const char *value)
{
	struct qa_config c;
	char err[512];
	int cmd;
	int rc =
	    parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f.db", opt, value, "sync", NULL);
	if (rc == 0)
		fail_msg("%s %s accepted", opt, value ? value : "");
	if (strstr(err, want) == NULL)
		fail_msg("%s %s: message does not name %s: %s", opt, value ? value : "", want, err);
	qa_config_free(&c);
}

static void test_defaults(void **state)
{
	struct qa_config c;
	char err[256];
	int cmd;
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "dev.1_x-y", "-db", "f.db", "-x",
	                       "tcpip(host=a)", "-x", "tcpip(host=b;port=9)", "sync", "extra",
	                       NULL),
	                 0);
	assert_int_equal(cmd, 9);
	assert_string_equal(c.agent_id, "dev.1_x-y");
	assert_string_equal(c.db_path, "f.db");
	assert_int_equal(c.n_streams, 2);
	assert_string_equal(c.streams[1].host, "b");
	assert_int_equal(c.fr, 0);
	assert_int_equal(c.fd_ms, 0);
	assert_int_equal(c.push, QA_PUSH_CONNECTED);
	assert_int_equal(c.policy, QA_POLICY_AUTOMATIC);
	assert_string_equal(c.token, "");
	assert_null(c.log_path);
	assert_int_equal(c.verbose, 0);
	qa_config_free(&c);
}

static void test_all_options(void **state)
{
	struct qa_config c;
	char err[256];
	int cmd;
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f", "-x", "tcpip()",
	                       "-fr", "3", "-fd", "0.25", "-push", "none", "-policy",
	                       "scheduled[60]", "-token", "s3cret", "-o", "log.txt", "-v", "status",
	                       NULL),
	                 0);
	assert_int_equal(c.fr, 3);
	assert_int_equal(c.fd_ms, 250);
	assert_int_equal(c.push, QA_PUSH_NONE);
	assert_int_equal(c.policy, QA_POLICY_SCHEDULED);
	assert_int_equal(c.schedule_s, 60);
	assert_string_equal(c.token, "s3cret");
	assert_string_equal(c.log_path, "log.txt");
	assert_int_equal(c.verbose, 1);
	qa_config_free(&c);

	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f", "-policy",
	                       "scheduled", "-fd", "2", "sync", NULL),
	                 0);
	assert_int_equal(c.schedule_s, 900);
	assert_int_equal(c.fd_ms, 2000);
	qa_config_free(&c);
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f", "-policy",
	                       "scheduled30", "sync", NULL),
	                 0);
	assert_int_equal(c.schedule_s, 30);
	qa_config_free(&c);
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f", "-policy",
	                       "ondemand", "sync", NULL),
	                 0);
	assert_int_equal(c.policy, QA_POLICY_ONDEMAND);
	qa_config_free(&c);
}

static void test_token_file(void **state)
{
	char path[] = "/tmp/qa_token_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "tok en\r\nsecond line\n", 20), 20);
	close(fd);
	struct qa_config c;
	char err[256];
	int cmd;
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f", "-token-file",
	                       path, "sync", NULL),
	                 0);
	assert_string_equal(c.token, "tok en");
	qa_config_free(&c);
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f", "-token", "x",
	                       "-token-file", path, "sync", NULL),
	                 -1);
	assert_non_null(strstr(err, "-token-file"));
	qa_config_free(&c);
	unlink(path);
}

static void test_bad_values(void **state)
{
	expect_bad("-id", "-id", "bad id");
	expect_bad("-fr", "-fr", "-1");
	expect_bad("-fr", "-fr", "x");
	expect_bad("-fd", "-fd", "-2");
	expect_bad("-fd", "-fd", "1.");
	expect_bad("-fd", "-fd", "abc");
	expect_bad("-push", "-push", "sometimes");
	expect_bad("-policy", "-policy", "hourly");
	expect_bad("-policy", "-policy", "scheduled0");
	expect_bad("-policy", "-policy", "scheduled[-5]");
	expect_bad("-policy", "-policy", "scheduled[5");
	expect_bad("-token-file", "-token-file", "/nonexistent/token");
	expect_bad("-o", "-o", "");
	expect_bad("unknown key \"prot\"", "-x", "tcpip(prot=1)");
	expect_bad("unknown option \"-bogus\"", "-bogus", "1");
	expect_bad("-id given twice", "-id", "b");
	expect_bad("-policy needs a value", "-policy", NULL);
}

static void test_required_and_auto(void **state)
{
	struct qa_config c;
	char err[256];
	int cmd;
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-db", "f", "sync", NULL), -1);
	assert_non_null(strstr(err, "-id"));
	qa_config_free(&c);
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "sync", NULL), -1);
	assert_non_null(strstr(err, "-db"));
	qa_config_free(&c);
	assert_int_equal(parse(&c, &cmd, err, sizeof err, "-id", "a", "-db", "f", "-x",
	                       "auto(host=b)", "-x", "tcpip(host=c)", "sync", NULL),
	                 -1);
	assert_non_null(strstr(err, "auto"));
	qa_config_free(&c);
}

static void test_seconds(void **state)
{
	uint64_t ms;
	assert_int_equal(qa_parse_seconds("0", 10, &ms), 0);
	assert_int_equal(ms, 0);
	assert_int_equal(qa_parse_seconds("1.5", 10, &ms), 0);
	assert_int_equal(ms, 1500);
	assert_int_equal(qa_parse_seconds(".5", 10, &ms), 0);
	assert_int_equal(ms, 500);
	assert_int_equal(qa_parse_seconds("0.30000000000000004", 10, &ms), 0);
	assert_int_equal(ms, 300);
	assert_int_equal(qa_parse_seconds("10.001", 10, &ms), -1);
	assert_int_equal(qa_parse_seconds("", 10, &ms), -1);
	assert_int_equal(qa_parse_seconds("1e3", 10000, &ms), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),          cmocka_unit_test(test_all_options),
	    cmocka_unit_test(test_token_file),        cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_required_and_auto), cmocka_unit_test(test_seconds),
	};
	return cmocka_run_group_tests_name("agent_config", tests, NULL, NULL);
}
