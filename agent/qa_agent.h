/* libqaagent's entry points for an application or the qaagent program: queue
 * a message, run one sync (server choice + sync transaction), run a
 * persistent session, take received messages, read the store's counts. Each
 * call is self-contained; an agent handle holds the configuration, the open
 * client store and the log. */
#ifndef QA_AGENT_H
#define QA_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "agent/qa_config.h"
#include "agent/qa_error.h"
#include "agent/qa_log.h"
#include "agent/qa_run.h"
#include "agent/qa_store.h"
#include "agent/qa_sync.h"
#include "proto/qs_codec.h"

struct qa_agent {
	const struct qa_config *cfg; /* borrowed; outlives the agent */
	struct qa_store *store;
	struct qa_log log;
	FILE *trace; /* cfg->trace_path opened for appending, or NULL */
};

/* A message to queue. */
struct qa_send_params {
	const char *address; /* AGENT\QUEUE */
	const uint8_t *body;
	size_t body_len;
	uint8_t priority;    /* 0..9 */
	uint64_t expires_ms; /* 0 = never */
	const struct qs_props *props;
	const uint8_t *id; /* 16 bytes chosen by the caller (send --id), NULL: a new one */
};

/* Opens the client store of cfg; log lines go to log_out (NULL: stderr). */
int qa_agent_open(struct qa_agent *a, const struct qa_config *cfg, FILE *log_out,
                  struct qa_error *e) __attribute__((warn_unused_result));
void qa_agent_close(struct qa_agent *a);

/* Validates a message to send: QA_FAIL_USAGE naming the bad part (address,
 * priority, property) when the server would refuse it as invalid. */
int qa_agent_check(const struct qa_send_params *p, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Validates the message (qa_agent_check), gives it its id (p->id, else a new
 * one from libuuid) and queues it in the outbox. Returns 0, or 1 when p->id
 * is in the outbox or the sent log already (a retry: nothing queued), or -1. */
int qa_agent_queue(struct qa_agent *a, const struct qa_send_params *p, uint8_t id[16],
                   struct qa_error *e) __attribute__((warn_unused_result));

/* One transmission: picks a server (qa_cycle over the -x list), runs the sync
 * transaction, records the server reached and the time, says BYE. */
int qa_agent_sync(struct qa_agent *a, struct qa_sync_result *r, struct qa_error *e)
    __attribute__((warn_unused_result));

/* `run` (-push connected), agent.md "Failover": connection cycles with HELLO
 * flags PERSIST, each session the persistent one of qa_run (a transmission,
 * then PUSH → PUSH_ACK → fetch, heartbeats, -policy), until an end in p (0
 * and *end: time limit, count, stop) or a failure that must not be retried
 * (-1: a non-retryable ERROR, a usage error, the client store or the machine
 * failed). A lost session starts a new cycle at once; a cycle that failed on
 * every server waits min(2^k, 300) s x [0.5, 1.5] first (k cycles failed in
 * a row). While on an alternate the primary is tried every -fd (30 s when 0)
 * and taken as soon as it answers WELCOME. REASSIGN records the new list,
 * says BYE and starts a cycle with the new primary. Events go to p->on_event;
 * p's outbox_poll_ms and schedule_ms are set from cfg's -policy. */
int qa_agent_run(struct qa_agent *a, const struct qa_run_params *p, enum qa_run_end *end,
                 struct qa_error *e) __attribute__((warn_unused_result));

/* The received messages not yet taken (of queue, or all when NULL). When
 * there are none and wait_ms > 0, syncs every 500 ms until some arrive or
 * wait_ms passed; *synced says whether any of those syncs succeeded. A
 * non-retryable ERROR ends the wait with that error. */
int qa_agent_unread(struct qa_agent *a, const char *queue, uint64_t wait_ms,
                    struct qa_in_list *list, int *synced, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Marks messages taken by the application and queues their STATUS 60 reports. */
int qa_agent_take(struct qa_agent *a, const struct qa_in_list *list, struct qa_error *e)
    __attribute__((warn_unused_result));

/* The store's counts, the last server reached (malloc'd, NULL if none) and the
 * time of the last successful sync (0 if none). */
int qa_agent_status(struct qa_agent *a, struct qa_store_counts *c, char **last_server,
                    uint64_t *last_sync_ms, struct qa_error *e) __attribute__((warn_unused_result));

#endif
