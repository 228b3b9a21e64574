/* Unit tests of the agent's -x STREAM parser (agent/qa_stream.c): every
 * accepted form and its defaults, and each rejected form with the bad part
 * named in the message; the HELLO primary and text renderings. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "agent/qa_stream.h"

static struct qa_stream parse_ok(const char *text)
{
	struct qa_stream s;
	char err[512] = "";
	int rc = qa_stream_parse(text, &s, err, sizeof err);
	if (rc != 0)
		fail_msg("\"%s\" refused: %s", text, err);
	return s;
}

/* The stream must be refused with a message that quotes the whole stream and
 * contains want (the named bad part). */
static void parse_bad(const char *text, const char *want)
{
	struct qa_stream s;
	char err[512] = "";
	if (qa_stream_parse(text, &s, err, sizeof err) == 0)
		fail_msg("\"%s\" accepted, expected an error with %s", text, want);
	if (strncmp(err, "bad -x stream \"", 15) != 0)
		fail_msg("message does not start with the stream: %s", err);
	if (strstr(err, want) == NULL)
		fail_msg("message for \"%s\" does not name %s: %s", text, want, err);
}

static void test_tcpip_full(void **state)
{
	struct qa_stream s = parse_ok("tcpip(host=ml1.example.com;port=2440)");
	assert_int_equal(s.scheme, QA_SCHEME_TCPIP);
	assert_string_equal(s.host, "ml1.example.com");
	assert_int_equal(s.port, 2440);
	assert_int_equal(s.tls, 0);
	assert_string_equal(s.ca_file, "");
}

static void test_defaults(void **state)
{
	struct qa_stream s = parse_ok("tcpip(host=ml1.ianywhere.com)");
	assert_int_equal(s.port, 2439);
	s = parse_ok("tcpip(port=1)");
	assert_string_equal(s.host, "localhost");
	assert_int_equal(s.port, 1);
	s = parse_ok("tcpip()");
	assert_string_equal(s.host, "localhost");
	assert_int_equal(s.port, 2439);
}

static void test_keys_case_insensitive(void **state)
{
	struct qa_stream s = parse_ok("TCPIP(Host=a.b;PORT=65535)");
	assert_int_equal(s.scheme, QA_SCHEME_TCPIP);
	assert_string_equal(s.host, "a.b");
	assert_int_equal(s.port, 65535);
	s = parse_ok("tls(HOST=h;Trusted_Certificates=/etc/ca.pem)");
	assert_string_equal(s.ca_file, "/etc/ca.pem");
}

static void test_spaces_and_final_semicolon(void **state)
{
	struct qa_stream s = parse_ok(" tcpip( host = h1 ; port = 7 ; ) ");
	assert_string_equal(s.host, "h1");
	assert_int_equal(s.port, 7);
	s = parse_ok("tcpip(port=0002439)");
	assert_int_equal(s.port, 2439);
}

static void test_tls(void **state)
{
	struct qa_stream s = parse_ok("tls(host=gw;port=2443;trusted_certificates=CA.pem)");
	assert_int_equal(s.scheme, QA_SCHEME_TLS);
	assert_int_equal(s.tls, 1);
	assert_string_equal(s.ca_file, "CA.pem");
	s = parse_ok("tls(host=gw)");
	assert_int_equal(s.tls, 1);
	assert_string_equal(s.ca_file, "");
}

static void test_auto(void **state)
{
	struct qa_stream s = parse_ok("auto(host=boot;port=3000)");
	assert_int_equal(s.scheme, QA_SCHEME_AUTO);
	assert_int_equal(s.tls, 0);
	s = parse_ok("auto(host=boot;port=3000;tls=on;trusted_certificates=ca.pem)");
	assert_int_equal(s.tls, 1);
	assert_string_equal(s.ca_file, "ca.pem");
	s = parse_ok("auto(tls=OFF)");
	assert_int_equal(s.tls, 0);
}

static void test_ipv6(void **state)
{
	struct qa_stream s = parse_ok("tcpip(host=::1)");
	assert_string_equal(s.host, "::1");
	s = parse_ok("tcpip(host=[::1];port=2440)");
	assert_string_equal(s.host, "::1");
	assert_int_equal(s.port, 2440);
	s = parse_ok("tcpip(host=2001:db8::7)");
	assert_string_equal(s.host, "2001:db8::7");
	s = parse_ok("tcpip(host=fe80::1%eth0)");
	assert_string_equal(s.host, "fe80::1%eth0");
	s = parse_ok("tcpip(host=192.0.2.1)");
	assert_string_equal(s.host, "192.0.2.1");
}

static void test_rejected_keys(void **state)
{
	parse_bad("tcpip(host=a;prot=1)", "unknown key \"prot\"");
	parse_bad("tcpip(host=a;HOST=b)", "duplicate key \"HOST\"");
	parse_bad("tcpip(port=1;port=1)", "duplicate key \"port\"");
	parse_bad("tcpip(host=)", "empty value for key \"host\"");
	parse_bad("tcpip(port= )", "empty value for key \"port\"");
	parse_bad("tcpip(host)", "missing \"=\" in parameter \"host\"");
	parse_bad("tcpip(=a)", "missing key");
	parse_bad("tcpip(trusted_certificates=x)", "key \"trusted_certificates\" is not allowed");
	parse_bad("tls(tls=on)", "key \"tls\" is not allowed");
	parse_bad("tcpip(host=a;;port=1)", "empty parameter");
	parse_bad("tcpip(;)", "empty parameter");
}

static void test_rejected_structure(void **state)
{
	parse_bad("", "empty stream");
	parse_bad("   ", "empty stream");
	parse_bad("tcpip", "missing \"(\" after \"tcpip\"");
	parse_bad("tcpip(host=a", "missing \")\"");
	parse_bad("tcpip(host=a)x", "trailing junk \"x\"");
	parse_bad("tcpip(host=a))", "trailing junk \")\"");
	parse_bad("udp(host=a)", "unknown scheme \"udp\"");
	parse_bad("(host=a)", "missing scheme");
	parse_bad("tcpip (host=a)(", "trailing junk");
	/* issue 4's bad values: each names its bad part */
	parse_bad("tcpip(host=;port=x)", "empty value for key \"host\"");
	parse_bad("tcpip(host=a;port=x)", "bad port \"x\"");
	parse_bad("udp(host=a)", "unknown scheme \"udp\"");
	parse_bad("tcpip(host=a;port=1", "missing \")\" (unbalanced parentheses)");
	parse_bad("tcpip((host=a)", "a second \"(\" inside the parameters");
	parse_bad("tcpip(host=(a))", "a second \"(\"");
	parse_bad("tcpip(host=a))", "trailing junk \")\" after \")\" (unbalanced");
}

static void test_rejected_values(void **state)
{
	parse_bad("tcpip(port=0)", "bad port \"0\"");
	parse_bad("tcpip(port=65536)", "bad port \"65536\"");
	parse_bad("tcpip(port=-1)", "bad port \"-1\"");
	parse_bad("tcpip(port=+1)", "bad port \"+1\"");
	parse_bad("tcpip(port=12a)", "bad port \"12a\"");
	parse_bad("tcpip(port=99999999999999999999)", "bad port");
	parse_bad("tcpip(host=a b)", "bad host \"a b\"");
	parse_bad("tcpip(host=a..b)", "bad host \"a..b\"");
	parse_bad("tcpip(host=[::1)", "bad host \"[::1\"");
	parse_bad("tcpip(host=[a.b])", "bad host \"[a.b]\"");
	parse_bad("tcpip(host=1:2:3)", "bad host \"1:2:3\"");
	parse_bad("auto(tls=maybe)", "bad tls \"maybe\"");
	parse_bad("auto(trusted_certificates=ca.pem)", "needs tls=on");
}

static void test_message_escapes(void **state)
{
	struct qa_stream s;
	char err[512];
	assert_int_equal(qa_stream_parse("tcpip(host=a\"\x01)", &s, err, sizeof err), -1);
	assert_non_null(strstr(err, "\\\""));
	assert_non_null(strstr(err, "\\x01"));
	/* A tiny buffer is never overrun and stays terminated. */
	char small[8];
	memset(small, 'Z', sizeof small);
	assert_int_equal(qa_stream_parse("nope(x)", &s, small, sizeof small), -1);
	assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_primary(void **state)
{
	char buf[QA_STREAM_TEXT_MAX];
	struct qa_stream s = parse_ok("tcpip(host=ml1.ianywhere.com)");
	assert_int_equal(qa_stream_primary(&s, buf, sizeof buf), 22);
	assert_string_equal(buf, "ml1.ianywhere.com:2439");
	s = parse_ok("tcpip(host=::1;port=2440)");
	assert_true(qa_stream_primary(&s, buf, sizeof buf) > 0);
	assert_string_equal(buf, "[::1]:2440");
	s = parse_ok("tls(host=[2001:db8::1])");
	assert_true(qa_stream_primary(&s, buf, sizeof buf) > 0);
	assert_string_equal(buf, "[2001:db8::1]:2439");
	s = parse_ok("tcpip()");
	assert_true(qa_stream_primary(&s, buf, sizeof buf) > 0);
	assert_string_equal(buf, "localhost:2439");
	char tiny[6];
	assert_int_equal(qa_stream_primary(&s, tiny, sizeof tiny), -1);
}

static void test_format_round_trip(void **state)
{
	static const char *const texts[] = {
	    "tcpip(host=ML1;port=9)",
	    "tcpip(host=::1)",
	    "tls(host=a;trusted_certificates=/x/ca.pem)",
	    "auto(host=b;port=3;tls=on;trusted_certificates=c.pem)",
	    "auto()",
	};
	char buf[QA_STREAM_TEXT_MAX];
	struct qa_stream s = parse_ok("tcpip(host=h)");
	assert_true(qa_stream_format(&s, buf, sizeof buf) > 0);
	assert_string_equal(buf, "tcpip(host=h;port=2439)");
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		struct qa_stream a = parse_ok(texts[i]);
		assert_true(qa_stream_format(&a, buf, sizeof buf) > 0);
		struct qa_stream b = parse_ok(buf);
		assert_memory_equal(&a, &b, sizeof a);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tcpip_full),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_keys_case_insensitive),
	    cmocka_unit_test(test_spaces_and_final_semicolon),
	    cmocka_unit_test(test_tls),
	    cmocka_unit_test(test_auto),
	    cmocka_unit_test(test_ipv6),
	    cmocka_unit_test(test_rejected_keys),
	    cmocka_unit_test(test_rejected_structure),
	    cmocka_unit_test(test_rejected_values),
	    cmocka_unit_test(test_message_escapes),
	    cmocka_unit_test(test_primary),
	    cmocka_unit_test(test_format_round_trip),
	};
	return cmocka_run_group_tests_name("agent_stream", tests, NULL, NULL);
}
