/* Unit tests: the router's embedded scripts (router/lua/, rt_scripts.h) against the key
 * names of router/rt_keys.h. The scripts build their keys themselves (P..'agent:'..a):
 * every name they put after the prefix must be one the C code (router, admin port) uses
 * too, so a key renamed in one place and not the other fails here, not in production.
 * Also: each script was embedded whole (its include expanded, comments left out). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "router/rt_keys.h"
#include "router/rt_scripts.h"

#include <stdio.h>
#include <string.h>

static const char *const names[] = {
    RT_KEY_WORKERS,   RT_KEY_WORKER,     RT_KEY_WORKERINFO, RT_KEY_ASSIGNED,  RT_KEY_PRIMARIES,
    RT_KEY_MARKER,    RT_KEY_SWEEP,      RT_KEY_AGENT,      RT_KEY_AGENTPUSH, RT_KEY_EPOCH,
    RT_KEY_PUSHSTATS, RT_KEY_PUSHLAT,    RT_KEY_PUSHEVENTS, RT_KEY_NOTIFIED,  RT_CHAN_PUSH,
    RT_CHAN_CTL,      RT_KEY_UNRESOLVED,
};

static const struct {
	const char *file;
	const char *text;
	int uses_lib; /* includes lib.lua */
} scripts[] = {
    {"claim.lua", rt_lua_claim, 1},     {"move_away.lua", rt_lua_move_away, 1},
    {"move_to.lua", rt_lua_move_to, 1}, {"set_primary.lua", rt_lua_set_primary, 1},
    {"refill.lua", rt_lua_refill, 1},   {"view.lua", rt_lua_view, 0},
    {"release.lua", rt_lua_release, 0}, {"route.lua", rt_lua_route, 0},
    {"account.lua", rt_lua_account, 0}, {"retire.lua", rt_lua_retire, 0},
};
#define N_SCRIPTS (int)(sizeof(scripts) / sizeof(scripts[0]))

static int known(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
			return 1;
	return 0;
}

/* The names after "P..'" or "ARGV[1]..'" (the prefix) in text; returns how many,
 * failing the test on one rt_keys.h does not have. */
static int check_names(const char *file, const char *text)
{
	static const char *const prefixes[] = {"P..'", "ARGV[1]..'"};
	int n = 0;
	for (int k = 0; k < 2; k++) {
		for (const char *at = strstr(text, prefixes[k]); at;
		     at = strstr(at + 1, prefixes[k])) {
			const char *name = at + strlen(prefixes[k]);
			const char *end = strchr(name, '\'');
			assert_non_null(end);
			if (!known(name, (size_t)(end - name)))
				fail_msg("%s: key name '%.*s' is not in router/rt_keys.h", file,
				         (int)(end - name), name);
			n++;
		}
	}
	return n;
}

static void test_script_key_names(void **state)
{
	for (int i = 0; i < N_SCRIPTS; i++) {
		int n = check_names(scripts[i].file, scripts[i].text);
		/* release.lua and account.lua get every key as KEYS[i] */
		if (strcmp(scripts[i].file, "release.lua") != 0 &&
		    strcmp(scripts[i].file, "account.lua") != 0 && n == 0)
			fail_msg("%s: no key name found: is the check still reading it?",
			         scripts[i].file);
	}
}

static void test_scripts_embedded_whole(void **state)
{
	for (int i = 0; i < N_SCRIPTS; i++) {
		const char *t = scripts[i].text;
		size_t len = strlen(t);
		assert_true(len > 0 && t[len - 1] == '\n');
		/* no comment line (left out) and no include left unexpanded */
		assert_null(strstr(t, "\n--"));
		assert_false(strncmp(t, "--", 2) == 0);
		assert_int_equal(strstr(t, "local function pick(") != NULL, scripts[i].uses_lib);
		if (scripts[i].uses_lib)
			assert_true(strncmp(t, "local P = ARGV[1]\n", 18) == 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_script_key_names),
	    cmocka_unit_test(test_scripts_embedded_whole),
	};
	return cmocka_run_group_tests_name("router scripts and key names", tests, NULL, NULL);
}
