/* Unit tests: the admin port's Host, Origin and Content-Type rules
 * (admin/webguard.c; admin.md "Requests from web pages"). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/webguard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static struct adm_guard guard(const char *allowed, const char *listen_ip)
{
	struct adm_guard g;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (listen_ip && strchr(listen_ip, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, listen_ip, &in6->sin6_addr), 1);
	} else if (listen_ip) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, listen_ip, &in->sin_addr), 1);
	}
	char err[200] = "";
	assert_int_equal(adm_guard_init(&g, allowed, (struct sockaddr *)&ss, err, sizeof(err)), 0);
	return g;
}

static void test_loopback_hosts(void **state)
{
	struct adm_guard g = guard("", "127.0.0.1");
	const char *ok[] = {"localhost",
	                    "localhost:8439",
	                    "LocalHost:1",
	                    "app.localhost:80",
	                    "127.0.0.1",
	                    "127.0.0.1:8439",
	                    "127.1.2.3:9",
	                    "[::1]",
	                    "[::1]:8439",
	                    "[0:0::1]:1",
	                    "[::ffff:127.0.0.1]:8439",
	                    "localhost:",
	                    NULL};
	for (int i = 0; ok[i]; i++) {
		if (!adm_guard_host_ok(&g, ok[i]))
			fail_msg("refused %s", ok[i]);
	}
	assert_true(adm_guard_host_ok(&g, NULL)); /* no Host: HTTP/1.0, not a browser */
	const char *bad[] = {"evil.example",
	                     "evil.example:8439",
	                     "localhost.evil.example",
	                     "evillocalhost",
	                     ".localhost",
	                     "a..localhost",
	                     "127.0.0.1.evil.example",
	                     "128.0.0.1:8439",
	                     "10.0.0.5",
	                     "[::2]:8439",
	                     "::1",
	                     "[::1",
	                     "localhost:84x",
	                     "localhost:123456",
	                     "localhost:80:80",
	                     "",
	                     ":8439",
	                     "local host",
	                     "localhost/x",
	                     "127.1",
	                     "0x7f.0.0.1",
	                     NULL};
	for (int i = 0; bad[i]; i++) {
		if (adm_guard_host_ok(&g, bad[i]))
			fail_msg("accepted %s", bad[i]);
	}
}

static void test_allowed_hosts(void **state)
{
	struct adm_guard g =
	    guard(" Admin.Example.com, 10.0.0.7 ,,fd00::5, [fd00::6] ", "10.0.0.5");
	assert_int_equal(g.n_hosts, 4);
	assert_true(adm_guard_host_ok(&g, "admin.example.com"));
	assert_true(adm_guard_host_ok(&g, "ADMIN.example.COM:8439"));
	assert_true(adm_guard_host_ok(&g, "10.0.0.7:8439"));
	assert_true(adm_guard_host_ok(&g, "[fd00::5]:1"));
	assert_true(adm_guard_host_ok(&g, "[fd00:0::6]"));
	assert_true(adm_guard_host_ok(&g, "10.0.0.5:8439")); /* the listen address */
	assert_false(adm_guard_host_ok(&g, "example.com"));
	assert_false(adm_guard_host_ok(&g, "x.admin.example.com"));
	assert_false(adm_guard_host_ok(&g, "10.0.0.6"));

	/* a wildcard listen address is not a Host */
	struct adm_guard w = guard("", "0.0.0.0");
	assert_false(adm_guard_host_ok(&w, "0.0.0.0:8439"));
	struct adm_guard w6 = guard("", "::");
	assert_false(adm_guard_host_ok(&w6, "[::]:8439"));
	struct adm_guard l6 = guard("", "fd00::9");
	assert_true(adm_guard_host_ok(&l6, "[fd00::9]:8439"));
}

static void test_bad_allowed_hosts(void **state)
{
	struct adm_guard g;
	char err[200] = "";
	assert_int_equal(adm_guard_init(&g, "ok.example, http://x.example, y.example:80", NULL, err,
	                                sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "http://x.example"));
	assert_int_equal(g.n_hosts, 1);
	assert_true(adm_guard_host_ok(&g, "ok.example"));
	assert_false(adm_guard_host_ok(&g, "y.example:80"));
}

static void test_origin(void **state)
{
	/* scripts and curl: no Origin */
	assert_true(adm_guard_origin_ok(NULL, NULL, "127.0.0.1:8439"));
	assert_true(adm_guard_origin_ok(NULL, NULL, NULL));
	assert_true(adm_guard_origin_ok(NULL, "none", "127.0.0.1:8439"));
	/* the port's own page */
	assert_true(adm_guard_origin_ok("http://127.0.0.1:8439", "same-origin", "127.0.0.1:8439"));
	assert_true(adm_guard_origin_ok("http://LOCALHOST:8439", NULL, "localhost:8439"));
	assert_true(adm_guard_origin_ok("https://admin.example.com", NULL, "admin.example.com"));
	/* other pages */
	assert_false(adm_guard_origin_ok("https://evil.example", "cross-site", "127.0.0.1:8439"));
	assert_false(adm_guard_origin_ok("https://evil.example", NULL, "127.0.0.1:8439"));
	assert_false(adm_guard_origin_ok("http://localhost:3000", "same-site", "localhost:8439"));
	assert_false(adm_guard_origin_ok("http://127.0.0.1:8439/", NULL, "127.0.0.1:8439"));
	assert_false(adm_guard_origin_ok("null", NULL, "127.0.0.1:8439"));
	assert_false(adm_guard_origin_ok("ftp://127.0.0.1:8439", NULL, "127.0.0.1:8439"));
	assert_false(adm_guard_origin_ok("http://127.0.0.1:8439", NULL, NULL));
	assert_false(adm_guard_origin_ok(NULL, "cross-site", "127.0.0.1:8439"));
	assert_false(adm_guard_origin_ok(NULL, "Cross-Site", "127.0.0.1:8439"));
	assert_false(adm_guard_origin_ok("http://127.0.0.1:8439", "cross-site", "127.0.0.1:8439"));
}

static void test_content_type(void **state)
{
	const char *ok[] = {"application/json",
	                    "Application/JSON",
	                    " application/json ",
	                    "application/json; charset=utf-8",
	                    "application/json;charset=UTF-8",
	                    "application/json; charset=\"utf-8\"",
	                    "application/json; foo=bar",
	                    NULL};
	for (int i = 0; ok[i]; i++) {
		if (!adm_guard_is_json(ok[i]))
			fail_msg("refused %s", ok[i]);
	}
	const char *bad[] = {"text/plain",
	                     "application/x-www-form-urlencoded",
	                     "multipart/form-data; boundary=x",
	                     "application/jsonx",
	                     "application/json-patch+json",
	                     "application/json; charset=iso-8859-1",
	                     "application/json; charset",
	                     "text/plain; application/json",
	                     "",
	                     NULL};
	for (int i = 0; bad[i]; i++) {
		if (adm_guard_is_json(bad[i]))
			fail_msg("accepted %s", bad[i]);
	}
	assert_false(adm_guard_is_json(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_loopback_hosts),    cmocka_unit_test(test_allowed_hosts),
	    cmocka_unit_test(test_bad_allowed_hosts), cmocka_unit_test(test_origin),
	    cmocka_unit_test(test_content_type),
	};
	return cmocka_run_group_tests_name("admin web guard", tests, NULL, NULL);
}
