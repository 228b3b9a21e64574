/* Failure reports of libqaagent: see qa_error.h. */
#include "agent/qa_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "proto/qs_codec.h"

int qa_error_set(struct qa_error *e, enum qa_fail kind, const char *fmt, ...)
{
	if (e == NULL)
		return -1;
	e->kind = kind;
	e->code = 0;
	e->retryable = 0;
	e->text[0] = '\0';
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return -1;
}

int qa_error_server(struct qa_error *e, uint16_t code, uint8_t retryable, const char *text,
                    size_t text_len)
{
	if (e == NULL)
		return -1;
	if (text_len > QA_ERROR_TEXT_MAX - 1) {
		/* Cut at a character boundary: the text stays valid UTF-8. */
		text_len = QA_ERROR_TEXT_MAX - 1;
		while (text_len > 0 && ((unsigned char)text[text_len] & 0xC0) == 0x80)
			text_len--;
	}
	qa_error_set(e, QA_FAIL_SERVER, "ERROR %s (code %u, %s): %.*s", qs_err_name(code),
	             (unsigned)code, retryable ? "retryable" : "not retryable", (int)text_len,
	             text);
	e->code = code;
	e->retryable = retryable ? 1 : 0;
	memcpy(e->text, text, text_len);
	e->text[text_len] = '\0';
	return -1;
}

int qa_error_is_final(const struct qa_error *e)
{
	return e->kind == QA_FAIL_USAGE || e->kind == QA_FAIL_STOPPED ||
	       (e->kind == QA_FAIL_SERVER && !e->retryable);
}

void qa_error_clear(struct qa_error *e)
{
	memset(e, 0, sizeof *e);
}
