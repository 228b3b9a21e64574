/* Unit tests: /api/push figures (admin/pushstats.c: nearest-rank percentiles,
 * S objects, counters from a pushstats hash) and the Redis reply conversions
 * they rest on (admin/redis_json.c), on hand-built hiredis replies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/pushstats.h"
#include "admin/redis_json.h"

#include <stdlib.h>
#include <string.h>

static void test_percentile_nearest_rank(void **state)
{
	double v[100];
	for (int i = 0; i < 100; i++)
		v[i] = i + 1; /* 1..100 */
	assert_true(adm_percentile(v, 100, 50) == 50);
	assert_true(adm_percentile(v, 100, 90) == 90);
	assert_true(adm_percentile(v, 100, 99) == 99);
	assert_true(adm_percentile(v, 100, 100) == 100);
	assert_true(adm_percentile(v, 100, 1) == 1);
	/* 10 samples: p99 is the 10th (rank ceil(9.9)), p90 the 9th, p50 the 5th */
	assert_true(adm_percentile(v, 10, 99) == 10);
	assert_true(adm_percentile(v, 10, 90) == 9);
	assert_true(adm_percentile(v, 10, 50) == 5);
	/* one sample is every percentile */
	double one = 7;
	assert_true(adm_percentile(&one, 1, 50) == 7);
	assert_true(adm_percentile(&one, 1, 99) == 7);
	/* 3 samples: p50 is the 2nd (ceil 1.5) */
	assert_true(adm_percentile(v, 3, 50) == 2);
}

static void test_latency_json(void **state)
{
	struct adm_latencies l = {0};
	json_t *j = adm_latency_json(&l);
	assert_true(json_is_null(json_object_get(j, "p50")));
	assert_true(json_is_null(json_object_get(j, "max")));
	json_decref(j);

	/* unsorted input, 20 samples 20..1 plus a fractional one */
	for (int i = 20; i >= 1; i--)
		adm_lat_add(&l, i);
	adm_lat_add(&l, 2.5);
	assert_int_equal(l.n, 21);
	j = adm_latency_json(&l);
	/* sorted: 1 2 2.5 3 ... 20; p50 rank ceil(10.5) = 11 -> 10 */
	assert_int_equal(json_integer_value(json_object_get(j, "p50")), 10);
	assert_int_equal(json_integer_value(json_object_get(j, "p90")), 18); /* rank 19 */
	assert_int_equal(json_integer_value(json_object_get(j, "p99")), 20);
	assert_int_equal(json_integer_value(json_object_get(j, "max")), 20);
	assert_true(json_is_integer(json_object_get(j, "max")));
	json_decref(j);
	adm_lat_free(&l);

	adm_lat_add(&l, 1.5);
	j = adm_latency_json(&l);
	assert_true(json_is_real(json_object_get(j, "p50")));
	assert_true(json_real_value(json_object_get(j, "p50")) == 1.5);
	json_decref(j);
	adm_lat_free(&l);
	assert_null(l.v);
}

static void test_union_of_workers(void **state)
{
	struct adm_latencies a = {0}, b = {0}, all = {0};
	adm_lat_add(&a, 100);
	adm_lat_add(&a, 1);
	adm_lat_add(&b, 50);
	adm_lat_add_all(&all, &a);
	adm_lat_add_all(&all, &b);
	assert_int_equal(all.n, 3);
	json_t *j = adm_latency_json(&all);
	assert_int_equal(json_integer_value(json_object_get(j, "p50")), 50);
	assert_int_equal(json_integer_value(json_object_get(j, "max")), 100);
	json_decref(j);
	adm_lat_free(&a);
	adm_lat_free(&b);
	adm_lat_free(&all);
}

static void test_stats_json_from_hash(void **state)
{
	json_t *h = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "routed", "10", "sent", "7",
	                      "acked", "6", "no_session", "-3", "failed", "x1", "other", "99");
	uint64_t counts[RT_PUSH_N];
	adm_push_counts_from_hash(h, counts);
	assert_int_equal(counts[RT_PUSH_ROUTED], 10);
	assert_int_equal(counts[RT_PUSH_SENT], 7);
	assert_int_equal(counts[RT_PUSH_ACKED], 6);
	assert_int_equal(counts[RT_PUSH_COALESCED], 0);  /* absent */
	assert_int_equal(counts[RT_PUSH_NO_SESSION], 0); /* negative */
	assert_int_equal(counts[RT_PUSH_FAILED], 0);     /* not a number */
	json_decref(h);

	json_t *s = adm_push_stats_json(counts, NULL);
	const char *expect[] = {
	    "routed",     "coalesced", "sent",      "acked", "suppressed_off_primary",
	    "no_session", "failed",    "latency_ms"};
	assert_int_equal(json_object_size(s), 8);
	for (size_t i = 0; i < 8; i++)
		assert_non_null(json_object_get(s, expect[i]));
	assert_int_equal(json_integer_value(json_object_get(s, "routed")), 10);
	assert_true(json_is_null(json_object_get(json_object_get(s, "latency_ms"), "p90")));
	char *text = json_dumps(s, JSON_COMPACT);
	/* the counters come out in RT_PUSH_RESULTS order */
	assert_non_null(strstr(text, "{\"routed\":10,\"coalesced\":0,\"sent\":7,\"acked\":6,"));
	free(text);
	json_decref(s);
}

/* ---- hand-built hiredis replies ---- */

static redisReply str(const char *s)
{
	redisReply r = {.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
	return r;
}

static void test_hash_from_reply(void **state)
{
	redisReply e[6] = {str("state"), str("serving"), str("sessions"),
	                   str("12"),    str("bad"),     str("\xff\xfe")};
	redisReply *pe[6] = {&e[0], &e[1], &e[2], &e[3], &e[4], &e[5]};
	redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 6, .element = pe};
	json_t *h = adm_hash_from_reply(&arr);
	assert_non_null(h);
	assert_string_equal(json_string_value(json_object_get(h, "state")), "serving");
	assert_null(json_object_get(h, "bad")); /* not UTF-8: left out */
	json_t *v = adm_hash_int(h, "sessions");
	assert_int_equal(json_integer_value(v), 12);
	json_decref(v);
	v = adm_hash_int(h, "state");
	assert_true(json_is_null(v));
	json_decref(v);
	json_decref(h);

	/* empty array: a missing key */
	redisReply empty = {.type = REDIS_REPLY_ARRAY, .elements = 0};
	h = adm_hash_from_reply(&empty);
	assert_non_null(h);
	assert_int_equal(json_object_size(h), 0);
	json_decref(h);

	/* no reply, or an error: NULL */
	assert_null(adm_hash_from_reply(NULL));
	redisReply err = {.type = REDIS_REPLY_ERROR, .str = "WRONGTYPE", .len = 9};
	assert_null(adm_hash_from_reply(&err));
	assert_null(adm_list_from_reply(&err));
	assert_int_equal(adm_int_from_reply(&err), -1);
	redisReply one = {.type = REDIS_REPLY_INTEGER, .integer = 3};
	assert_int_equal(adm_int_from_reply(&one), 3);
}

static void test_list_from_reply(void **state)
{
	redisReply e[3] = {str("ml2"), str("ml1"), {.type = REDIS_REPLY_NIL}};
	redisReply *pe[3] = {&e[0], &e[1], &e[2]};
	redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 3, .element = pe};
	json_t *l = adm_list_from_reply(&arr);
	assert_int_equal(json_array_size(l), 2);
	assert_string_equal(json_string_value(json_array_get(l, 1)), "ml1");
	json_decref(l);
}

static void test_field_conversions(void **state)
{
	json_t *h =
	    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "pinned", "1", "persist", "0", "on_primary",
	              "yes", "primary", "", "load", "0.75", "since_ms", "1700000000123");
	json_t *v;
	assert_true(json_is_true(v = adm_hash_bool(h, "pinned")));
	json_decref(v);
	assert_true(json_is_false(v = adm_hash_bool(h, "persist")));
	json_decref(v);
	assert_true(json_is_null(v = adm_hash_bool(h, "on_primary")));
	json_decref(v);
	assert_true(json_is_null(v = adm_hash_bool(h, "absent")));
	json_decref(v);
	assert_true(json_is_null(v = adm_hash_str(h, "primary", 1)));
	json_decref(v);
	assert_string_equal(json_string_value(v = adm_hash_str(h, "primary", 0)), "");
	json_decref(v);
	assert_true(json_real_value(v = adm_hash_num(h, "load")) == 0.75);
	json_decref(v);
	assert_true(json_integer_value(v = adm_hash_num(h, "since_ms")) == 1700000000123LL);
	json_decref(v);
	assert_true(json_is_null(v = adm_hash_num(h, "primary")));
	json_decref(v);
	json_decref(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_percentile_nearest_rank),
	    cmocka_unit_test(test_latency_json),
	    cmocka_unit_test(test_union_of_workers),
	    cmocka_unit_test(test_stats_json_from_hash),
	    cmocka_unit_test(test_hash_from_reply),
	    cmocka_unit_test(test_list_from_reply),
	    cmocka_unit_test(test_field_conversions),
	};
	return cmocka_run_group_tests_name("admin push figures and Redis replies", tests, NULL,
	                                   NULL);
}
