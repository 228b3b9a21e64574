/* Unit tests: the admin port's path routing (admin/route.c) on a table like
 * the real one in admin/admin.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/route.h"

#include <stdio.h>
#include <string.h>

static void h_workers(struct adm_req *r)
{
}
static void h_drain(struct adm_req *r)
{
}
static void h_msg_get(struct adm_req *r)
{
}
static void h_msg_delete(struct adm_req *r)
{
}
static void h_msg_post(struct adm_req *r)
{
}
static void h_root(struct adm_req *r)
{
}

static const struct adm_route table[] = {
    {ADM_GET, "/", h_root, ADM_TOKEN_OR_QUERY},
    {ADM_GET, "/api/workers", h_workers, ADM_TOKEN},
    {ADM_POST, "/api/workers/{}/drain", h_drain, ADM_TOKEN},
    {ADM_POST, "/api/messages", h_msg_post, ADM_TOKEN},
    {ADM_GET, "/api/messages/{}", h_msg_get, ADM_TOKEN},
    {ADM_DELETE, "/api/messages/{}", h_msg_delete, ADM_TOKEN},
};
#define N ((int)(sizeof(table) / sizeof(table[0])))

static int find(int method, const char *path, struct adm_params *p, int *allowed)
{
	return adm_route_find(table, N, method, path, p, allowed);
}

static void test_literal_paths(void **state)
{
	struct adm_params p;
	int allowed = 0;
	assert_int_equal(find(ADM_GET, "/", &p, &allowed), 0);
	assert_int_equal(p.n, 0);
	assert_int_equal(find(ADM_GET, "/api/workers", &p, &allowed), 1);
	assert_int_equal(find(ADM_GET, "/api/workers/", &p, &allowed), 1); /* one trailing / */
	assert_int_equal(find(ADM_GET, "/api/workers//", &p, &allowed), ADM_ROUTE_NOT_FOUND);
	assert_int_equal(find(ADM_GET, "/api/worker", &p, &allowed), ADM_ROUTE_NOT_FOUND);
	assert_int_equal(find(ADM_GET, "/api/workersx", &p, &allowed), ADM_ROUTE_NOT_FOUND);
	assert_int_equal(find(ADM_GET, "/API/workers", &p, &allowed), ADM_ROUTE_NOT_FOUND);
	assert_int_equal(find(ADM_GET, "", &p, &allowed), ADM_ROUTE_NOT_FOUND);
}

static void test_params(void **state)
{
	struct adm_params p;
	int allowed = 0;
	assert_int_equal(find(ADM_POST, "/api/workers/ml1/drain", &p, &allowed), 2);
	assert_int_equal(p.n, 1);
	assert_string_equal(p.v[0], "ml1");
	assert_int_equal(
	    find(ADM_GET, "/api/messages/123e4567e89b12d3a456426614174000", &p, &allowed), 4);
	assert_string_equal(p.v[0], "123e4567e89b12d3a456426614174000");
	assert_int_equal(find(ADM_DELETE, "/api/messages/abc", &p, &allowed), 5);
	assert_string_equal(p.v[0], "abc");
	/* a parameter is one non-empty segment */
	assert_int_equal(find(ADM_POST, "/api/workers//drain", &p, &allowed), ADM_ROUTE_NOT_FOUND);
	assert_int_equal(find(ADM_POST, "/api/workers/a/b/drain", &p, &allowed),
	                 ADM_ROUTE_NOT_FOUND);
	assert_int_equal(find(ADM_GET, "/api/messages/a/b", &p, &allowed), ADM_ROUTE_NOT_FOUND);
	assert_int_equal(find(ADM_POST, "/api/workers/ml1/nosuch", &p, &allowed),
	                 ADM_ROUTE_NOT_FOUND);
}

static void test_long_segment(void **state)
{
	struct adm_params p;
	int allowed = 0;
	char path[600];
	char seg[ADM_MAX_PARAM_LEN + 1];
	memset(seg, 'a', sizeof(seg) - 1);
	seg[ADM_MAX_PARAM_LEN] = 0; /* one byte too long */
	snprintf(path, sizeof(path), "/api/messages/%s", seg);
	assert_int_equal(find(ADM_GET, path, &p, &allowed), ADM_ROUTE_NOT_FOUND);
	seg[ADM_MAX_PARAM_LEN - 1] = 0; /* the longest that fits */
	snprintf(path, sizeof(path), "/api/messages/%s", seg);
	assert_int_equal(find(ADM_GET, path, &p, &allowed), 4);
	assert_int_equal(strlen(p.v[0]), ADM_MAX_PARAM_LEN - 1);
}

static void test_wrong_method(void **state)
{
	struct adm_params p;
	int allowed = 0;
	assert_int_equal(find(ADM_PUT, "/api/messages/x", &p, &allowed), ADM_ROUTE_BAD_METHOD);
	assert_int_equal(allowed, ADM_GET | ADM_DELETE);
	char allow[64];
	adm_route_allow_header(allowed, allow, sizeof(allow));
	assert_string_equal(allow, "GET, DELETE");

	allowed = 0;
	assert_int_equal(find(ADM_GET, "/api/messages", &p, &allowed), ADM_ROUTE_BAD_METHOD);
	assert_int_equal(allowed, ADM_POST);
	assert_int_equal(find(ADM_GET, "/api/workers/ml1/drain", &p, &allowed),
	                 ADM_ROUTE_BAD_METHOD);
	assert_int_equal(allowed, ADM_POST);
	/* a method the port never serves (PATCH's bit) */
	assert_int_equal(find(1 << 8, "/api/workers", &p, &allowed), ADM_ROUTE_BAD_METHOD);
	assert_int_equal(allowed, ADM_GET);
	assert_null(adm_method_name(1 << 8));
	assert_string_equal(adm_method_name(ADM_DELETE), "DELETE");
}

static void test_allow_header_truncates(void **state)
{
	char small[8];
	adm_route_allow_header(ADM_GET | ADM_POST | ADM_DELETE, small, sizeof(small));
	assert_string_equal(small, "GET"); /* "GET, POST" does not fit: stops before it */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_literal_paths),          cmocka_unit_test(test_params),
	    cmocka_unit_test(test_long_segment),           cmocka_unit_test(test_wrong_method),
	    cmocka_unit_test(test_allow_header_truncates),
	};
	return cmocka_run_group_tests_name("admin routing", tests, NULL, NULL);
}
