/* Unit tests: the configuration table and loader (gateway/config.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/config.h"

#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];
static struct gw_config conf;
static char err[1024];

static int load(const char *text)
{
	snprintf(path, sizeof(path), "/tmp/qagw-test-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	err[0] = 0;
	int rc = gw_config_load(path, &conf, err, sizeof(err));
	unlink(path);
	return rc;
}

static void test_defaults(void **state)
{
	assert_int_equal(load("[worker ml1]\nlisten = 127.0.0.1:2439\n"), 0);
	assert_string_equal(conf.node_name, "n1");
	assert_int_equal(conf.auth_off, 0);
	assert_int_equal(conf.drain_timeout, 10);
	assert_int_equal(conf.max_frame, 1048576);
	assert_int_equal(conf.max_batch, 256);
	assert_int_equal(conf.hello_timeout, 10);
	assert_int_equal(conf.heartbeat, 30);
	assert_int_equal(conf.max_sessions, 100000);
	assert_int_equal(conf.max_pending, 100000);
	assert_int_equal(conf.keep_ms, 7LL * 86400 * 1000);
	assert_int_equal(conf.redis_port, 6379);
	assert_string_equal(conf.redis_prefix, "qagw:");
	assert_string_equal(conf.admin_listen, "127.0.0.1:8439");
	assert_true(conf.epsilon > 0.249 && conf.epsilon < 0.251);
	assert_int_equal(conf.push_any, 0);
	assert_int_equal(conf.n_workers, 1);
	assert_string_equal(conf.workers[0].name, "ml1");
	assert_int_equal(conf.workers[0].capacity, 1);
	/* advertise defaults to listen */
	assert_int_equal(conf.workers[0].n_adv, 1);
	assert_int_equal(conf.workers[0].adv[0].port, 2439);
}

static void test_full(void **state)
{
	assert_int_equal(
	    load("[node]\nname = n2\nauth = off ; inline\n"
	         "[worker ml1]\nlisten = 127.0.0.1:2439\nadvertise = a.example:1, [::1]:2\n"
	         "capacity = 3\n[worker ml2]\nlisten = [::1]:2440\n"
	         "[push]\npolicy = any\n[limits]\nmax_batch = 16\n"),
	    0);
	assert_string_equal(conf.node_name, "n2");
	assert_int_equal(conf.auth_off, 1);
	assert_int_equal(conf.n_workers, 2);
	assert_int_equal(conf.workers[0].capacity, 3);
	assert_int_equal(conf.workers[0].n_adv, 2);
	assert_string_equal(conf.workers[0].adv[1].host, "::1");
	assert_int_equal(conf.push_any, 1);
	assert_int_equal(conf.max_batch, 16);
}

static void expect_error(const char *text, const char *line, const char *what)
{
	assert_int_not_equal(load(text), 0);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, line));
	assert_non_null(strstr(err, what));
}

static void test_errors(void **state)
{
	expect_error("[worker ml1]\nlisten = 127.0.0.1:1\n[node]\nfrob = 1\n", ":4:", "frob");
	expect_error("[worker ml1]\nlisten = 127.0.0.1:1\n\n[nosuch]\nx = 1\n", ":4:", "nosuch");
	expect_error("[worker ml1]\nlisten = 127.0.0.1:1\n[limits]\nmax_batch = 0\n",
	             ":4:", "max_batch");
	expect_error("[worker ml1]\nlisten = 127.0.0.1:1\n[limits]\nheartbeat = x\n",
	             ":4:", "heartbeat");
	expect_error("[worker ml1]\nlisten = 127.0.0.1:1\n[push]\npolicy = some\n",
	             ":4:", "policy");
	expect_error("[worker ML1]\nlisten = 127.0.0.1:1\n", ":1:", "ML1");
	expect_error("[worker ml1]\nlisten = nohost\n", ":1:", "listen");
	expect_error("[worker ml1]\nlisten = 127.0.0.1:1\n[worker ml1]\nlisten = 127.0.0.1:2\n",
	             ":", "twice");
	expect_error("[node]\nname = n1\n", "", "no [worker NAME]");
	/* auth = off: a listener off loopback is refused */
	expect_error("[node]\nauth = off\n[worker ml1]\nlisten = 0.0.0.0:2439\n", "line 3",
	             "not loopback");
	/* with tokens, a listener off loopback needs TLS or allow_plaintext_tokens */
	expect_error("[worker ml1]\nlisten = 0.0.0.0:2439\n", "[worker ml1]",
	             "allow_plaintext_tokens");
	assert_int_equal(load("[worker ml1]\nlisten = 0.0.0.0:2439\ntls = on\n"), 0);
	assert_int_equal(
	    load("[node]\nallow_plaintext_tokens = on\n[worker ml1]\nlisten = 0.0.0.0:2439\n"), 0);
	expect_error("[worker ml1]\nlisten = 127.0.0.1:1\n[admin]\nlisten = 0.0.0.0:8439\n", "",
	             "token is empty");
}

/* [redis] sentinels: HOST:PORT or [v6]:PORT, comma-separated, at most 8 */
static void test_sentinels(void **state)
{
	const char *w = "[worker ml1]\nlisten = 127.0.0.1:1\n[redis]\n";
	char text[512];
	snprintf(text, sizeof(text), "%ssentinels = 127.0.0.1:26379, [::1]:26380,s3:1\n", w);
	assert_int_equal(load(text), 0);
	assert_string_equal(conf.redis_master_name, "mymaster");
	struct rt_redis_conf rc = gw_config_redis(&conf);
	struct rt_addr a[RT_REDIS_MAX_SENTINELS];
	char why[160];
	assert_int_equal(
	    rt_redis_parse_sentinels(rc.sentinels, a, RT_REDIS_MAX_SENTINELS, why, sizeof(why)), 3);
	assert_string_equal(a[0].host, "127.0.0.1");
	assert_int_equal(a[0].port, 26379);
	assert_string_equal(a[1].host, "::1");
	assert_int_equal(a[1].port, 26380);
	assert_string_equal(a[2].host, "s3");
	assert_int_equal(a[2].port, 1);
	const char *bad[] = {"127.0.0.1",  "127.0.0.1:0", "h:70000",
	                     ":1",         "h:1,,h:2",    "::1:26379",
	                     "[::1]26379", "h:1x",        "a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8,i:9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "%ssentinels = %s\n", w, bad[i]);
		expect_error(text, "", "[redis] key \"sentinels\"");
	}
	snprintf(text, sizeof(text), "%ssentinels = h:1\nmaster_name =\n", w);
	expect_error(text, "", "master_name");
}

/* keep_days: a bare number is days; s, m, h and d units; up to 36500 days */
static void test_durations(void **state)
{
	static const struct {
		const char *value;
		int64_t ms;
	} ok[] = {{"7", 7LL * 86400000},
	          {"0", 0},
	          {"30s", 30000},
	          {"15m", 900000},
	          {"12h", 43200000},
	          {"2d", 2LL * 86400000},
	          {"36500", 36500LL * 86400000}};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text),
		         "[worker ml1]\nlisten = 127.0.0.1:1\n[store]\nkeep_days = %s\n",
		         ok[i].value);
		assert_int_equal(load(text), 0);
		assert_int_equal(conf.keep_ms, ok[i].ms);
	}
	static const char *const bad[] = {"30x", "-1", "36501", "36501d",
	                                  "1.5", "s",  "10 s",  "3ss"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text),
		         "[worker ml1]\nlisten = 127.0.0.1:1\n[store]\nkeep_days = %s\n", bad[i]);
		expect_error(text, ":4:", "keep_days");
	}
}

/* conf/qagw.conf is the documentation of every key (the man page is built from
 * it): its sections and keys must be the table's, and every value outside the
 * [worker NAME] sections the table's default, written the same way. Worker
 * sections are examples: their keys must be the table's, their values may be
 * anything. Read relative to the repository root (make test-unit runs there);
 * QAGW_SAMPLE_CONF names another file. conf/dev.conf (make run's overrides)
 * may hold only keys of the table. */
#define MAX_SAMPLE_KEYS 256

struct sample {
	char section[MAX_SAMPLE_KEYS][80];
	char key[MAX_SAMPLE_KEYS][64];
	char value[MAX_SAMPLE_KEYS][256];
	int n;
	int overflow;
};

static int on_sample_entry(void *user, const char *section, const char *name, const char *value)
{
	struct sample *s = user;
	if (!name) /* a section header alone (INI_CALL_HANDLER_ON_NEW_SECTION) */
		return 1;
	if (s->n == MAX_SAMPLE_KEYS) {
		s->overflow = 1;
		return 1;
	}
	snprintf(s->section[s->n], sizeof(s->section[0]), "%s", section);
	snprintf(s->key[s->n], sizeof(s->key[0]), "%s", name);
	snprintf(s->value[s->n], sizeof(s->value[0]), "%s", value);
	s->n++;
	return 1;
}

static void read_sample(struct sample *s, const char *file)
{
	memset(s, 0, sizeof(*s));
	int rc = ini_parse(file, on_sample_entry, s);
	if (rc != 0)
		fail_msg("%s: cannot read it (%s %d); make test-unit runs in the repository root",
		         file, rc < 0 ? "error" : "syntax error on line", rc);
	assert_false(s->overflow);
}

/* The table's section for a file's section: "worker" for [worker NAME]. */
static const char *table_section(const char *section)
{
	return strncmp(section, "worker ", 7) == 0 ? "worker" : section;
}

/* The table's default for section/key, or NULL when the table has no such key. */
static const char *table_default(const char *section, const char *key)
{
	for (size_t i = 0; i < gw_config_key_count(); i++) {
		const char *ts, *tk, *td;
		assert_int_equal(gw_config_key_at(i, &ts, &tk, &td), 0);
		if (strcmp(ts, section) == 0 && strcmp(tk, key) == 0)
			return td;
	}
	return NULL;
}

static void test_sample_is_the_table(void **state)
{
	const char *file = getenv("QAGW_SAMPLE_CONF");
	file = file && file[0] ? file : "conf/qagw.conf";
	static struct sample s;
	read_sample(&s, file);
	int wrong = 0;

	/* every key of the sample: in the table, and outside workers at its default */
	for (int i = 0; i < s.n; i++) {
		const char *sect = table_section(s.section[i]);
		const char *def = table_default(sect, s.key[i]);
		if (!def) {
			print_error("%s: [%s] %s: not a key of the table in gateway/config.c\n",
			            file, s.section[i], s.key[i]);
			wrong++;
		} else if (strcmp(sect, "worker") != 0 && strcmp(s.value[i], def) != 0) {
			print_error("%s: [%s] %s = %s, but the table's default is \"%s\"\n", file,
			            s.section[i], s.key[i], s.value[i], def);
			wrong++;
		}
		for (int j = 0; j < i; j++)
			if (strcmp(s.section[j], s.section[i]) == 0 &&
			    strcmp(s.key[j], s.key[i]) == 0) {
				print_error("%s: [%s] %s: given twice\n", file, s.section[i],
				            s.key[i]);
				wrong++;
			}
	}
	/* every key of the table: in the sample (worker keys in some [worker NAME]) */
	for (size_t k = 0; k < gw_config_key_count(); k++) {
		const char *ts, *tk, *td;
		assert_int_equal(gw_config_key_at(k, &ts, &tk, &td), 0);
		int found = 0;
		for (int i = 0; i < s.n && !found; i++)
			found = strcmp(table_section(s.section[i]), ts) == 0 &&
			        strcmp(s.key[i], tk) == 0;
		if (!found) {
			print_error("%s: [%s%s] %s (default \"%s\") is missing\n", file, ts,
			            strcmp(ts, "worker") == 0 ? " NAME" : "", tk, td);
			wrong++;
		}
	}
	const char *ts, *tk, *td;
	assert_int_not_equal(gw_config_key_at(gw_config_key_count(), &ts, &tk, &td), 0);
	if (wrong)
		fail_msg("%s disagrees with the table in gateway/config.c in %d place(s): the "
		         "sample must give every key with the table's default",
		         file, wrong);
	/* and it is a configuration qagw accepts as it stands */
	if (gw_config_load(file, &conf, err, sizeof(err)) != 0)
		fail_msg("%s does not load: %s", file, err);
}

static void test_dev_overrides_are_table_keys(void **state)
{
	static struct sample s;
	read_sample(&s, "conf/dev.conf");
	assert_true(s.n > 0);
	for (int i = 0; i < s.n; i++)
		if (!table_default(table_section(s.section[i]), s.key[i]))
			fail_msg(
			    "conf/dev.conf: [%s] %s: not a key of the table in gateway/config.c",
			    s.section[i], s.key[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_durations),
	    cmocka_unit_test(test_sentinels),
	    cmocka_unit_test(test_sample_is_the_table),
	    cmocka_unit_test(test_dev_overrides_are_table_keys),
	};
	return cmocka_run_group_tests_name("gateway configuration", tests, NULL, NULL);
}
