/* qaagent: the command-line program over libqaagent (docs/agent.md). Parses
 * the command line, calls the library, prints results as JSON for scripts
 * and maps failures to exit codes. No protocol or store logic lives here. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "agent/qa_agent.h"
#include "agent/qa_config.h"
#include "common/clock.h"
#include "proto/qs_codec.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_UNREACHABLE = 1, /* no server could be reached, or the sync was cut short */
	EXIT_USAGE = 2,       /* bad command line */
	EXIT_REFUSED = 3,     /* a non-retryable ERROR from the server */
	EXIT_LOCAL = 4,       /* the client store or the machine failed */
};

static const char usage_text[] =
    "usage: qaagent -id ID -db FILE -x STREAM [-x STREAM ...] [-fr N] [-fd SECONDS]\n"
    "               [-push connected|none] [-policy automatic|ondemand|scheduled[SECONDS]]\n"
    "               [-token TOKEN | -token-file FILE] [-o LOGFILE] [-trace FILE] [-v]\n"
    "               COMMAND [ARGS]\n"
    "commands:\n"
    "  send ADDRESS BODY [--priority P] [--expires-in S] [--prop K=V]... [--id UUID]\n"
    "  sync\n"
    "  recv [QUEUE] [--wait S]\n"
    "  status [MESSAGE_ID]\n"
    "  run [--for SECONDS] [--count N]\n"
    "qaagent --version prints the version\n"
    "STREAM: tcpip(host=H;port=P) | tls(host=H;port=P;trusted_certificates=CA.pem)\n"
    "        | auto(host=H;port=P[;tls=on;trusted_certificates=CA.pem])\n";

/* What a command runs with. */
struct cli {
	struct qa_config cfg;
	struct qa_agent agent;
	FILE *log_file; /* -o, or NULL */
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("qaagent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(qaagent without arguments prints the usage)\n", stderr);
	return EXIT_USAGE;
}

static int exit_code_of(const struct qa_error *e)
{
	switch (e->kind) {
	case QA_FAIL_USAGE:
		return EXIT_USAGE;
	case QA_FAIL_SERVER:
		return e->retryable ? EXIT_UNREACHABLE : EXIT_REFUSED;
	case QA_FAIL_STORE:
	case QA_FAIL_SYSTEM:
		return EXIT_LOCAL;
	default:
		return EXIT_UNREACHABLE;
	}
}

/* Reports a library failure on stderr (and in the -o log) and returns the exit code. */
static int fail(struct cli *c, const char *prefix, const struct qa_error *e)
{
	fprintf(stderr, "qaagent: %s%s\n", prefix, e->msg);
	if (c->log_file != NULL)
		qa_log_write(&c->agent.log, "%s%s", prefix, e->msg);
	return exit_code_of(e);
}

static int need_streams(const struct cli *c, const char *why)
{
	if (c->cfg.n_streams == 0)
		return usage_error("-x STREAM is required to %s", why);
	return 0;
}

static int open_agent(struct cli *c)
{
	struct qa_error e;
	if (qa_agent_open(&c->agent, &c->cfg, c->log_file, &e) != 0)
		return fail(c, "", &e);
	return 0;
}

/* ---- JSON helpers ---- */

static json_t *jstr(const char *p, size_t n)
{
	json_t *s = json_stringn(p, n);
	return s != NULL ? s : json_string("");
}

/* body_base64: RFC 4648's alphabet with padding, on one line (EVP_EncodeBlock
 * breaks no lines: that is EVP_EncodeUpdate's doing). NULL when out of memory. */
static char *base64(const uint8_t *p, size_t n)
{
	if (n > (size_t)INT_MAX / 4 * 3 - 3) /* EVP_EncodeBlock counts in int */
		return NULL;
	char *out = malloc((n + 2) / 3 * 4 + 1);
	if (out != NULL)
		EVP_EncodeBlock((unsigned char *)out, p, (int)n); /* NUL-terminates */
	return out;
}

/* Prints obj as one compact line, keys in insertion order; frees obj. */
static int print_json(json_t *obj)
{
	char *text = obj != NULL ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(obj);
	if (text == NULL)
		return -1;
	int rc = puts(text) < 0 ? -1 : 0;
	free(text);
	return rc;
}

static json_t *message_json(const struct qa_in_msg *m)
{
	char id[37];
	uuid_unparse_lower(m->id, id);
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "seq", json_integer((json_int_t)m->seq));
	json_object_set_new(o, "from", jstr(m->from, strlen(m->from)));
	json_object_set_new(o, "queue", jstr(m->queue, strlen(m->queue)));
	json_object_set_new(o, "priority", json_integer(m->priority));
	json_object_set_new(o, "created_ms", json_integer((json_int_t)m->created_ms));
	json_object_set_new(o, "expires_ms", json_integer((json_int_t)m->expires_ms));
	json_t *props = json_object();
	struct qs_props pr = {0};
	if (qs_decode_props(m->props, m->props_len, &pr) == 0) {
		for (uint16_t i = 0; i < pr.n; i++) {
			char key[129];
			size_t kn = pr.v[i].key.len < 128 ? pr.v[i].key.len : 128;
			memcpy(key, pr.v[i].key.ptr, kn);
			key[kn] = '\0';
			json_object_set_new(props, key, jstr(pr.v[i].value.ptr, pr.v[i].value.len));
		}
		free(pr.v);
	}
	json_object_set_new(o, "props", props);
	if (qs_valid_utf8((const char *)m->body, m->body_len)) {
		json_object_set_new(o, "body", jstr((const char *)m->body, m->body_len));
	} else {
		char *b64 = base64(m->body, m->body_len);
		json_object_set_new(o, "body_base64", json_string(b64 != NULL ? b64 : ""));
		free(b64);
	}
	return o;
}

static json_t *results_json(const unsigned long *counts)
{
	json_t *o = json_object();
	for (int r = 0; r < QA_RESULT_COUNT; r++)
		json_object_set_new(o, qa_sync_result_name(r), json_integer((json_int_t)counts[r]));
	return o;
}

/* ---- commands ---- */

static int run_sync(struct cli *c, struct qa_sync_result *r, const char *prefix)
{
	struct qa_error e;
	if (qa_agent_sync(&c->agent, r, &e) != 0)
		return fail(c, prefix, &e);
	return EXIT_OK;
}

static int cmd_sync(struct cli *c, int argc, char **argv)
{
	if (argc > 1)
		return usage_error("sync takes no arguments (got \"%s\")", argv[1]);
	int rc = need_streams(c, "sync");
	if (rc == 0)
		rc = open_agent(c);
	if (rc != 0)
		return rc;
	struct qa_sync_result r;
	if ((rc = run_sync(c, &r, "sync failed: ")) != EXIT_OK)
		return rc;
	json_t *o = json_object();
	json_object_set_new(o, "server", json_string(r.server));
	json_object_set_new(o, "on_primary", json_integer(r.on_primary));
	json_object_set_new(o, "uploaded", results_json(r.uploaded));
	json_object_set_new(o, "received", json_integer((json_int_t)r.received));
	json_object_set_new(o, "statuses_sent", json_integer((json_int_t)r.statuses_sent));
	return print_json(o) == 0 ? EXIT_OK : EXIT_LOCAL;
}

static int cmd_send(struct cli *c, int argc, char **argv)
{
	const char *pos[2];
	int npos = 0, opts_done = 0;
	long long priority = 4, expires_in = 0;
	int has_expiry = 0;
	struct qs_prop props[256];
	struct qs_props plist = {0, props};
	uuid_t chosen;
	int has_id = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!opts_done && strcmp(a, "--") == 0) {
			opts_done = 1;
			continue;
		}
		if (!opts_done && strncmp(a, "--", 2) == 0) {
			if (i + 1 >= argc)
				return usage_error("send: %s needs a value", a);
			const char *v = argv[++i];
			if (strcmp(a, "--priority") == 0) {
				if (qa_parse_int(v, 0, 9, &priority) != 0)
					return usage_error("send: bad --priority \"%s\": 0..9", v);
			} else if (strcmp(a, "--expires-in") == 0) {
				if (qa_parse_int(v, -100000000000LL, 100000000000LL, &expires_in) !=
				    0)
					return usage_error(
					    "send: bad --expires-in \"%s\": whole seconds", v);
				has_expiry = 1;
			} else if (strcmp(a, "--id") == 0) {
				if (uuid_parse(v, chosen) != 0)
					return usage_error("send: bad --id \"%s\": a UUID", v);
				has_id = 1;
			} else if (strcmp(a, "--prop") == 0) {
				const char *eq = strchr(v, '=');
				if (eq == NULL || eq == v)
					return usage_error("send: bad --prop \"%s\": K=V expected",
					                   v);
				if (plist.n == sizeof props / sizeof props[0])
					return usage_error("send: too many --prop (at most 256)");
				if (strlen(eq + 1) > 65535)
					return usage_error("send: --prop value too long");
				props[plist.n].key.ptr = v;
				props[plist.n].key.len =
				    (uint16_t)(eq - v > 65535 ? 65535 : eq - v);
				props[plist.n].value = qs_str_c(eq + 1);
				plist.n++;
			} else {
				return usage_error("send: unknown option \"%s\"", a);
			}
			continue;
		}
		if (npos == 2)
			return usage_error("send: unexpected argument \"%s\"", a);
		pos[npos++] = a;
	}
	if (npos < 2)
		return usage_error("send needs ADDRESS and BODY");
	if (c->cfg.policy == QA_POLICY_AUTOMATIC) {
		int rc = need_streams(c, "send with -policy automatic");
		if (rc != 0)
			return rc;
	}

	struct qa_send_params p = {
	    .address = pos[0],
	    .body = (const uint8_t *)pos[1],
	    .body_len = strlen(pos[1]),
	    .priority = (uint8_t)priority,
	    .props = &plist,
	    .id = has_id ? chosen : NULL,
	};
	if (has_expiry) {
		/* 0 means "never" on the wire: an expiry at or before the epoch
		 * is written as 1 ms, long past all the same. */
		long long at = (long long)gw_wall_ms() + expires_in * 1000;
		p.expires_ms = at > 0 ? (uint64_t)at : 1;
	}
	struct qa_error e;
	uint8_t id[16];
	if (qa_agent_check(&p, &e) != 0)
		return usage_error("send: %s", e.msg); /* before the store opens */
	int rc = open_agent(c);
	if (rc != 0)
		return rc;
	int queued = qa_agent_queue(&c->agent, &p, id, &e);
	if (queued < 0)
		return fail(c, "send: ", &e);
	char text[37];
	uuid_unparse_lower(id, text);
	if (queued == 1) /* a retry of send --id after a kill: idempotent */
		fprintf(stderr,
		        "send: duplicate: message %s is already in this client store "
		        "(queued or sent): not queued again\n",
		        text);
	puts(text);
	fflush(stdout);
	if (c->cfg.policy != QA_POLICY_AUTOMATIC)
		return EXIT_OK;
	struct qa_sync_result r;
	return run_sync(c, &r, "warning: message queued, not sent yet: ");
}

static int cmd_recv(struct cli *c, int argc, char **argv)
{
	const char *queue = NULL;
	uint64_t wait_ms = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0) {
			if (i + 1 >= argc || qa_parse_seconds(argv[i + 1], 86400, &wait_ms) != 0)
				return usage_error("recv: bad --wait \"%s\": seconds, 0..86400",
				                   i + 1 < argc ? argv[i + 1] : "");
			i++;
		} else if (queue == NULL && argv[i][0] != '-') {
			queue = argv[i];
			if (!qs_valid_queue(queue, strlen(queue)))
				return usage_error("recv: bad queue \"%s\"", queue);
		} else {
			return usage_error("recv: unexpected argument \"%s\"", argv[i]);
		}
	}
	int rc = wait_ms > 0 ? need_streams(c, "recv --wait") : 0;
	if (rc == 0)
		rc = open_agent(c);
	if (rc != 0)
		return rc;
	struct qa_in_list list;
	struct qa_error e;
	int synced = 0;
	if (qa_agent_unread(&c->agent, queue, wait_ms, &list, &synced, &e) != 0)
		return fail(c, "recv: ", &e);
	if (wait_ms > 0 && list.n == 0 && !synced)
		fprintf(stderr,
		        "qaagent: recv: warning: no server could be reached while waiting\n");
	for (size_t i = 0; i < list.n && rc == 0; i++)
		if (print_json(message_json(&list.v[i])) != 0)
			rc = EXIT_LOCAL;
	/* Printed first, marked taken after: a crash in between shows the
	 * messages again (at least once), never loses them. */
	if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout)))
		rc = EXIT_LOCAL;
	if (rc == 0 && list.n > 0 && qa_agent_take(&c->agent, &list, &e) != 0)
		rc = fail(c, "recv: ", &e);
	qa_in_list_free(&list);
	return rc;
}

/* A message id as the canonical UUID or 32 hex digits (like the admin port). */
static int parse_message_id(const char *text, uint8_t id[16])
{
	if (strlen(text) == 36)
		return uuid_parse(text, id);
	if (strlen(text) != 32)
		return -1;
	for (int i = 0; i < 16; i++) {
		unsigned v;
		if (!isxdigit((unsigned char)text[2 * i]) ||
		    !isxdigit((unsigned char)text[2 * i + 1]) ||
		    sscanf(text + 2 * i, "%2x", &v) != 1)
			return -1;
		id[i] = (uint8_t)v;
	}
	return 0;
}

static const char *status_name(int code)
{
	switch (code) {
	case 1:
		return "pending";
	case 20:
		return "transmitted";
	case 30:
		return "expired";
	case 40:
		return "canceled";
	case 50:
		return "unreceivable";
	case 60:
		return "received";
	}
	return "unknown";
}

/* status ID: what became of one message this agent sent, as far as its client
 * store knows: queued (outbox), the upload's result, and the latest status the
 * server reported through the system queue. Exit 1 names an id never sent here. */
static int cmd_message_status(struct cli *c, const char *text)
{
	uint8_t id[16];
	if (parse_message_id(text, id) != 0)
		return usage_error("status: bad message id \"%s\": a UUID or 32 hex digits", text);
	int rc = open_agent(c);
	if (rc != 0)
		return rc;
	struct qa_msg_status m;
	struct qa_error e;
	if (qa_store_message_status(c->agent.store, id, &m, &e) != 0)
		return fail(c, "status: ", &e);
	char canon[37];
	uuid_unparse_lower(id, canon);
	if (!m.found) {
		fprintf(stderr, "qaagent: status: message %s was not sent from this client store\n",
		        canon);
		return EXIT_UNREACHABLE;
	}
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(canon));
	json_object_set_new(o, "address", jstr(m.address, strlen(m.address)));
	/* queued: waiting for its UPLOAD_ACK; stored: in the server store; refused:
	 * the server did not take it (result says why) */
	const char *state = m.queued                           ? "queued"
	                    : (m.result == 0 || m.result == 1) ? "stored"
	                                                       : "refused";
	json_object_set_new(o, "state", json_string(state));
	if (m.queued) {
		json_object_set_new(o, "queued_ms", json_integer((json_int_t)m.queued_ms));
		json_object_set_new(o, "attempts", json_integer(m.attempts));
	}
	json_object_set_new(
	    o, "result", m.result >= 0 ? json_string(qa_sync_result_name(m.result)) : json_null());
	json_object_set_new(o, "result_ms",
	                    m.result >= 0 ? json_integer((json_int_t)m.done_ms) : json_null());
	/* without a note, a stored message is pending as far as this device knows */
	int code = m.status ? m.status : (!m.queued && m.result <= 1) ? 1 : 0;
	json_object_set_new(o, "status", code ? json_integer(code) : json_null());
	json_object_set_new(o, "status_name", code ? json_string(status_name(code)) : json_null());
	json_object_set_new(o, "status_ms",
	                    m.status ? json_integer((json_int_t)m.status_ms) : json_null());
	json_object_set_new(o, "status_notes", json_integer(m.notes));
	qa_msg_status_free(&m);
	return print_json(o) == 0 ? EXIT_OK : EXIT_LOCAL;
}

static int cmd_status(struct cli *c, int argc, char **argv)
{
	if (argc > 2)
		return usage_error("status takes at most one argument, a message id (got \"%s\")",
		                   argv[2]);
	if (argc == 2)
		return cmd_message_status(c, argv[1]);
	int rc = open_agent(c);
	if (rc != 0)
		return rc;
	struct qa_store_counts n;
	char *last_server;
	uint64_t last_sync_ms;
	struct qa_error e;
	if (qa_agent_status(&c->agent, &n, &last_server, &last_sync_ms, &e) != 0)
		return fail(c, "status: ", &e);
	json_t *o = json_object();
	json_object_set_new(o, "agent", json_string(c->cfg.agent_id));
	json_object_set_new(o, "outgoing", json_integer((json_int_t)n.outgoing));
	json_object_set_new(o, "incoming_unread", json_integer((json_int_t)n.incoming_unread));
	json_object_set_new(o, "incoming_total", json_integer((json_int_t)n.incoming_total));
	json_object_set_new(o, "statuses_queued", json_integer((json_int_t)n.statuses_queued));
	json_object_set_new(o, "last_server",
	                    last_server ? jstr(last_server, strlen(last_server)) : json_null());
	json_object_set_new(o, "last_sync_ms",
	                    last_sync_ms ? json_integer((json_int_t)last_sync_ms) : json_null());
	unsigned long sent[QA_RESULT_COUNT];
	for (int r = 0; r < QA_RESULT_COUNT; r++)
		sent[r] = (unsigned long)n.sent[r];
	json_object_set_new(o, "sent", results_json(sent));
	free(last_server);
	return print_json(o) == 0 ? EXIT_OK : EXIT_LOCAL;
}

/* One JSON line per run event, flushed at once: scripts and tests read them
 * while the agent runs. */
static void print_event(void *ctx, const struct qa_run_event *ev)
{
	json_t *o = json_object();
	switch (ev->type) {
	case QA_RUN_EV_WELCOME:
		json_object_set_new(o, "event", json_string("welcome"));
		json_object_set_new(o, "server", json_string(ev->welcome->server));
		json_object_set_new(o, "primary", json_string(ev->welcome->primary));
		json_object_set_new(o, "on_primary", json_integer(ev->welcome->on_primary));
		break;
	case QA_RUN_EV_PUSH:
		json_object_set_new(o, "event", json_string("push"));
		json_object_set_new(o, "push_id", json_integer((json_int_t)ev->push_id));
		json_object_set_new(o, "pending", json_integer((json_int_t)ev->pending));
		break;
	case QA_RUN_EV_RECEIVED: {
		json_object_set_new(o, "event", json_string("received"));
		json_object_set_new(o, "count", json_integer((json_int_t)ev->count));
		json_t *ids = json_array();
		for (size_t i = 0; i < ev->count; i++) {
			char id[37];
			uuid_unparse_lower(ev->ids[i], id);
			json_array_append_new(ids, json_string(id));
		}
		json_object_set_new(o, "ids", ids);
		break;
	}
	case QA_RUN_EV_ERROR:
		json_object_set_new(o, "event", json_string("error"));
		json_object_set_new(o, "code", json_integer(ev->error->code));
		json_object_set_new(o, "name", json_string(qs_err_name(ev->error->code)));
		json_object_set_new(o, "retryable", json_integer(ev->error->retryable));
		json_object_set_new(o, "text", jstr(ev->error->text, strlen(ev->error->text)));
		break;
	case QA_RUN_EV_CLOSED:
		json_object_set_new(o, "event", json_string("closed"));
		json_object_set_new(o, "reason", jstr(ev->reason, strlen(ev->reason)));
		break;
	case QA_RUN_EV_UNREACHABLE:
		json_object_set_new(o, "event", json_string("unreachable"));
		json_object_set_new(o, "reason", jstr(ev->reason, strlen(ev->reason)));
		json_object_set_new(o, "retry_in_ms", json_integer((json_int_t)ev->retry_ms));
		break;
	}
	json_object_set_new(o, "ts_ms", json_integer((json_int_t)ev->ts_ms));
	if (print_json(o) != 0 || fflush(stdout) != 0)
		qa_log_write(&((struct cli *)ctx)->agent.log, "run: cannot write to stdout");
}

static int cmd_run(struct cli *c, int argc, char **argv)
{
	uint64_t for_ms = 0;
	long long count = 0;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";
		if (strcmp(argv[i], "--for") == 0) {
			if (qa_parse_seconds(v, 366u * 86400u, &for_ms) != 0 || for_ms == 0)
				return usage_error("run: bad --for \"%s\": seconds, more than 0",
				                   v);
			i++;
		} else if (strcmp(argv[i], "--count") == 0) {
			if (qa_parse_int(v, 1, 1000000000000LL, &count) != 0)
				return usage_error("run: bad --count \"%s\": 1 or more", v);
			i++;
		} else {
			return usage_error("run: unexpected argument \"%s\"", argv[i]);
		}
	}
	int rc = need_streams(c, "run");
	if (rc != 0)
		return rc;
	if ((rc = open_agent(c)) != 0)
		return rc;

	/* SIGTERM and SIGINT become readable on a signalfd that the run loop
	 * polls (and every wait of the session watches): the loop then says BYE
	 * and returns; no work happens in a signal handler. */
	sigset_t stop_signals;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	int stop_fd = -1;
	if (sigprocmask(SIG_BLOCK, &stop_signals, NULL) == 0)
		stop_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
	if (stop_fd < 0) {
		fprintf(stderr, "qaagent: run: cannot watch SIGTERM/SIGINT: %s\n", strerror(errno));
		return EXIT_LOCAL;
	}
	struct qa_run_params p = {
	    .for_ms = for_ms,
	    .count = (uint64_t)count,
	    .stop_fd = stop_fd,
	    .on_event = print_event,
	    .ctx = c,
	};
	enum qa_run_end end;
	struct qa_error e;
	rc = qa_agent_run(&c->agent, &p, &end, &e) == 0 ? EXIT_OK : fail(c, "run: ", &e);
	close(stop_fd);
	return rc;
}

static const struct command {
	const char *name;
	int (*run)(struct cli *c, int argc, char **argv);
} commands[] = {
    {"send", cmd_send},     {"sync", cmd_sync}, {"recv", cmd_recv},
    {"status", cmd_status}, {"run", cmd_run},
};

int main(int argc, char **argv)
{
	struct cli c = {0};
	char err[1024];
	int cmd;

	if (argc < 2) {
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("qaagent %s\n", QAGW_VERSION);
		return EXIT_OK;
	}
	qa_config_init(&c.cfg);
	if (qa_config_parse(&c.cfg, argc, argv, &cmd, err, sizeof err) != 0) {
		qa_config_free(&c.cfg);
		return usage_error("%s", err);
	}
	int rc = EXIT_USAGE;
	const struct command *found = NULL;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (cmd < argc && strcmp(argv[cmd], commands[i].name) == 0)
			found = &commands[i];
	if (found == NULL) {
		if (cmd < argc)
			rc = usage_error("unknown command \"%s\"", argv[cmd]);
		else
			rc = usage_error("a COMMAND is required (send, sync, recv, status, run)");
		goto out;
	}
	if (c.cfg.log_path != NULL) {
		c.log_file = fopen(c.cfg.log_path, "a");
		if (c.log_file == NULL) {
			rc = usage_error("bad -o \"%s\": cannot open it for writing",
			                 c.cfg.log_path);
			goto out;
		}
	}
	c.agent.log.out = c.log_file;
	c.agent.log.verbose = c.cfg.verbose;
	rc = found->run(&c, argc - cmd, argv + cmd);
	qa_agent_close(&c.agent);
	if (c.log_file != NULL)
		fclose(c.log_file);
out:
	qa_config_free(&c.cfg);
	return rc;
}
