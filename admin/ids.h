/* Message ids on the admin port: admin.md accepts a UUID in its canonical
 * form (8-4-4-4-12, with dashes) or as 32 hex digits, either case, and
 * always writes the canonical lowercase form. Pure functions; unit-tested. */
#ifndef ADM_IDS_H
#define ADM_IDS_H

#include <stdint.h>

#define ADM_UUID_STR 37 /* canonical form and its NUL */

/* Parses s into out. Returns 0, or -1 when s is neither form. */
int adm_uuid_parse(const char *s, uint8_t out[16]) __attribute__((warn_unused_result));

/* Writes the canonical lowercase form of id into out. */
void adm_uuid_format(const uint8_t id[16], char out[ADM_UUID_STR]);

#endif
