/* One hiredis async connection driven by a libevent loop, with its own
 * reconnect (backoff 250 ms doubling to 2 s) and AUTH. Used by each worker
 * (commands, and a second connection for SUBSCRIBE) and by the node's main
 * thread. Everything runs on the owning loop's thread.
 *
 * With Redis Sentinel (conf.sentinels), each connect first asks a sentinel
 * for the master (SENTINEL get-master-addr-by-name), checks ROLE on what it
 * reaches, and a second connection to a sentinel, subscribed to
 * +switch-master, drops the connection when the master moves. A sentinel
 * that is down, silent or names a server that is not a master is skipped
 * for the next one. Debian 12's hiredis (0.14) has no Sentinel support. */
#ifndef RT_REDIS_H
#define RT_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

struct event_base;
struct rt_redis;

/* A command's reply; r is NULL when the command could not complete (the
 * connection is down or broke). r is freed by hiredis after the call. */
typedef void (*rt_reply_fn)(void *arg, redisReply *r);

/* Called when the connection comes up (up = 1) or goes down (up = 0). On
 * up, a subscriber re-issues its SUBSCRIBE here. */
typedef void (*rt_state_fn)(void *arg, int up);

/* Where the Redis is: host and port, or sentinels and a master name. */
#define RT_REDIS_MAX_SENTINELS 8
struct rt_redis_conf {
	const char *host;
	int port;
	const char *password;    /* NULL or empty: no AUTH */
	const char *sentinels;   /* "HOST:PORT[,HOST:PORT...]" ([v6]:PORT too); NULL or
	                          * empty: host and port */
	const char *master_name; /* the master's name at the sentinels */
};

/* One sentinel address. */
struct rt_addr {
	char host[256];
	int port;
};

/* Parses a sentinels list into out (at most max). Returns the count, or -1
 * with a reason in err. Also used by the configuration check. */
int rt_redis_parse_sentinels(const char *list, struct rt_addr *out, int max, char *err,
                             size_t errlen);

struct rt_redis *rt_redis_new(struct event_base *base, const struct rt_redis_conf *conf,
                              const char *name, rt_state_fn on_state, void *arg);
void rt_redis_free(struct rt_redis *r);
int rt_redis_is_up(const struct rt_redis *r);

/* Commands without a reply for this long drop the connection (their
 * callbacks get NULL) and it reconnects; 0: never. Redis answers in
 * microseconds: 1 s without a reply is a hung or unreachable server, and
 * /healthz must say so within ~2 s (issue 19). An idle command connection
 * is PINGed every RT_REDIS_IDLE_PING_MS; the watchdog looks every
 * RT_REDIS_WATCH_MS. */
#define RT_REDIS_DEFAULT_TIMEOUT_MS 1000
#define RT_REDIS_IDLE_PING_MS       250
#define RT_REDIS_WATCH_MS           250
void rt_redis_set_timeout(struct rt_redis *r, int ms);
/* Drops the connection now (pending callbacks get NULL); it reconnects. */
void rt_redis_reset(struct rt_redis *r);

/* Sends a command (hiredis format string). Returns 0, or -1 when the
 * connection is down (fn is then never called). fn may be NULL. */
int rt_redis_command(struct rt_redis *r, rt_reply_fn fn, void *arg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An EVAL (argv[0] "EVAL", argv[1] a script that stays at its address, no
 * argvlen) goes as EVALSHA, and again as EVAL if Redis has not the script. */
int rt_redis_commandv(struct rt_redis *r, rt_reply_fn fn, void *arg, int argc, const char **argv,
                      const size_t *argvlen);

/* Subscriber connections: fn is called for every message on the channels
 * (message payload in msg, its length in len). Re-subscribe on each up. */
typedef void (*rt_message_fn)(void *arg, const char *channel, const char *msg, size_t len);
int rt_redis_subscribe(struct rt_redis *r, const char *const *channels, int n, rt_message_fn fn,
                       void *arg);

#endif
