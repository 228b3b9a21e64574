/* Unit tests of the QASync v1 frame codec (proto/qs_codec.c, proto/qs_encode.c):
 * byte-exact layouts written by hand from protocol.md, round trips of all 15
 * frame types, arena ownership, encoder refusals and the name tables. The
 * decoder's refusals are in test_proto_reject.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_proto_samples.h"

/* ---- byte-exact layouts (hand-written from protocol.md) ------------------- */

static void test_hello_bytes(void **state)
{
	static const uint8_t want[] = {
	    0x00, 0x00, 0x00, 0x18,                         /* length: 24 */
	    0x01,                                           /* HELLO */
	    0x00, 0x01,                                     /* version 1 */
	    0x00, 0x03, 'a',  'g',  '1',                    /* agent_id "ag1" */
	    0x00, 0x02, 't',  'k',                          /* token "tk" */
	    0x00, 0x01, 'p',                                /* primary "p" */
	    0x01,                                           /* flags PERSIST */
	    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, /* now_ms 1700000000000 */
	};
	struct qs_frame f = {.type = QS_HELLO};
	struct qs_buf b;
	const char *why;

	f.u.hello = (struct qs_hello){1, qs_str_c("ag1"), qs_str_c("tk"), qs_str_c("p"),
	                              1, 1700000000000ull};
	b = encode(&f);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	qs_buf_free(&b);

	assert_int_equal(decode(want + 4, sizeof(want) - 4, &f, &why), QS_OK);
	assert_int_equal(f.type, QS_HELLO);
	assert_int_equal(f.u.hello.version, 1);
	assert_str(f.u.hello.agent_id, "ag1");
	assert_str(f.u.hello.token, "tk");
	assert_str(f.u.hello.primary, "p");
	assert_int_equal(f.u.hello.flags, QS_FLAG_PERSIST);
	assert_true(f.u.hello.now_ms == 1700000000000ull);
	assert_ptr_equal(f.u.hello.agent_id.ptr, (const char *)want + 9); /* zero copy */
	qs_frame_release(&f);
}

static void test_upload_bytes(void **state)
{
	static const uint8_t want[] = {
	    0x00, 0x00, 0x00, 0x34, /* length: 52 */
	    0x03,                   /* UPLOAD */
	    0x00, 0x00, 0x01, 0x02, /* batch 258 */
	    0x00, 0x01,             /* count 1 */
	    /* MSG_OUT */
	    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
	    0x0e, 0x0f,                                        /* id */
	    0x00, 0x03, 'b', '\\', 'q',                        /* to "b\q" */
	    0x09,                                              /* priority 9 */
	    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,    /* expires_ms 256 */
	    0x00, 0x01, 0x00, 0x01, 'k', 0x00, 0x02, 'v', 'w', /* props: {"k": "vw"} */
	    0x00, 0x00, 0x00, 0x02, 0xff, 0x00,                /* body ff 00 */
	};
	struct qs_prop p = {qs_str_c("k"), qs_str_c("vw")};
	static const uint8_t body[] = {0xff, 0x00};
	struct qs_msg_out m = {.to = qs_str_c("b\\q"),
	                       .priority = 9,
	                       .expires_ms = 256,
	                       .props = {1, &p},
	                       .body = {body, 2}};
	struct qs_frame f = {.type = QS_UPLOAD, .u.upload = {258, 1, &m}};
	struct qs_buf b;
	const char *why;

	memcpy(m.id, ID_A, 16);
	b = encode(&f);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	qs_buf_free(&b);
	assert_int_equal(qs_msg_out_size(&m), 45);

	assert_int_equal(decode(want + 4, sizeof(want) - 4, &f, &why), QS_OK);
	assert_int_equal(f.type, QS_UPLOAD);
	assert_int_equal(f.u.upload.batch, 258);
	assert_int_equal(f.u.upload.count, 1);
	assert_non_null(f.arena);
	const struct qs_msg_out *d = &f.u.upload.msgs[0];
	assert_memory_equal(d->id, ID_A, 16);
	assert_str(d->to, "b\\q");
	assert_int_equal(d->priority, 9);
	assert_true(d->expires_ms == 256);
	assert_int_equal(d->props.n, 1);
	assert_str(d->props.v[0].key, "k");
	assert_str(d->props.v[0].value, "vw");
	assert_int_equal(d->body.len, 2);
	assert_memory_equal(d->body.ptr, body, 2);
	assert_int_equal(d->wire_len, 45);
	assert_int_equal(d->props_raw.len, 9);
	assert_ptr_equal(d->props_raw.ptr, want + 4 + 1 + 6 + 16 + 5 + 1 + 8);
	assert_int_equal(qs_msg_out_check(d), QS_R_STORED);
	qs_frame_release(&f);
}

static void test_deliver_bytes(void **state)
{
	static const uint8_t want[] = {
	    0x00, 0x00, 0x00, 0x3b,                         /* length: 59 */
	    0x06,                                           /* DELIVER */
	    0x00, 0x01,                                     /* count 1 */
	    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, /* seq 42 */
	    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
	    0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, /* id */
	    0x00, 0x01, 'a',                                /* from "a" */
	    0x00, 0x02, 'q',  '1',                          /* queue "q1" */
	    0x04,                                           /* priority 4 */
	    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, /* created_ms 5 */
	    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* expires_ms 0 */
	    0x00, 0x00,                                     /* props: none */
	    0x00, 0x00, 0x00, 0x01, 'Z',                    /* body "Z" */
	    0x01,                                           /* more */
	};
	static const uint8_t body[] = {'Z'};
	struct qs_msg_in m = {.seq = 42,
	                      .from = qs_str_c("a"),
	                      .queue = qs_str_c("q1"),
	                      .priority = 4,
	                      .created_ms = 5,
	                      .body = {body, 1}};
	struct qs_frame f = {.type = QS_DELIVER, .u.deliver = {1, &m, 1}};
	struct qs_buf b;
	const char *why;

	memcpy(m.id, ID_B, 16);
	b = encode(&f);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	qs_buf_free(&b);
	/* the MSG_IN is everything but prefix, type, count and more */
	assert_int_equal(qs_msg_in_size(1, 2, 2, 1), sizeof(want) - 4 - 1 - 2 - 1);

	assert_int_equal(decode(want + 4, sizeof(want) - 4, &f, &why), QS_OK);
	assert_int_equal(f.u.deliver.count, 1);
	assert_int_equal(f.u.deliver.more, 1);
	const struct qs_msg_in *d = &f.u.deliver.msgs[0];
	assert_true(d->seq == 42);
	assert_memory_equal(d->id, ID_B, 16);
	assert_str(d->from, "a");
	assert_str(d->queue, "q1");
	assert_int_equal(d->priority, 4);
	assert_true(d->created_ms == 5);
	assert_true(d->expires_ms == 0);
	assert_int_equal(d->props.n, 0);
	assert_int_equal(d->body.len, 1);
	assert_int_equal(d->body.ptr[0], 'Z');
	qs_frame_release(&f);
}

static void test_small_frames_bytes(void **state)
{
	static const uint8_t ping[] = {0, 0, 0, 9, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8};
	static const uint8_t bye[] = {0, 0, 0, 1, 0x0d};
	static const uint8_t fetch[] = {0, 0, 0, 7, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00};
	static const uint8_t error[] = {0, 0, 0, 7, 0x0c, 0x00, 0x05, 0x00, 0x00, 0x01, 'x'};
	struct qs_frame f = {.type = QS_PING, .u.nonce = 0x0102030405060708ull};
	struct qs_buf b = encode(&f);

	assert_int_equal(b.len, sizeof(ping));
	assert_memory_equal(b.data, ping, sizeof(ping));
	qs_buf_free(&b);

	f = (struct qs_frame){.type = QS_BYE};
	b = encode(&f);
	assert_int_equal(b.len, sizeof(bye));
	assert_memory_equal(b.data, bye, sizeof(bye));
	qs_buf_free(&b);

	f = (struct qs_frame){.type = QS_FETCH, .u.fetch = {256, 65536}};
	b = encode(&f);
	assert_int_equal(b.len, sizeof(fetch));
	assert_memory_equal(b.data, fetch, sizeof(fetch));
	qs_buf_free(&b);

	f = (struct qs_frame){.type = QS_ERROR, .u.error = {QS_E_TOO_LARGE, 0, qs_str_c("x")}};
	b = encode(&f);
	assert_int_equal(b.len, sizeof(error));
	assert_memory_equal(b.data, error, sizeof(error));
	qs_buf_free(&b);
}

/* ---- round trips ------------------------------------------------------ */

static void check_servers(uint16_t n, const struct qs_server *v)
{
	assert_int_equal(n, 2);
	assert_str(v[0].name, "ml1");
	assert_str(v[0].stream, "tcpip(host=10.0.0.1;port=2439)");
	assert_str(v[1].name, "ml-2.b_c");
	assert_str(v[1].stream, "tls(host=gw2;port=2440)");
}

static void check_props2(const struct qs_props *p)
{
	assert_int_equal(p->n, 2);
	assert_str(p->v[0].key, "color");
	assert_str(p->v[0].value, "blue");
	assert_str(p->v[1].key, "size");
	assert_str(p->v[1].value, "");
}

/* Field by field comparison of a decoded sample with what was encoded. */
static void check_sample(const struct qs_frame *f)
{
	switch (f->type) {
	case QS_HELLO:
		assert_int_equal(f->u.hello.version, 1);
		assert_str(f->u.hello.agent_id, "dev-01.A_b");
		assert_str(f->u.hello.token, "s3cret");
		assert_str(f->u.hello.primary, "gw1.example:2439");
		assert_int_equal(f->u.hello.flags, 1);
		assert_true(f->u.hello.now_ms == 1700000000123ull);
		break;
	case QS_WELCOME:
		assert_int_equal(f->u.welcome.version, 1);
		assert_str(f->u.welcome.server, "ml-2.b_c");
		assert_str(f->u.welcome.primary, "ml1");
		assert_int_equal(f->u.welcome.on_primary, 0);
		check_servers(f->u.welcome.n_servers, f->u.welcome.servers);
		assert_int_equal(f->u.welcome.max_frame, 1u << 20);
		assert_int_equal(f->u.welcome.max_batch, 256);
		assert_int_equal(f->u.welcome.heartbeat_s, 30);
		break;
	case QS_UPLOAD: {
		const struct qs_msg_out *m = f->u.upload.msgs;
		assert_int_equal(f->u.upload.batch, 0xdeadbeef);
		assert_int_equal(f->u.upload.count, 2);
		assert_memory_equal(m[0].id, ID_A, 16);
		assert_str(m[0].to, "bob\\inbox");
		assert_int_equal(m[0].priority, 4);
		assert_true(m[0].expires_ms == 1700000000000ull);
		check_props2(&m[0].props);
		assert_int_equal(m[0].body.len, 11);
		assert_memory_equal(m[0].body.ptr, "hello\0world", 11);
		assert_int_equal(m[0].wire_len, qs_msg_out_size(&outs[0]));
		assert_int_equal(m[0].props_raw.len, qs_props_size(&outs[0].props));
		assert_memory_equal(m[1].id, ID_B, 16);
		assert_str(m[1].to, "carol\\q\xc3\xa9");
		assert_int_equal(m[1].priority, 9);
		assert_true(m[1].expires_ms == 0);
		assert_int_equal(m[1].props.n, 1);
		assert_str(m[1].props.v[0].key, "k\xc3\xa9");
		assert_str(m[1].props.v[0].value, "v\xe2\x82\xac");
		assert_int_equal(m[1].body.len, 0);
		assert_int_equal(m[1].wire_len, qs_msg_out_size(&outs[1]));
		break;
	}
	case QS_UPLOAD_ACK:
		assert_int_equal(f->u.upload_ack.batch, 0xdeadbeef);
		assert_int_equal(f->u.upload_ack.count, 2);
		assert_int_equal(f->u.upload_ack.entries[0].id[0], 0);
		assert_int_equal(f->u.upload_ack.entries[0].result, QS_R_STORED);
		assert_int_equal(f->u.upload_ack.entries[1].id[0], 1);
		assert_int_equal(f->u.upload_ack.entries[1].result, QS_R_CONFLICT);
		break;
	case QS_FETCH:
		assert_int_equal(f->u.fetch.max_count, 100);
		assert_int_equal(f->u.fetch.max_bytes, 65536);
		break;
	case QS_DELIVER: {
		const struct qs_msg_in *m = f->u.deliver.msgs;
		assert_int_equal(f->u.deliver.count, 2);
		assert_int_equal(f->u.deliver.more, 1);
		assert_true(m[0].seq == 0x0102030405060708ull);
		assert_memory_equal(m[0].id, ID_A, 16);
		assert_str(m[0].from, "alice");
		assert_str(m[0].queue, "inbox");
		assert_int_equal(m[0].priority, 7);
		assert_true(m[0].created_ms == 1);
		assert_true(m[0].expires_ms == 2);
		check_props2(&m[0].props);
		assert_int_equal(m[0].body.len, 3);
		assert_memory_equal(m[0].body.ptr, "xyz", 3);
		assert_true(m[1].seq == 99);
		assert_str(m[1].from, "server");
		assert_str(m[1].queue, "system");
		assert_int_equal(m[1].props.n, 0);
		assert_int_equal(m[1].body.len, 0);
		break;
	}
	case QS_DELIVER_ACK:
		assert_int_equal(f->u.deliver_ack.count, 3);
		assert_true(f->u.deliver_ack.seqs[0] == 1);
		assert_true(f->u.deliver_ack.seqs[1] == 0x8000000000000001ull);
		assert_true(f->u.deliver_ack.seqs[2] == 42);
		break;
	case QS_PUSH:
		assert_true(f->u.push.push_id == 0xfedcba9876543210ull);
		assert_int_equal(f->u.push.pending, 5);
		break;
	case QS_PUSH_ACK:
		assert_true(f->u.push_id == 0xfedcba9876543210ull);
		break;
	case QS_PING:
		assert_true(f->u.nonce == 0x1122334455667788ull);
		break;
	case QS_PONG:
		assert_true(f->u.nonce == 0x8877665544332211ull);
		break;
	case QS_ERROR:
		assert_int_equal(f->u.error.code, QS_E_DRAINING);
		assert_int_equal(f->u.error.retryable, 1);
		assert_str(f->u.error.text, "worker ml1 is draining");
		break;
	case QS_BYE:
		break;
	case QS_REASSIGN:
		assert_str(f->u.reassign.primary, "ml-2.b_c");
		check_servers(f->u.reassign.n_servers, f->u.reassign.servers);
		break;
	case QS_STATUS:
		assert_int_equal(f->u.status.count, 3);
		assert_int_equal(f->u.status.entries[0].id[0], 7);
		assert_int_equal(f->u.status.entries[0].status, 60);
		assert_int_equal(f->u.status.entries[1].status, 50);
		assert_int_equal(f->u.status.entries[2].id[0], 9);
		assert_int_equal(f->u.status.entries[2].status, 30);
		break;
	default:
		fail_msg("unexpected type %d", f->type);
	}
}

static void test_round_trip_all_types(void **state)
{
	for (int t = QS_HELLO; t <= QS_STATUS; t++) {
		struct qs_frame in, out;
		struct qs_buf b, b2;

		sample(t, &in);
		b = encode(&in);
		assert_int_equal(b.data[QS_HEADER_LEN], t);
		decode_ok(&b, &out);
		assert_int_equal(out.type, t);
		check_sample(&out);
		/* re-encoding the decoded frame gives the same bytes */
		b2 = encode(&out);
		assert_int_equal(b2.len, b.len);
		assert_memory_equal(b2.data, b.data, b.len);
		qs_frame_release(&out);
		qs_buf_free(&b);
		qs_buf_free(&b2);
	}
}

static void test_arena_is_one_block(void **state)
{
	struct qs_frame in, out;
	struct qs_buf b;

	sample(QS_UPLOAD, &in);
	b = encode(&in);
	decode_ok(&b, &out);
	/* msgs and both props arrays live in the one arena */
	const uint8_t *lo = out.arena;
	const uint8_t *m = (const uint8_t *)out.u.upload.msgs;
	const uint8_t *p0 = (const uint8_t *)out.u.upload.msgs[0].props.v;
	const uint8_t *p1 = (const uint8_t *)out.u.upload.msgs[1].props.v;
	assert_ptr_equal(m, lo);
	assert_true(p0 >= m + 2 * sizeof(struct qs_msg_out));
	assert_true(p1 >= p0 + 2 * sizeof(struct qs_prop));
	qs_frame_release(&out);
	assert_null(out.arena);
	qs_frame_release(&out); /* idempotent */

	/* frames without arrays allocate nothing */
	qs_buf_free(&b);
	sample(QS_HELLO, &in);
	b = encode(&in);
	decode_ok(&b, &out);
	assert_null(out.arena);
	qs_frame_release(&out);
	qs_buf_free(&b);
}

static void test_release_zeroed_frame(void **state)
{
	struct qs_frame f;

	memset(&f, 0, sizeof(f));
	qs_frame_release(&f);
	qs_frame_release(&f);
	qs_frame_release(NULL);
	assert_null(f.arena);
}

static void test_encode_appends(void **state)
{
	struct qs_frame a, c;
	struct qs_buf b = {0};

	sample(QS_PING, &a);
	sample(QS_BYE, &c);
	assert_int_equal(qs_encode(&a, &b), 0);
	assert_int_equal(qs_encode(&c, &b), 0);
	assert_int_equal(b.len, 13 + 5);
	assert_int_equal(b.data[13 + 3], 1);
	assert_int_equal(b.data[13 + 4], QS_BYE);
	qs_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_check_header(void **state)
{
	uint8_t h[4] = {0, 0, 0, 0};
	uint32_t n = 7;

	assert_int_equal(qs_check_header(h, QS_DEFAULT_MAX_FRAME, &n), QS_E_BAD_FRAME);
	assert_int_equal(n, 0);
	h[3] = 1;
	assert_int_equal(qs_check_header(h, QS_DEFAULT_MAX_FRAME, &n), QS_OK);
	assert_int_equal(n, 1);
	h[0] = 0x00, h[1] = 0x10, h[2] = 0x00, h[3] = 0x00; /* 1 MiB */
	assert_int_equal(qs_check_header(h, QS_DEFAULT_MAX_FRAME, &n), QS_OK);
	assert_int_equal(n, QS_DEFAULT_MAX_FRAME);
	h[3] = 0x01;
	assert_int_equal(qs_check_header(h, QS_DEFAULT_MAX_FRAME, &n), QS_E_TOO_LARGE);
	assert_int_equal(n, QS_DEFAULT_MAX_FRAME + 1);
	h[0] = h[1] = h[2] = h[3] = 0xff;
	assert_int_equal(qs_check_header(h, UINT32_MAX, &n), QS_OK);
	assert_int_equal(qs_check_header(h, 100, &n), QS_E_TOO_LARGE);
	assert_int_equal(n, UINT32_MAX);
}

/* QS_HELLO_MAX_LEN is the longest HELLO protocol.md's layout can encode: a
 * HELLO with every field at its limit encodes to exactly that many bytes,
 * passes the pre-HELLO length check and decodes; one byte more is too_large
 * before HELLO (and fine after it, under max_frame). */
static void test_hello_max_len(void **state)
{
	static char agent[QS_AGENT_ID_MAX + 1], token[QS_STR_MAX + 1], primary[QS_STR_MAX + 1];
	memset(agent, 'a', QS_AGENT_ID_MAX);
	memset(token, 't', QS_STR_MAX);
	memset(primary, 'p', QS_STR_MAX);
	struct qs_frame f = {.type = QS_HELLO};
	f.u.hello = (struct qs_hello){QS_VERSION,        qs_str_c(agent), qs_str_c(token),
	                              qs_str_c(primary), QS_FLAG_PERSIST, UINT64_MAX};
	assert_int_equal(QS_HELLO_MAX_LEN, 131208);
	struct qs_buf b = encode(&f);
	assert_int_equal(b.len, QS_HEADER_LEN + QS_HELLO_MAX_LEN);

	uint32_t limit = qs_frame_limit(QS_DEFAULT_MAX_FRAME, 0), n = 0;
	assert_int_equal(limit, QS_HELLO_MAX_LEN);
	assert_int_equal(qs_check_header(b.data, limit, &n), QS_OK);
	assert_int_equal(n, QS_HELLO_MAX_LEN);
	struct qs_frame d;
	decode_ok(&b, &d);
	assert_int_equal(d.u.hello.agent_id.len, QS_AGENT_ID_MAX);
	assert_int_equal(d.u.hello.token.len, QS_STR_MAX);
	assert_int_equal(d.u.hello.primary.len, QS_STR_MAX);
	qs_frame_release(&d);
	qs_buf_free(&b);

	uint8_t h[4] = {0, (QS_HELLO_MAX_LEN + 1) >> 16 & 0xff, (QS_HELLO_MAX_LEN + 1) >> 8 & 0xff,
	                (QS_HELLO_MAX_LEN + 1) & 0xff};
	assert_int_equal(qs_check_header(h, limit, &n), QS_E_TOO_LARGE);
	assert_int_equal(n, QS_HELLO_MAX_LEN + 1);
	assert_int_equal(qs_check_header(h, qs_frame_limit(QS_DEFAULT_MAX_FRAME, 1), &n), QS_OK);
	/* a max_frame below the largest HELLO is the limit before HELLO too */
	assert_int_equal(qs_frame_limit(65536, 0), 65536);
	assert_int_equal(qs_frame_limit(65536, 1), 65536);
}

static void test_encode_refusals(void **state)
{
	struct qs_frame f;
	struct qs_buf b = {0};

	/* an earlier frame in the buffer survives a failed encode */
	sample(QS_PING, &f);
	assert_int_equal(qs_encode(&f, &b), 0);
	size_t before = b.len;

	sample(QS_UPLOAD, &f);
	f.u.upload.msgs = NULL;
	assert_int_equal(qs_encode(&f, &b), -1);
	assert_int_equal(b.len, before);

	sample(QS_WELCOME, &f);
	f.u.welcome.servers = NULL;
	assert_int_equal(qs_encode(&f, &b), -1);

	sample(QS_DELIVER, &f);
	struct qs_msg_in m = ins[0];
	m.props.v = NULL;
	f.u.deliver.count = 1;
	f.u.deliver.msgs = &m;
	assert_int_equal(qs_encode(&f, &b), -1);

	sample(QS_ERROR, &f);
	f.u.error.text.ptr = NULL; /* len > 0 without bytes */
	assert_int_equal(qs_encode(&f, &b), -1);

	f.type = (enum qs_type)0x42;
	assert_int_equal(qs_encode(&f, &b), -1);

	/* a frame over 2^32-1 bytes: refused before anything is read or reserved */
	static const uint8_t tiny[1];
	struct qs_msg_out big = outs[0];
	big.body = (struct qs_bin){tiny, UINT32_MAX};
	sample(QS_UPLOAD, &f);
	f.u.upload.count = 1;
	f.u.upload.msgs = &big;
	assert_int_equal(qs_encode(&f, &b), -1);
	assert_int_equal(b.len, before);
	assert_true(b.cap < 1u << 20);

	/* the survivor is intact */
	assert_int_equal(b.data[4], QS_PING);
	qs_buf_free(&b);
}

static void test_msg_in_size_matches_encoding(void **state)
{
	struct qs_frame f;
	struct qs_buf b;

	sample(QS_DELIVER, &f);
	b = encode(&f);
	size_t want = 0;
	for (int i = 0; i < 2; i++)
		want += qs_msg_in_size(ins[i].from.len, ins[i].queue.len,
		                       qs_props_size(&ins[i].props), ins[i].body.len);
	assert_int_equal(b.len, QS_HEADER_LEN + 1 + 2 + want + 1);
	assert_int_equal(qs_msg_in_size(0, 0, 2, 0), 51);
	qs_buf_free(&b);
}

static void test_names(void **state)
{
	static const char *const errs[] = {
	    NULL,       "bad_frame", "version",           "auth",
	    "sequence", "too_large", "store_unavailable", "overloaded",
	    "draining", "timeout",   "superseded",        "internal"};
	static const int retry[] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1};

	for (int c = 1; c <= 11; c++) {
		assert_string_equal(qs_err_name(c), errs[c]);
		assert_int_equal(qs_err_retryable(c), retry[c]);
	}
	assert_string_equal(qs_err_name(12), "unknown");
	assert_string_equal(qs_err_name(-1), "unknown");
	assert_string_equal(qs_err_name(65535), "unknown");
	assert_int_equal(qs_err_retryable(12), 0);

	static const char *const types[] = {NULL,         "HELLO",    "WELCOME",  "UPLOAD",
	                                    "UPLOAD_ACK", "FETCH",    "DELIVER",  "DELIVER_ACK",
	                                    "PUSH",       "PUSH_ACK", "PING",     "PONG",
	                                    "ERROR",      "BYE",      "REASSIGN", "STATUS"};
	for (int t = 1; t <= 15; t++)
		assert_string_equal(qs_type_name(t), types[t]);
	assert_null(qs_type_name(0));
	assert_null(qs_type_name(16));
	assert_null(qs_type_name(-1));
	assert_null(qs_type_name(255));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hello_bytes),
	    cmocka_unit_test(test_upload_bytes),
	    cmocka_unit_test(test_deliver_bytes),
	    cmocka_unit_test(test_small_frames_bytes),
	    cmocka_unit_test(test_round_trip_all_types),
	    cmocka_unit_test(test_arena_is_one_block),
	    cmocka_unit_test(test_release_zeroed_frame),
	    cmocka_unit_test(test_encode_appends),
	    cmocka_unit_test(test_check_header),
	    cmocka_unit_test(test_hello_max_len),
	    cmocka_unit_test(test_encode_refusals),
	    cmocka_unit_test(test_msg_in_size_matches_encoding),
	    cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests_name("proto_codec", tests, NULL, NULL);
}
