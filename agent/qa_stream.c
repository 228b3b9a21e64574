/* The -x STREAM parser: see qa_stream.h. The grammar, as docs/agent.md states it:
 *
 *   stream = scheme "(" [ param *( ";" param ) [ ";" ] ] ")"
 *   param  = key "=" value          (spaces and tabs around key and value ignored)
 *   scheme = tcpip | tls | auto     (case-insensitive, like the keys)
 *
 * A value runs to the next ';' or ')', so neither can appear in one. */
#include "agent/qa_stream.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A piece of the input text: not NUL-terminated. */
struct span {
	const char *p;
	size_t n;
};

enum key_id { KEY_HOST, KEY_PORT, KEY_TRUSTED_CERTIFICATES, KEY_TLS, KEY_COUNT };

/* The keys, and which schemes take them (bit per enum qa_scheme). */
static const struct {
	const char *name;
	unsigned schemes;
} keys[KEY_COUNT] = {
    [KEY_HOST] = {"host", 1u << QA_SCHEME_TCPIP | 1u << QA_SCHEME_TLS | 1u << QA_SCHEME_AUTO},
    [KEY_PORT] = {"port", 1u << QA_SCHEME_TCPIP | 1u << QA_SCHEME_TLS | 1u << QA_SCHEME_AUTO},
    [KEY_TRUSTED_CERTIFICATES] = {"trusted_certificates",
                                  1u << QA_SCHEME_TLS | 1u << QA_SCHEME_AUTO},
    [KEY_TLS] = {"tls", 1u << QA_SCHEME_AUTO},
};

static const char *const scheme_names[] = {
    [QA_SCHEME_TCPIP] = "tcpip",
    [QA_SCHEME_TLS] = "tls",
    [QA_SCHEME_AUTO] = "auto",
};

static int is_space(char c)
{
	return c == ' ' || c == '\t';
}

static struct span trim(struct span s)
{
	while (s.n > 0 && is_space(s.p[0])) {
		s.p++;
		s.n--;
	}
	while (s.n > 0 && is_space(s.p[s.n - 1]))
		s.n--;
	return s;
}

static int span_eq_ci(struct span s, const char *word)
{
	return strlen(word) == s.n && strncasecmp(s.p, word, s.n) == 0;
}

/* Appends s to out, quoted for a message: printable ASCII as is, '"' and '\'
 * escaped, anything else as \xNN; long pieces are cut with "...". */
static void quote(char *out, size_t outlen, struct span s)
{
	size_t used = strlen(out);
	const size_t shown = s.n > 160 ? 160 : s.n;
	if (used + 1 >= outlen)
		return;
	out[used++] = '"';
	for (size_t i = 0; i < shown && used + 8 < outlen; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (c == '"' || c == '\\')
			used += (size_t)snprintf(out + used, outlen - used, "\\%c", c);
		else if (c >= 0x20 && c < 0x7f)
			out[used++] = (char)c;
		else
			used += (size_t)snprintf(out + used, outlen - used, "\\x%02x", c);
	}
	if (shown < s.n && used + 4 < outlen) {
		memcpy(out + used, "...", 3);
		used += 3;
	}
	if (used + 1 < outlen)
		out[used++] = '"';
	out[used] = '\0';
}

/* Writes `bad -x stream "TEXT": ` + the reason, where the reason's %S
 * directives (no other directives are used) quote a struct span. Returns -1. */
static int fail(char *err, size_t errlen, struct span text, const char *reason, ...)
{
	if (err == NULL || errlen == 0)
		return -1;
	err[0] = '\0';
	snprintf(err, errlen, "bad -x stream ");
	quote(err, errlen, text);
	strncat(err, ": ", errlen - strlen(err) - 1);
	va_list ap;
	va_start(ap, reason);
	for (const char *r = reason; *r != '\0'; r++) {
		size_t used = strlen(err);
		if (r[0] == '%' && r[1] == 'S') {
			quote(err, errlen, va_arg(ap, struct span));
			r++;
		} else if (used + 1 < errlen) {
			err[used] = *r;
			err[used + 1] = '\0';
		}
	}
	va_end(ap);
	return -1;
}

static int valid_ipv6(struct span s)
{
	char buf[QA_HOST_MAX + 1];
	unsigned char addr[16];
	const char *zone = memchr(s.p, '%', s.n);
	size_t addr_len = zone != NULL ? (size_t)(zone - s.p) : s.n;
	if (addr_len == 0 || addr_len >= sizeof buf)
		return 0;
	if (zone != NULL) { /* a zone id: fe80::1%eth0 */
		size_t zn = s.n - addr_len - 1;
		if (zn == 0)
			return 0;
		for (size_t i = 0; i < zn; i++) {
			char c = zone[1 + i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
				return 0;
		}
	}
	memcpy(buf, s.p, addr_len);
	buf[addr_len] = '\0';
	return inet_pton(AF_INET6, buf, addr) == 1;
}

/* A DNS name or IPv4 address: dot-separated labels of 1..63 characters of
 * [A-Za-z0-9_-], an optional trailing dot, 253 characters at most. */
static int valid_hostname(struct span s)
{
	size_t n = s.n;
	if (n > 0 && s.p[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return 0;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s.p[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return label > 0;
}

/* Stores the host without brackets; returns 0 when it is valid. */
static int set_host(struct qa_stream *s, struct span v)
{
	if (v.n >= 2 && v.p[0] == '[' && v.p[v.n - 1] == ']') {
		struct span inner = {v.p + 1, v.n - 2};
		if (!valid_ipv6(inner))
			return -1;
		v = inner;
	} else if (memchr(v.p, ':', v.n) != NULL) {
		if (!valid_ipv6(v))
			return -1;
	} else if (!valid_hostname(v)) {
		return -1;
	}
	if (v.n > QA_HOST_MAX)
		return -1;
	memcpy(s->host, v.p, v.n);
	s->host[v.n] = '\0';
	return 0;
}

/* Digits only, 1..65535 (leading zeros allowed). */
static int set_port(struct qa_stream *s, struct span v)
{
	unsigned long port = 0;
	if (v.n == 0)
		return -1;
	for (size_t i = 0; i < v.n; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return -1;
		port = port * 10 + (unsigned long)(v.p[i] - '0');
		if (port > 65535)
			return -1;
	}
	if (port == 0)
		return -1;
	s->port = (uint16_t)port;
	return 0;
}

/* Any path without control characters (and, by the grammar, without ';' or ')'). */
static int set_ca_file(struct qa_stream *s, struct span v)
{
	if (v.n >= sizeof s->ca_file)
		return -1;
	for (size_t i = 0; i < v.n; i++)
		if ((unsigned char)v.p[i] < 0x20 || v.p[i] == 0x7f)
			return -1;
	memcpy(s->ca_file, v.p, v.n);
	s->ca_file[v.n] = '\0';
	return 0;
}

static int set_tls(struct qa_stream *s, struct span v)
{
	if (span_eq_ci(v, "on") || span_eq_ci(v, "yes") || span_eq_ci(v, "1"))
		s->tls = 1;
	else if (span_eq_ci(v, "off") || span_eq_ci(v, "no") || span_eq_ci(v, "0"))
		s->tls = 0;
	else
		return -1;
	return 0;
}

/* Parses one key=value; seen tracks duplicates. */
static int parse_param(struct qa_stream *s, struct span text, struct span param, unsigned *seen,
                       char *err, size_t errlen)
{
	const char *eq = memchr(param.p, '=', param.n);
	if (eq == NULL)
		return fail(err, errlen, text, "missing \"=\" in parameter %S", param);
	struct span key = trim((struct span){param.p, (size_t)(eq - param.p)});
	struct span value = trim((struct span){eq + 1, param.n - (size_t)(eq - param.p) - 1});
	if (key.n == 0)
		return fail(err, errlen, text, "missing key before \"=\" in parameter %S", param);
	int k = 0;
	while (k < KEY_COUNT && !span_eq_ci(key, keys[k].name))
		k++;
	if (k == KEY_COUNT)
		return fail(err, errlen, text, "unknown key %S", key);
	if (!(keys[k].schemes & (1u << s->scheme))) {
		struct span sch = {scheme_names[s->scheme], strlen(scheme_names[s->scheme])};
		return fail(err, errlen, text, "key %S is not allowed in %S", key, sch);
	}
	if (*seen & (1u << k))
		return fail(err, errlen, text, "duplicate key %S", key);
	*seen |= 1u << k;
	if (value.n == 0)
		return fail(err, errlen, text, "empty value for key %S", key);
	int rc = 0;
	switch ((enum key_id)k) {
	case KEY_HOST:
		rc = set_host(s, value);
		break;
	case KEY_PORT:
		rc = set_port(s, value);
		break;
	case KEY_TRUSTED_CERTIFICATES:
		rc = set_ca_file(s, value);
		break;
	case KEY_TLS:
		rc = set_tls(s, value);
		break;
	case KEY_COUNT:
		break;
	}
	if (rc != 0) {
		static const char *const why[KEY_COUNT] = {
		    [KEY_HOST] = "bad host %S (a DNS name, an IPv4 or an IPv6 address)",
		    [KEY_PORT] = "bad port %S (digits, 1..65535)",
		    [KEY_TRUSTED_CERTIFICATES] = "bad trusted_certificates %S",
		    [KEY_TLS] = "bad tls %S (on or off)",
		};
		return fail(err, errlen, text, why[k], value);
	}
	return 0;
}

int qa_stream_parse(const char *text_c, struct qa_stream *s, char *err, size_t errlen)
{
	struct span text = {text_c, strlen(text_c)};
	struct span all = trim(text);
	memset(s, 0, sizeof *s);
	snprintf(s->host, sizeof s->host, "%s", QA_STREAM_DEFAULT_HOST);
	s->port = QA_STREAM_DEFAULT_PORT;
	if (err != NULL && errlen > 0)
		err[0] = '\0';

	if (all.n == 0)
		return fail(err, errlen, text, "empty stream");
	const char *open = memchr(all.p, '(', all.n);
	struct span scheme = trim((struct span){all.p, open ? (size_t)(open - all.p) : all.n});
	if (scheme.n == 0)
		return fail(err, errlen, text, "missing scheme before \"(\" (tcpip, tls or auto)");
	int sc = 0;
	while (sc <= QA_SCHEME_AUTO && !span_eq_ci(scheme, scheme_names[sc]))
		sc++;
	if (sc > QA_SCHEME_AUTO)
		return fail(err, errlen, text, "unknown scheme %S (tcpip, tls or auto)", scheme);
	s->scheme = (enum qa_scheme)sc;
	s->tls = s->scheme == QA_SCHEME_TLS;
	if (open == NULL)
		return fail(err, errlen, text, "missing \"(\" after %S", scheme);

	const char *end = all.p + all.n;
	const char *close = memchr(open + 1, ')', (size_t)(end - open - 1));
	if (close == NULL)
		return fail(err, errlen, text, "missing \")\" (unbalanced parentheses)");
	if (memchr(open + 1, '(', (size_t)(close - open - 1)) != NULL)
		return fail(err, errlen, text,
		            "a second \"(\" inside the parameters "
		            "(unbalanced parentheses)");
	if (close + 1 < end && close[1] == ')')
		return fail(err, errlen, text,
		            "trailing junk %S after \")\" (unbalanced parentheses)",
		            (struct span){close + 1, (size_t)(end - close - 1)});
	if (close + 1 < end)
		return fail(err, errlen, text, "trailing junk %S after \")\"",
		            (struct span){close + 1, (size_t)(end - close - 1)});

	unsigned seen = 0;
	struct span params = trim((struct span){open + 1, (size_t)(close - open - 1)});
	const char *p = params.p;
	const char *pend = params.p + params.n;
	while (params.n > 0 && p <= pend) {
		const char *semi = memchr(p, ';', (size_t)(pend - p));
		const char *stop = semi != NULL ? semi : pend;
		struct span param = trim((struct span){p, (size_t)(stop - p)});
		if (param.n == 0) {
			/* Only one final ';' may close the list: "tcpip(host=a;)". */
			if (semi != NULL || p == params.p)
				return fail(err, errlen, text, "empty parameter");
			break;
		}
		if (parse_param(s, text, param, &seen, err, errlen) != 0)
			return -1;
		if (semi == NULL)
			break;
		p = semi + 1;
	}
	if (s->scheme == QA_SCHEME_AUTO && s->ca_file[0] != '\0' && !s->tls)
		return fail(err, errlen, text, "trusted_certificates needs tls=on in auto(...)");
	return 0;
}

int qa_stream_primary(const struct qa_stream *s, char *buf, size_t n)
{
	int v6 = strchr(s->host, ':') != NULL;
	int len = snprintf(buf, n, v6 ? "[%s]:%u" : "%s:%u", s->host, (unsigned)s->port);
	return (len < 0 || (size_t)len >= n) ? -1 : len;
}

int qa_stream_format(const struct qa_stream *s, char *buf, size_t n)
{
	int len =
	    snprintf(buf, n, "%s(host=%s;port=%u%s%s%s)", scheme_names[s->scheme], s->host,
	             (unsigned)s->port, s->scheme == QA_SCHEME_AUTO && s->tls ? ";tls=on" : "",
	             s->ca_file[0] != '\0' ? ";trusted_certificates=" : "", s->ca_file);
	return (len < 0 || (size_t)len >= n) ? -1 : len;
}
