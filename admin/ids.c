/* UUID parsing and formatting; see ids.h. libuuid does the work: its
 * uuid_parse takes only the canonical (dashed) form, so the 32-digit form is
 * given its dashes first. */
#include "admin/ids.h"

#include <string.h>
#include <uuid/uuid.h>

int adm_uuid_parse(const char *s, uint8_t out[16])
{
	size_t len = strlen(s);
	if (len == ADM_UUID_STR - 1)
		return uuid_parse(s, out) == 0 ? 0 : -1;
	if (len != 32)
		return -1;
	/* Dashes before hex digits 8, 12, 16 and 20; a dash among the 32 lands
	 * where uuid_parse wants a hex digit and is refused there. */
	char canon[ADM_UUID_STR];
	char *p = canon;
	for (int i = 0; i < 32; i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			*p++ = '-';
		*p++ = s[i];
	}
	*p = 0;
	return uuid_parse(canon, out) == 0 ? 0 : -1;
}

void adm_uuid_format(const uint8_t id[16], char out[ADM_UUID_STR])
{
	uuid_unparse_lower(id, out);
}
