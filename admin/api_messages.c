/* POST /api/messages, GET and DELETE /api/messages/{id}: server-side sends
 * and message status through the store's own functions (store/queries.h):
 * qa_send commits the message and NOTIFYs qa_send, so the gateways route its
 * push like an uploaded message's; qa_cancel cancels and tells the sender.
 * Every one needs the store: 503 while it is down. */
#include "admin/api.h"
#include "admin/http.h"
#include "admin/ids.h"
#include "admin/send.h"
#include "common/clock.h"
#include "common/log.h"
#include "gateway/node.h"
#include "store/queries.h"

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
		if (adm_send_store_too_large(m))
			adm_reply_error(r, 413, "too_large", "%s", m);
		else if (m)
			adm_reply_bad_field(r, field[0] ? field : NULL, "%s", m);
		else
			store_down(r, err);
		return;
	}
	uint8_t raw[16];
	int64_t seq;
	if (st_sent_read(res, raw, &seq) != 0) {
		adm_reply_error(r, 500, "internal", "qa_send returned an unexpected result");
		return;
	}
	char id[ADM_UUID_STR], location[64];
	adm_uuid_format(raw, id);
	gw_log(GW_LOG_DEBUG, "admin: message %s stored (seq %lld)", id, (long long)seq);
	json_t *j = json_object();
	json_object_set_new(j, "id", json_string(id));
	json_object_set_new(j, "seq", json_integer(seq));
	snprintf(location, sizeof(location), "/api/messages/%s", id);
	adm_add_header(r, "Location", location);
	adm_reply_json(r, 201, j);
}

static struct st_op *submit_send(struct st_conn *c, const void *args, st_done_fn done, void *arg)
{
	const struct adm_send *s = args;
	return st_send(c, s->to, s->body, s->body_len, s->from, s->priority, s->expires_ms,
	               s->props_json, s->max_frame, done, arg);
}

void adm_post_message(struct adm_req *r)
{
	json_t *body = adm_body_object(r);
	if (!body)
		return;
	struct adm_send s;
	const char *field;
	char msg[300];
	int rc = adm_send_parse(body, r->node->conf.max_frame, &s, &field, msg, sizeof(msg));
	if (rc == ADM_SEND_TOO_LARGE) { /* it could never be delivered: nothing stored */
		adm_reply_error(r, 413, "too_large", "%s", msg);
		json_decref(body);
		return;
	}
	if (rc != 0) {
		adm_reply_bad_field(r, field, "%s", msg);
		json_decref(body);
		return;
	}
	int sent = adm_store(r, on_sent, submit_send, &s);
	free(s.props_json);
	json_decref(body);
	if (sent != 0) {
		store_down(r, NULL);
		return;
	}
}

/* ---- GET /api/messages/{id} ---- */

static json_t *text_or_null(const char *s, size_t n)
{
	json_t *j = json_stringn(s, n);
	return j ? j : json_null();
}

static void on_message(struct adm_req *r, const PGresult *res, const char *err)
{
	struct st_message_row m;
	int found = res ? st_message_read(res, &m) : -1;
	if (found < 0) {
		store_down(r, err);
		return;
	}
	if (!found) {
		adm_reply_error(r, 404, "not_found", "no message %s", r->params.v[0]);
		return;
	}
	uint8_t id[16];
	char canon[ADM_UUID_STR];
	if (adm_uuid_parse(r->params.v[0], id) != 0)
		return; /* checked before the query */
	adm_uuid_format(id, canon);
	/* "to" is the address as sent: RECIPIENT\QUEUE. */
	size_t rl = m.recipient_len, ql = m.queue_len;
	char *to = malloc(rl + ql + 2);
	if (!to) {
		adm_reply_error(r, 500, "internal", "out of memory");
		return;
	}
	memcpy(to, m.recipient, rl);
	to[rl] = '\\';
	memcpy(to + rl + 1, m.queue, ql);
	to[rl + 1 + ql] = 0;
	json_t *j = json_object();
	json_object_set_new(j, "id", json_string(canon));
	json_object_set_new(j, "from", text_or_null(m.sender, m.sender_len));
	json_t *tj = json_string(to);
	json_object_set_new(j, "to", tj ? tj : json_null());
	free(to);
	json_object_set_new(j, "status", json_integer(m.status));
	json_object_set_new(j, "status_ms", json_integer(m.status_ms));
	json_object_set_new(j, "delivery_count", json_integer(m.delivery_count));
	json_object_set_new(j, "priority", json_integer(m.priority));
	json_object_set_new(j, "created_ms", json_integer(m.created_ms));
	json_object_set_new(j, "expires_ms", json_integer(m.expires_ms));
	adm_reply_json(r, 200, j);
}

static struct st_op *submit_message(struct st_conn *c, const void *id, st_done_fn done, void *arg)
{
	return st_message(c, id, done, arg);
}

void adm_get_message(struct adm_req *r)
{
	char id[ADM_UUID_STR];
	if (path_id(r, id) != 0)
		return;
	if (adm_store(r, on_message, submit_message, id) != 0)
		store_down(r, NULL);
}

/* ---- DELETE /api/messages/{id} ---- */

static void on_canceled(struct adm_req *r, const PGresult *res, const char *err)
{
	enum st_cancel_result result = res ? st_cancel_read(res) : ST_CANCEL_BAD;
	if (result == ST_CANCEL_BAD) {
		store_down(r, err);
		return;
	}
	uint8_t id[16];
	char canon[ADM_UUID_STR];
	if (adm_uuid_parse(r->params.v[0], id) != 0)
		return;
	adm_uuid_format(id, canon);
	switch (result) {
	case ST_CANCEL_NONE:
		adm_reply_error(r, 404, "not_found", "no message %s", canon);
		return;
	case ST_CANCEL_ALREADY:
		adm_reply_error(r, 409, "already_final",
		                "message %s is already final (acknowledged, expired, canceled, "
		                "received or unreceivable)",
		                canon);
		return;
	default: /* ST_CANCEL_DONE */
		break;
	}
	gw_log(GW_LOG_INFO, "admin: message %s canceled", canon);
	json_t *j = json_object();
	json_object_set_new(j, "id", json_string(canon));
	json_object_set_new(j, "status", json_integer(40));
	adm_reply_json(r, 200, j);
}

static struct st_op *submit_cancel(struct st_conn *c, const void *id, st_done_fn done, void *arg)
{
	return st_cancel(c, id, gw_wall_ms(), done, arg);
}

void adm_delete_message(struct adm_req *r)
{
	char id[ADM_UUID_STR];
	if (path_id(r, id) != 0)
		return;
	if (adm_store(r, on_canceled, submit_cancel, id) != 0)
		store_down(r, NULL);
}
