/* Unit tests of the QASync v1 identifier rules and the per-message check
 * (proto/qs_ident.c), and of the stand-alone props block codec. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/qs_codec.h"

#define UTF8(lit) qs_valid_utf8(lit, sizeof(lit) - 1)

static void test_utf8_valid(void **state)
{
	assert_true(qs_valid_utf8("", 0));
	assert_true(UTF8("plain ascii ~\x7f"));
	assert_true(UTF8("\xc2\x80"));         /* U+0080, smallest 2-byte */
	assert_true(UTF8("\xdf\xbf"));         /* U+07FF */
	assert_true(UTF8("\xe0\xa0\x80"));     /* U+0800, smallest 3-byte */
	assert_true(UTF8("\xed\x9f\xbf"));     /* U+D7FF, just below the surrogates */
	assert_true(UTF8("\xee\x80\x80"));     /* U+E000, just above them */
	assert_true(UTF8("\xef\xbf\xbf"));     /* U+FFFF */
	assert_true(UTF8("\xf0\x90\x80\x80")); /* U+10000, smallest 4-byte */
	assert_true(UTF8("\xf4\x8f\xbf\xbf")); /* U+10FFFF, the last code point */
	assert_true(UTF8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
}

static void test_utf8_invalid(void **state)
{
	assert_false(UTF8("\0")); /* NUL */
	assert_false(UTF8("ab\0cd"));
	assert_false(UTF8("\xc0\x80"));         /* overlong NUL */
	assert_false(UTF8("\xc1\xbf"));         /* overlong U+007F */
	assert_false(UTF8("\xe0\x9f\xbf"));     /* overlong U+07FF */
	assert_false(UTF8("\xf0\x8f\xbf\xbf")); /* overlong U+FFFF */
	assert_false(UTF8("\xed\xa0\x80"));     /* U+D800 */
	assert_false(UTF8("\xed\xbf\xbf"));     /* U+DFFF */
	assert_false(UTF8("\xf4\x90\x80\x80")); /* U+110000 */
	assert_false(UTF8("\xf5\x80\x80\x80"));
	assert_false(UTF8("\xff"));
	assert_false(UTF8("\x80")); /* stray continuation */
	assert_false(UTF8("a\xbf"));
	assert_false(UTF8("\xc3")); /* truncated sequences */
	assert_false(UTF8("\xe2\x82"));
	assert_false(UTF8("\xf0\x9f\x98"));
	assert_false(UTF8("\xe2\x28\xa1"));     /* bad second byte */
	assert_false(UTF8("\xe2\x82\x28"));     /* bad third byte */
	assert_false(UTF8("\xf0\x9f\x98\x28")); /* bad fourth byte */
	/* the length bounds the scan: a valid prefix of an invalid string is valid */
	assert_true(qs_valid_utf8("ab\xc3", 2));
}

static void test_agent_id(void **state)
{
	char s[122];

	memset(s, 'x', sizeof(s));
	assert_true(qs_valid_agent_id("a", 1));
	assert_true(qs_valid_agent_id("Az09._-", 7));
	assert_true(qs_valid_agent_id(s, 120));
	assert_false(qs_valid_agent_id(s, 121));
	assert_false(qs_valid_agent_id("", 0));
	assert_false(qs_valid_agent_id("a b", 3));
	assert_false(qs_valid_agent_id("a\\b", 3));
	assert_false(qs_valid_agent_id("a/b", 3));
	assert_false(qs_valid_agent_id("a@b", 3));
	assert_false(qs_valid_agent_id("\xc3\xa9", 2));
	assert_false(qs_valid_agent_id("a\0", 2));
}

static void test_worker_name(void **state)
{
	char s[66];

	memset(s, 'w', sizeof(s));
	assert_true(qs_valid_worker_name("ml1", 3));
	assert_true(qs_valid_worker_name("a.b_c-9", 7));
	assert_true(qs_valid_worker_name(s, 64));
	assert_false(qs_valid_worker_name(s, 65));
	assert_false(qs_valid_worker_name("", 0));
	assert_false(qs_valid_worker_name("ML1", 3)); /* lower case only */
	assert_false(qs_valid_worker_name("ml:1", 4));
	assert_false(qs_valid_worker_name("ml 1", 4));
}

static void test_queue(void **state)
{
	char s[130];

	memset(s, 'q', sizeof(s));
	assert_true(qs_valid_queue("inbox", 5));
	assert_true(qs_valid_queue("a b/c:d", 7));
	assert_true(qs_valid_queue("caf\xc3\xa9", 5));
	assert_true(qs_valid_queue("system", 6)); /* valid as a queue; reserved for uploads */
	assert_true(qs_valid_queue(s, 128));
	assert_false(qs_valid_queue(s, 129));
	assert_false(qs_valid_queue("", 0));
	assert_false(qs_valid_queue("a\\b", 3));
	assert_false(qs_valid_queue("a\tb", 3));
	assert_false(qs_valid_queue("a\x1f", 2));
	assert_false(qs_valid_queue("a\x7f", 2));
	assert_false(qs_valid_queue("a\0", 2));
	assert_false(qs_valid_queue("\xc3", 1));
}

static void test_split_address(void **state)
{
	struct qs_str a, q;

	assert_int_equal(qs_split_address(qs_str_c("dev1\\inbox"), &a, &q), 0);
	assert_int_equal(a.len, 4);
	assert_memory_equal(a.ptr, "dev1", 4);
	assert_int_equal(q.len, 5);
	assert_memory_equal(q.ptr, "inbox", 5);

	assert_int_equal(qs_split_address(qs_str_c("dev1"), &a, &q), -1);
	assert_null(a.ptr);
	assert_int_equal(qs_split_address(qs_str_c("dev1\\a\\b"), &a, &q), -1);
	assert_int_equal(qs_split_address(qs_str_c("\\inbox"), &a, &q), -1);
	assert_int_equal(qs_split_address(qs_str_c("dev1\\"), &a, &q), -1);
	assert_int_equal(qs_split_address(qs_str_c("de v\\inbox"), &a, &q), -1);
	assert_int_equal(qs_split_address(qs_str_c("dev\\in\x01"), &a, &q), -1);
	assert_int_equal(qs_split_address((struct qs_str){NULL, 0}, &a, &q), -1);
}

/* ---- qs_msg_out_check ---------------------------------------------------- */

static struct qs_msg_out valid_msg(void)
{
	static struct qs_prop p[] = {{{"color", 5}, {"blue", 4}}, {{"Size", 4}, {"", 0}}};
	struct qs_msg_out m = {.to = qs_str_c("bob\\inbox"), .priority = 4, .props = {2, p}};
	return m;
}

static int check_to(const char *to, size_t n)
{
	struct qs_msg_out m = valid_msg();
	m.to = (struct qs_str){to, (uint16_t)n};
	return qs_msg_out_check(&m);
}

static int check_key(const char *key, size_t n)
{
	struct qs_prop p[2] = {{{"other", 5}, {"v", 1}}, {{key, (uint16_t)n}, {"v", 1}}};
	struct qs_msg_out m = valid_msg();
	m.props = (struct qs_props){2, p};
	return qs_msg_out_check(&m);
}

static void test_check_valid(void **state)
{
	struct qs_msg_out m = valid_msg();

	assert_int_equal(qs_msg_out_check(&m), QS_R_STORED);
	m.props = (struct qs_props){0, NULL};
	assert_int_equal(qs_msg_out_check(&m), QS_R_STORED);
	m.priority = 0;
	assert_int_equal(qs_msg_out_check(&m), QS_R_STORED);
	m.priority = 9;
	assert_int_equal(qs_msg_out_check(&m), QS_R_STORED);
}

static void test_check_address(void **state)
{
	char big[300];

	assert_int_equal(check_to("bob\\inbox", 9), QS_R_STORED);
	assert_int_equal(check_to("bob", 3), QS_R_INVALID);           /* no backslash */
	assert_int_equal(check_to("bob\\in\\box", 10), QS_R_INVALID); /* two */
	assert_int_equal(check_to("\\inbox", 6), QS_R_INVALID);       /* no agent */
	assert_int_equal(check_to("bob\\", 4), QS_R_INVALID);         /* no queue */
	assert_int_equal(check_to("b@b\\inbox", 9), QS_R_INVALID);    /* agent charset */
	assert_int_equal(check_to("bob\\in\nbox", 10), QS_R_INVALID); /* control char */
	assert_int_equal(check_to("bob\\in\x7f", 7), QS_R_INVALID);   /* DEL */
	assert_int_equal(check_to("bob\\system", 10), QS_R_INVALID);  /* reserved queue */
	assert_int_equal(check_to("bob\\systems", 11), QS_R_STORED);
	assert_int_equal(check_to("bob\\sys", 7), QS_R_STORED);

	/* agent id of 120 + '\' + queue of 128 = 249 bytes: the longest valid
	 * address, so the 255-byte cap of protocol.md never binds on its own */
	memset(big, 'a', sizeof(big));
	big[120] = '\\';
	assert_int_equal(check_to(big, 249), QS_R_STORED);
	/* agent part of 121 bytes */
	memset(big, 'a', sizeof(big));
	big[121] = '\\';
	assert_int_equal(check_to(big, 125), QS_R_INVALID);
	/* queue part of 129 bytes */
	memset(big, 'a', sizeof(big));
	big[10] = '\\';
	assert_int_equal(check_to(big, 10 + 1 + 128), QS_R_STORED);
	assert_int_equal(check_to(big, 10 + 1 + 129), QS_R_INVALID);
}

static void test_check_priority(void **state)
{
	struct qs_msg_out m = valid_msg();

	for (int p = 0; p < 256; p++) {
		m.priority = (uint8_t)p;
		assert_int_equal(qs_msg_out_check(&m), p <= 9 ? QS_R_STORED : QS_R_INVALID);
	}
}

static void test_check_keys(void **state)
{
	char k[130];

	memset(k, 'k', sizeof(k));
	assert_int_equal(check_key("k", 1), QS_R_STORED);
	assert_int_equal(check_key(k, 128), QS_R_STORED);
	assert_int_equal(check_key(k, 129), QS_R_INVALID);
	assert_int_equal(check_key("", 0), QS_R_INVALID);
	assert_int_equal(check_key("other", 5), QS_R_INVALID); /* repeated */
	assert_int_equal(check_key("Other", 5), QS_R_STORED);  /* keys compare byte for byte */
	assert_int_equal(check_key("othe", 4), QS_R_STORED);
	assert_int_equal(check_key("ias_Priority", 12), QS_R_INVALID);
	assert_int_equal(check_key("IAS_x", 5), QS_R_INVALID);
	assert_int_equal(check_key("Ias_", 4), QS_R_INVALID);
	assert_int_equal(check_key("iAs_", 4), QS_R_INVALID);
	assert_int_equal(check_key("ias", 3), QS_R_STORED);
	assert_int_equal(check_key("iasx", 4), QS_R_STORED);
	assert_int_equal(check_key("x_ias_", 6), QS_R_STORED);
}

/* Many properties take the sorting path of the uniqueness check. */
static void test_check_many_keys(void **state)
{
	enum { N = 5000 };
	struct qs_prop *p = calloc(N, sizeof(*p));
	char(*names)[8] = calloc(N, sizeof(*names));
	struct qs_msg_out m = valid_msg();

	assert_non_null(p);
	assert_non_null(names);
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "k%d", (i * 7919) % N);
		p[i].key = qs_str_c(names[i]);
		p[i].value = qs_str_c("v");
	}
	m.props = (struct qs_props){N, p};
	assert_int_equal(qs_msg_out_check(&m), QS_R_STORED);
	p[N - 1].key = p[17].key; /* one repeat among 5000 */
	assert_int_equal(qs_msg_out_check(&m), QS_R_INVALID);
	p[N - 1].key = qs_str_c("k5000");
	assert_int_equal(qs_msg_out_check(&m), QS_R_STORED);
	p[2500].key = qs_str_c("IAS_late");
	assert_int_equal(qs_msg_out_check(&m), QS_R_INVALID);
	free(p);
	free(names);
}

/* ---- props block ---------------------------------------------------------- */

static void test_props_round_trip(void **state)
{
	struct qs_prop v[] = {{{"a", 1}, {"1", 1}}, {{"b\xc3\xa9", 3}, {"", 0}}};
	struct qs_props in = {2, v}, out;
	struct qs_buf b = {0};
	static const uint8_t want[] = {0x00, 0x02, 0x00, 0x01, 'a',  0x00, 0x01, '1',
	                               0x00, 0x03, 'b',  0xc3, 0xa9, 0x00, 0x00};

	assert_int_equal(qs_encode_props(&in, &b), 0);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	assert_int_equal(qs_props_size(&in), sizeof(want));

	assert_int_equal(qs_decode_props(b.data, b.len, &out), QS_OK);
	assert_int_equal(out.n, 2);
	assert_int_equal(out.v[0].key.len, 1);
	assert_memory_equal(out.v[0].key.ptr, "a", 1);
	assert_memory_equal(out.v[0].value.ptr, "1", 1);
	assert_int_equal(out.v[1].key.len, 3);
	assert_memory_equal(out.v[1].key.ptr, "b\xc3\xa9", 3);
	assert_int_equal(out.v[1].value.len, 0);
	free(out.v);

	/* empty block */
	struct qs_props none = {0, NULL};
	b.len = 0;
	assert_int_equal(qs_encode_props(&none, &b), 0);
	assert_int_equal(b.len, 2);
	assert_int_equal(qs_props_size(&none), 2);
	assert_int_equal(qs_decode_props(b.data, b.len, &out), QS_OK);
	assert_int_equal(out.n, 0);
	assert_null(out.v);
	qs_buf_free(&b);
}

static void test_props_refusals(void **state)
{
	static const uint8_t good[] = {0x00, 0x01, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
	uint8_t buf[16];
	struct qs_props out;

	assert_int_equal(qs_decode_props(good, sizeof(good), &out), QS_OK);
	free(out.v);
	for (size_t k = 0; k < sizeof(good); k++) {
		assert_int_equal(qs_decode_props(good, k, &out), QS_E_BAD_FRAME);
		assert_null(out.v);
	}
	memcpy(buf, good, sizeof(good));
	buf[sizeof(good)] = 0;
	assert_int_equal(qs_decode_props(buf, sizeof(good) + 1, &out), QS_E_BAD_FRAME);
	memcpy(buf, good, sizeof(good));
	buf[4] = 0xff; /* key not UTF-8 */
	assert_int_equal(qs_decode_props(buf, sizeof(good), &out), QS_E_BAD_FRAME);
	buf[4] = 0x00; /* key with NUL */
	assert_int_equal(qs_decode_props(buf, sizeof(good), &out), QS_E_BAD_FRAME);
	static const uint8_t many[] = {0xff, 0xff, 0x00, 0x00, 0x00, 0x00};
	assert_int_equal(qs_decode_props(many, sizeof(many), &out), QS_E_BAD_FRAME);

	/* an array declared but missing cannot be encoded */
	struct qs_props bad = {3, NULL};
	struct qs_buf b = {0};
	assert_int_equal(qs_encode_props(&bad, &b), -1);
	assert_int_equal(b.len, 0);
	qs_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_utf8_valid),      cmocka_unit_test(test_utf8_invalid),
	    cmocka_unit_test(test_agent_id),        cmocka_unit_test(test_worker_name),
	    cmocka_unit_test(test_queue),           cmocka_unit_test(test_split_address),
	    cmocka_unit_test(test_check_valid),     cmocka_unit_test(test_check_address),
	    cmocka_unit_test(test_check_priority),  cmocka_unit_test(test_check_keys),
	    cmocka_unit_test(test_check_many_keys), cmocka_unit_test(test_props_round_trip),
	    cmocka_unit_test(test_props_refusals),
	};
	return cmocka_run_group_tests_name("proto_ident", tests, NULL, NULL);
}
