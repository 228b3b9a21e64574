/* Redis replies to JSON; see redis_json.h. */
#include "admin/redis_json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

json_t *adm_hash_from_reply(const redisReply *r)
{
	if (!r || r->type != REDIS_REPLY_ARRAY)
		return NULL;
	json_t *o = json_object();
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		json_t *s = json_stringn(v->str, v->len);
		char key[256];
		if (!s)
			continue;
		if (k->len >= sizeof(key) || memchr(k->str, 0, k->len)) {
			json_decref(s);
			continue;
		}
		memcpy(key, k->str, k->len);
		key[k->len] = 0;
		json_object_set_new(o, key, s);
	}
	return o;
}

json_t *adm_list_from_reply(const redisReply *r)
{
	if (!r || r->type != REDIS_REPLY_ARRAY)
		return NULL;
	json_t *a = json_array();
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		json_t *s = e->type == REDIS_REPLY_STRING ? json_stringn(e->str, e->len) : NULL;
		if (s)
			json_array_append_new(a, s);
	}
	return a;
}

long long adm_int_from_reply(const redisReply *r)
{
	if (!r || r->type != REDIS_REPLY_INTEGER)
		return -1;
	return r->integer;
}

json_t *adm_hash_str(const json_t *h, const char *key, int empty_is_null)
{
	const char *s = json_string_value(json_object_get(h, key));
	if (!s || (empty_is_null && !*s))
		return json_null();
	return json_string(s);
}

static int parse_ll(const char *s, long long *v)
{
	char *end;
	if (!s || !*s)
		return -1;
	errno = 0;
	*v = strtoll(s, &end, 10);
	return *end || errno ? -1 : 0;
}

json_t *adm_hash_int(const json_t *h, const char *key)
{
	long long v;
	if (parse_ll(json_string_value(json_object_get(h, key)), &v) != 0)
		return json_null();
	return json_integer(v);
}

json_t *adm_hash_num(const json_t *h, const char *key)
{
	const char *s = json_string_value(json_object_get(h, key));
	long long v;
	if (parse_ll(s, &v) == 0)
		return json_integer(v);
	char *end;
	if (!s || !*s)
		return json_null();
	double d = strtod(s, &end);
	if (*end || d != d || d > 1e300 || d < -1e300)
		return json_null();
	return json_real(d);
}

json_t *adm_hash_bool(const json_t *h, const char *key)
{
	const char *s = json_string_value(json_object_get(h, key));
	if (s && s[0] == '1' && !s[1])
		return json_true();
	if (s && s[0] == '0' && !s[1])
		return json_false();
	return json_null();
}
