/* QASync v1 frame decoder and frame helpers (protocol.md "Framing", "Frames").
 *
 * Decoding runs twice over the same bytes. The first pass validates everything
 * and adds up the arena the frame's arrays need (msgs, props entries, servers,
 * seqs, entries), decoding array entries into a scratch variable; the second
 * pass, only when an array is present, decodes the same bytes into one block
 * of exactly that size. So a frame owns at most one allocation, its pointers
 * never move, and nothing is allocated for bytes that are not there. */
#include "proto/qs_codec.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

/* Smallest encodings of repeated entries: a count field is refused as soon as
 * the bytes left cannot hold that many entries, before any allocation. */
#define MIN_PROP         4  /* str key, str value */
#define MIN_SERVER       4  /* str name, str stream */
#define MIN_MSG_OUT      33 /* id, str, u8, u64, props, bin */
#define MIN_MSG_IN       51 /* u64, id, str, str, u8, u64, u64, props, bin */
#define MIN_ACK_ENTRY    17 /* id, u8 */
#define MIN_STATUS_ENTRY 17 /* id, u8 */
#define MIN_SEQ          8  /* u64 */

/* Reasons every frame type can fail for, spelled per type so that an ERROR
 * text names the frame it refuses. */
enum why_reason { W_TRUNCATED, W_TRAILING, W_UTF8, W_COUNT, W_WORKER, W__COUNT };

#define WHY_ROW(T)                                                                                 \
	{                                                                                          \
		T ": payload truncated", T ": trailing bytes after payload",                       \
		    T ": string is not valid UTF-8", T ": count exceeds the bytes in the frame",   \
		    T ": not a valid worker name"                                                  \
	}

static const char *const why_text[][W__COUNT] = {
    [0] = WHY_ROW("props"),
    [QS_HELLO] = WHY_ROW("HELLO"),
    [QS_WELCOME] = WHY_ROW("WELCOME"),
    [QS_UPLOAD] = WHY_ROW("UPLOAD"),
    [QS_UPLOAD_ACK] = WHY_ROW("UPLOAD_ACK"),
    [QS_FETCH] = WHY_ROW("FETCH"),
    [QS_DELIVER] = WHY_ROW("DELIVER"),
    [QS_DELIVER_ACK] = WHY_ROW("DELIVER_ACK"),
    [QS_PUSH] = WHY_ROW("PUSH"),
    [QS_PUSH_ACK] = WHY_ROW("PUSH_ACK"),
    [QS_PING] = WHY_ROW("PING"),
    [QS_PONG] = WHY_ROW("PONG"),
    [QS_ERROR] = WHY_ROW("ERROR"),
    [QS_BYE] = WHY_ROW("BYE"),
    [QS_REASSIGN] = WHY_ROW("REASSIGN"),
    [QS_STATUS] = WHY_ROW("STATUS"),
};

/* Decoder state. The first error sticks: later reads return zeros and record
 * nothing, so frame decoders read straight through and are checked once. */
struct dec {
	const uint8_t *p;   /* next unread byte */
	const uint8_t *end; /* one past the payload */
	int type;           /* frame type, for why_text; 0 for a bare props block */
	int err;            /* QS_OK or the first error */
	const char *why;
	int validated;  /* second pass: the first one already checked every str */
	uint8_t *arena; /* NULL in the sizing pass */
	size_t used;    /* arena bytes handed out (sizing pass: needed) */
	size_t cap;
};

static void dec_init(struct dec *d, const uint8_t *p, size_t n, int type)
{
	memset(d, 0, sizeof(*d));
	d->p = p;
	d->end = p + n;
	d->type = type;
}

static void fail(struct dec *d, int err, const char *why)
{
	if (d->err)
		return;
	d->err = err;
	d->why = why;
}

static void fail_r(struct dec *d, enum why_reason r)
{
	fail(d, QS_E_BAD_FRAME, why_text[d->type][r]);
}

static size_t left(const struct dec *d)
{
	return (size_t)(d->end - d->p);
}

static const uint8_t *take(struct dec *d, size_t n)
{
	const uint8_t *q = d->p;

	if (d->err)
		return NULL;
	if (left(d) < n) {
		fail_r(d, W_TRUNCATED);
		return NULL;
	}
	d->p += n;
	return q;
}

static uint8_t get_u8(struct dec *d)
{
	const uint8_t *q = take(d, 1);
	return q ? q[0] : 0;
}

static uint16_t get_u16(struct dec *d)
{
	const uint8_t *q = take(d, 2);
	return q ? (uint16_t)(q[0] << 8 | q[1]) : 0;
}

static uint32_t get_u32(struct dec *d)
{
	const uint8_t *q = take(d, 4);
	return q ? (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3] : 0;
}

static uint64_t get_u64(struct dec *d)
{
	uint64_t hi = get_u32(d);
	return hi << 32 | get_u32(d);
}

static void get_id(struct dec *d, uint8_t id[16])
{
	const uint8_t *q = take(d, 16);
	if (q)
		memcpy(id, q, 16);
}

static struct qs_str get_str(struct dec *d)
{
	struct qs_str s = {NULL, 0};
	uint16_t n = get_u16(d);
	const uint8_t *q = take(d, n);

	if (!q)
		return s;
	if (!d->validated && !qs_valid_utf8((const char *)q, n)) {
		fail_r(d, W_UTF8);
		return s;
	}
	s.ptr = (const char *)q;
	s.len = n;
	return s;
}

static struct qs_bin get_bin(struct dec *d)
{
	struct qs_bin b = {NULL, 0};
	uint32_t n = get_u32(d);
	const uint8_t *q = take(d, n);

	if (q) {
		b.ptr = q;
		b.len = n;
	}
	return b;
}

/* A 0/1 byte. */
static uint8_t get_flag(struct dec *d, const char *why)
{
	uint8_t v = get_u8(d);
	if (v > 1)
		fail(d, QS_E_BAD_FRAME, why);
	return v;
}

/* Refuses a count that the remaining bytes cannot hold. */
static uint16_t check_count(struct dec *d, uint16_t n, size_t min_entry)
{
	if (!d->err && n > left(d) / min_entry)
		fail_r(d, W_COUNT);
	return d->err ? 0 : n;
}

static uint16_t get_count(struct dec *d, size_t min_entry)
{
	return check_count(d, get_u16(d), min_entry);
}

/* n entries of size bytes from the frame's arena: NULL in the sizing pass
 * (the caller decodes into a scratch entry), and for n == 0. */
static void *arena_take(struct dec *d, size_t n, size_t size)
{
	const size_t align = alignof(max_align_t);
	size_t bytes = (n * size + align - 1) & ~(align - 1);
	void *p = NULL;

	if (d->err || n == 0)
		return NULL;
	if (d->arena) {
		if (bytes > d->cap - d->used) {
			fail(d, QS_E_INTERNAL, "decoder arena overrun");
			return NULL;
		}
		p = d->arena + d->used;
	}
	d->used += bytes;
	return p;
}

static void dec_props(struct dec *d, struct qs_props *p)
{
	struct qs_prop scratch;

	p->n = get_count(d, MIN_PROP);
	p->v = arena_take(d, p->n, sizeof(*p->v));
	for (uint16_t i = 0; i < p->n && !d->err; i++) {
		struct qs_prop *e = p->v ? &p->v[i] : &scratch;
		e->key = get_str(d);
		e->value = get_str(d);
	}
}

static void dec_worker_name(struct dec *d, struct qs_str *s, int may_be_empty)
{
	*s = get_str(d);
	if (!d->err && !(may_be_empty && s->len == 0) && !qs_valid_worker_name(s->ptr, s->len))
		fail_r(d, W_WORKER);
}

/* u16 n, n x (str name, str stream), as in WELCOME and REASSIGN. */
static void dec_servers(struct dec *d, uint16_t *n, struct qs_server **v)
{
	struct qs_server scratch;

	*n = get_count(d, MIN_SERVER);
	*v = arena_take(d, *n, sizeof(**v));
	for (uint16_t i = 0; i < *n && !d->err; i++) {
		struct qs_server *e = *v ? &(*v)[i] : &scratch;
		dec_worker_name(d, &e->name, 0);
		e->stream = get_str(d);
	}
}

/* A HELLO of another version is decoded no further than its version, so the
 * gateway can answer `version` even when a future layout follows. */
static void dec_hello(struct dec *d, struct qs_hello *h)
{
	h->version = get_u16(d);
	if (!d->err && h->version != QS_VERSION) {
		d->p = d->end;
		return;
	}
	h->agent_id = get_str(d);
	if (!d->err && !qs_valid_agent_id(h->agent_id.ptr, h->agent_id.len))
		fail(d, QS_E_BAD_FRAME, "HELLO: agent id is not 1..120 of [A-Za-z0-9._-]");
	h->token = get_str(d);
	h->primary = get_str(d);
	h->flags = get_u8(d);
	if (h->flags & ~QS_FLAG_PERSIST)
		fail(d, QS_E_BAD_FRAME, "HELLO: unknown flag bits");
	h->now_ms = get_u64(d);
}

static void dec_welcome(struct dec *d, struct qs_welcome *w)
{
	w->version = get_u16(d);
	dec_worker_name(d, &w->server, 0);
	dec_worker_name(d, &w->primary, 1); /* "" when unresolved */
	w->on_primary = get_flag(d, "WELCOME: on_primary is not 0 or 1");
	dec_servers(d, &w->n_servers, &w->servers);
	w->max_frame = get_u32(d);
	w->max_batch = get_u16(d);
	w->heartbeat_s = get_u32(d);
}

static void dec_msg_out(struct dec *d, struct qs_msg_out *m)
{
	const uint8_t *start = d->p, *props;

	get_id(d, m->id);
	m->to = get_str(d);
	m->priority = get_u8(d);
	m->expires_ms = get_u64(d);
	props = d->p;
	dec_props(d, &m->props);
	m->props_raw.ptr = props;
	m->props_raw.len = (uint32_t)(d->p - props);
	m->body = get_bin(d);
	m->wire_len = (uint32_t)(d->p - start);
}

static void dec_upload(struct dec *d, const struct qs_limits *lim, struct qs_upload *u)
{
	struct qs_msg_out scratch;
	uint16_t n;

	u->batch = get_u32(d);
	n = get_u16(d);
	if (!d->err && n == 0)
		fail(d, QS_E_BAD_FRAME, "UPLOAD: count is 0");
	if (!d->err && n > lim->max_batch)
		fail(d, QS_E_TOO_LARGE, "UPLOAD: count over max_batch");
	u->count = check_count(d, n, MIN_MSG_OUT);
	u->msgs = arena_take(d, u->count, sizeof(*u->msgs));
	for (uint16_t i = 0; i < u->count && !d->err; i++)
		dec_msg_out(d, u->msgs ? &u->msgs[i] : &scratch);
}

static void dec_upload_ack(struct dec *d, struct qs_upload_ack *a)
{
	struct qs_ack_entry scratch;

	a->batch = get_u32(d);
	a->count = get_count(d, MIN_ACK_ENTRY);
	a->entries = arena_take(d, a->count, sizeof(*a->entries));
	for (uint16_t i = 0; i < a->count && !d->err; i++) {
		struct qs_ack_entry *e = a->entries ? &a->entries[i] : &scratch;
		get_id(d, e->id);
		e->result = get_u8(d);
		if (e->result > QS_R_CONFLICT)
			fail(d, QS_E_BAD_FRAME, "UPLOAD_ACK: unknown result");
	}
}

static void dec_msg_in(struct dec *d, struct qs_msg_in *m)
{
	m->seq = get_u64(d);
	get_id(d, m->id);
	m->from = get_str(d);
	m->queue = get_str(d);
	m->priority = get_u8(d);
	m->created_ms = get_u64(d);
	m->expires_ms = get_u64(d);
	dec_props(d, &m->props);
	m->body = get_bin(d);
}

static void dec_deliver(struct dec *d, struct qs_deliver *v)
{
	struct qs_msg_in scratch;

	v->count = get_count(d, MIN_MSG_IN);
	v->msgs = arena_take(d, v->count, sizeof(*v->msgs));
	for (uint16_t i = 0; i < v->count && !d->err; i++)
		dec_msg_in(d, v->msgs ? &v->msgs[i] : &scratch);
	v->more = get_flag(d, "DELIVER: more is not 0 or 1");
}

static void dec_deliver_ack(struct dec *d, struct qs_deliver_ack *a)
{
	uint64_t scratch;

	a->count = get_count(d, MIN_SEQ);
	a->seqs = arena_take(d, a->count, sizeof(*a->seqs));
	for (uint16_t i = 0; i < a->count && !d->err; i++)
		*(a->seqs ? &a->seqs[i] : &scratch) = get_u64(d);
}

static void dec_status(struct dec *d, struct qs_status *s)
{
	struct qs_status_entry scratch;

	s->count = get_count(d, MIN_STATUS_ENTRY);
	s->entries = arena_take(d, s->count, sizeof(*s->entries));
	for (uint16_t i = 0; i < s->count && !d->err; i++) {
		struct qs_status_entry *e = s->entries ? &s->entries[i] : &scratch;
		get_id(d, e->id);
		e->status = get_u8(d);
		if (!d->err && e->status != QS_ST_RECEIVED && e->status != QS_ST_UNRECEIVABLE &&
		    e->status != QS_ST_EXPIRED)
			fail(d, QS_E_BAD_FRAME, "STATUS: status is not 60, 50 or 30");
	}
}

static void dec_payload(struct dec *d, const struct qs_limits *lim, struct qs_frame *f)
{
	switch (f->type) {
	case QS_HELLO:
		dec_hello(d, &f->u.hello);
		break;
	case QS_WELCOME:
		dec_welcome(d, &f->u.welcome);
		break;
	case QS_UPLOAD:
		dec_upload(d, lim, &f->u.upload);
		break;
	case QS_UPLOAD_ACK:
		dec_upload_ack(d, &f->u.upload_ack);
		break;
	case QS_FETCH:
		f->u.fetch.max_count = get_u16(d);
		f->u.fetch.max_bytes = get_u32(d);
		break;
	case QS_DELIVER:
		dec_deliver(d, &f->u.deliver);
		break;
	case QS_DELIVER_ACK:
		dec_deliver_ack(d, &f->u.deliver_ack);
		break;
	case QS_PUSH:
		f->u.push.push_id = get_u64(d);
		f->u.push.pending = get_u32(d); /* a hint: 0 is tolerated */
		break;
	case QS_PUSH_ACK:
		f->u.push_id = get_u64(d);
		break;
	case QS_PING:
	case QS_PONG:
		f->u.nonce = get_u64(d);
		break;
	case QS_ERROR:
		f->u.error.code = get_u16(d); /* unknown codes pass: a newer server may add some */
		f->u.error.retryable = get_flag(d, "ERROR: retryable is not 0 or 1");
		f->u.error.text = get_str(d);
		break;
	case QS_BYE:
		break;
	case QS_REASSIGN:
		dec_worker_name(d, &f->u.reassign.primary, 0);
		dec_servers(d, &f->u.reassign.n_servers, &f->u.reassign.servers);
		break;
	case QS_STATUS:
		dec_status(d, &f->u.status);
		break;
	}
	if (!d->err && d->p != d->end)
		fail_r(d, W_TRAILING);
}

static int refuse(const char **why, int err, const char *text)
{
	if (why)
		*why = text;
	return err;
}

int qs_decode(const uint8_t *buf, size_t len, const struct qs_limits *lim, struct qs_frame *f,
              const char **why)
{
	static const struct qs_limits defaults = {QS_DEFAULT_MAX_FRAME, QS_DEFAULT_MAX_BATCH};
	struct dec d;
	uint8_t *arena;
	size_t need;

	memset(f, 0, sizeof(*f));
	if (!lim)
		lim = &defaults;
	if (len == 0 || !buf)
		return refuse(why, QS_E_BAD_FRAME, "empty frame");
	if (len > lim->max_frame)
		return refuse(why, QS_E_TOO_LARGE, "frame longer than max_frame");
	if (!qs_type_name(buf[0]))
		return refuse(why, QS_E_BAD_FRAME, "unknown frame type");

	f->type = buf[0];
	dec_init(&d, buf + 1, len - 1, buf[0]);
	dec_payload(&d, lim, f);
	if (d.err) {
		memset(f, 0, sizeof(*f));
		return refuse(why, d.err, d.why);
	}
	if (d.used == 0)
		return QS_OK; /* no arrays: every pointer is into buf already */

	need = d.used;
	arena = malloc(need);
	if (!arena) {
		memset(f, 0, sizeof(*f));
		return refuse(why, QS_E_INTERNAL, "out of memory");
	}
	memset(f, 0, sizeof(*f));
	f->type = buf[0];
	dec_init(&d, buf + 1, len - 1, buf[0]);
	d.validated = 1;
	d.arena = arena;
	d.cap = need;
	dec_payload(&d, lim, f);
	if (d.err) { /* cannot happen: same bytes as the first pass */
		free(arena);
		memset(f, 0, sizeof(*f));
		return refuse(why, d.err, d.why);
	}
	f->arena = arena;
	return QS_OK;
}

void qs_frame_release(struct qs_frame *f)
{
	if (!f)
		return;
	free(f->arena);
	memset(f, 0, sizeof(*f)); /* no pointer into the freed arena survives */
}

int qs_check_header(const uint8_t hdr[QS_HEADER_LEN], uint32_t max_frame, uint32_t *len)
{
	uint32_t n =
	    (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];

	*len = n;
	if (n == 0)
		return QS_E_BAD_FRAME;
	if (n > max_frame)
		return QS_E_TOO_LARGE;
	return QS_OK;
}

int qs_decode_props(const uint8_t *buf, size_t len, struct qs_props *p)
{
	const size_t align = alignof(max_align_t);
	struct dec d;
	uint8_t *arena = NULL;
	uint16_t n;

	memset(p, 0, sizeof(*p));
	if (len < 2 || !buf)
		return QS_E_BAD_FRAME;
	/* the block is self-contained: size its one array from the count, then
	 * decode with validation on */
	n = (uint16_t)(buf[0] << 8 | buf[1]);
	if (n > (len - 2) / MIN_PROP)
		return QS_E_BAD_FRAME;
	dec_init(&d, buf, len, 0);
	if (n) {
		d.cap = (n * sizeof(struct qs_prop) + align - 1) & ~(align - 1);
		arena = malloc(d.cap);
		if (!arena)
			return QS_E_INTERNAL;
		d.arena = arena;
	}
	dec_props(&d, p);
	if (!d.err && d.p != d.end)
		fail_r(&d, W_TRAILING);
	if (d.err) {
		free(arena);
		memset(p, 0, sizeof(*p));
		return d.err;
	}
	return QS_OK;
}

size_t qs_props_size(const struct qs_props *p)
{
	size_t n = 2;

	for (uint16_t i = 0; p->v && i < p->n; i++)
		n += 4 + (size_t)p->v[i].key.len + p->v[i].value.len;
	return n;
}

size_t qs_msg_in_size(size_t from_len, size_t queue_len, size_t props_len, size_t body_len)
{
	/* seq, id, str from, str queue, priority, created, expires, props, bin body */
	return 8 + 16 + 2 + from_len + 2 + queue_len + 1 + 8 + 8 + props_len + 4 + body_len;
}

size_t qs_msg_out_size(const struct qs_msg_out *m)
{
	/* id, str to, priority, expires, props, bin body */
	return 16 + 2 + (size_t)m->to.len + 1 + 8 + qs_props_size(&m->props) + 4 + m->body.len;
}

static const struct {
	const char *name;
	int retryable;
} err_table[QS_E_END] = {
    /* index 0, QS_OK, is never sent */
    [QS_OK] = {"ok", 0},
#define QS_E_ROW(e, code, name, retryable) [QS_E_##e] = {name, retryable},
    QS_ERRORS(QS_E_ROW)
#undef QS_E_ROW
};

/* Codes 1..QS_E_END-1 with none missing or repeated: as many entries as the
 * last code, which QS_E_END follows. */
#define QS_E_ONE(e, code, name, retryable) +1
_Static_assert(0 QS_ERRORS(QS_E_ONE) == QS_E_END - 1, "QS_ERRORS codes are not 1..N");
#undef QS_E_ONE

const char *qs_err_name(int code)
{
	return code >= 0 && code < QS_E_END ? err_table[code].name : "unknown";
}

int qs_err_retryable(int code)
{
	return code > 0 && code < QS_E_END ? err_table[code].retryable : 0;
}

static const char *const type_names[] = {
    [QS_HELLO] = "HELLO",
    [QS_WELCOME] = "WELCOME",
    [QS_UPLOAD] = "UPLOAD",
    [QS_UPLOAD_ACK] = "UPLOAD_ACK",
    [QS_FETCH] = "FETCH",
    [QS_DELIVER] = "DELIVER",
    [QS_DELIVER_ACK] = "DELIVER_ACK",
    [QS_PUSH] = "PUSH",
    [QS_PUSH_ACK] = "PUSH_ACK",
    [QS_PING] = "PING",
    [QS_PONG] = "PONG",
    [QS_ERROR] = "ERROR",
    [QS_BYE] = "BYE",
    [QS_REASSIGN] = "REASSIGN",
    [QS_STATUS] = "STATUS",
};

const char *qs_type_name(int type)
{
	if (type < 0 || type >= (int)(sizeof(type_names) / sizeof(type_names[0])))
		return NULL;
	return type_names[type]; /* NULL for 0 */
}
