/* Unit tests: the Prometheus exposition (admin/metrics.c) of fake workers'
 * counters: one HELP/TYPE per family, families contiguous, labels, the
 * GW_COUNTERS / GW_PUSH_RESULTS tables all rendered, cumulative buckets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/metrics.h"
#include "proto/qs_codec.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct gw_counters c1, c2;
static struct gw_gauges g1, g2;
static char *text;

static int setup(void **state)
{
	memset(&c1, 0, sizeof(c1));
	memset(&c2, 0, sizeof(c2));
	memset(&g1, 0, sizeof(g1));
	memset(&g2, 0, sizeof(g2));
	c1.messages_stored = 5;
	c1.ignored_deliver_ack = 2;
	c1.ignored_status = 4;
	c2.messages_acked = 9;
	c1.errors[QS_E_BAD_FRAME] = 3;
	c2.errors[QS_E_INTERNAL] = 1;
	c2.push[GW_PUSH_SUPPRESSED_OFF_PRIMARY] = 7;
	c1.push[GW_PUSH_ROUTED] = 11;
	gw_histogram_observe(&c1.push_latency, 0.002);  /* bucket le 0.0025 */
	gw_histogram_observe(&c1.push_latency, 0.0025); /* on the bound: same bucket */
	gw_histogram_observe(&c1.push_latency, 0.3);    /* le 0.5 */
	gw_histogram_observe(&c1.push_latency, 60);     /* above every bound: only +Inf */
	g1.sessions = 3;
	g1.on_primary = 2;
	g2.draining = 1;
	g1.store_up = g2.store_up = 1;

	struct adm_metrics_worker w[2] = {{"ml1", &c1, &g1}, {"ml2", &c2, &g2}};
	struct adm_metrics_node node = {.store_up = 1, .redis_up = 0, .started_ms = 1700000000123};
	struct evbuffer *out = evbuffer_new();
	if (adm_metrics_render(out, w, 2, &node) != 0)
		return -1;
	size_t n = evbuffer_get_length(out);
	text = malloc(n + 1);
	evbuffer_remove(out, text, n);
	text[n] = 0;
	evbuffer_free(out);
	return 0;
}

static int teardown(void **state)
{
	free(text);
	return 0;
}

static int has_line(const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)); p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
	return 0;
}

#define assert_line(l)                                                                             \
	do {                                                                                       \
		if (!has_line(l))                                                                  \
			fail_msg("missing line: %s\n---\n%s", l, text);                            \
	} while (0)

static void test_counters_per_worker(void **state)
{
	assert_line("qagw_messages_stored_total{worker=\"ml1\"} 5");
	assert_line("qagw_messages_stored_total{worker=\"ml2\"} 0");
	assert_line("qagw_messages_acked_total{worker=\"ml2\"} 9");
	assert_line("qagw_ignored_total{worker=\"ml1\",kind=\"deliver_ack\"} 2");
	assert_line("qagw_ignored_total{worker=\"ml1\",kind=\"status\"} 4");
	/* every GW_COUNTERS entry is rendered */
#define CHECK(f, metric, label, help)                                                              \
	if (!strstr(text, "\n" metric "{worker=\"ml2\""))                                          \
		fail_msg("counter %s not rendered", metric);
	GW_COUNTERS(CHECK)
#undef CHECK
}

static void test_errors_and_push(void **state)
{
	assert_line("qagw_errors_total{worker=\"ml1\",code=\"bad_frame\"} 3");
	assert_line("qagw_errors_total{worker=\"ml2\",code=\"internal\"} 1");
	assert_line("qagw_errors_total{worker=\"ml2\",code=\"bad_frame\"} 0");
	assert_line("qagw_push_total{worker=\"ml2\",result=\"suppressed_off_primary\"} 7");
	assert_line("qagw_push_total{worker=\"ml1\",result=\"routed\"} 11");
	for (int i = 0; i < GW_PUSH_N; i++) {
		char l[128];
		snprintf(l, sizeof(l), "qagw_push_total{worker=\"ml2\",result=\"%s\"}",
		         gw_push_result_names[i]);
		assert_non_null(strstr(text, l));
	}
}

static void test_gauges(void **state)
{
	assert_line("qagw_sessions{worker=\"ml1\"} 3");
	assert_line("qagw_sessions_on_primary{worker=\"ml1\"} 2");
	assert_line("qagw_worker_draining{worker=\"ml2\"} 1");
	assert_line("qagw_store_up 1");
	assert_line("qagw_redis_up 0");
	assert_line("qagw_start_time_seconds 1700000000.123");
	assert_line("# TYPE qagw_sessions gauge");
}

static void test_histogram(void **state)
{
	assert_line("# TYPE qagw_push_latency_seconds histogram");
	assert_line("qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.001\"} 0");
	assert_line("qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.0025\"} 2");
	assert_line("qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.25\"} 2");
	assert_line("qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.5\"} 3");
	assert_line("qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"10\"} 3");
	assert_line("qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"+Inf\"} 4");
	assert_line("qagw_push_latency_seconds_count{worker=\"ml1\"} 4");
	assert_line("qagw_push_latency_seconds_sum{worker=\"ml1\"} 60.304500");
	assert_line("qagw_store_commit_seconds_count{worker=\"ml2\"} 0");
}

/* The family of a sample line: its name less a histogram suffix. */
static void family_of(const char *line, char *out, size_t n)
{
	size_t len = strcspn(line, "{ ");
	if (len >= n)
		len = n - 1;
	memcpy(out, line, len);
	out[len] = 0;
	static const char *const sfx[] = {"_bucket", "_sum", "_count"};
	for (int i = 0; i < 3; i++) {
		size_t s = strlen(sfx[i]);
		if (len > s && strcmp(out + len - s, sfx[i]) == 0 && strstr(out, "_seconds")) {
			out[len - s] = 0;
			break;
		}
	}
}

static void test_families_declared_once_and_contiguous(void **state)
{
	char seen[64][80];
	int n_seen = 0;
	char current[80] = "";
	char *copy = strdup(text);
	for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
		char fam[80];
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			family_of(line + 7, fam, sizeof(fam));
			for (int i = 0; i < n_seen; i++)
				if (strcmp(seen[i], fam) == 0)
					fail_msg("family %s declared twice", fam);
			assert_true(n_seen < 64);
			snprintf(seen[n_seen++], sizeof(seen[0]), "%s", fam);
			snprintf(current, sizeof(current), "%s", fam);
			continue;
		}
		family_of(line, fam, sizeof(fam));
		if (strcmp(fam, current) != 0)
			fail_msg("sample of %s outside its family (in %s): %s", fam, current, line);
	}
	free(copy);
	assert_true(n_seen >= 15);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counters_per_worker),
	    cmocka_unit_test(test_errors_and_push),
	    cmocka_unit_test(test_gauges),
	    cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_families_declared_once_and_contiguous),
	};
	return cmocka_run_group_tests_name("admin metrics exposition", tests, setup, teardown);
}
