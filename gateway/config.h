/* qagw's configuration: the INI file of conf/qagw.conf, parsed
 * through one declarative table (section, key, type, default, reloadable).
 * Loaded once at start by the main thread; a SIGHUP reload parses into a fresh
 * copy and applies only the reloadable keys. Workers read it, never write it. */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include "router/rt_redis.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define GW_MAX_STORE_CONNS 32
#define GW_MAX_WORKERS     64
#define GW_MAX_ADVERTISE   8

struct gw_addr {
	char host[256]; /* as written, without IPv6 brackets */
	uint16_t port;
};

struct gw_worker_conf {
	char name[65];
	char listen[300];
	struct gw_addr listen_addr;
	struct sockaddr_storage sa; /* listen address, resolved at load */
	socklen_t sa_len;
	char advertise[1024]; /* as written; defaults to listen */
	struct gw_addr adv[GW_MAX_ADVERTISE];
	int n_adv;
	int tls;
	int capacity;
	int line; /* where the section starts, for messages */
};

struct gw_config {
	char path[1024];
	/* [node] */
	char node_name[65];
	int auth_off; /* auth = off */
	int drain_timeout;
	int allow_plaintext_tokens; /* auth = token on a non-loopback cleartext listener */
	char log_level[16];
	char log_file[1024]; /* empty: stderr; else appended to, reopened on SIGHUP */
	/* [worker NAME] */
	struct gw_worker_conf workers[GW_MAX_WORKERS];
	int n_workers;
	/* [store] */
	char conninfo[2048];
	int max_pending;
	int max_pending_per_sender;
	int64_t keep_ms;       /* keep_days: how long final messages are kept */
	int store_connections; /* per worker */
	int store_timeout;     /* seconds without an answer before a connection is dropped */
	/* [redis] */
	char redis_host[256];
	int redis_port;
	char redis_prefix[64];
	char redis_password[256];
	char redis_sentinels[1024]; /* "HOST:PORT,...": Sentinel instead of host and port */
	char redis_master_name[128];
	/* [admin] */
	char admin_listen[300];
	struct sockaddr_storage admin_sa;
	socklen_t admin_sa_len;
	char admin_token[256];
	char admin_allowed_hosts[1024]; /* comma-separated Host names besides loopback ones */
	/* [router] */
	double epsilon;
	int reassign_after;
	/* [push] */
	int push_any; /* policy = any */
	/* [tls] */
	char tls_cert[1024];
	char tls_key[1024];
	/* [limits] */
	uint32_t max_frame;
	int max_batch;
	int hello_timeout;
	int heartbeat;
	int max_sessions;
	int max_pending_hello;
	int max_pending_hello_per_ip;
	int tls_handshake_timeout;
	int max_output;
};

/* Parses path into c (defaults first). Returns 0, or -1 with a message naming
 * the file, line and key in err. Listen addresses must be numeric IPs (or
 * "localhost"), so loading never makes a DNS query. */
int gw_config_load(const char *path, struct gw_config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The weak spots of c that are allowed but worth an operator's attention:
 * [redis] host off loopback with no password, [store] conninfo reaching a
 * host off loopback with neither a password (nor passfile) nor sslmode=
 * require/verify-*. With out NULL each is logged at warn (start); else
 * written to out as "qagw: warning: ..." (--check). Never connects; parses
 * conninfo, so start only, off every hot path. Returns how many. */
int gw_config_warnings(const struct gw_config *c, FILE *out);

/* Where the pool's Redis is, for rt_redis_new (points into c). */
struct rt_redis_conf gw_config_redis(const struct gw_config *c);
/* What --check opens or resolves as the node would at start (issue 19):
 * [node] log_file can be written (the file, else its directory), and each
 * [store] conninfo host name (without hostaddr) resolves; a host name that
 * does resolve gets a warning on out (libpq resolves it with a blocking call
 * on the worker's loop). 0, or -1 with err naming the key. ([tls] cert and
 * key are loaded by the caller: gateway/tls.c.) */
int gw_config_check_opens(const struct gw_config *c, FILE *out, char *err, size_t errlen);

/* The configuration table, for tests and tooling: how many keys it has, and
 * key i's section ("node", ..., "worker" for every [worker NAME]), name and
 * default as the file would write it. Returns 0, or -1 when i is out of range
 * (then nothing is written). The strings are static. tests/unit/test_gw_config.c
 * holds conf/qagw.conf to this table. */
size_t gw_config_key_count(void);
int gw_config_key_at(size_t i, const char **section, const char **key, const char **def)
    __attribute__((warn_unused_result));

/* Parses "host:port" or "[v6]:port". Returns 0 or -1. */
int gw_addr_parse(const char *s, struct gw_addr *a);

/* 1 when the address is loopback (127.0.0.0/8 or ::1). */
int gw_sockaddr_is_loopback(const struct sockaddr *sa);

#endif
