/* libFuzzer target for the QASync v1 codec: an input is a length prefix and a
 * frame body. Every body the decoder accepts must re-encode to the very bytes
 * it came from (the encoding is canonical), decode again, and re-encode to the
 * same bytes; the decoder's derived fields (wire_len, props_raw) must agree
 * with the encoder's arithmetic. Any disagreement aborts. */
#include "proto/qs_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_frame: %s:%d: check failed: %s\n", __FILE__,         \
			        __LINE__, #cond);                                                  \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void check_props_raw(const struct qs_msg_out *m)
{
	struct qs_props p;

	CHECK(m->props_raw.len == qs_props_size(&m->props));
	CHECK(qs_decode_props(m->props_raw.ptr, m->props_raw.len, &p) == QS_OK);
	CHECK(p.n == m->props.n);
	for (uint16_t i = 0; i < p.n; i++) {
		CHECK(p.v[i].key.ptr == m->props.v[i].key.ptr);
		CHECK(p.v[i].value.len == m->props.v[i].value.len);
	}
	free(p.v);
}

/* What a decoded frame must satisfy beyond re-encoding. */
static void check_decoded(const struct qs_frame *f, size_t len, const struct qs_limits *lim)
{
	size_t sum = 0;

	switch (f->type) {
	case QS_HELLO:
		if (f->u.hello.version == QS_VERSION)
			CHECK(qs_valid_agent_id(f->u.hello.agent_id.ptr, f->u.hello.agent_id.len));
		CHECK((f->u.hello.flags & ~QS_FLAG_PERSIST) == 0);
		break;
	case QS_UPLOAD:
		CHECK(f->u.upload.count >= 1 && f->u.upload.count <= lim->max_batch);
		for (uint16_t i = 0; i < f->u.upload.count; i++) {
			const struct qs_msg_out *m = &f->u.upload.msgs[i];
			int r = qs_msg_out_check(m);
			CHECK(r == QS_R_STORED || r == QS_R_INVALID);
			CHECK(m->wire_len == qs_msg_out_size(m));
			check_props_raw(m);
			sum += m->wire_len;
		}
		CHECK(1 + 4 + 2 + sum == len);
		break;
	case QS_DELIVER:
		for (uint16_t i = 0; i < f->u.deliver.count; i++) {
			const struct qs_msg_in *m = &f->u.deliver.msgs[i];
			sum += qs_msg_in_size(m->from.len, m->queue.len, qs_props_size(&m->props),
			                      m->body.len);
		}
		CHECK(1 + 2 + sum + 1 == len);
		break;
	case QS_STATUS:
		for (uint16_t i = 0; i < f->u.status.count; i++) {
			uint8_t s = f->u.status.entries[i].status;
			CHECK(s == QS_ST_RECEIVED || s == QS_ST_UNRECEIVABLE || s == QS_ST_EXPIRED);
		}
		break;
	default:
		break;
	}
}

static void round_trip(const uint8_t *data, size_t len, const struct qs_limits *lim)
{
	/* an exact-size copy, so ASan reports any read past len */
	uint8_t *body = malloc(len ? len : 1);
	struct qs_limits relaxed = {UINT32_MAX, lim->max_batch};
	struct qs_frame f, g;
	struct qs_buf a = {0}, b = {0};
	const char *why = NULL;
	uint32_t n;
	int rc;

	CHECK(body);
	if (len)
		memcpy(body, data, len);
	rc = qs_decode(body, len, lim, &f, &why);
	if (rc != QS_OK) {
		CHECK(rc == QS_E_BAD_FRAME || rc == QS_E_TOO_LARGE);
		CHECK(why && *why);
		CHECK(f.arena == NULL);
		qs_frame_release(&f);
		free(body);
		return;
	}
	check_decoded(&f, len, lim);

	CHECK(qs_encode(&f, &a) == 0);
	CHECK(qs_check_header(a.data, UINT32_MAX, &n) == QS_OK);
	CHECK(n == a.len - QS_HEADER_LEN);
	/* canonical: the one exception is a HELLO of another version, decoded
	 * to its version alone and re-encoded with an empty v1 body */
	if (!(f.type == QS_HELLO && f.u.hello.version != QS_VERSION)) {
		CHECK(n == len);
		CHECK(memcmp(a.data + QS_HEADER_LEN, body, len) == 0);
	}

	rc = qs_decode(a.data + QS_HEADER_LEN, n, &relaxed, &g, &why);
	if (rc != QS_OK)
		fprintf(stderr, "fuzz_frame: re-decode failed: %s\n", why);
	CHECK(rc == QS_OK);
	CHECK(g.type == f.type);
	CHECK(qs_encode(&g, &b) == 0);
	CHECK(a.len == b.len);
	CHECK(memcmp(a.data, b.data, a.len) == 0);

	qs_frame_release(&g);
	qs_frame_release(&f);
	qs_frame_release(&f); /* idempotent */
	qs_buf_free(&a);
	qs_buf_free(&b);
	free(body);
}

/* The bytes as a stand-alone props block (what the store keeps): accepted
 * blocks re-encode to themselves. */
static void props_round_trip(const uint8_t *data, size_t len)
{
	struct qs_props p;
	struct qs_buf b = {0};

	if (qs_decode_props(data, len, &p) != QS_OK) {
		CHECK(p.v == NULL && p.n == 0);
		return;
	}
	CHECK(qs_props_size(&p) == len);
	CHECK(qs_encode_props(&p, &b) == 0);
	CHECK(b.len == len && memcmp(b.data, data, len) == 0);
	qs_buf_free(&b);
	free(p.v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct qs_limits small = {256, 2};
	static const struct qs_limits dflt = {QS_DEFAULT_MAX_FRAME, QS_DEFAULT_MAX_BATCH};
	const struct qs_limits *lims[] = {&small, &dflt};

	if (size < QS_HEADER_LEN)
		return 0;
	for (size_t i = 0; i < sizeof(lims) / sizeof(lims[0]); i++) {
		uint32_t len = 0;
		int rc = qs_check_header(data, lims[i]->max_frame, &len);

		CHECK(rc == QS_OK || rc == QS_E_BAD_FRAME || rc == QS_E_TOO_LARGE);
		CHECK(rc != QS_OK || (len >= 1 && len <= lims[i]->max_frame));
		if (rc == QS_OK && len <= size - QS_HEADER_LEN)
			round_trip(data + QS_HEADER_LEN, len, lims[i]);
	}
	/* the bytes after the prefix as one body whatever the prefix says, so a
	 * mutation need not keep the length in step to reach the decoder */
	round_trip(data + QS_HEADER_LEN, size - QS_HEADER_LEN, &dflt);
	props_round_trip(data + QS_HEADER_LEN, size - QS_HEADER_LEN);
	return 0;
}
