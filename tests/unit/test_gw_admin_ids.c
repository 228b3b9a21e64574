/* Unit tests: message ids on the admin port (admin/ids.c): both accepted
 * forms, the canonical output, and what is refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/ids.h"

#include <string.h>

static const uint8_t sample[16] = {0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                                   0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00};

static void test_canonical_form(void **state)
{
	uint8_t id[16];
	assert_int_equal(adm_uuid_parse("123e4567-e89b-12d3-a456-426614174000", id), 0);
	assert_memory_equal(id, sample, 16);
	/* either case */
	assert_int_equal(adm_uuid_parse("123E4567-E89B-12D3-A456-426614174000", id), 0);
	assert_memory_equal(id, sample, 16);
	assert_int_equal(adm_uuid_parse("123e4567-E89B-12d3-A456-426614174000", id), 0);
	assert_memory_equal(id, sample, 16);
}

static void test_hex_form(void **state)
{
	uint8_t id[16];
	assert_int_equal(adm_uuid_parse("123e4567e89b12d3a456426614174000", id), 0);
	assert_memory_equal(id, sample, 16);
	assert_int_equal(adm_uuid_parse("123E4567E89B12D3A456426614174000", id), 0);
	assert_memory_equal(id, sample, 16);
	assert_int_equal(adm_uuid_parse("123e4567E89B12d3a456426614174000", id), 0);
	assert_memory_equal(id, sample, 16);
	assert_int_equal(adm_uuid_parse("00000000000000000000000000000000", id), 0);
	uint8_t zero[16] = {0};
	assert_memory_equal(id, zero, 16);
}

static void test_refused(void **state)
{
	uint8_t id[16];
	static const char *const bad[] = {
	    "",
	    "1234",
	    "nota-uuid",
	    "123e4567-e89b-12d3-a456-42661417400",   /* 35 */
	    "123e4567-e89b-12d3-a456-4266141740000", /* 37 */
	    "123e4567e89b12d3a45642661417400",       /* 31 hex */
	    "123e4567e89b12d3a4564266141740000",     /* 33 hex */
	    "123e4567-e89b-12d3-a456_426614174000",  /* wrong separator */
	    "123e456-7e89b-12d3-a456-426614174000",  /* dash misplaced */
	    "123e4567-e89b12d3-a456-4266-14174000",  /* dashes elsewhere, right count */
	    "123e4567-e89b-12d3-a456-42661417400g",  /* not hex */
	    "g23e4567e89b12d3a456426614174000",
	    "{123e4567-e89b-12d3-a456-426614174000}",
	    "123e4567-e89b-12d3-a456-426614174000 ",
	    " 123e4567-e89b-12d3-a456-42661417400",
	    "123e4567-e89b-12d3-a456-42661417400\n",
	    "-23e4567e89b12d3a456426614174000", /* 32 with a dash */
	    "123e4567e89b-2d3a456426614174000", /* 32 with a dash where one goes */
	    "123e4567 e89b12d3a45642661417400", /* 32 with a space */
	    "+23e4567e89b12d3a456426614174000",
	    "0x3e4567e89b12d3a456426614174000",
	    "123e4567-e89b-12d3-a456-4266141740\xc3\xa9", /* 36 bytes, not hex */
	    "------------------------------------",
	    "--------------------------------",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (adm_uuid_parse(bad[i], id) != -1)
			fail_msg("accepted %s", bad[i]);
}

static void test_format(void **state)
{
	char out[ADM_UUID_STR];
	adm_uuid_format(sample, out);
	assert_string_equal(out, "123e4567-e89b-12d3-a456-426614174000");
	/* round trip through the hex form */
	uint8_t id[16];
	assert_int_equal(adm_uuid_parse("FFEEDDCCBBAA99887766554433221100", id), 0);
	adm_uuid_format(id, out);
	assert_string_equal(out, "ffeeddcc-bbaa-9988-7766-554433221100");
	/* the uppercase canonical form comes back lowercase */
	assert_int_equal(adm_uuid_parse("FFEEDDCC-BBAA-9988-7766-554433221100", id), 0);
	adm_uuid_format(id, out);
	assert_string_equal(out, "ffeeddcc-bbaa-9988-7766-554433221100");
	static const uint8_t zero[16] = {0};
	adm_uuid_format(zero, out);
	assert_string_equal(out, "00000000-0000-0000-0000-000000000000");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_canonical_form),
	    cmocka_unit_test(test_hex_form),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests_name("admin message ids", tests, NULL, NULL);
}
