/* The agent's configuration: the global options of the qaagent command line
 * (agent.md "Command line"), parsed and validated through one declarative
 * table of options. A bad value is an error naming the option. Used by the
 * qaagent program; a device application may fill the struct itself. */
#ifndef QA_CONFIG_H
#define QA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "agent/qa_stream.h"

#define QA_MAX_STREAMS        32
#define QA_DEFAULT_SCHEDULE_S 900

enum qa_push {
	QA_PUSH_CONNECTED, /* keep a PERSIST session open and act on PUSH (default) */
	QA_PUSH_NONE,      /* no persistent session */
};

enum qa_policy {
	QA_POLICY_AUTOMATIC, /* transmit whenever a message is queued or a push arrives */
	QA_POLICY_ONDEMAND,  /* transmit only when the application asks (sync) */
	QA_POLICY_SCHEDULED, /* transmit every schedule_s seconds */
};

struct qa_config {
	char agent_id[121];
	char *db_path;
	struct qa_stream streams[QA_MAX_STREAMS]; /* the -x list: primary first */
	size_t n_streams;
	unsigned fr;       /* -fr: retries of the primary */
	uint64_t fd_ms;    /* -fd: delay after a failed primary attempt, in ms */
	enum qa_push push; /* -push */
	enum qa_policy policy;
	unsigned schedule_s; /* -policy scheduled[S] */
	char *token;         /* -token or the first line of -token-file; "" when none */
	char *log_path;      /* -o, NULL: stderr */
	char *trace_path;    /* -trace: one JSON line per connection attempt, NULL: none */
	int verbose;         /* -v */
	unsigned seen;       /* bit per option given (duplicates are errors) */
};

void qa_config_init(struct qa_config *c);
void qa_config_free(struct qa_config *c);

/* Parses the global options in argv[1..] up to the first argument that is
 * not an option (the command), whose index goes to *command. Returns 0, or
 * -1 with a message naming the option in err. Also checks what every command
 * needs (-id, -db; at most one of -token/-token-file; auto(...) alone). */
int qa_config_parse(struct qa_config *c, int argc, char **argv, int *command, char *err,
                    size_t errlen) __attribute__((warn_unused_result));

/* Non-negative decimal seconds with up to 3 fractional digits ("0.5", "2"),
 * at most max_s; returns 0 and the value in ms, or -1. */
int qa_parse_seconds(const char *s, uint64_t max_s, uint64_t *ms)
    __attribute__((warn_unused_result));

/* A decimal integer in [min, max], digits with an optional leading '-'. */
int qa_parse_int(const char *s, long long min, long long max, long long *v)
    __attribute__((warn_unused_result));

#endif
