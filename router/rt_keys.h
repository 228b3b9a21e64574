/* The names of the pool's Redis keys and channels: one place for the router (rt_pool.c),
 * the node (gateway/node.c) and the admin port (admin/api_*.c), which read and write the
 * same keys. Each name is the part after the configured prefix ([redis] prefix, "P"
 * below); a name ending in ':' is followed by a worker NAME, an agent ID or a message
 * id. Types, writers and fields: docs/design.md "Redis: routing state".
 *
 * Build a key as "%s" RT_KEY_AGENT "%s" with the prefix and the id, or in the admin port
 * adm_key(r, key, size, RT_KEY_AGENT "%s", id). The router's scripts (router/lua/) spell
 * the same names after P (P..'agent:'..a); tests/unit/test_gw_keys.c checks that every
 * name they use is one of these. */
#ifndef RT_KEYS_H
#define RT_KEYS_H

#define RT_KEY_WORKERS    "workers"     /* set: every worker that has registered */
#define RT_KEY_WORKER     "worker:"     /* NAME: hash, the heartbeat (expires 3 s) */
#define RT_KEY_WORKERINFO "workerinfo:" /* NAME: hash, no expiry: a worker that is down */
#define RT_KEY_ASSIGNED   "assigned:"   /* NAME: set, agents the router assigned to NAME */
#define RT_KEY_PRIMARIES  "primaries:"  /* NAME: set, agents whose primary is NAME */
#define RT_KEY_UNRESOLVED "unresolved"  /* set: agents pinned to a primary no worker is */
#define RT_KEY_MARKER     "marker:"     /* NAME: string, absent only in an emptied Redis */
#define RT_KEY_SWEEP      "sweep:"      /* NAME: string, who moves a lost worker's agents */
#define RT_KEY_AGENT      "agent:"      /* ID: hash, primary, pinned and the session */
#define RT_KEY_AGENTPUSH  "agentpush:"  /* ID: hash, the agent's push counters */
#define RT_KEY_EPOCH      "epoch"       /* counter: session epochs */
#define RT_KEY_PUSHSTATS  "pushstats:"  /* NAME: hash, the worker's push counters */
#define RT_KEY_PUSHLAT    "pushlat:"    /* NAME: list, recent push latencies (ms) */
#define RT_KEY_PUSHEVENTS "pushevents"  /* list: the last 100 push events (JSON) */
#define RT_KEY_NOTIFIED   "notified:"   /* MSGID: string, the node routing a NOTIFY */

#define RT_CHAN_PUSH "push:" /* NAME: pushes for the agents whose primary is NAME */
#define RT_CHAN_CTL  "ctl:"  /* NAME: supersede, drain/resume, reassign for worker NAME */

#endif
