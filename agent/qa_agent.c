/* libqaagent's entry points: see qa_agent.h. */
#include "agent/qa_agent.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uuid/uuid.h>

#include "agent/qa_cycle.h"
#include "agent/qa_plan.h"
#include "agent/qa_session.h"
#include "common/clock.h"

#define QA_RECV_POLL_MS 500
int qa_agent_open(struct qa_agent *a, const struct qa_config *cfg, FILE *log_out,
                  struct qa_error *e)
{
	memset(a, 0, sizeof *a);
	a->cfg = cfg;
	a->log.out = log_out;
	a->log.verbose = cfg->verbose;
	if (cfg->trace_path != NULL) {
		a->trace = fopen(cfg->trace_path, "ae");
		if (a->trace == NULL)
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad -trace \"%.200s\": cannot open it for writing",
			                    cfg->trace_path);
	}
	if (qa_store_open(&a->store, cfg->db_path, cfg->agent_id, e) != 0) {
		if (a->trace != NULL)
			fclose(a->trace);
		a->trace = NULL;
		return -1;
	}
	return 0;
}

void qa_agent_close(struct qa_agent *a)
{
	qa_store_close(a->store);
	a->store = NULL;
	if (a->trace != NULL)
		fclose(a->trace);
	a->trace = NULL;
}

int qa_agent_check(const struct qa_send_params *p, struct qa_error *e)
{
	const size_t alen = strlen(p->address);
	struct qs_str agent, queue;
	if (alen > 255 ||
	    qs_split_address((struct qs_str){p->address, (uint16_t)alen}, &agent, &queue) != 0)
		return qa_error_set(
		    e, QA_FAIL_USAGE,
		    "bad address \"%.300s\": AGENT\\QUEUE expected (agent id "
		    "[A-Za-z0-9._-]{1,120}, queue 1..128 bytes, at most 255 in all)",
		    p->address);
	if (queue.len == 6 && memcmp(queue.ptr, "system", 6) == 0)
		return qa_error_set(e, QA_FAIL_USAGE,
		                    "bad address \"%s\": the queue \"system\" is reserved",
		                    p->address);
	if (p->priority > 9)
		return qa_error_set(e, QA_FAIL_USAGE, "bad priority %u: 0..9", p->priority);
	const struct qs_props *pr = p->props;
	for (uint16_t i = 0; pr != NULL && i < pr->n; i++) {
		struct qs_str k = pr->v[i].key, v = pr->v[i].value;
		if (k.len == 0 || k.len > 128 || !qs_valid_utf8(k.ptr, k.len))
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad property key \"%.*s\": 1..128 bytes of UTF-8",
			                    (int)(k.len > 200 ? 200 : k.len), k.ptr);
		if (k.len >= 4 && strncasecmp(k.ptr, "ias_", 4) == 0)
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad property key \"%.*s\": ias_ keys are reserved",
			                    (int)k.len, k.ptr);
		if (!qs_valid_utf8(v.ptr, v.len))
			return qa_error_set(e, QA_FAIL_USAGE,
			                    "bad value of property \"%.*s\": not UTF-8", (int)k.len,
			                    k.ptr);
		for (uint16_t j = 0; j < i; j++)
			if (pr->v[j].key.len == k.len &&
			    memcmp(pr->v[j].key.ptr, k.ptr, k.len) == 0)
				return qa_error_set(e, QA_FAIL_USAGE,
				                    "property \"%.*s\" given twice", (int)k.len,
				                    k.ptr);
	}
	if (p->body_len > UINT32_MAX)
		return qa_error_set(e, QA_FAIL_USAGE, "body too large");
	static const struct qs_props no_props = {0, NULL};
	struct qs_msg_out m = {
	    .to = qs_str_c(p->address),
	    .priority = p->priority,
	    .props = pr != NULL ? *pr : no_props,
	};
	/* The codec's rule is the server's: what it refuses would come back invalid. */
	if (qs_msg_out_check(&m) != QS_R_STORED)
		return qa_error_set(e, QA_FAIL_USAGE, "message refused by the protocol's rules");
	return 0;
}

int qa_agent_queue(struct qa_agent *a, const struct qa_send_params *p, uint8_t id[16],
                   struct qa_error *e)
{
	static const struct qs_props no_props = {0, NULL};
	const struct qs_props *props = p->props != NULL ? p->props : &no_props;
	if (qa_agent_check(p, e) != 0)
		return -1;

	struct qs_buf block = {0};
	if (qs_encode_props(props, &block) != 0) {
		qs_buf_free(&block);
		return qa_error_set(e, QA_FAIL_USAGE, "properties too large to encode");
	}
	if (p->id) {
		int found = 0;
		memcpy(id, p->id, 16);
		if (qa_store_has_id(a->store, id, &found, e) != 0) {
			qs_buf_free(&block);
			return -1;
		}
		if (found) {
			qs_buf_free(&block);
			return 1;
		}
	} else {
		uuid_t uu;
		uuid_generate(uu);
		memcpy(id, uu, 16);
	}
	struct qa_out_msg out = {
	    .address = (char *)p->address,
	    .priority = p->priority,
	    .expires_ms = p->expires_ms,
	    .props = block.data,
	    .props_len = block.len,
	    .body = (uint8_t *)p->body,
	    .body_len = p->body_len,
	};
	memcpy(out.id, id, 16);
	int rc = qa_store_out_add(a->store, &out, e);
	qs_buf_free(&block);
	return rc;
}

int qa_agent_sync(struct qa_agent *a, struct qa_sync_result *r, struct qa_error *e)
{
	struct qa_plan plan;
	if (qa_plan_make(a, 0 /* sync: no PERSIST */, &plan, e) != 0)
		return -1;
	struct qa_session s;
	qa_session_init(&s, &a->log);
	if (qa_cycle_connect(&s, &plan.cycle, NULL, e) != 0) {
		qa_session_free(&s);
		return -1;
	}
	int rc = qa_plan_record_welcome(a, &plan, &s, e);
	if (rc == 0)
		rc = qa_sync_run(&s, a->store, NULL, r, e);
	qa_plan_record_reassign(a, &s);
	if (rc == 0) {
		char now[24];
		snprintf(now, sizeof now, "%" PRId64, gw_wall_ms());
		rc = qa_store_meta_set(a->store, "last_sync_ms", now, e);
	}
	QA_DEBUG(&a->log, "sync with %s %s%s%s", s.welcome.server, rc == 0 ? "done" : "failed",
	         rc == 0 ? "" : ": ", rc == 0 ? "" : e->msg);
	/* BYE only after a clean end; after a failure the connection is gone or
	 * the server is closing it. */
	qa_session_close(&s, rc == 0);
	qa_session_free(&s);
	return rc;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

int qa_agent_unread(struct qa_agent *a, const char *queue, uint64_t wait_ms,
                    struct qa_in_list *list, int *synced, struct qa_error *e)
{
	const uint64_t deadline = gw_mono_ms() + wait_ms;
	*synced = 0;
	for (;;) {
		if (qa_store_inbox_unread(a->store, queue, list, e) != 0)
			return -1;
		uint64_t now = gw_mono_ms();
		if (list->n > 0 || wait_ms == 0 || now >= deadline)
			return 0;
		qa_in_list_free(list);
		const uint64_t started = now;
		struct qa_sync_result r;
		struct qa_error err;
		if (qa_agent_sync(a, &r, &err) == 0) {
			*synced = 1;
			if (r.received > 0)
				continue;
		} else if (qa_error_is_final(&err) || err.kind == QA_FAIL_STORE ||
		           err.kind == QA_FAIL_SYSTEM) {
			*e = err;
			return -1;
		} else {
			QA_DEBUG(&a->log, "recv --wait: sync failed: %s", err.msg);
		}
		now = gw_mono_ms();
		if (now >= deadline)
			continue; /* one last look at the inbox */
		uint64_t next = started + QA_RECV_POLL_MS;
		if (next > deadline)
			next = deadline;
		if (next > now)
			sleep_ms(next - now);
	}
}

int qa_agent_take(struct qa_agent *a, const struct qa_in_list *list, struct qa_error *e)
{
	return qa_store_inbox_take(a->store, list, QS_ST_RECEIVED, e);
}

int qa_agent_status(struct qa_agent *a, struct qa_store_counts *c, char **last_server,
                    uint64_t *last_sync_ms, struct qa_error *e)
{
	char *sync_text = NULL;
	*last_server = NULL;
	*last_sync_ms = 0;
	if (qa_store_counts(a->store, c, e) != 0 ||
	    qa_store_meta_get(a->store, "last_server", last_server, e) < 0 ||
	    qa_store_meta_get(a->store, "last_sync_ms", &sync_text, e) < 0) {
		free(*last_server);
		*last_server = NULL;
		return -1;
	}
	if (sync_text != NULL)
		*last_sync_ms = strtoull(sync_text, NULL, 10);
	free(sync_text);
	return 0;
}
