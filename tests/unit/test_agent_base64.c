/* Unit tests: qaagent's body_base64 (agent/qaagent.c) is OpenSSL's
 * EVP_EncodeBlock on the whole body into (n + 2) / 3 * 4 + 1 bytes. Checks
 * that this writes exactly what the hand-written encoder it replaced wrote
 * (kept here as the reference): RFC 4648 vectors, every byte value, every
 * length up to 1000 (all three paddings), no line breaks, NUL-terminated. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

/* The encoder qaagent had before (RFC 4648, padded, one line). */
static char *reference(const uint8_t *p, size_t n)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc((n + 2) / 3 * 4 + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[o++] = tab[(v >> 18) & 63];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

/* What qaagent does now, with a guard byte past the buffer it allocates. */
static char *encode(const uint8_t *p, size_t n)
{
	size_t len = (n + 2) / 3 * 4;
	char *out = malloc(len + 2);
	out[len + 1] = 'X';
	int w = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	assert_int_equal(w, (int)len);
	assert_int_equal(out[len], '\0');
	assert_int_equal(out[len + 1], 'X'); /* nothing written past the NUL */
	return out;
}

static void same(const uint8_t *p, size_t n)
{
	char *a = reference(p, n), *b = encode(p, n);
	assert_string_equal(b, a);
	assert_null(strchr(b, '\n'));
	free(a);
	free(b);
}

static void test_rfc4648_vectors(void **state)
{
	static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const out[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
	                                  "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *b = encode((const uint8_t *)in[i], strlen(in[i]));
		assert_string_equal(b, out[i]);
		free(b);
		same((const uint8_t *)in[i], strlen(in[i]));
	}
}

static void test_every_byte_value(void **state)
{
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	same(all, sizeof(all));
	/* high bytes and NULs: the bodies that are not UTF-8 */
	static const uint8_t odd[] = {0x00, 0xff, 0xfe, 0x80, 0x00, 0xc3, 0x28, 0xfb, 0xef};
	for (size_t n = 0; n <= sizeof(odd); n++)
		same(odd, n);
}

static void test_every_length(void **state)
{
	/* Longer than 48 bytes too: EVP_EncodeUpdate breaks lines there,
	 * EVP_EncodeBlock must not. */
	enum { MAX = 1000 };
	uint8_t *buf = malloc(MAX);
	uint32_t x = 2463534242u; /* xorshift32: fixed, reproducible bytes */
	for (size_t i = 0; i < MAX; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (uint8_t)x;
	}
	for (size_t n = 0; n <= MAX; n++)
		same(buf, n);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc4648_vectors),
	    cmocka_unit_test(test_every_byte_value),
	    cmocka_unit_test(test_every_length),
	};
	return cmocka_run_group_tests_name("qaagent body_base64", tests, NULL, NULL);
}
