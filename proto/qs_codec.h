/* QASync v1 frame codec: encode and strictly decode every frame of
 * docs/protocol.md. Shared by the gateway and libqaagent; does no I/O and
 * depends on nothing of ours. Decoded strings and bins point into the caller's
 * input buffer (zero copy), so the input must outlive the decoded frame. */
#ifndef QS_CODEC_H
#define QS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define QS_VERSION           1
#define QS_DEFAULT_PORT      2439
#define QS_DEFAULT_MAX_FRAME (1024u * 1024u)
#define QS_DEFAULT_MAX_BATCH 256
#define QS_HEADER_LEN        4    /* u32 length prefix */
#define QS_DELIVER_OVERHEAD  1024 /* room kept for what delivery adds (too_large rule) */
#define QS_FLAG_PERSIST      0x01
#define QS_STR_MAX           65535 /* a str's u16 length */
#define QS_AGENT_ID_MAX      120

/* The longest HELLO frame (type + payload: what the length prefix counts)
 * version 1 can encode, from the layout in protocol.md "HELLO": type, u16
 * version, agent_id (str of at most QS_AGENT_ID_MAX), token and primary (str,
 * bounded only by a str's u16 length), u8 flags, u64 now_ms. 131208 bytes.
 * Before HELLO a longer frame is too_large at once (protocol.md "Framing"). */
#define QS_HELLO_MAX_LEN (1u + 2u + (2u + QS_AGENT_ID_MAX) + 2u * (2u + QS_STR_MAX) + 1u + 8u)

enum qs_type {
	QS_HELLO = 0x01,
	QS_WELCOME = 0x02,
	QS_UPLOAD = 0x03,
	QS_UPLOAD_ACK = 0x04,
	QS_FETCH = 0x05,
	QS_DELIVER = 0x06,
	QS_DELIVER_ACK = 0x07,
	QS_PUSH = 0x08,
	QS_PUSH_ACK = 0x09,
	QS_PING = 0x0A,
	QS_PONG = 0x0B,
	QS_ERROR = 0x0C,
	QS_BYE = 0x0D,
	QS_REASSIGN = 0x0E,
	QS_STATUS = 0x0F,
};

/* ERROR codes (protocol.md "ERROR"), declared once: X(enum suffix, code, name,
 * retryable). The codes are dense from 1 (qs_codec.c checks it), so QS_E_END,
 * one past the last, sizes anything indexed by code (the gateway's
 * qagw_errors_total counters). QS_OK is never sent. */
#define QS_ERRORS(X)                                                                               \
	X(BAD_FRAME, 1, "bad_frame", 0)                                                            \
	X(VERSION, 2, "version", 0)                                                                \
	X(AUTH, 3, "auth", 0)                                                                      \
	X(SEQUENCE, 4, "sequence", 0)                                                              \
	X(TOO_LARGE, 5, "too_large", 0)                                                            \
	X(STORE_UNAVAILABLE, 6, "store_unavailable", 1)                                            \
	X(OVERLOADED, 7, "overloaded", 1)                                                          \
	X(DRAINING, 8, "draining", 1)                                                              \
	X(TIMEOUT, 9, "timeout", 1)                                                                \
	X(SUPERSEDED, 10, "superseded", 0)                                                         \
	X(INTERNAL, 11, "internal", 1)

enum qs_err {
	QS_OK = 0,
#define QS_E_ENUM(e, code, name, retryable) QS_E_##e = code,
	QS_ERRORS(QS_E_ENUM)
#undef QS_E_ENUM
	    QS_E_END /* one past the last code */
};

/* UPLOAD_ACK results. */
enum qs_result {
	QS_R_STORED = 0,
	QS_R_DUPLICATE = 1,
	QS_R_INVALID = 2,
	QS_R_EXPIRED = 3,
	QS_R_TOO_LARGE = 4,
	QS_R_QUOTA = 5,
	QS_R_CONFLICT = 6,
};

/* Message status codes (QAnywhere's). */
enum qs_status_code {
	QS_ST_PENDING = 1,
	QS_ST_TRANSMITTED = 20,
	QS_ST_EXPIRED = 30,
	QS_ST_CANCELED = 40,
	QS_ST_UNRECEIVABLE = 50,
	QS_ST_RECEIVED = 60,
};

/* A str field: n bytes of UTF-8 without NUL, not NUL-terminated. */
struct qs_str {
	const char *ptr;
	uint16_t len;
};

/* A bin field. */
struct qs_bin {
	const uint8_t *ptr;
	uint32_t len;
};

struct qs_prop {
	struct qs_str key;
	struct qs_str value;
};

struct qs_props {
	uint16_t n;
	struct qs_prop *v; /* n entries */
};

struct qs_server {
	struct qs_str name;
	struct qs_str stream;
};

struct qs_msg_out {
	uint8_t id[16];
	struct qs_str to;
	uint8_t priority;
	uint64_t expires_ms;
	struct qs_props props;
	struct qs_bin body;
	struct qs_bin props_raw; /* the props block as received (u16 n + pairs); set by decode */
	uint32_t wire_len;       /* length of this MSG_OUT's encoding; set by decode */
};

struct qs_msg_in {
	uint64_t seq;
	uint8_t id[16];
	struct qs_str from;
	struct qs_str queue;
	uint8_t priority;
	uint64_t created_ms;
	uint64_t expires_ms;
	struct qs_props props;
	struct qs_bin body;
};

struct qs_hello {
	uint16_t version;
	struct qs_str agent_id;
	struct qs_str token;
	struct qs_str primary;
	uint8_t flags;
	uint64_t now_ms;
};

struct qs_welcome {
	uint16_t version;
	struct qs_str server;
	struct qs_str primary;
	uint8_t on_primary;
	uint16_t n_servers;
	struct qs_server *servers;
	uint32_t max_frame;
	uint16_t max_batch;
	uint32_t heartbeat_s;
};

struct qs_upload {
	uint32_t batch;
	uint16_t count;
	struct qs_msg_out *msgs;
};

struct qs_ack_entry {
	uint8_t id[16];
	uint8_t result; /* enum qs_result */
};

struct qs_upload_ack {
	uint32_t batch;
	uint16_t count;
	struct qs_ack_entry *entries;
};

struct qs_fetch {
	uint16_t max_count;
	uint32_t max_bytes;
};

struct qs_deliver {
	uint16_t count;
	struct qs_msg_in *msgs;
	uint8_t more;
};

struct qs_deliver_ack {
	uint16_t count;
	uint64_t *seqs;
};

struct qs_push {
	uint64_t push_id;
	uint32_t pending;
};

struct qs_error {
	uint16_t code; /* enum qs_err */
	uint8_t retryable;
	struct qs_str text;
};

struct qs_reassign {
	struct qs_str primary;
	uint16_t n_servers;
	struct qs_server *servers;
};

struct qs_status_entry {
	uint8_t id[16];
	uint8_t status; /* 60, 50 or 30 */
};

struct qs_status {
	uint16_t count;
	struct qs_status_entry *entries;
};

/* One decoded (or to-be-encoded) frame. For PING/PONG the nonce is in u.nonce,
 * for PUSH_ACK the push id in u.push_id; BYE has no payload. */
struct qs_frame {
	enum qs_type type;
	union {
		struct qs_hello hello;
		struct qs_welcome welcome;
		struct qs_upload upload;
		struct qs_upload_ack upload_ack;
		struct qs_fetch fetch;
		struct qs_deliver deliver;
		struct qs_deliver_ack deliver_ack;
		struct qs_push push;
		uint64_t push_id;
		uint64_t nonce;
		struct qs_error error;
		struct qs_reassign reassign;
		struct qs_status status;
	} u;
	void *arena; /* decoder-owned allocations; freed by qs_frame_release */
};

/* Limits the decoder enforces. max_batch bounds UPLOAD count (over it:
 * QS_E_TOO_LARGE); DELIVER/UPLOAD_ACK counts are bounded only by the frame. */
struct qs_limits {
	uint32_t max_frame;
	uint16_t max_batch;
};

/* A growable output buffer for encoders. */
struct qs_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/* Checks a frame's 4-byte length prefix. Returns QS_OK and sets *len, or
 * QS_E_BAD_FRAME (length 0) or QS_E_TOO_LARGE (over max_frame). */
int qs_check_header(const uint8_t hdr[QS_HEADER_LEN], uint32_t max_frame, uint32_t *len);

/* The longest frame a peer may announce: max_frame once it has said HELLO,
 * before that no more than the largest HELLO (so a peer that has not said who
 * it is never makes the server buffer a large frame). For qs_check_header. */
static inline uint32_t qs_frame_limit(uint32_t max_frame, int hello_seen)
{
	return hello_seen || max_frame < QS_HELLO_MAX_LEN ? max_frame : QS_HELLO_MAX_LEN;
}

/* Decodes one frame body (type byte + payload, without the length prefix).
 * Returns QS_OK, QS_E_BAD_FRAME or QS_E_TOO_LARGE; on error *why (if not NULL)
 * points to a static description. Strings point into buf. On success the
 * caller must call qs_frame_release(). Identifier rules that make a frame
 * malformed (HELLO agent id, flag bits, STATUS codes, UTF-8, no NUL) are
 * checked here; per-message acceptability is qs_msg_out_check's.
 * Also: QS_E_INTERNAL when memory runs out; on any error *f is zeroed and owns
 * nothing. A HELLO whose version is not QS_VERSION decodes to its version
 * alone (other fields zero, the rest of the payload unread), so the caller can
 * answer ERROR version whatever layout follows: check hello.version first. */
int qs_decode(const uint8_t *buf, size_t len, const struct qs_limits *lim, struct qs_frame *f,
              const char **why) __attribute__((warn_unused_result));
void qs_frame_release(struct qs_frame *f);

/* Appends the encoding of f (with its length prefix) to out. Returns 0, or -1
 * when a field breaks the encoding (string over 65535 bytes, out of memory). */
int qs_encode(const struct qs_frame *f, struct qs_buf *out) __attribute__((warn_unused_result));

/* Per-message acceptability of an uploaded message: QS_R_STORED if valid,
 * QS_R_INVALID for a bad address, a priority over 9, a property key that is
 * empty, over 128 bytes, repeated or reserved (ias_ in any case), or the
 * destination queue "system". */
int qs_msg_out_check(const struct qs_msg_out *m);

/* Splits "AGENT\QUEUE"; returns 0 when it is a valid address. */
int qs_split_address(struct qs_str to, struct qs_str *agent, struct qs_str *queue);

/* Identifier rules; each returns 1 when valid. */
int qs_valid_agent_id(const char *p, size_t n);
int qs_valid_queue(const char *p, size_t n);
int qs_valid_worker_name(const char *p, size_t n);
int qs_valid_utf8(const char *p, size_t n); /* also rejects NUL */

/* A props block on its own (u16 n + pairs), as the store keeps it.
 * qs_decode_props validates like qs_decode (UTF-8, exact length) and
 * allocates p->v, which the caller frees with free(). */
int qs_encode_props(const struct qs_props *p, struct qs_buf *out)
    __attribute__((warn_unused_result));
int qs_decode_props(const uint8_t *buf, size_t len, struct qs_props *p)
    __attribute__((warn_unused_result));

/* Encoded length of a MSG_OUT (what decode puts in wire_len); the agent uses
 * it to fill UPLOAD frames, the too_large rule compares it with max_frame. */
size_t qs_msg_out_size(const struct qs_msg_out *m);

/* Size of a MSG_IN encoding with the given parts; used to honour max_bytes. */
size_t qs_msg_in_size(size_t from_len, size_t queue_len, size_t props_len, size_t body_len);

/* Encoded length of a props block (u16 n + pairs). */
size_t qs_props_size(const struct qs_props *p);

/* ERROR helpers. */
const char *qs_err_name(int code);  /* "bad_frame", ... ; "unknown" otherwise */
int qs_err_retryable(int code);     /* per the ERROR table */
const char *qs_type_name(int type); /* "HELLO", ...; NULL for an unknown type */

/* One line about a decoded frame for a log (the agent's -v): its type and
 * the fields that say what it is about, never the token nor message bodies,
 * into buf (n bytes, terminated; a cut line ends in "..."). Peer strings
 * are copied as they are: the log escapes control characters. */
void qs_frame_summary(const struct qs_frame *f, char *buf, size_t n);

/* qs_buf helpers. */
void qs_buf_free(struct qs_buf *b);
int qs_buf_reserve(struct qs_buf *b, size_t extra) __attribute__((warn_unused_result));

static inline struct qs_str qs_str_c(const char *s);
#include <string.h>
static inline struct qs_str qs_str_c(const char *s)
{
	struct qs_str r = {s, (uint16_t)strlen(s)};
	return r;
}

#endif
