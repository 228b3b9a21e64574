/* Unit tests of the QASync v1 decoder's refusals: every truncation, trailing
 * bytes, bad UTF-8, unknown types, counts (zero, over max_batch, over the bytes
 * present), HELLO agent id and flag bits, STATUS codes, 0/1 bytes, worker
 * names, and frames over max_frame. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_proto_samples.h"

static void test_every_truncation_is_bad_frame(void **state)
{
	for (int t = QS_HELLO; t <= QS_STATUS; t++) {
		struct qs_frame in;
		struct qs_buf b;
		const char *why;

		sample(t, &in);
		b = encode(&in);
		const uint8_t *body = b.data + QS_HEADER_LEN;
		size_t n = b.len - QS_HEADER_LEN;
		for (size_t k = 0; k < n; k++) {
			/* a copy of exactly k bytes, so ASan sees any over-read */
			uint8_t *cut = malloc(k ? k : 1);
			memcpy(cut, body, k);
			int rc = decode_err(cut, k, &why);
			if (rc != QS_E_BAD_FRAME)
				fail_msg("%s cut to %zu of %zu: rc %d", qs_type_name(t), k, n, rc);
			free(cut);
		}
		qs_buf_free(&b);
	}
}

static void test_trailing_byte_is_bad_frame(void **state)
{
	for (int t = QS_HELLO; t <= QS_STATUS; t++) {
		struct qs_frame in;
		struct qs_buf b;
		const char *why;

		sample(t, &in);
		b = encode(&in);
		assert_int_equal(qs_buf_reserve(&b, 1), 0);
		b.data[b.len++] = 0;
		assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
		assert_non_null(strstr(why, "trailing bytes"));
		assert_non_null(strstr(why, qs_type_name(t)));
		qs_buf_free(&b);
	}
}

static void test_unknown_type(void **state)
{
	static const uint8_t types[] = {0x00, 0x10, 0x11, 0x7f, 0x80, 0xff};
	const char *why;

	for (size_t i = 0; i < sizeof(types); i++) {
		uint8_t fr[9] = {types[i], 0, 0, 0, 0, 0, 0, 0, 1};
		assert_int_equal(decode_err(fr, sizeof(fr), &why), QS_E_BAD_FRAME);
		assert_string_equal(why, "unknown frame type");
		assert_int_equal(decode_err(fr, 1, &why), QS_E_BAD_FRAME);
	}
	assert_int_equal(decode_err((const uint8_t *)"", 0, &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "empty frame");
}

/* Replaces the first occurrence of `from` in the encoding of f by `to` (same
 * length) and returns the decoder's verdict. */
static int decode_patched(const struct qs_frame *f, const char *from, const char *to, size_t n,
                          const char **why)
{
	struct qs_buf b = encode(f);
	uint8_t *hit = memmem(b.data, b.len, from, n);
	assert_non_null(hit);
	memcpy(hit, to, n);
	int rc = decode_err(b.data + 4, b.len - 4, why);
	qs_buf_free(&b);
	return rc;
}

static void test_bad_utf8_in_every_str_kind(void **state)
{
	/* the same-length replacements: overlong, NUL, surrogate, > U+10FFFF,
	 * stray continuation, truncated sequence */
	static const char *const bad[] = {"\xc0\x80", "a\0",      "\xed\xa0",
	                                  "\xf4\x90", "\x80\x41", "a\xe2"};
	static const struct {
		enum qs_type t;
		const char *target; /* two bytes inside a str of the sample */
	} where[] = {
	    {QS_HELLO, "s3"},    /* token */
	    {QS_HELLO, "gw"},    /* primary */
	    {QS_WELCOME, "ho"},  /* stream */
	    {QS_UPLOAD, "in"},   /* to */
	    {QS_UPLOAD, "co"},   /* props key */
	    {QS_UPLOAD, "bl"},   /* props value */
	    {QS_DELIVER, "al"},  /* from */
	    {QS_DELIVER, "sy"},  /* queue */
	    {QS_ERROR, "dr"},    /* text */
	    {QS_REASSIGN, "po"}, /* stream */
	};
	for (size_t w = 0; w < sizeof(where) / sizeof(where[0]); w++) {
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			struct qs_frame f;
			const char *why;
			sample(where[w].t, &f);
			int rc = decode_patched(&f, where[w].target, bad[i], 2, &why);
			if (rc != QS_E_BAD_FRAME)
				fail_msg("%s %s: rc %d", qs_type_name(where[w].t), where[w].target,
				         rc);
			assert_non_null(strstr(why, "not valid UTF-8"));
		}
	}
	/* and the unpatched samples really decode (the patch is the cause) */
	struct qs_frame f;
	const char *why;
	sample(QS_UPLOAD, &f);
	assert_int_equal(decode_patched(&f, "co", "co", 2, &why), QS_OK);
}

static void test_upload_counts(void **state)
{
	struct qs_limits lim = {QS_DEFAULT_MAX_FRAME, 1};
	struct qs_frame in, f;
	struct qs_buf b;
	const char *why;

	sample(QS_UPLOAD, &in); /* 2 messages */
	b = encode(&in);
	assert_int_equal(decode_lim(b.data + 4, b.len - 4, &lim, &f, &why), QS_E_TOO_LARGE);
	assert_string_equal(why, "UPLOAD: count over max_batch");
	lim.max_batch = 2;
	assert_int_equal(decode_lim(b.data + 4, b.len - 4, &lim, &f, &why), QS_OK);
	qs_frame_release(&f);
	qs_buf_free(&b);

	/* the count is judged before the messages: no bytes behind it at all */
	static const uint8_t over[] = {0x03, 0, 0, 0, 1, 0x01, 0x01}; /* count 257 */
	assert_int_equal(decode_err(over, sizeof(over), &why), QS_E_TOO_LARGE);

	static const uint8_t zero[] = {0x03, 0, 0, 0, 1, 0x00, 0x00};
	assert_int_equal(decode_err(zero, sizeof(zero), &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "UPLOAD: count is 0");

	/* a count the bytes cannot hold is refused before anything is allocated */
	static const uint8_t huge[] = {0x03, 0, 0, 0, 1, 0xff, 0xff};
	lim.max_batch = 65535;
	assert_int_equal(decode_lim(huge, sizeof(huge), &lim, &f, &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "UPLOAD: count exceeds the bytes in the frame");
	assert_null(f.arena);
}

static void test_count_bounded_by_bytes(void **state)
{
	static const uint8_t deliver[] = {0x06, 0xff, 0xff, 0x00};
	static const uint8_t dack[] = {0x07, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 1};
	static const uint8_t status[] = {0x0f, 0x80, 0x00};
	static const uint8_t uack[] = {0x04, 0, 0, 0, 0, 0x00, 0x01};
	const char *why;

	assert_int_equal(decode_err(deliver, sizeof(deliver), &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "DELIVER: count exceeds the bytes in the frame");
	assert_int_equal(decode_err(dack, sizeof(dack), &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "DELIVER_ACK: count exceeds the bytes in the frame");
	assert_int_equal(decode_err(status, sizeof(status), &why), QS_E_BAD_FRAME);
	assert_int_equal(decode_err(uack, sizeof(uack), &why), QS_E_BAD_FRAME);

	/* empty arrays are fine where the protocol allows them */
	static const uint8_t dack0[] = {0x07, 0x00, 0x00};
	static const uint8_t deliver0[] = {0x06, 0x00, 0x00, 0x00};
	struct qs_frame f;
	assert_int_equal(decode(dack0, sizeof(dack0), &f, &why), QS_OK);
	assert_int_equal(f.u.deliver_ack.count, 0);
	assert_null(f.u.deliver_ack.seqs);
	qs_frame_release(&f);
	assert_int_equal(decode(deliver0, sizeof(deliver0), &f, &why), QS_OK);
	assert_int_equal(f.u.deliver.count, 0);
	assert_int_equal(f.u.deliver.more, 0);
	qs_frame_release(&f);
}

/* HELLO body with the given agent id and flags. */
static int hello_verdict(const char *agent, size_t agent_len, uint8_t flags, const char **why)
{
	struct qs_frame f = {.type = QS_HELLO};
	struct qs_buf b;

	f.u.hello = (struct qs_hello){1, {agent, (uint16_t)agent_len}, {"", 0}, {"", 0}, flags, 0};
	b = encode(&f);
	int rc = decode_err(b.data + 4, b.len - 4, why);
	qs_buf_free(&b);
	return rc;
}

static void test_hello_agent_id(void **state)
{
	char id[122];
	const char *why;

	memset(id, 'a', sizeof(id));
	assert_int_equal(hello_verdict(id, 1, 0, &why), QS_OK);
	assert_int_equal(hello_verdict(id, 120, 0, &why), QS_OK);
	assert_int_equal(hello_verdict("A-z_0.9", 7, 0, &why), QS_OK);
	assert_int_equal(hello_verdict(id, 121, 0, &why), QS_E_BAD_FRAME);
	assert_non_null(strstr(why, "HELLO: agent id"));
	assert_int_equal(hello_verdict("", 0, 0, &why), QS_E_BAD_FRAME);
	assert_int_equal(hello_verdict("a b", 3, 0, &why), QS_E_BAD_FRAME);
	assert_int_equal(hello_verdict("a\\b", 3, 0, &why), QS_E_BAD_FRAME);
	assert_int_equal(hello_verdict("a:b", 3, 0, &why), QS_E_BAD_FRAME);
	assert_int_equal(hello_verdict("\xc3\xa9", 2, 0, &why), QS_E_BAD_FRAME);
}

static void test_hello_flags(void **state)
{
	const char *why;

	assert_int_equal(hello_verdict("a", 1, 0x00, &why), QS_OK);
	assert_int_equal(hello_verdict("a", 1, 0x01, &why), QS_OK);
	for (int bit = 1; bit < 8; bit++) {
		assert_int_equal(hello_verdict("a", 1, (uint8_t)(1u << bit), &why), QS_E_BAD_FRAME);
		assert_string_equal(why, "HELLO: unknown flag bits");
		assert_int_equal(hello_verdict("a", 1, (uint8_t)(1u << bit | 1), &why),
		                 QS_E_BAD_FRAME);
	}
}

static void test_hello_other_version(void **state)
{
	/* version 2 followed by a layout v1 cannot parse: decodes to the version */
	static const uint8_t v2[] = {0x01, 0x00, 0x02, 0xff, 0xff, 0x00};
	static const uint8_t v0[] = {0x01, 0x00, 0x00};
	static const uint8_t v1[] = {0x01, 0x00, 0x01, 0xff, 0xff, 0x00};
	struct qs_frame f;
	const char *why;

	assert_int_equal(decode(v2, sizeof(v2), &f, &why), QS_OK);
	assert_int_equal(f.u.hello.version, 2);
	assert_int_equal(f.u.hello.agent_id.len, 0);
	assert_null(f.u.hello.agent_id.ptr);
	qs_frame_release(&f);
	assert_int_equal(decode(v0, sizeof(v0), &f, &why), QS_OK);
	assert_int_equal(f.u.hello.version, 0);
	qs_frame_release(&f);
	assert_int_equal(decode_err(v1, sizeof(v1), &why), QS_E_BAD_FRAME);
	assert_int_equal(decode_err(v2, 2, &why), QS_E_BAD_FRAME); /* no room for a version */
}

static void test_status_codes(void **state)
{
	struct qs_frame f;
	const char *why;

	for (int code = 0; code < 256; code++) {
		uint8_t fr[20] = {0x0f, 0x00, 0x01};
		fr[19] = (uint8_t)code;
		int want = (code == 60 || code == 50 || code == 30) ? QS_OK : QS_E_BAD_FRAME;
		int rc = decode(fr, sizeof(fr), &f, &why);
		if (rc != want)
			fail_msg("status %d: rc %d", code, rc);
		if (rc == QS_OK) {
			assert_int_equal(f.u.status.entries[0].status, code);
			qs_frame_release(&f);
		} else {
			assert_string_equal(why, "STATUS: status is not 60, 50 or 30");
		}
	}
}

static void test_boolean_bytes(void **state)
{
	struct qs_frame in;
	struct qs_buf b;
	const char *why;

	/* DELIVER more */
	sample(QS_DELIVER, &in);
	in.u.deliver.more = 2;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "DELIVER: more is not 0 or 1");
	qs_buf_free(&b);

	/* WELCOME on_primary */
	sample(QS_WELCOME, &in);
	in.u.welcome.on_primary = 1;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_OK);
	qs_buf_free(&b);
	in.u.welcome.on_primary = 0x80;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "WELCOME: on_primary is not 0 or 1");
	qs_buf_free(&b);

	/* ERROR retryable */
	sample(QS_ERROR, &in);
	in.u.error.retryable = 3;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	qs_buf_free(&b);

	/* UPLOAD_ACK result outside the table */
	sample(QS_UPLOAD_ACK, &in);
	struct qs_ack_entry e[1] = {{{0}, QS_R_CONFLICT + 1}};
	in.u.upload_ack.count = 1;
	in.u.upload_ack.entries = e;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "UPLOAD_ACK: unknown result");
	qs_buf_free(&b);
}

static void test_worker_names(void **state)
{
	struct qs_server bad_list[] = {{{"ML1", 3}, {"s", 1}}};
	struct qs_server empty_name[] = {{{"", 0}, {"s", 1}}};
	struct qs_frame in;
	struct qs_buf b;
	const char *why;

	sample(QS_WELCOME, &in);
	in.u.welcome.primary = qs_str_c(""); /* unresolved primary is allowed */
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_OK);
	qs_buf_free(&b);

	in.u.welcome.primary = qs_str_c("Ml1");
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "WELCOME: not a valid worker name");
	qs_buf_free(&b);

	sample(QS_WELCOME, &in);
	in.u.welcome.server = qs_str_c("");
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	qs_buf_free(&b);

	sample(QS_WELCOME, &in);
	in.u.welcome.n_servers = 1;
	in.u.welcome.servers = bad_list;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	qs_buf_free(&b);
	in.u.welcome.servers = empty_name;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	qs_buf_free(&b);

	sample(QS_REASSIGN, &in);
	in.u.reassign.primary = qs_str_c("a b");
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	assert_string_equal(why, "REASSIGN: not a valid worker name");
	qs_buf_free(&b);
	sample(QS_REASSIGN, &in);
	in.u.reassign.servers = bad_list;
	in.u.reassign.n_servers = 1;
	b = encode(&in);
	assert_int_equal(decode_err(b.data + 4, b.len - 4, &why), QS_E_BAD_FRAME);
	qs_buf_free(&b);
}

static void test_decode_over_max_frame(void **state)
{
	struct qs_limits lim = {8, 10};
	static const uint8_t ping[] = {0x0a, 1, 2, 3, 4, 5, 6, 7, 8}; /* 9 bytes */
	struct qs_frame f;
	const char *why;

	assert_int_equal(decode_lim(ping, sizeof(ping), &lim, &f, &why), QS_E_TOO_LARGE);
	lim.max_frame = 9;
	assert_int_equal(decode_lim(ping, sizeof(ping), &lim, &f, &why), QS_OK);
	assert_true(f.u.nonce == 0x0102030405060708ull);
	qs_frame_release(&f);
	/* NULL limits mean the defaults */
	assert_int_equal(qs_decode(ping, sizeof(ping), NULL, &f, &why), QS_OK);
	qs_frame_release(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_truncation_is_bad_frame),
	    cmocka_unit_test(test_trailing_byte_is_bad_frame),
	    cmocka_unit_test(test_unknown_type),
	    cmocka_unit_test(test_bad_utf8_in_every_str_kind),
	    cmocka_unit_test(test_upload_counts),
	    cmocka_unit_test(test_count_bounded_by_bytes),
	    cmocka_unit_test(test_hello_agent_id),
	    cmocka_unit_test(test_hello_flags),
	    cmocka_unit_test(test_hello_other_version),
	    cmocka_unit_test(test_status_codes),
	    cmocka_unit_test(test_boolean_bytes),
	    cmocka_unit_test(test_worker_names),
	    cmocka_unit_test(test_decode_over_max_frame),
	};
	return cmocka_run_group_tests_name("proto_reject", tests, NULL, NULL);
}
