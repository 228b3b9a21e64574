/* POST /api/messages validation; see send.h. */
#include "admin/send.h"

#include "proto/qs_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAIL(f, ...)                                                                               \
	do {                                                                                       \
		*field = (f);                                                                      \
		snprintf(msg, msglen, __VA_ARGS__);                                                \
		return -1;                                                                         \
	} while (0)

int adm_send_parse(const json_t *body, uint32_t max_frame, struct adm_send *s, const char **field,
                   char *msg, size_t msglen)
{
	static const char *const known[] = {"to",         "body",  "from", "priority",
	                                    "expires_ms", "props", NULL};
	memset(s, 0, sizeof(*s));
	s->from = "server";
	s->priority = 4;
	s->max_frame = max_frame;

	const char *key;
	json_t *v;
	json_object_foreach((json_t *)body, key, v)
	{
		int ok = 0;
		for (int i = 0; known[i]; i++)
			ok |= strcmp(key, known[i]) == 0;
		if (!ok)
			FAIL(key,
			     "unknown field \"%s\" (fields: to, body, from, priority, expires_ms, "
			     "props)",
			     key);
	}

	json_t *to = json_object_get(body, "to");
	if (!to)
		FAIL("to", "\"to\" is required (\"AGENT\\\\QUEUE\")");
	if (!json_is_string(to))
		FAIL("to", "\"to\" must be a string \"AGENT\\\\QUEUE\"");
	s->to = json_string_value(to);
	size_t to_len = json_string_length(to);
	struct qs_str a, q, t = {s->to, (uint16_t)(to_len > 0xffff ? 0xffff : to_len)};
	if (to_len > 255 || qs_split_address(t, &a, &q) != 0)
		FAIL("to", "\"to\" must be AGENT\\QUEUE: an agent id (1..120 of [A-Za-z0-9._-]), a "
		           "backslash and a queue name (1..128 bytes, no control characters or "
		           "backslash)");
	if (q.len == 6 && memcmp(q.ptr, "system", 6) == 0)
		FAIL("to", "\"to\" may not name the system queue");

	json_t *b = json_object_get(body, "body");
	if (!b)
		FAIL("body", "\"body\" is required (a string)");
	if (!json_is_string(b))
		FAIL("body", "\"body\" must be a string");
	s->body = json_string_value(b);
	s->body_len = json_string_length(b);

	json_t *from = json_object_get(body, "from");
	if (from) {
		if (!json_is_string(from) || json_string_length(from) < 1 ||
		    json_string_length(from) > 120)
			FAIL("from", "\"from\" must be a string of 1..120 bytes");
		s->from = json_string_value(from);
	}

	json_t *prio = json_object_get(body, "priority");
	if (prio) {
		if (!json_is_integer(prio) || json_integer_value(prio) < 0 ||
		    json_integer_value(prio) > 9)
			FAIL("priority", "\"priority\" must be an integer 0..9");
		s->priority = (int)json_integer_value(prio);
	}

	json_t *exp = json_object_get(body, "expires_ms");
	if (exp) {
		if (!json_is_integer(exp) || json_integer_value(exp) < 0)
			FAIL("expires_ms", "\"expires_ms\" must be an integer >= 0 (ms since the "
			                   "epoch; 0: never)");
		s->expires_ms = json_integer_value(exp);
	}

	/* props: what a props block on the wire can carry (protocol.md). */
	size_t props_size = 2;
	json_t *props = json_object_get(body, "props");
	if (props) {
		if (!json_is_object(props))
			FAIL("props", "\"props\" must be an object of strings");
		/* delivery adds ias_Originator and ias_DeliveryCount to the u16 count */
		if (json_object_size(props) > 0xffff - 2)
			FAIL("props", "\"props\" has too many entries (at most 65533)");
		json_object_foreach(props, key, v)
		{
			size_t klen = strlen(key);
			if (!json_is_string(v))
				FAIL("props", "\"props\": the value of \"%s\" must be a string",
				     key);
			if (klen < 1 || klen > 128 || strncasecmp(key, "ias_", 4) == 0)
				FAIL("props",
				     "\"props\": bad key \"%s\" (1..128 bytes, not ias_...)", key);
			if (memchr(key, 0, klen) || json_string_length(v) > 0xffff ||
			    memchr(json_string_value(v), 0, json_string_length(v)))
				FAIL("props",
				     "\"props\": the value of \"%s\" is too long or holds NUL",
				     key);
			props_size += 2 + klen + 2 + json_string_length(v);
		}
	}

	/* The too_large rule of an UPLOAD (gateway/requests.c): the message as
	 * an agent would send it must leave room for what delivery adds. */
	size_t wire = 16 + 2 + to_len + 1 + 8 + props_size + 4 + s->body_len;
	if (max_frame <= QS_DELIVER_OVERHEAD || wire > max_frame - QS_DELIVER_OVERHEAD) {
		*field = "body";
		snprintf(msg, msglen,
		         "the message is too large: %zu bytes on the wire, over max_frame (%u) "
		         "less %d",
		         wire, (unsigned)max_frame, QS_DELIVER_OVERHEAD);
		return ADM_SEND_TOO_LARGE;
	}

	s->props_json = props ? json_dumps(props, JSON_COMPACT) : strdup("{}");
	if (!s->props_json)
		FAIL("props", "out of memory");
	return 0;
}

const char *adm_send_store_error(const char *err, char *field, size_t fieldlen)
{
	field[0] = 0;
	const char *m = err ? strstr(err, "qa_send:") : NULL;
	if (!m)
		return NULL;
	const char *q1 = strchr(m, '"');
	const char *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
	if (q2 && (size_t)(q2 - q1 - 1) < fieldlen) {
		memcpy(field, q1 + 1, (size_t)(q2 - q1 - 1));
		field[q2 - q1 - 1] = 0;
	}
	return m;
}

int adm_send_store_too_large(const char *m)
{
	return m && strncmp(m, "qa_send: too_large", 18) == 0;
}
