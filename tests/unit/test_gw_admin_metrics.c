/* Unit tests: the Prometheus exposition (admin/metrics.c) of fake workers'
 * counters: one HELP/TYPE per family, families contiguous, labels, the
 * GW_COUNTERS / RT_PUSH_RESULTS tables all rendered, cumulative buckets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/metrics.h"
#include "proto/qs_codec.h"
#include "router/rt_push.h"

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
	c2.push[RT_PUSH_SUPPRESSED_OFF_PRIMARY] = 7;
	c1.push[RT_PUSH_ROUTED] = 11;
	gw_histogram_observe(&c1.push_latency, 0.002);  /* bucket le 0.0025 */
	gw_histogram_observe(&c1.push_latency, 0.0025); /* on the bound: same bucket */
	gw_histogram_observe(&c1.push_latency, 0.3);    /* le 0.5 */
	gw_histogram_observe(&c1.push_latency, 60);     /* above every bound: only +Inf */
	g1.sessions = 3;
	g1.on_primary = 2;
	g2.draining = 1;
	g1.store_up = g2.store_up = 1;

	struct adm_metrics_worker w[2] = {{"ml1", &c1, &g1}, {"ml2", &c2, &g2}};
	struct adm_metrics_node node = {
	    .store_up = 1, .redis_up = 0, .started_ms = 1700000000123, .backlog_pending = -1};
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

/* What a route call's answer makes of a push (rt_push_routed, the one owner of
 * that decision for the workers and the node): counted here, or by the target. */
static void test_push_routed(void **state)
{
	assert_int_equal(rt_push_routed(1, 0, "w1", "w2"), RT_PUSH_FAILED);
	assert_int_equal(rt_push_routed(0, 0, "", ""), RT_PUSH_NO_SESSION);
	assert_int_equal(rt_push_routed(0, 0, "w1", ""), RT_PUSH_NO_SESSION);
	assert_int_equal(rt_push_routed(0, 0, "w1", "w2"), RT_PUSH_SUPPRESSED_OFF_PRIMARY);
	assert_int_equal(rt_push_routed(0, 1, "w1", "w2"), RT_PUSH_N);
	assert_int_equal(rt_push_routed(0, 1, "w1", ""), RT_PUSH_N);
}

static void test_errors_and_push(void **state)
{
	assert_line("qagw_errors_total{worker=\"ml1\",code=\"bad_frame\"} 3");
	assert_line("qagw_errors_total{worker=\"ml2\",code=\"internal\"} 1");
	assert_line("qagw_errors_total{worker=\"ml2\",code=\"bad_frame\"} 0");
	assert_line("qagw_push_total{worker=\"ml2\",result=\"suppressed_off_primary\"} 7");
	assert_line("qagw_push_total{worker=\"ml1\",result=\"routed\"} 11");
	for (int i = 0; i < RT_PUSH_N; i++) {
		char l[128];
		snprintf(l, sizeof(l), "qagw_push_total{worker=\"ml2\",result=\"%s\"}",
		         rt_push_result_names[i]);
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

/* The whole exposition of one worker, pinned: names, labels, HELP and TYPE
 * lines and their order are what dashboards and alerts are written against
 * (admin.md "GET /metrics"), so a change to any table shows up here. */
static const char pinned[] =
    "# HELP qagw_build_info This node's qagw version (the value is 1)\n"
    "# TYPE qagw_build_info gauge\n"
    "qagw_build_info{version=\"0.9.0\"} 1\n"
    "# HELP qagw_pending_messages Messages pending in the store, for every recipient (as the "
    "lifecycle job last read it, once a run)\n"
    "# TYPE qagw_pending_messages gauge\n"
    "qagw_pending_messages 1234\n"
    "# HELP qagw_oldest_pending_age_seconds Age of the oldest pending message in the store (0: "
    "none pending)\n"
    "# TYPE qagw_oldest_pending_age_seconds gauge\n"
    "qagw_oldest_pending_age_seconds 90.500\n"
    "# HELP qagw_store_up 1 while this node's store connections (admin and every worker) are up\n"
    "# TYPE qagw_store_up gauge\n"
    "qagw_store_up 1\n"
    "# HELP qagw_redis_up 1 while this node's Redis connections (admin and every worker) are up\n"
    "# TYPE qagw_redis_up gauge\n"
    "qagw_redis_up 0\n"
    "# HELP qagw_listeners_paused Listeners (workers' and the admin port's) not accepting because "
    "descriptors or memory ran out (EMFILE, ENFILE, ENOBUFS, ENOMEM); retried every 250 ms\n"
    "# TYPE qagw_listeners_paused gauge\n"
    "qagw_listeners_paused 1\n"
    "# HELP qagw_start_time_seconds When this node started (Unix time)\n"
    "# TYPE qagw_start_time_seconds gauge\n"
    "qagw_start_time_seconds 1700000000.123\n"
    "# HELP qagw_sessions Sessions past HELLO\n"
    "# TYPE qagw_sessions gauge\n"
    "qagw_sessions{worker=\"ml1\"} 3\n"
    "# HELP qagw_sessions_on_primary Sessions held on their agent's primary worker\n"
    "# TYPE qagw_sessions_on_primary gauge\n"
    "qagw_sessions_on_primary{worker=\"ml1\"} 2\n"
    "# HELP qagw_sessions_unresolved_primary Sessions whose HELLO named a primary that matches no "
    "worker of the pool (a mistyped -x: every push to them is no_session)\n"
    "# TYPE qagw_sessions_unresolved_primary gauge\n"
    "qagw_sessions_unresolved_primary{worker=\"ml1\"} 0\n"
    "# HELP qagw_worker_draining 1 while the worker is drained (admin) or stopping (SIGTERM)\n"
    "# TYPE qagw_worker_draining gauge\n"
    "qagw_worker_draining{worker=\"ml1\"} 0\n"
    "# HELP qagw_worker_store_up 1 while the worker's store connection is up\n"
    "# TYPE qagw_worker_store_up gauge\n"
    "qagw_worker_store_up{worker=\"ml1\"} 1\n"
    "# HELP qagw_worker_redis_up 1 while the worker's Redis connection is up\n"
    "# TYPE qagw_worker_redis_up gauge\n"
    "qagw_worker_redis_up{worker=\"ml1\"} 0\n"
    "# HELP qagw_retention_last_run_seconds When the lifecycle job last completed a run (Unix "
    "time; 0: not yet, or not this worker)\n"
    "# TYPE qagw_retention_last_run_seconds gauge\n"
    "qagw_retention_last_run_seconds{worker=\"ml1\"} 0\n"
    "# HELP qagw_messages_stored_total Messages committed to the store\n"
    "# TYPE qagw_messages_stored_total counter\n"
    "qagw_messages_stored_total{worker=\"ml1\"} 5\n"
    "# HELP qagw_messages_duplicate_total Uploads answered duplicate\n"
    "# TYPE qagw_messages_duplicate_total counter\n"
    "qagw_messages_duplicate_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_messages_refused_total Uploads refused (invalid, expired, too_large, quota, "
    "conflict)\n"
    "# TYPE qagw_messages_refused_total counter\n"
    "qagw_messages_refused_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_messages_delivered_total Messages sent in DELIVER frames\n"
    "# TYPE qagw_messages_delivered_total counter\n"
    "qagw_messages_delivered_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_messages_acked_total Messages acknowledged by their recipient\n"
    "# TYPE qagw_messages_acked_total counter\n"
    "qagw_messages_acked_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_ignored_total DELIVER_ACK and STATUS entries ignored (not this agent's, or "
    "already final)\n"
    "# TYPE qagw_ignored_total counter\n"
    "qagw_ignored_total{worker=\"ml1\",kind=\"deliver_ack\"} 2\n"
    "qagw_ignored_total{worker=\"ml1\",kind=\"status\"} 4\n"
    "# HELP qagw_statuses_applied_total STATUS entries recorded\n"
    "# TYPE qagw_statuses_applied_total counter\n"
    "qagw_statuses_applied_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_sessions_accepted_total Connections accepted\n"
    "# TYPE qagw_sessions_accepted_total counter\n"
    "qagw_sessions_accepted_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_hello_refused_total Connections and HELLOs answered ERROR overloaded, by the "
    "limit that refused them\n"
    "# TYPE qagw_hello_refused_total counter\n"
    "qagw_hello_refused_total{worker=\"ml1\",reason=\"max_pending_hello\"} 0\n"
    "qagw_hello_refused_total{worker=\"ml1\",reason=\"max_pending_hello_per_ip\"} 0\n"
    "qagw_hello_refused_total{worker=\"ml1\",reason=\"max_sessions\"} 0\n"
    "qagw_hello_refused_total{worker=\"ml1\",reason=\"auth_backoff\"} 0\n"
    "# HELP qagw_hello_auth_failures_total HELLOs answered ERROR auth (unknown agent or wrong "
    "token)\n"
    "# TYPE qagw_hello_auth_failures_total counter\n"
    "qagw_hello_auth_failures_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_hello_auth_backoffs_total Source addresses put in back-off for spending their "
    "failed-HELLO budget\n"
    "# TYPE qagw_hello_auth_backoffs_total counter\n"
    "qagw_hello_auth_backoffs_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_sessions_revoked_total Live sessions ended ERROR auth because their agent's token "
    "was removed\n"
    "# TYPE qagw_sessions_revoked_total counter\n"
    "qagw_sessions_revoked_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_store_failures_total Requests answered store_unavailable\n"
    "# TYPE qagw_store_failures_total counter\n"
    "qagw_store_failures_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_requests_total Agent requests answered (the load signal)\n"
    "# TYPE qagw_requests_total counter\n"
    "qagw_requests_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_uploads_pipelined_total UPLOADs read while the same session's earlier UPLOADs "
    "were still committing\n"
    "# TYPE qagw_uploads_pipelined_total counter\n"
    "qagw_uploads_pipelined_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_reassign_total REASSIGN sent to agents the router moved\n"
    "# TYPE qagw_reassign_total counter\n"
    "qagw_reassign_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_messages_expired_total Pending messages expired by the lifecycle job (status 30, "
    "sender told)\n"
    "# TYPE qagw_messages_expired_total counter\n"
    "qagw_messages_expired_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_messages_purged_total Final messages older than keep_days deleted by the "
    "lifecycle job\n"
    "# TYPE qagw_messages_purged_total counter\n"
    "qagw_messages_purged_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_store_groups_total Group statements sent: one transaction for the requests of "
    "several sessions\n"
    "# TYPE qagw_store_groups_total counter\n"
    "qagw_store_groups_total{worker=\"ml1\",kind=\"upload\"} 0\n"
    "# HELP qagw_store_group_parts_total Requests carried by group statements (parts / groups: the "
    "mean group size)\n"
    "# TYPE qagw_store_group_parts_total counter\n"
    "qagw_store_group_parts_total{worker=\"ml1\",kind=\"upload\"} 0\n"
    "# HELP qagw_retention_runs_total Runs of the lifecycle job (expiry, then purge) that "
    "completed\n"
    "# TYPE qagw_retention_runs_total counter\n"
    "qagw_retention_runs_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_retention_failures_total Runs of the lifecycle job cut short by a store error "
    "(retried at the next run)\n"
    "# TYPE qagw_retention_failures_total counter\n"
    "qagw_retention_failures_total{worker=\"ml1\"} 0\n"
    "# HELP qagw_errors_total ERROR frames sent, by error name\n"
    "# TYPE qagw_errors_total counter\n"
    "qagw_errors_total{worker=\"ml1\",code=\"bad_frame\"} 3\n"
    "qagw_errors_total{worker=\"ml1\",code=\"version\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"auth\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"sequence\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"too_large\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"store_unavailable\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"overloaded\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"draining\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"timeout\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"superseded\"} 0\n"
    "qagw_errors_total{worker=\"ml1\",code=\"internal\"} 0\n"
    "# HELP qagw_push_total Pushes by result: routed, then one of coalesced, sent, "
    "suppressed_off_primary, no_session, failed; acked when a sent PUSH is answered\n"
    "# TYPE qagw_push_total counter\n"
    "qagw_push_total{worker=\"ml1\",result=\"routed\"} 11\n"
    "qagw_push_total{worker=\"ml1\",result=\"coalesced\"} 0\n"
    "qagw_push_total{worker=\"ml1\",result=\"sent\"} 0\n"
    "qagw_push_total{worker=\"ml1\",result=\"acked\"} 0\n"
    "qagw_push_total{worker=\"ml1\",result=\"suppressed_off_primary\"} 0\n"
    "qagw_push_total{worker=\"ml1\",result=\"no_session\"} 0\n"
    "qagw_push_total{worker=\"ml1\",result=\"failed\"} 0\n"
    "# HELP qagw_push_latency_seconds Commit of a message to the PUSH_ACK of the push it caused\n"
    "# TYPE qagw_push_latency_seconds histogram\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.001\"} 0\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.0025\"} 2\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.005\"} 2\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.01\"} 2\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.025\"} 2\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.05\"} 2\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.1\"} 2\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.25\"} 2\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"0.5\"} 3\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"1\"} 3\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"2.5\"} 3\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"5\"} 3\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"10\"} 3\n"
    "qagw_push_latency_seconds_bucket{worker=\"ml1\",le=\"+Inf\"} 4\n"
    "qagw_push_latency_seconds_sum{worker=\"ml1\"} 60.304500\n"
    "qagw_push_latency_seconds_count{worker=\"ml1\"} 4\n"
    "# HELP qagw_store_commit_seconds UPLOAD statement round trip (its commit)\n"
    "# TYPE qagw_store_commit_seconds histogram\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.001\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.0025\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.005\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.01\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.025\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.05\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.1\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.25\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"0.5\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"1\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"2.5\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"5\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"10\"} 0\n"
    "qagw_store_commit_seconds_bucket{worker=\"ml1\",le=\"+Inf\"} 0\n"
    "qagw_store_commit_seconds_sum{worker=\"ml1\"} 0.000000\n"
    "qagw_store_commit_seconds_count{worker=\"ml1\"} 0\n";

static void test_exposition_pinned(void **state)
{
	struct adm_metrics_worker w[1] = {{"ml1", &c1, &g1}};
	struct adm_metrics_node node = {.store_up = 1,
	                                .redis_up = 0,
	                                .started_ms = 1700000000123,
	                                .listeners_paused = 1,
	                                .backlog_pending = 1234,
	                                .backlog_oldest_ms = 1700000000000,
	                                .now_ms = 1700000090500};
	struct evbuffer *out = evbuffer_new();
	assert_int_equal(adm_metrics_render(out, w, 1, &node), 0);
	size_t n = evbuffer_get_length(out);
	const char *got = (const char *)evbuffer_pullup(out, -1);
	if (getenv("QAGW_PIN_DUMP")) /* to rewrite pinned[] after an intended change */
		fwrite(got, 1, n, stderr);
	size_t at = 0;
	while (at < n && at < sizeof(pinned) - 1 && got[at] == pinned[at])
		at++;
	if (at != n || n != sizeof(pinned) - 1)
		fail_msg("exposition differs from the pinned one at byte %zu:\n%.*s", at,
		         (int)(n - at < 200 ? n - at : 200), got + at);
	evbuffer_free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counters_per_worker),
	    cmocka_unit_test(test_errors_and_push),
	    cmocka_unit_test(test_push_routed),
	    cmocka_unit_test(test_gauges),
	    cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_families_declared_once_and_contiguous),
	    cmocka_unit_test(test_exposition_pinned),
	};
	return cmocka_run_group_tests_name("admin metrics exposition", tests, setup, teardown);
}
