/* Unit tests: HELLO primary resolution and WELCOME streams (gateway/primary.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/primary.h"

#include <string.h>

static const struct gw_known_worker pool[] = {
    {"ml1", "ml1.example.com:2439, 10.0.0.5:2439", 0},
    {"ml2", "127.0.0.1:2440,localhost:2440", 0},
    {"ml3", "[::1]:2441", 1},
};
#define N 3

static int resolve(const char *p)
{
	return gw_resolve_primary(p, strlen(p), pool, N);
}

static void test_worker_name(void **state)
{
	assert_int_equal(resolve("ml2"), 1);
	assert_int_equal(resolve("ml9"), -1);
	assert_int_equal(resolve(""), -1);
}

static void test_host_port(void **state)
{
	assert_int_equal(resolve("ml1.example.com:2439"), 0);
	assert_int_equal(resolve("10.0.0.5:2439"), 0);
	assert_int_equal(resolve("LOCALHOST:2440"), 1);        /* host case-insensitive */
	assert_int_equal(resolve("ml1.Example.COM.:2439"), 0); /* trailing dot ignored */
	assert_int_equal(resolve("127.0.0.1:02440"), 1);       /* ports compared as numbers */
	assert_int_equal(resolve("[::1]:2441"), 2);
	assert_int_equal(resolve("127.0.0.1:2439"), -1); /* right host, wrong port */
	assert_int_equal(resolve("::1:2441"), -1);       /* IPv6 needs brackets */
	assert_int_equal(resolve("nowhere:2439"), -1);
	assert_int_equal(resolve("ml1.example.com:"), -1);
}

static void test_streams(void **state)
{
	char out[128];
	assert_int_equal(gw_worker_stream(&pool[0], out, sizeof(out)), 0);
	assert_string_equal(out, "tcpip(host=ml1.example.com;port=2439)");
	assert_int_equal(gw_worker_stream(&pool[2], out, sizeof(out)), 0);
	assert_string_equal(out, "tls(host=::1;port=2441)");
	assert_int_equal(gw_worker_stream(&pool[0], out, 10), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_worker_name),
	    cmocka_unit_test(test_host_port),
	    cmocka_unit_test(test_streams),
	};
	return cmocka_run_group_tests_name("gateway primary resolution", tests, NULL, NULL);
}
