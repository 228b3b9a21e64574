/* The router's Redis scripts, one file each under router/lua/ (their KEYS, ARGV and
 * replies are documented at the top of each file), embedded at build time by
 * scripts/embed.sh into $(BUILD)/gen/router_lua.c. Used by rt_pool.c, and by the admin
 * port for an operator's primary change (rt_lua_set_primary).
 *
 * Send one as rt_redis_commandv(r, fn, arg, argc, {"EVAL", rt_lua_NAME, ...}, NULL):
 * rt_redis.c sends it as EVALSHA (the SHA-1 is cached per connection by the script's
 * address, which these arrays keep for the life of the process) and again as EVAL
 * when Redis answers NOSCRIPT. */
#ifndef RT_SCRIPTS_H
#define RT_SCRIPTS_H

extern const char rt_lua_claim[];       /* claim.lua: a session's claim or announce */
extern const char rt_lua_release[];     /* release.lua: a session's end */
extern const char rt_lua_route[];       /* route.lua: a push to its primary (or session) */
extern const char rt_lua_account[];     /* account.lua: a push result's accounting */
extern const char rt_lua_view[];        /* view.lua: the pool as the router sees it */
extern const char rt_lua_move_away[];   /* move_away.lua: a sweep's batch off a worker */
extern const char rt_lua_move_to[];     /* move_to.lua: a joining worker's rebalance batch */
extern const char rt_lua_refill[];      /* refill.lua: primaries from the store */
extern const char rt_lua_set_primary[]; /* set_primary.lua: an operator's primary */
extern const char rt_lua_retire[];      /* retire.lua: an operator removes a worker */

#endif
