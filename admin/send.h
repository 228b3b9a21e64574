/* The body of POST /api/messages (admin.md): validated here, before the
 * store, so that a bad request is answered 400 naming its field. The same
 * rules as qa_send (store/schema.c) and an agent's UPLOAD (protocol.md):
 * "to" is AGENT\QUEUE with a valid agent id and queue, not the system queue;
 * the whole message must fit max_frame less what delivery adds. Pure. */
#ifndef ADM_SEND_H
#define ADM_SEND_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct adm_send {
	const char *to; /* borrowed from the body */
	const char *body;
	size_t body_len;
	const char *from;   /* "server" when absent */
	int priority;       /* 4 when absent */
	int64_t expires_ms; /* absolute, ms since the epoch; 0 never */
	char *props_json;   /* the props object as JSON text ("{}"); free() it */
	uint32_t max_frame; /* the gateway's, for qa_send's own too_large check */
};

/* Fills s from the request body. Returns 0, or -1 with *field naming the
 * offending field (a key of the body) and a message in msg, or
 * ADM_SEND_TOO_LARGE (the same, for a message that could never be delivered
 * within max_frame: answered 413). */
#define ADM_SEND_TOO_LARGE (-2)
int adm_send_parse(const json_t *body, uint32_t max_frame, struct adm_send *s, const char **field,
                   char *msg, size_t msglen) __attribute__((warn_unused_result));

/* From a qa_send exception ("ERROR:  qa_send: bad \"to\" address ..."):
 * copies the field it names (the first quoted word) into field, or "" when
 * none, and returns a pointer to the message from "qa_send:" on, or NULL
 * when err is not a qa_send exception. adm_send_store_too_large: whether
 * that message is qa_send's too_large refusal ("qa_send: too_large: ..."). */
const char *adm_send_store_error(const char *err, char *field, size_t fieldlen);
int adm_send_store_too_large(const char *m);

#endif
