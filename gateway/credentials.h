/* Agent credentials (docs/operations.md "Agent credentials"): tokens of 256 random
 * bits, shown once, kept in the store only as their SHA-256. Used by the
 * `qagw agent add|remove|list` command and by the admin API; and, on each
 * worker's thread, the defences around them: the failed-HELLO budget per
 * source address, and the end of live sessions whose token was removed. */
#ifndef GW_CREDENTIALS_H
#define GW_CREDENTIALS_H

#include <stdint.h>

struct gw_config;
struct gw_worker;

/* A fresh token (64 lowercase hex characters + NUL) and its SHA-256, as
 * qa_credentials keeps it. Returns 0, or -1 if the random source failed. */
int gw_token_new(char token[65], uint8_t sha256[32]) __attribute__((warn_unused_result));

/* `qagw -c FILE agent add|remove|list [ID]`: blocking, main thread only.
 * Returns the process exit status (0 ok, 1 failed, 2 usage). */
int gw_credentials_cli(const struct gw_config *c, int argc, char **argv);

/* ---- failed-HELLO budget (docs/design.md "Hostile HELLOs") ----
 * Per worker and source address (an IPv6 address by its /64): a HELLO
 * answered ERROR auth is a failure; GW_AUTH_BUDGET of them within
 * GW_AUTH_WINDOW_S put the address in back-off, GW_AUTH_BACKOFF_MIN_S at
 * first, doubled each time the address spends its budget again, at most
 * GW_AUTH_BACKOFF_MAX_S. While in back-off its HELLOs are answered ERROR
 * overloaded (retryable, so an agent sharing the address, behind a NAT,
 * comes back later) without a store lookup. The table holds at most
 * GW_AUTH_TABLE_MAX addresses; one without a failure for GW_AUTH_FORGET_S
 * is forgotten, and a full table forgets the least recent. */
#define GW_AUTH_BUDGET        10
#define GW_AUTH_WINDOW_S      60
#define GW_AUTH_BACKOFF_MIN_S 2
#define GW_AUTH_BACKOFF_MAX_S 300
#define GW_AUTH_FORGET_S      900
#define GW_AUTH_TABLE_MAX     4096

struct gw_auth_guard *gw_auth_guard_new(void);
void gw_auth_guard_free(struct gw_auth_guard *g);
/* Milliseconds of back-off left for the address of peer ("ip:port" or
 * "[ip6]:port"), 0 if it may HELLO. now_ms here and below: gw_mono_ms(). */
int64_t gw_auth_backoff_left(struct gw_auth_guard *g, const char *peer, int64_t now_ms);
/* A HELLO from peer was answered ERROR auth. Returns the back-off it
 * starts in ms (0: still within the budget). */
int64_t gw_auth_failed(struct gw_auth_guard *g, const char *peer, int64_t now_ms);
/* Addresses in the table (tests, logs). */
int gw_auth_guard_size(const struct gw_auth_guard *g);

/* ---- removed tokens (docs/design.md "Token removal") ----
 * Removing a token NOTIFYs the store's ST_TOKEN_CHANNEL; each worker
 * LISTENs on its HELLO connection and checks its live authenticated
 * sessions against qa_credentials in one statement: those whose token is
 * gone or replaced get ERROR auth. The check also runs whenever that
 * connection (re)connects (notifications may have been missed) and every
 * GW_REVOKE_SWEEP_S (tokens deleted with plain SQL). */
#define GW_REVOKE_SWEEP_S 30

/* Sets up w->revoke (auth = token only; NULL otherwise). -1: no memory. */
int gw_revoke_init(struct gw_worker *w) __attribute__((warn_unused_result));
/* The worker's HELLO connection came up (or went down). */
void gw_revoke_store_state(struct gw_worker *w, int up);
/* A notification on the HELLO connection. */
void gw_revoke_notified(struct gw_worker *w, const char *channel, const char *payload);
/* Before the worker's store connections are freed. */
void gw_revoke_free(struct gw_worker *w);

#endif
