/* QASync v1 identifier rules (protocol.md "Identifiers and values") and the
 * per-message acceptability check of UPLOAD. Pure functions over byte ranges;
 * used by the decoder and by the gateway when it judges each uploaded message. */
#include "proto/qs_codec.h"

#include <stdlib.h>
#include <string.h>

#define QS_QUEUE_MAX       128
#define QS_ADDRESS_MAX     255
#define QS_WORKER_NAME_MAX 64
#define QS_PROP_KEY_MAX    128
#define QS_PRIORITY_MAX    9

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. NUL is refused too, so a str can always be copied into a C string. */
int qs_valid_utf8(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		unsigned char lo = 0x80, hi = 0xBF; /* range of the first continuation byte */
		size_t more;

		if (c >= 0x01 && c <= 0x7F) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			more = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			more = 2;
			if (c == 0xE0)
				lo = 0xA0; /* overlong below U+0800 */
			else if (c == 0xED)
				hi = 0x9F; /* U+D800..U+DFFF are surrogates */
		} else if (c >= 0xF0 && c <= 0xF4) {
			more = 3;
			if (c == 0xF0)
				lo = 0x90; /* overlong below U+10000 */
			else if (c == 0xF4)
				hi = 0x8F; /* above U+10FFFF */
		} else {
			return 0; /* NUL, stray continuation, C0/C1 overlong lead, F5..FF */
		}
		if (n - i <= more)
			return 0;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return 0;
		for (size_t k = 2; k <= more; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xBF)
				return 0;
		i += more + 1;
	}
	return 1;
}

static int is_lower_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* agent id: 1..120 bytes of [A-Za-z0-9._-]. */
int qs_valid_agent_id(const char *p, size_t n)
{
	if (n < 1 || n > QS_AGENT_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (!is_lower_alnum(c) && !(c >= 'A' && c <= 'Z') && c != '.' && c != '_' &&
		    c != '-')
			return 0;
	}
	return 1;
}

/* worker name: 1..64 bytes of [a-z0-9._-]. */
int qs_valid_worker_name(const char *p, size_t n)
{
	if (n < 1 || n > QS_WORKER_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-')
			return 0;
	}
	return 1;
}

/* queue: 1..128 bytes of UTF-8, no backslash, no control characters (C0 and
 * DEL; every byte of a multi-byte sequence is >= 0x80, so a byte scan is exact). */
int qs_valid_queue(const char *p, size_t n)
{
	if (n < 1 || n > QS_QUEUE_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x20 || c == 0x7F || c == '\\')
			return 0;
	}
	return qs_valid_utf8(p, n);
}

int qs_split_address(struct qs_str to, struct qs_str *agent, struct qs_str *queue)
{
	const char *bs;
	struct qs_str a, q;

	agent->ptr = queue->ptr = NULL;
	agent->len = queue->len = 0;
	if (!to.ptr || to.len > QS_ADDRESS_MAX)
		return -1;
	bs = memchr(to.ptr, '\\', to.len);
	if (!bs)
		return -1;
	a.ptr = to.ptr;
	a.len = (uint16_t)(bs - to.ptr);
	q.ptr = bs + 1;
	q.len = (uint16_t)(to.len - a.len - 1);
	/* qs_valid_queue refuses a second backslash */
	if (!qs_valid_agent_id(a.ptr, a.len) || !qs_valid_queue(q.ptr, q.len))
		return -1;
	*agent = a;
	*queue = q;
	return 0;
}

static int str_eq(struct qs_str a, struct qs_str b)
{
	return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static int str_cmp(const void *x, const void *y)
{
	const struct qs_str *a = x, *b = y;
	size_t n = a->len < b->len ? a->len : b->len;
	int c = memcmp(a->ptr, b->ptr, n);

	if (c)
		return c;
	return (a->len > b->len) - (a->len < b->len);
}

/* Property keys compare byte for byte. A message may carry up to 65535
 * properties, so beyond a handful the keys are sorted rather than compared
 * pairwise (which would let one frame cost billions of comparisons). */
static int keys_unique(const struct qs_props *p)
{
	struct qs_str *keys;
	int unique = 1;

	if (p->n <= 16) {
		for (uint16_t i = 0; i < p->n; i++)
			for (uint16_t j = i + 1; j < p->n; j++)
				if (str_eq(p->v[i].key, p->v[j].key))
					return 0;
		return 1;
	}
	keys = malloc(sizeof(*keys) * p->n);
	if (!keys) {
		/* out of memory: still answer correctly, only slower */
		for (uint32_t i = 0; i < p->n; i++)
			for (uint32_t j = i + 1; j < p->n; j++)
				if (str_eq(p->v[i].key, p->v[j].key))
					return 0;
		return 1;
	}
	for (uint16_t i = 0; i < p->n; i++)
		keys[i] = p->v[i].key;
	qsort(keys, p->n, sizeof(*keys), str_cmp);
	for (uint16_t i = 1; i < p->n && unique; i++)
		unique = !str_eq(keys[i - 1], keys[i]);
	free(keys);
	return unique;
}

static int key_reserved(struct qs_str k)
{
	static const char prefix[] = "ias_";

	if (k.len < sizeof(prefix) - 1)
		return 0;
	for (size_t i = 0; i < sizeof(prefix) - 1; i++) {
		unsigned char c = (unsigned char)k.ptr[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (c != (unsigned char)prefix[i])
			return 0;
	}
	return 1;
}

int qs_msg_out_check(const struct qs_msg_out *m)
{
	struct qs_str agent, queue;

	if (qs_split_address(m->to, &agent, &queue) != 0)
		return QS_R_INVALID;
	if (queue.len == 6 && memcmp(queue.ptr, "system", 6) == 0)
		return QS_R_INVALID;
	if (m->priority > QS_PRIORITY_MAX)
		return QS_R_INVALID;
	if (m->props.n && !m->props.v)
		return QS_R_INVALID;
	for (uint16_t i = 0; i < m->props.n; i++) {
		struct qs_str k = m->props.v[i].key;
		if (k.len < 1 || k.len > QS_PROP_KEY_MAX || key_reserved(k))
			return QS_R_INVALID;
	}
	if (!keys_unique(&m->props))
		return QS_R_INVALID;
	return QS_R_STORED;
}
