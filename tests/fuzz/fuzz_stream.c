/* libFuzzer target for the agent's -x STREAM parser (agent/qa_stream.c).
 * Beyond "no crash": an accepted stream must render (as text and as the HELLO
 * primary) and the rendered text must parse back to the same stream; a
 * refused one must explain itself in a terminated message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/qa_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0'; /* argv strings end at the first NUL, as here */

	struct qa_stream s, again;
	char err[300];
	if (qa_stream_parse(text, &s, err, sizeof err) != 0) {
		if (strncmp(err, "bad -x stream \"", 15) != 0 || strlen(err) >= sizeof err)
			abort();
		free(text);
		return 0;
	}
	if (s.port == 0 || s.host[0] == '\0')
		abort();
	char rendered[QA_STREAM_TEXT_MAX], primary[QA_STREAM_TEXT_MAX];
	if (qa_stream_format(&s, rendered, sizeof rendered) < 0 ||
	    qa_stream_primary(&s, primary, sizeof primary) < 0)
		abort();
	if (qa_stream_parse(rendered, &again, err, sizeof err) != 0)
		abort();
	if (memcmp(&s, &again, sizeof s) != 0)
		abort();
	free(text);
	return 0;
}
