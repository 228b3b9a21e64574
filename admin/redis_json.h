/* Redis replies (hiredis 0.14, RESP2) turned into jansson values, so that a
 * request can keep what a reply said after hiredis frees it, and the field
 * conversions of docs/design.md "Redis: routing state" live in one place.
 * Pure: only hiredis's reply struct, no connection; unit-tested. */
#ifndef ADM_REDIS_JSON_H
#define ADM_REDIS_JSON_H

#include <hiredis/hiredis.h>
#include <jansson.h>

/* HGETALL: an object of strings ({} for a missing key). NULL when r is NULL
 * (no reply), an error or not an array. Values that are not valid UTF-8
 * are left out. */
json_t *adm_hash_from_reply(const redisReply *r);

/* SMEMBERS / LRANGE: an array of strings, or NULL as above. */
json_t *adm_list_from_reply(const redisReply *r);

/* An integer reply (SCARD, SISMEMBER), or -1 when r is not one. */
long long adm_int_from_reply(const redisReply *r);

/* Field conversions from a hash of strings:
 * str: the string, or null when absent (or "" with empty_is_null);
 * int: a JSON integer, or null when absent or not a decimal integer;
 * num: a JSON number (integer when whole), or null;
 * bool: true for "1", false for "0", null otherwise. */
json_t *adm_hash_str(const json_t *h, const char *key, int empty_is_null);
json_t *adm_hash_int(const json_t *h, const char *key);
json_t *adm_hash_num(const json_t *h, const char *key);
json_t *adm_hash_bool(const json_t *h, const char *key);

#endif
