/* One connection from the agent to one stream: connect with a timeout, then
 * frame I/O framed and decoded with the proto codec: blocking with timeouts
 * (poll), or a non-blocking read for an event loop that polls the fd itself.
 * The transport sits behind a small ops table (plain TCP now; TLS is added
 * there later). Used by qa_session; one thread owns a connection. */
#ifndef QA_CONN_H
#define QA_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/qa_error.h"
#include "agent/qa_stream.h"
#include "proto/qs_codec.h"

#define QA_CONNECT_TIMEOUT_MS 5000
/* The largest frame the agent accepts, whatever a server's WELCOME says. */
#define QA_CONN_FRAME_CAP (256u * 1024u * 1024u)

struct qa_conn;

/* Transport operations. read/write return the bytes moved, 0 on end of
 * stream (read), or -1 with errno (EAGAIN: poll and retry). */
struct qa_conn_io {
	const char *name;
	ssize_t (*read)(struct qa_conn *c, void *buf, size_t n);
	ssize_t (*write)(struct qa_conn *c, const void *buf, size_t n);
	void (*close)(struct qa_conn *c);
};

enum qa_conn_state {
	QA_CONN_CLOSED = 0, /* no socket: before open, after close */
	QA_CONN_OPEN,       /* connected; frames may be sent and received */
	QA_CONN_BROKEN,     /* an I/O error, timeout or undecodable frame happened;
	                       the byte stream is out of step, only close is allowed */
};

struct qa_conn {
	enum qa_conn_state state; /* changed only through conn_set_state (qa_conn.c) */
	int fd;                   /* non-blocking */
	const struct qa_conn_io *io;
	void *io_ctx;       /* transport state: the SSL of a TLS connection */
	uint32_t max_frame; /* frames longer than this are refused (WELCOME sets it) */
	/* The frame being read: header, then payload into rbuf. rhave counts the
	 * bytes of it read so far (header included); 0 between frames. */
	uint8_t rhdr[QS_HEADER_LEN];
	size_t rhave;
	uint32_t rlen; /* payload length, once the header is complete */
	uint8_t *rbuf; /* the payload: decoded frames point into it */
	size_t rcap;
	/* -1, or an fd that becomes readable when the owner wants to stop (a
	 * signalfd, a pipe): every wait for the socket also watches it and ends
	 * with QA_FAIL_STOPPED. Not owned; kept across open and close. */
	int cancel_fd;
	/* 0, or a monotonic time (gw_mono_ms) at which every wait ends the same
	 * way: the owner's time limit. Kept across open and close. */
	uint64_t stop_at_ms;
	struct qs_buf wbuf;            /* encoding buffer, reused */
	char peer[QA_STREAM_TEXT_MAX]; /* the stream, as text, for messages */
};

void qa_conn_init(struct qa_conn *c);

/* Connects to s within timeout_ms (over every address the host resolves to).
 * QA_FAIL_CONNECT on failure, with the reason (e.g. "connect failed:
 * Connection refused"). */
int qa_conn_open(struct qa_conn *c, const struct qa_stream *s, int timeout_ms, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Takes an fd connected by the caller (a socketpair in a test, a socket an
 * application made): sets it non-blocking and owns it from here on. io NULL
 * means plain stream-socket I/O (recv/send). */
int qa_conn_attach(struct qa_conn *c, int fd, const struct qa_conn_io *io, const char *peer,
                   struct qa_error *e) __attribute__((warn_unused_result));

/* 1 when a TLS connection holds decrypted bytes not read yet: a poll on the
 * socket would not see them, so read before polling. */
int qa_conn_pending(const struct qa_conn *c);

/* Encodes and writes one frame within timeout_ms. */
int qa_conn_send(struct qa_conn *c, const struct qs_frame *f, int timeout_ms, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Reads and decodes one frame within timeout_ms. On success the caller must
 * qs_frame_release(f) before the next qa_conn_recv or qa_conn_try_recv: f
 * points into the connection's buffer. QA_FAIL_IO when the peer closed or the
 * time ran out, QA_FAIL_PROTOCOL when the frame does not decode,
 * QA_FAIL_STOPPED when cancel_fd became readable or stop_at_ms came first. */
int qa_conn_recv(struct qa_conn *c, struct qs_frame *f, int timeout_ms, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Reads what the socket has without waiting: 1 and a frame in f (release it
 * as above) when one is complete, 0 when more bytes are needed (poll the fd
 * for POLLIN and call again; a partial frame is kept), -1 on failure. */
int qa_conn_try_recv(struct qa_conn *c, struct qs_frame *f, struct qa_error *e)
    __attribute__((warn_unused_result));

/* Closes the transport and frees the buffers; the conn can be opened again. */
void qa_conn_close(struct qa_conn *c);

#endif
