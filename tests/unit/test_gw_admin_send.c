/* Unit tests: POST /api/messages bodies (admin/send.c): every bad field is
 * named, the defaults, the too_large rule, and qa_send's own exceptions. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/send.h"
#include "proto/qs_codec.h"

#include <stdlib.h>
#include <string.h>

#define MAX_FRAME (1024u * 1024u)

/* Parses text; returns the field named by a refusal, or "" when accepted. */
static const char *refusal(const char *text)
{
	static char field[64];
	json_error_t e;
	json_t *body = json_loads(text, 0, &e);
	if (!body)
		fail_msg("test body is not JSON: %s", text);
	struct adm_send s;
	const char *f = NULL;
	char msg[300];
	int rc = adm_send_parse(body, MAX_FRAME, &s, &f, msg, sizeof(msg));
	if (rc == 0) {
		free(s.props_json);
		field[0] = 0;
	} else {
		assert_non_null(f);
		assert_true(msg[0] != 0);
		snprintf(field, sizeof(field), "%s", f);
	}
	json_decref(body);
	return field;
}

static void test_defaults(void **state)
{
	json_t *body = json_pack("{s:s, s:s}", "to", "B-1\\q", "body", "hi");
	struct adm_send s;
	const char *f;
	char msg[300];
	assert_int_equal(adm_send_parse(body, MAX_FRAME, &s, &f, msg, sizeof(msg)), 0);
	assert_string_equal(s.to, "B-1\\q");
	assert_string_equal(s.body, "hi");
	assert_int_equal(s.body_len, 2);
	assert_string_equal(s.from, "server");
	assert_int_equal(s.priority, 4);
	assert_int_equal(s.expires_ms, 0);
	assert_string_equal(s.props_json, "{}");
	free(s.props_json);
	json_decref(body);

	body = json_pack("{s:s, s:s, s:s, s:i, s:I, s:{s:s}}", "to", "B\\q.x", "body", "", "from",
	                 "billing", "priority", 9, "expires_ms", (json_int_t)1800000000000LL,
	                 "props", "k", "v");
	assert_int_equal(adm_send_parse(body, MAX_FRAME, &s, &f, msg, sizeof(msg)), 0);
	assert_string_equal(s.from, "billing");
	assert_int_equal(s.priority, 9);
	assert_true(s.expires_ms == 1800000000000LL);
	assert_string_equal(s.props_json, "{\"k\":\"v\"}");
	free(s.props_json);
	json_decref(body);
}

static void test_fields_named(void **state)
{
	assert_string_equal(refusal("{\"body\":\"no to\"}"), "to");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\"}"), "body");
	assert_string_equal(refusal("{\"to\":\"no-backslash\",\"body\":\"x\"}"), "to");
	assert_string_equal(refusal("{\"to\":42,\"body\":\"x\"}"), "to");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":42}"), "body");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":null}"), "body");
	assert_string_equal(refusal("{\"to\":\"B\\\\system\",\"body\":\"x\"}"), "to");
	assert_string_equal(refusal("{\"to\":\"B c\\\\q\",\"body\":\"x\"}"), "to");
	assert_string_equal(refusal("{\"to\":\"B\\\\\",\"body\":\"x\"}"), "to");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\\\\r\",\"body\":\"x\"}"), "to");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"priority\":12}"),
	                    "priority");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"priority\":-1}"),
	                    "priority");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"priority\":\"high\"}"),
	                    "priority");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"priority\":4.5}"),
	                    "priority");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"expires_ms\":\"soon\"}"),
	                    "expires_ms");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"expires_ms\":-5}"),
	                    "expires_ms");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"props\":[\"k\",\"v\"]}"),
	                    "props");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"props\":{\"k\":1}}"),
	                    "props");
	assert_string_equal(
	    refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"props\":{\"IAS_x\":\"v\"}}"), "props");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"props\":{\"\":\"v\"}}"),
	                    "props");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"from\":7}"), "from");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"from\":\"\"}"), "from");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"expire_ms\":5}"),
	                    "expire_ms");
	assert_string_equal(refusal("{\"to\":\"B\\\\q\",\"body\":\"x\",\"props\":{\"k\":\"v\"}}"),
	                    "");
}

static void test_too_large(void **state)
{
	/* the UPLOAD rule: 16 + 2 + to + 1 + 8 + props + 4 + body <= max_frame - overhead */
	size_t room = MAX_FRAME - QS_DELIVER_OVERHEAD - (16 + 2 + 3 + 1 + 8 + 2 + 4);
	char *big = malloc(room + 2);
	memset(big, 'a', room + 1);
	big[room] = 0;
	json_t *body = json_pack("{s:s, s:s}", "to", "B\\q", "body", big);
	struct adm_send s;
	const char *f;
	char msg[300];
	assert_int_equal(adm_send_parse(body, MAX_FRAME, &s, &f, msg, sizeof(msg)), 0);
	free(s.props_json);
	json_decref(body);
	big[room] = 'a';
	big[room + 1] = 0;
	body = json_pack("{s:s, s:s}", "to", "B\\q", "body", big);
	assert_int_equal(adm_send_parse(body, MAX_FRAME, &s, &f, msg, sizeof(msg)),
	                 ADM_SEND_TOO_LARGE);
	assert_string_equal(f, "body");
	json_decref(body);
	free(big);
}

static void test_store_errors(void **state)
{
	char field[32];
	const char *m = adm_send_store_error("ERROR:  qa_send: bad \"to\" address x\\system", field,
	                                     sizeof(field));
	assert_non_null(m);
	assert_string_equal(field, "to");
	assert_true(strncmp(m, "qa_send: bad", 12) == 0);
	m = adm_send_store_error("ERROR:  qa_send: bad \"priority\" 12 (0..9)", field,
	                         sizeof(field));
	assert_string_equal(field, "priority");
	m = adm_send_store_error("ERROR:  qa_send: no quotes here", field, sizeof(field));
	assert_non_null(m);
	assert_string_equal(field, "");
	assert_null(adm_send_store_error("server closed the connection unexpectedly", field,
	                                 sizeof(field)));
	assert_null(adm_send_store_error(NULL, field, sizeof(field)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_fields_named),
	    cmocka_unit_test(test_too_large),
	    cmocka_unit_test(test_store_errors),
	};
	return cmocka_run_group_tests_name("admin POST /api/messages bodies", tests, NULL, NULL);
}
