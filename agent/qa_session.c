/* One QASync v1 session of the agent: see qa_session.h. */
#include "agent/qa_session.h"

#include "common/clock.h"

#include <stdlib.h>
#include <string.h>

static void copy_str(char *dst, size_t n, struct qs_str s)
{
	size_t len = s.len < n - 1 ? s.len : n - 1;
	memcpy(dst, s.ptr, len);
	dst[len] = '\0';
}

void qa_server_list_free(struct qa_server_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = 0;
	l->primary[0] = '\0';
}

static int copy_servers(struct qa_server_list *l, struct qs_str primary, uint16_t n,
                        const struct qs_server *v, struct qa_error *e)
{
	qa_server_list_free(l);
	copy_str(l->primary, sizeof l->primary, primary);
	if (n == 0)
		return 0;
	l->v = calloc(n, sizeof *l->v);
	if (l->v == NULL)
		return qa_error_set(e, QA_FAIL_SYSTEM, "out of memory");
	for (uint16_t i = 0; i < n; i++) {
		copy_str(l->v[i].name, sizeof l->v[i].name, v[i].name);
		copy_str(l->v[i].stream, sizeof l->v[i].stream, v[i].stream);
	}
	l->n = n;
	return 0;
}

static void log_frame(const struct qa_session *s, const char *dir, const struct qs_frame *f)
{
	if (s->log == NULL || !s->log->verbose)
		return;
	char text[512];
	qs_frame_summary(f, text, sizeof text);
	qa_log_write(s->log, "%s %s %s", s->conn.peer, dir, text);
}

static int send_frame(struct qa_session *s, const struct qs_frame *f, int timeout_ms,
                      struct qa_error *e)
{
	if (qa_conn_send(&s->conn, f, timeout_ms, e) != 0)
		return -1;
	log_frame(s, "send", f);
	if (f->type == QS_FETCH)
		s->pushes_fetched = s->pushes_seen;
	return 0;
}

static int recv_frame(struct qa_session *s, struct qs_frame *f, int timeout_ms, struct qa_error *e)
{
	if (qa_conn_recv(&s->conn, f, timeout_ms, e) != 0)
		return -1;
	log_frame(s, "recv", f);
	return 0;
}

void qa_session_init(struct qa_session *s, const struct qa_log *log)
{
	memset(s, 0, sizeof *s);
	qa_conn_init(&s->conn);
	s->log = log;
	s->response_timeout_ms = QA_RESPONSE_TIMEOUT_MS;
	s->next_nonce = 1;
	s->next_batch = 1;
}

static int take_welcome(struct qa_session *s, const struct qs_welcome *w, struct qa_error *e)
{
	struct qa_welcome_info *info = &s->welcome;
	if (w->version != QS_VERSION)
		return qa_error_set(e, QA_FAIL_PROTOCOL, "WELCOME with version %u",
		                    (unsigned)w->version);
	if (w->max_batch == 0 || w->max_frame < 64)
		return qa_error_set(e, QA_FAIL_PROTOCOL,
		                    "WELCOME with unusable limits (max_frame %u, max_batch %u)",
		                    (unsigned)w->max_frame, (unsigned)w->max_batch);
	copy_str(info->server, sizeof info->server, w->server);
	copy_str(info->primary, sizeof info->primary, w->primary);
	info->on_primary = w->on_primary != 0;
	info->max_frame = w->max_frame;
	info->max_batch = w->max_batch;
	info->heartbeat_s = w->heartbeat_s;
	s->conn.max_frame = w->max_frame;
	return copy_servers(&info->servers, w->primary, w->n_servers, w->servers, e);
}

int qa_session_open(struct qa_session *s, const struct qa_stream *stream,
                    const struct qa_hello_params *hello, int connect_timeout_ms, struct qa_error *e)
{
	qa_session_close(s, 0);
	if (qa_conn_open(&s->conn, stream, connect_timeout_ms, e) != 0)
		return -1;
	return qa_session_handshake(s, hello, e);
}

int qa_session_handshake(struct qa_session *s, const struct qa_hello_params *hello,
                         struct qa_error *e)
{
	qa_server_list_free(&s->welcome.servers);
	memset(&s->welcome, 0, sizeof s->welcome);
	s->pushes_seen = s->pushes_fetched = 0;
	s->hb_nonce = 0;

	struct qs_frame f = {.type = QS_HELLO};
	f.u.hello.version = QS_VERSION;
	f.u.hello.agent_id = qs_str_c(hello->agent_id);
	f.u.hello.token = qs_str_c(hello->token ? hello->token : "");
	f.u.hello.primary = qs_str_c(hello->primary ? hello->primary : "");
	f.u.hello.flags = hello->flags;
	f.u.hello.now_ms = (uint64_t)gw_wall_ms();
	if (send_frame(s, &f, QA_WELCOME_TIMEOUT_MS, e) != 0)
		goto fail;

	struct qs_frame in;
	if (recv_frame(s, &in, QA_WELCOME_TIMEOUT_MS, e) != 0) {
		if (e != NULL && e->kind == QA_FAIL_IO) {
			char why[sizeof e->msg];
			memcpy(why, e->msg, sizeof why);
			qa_error_set(e, QA_FAIL_IO, "no WELCOME: %.1900s", why);
		}
		goto fail;
	}
	int rc;
	if (in.type == QS_WELCOME) {
		rc = take_welcome(s, &in.u.welcome, e);
	} else if (in.type == QS_ERROR) {
		rc = qa_error_server(e, in.u.error.code, in.u.error.retryable, in.u.error.text.ptr,
		                     in.u.error.text.len);
	} else {
		rc = qa_error_set(e, QA_FAIL_PROTOCOL, "server answered HELLO with %s",
		                  qs_type_name(in.type));
	}
	qs_frame_release(&in);
	if (rc != 0)
		goto fail;
	return 0;
fail:
	qa_conn_close(&s->conn);
	return -1;
}

int qa_session_send(struct qa_session *s, const struct qs_frame *f, struct qa_error *e)
{
	return send_frame(s, f, s->response_timeout_ms, e);
}

/* Handles a frame the server may send at any time. 1: handled, wait on;
 * 0: not one of those; -1: the session failed. */
static int handle_unsolicited(struct qa_session *s, const struct qs_frame *in, struct qa_error *e)
{
	struct qs_frame out;
	switch (in->type) {
	case QS_PING:
		out.type = QS_PONG;
		out.u.nonce = in->u.nonce;
		return qa_session_send(s, &out, e) == 0 ? 1 : -1;
	case QS_PUSH:
		/* Something is waiting. The ack goes first, before any FETCH: it
		 * ends the server's coalescing and records the push's latency. A
		 * sync fetches anyway; qa_run fetches when pushes_seen moves past
		 * pushes_fetched. */
		s->pushes_seen++;
		out.type = QS_PUSH_ACK;
		out.u.push_id = in->u.push.push_id;
		if (qa_session_send(s, &out, e) != 0)
			return -1;
		if (s->on_push != NULL)
			s->on_push(s->on_push_ctx, in->u.push.push_id, in->u.push.pending);
		return 1;
	case QS_PONG:
		if (s->hb_nonce != 0 && in->u.nonce == s->hb_nonce)
			s->hb_nonce = 0; /* the heartbeat is answered: the connection lives */
		else                     /* an answer to a PING given up on: harmless */
			QA_DEBUG(s->log, "PONG %llu matches no PING waiting: ignored",
			         (unsigned long long)in->u.nonce);
		return 1;
	case QS_REASSIGN:
		QA_DEBUG(s->log, "REASSIGN from %s: new primary %.*s", s->welcome.server,
		         (int)in->u.reassign.primary.len, in->u.reassign.primary.ptr);
		s->reassigned = 1;
		return copy_servers(&s->reassign, in->u.reassign.primary, in->u.reassign.n_servers,
		                    in->u.reassign.servers, e) == 0
		           ? 1
		           : -1;
	case QS_ERROR:
		qa_error_server(e, in->u.error.code, in->u.error.retryable, in->u.error.text.ptr,
		                in->u.error.text.len);
		return -1;
	case QS_BYE:
		qa_error_set(e, QA_FAIL_IO, "server %s ended the session (BYE)", s->welcome.server);
		return -1;
	default:
		return 0;
	}
}

int qa_session_expect(struct qa_session *s, enum qs_type want, struct qs_frame *f,
                      struct qa_error *e)
{
	for (;;) {
		if (recv_frame(s, f, s->response_timeout_ms, e) != 0) {
			if (e != NULL && e->kind == QA_FAIL_IO) {
				char why[sizeof e->msg];
				memcpy(why, e->msg, sizeof why);
				qa_error_set(e, QA_FAIL_IO, "waiting %d ms for %s from %s: %.1900s",
				             s->response_timeout_ms, qs_type_name(want),
				             s->welcome.server, why);
			}
			return -1;
		}
		/* A heartbeat's PONG is taken here even when a PONG is wanted:
		 * it answers qa_run's PING, not the caller's. */
		const int heartbeat_pong =
		    f->type == QS_PONG && s->hb_nonce != 0 && f->u.nonce == s->hb_nonce;
		if (f->type == want && want != QS_PING && !heartbeat_pong)
			return 0;
		int rc = handle_unsolicited(s, f, e);
		if (rc == 0)
			qa_error_set(e, QA_FAIL_PROTOCOL, "server sent %s while %s was expected",
			             qs_type_name(f->type), qs_type_name(want));
		qs_frame_release(f);
		if (rc != 1)
			return -1;
	}
}

int qa_session_ping(struct qa_session *s, struct qa_error *e)
{
	const uint64_t nonce = s->next_nonce++;
	struct qs_frame f = {.type = QS_PING};
	f.u.nonce = nonce;
	if (qa_session_send(s, &f, e) != 0)
		return -1;
	for (;;) {
		if (qa_session_expect(s, QS_PONG, &f, e) != 0)
			return -1;
		uint64_t got = f.u.nonce;
		qs_frame_release(&f);
		if (got == nonce)
			return 0;
		/* A PONG to an older PING: keep waiting for ours. */
		QA_DEBUG(s->log, "PONG %llu while waiting for %llu", (unsigned long long)got,
		         (unsigned long long)nonce);
	}
}

int qa_session_poll(struct qa_session *s, struct qa_error *e)
{
	for (;;) {
		struct qs_frame f;
		int got = qa_conn_try_recv(&s->conn, &f, e);
		if (got <= 0)
			return got;
		log_frame(s, "recv", &f);
		int rc = handle_unsolicited(s, &f, e);
		if (rc == 0)
			qa_error_set(e, QA_FAIL_PROTOCOL,
			             "server sent %s, which no request asked for",
			             qs_type_name(f.type));
		qs_frame_release(&f);
		if (rc != 1)
			return -1;
	}
}

void qa_session_close(struct qa_session *s, int send_bye)
{
	if (send_bye && s->conn.state == QA_CONN_OPEN) {
		struct qs_frame f = {.type = QS_BYE};
		struct qa_error ignored;
		/* Best effort: the work is committed; a lost BYE costs nothing.
		 * A stop request must not stop the BYE that it asked for. */
		const int cancel_fd = s->conn.cancel_fd;
		s->conn.cancel_fd = -1;
		if (send_frame(s, &f, 2000, &ignored) != 0)
			QA_DEBUG(s->log, "BYE not sent: %s", ignored.msg);
		s->conn.cancel_fd = cancel_fd;
	}
	qa_conn_close(&s->conn);
}

void qa_session_free(struct qa_session *s)
{
	qa_session_close(s, 0);
	qa_server_list_free(&s->welcome.servers);
	qa_server_list_free(&s->reassign);
}
