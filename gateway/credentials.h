/* Agent credentials (gateway.md "Authentication"): tokens of 256 random
 * bits, shown once, kept in the store only as their SHA-256. Used by the
 * `qagw agent add|remove|list` command and by the admin API. */
#ifndef GW_CREDENTIALS_H
#define GW_CREDENTIALS_H

#include <stdint.h>

struct gw_config;

/* A fresh token (64 lowercase hex characters + NUL) and its SHA-256, as
 * qa_credentials keeps it. Returns 0, or -1 if the random source failed. */
int gw_token_new(char token[65], uint8_t sha256[32]) __attribute__((warn_unused_result));

/* `qagw -c FILE agent add|remove|list [ID]`: blocking, main thread only.
 * Returns the process exit status (0 ok, 1 failed, 2 usage). */
int gw_credentials_cli(const struct gw_config *c, int argc, char **argv);

#endif
