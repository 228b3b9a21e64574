/* libqaagent's connection plan (agent/qa_plan.c) built from a server list:
 * under auto(...;tls=on) a WELCOME or REASSIGN cannot make the agent follow a
 * cleartext entry (the token would go out unencrypted) nor swap the
 * bootstrap's trusted certificates for the server's (issue 16, item 6);
 * under a cleartext bootstrap the list is followed as before, still with the
 * bootstrap's certificates for tls entries (agent.md step 8). No network:
 * the plan is built from the client store only. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/qa_agent.h"
#include "agent/qa_config.h"
#include "agent/qa_plan.h"
#include "agent/qa_session.h"
#include "agent/qa_stream.h"

#define BOOT_CA "/etc/qaagent/pool-ca.pem"

struct fixture {
	char db[64];
	char log_path[64];
	FILE *log;
	struct qa_config cfg;
	struct qa_agent agent;
};

static void open_agent(struct fixture *f, const char *bootstrap)
{
	snprintf(f->db, sizeof f->db, "/tmp/qa-plan-test-XXXXXX");
	int fd = mkstemp(f->db);
	assert_true(fd >= 0);
	close(fd);
	unlink(f->db);
	snprintf(f->log_path, sizeof f->log_path, "/tmp/qa-plan-log-XXXXXX");
	fd = mkstemp(f->log_path);
	assert_true(fd >= 0);
	f->log = fdopen(fd, "w+");
	assert_non_null(f->log);
	qa_config_init(&f->cfg);
	snprintf(f->cfg.agent_id, sizeof f->cfg.agent_id, "dev-plan");
	f->cfg.db_path = strdup(f->db);
	char err[256];
	assert_int_equal(qa_stream_parse(bootstrap, &f->cfg.streams[0], err, sizeof err), 0);
	f->cfg.n_streams = 1;
	struct qa_error e;
	assert_int_equal(qa_agent_open(&f->agent, &f->cfg, f->log, &e), 0);
}

/* The log written so far (malloc'd). */
static char *read_log(struct fixture *f)
{
	fflush(f->log);
	long n = ftell(f->log);
	char *text = calloc(1, (size_t)n + 1);
	assert_non_null(text);
	rewind(f->log);
	assert_int_equal(fread(text, 1, (size_t)n, f->log), (size_t)n);
	return text;
}

static void close_agent(struct fixture *f)
{
	qa_agent_close(&f->agent);
	qa_config_free(&f->cfg);
	fclose(f->log);
	unlink(f->log_path);
	unlink(f->db);
}

/* A list as WELCOME or REASSIGN carries it: ml1 the primary, cleartext;
 * ml2 TLS naming a CA of the server's choosing; ml3 TLS; ml4 cleartext. */
static struct qa_server_entry hostile[] = {
    {"ml1", "tcpip(host=10.0.0.1;port=2439)"},
    {"ml2", "tls(host=10.0.0.2;port=2440;trusted_certificates=/tmp/server-chosen-ca.pem)"},
    {"ml3", "tls(host=10.0.0.3;port=2441)"},
    {"ml4", "tcpip(host=10.0.0.4;port=2442)"},
};

static void welcome_from(struct qa_session *s, const char *server, const char *primary)
{
	memset(s, 0, sizeof *s);
	snprintf(s->welcome.server, sizeof s->welcome.server, "%s", server);
	snprintf(s->welcome.primary, sizeof s->welcome.primary, "%s", primary);
	s->welcome.on_primary = 0;
	s->welcome.servers.n = sizeof hostile / sizeof hostile[0];
	s->welcome.servers.v = hostile;
}

static void expect_tls_only(const struct qa_plan *p, const char *const *labels, size_t n)
{
	assert_int_equal(p->cycle.n_streams, n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(p->labels[i], labels[i]);
		assert_int_equal(p->streams[i].tls, 1);
		assert_string_equal(p->streams[i].ca_file, BOOT_CA);
	}
}

/* WELCOME under auto(tls=on): the plan holds only TLS entries, each verified
 * with the bootstrap's CA, then the bootstrap; the dropped entries are logged. */
static void test_tls_bootstrap_welcome(void **state)
{
	struct fixture f;
	open_agent(&f, "auto(host=127.0.0.1;port=2439;tls=on;trusted_certificates=" BOOT_CA ")");
	static struct qa_session s;
	welcome_from(&s, "ml3", "ml1");
	struct qa_plan plan, probe;
	struct qa_error e;
	assert_int_equal(qa_plan_make(&f.agent, 0, &plan, &e), 0);
	assert_int_equal(qa_plan_record_welcome(&f.agent, &plan, &s, &e), 0);
	assert_int_equal(qa_plan_make(&f.agent, 0, &plan, &e), 0);
	static const char *const want[] = {"ml2", "ml3", "bootstrap"};
	expect_tls_only(&plan, want, 3);
	assert_string_equal(plan.streams[0].host, "10.0.0.2");
	assert_string_equal(plan.streams[2].host, "127.0.0.1");
	/* the primary (ml1) is cleartext: nothing better to go back to from ml3 */
	assert_int_equal(qa_plan_failback(&f.agent, &plan, 1, &s, &probe, &e), 0);

	char *log = read_log(&f);
	assert_non_null(strstr(log, "ignoring ml1 tcpip(host=10.0.0.1;port=2439): a cleartext"));
	assert_non_null(strstr(log, "ignoring ml4 tcpip(host=10.0.0.4;port=2442)"));
	assert_non_null(strstr(log, "ml2 tls(host=10.0.0.2;port=2440;trusted_certificates="
	                            "/tmp/server-chosen-ca.pem): its trusted_certificates is "
	                            "ignored"));
	assert_null(strstr(log, "ml3"));
	free(log);
	close_agent(&f);
}

/* REASSIGN under auto(tls=on): the same filter on the list it records. */
static void test_tls_bootstrap_reassign(void **state)
{
	struct fixture f;
	open_agent(&f, "auto(host=127.0.0.1;port=2439;tls=on;trusted_certificates=" BOOT_CA ")");
	static struct qa_session s;
	memset(&s, 0, sizeof s);
	s.reassigned = 1;
	snprintf(s.reassign.primary, sizeof s.reassign.primary, "ml4");
	struct qa_server_entry list[] = {hostile[3], hostile[1], hostile[0]};
	s.reassign.n = 3;
	s.reassign.v = list;
	qa_plan_record_reassign(&f.agent, &s);
	struct qa_plan plan;
	struct qa_error e;
	assert_int_equal(qa_plan_make(&f.agent, QS_FLAG_PERSIST, &plan, &e), 0);
	static const char *const want[] = {"ml2", "bootstrap"};
	expect_tls_only(&plan, want, 2);
	close_agent(&f);
}

/* A list with no TLS entry at all leaves the bootstrap: somewhere to go. */
static void test_tls_bootstrap_all_cleartext(void **state)
{
	struct fixture f;
	open_agent(&f, "auto(host=127.0.0.1;port=2439;tls=on;trusted_certificates=" BOOT_CA ")");
	static struct qa_session s;
	welcome_from(&s, "ml1", "ml1");
	s.welcome.servers.v = (struct qa_server_entry[]){hostile[0], hostile[3]};
	s.welcome.servers.n = 2;
	struct qa_plan plan;
	struct qa_error e;
	assert_int_equal(qa_plan_make(&f.agent, 0, &plan, &e), 0);
	assert_int_equal(qa_plan_record_welcome(&f.agent, &plan, &s, &e), 0);
	assert_int_equal(qa_plan_make(&f.agent, 0, &plan, &e), 0);
	static const char *const want[] = {"bootstrap"};
	expect_tls_only(&plan, want, 1);
	close_agent(&f);
}

/* A cleartext bootstrap follows the list as given (the operator chose
 * cleartext), but a tls entry is still verified with the bootstrap's
 * certificates (here none given: the system's), never the server's. */
static void test_cleartext_bootstrap(void **state)
{
	struct fixture f;
	open_agent(&f, "auto(host=127.0.0.1;port=2439)");
	static struct qa_session s;
	welcome_from(&s, "ml1", "ml1");
	struct qa_plan plan;
	struct qa_error e;
	assert_int_equal(qa_plan_make(&f.agent, 0, &plan, &e), 0);
	assert_int_equal(qa_plan_record_welcome(&f.agent, &plan, &s, &e), 0);
	assert_int_equal(qa_plan_make(&f.agent, 0, &plan, &e), 0);
	assert_int_equal(plan.cycle.n_streams, 5);
	static const char *const want[] = {"ml1", "ml2", "ml3", "ml4", "bootstrap"};
	static const int tls[] = {0, 1, 1, 0, 0};
	for (size_t i = 0; i < 5; i++) {
		assert_string_equal(plan.labels[i], want[i]);
		assert_int_equal(plan.streams[i].tls, tls[i]);
		assert_string_equal(plan.streams[i].ca_file, "");
	}
	close_agent(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tls_bootstrap_welcome),
	    cmocka_unit_test(test_tls_bootstrap_reassign),
	    cmocka_unit_test(test_tls_bootstrap_all_cleartext),
	    cmocka_unit_test(test_cleartext_bootstrap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
