/* UUID parsing and formatting; see ids.h. */
#include "admin/ids.h"

#include <stdio.h>
#include <string.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int adm_uuid_parse(const char *s, uint8_t out[16])
{
	size_t len = strlen(s);
	int dashed;
	if (len == 36)
		dashed = 1;
	else if (len == 32)
		dashed = 0;
	else
		return -1;
	/* Dashes sit before hex digits 8, 12, 16 and 20, and nowhere else. */
	const char *p = s;
	for (int i = 0; i < 32; i++) {
		if (dashed && (i == 8 || i == 12 || i == 16 || i == 20) && *p++ != '-')
			return -1;
		int v = hexval(*p++);
		if (v < 0)
			return -1;
		if (i % 2 == 0)
			out[i / 2] = (uint8_t)(v << 4);
		else
			out[i / 2] |= (uint8_t)v;
	}
	return 0;
}

void adm_uuid_format(const uint8_t id[16], char out[ADM_UUID_STR])
{
	static const char hex[] = "0123456789abcdef";
	char *p = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[id[i] >> 4];
		*p++ = hex[id[i] & 15];
	}
	*p = 0;
}
