/* QASync v1 frame encoder and the growable output buffer it writes into.
 * The encoder writes what it is given: it enforces the encoding (lengths that
 * fit their fields, arrays that are present) but not the protocol's value
 * rules, which are the sender's business (and the decoder's on the far side). */
#include "proto/qs_codec.h"

#include <stdlib.h>
#include <string.h>

void qs_buf_free(struct qs_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

int qs_buf_reserve(struct qs_buf *b, size_t extra)
{
	size_t cap;
	uint8_t *data;

	if (extra <= b->cap - b->len)
		return 0;
	if (extra > SIZE_MAX - b->len)
		return -1;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra)
		cap = cap > SIZE_MAX / 2 ? b->len + extra : cap * 2;
	data = realloc(b->data, cap);
	if (!data)
		return -1;
	b->data = data;
	b->cap = cap;
	return 0;
}

/* Encoder state. The first failure sticks and later writes do nothing, so the
 * frame encoders write straight through and are checked once at the end. */
struct enc {
	struct qs_buf *b;
	size_t start;   /* b->len when the frame began: rolled back to on failure */
	uint64_t limit; /* most bytes this encoding may take from start */
	int failed;
};

static void put(struct enc *e, const void *p, size_t n)
{
	if (e->failed || n == 0)
		return;
	/* refuse before allocating, so an absurd bin cannot reserve gigabytes */
	if (!p || (uint64_t)(e->b->len - e->start) + n > e->limit || qs_buf_reserve(e->b, n)) {
		e->failed = 1;
		return;
	}
	memcpy(e->b->data + e->b->len, p, n);
	e->b->len += n;
}

static void put_u8(struct enc *e, uint8_t v)
{
	put(e, &v, 1);
}

static void put_u16(struct enc *e, uint16_t v)
{
	uint8_t q[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	put(e, q, 2);
}

static void put_u32(struct enc *e, uint32_t v)
{
	uint8_t q[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	put(e, q, 4);
}

static void put_u64(struct enc *e, uint64_t v)
{
	put_u32(e, (uint32_t)(v >> 32));
	put_u32(e, (uint32_t)v);
}

/* struct qs_str's u16 length cannot express a string over 65535 bytes, so the
 * str length rule holds by construction. */
static void put_str(struct enc *e, struct qs_str s)
{
	put_u16(e, s.len);
	put(e, s.ptr, s.len);
}

static void put_bin(struct enc *e, struct qs_bin b)
{
	put_u32(e, b.len);
	put(e, b.ptr, b.len);
}

/* An array of n entries must be present when n > 0. */
static int have(struct enc *e, uint32_t n, const void *v)
{
	if (n && !v)
		e->failed = 1;
	return !e->failed;
}

static void put_props(struct enc *e, const struct qs_props *p)
{
	put_u16(e, p->n);
	if (!have(e, p->n, p->v))
		return;
	for (uint16_t i = 0; i < p->n; i++) {
		put_str(e, p->v[i].key);
		put_str(e, p->v[i].value);
	}
}

static void put_servers(struct enc *e, uint16_t n, const struct qs_server *v)
{
	put_u16(e, n);
	if (!have(e, n, v))
		return;
	for (uint16_t i = 0; i < n; i++) {
		put_str(e, v[i].name);
		put_str(e, v[i].stream);
	}
}

static void put_msg_out(struct enc *e, const struct qs_msg_out *m)
{
	put(e, m->id, 16);
	put_str(e, m->to);
	put_u8(e, m->priority);
	put_u64(e, m->expires_ms);
	put_props(e, &m->props);
	put_bin(e, m->body);
}

static void put_msg_in(struct enc *e, const struct qs_msg_in *m)
{
	put_u64(e, m->seq);
	put(e, m->id, 16);
	put_str(e, m->from);
	put_str(e, m->queue);
	put_u8(e, m->priority);
	put_u64(e, m->created_ms);
	put_u64(e, m->expires_ms);
	put_props(e, &m->props);
	put_bin(e, m->body);
}

static void put_upload(struct enc *e, const struct qs_upload *u)
{
	put_u32(e, u->batch);
	put_u16(e, u->count);
	if (!have(e, u->count, u->msgs))
		return;
	for (uint16_t i = 0; i < u->count; i++)
		put_msg_out(e, &u->msgs[i]);
}

static void put_upload_ack(struct enc *e, const struct qs_upload_ack *a)
{
	put_u32(e, a->batch);
	put_u16(e, a->count);
	if (!have(e, a->count, a->entries))
		return;
	for (uint16_t i = 0; i < a->count; i++) {
		put(e, a->entries[i].id, 16);
		put_u8(e, a->entries[i].result);
	}
}

static void put_deliver(struct enc *e, const struct qs_deliver *v)
{
	put_u16(e, v->count);
	if (!have(e, v->count, v->msgs))
		return;
	for (uint16_t i = 0; i < v->count; i++)
		put_msg_in(e, &v->msgs[i]);
	put_u8(e, v->more);
}

static void put_deliver_ack(struct enc *e, const struct qs_deliver_ack *a)
{
	put_u16(e, a->count);
	if (!have(e, a->count, a->seqs))
		return;
	for (uint16_t i = 0; i < a->count; i++)
		put_u64(e, a->seqs[i]);
}

static void put_status(struct enc *e, const struct qs_status *s)
{
	put_u16(e, s->count);
	if (!have(e, s->count, s->entries))
		return;
	for (uint16_t i = 0; i < s->count; i++) {
		put(e, s->entries[i].id, 16);
		put_u8(e, s->entries[i].status);
	}
}

static void put_payload(struct enc *e, const struct qs_frame *f)
{
	switch (f->type) {
	case QS_HELLO:
		put_u16(e, f->u.hello.version);
		put_str(e, f->u.hello.agent_id);
		put_str(e, f->u.hello.token);
		put_str(e, f->u.hello.primary);
		put_u8(e, f->u.hello.flags);
		put_u64(e, f->u.hello.now_ms);
		break;
	case QS_WELCOME:
		put_u16(e, f->u.welcome.version);
		put_str(e, f->u.welcome.server);
		put_str(e, f->u.welcome.primary);
		put_u8(e, f->u.welcome.on_primary);
		put_servers(e, f->u.welcome.n_servers, f->u.welcome.servers);
		put_u32(e, f->u.welcome.max_frame);
		put_u16(e, f->u.welcome.max_batch);
		put_u32(e, f->u.welcome.heartbeat_s);
		break;
	case QS_UPLOAD:
		put_upload(e, &f->u.upload);
		break;
	case QS_UPLOAD_ACK:
		put_upload_ack(e, &f->u.upload_ack);
		break;
	case QS_FETCH:
		put_u16(e, f->u.fetch.max_count);
		put_u32(e, f->u.fetch.max_bytes);
		break;
	case QS_DELIVER:
		put_deliver(e, &f->u.deliver);
		break;
	case QS_DELIVER_ACK:
		put_deliver_ack(e, &f->u.deliver_ack);
		break;
	case QS_PUSH:
		put_u64(e, f->u.push.push_id);
		put_u32(e, f->u.push.pending);
		break;
	case QS_PUSH_ACK:
		put_u64(e, f->u.push_id);
		break;
	case QS_PING:
	case QS_PONG:
		put_u64(e, f->u.nonce);
		break;
	case QS_ERROR:
		put_u16(e, f->u.error.code);
		put_u8(e, f->u.error.retryable);
		put_str(e, f->u.error.text);
		break;
	case QS_BYE:
		break;
	case QS_REASSIGN:
		put_str(e, f->u.reassign.primary);
		put_servers(e, f->u.reassign.n_servers, f->u.reassign.servers);
		break;
	case QS_STATUS:
		put_status(e, &f->u.status);
		break;
	default:
		e->failed = 1;
	}
}

int qs_encode(const struct qs_frame *f, struct qs_buf *out)
{
	struct enc e = {out, out->len, (uint64_t)QS_HEADER_LEN + UINT32_MAX, 0};
	uint8_t *hdr;
	uint32_t n;

	put_u32(&e, 0); /* the length, filled in below */
	put_u8(&e, (uint8_t)f->type);
	put_payload(&e, f);
	if (e.failed) {
		out->len = e.start;
		return -1;
	}
	n = (uint32_t)(out->len - e.start - QS_HEADER_LEN);
	hdr = out->data + e.start;
	hdr[0] = (uint8_t)(n >> 24);
	hdr[1] = (uint8_t)(n >> 16);
	hdr[2] = (uint8_t)(n >> 8);
	hdr[3] = (uint8_t)n;
	return 0;
}

int qs_encode_props(const struct qs_props *p, struct qs_buf *out)
{
	struct enc e = {out, out->len, UINT32_MAX, 0};

	put_props(&e, p);
	if (e.failed) {
		out->len = e.start;
		return -1;
	}
	return 0;
}
