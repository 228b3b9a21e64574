/* GET /api/agents-near-quota?limit=N: the recipients with the most pending
 * messages, nearest their max_pending quota first (issue 10; docs/admin.md).
 * One GROUP BY over the pending index: its cost grows with the pending
 * messages of the whole store (docs/operations.md "Retention and quotas"). */
#include "admin/api.h"
#include "admin/http.h"
#include "gateway/node.h"
#include "store/store.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>

#define QUOTA_LIST_DEFAULT 20
#define QUOTA_LIST_MAX     1000

static void on_near_quota(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res || PQnfields(res) != 2) {
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable%s%s",
		                err ? ": " : "", err ? err : "");
		return;
	}
	int max_pending = r->node->conf.max_pending;
	json_t *list = json_array();
	for (int i = 0; i < PQntuples(res); i++) {
		int64_t pending = st_get_int8(res, i, 1);
		json_t *a = json_object();
		json_object_set_new(
		    a, "agent",
		    json_stringn(PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0)));
		json_object_set_new(a, "pending", json_integer(pending));
		json_object_set_new(a, "used", json_real((double)pending / max_pending));
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

void adm_get_agents_near_quota(struct adm_req *r)
{
	int limit = query_limit(r);
	if (limit < 0) {
		adm_reply_bad_field(r, "limit", "limit: an integer 1..%d", QUOTA_LIST_MAX);
		return;
	}
	struct st_params p = {0};
	st_params_int4(&p, limit);
	int sent =
	    adm_store(r, on_near_quota,
	              "SELECT recipient, count(*)::bigint FROM qa_messages WHERE status = 1\n"
	              " GROUP BY recipient ORDER BY 2 DESC, 1 LIMIT $1",
	              &p);
	st_params_clear(&p);
	if (sent != 0)
		adm_reply_error(r, 503, "store_unavailable", "the store is unavailable");
}
