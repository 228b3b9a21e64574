/* The -x STREAM syntax of qaagent (docs/agent.md): tcpip(host=H;port=P),
 * tls(host=H;port=P;trusted_certificates=CA.pem) and auto(host=H;port=P[;tls=on;
 * trusted_certificates=CA.pem]). Parsed strictly: anything that does not parse
 * is an error naming the bad part, never a silent default. Also renders a
 * stream as the HELLO primary (HOST:PORT) and back to text. No I/O. */
#ifndef QA_STREAM_H
#define QA_STREAM_H

#include <stddef.h>
#include <stdint.h>

#define QA_STREAM_DEFAULT_HOST "localhost"
#define QA_STREAM_DEFAULT_PORT 2439
#define QA_HOST_MAX            255  /* longest host (without brackets) */
#define QA_PATH_MAX            1024 /* longest trusted_certificates path */
/* Room for any rendered stream or primary, NUL included. */
#define QA_STREAM_TEXT_MAX (QA_HOST_MAX + QA_PATH_MAX + 96)

enum qa_scheme {
	QA_SCHEME_TCPIP, /* tcpip(...): plain TCP */
	QA_SCHEME_TLS,   /* tls(...): TLS over TCP */
	QA_SCHEME_AUTO,  /* auto(...): a bootstrap server; the router assigns the primary */
};

struct qa_stream {
	enum qa_scheme scheme;
	char host[QA_HOST_MAX + 1]; /* as given, IPv6 without brackets */
	uint16_t port;              /* 1..65535 */
	int tls;                    /* 1 for tls(...) and auto(...;tls=on) */
	char ca_file[QA_PATH_MAX];  /* trusted_certificates, "" when not given */
};

/* Parses one -x value. Returns 0, or -1 with a message in err such as
 * `bad -x stream "tcpip(host=a;prot=1)": unknown key "prot"`. */
int qa_stream_parse(const char *text, struct qa_stream *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Renders the HELLO primary: HOST:PORT, an IPv6 host in brackets, the port
 * always written. Returns the length, or -1 when buf is too small. */
int qa_stream_primary(const struct qa_stream *s, char *buf, size_t n)
    __attribute__((warn_unused_result));

/* Renders the stream as text that qa_stream_parse reads back to the same
 * stream: tcpip(host=H;port=P), tls(host=H;port=P[;trusted_certificates=F]),
 * auto(host=H;port=P[;tls=on][;trusted_certificates=F]). Returns the length,
 * or -1 when buf is too small. */
int qa_stream_format(const struct qa_stream *s, char *buf, size_t n)
    __attribute__((warn_unused_result));

#endif
