/* POST /api/messages, GET and DELETE /api/messages/{id}: server-side sends
 * and message status through the store's own functions (store/schema.c):
 * qa_send commits the message and NOTIFYs qa_send, so the gateways route its
 * push like an uploaded message's; qa_cancel cancels and tells the sender.
 * Every one needs the store: 503 while it is down. */
#include "admin/api.h"
#include "admin/http.h"
#include "admin/ids.h"
#include "admin/send.h"
#include "gateway/log.h"
#include "gateway/node.h"
#include "gateway/worker.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void store_down(struct adm_req *r, const char *err)
{
	adm_reply_error(r, 503, "store_unavailable", "the store is unavailable%s%s",
	                err ? ": " : "", err ? err : "");
}

/* The message id of the path in canonical form, or replies 404. */
static int path_id(struct adm_req *r, char out[ADM_UUID_STR])
{
	uint8_t id[16];
	if (adm_uuid_parse(r->params.v[0], id) != 0) {
		adm_reply_error(r, 404, "not_found",
		                "no such message (an id is a UUID, with dashes or as 32 hex "
		                "digits)");
		return -1;
	}
	adm_uuid_format(id, out);
	return 0;
}

/* ---- POST /api/messages ---- */

static void on_sent(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res) {
		char field[64];
		const char *m = adm_send_store_error(err, field, sizeof(field));
		if (m)
			adm_reply_bad_field(r, field[0] ? field : NULL, "%s", m);
		else
			store_down(r, err);
		return;
	}
	if (PQntuples(res) != 1 || PQnfields(res) != 2 || PQgetlength(res, 0, 0) != 16) {
		adm_reply_error(r, 500, "internal", "qa_send returned an unexpected result");
		return;
	}
	char id[ADM_UUID_STR], location[64];
	adm_uuid_format((const uint8_t *)PQgetvalue(res, 0, 0), id);
	int64_t seq = st_get_int8(res, 0, 1);
	gw_log(GW_LOG_DEBUG, "admin: message %s stored (seq %lld)", id, (long long)seq);
	json_t *j = json_object();
	json_object_set_new(j, "id", json_string(id));
	json_object_set_new(j, "seq", json_integer(seq));
	snprintf(location, sizeof(location), "/api/messages/%s", id);
	adm_add_header(r, "Location", location);
	adm_reply_json(r, 201, j);
}

void adm_post_message(struct adm_req *r)
{
	json_t *body = adm_body_object(r);
	if (!body)
		return;
	struct adm_send s;
	const char *field;
	char msg[300];
	if (adm_send_parse(body, r->node->conf.max_frame, &s, &field, msg, sizeof(msg)) != 0) {
		adm_reply_bad_field(r, field, "%s", msg);
		json_decref(body);
		return;
	}
	struct st_params p = {0};
	st_params_text(&p, s.to, strlen(s.to));
	st_params_text(&p, s.body, s.body_len);
	st_params_text(&p, s.from, strlen(s.from));
	st_params_int4(&p, s.priority);
	st_params_int8(&p, s.expires_ms);
	st_params_text(&p, s.props_json, strlen(s.props_json));
	int sent =
	    adm_store(r, on_sent, "SELECT id, seq FROM qa_send($1, $2, $3, $4, $5, $6::jsonb)", &p);
	st_params_clear(&p);
	free(s.props_json);
	json_decref(body);
	if (sent != 0) {
		store_down(r, NULL);
		return;
	}
}

/* ---- GET /api/messages/{id} ---- */

static json_t *text_col(const PGresult *res, int col)
{
	json_t *s = json_stringn(PQgetvalue(res, 0, col), (size_t)PQgetlength(res, 0, col));
	return s ? s : json_null();
}

static void on_message(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res || PQnfields(res) != 9) {
		store_down(r, err);
		return;
	}
	if (PQntuples(res) == 0) {
		adm_reply_error(r, 404, "not_found", "no message %s", r->params.v[0]);
		return;
	}
	uint8_t id[16];
	char canon[ADM_UUID_STR];
	if (adm_uuid_parse(r->params.v[0], id) != 0)
		return; /* checked before the query */
	adm_uuid_format(id, canon);
	/* "to" is the address as sent: RECIPIENT\QUEUE. */
	size_t rl = (size_t)PQgetlength(res, 0, 1), ql = (size_t)PQgetlength(res, 0, 2);
	char *to = malloc(rl + ql + 2);
	if (!to) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	memcpy(to, PQgetvalue(res, 0, 1), rl);
	to[rl] = '\\';
	memcpy(to + rl + 1, PQgetvalue(res, 0, 2), ql);
	to[rl + 1 + ql] = 0;
	json_t *j = json_object();
	json_object_set_new(j, "id", json_string(canon));
	json_object_set_new(j, "from", text_col(res, 0));
	json_t *tj = json_string(to);
	json_object_set_new(j, "to", tj ? tj : json_null());
	free(to);
	json_object_set_new(j, "status", json_integer(st_get_int2(res, 0, 3)));
	json_object_set_new(j, "status_ms", json_integer(st_get_int8(res, 0, 4)));
	json_object_set_new(j, "delivery_count", json_integer(st_get_int4(res, 0, 5)));
	json_object_set_new(j, "priority", json_integer(st_get_int2(res, 0, 6)));
	json_object_set_new(j, "created_ms", json_integer(st_get_int8(res, 0, 7)));
	json_object_set_new(j, "expires_ms", json_integer(st_get_int8(res, 0, 8)));
	adm_reply_json(r, 200, j);
}

void adm_get_message(struct adm_req *r)
{
	char id[ADM_UUID_STR];
	if (path_id(r, id) != 0)
		return;
	struct st_params p = {0};
	st_params_text(&p, id, strlen(id));
	int sent = adm_store(r, on_message,
	                     "SELECT sender, recipient, queue, status, status_ms, delivery_count,\n"
	                     "       priority, created_ms, expires_ms\n"
	                     "  FROM qa_messages WHERE id = $1::uuid",
	                     &p);
	st_params_clear(&p);
	if (sent != 0)
		store_down(r, NULL);
}

/* ---- DELETE /api/messages/{id} ---- */

static void on_canceled(struct adm_req *r, const PGresult *res, const char *err)
{
	if (!res || PQntuples(res) != 1 || PQnfields(res) != 1) {
		store_down(r, err);
		return;
	}
	uint8_t id[16];
	char canon[ADM_UUID_STR];
	if (adm_uuid_parse(r->params.v[0], id) != 0)
		return;
	adm_uuid_format(id, canon);
	switch (st_get_int4(res, 0, 0)) {
	case 0:
		adm_reply_error(r, 404, "not_found", "no message %s", canon);
		return;
	case 2:
		adm_reply_error(r, 409, "already_final",
		                "message %s is already final (acknowledged, expired, canceled, "
		                "received or unreceivable)",
		                canon);
		return;
	}
	gw_log(GW_LOG_INFO, "admin: message %s canceled", canon);
	json_t *j = json_object();
	json_object_set_new(j, "id", json_string(canon));
	json_object_set_new(j, "status", json_integer(40));
	adm_reply_json(r, 200, j);
}

void adm_delete_message(struct adm_req *r)
{
	char id[ADM_UUID_STR];
	if (path_id(r, id) != 0)
		return;
	struct st_params p = {0};
	st_params_text(&p, id, strlen(id));
	st_params_int8(&p, gw_now_ms());
	int sent = adm_store(r, on_canceled, "SELECT qa_cancel($1::uuid, $2)", &p);
	st_params_clear(&p);
	if (sent != 0)
		store_down(r, NULL);
}
