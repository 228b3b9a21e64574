/* Failure reports of libqaagent. Every fallible library function fills a
 * struct qa_error and returns -1; the kind says whether another server or a
 * later sync may succeed, and the qaagent program maps it to an exit code. */
#ifndef QA_ERROR_H
#define QA_ERROR_H

#include <stddef.h>
#include <stdint.h>

enum qa_fail {
	QA_FAIL_NONE = 0, /* no failure */
	QA_FAIL_USAGE,    /* a bad argument from the caller */
	QA_FAIL_CONNECT,  /* could not connect: refused, unreachable, timed out, TLS */
	QA_FAIL_IO,       /* the connection was lost or a read/write timed out */
	QA_FAIL_PROTOCOL, /* the server broke QASync v1: malformed or unexpected frame */
	QA_FAIL_SERVER,   /* the server sent ERROR: code and retryable are set */
	QA_FAIL_STORE,    /* the client store (SQLite) failed */
	QA_FAIL_SYSTEM,   /* out of memory or another local failure */
	QA_FAIL_STOPPED,  /* a stop was asked for (the connection's cancel fd became readable);
	                     the connection is still in step and may say BYE */
};

#define QA_ERROR_MSG_MAX  2048
#define QA_ERROR_TEXT_MAX 401 /* an ERROR frame's text as kept: 400 bytes and a NUL */

struct qa_error {
	enum qa_fail kind;
	uint16_t code;     /* QA_FAIL_SERVER: the ERROR code (enum qs_err) */
	uint8_t retryable; /* QA_FAIL_SERVER: the ERROR's retryable flag */
	char msg[QA_ERROR_MSG_MAX];
	char text[QA_ERROR_TEXT_MAX]; /* QA_FAIL_SERVER: the ERROR's own text; "" otherwise */
};

/* Fills e (which may be NULL) and returns -1, so that a failing function can
 * `return qa_error_set(e, ...)`. */
int qa_error_set(struct qa_error *e, enum qa_fail kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records an ERROR frame received from a server; returns -1. */
int qa_error_server(struct qa_error *e, uint16_t code, uint8_t retryable, const char *text,
                    size_t text_len);

/* 1 when the failure must not be retried on another server or later:
 * a non-retryable ERROR (auth, version, superseded, bad_frame, ...), a usage
 * error, or a stop the caller asked for. */
int qa_error_is_final(const struct qa_error *e);

void qa_error_clear(struct qa_error *e);

#endif
