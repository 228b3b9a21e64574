/* GET /api/agents-near-quota?limit=N: the recipients with the most pending
 * messages, nearest their max_pending quota first (issue 10; docs/admin.md).
 * The store ranks them (st_most_pending: its cost grows with the pending
 * messages of the whole store, docs/operations.md "Retention and quotas"). */
#include "admin/api.h"
#include "admin/http.h"
#include "gateway/node.h"
#include "store/queries.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>

#define QUOTA_LIST_DEFAULT 20
#define QUOTA_LIST_MAX     1000

static void on_near_quota(struct adm_req *r, const PGresult *res, const char *err)
{
	int n = res ? st_pending_rows(res) : -1;
	if (n < 0) {
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable%s%s",
		                err ? ": " : "", err ? err : "");
		return;
	}
	int max_pending = r->node->conf.max_pending;
	json_t *list = json_array();
	for (int i = 0; i < n; i++) {
		struct st_pending_row row;
		st_pending_row(res, i, &row);
		json_t *a = json_object();
		json_object_set_new(a, "agent", json_stringn(row.agent, row.agent_len));
		json_object_set_new(a, "pending", json_integer(row.pending));
		json_object_set_new(a, "used", json_real((double)row.pending / max_pending));
		json_array_append_new(list, a);
	}
	json_t *j = json_object();
	json_object_set_new(j, "max_pending", json_integer(max_pending));
	json_object_set_new(j, "agents", list);
	adm_reply_json(r, 200, j);
}

/* ?limit=N (1..QUOTA_LIST_MAX), or the default; -1 when malformed. */
static int query_limit(struct adm_req *r)
{
	const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->http));
	struct evkeyvalq kv;
	TAILQ_INIT(&kv);
	if (q && evhttp_parse_query_str(q, &kv) != 0)
		return -1;
	const char *v = evhttp_find_header(&kv, "limit");
	int limit = QUOTA_LIST_DEFAULT;
	if (v) {
		char *end;
		long n = strtol(v, &end, 10);
		limit = end != v && !*end && n >= 1 && n <= QUOTA_LIST_MAX ? (int)n : -1;
	}
	evhttp_clear_headers(&kv);
	return limit;
}

static struct st_op *submit_most_pending(struct st_conn *c, const void *limit, st_done_fn done,
                                         void *arg)
{
	return st_most_pending(c, *(const int *)limit, done, arg);
}

void adm_get_agents_near_quota(struct adm_req *r)
{
	int limit = query_limit(r);
	if (limit < 0) {
		adm_reply_bad_field(r, "limit", "limit: an integer 1..%d", QUOTA_LIST_MAX);
		return;
	}
	if (adm_store(r, on_near_quota, submit_most_pending, &limit) != 0)
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable");
}
