/* Shared by the proto unit tests: sample frames of every QASync v1 type and
 * small encode/decode helpers with cmocka assertions. Include after cmocka.h. */
#ifndef TEST_PROTO_SAMPLES_H
#define TEST_PROTO_SAMPLES_H

#include <stdlib.h>
#include <string.h>

#include "proto/qs_codec.h"

static const struct qs_limits deflim = {QS_DEFAULT_MAX_FRAME, QS_DEFAULT_MAX_BATCH};

static const uint8_t ID_A[16] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
static const uint8_t ID_B[16] = {0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
                                 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff};

/* ---- helpers ---------------------------------------------------------- */

static inline void assert_str(struct qs_str s, const char *want)
{
	assert_int_equal(s.len, strlen(want));
	assert_memory_equal(s.ptr, want, s.len);
}

/* Encodes f, checks the length prefix, returns the frame with its prefix. */
static inline struct qs_buf encode(const struct qs_frame *f)
{
	struct qs_buf b = {0};
	uint32_t n = 0;

	assert_int_equal(qs_encode(f, &b), 0);
	assert_true(b.len >= QS_HEADER_LEN + 1);
	assert_int_equal(qs_check_header(b.data, QS_DEFAULT_MAX_FRAME, &n), QS_OK);
	assert_int_equal(n, b.len - QS_HEADER_LEN);
	return b;
}

static inline int decode_lim(const uint8_t *p, size_t n, const struct qs_limits *lim,
                             struct qs_frame *f, const char **why)
{
	*why = NULL;
	int rc = qs_decode(p, n, lim, f, why);
	if (rc != QS_OK)
		assert_non_null(*why);
	return rc;
}

static inline int decode(const uint8_t *p, size_t n, struct qs_frame *f, const char **why)
{
	return decode_lim(p, n, &deflim, f, why);
}

/* Decodes an encoded frame (prefix included) and expects success. */
static inline void decode_ok(const struct qs_buf *b, struct qs_frame *f)
{
	const char *why;
	int rc = decode(b->data + QS_HEADER_LEN, b->len - QS_HEADER_LEN, f, &why);
	if (rc != QS_OK)
		fail_msg("decode failed: %s", why);
}

static inline int decode_err(const uint8_t *p, size_t n, const char **why)
{
	struct qs_frame f;
	int rc = decode(p, n, &f, why);
	if (rc == QS_OK)
		qs_frame_release(&f);
	else
		assert_null(f.arena);
	return rc;
}

/* ---- sample frames of every type, shared by round trip and refusal tests */

static struct qs_prop props2[] = {
    {{"color", 5}, {"blue", 4}},
    {{"size", 4}, {"", 0}},
};
static struct qs_prop props1[] = {{{"k\xc3\xa9", 3}, {"v\xe2\x82\xac", 4}}};
static struct qs_server servers[] = {
    {{"ml1", 3}, {"tcpip(host=10.0.0.1;port=2439)", 30}},
    {{"ml-2.b_c", 8}, {"tls(host=gw2;port=2440)", 23}},
};
static struct qs_msg_out outs[2];
static struct qs_msg_in ins[2];
static struct qs_ack_entry acks[] = {{{0}, QS_R_STORED}, {{1}, QS_R_CONFLICT}};
static uint64_t seqs[] = {1, 0x8000000000000001ull, 42};
static struct qs_status_entry stats[] = {
    {{7}, QS_ST_RECEIVED}, {{8}, QS_ST_UNRECEIVABLE}, {{9}, QS_ST_EXPIRED}};

static inline void sample(enum qs_type t, struct qs_frame *f)
{
	memset(f, 0, sizeof(*f));
	f->type = t;
	memcpy(outs[0].id, ID_A, 16);
	outs[0].to = qs_str_c("bob\\inbox");
	outs[0].priority = 4;
	outs[0].expires_ms = 1700000000000ull;
	outs[0].props = (struct qs_props){2, props2};
	outs[0].body = (struct qs_bin){(const uint8_t *)"hello\0world", 11};
	memcpy(outs[1].id, ID_B, 16);
	outs[1].to = qs_str_c("carol\\q\xc3\xa9");
	outs[1].priority = 9;
	outs[1].props = (struct qs_props){1, props1};
	outs[1].body = (struct qs_bin){NULL, 0};
	ins[0].seq = 0x0102030405060708ull;
	memcpy(ins[0].id, ID_A, 16);
	ins[0].from = qs_str_c("alice");
	ins[0].queue = qs_str_c("inbox");
	ins[0].priority = 7;
	ins[0].created_ms = 1;
	ins[0].expires_ms = 2;
	ins[0].props = (struct qs_props){2, props2};
	ins[0].body = (struct qs_bin){(const uint8_t *)"xyz", 3};
	ins[1].seq = 99;
	memcpy(ins[1].id, ID_B, 16);
	ins[1].from = qs_str_c("server");
	ins[1].queue = qs_str_c("system");
	ins[1].props = (struct qs_props){0, NULL};

	switch (t) {
	case QS_HELLO:
		f->u.hello = (struct qs_hello){QS_VERSION,         qs_str_c("dev-01.A_b"),
		                               qs_str_c("s3cret"), qs_str_c("gw1.example:2439"),
		                               QS_FLAG_PERSIST,    1700000000123ull};
		break;
	case QS_WELCOME:
		f->u.welcome = (struct qs_welcome){
		    QS_VERSION, qs_str_c("ml-2.b_c"), qs_str_c("ml1"), 0, 2, servers, 1u << 20, 256,
		    30};
		break;
	case QS_UPLOAD:
		f->u.upload = (struct qs_upload){0xdeadbeef, 2, outs};
		break;
	case QS_UPLOAD_ACK:
		f->u.upload_ack = (struct qs_upload_ack){0xdeadbeef, 2, acks};
		break;
	case QS_FETCH:
		f->u.fetch = (struct qs_fetch){100, 65536};
		break;
	case QS_DELIVER:
		f->u.deliver = (struct qs_deliver){2, ins, 1};
		break;
	case QS_DELIVER_ACK:
		f->u.deliver_ack = (struct qs_deliver_ack){3, seqs};
		break;
	case QS_PUSH:
		f->u.push = (struct qs_push){0xfedcba9876543210ull, 5};
		break;
	case QS_PUSH_ACK:
		f->u.push_id = 0xfedcba9876543210ull;
		break;
	case QS_PING:
		f->u.nonce = 0x1122334455667788ull;
		break;
	case QS_PONG:
		f->u.nonce = 0x8877665544332211ull;
		break;
	case QS_ERROR:
		f->u.error =
		    (struct qs_error){QS_E_DRAINING, 1, qs_str_c("worker ml1 is draining")};
		break;
	case QS_BYE:
		break;
	case QS_REASSIGN:
		f->u.reassign = (struct qs_reassign){qs_str_c("ml-2.b_c"), 2, servers};
		break;
	case QS_STATUS:
		f->u.status = (struct qs_status){3, stats};
		break;
	}
}

#endif
