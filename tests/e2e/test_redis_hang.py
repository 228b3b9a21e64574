"""A Redis that stops answering (SIGSTOP: what a partition looks like from the gateway)
does not close its connections. The gateway's Redis connections drop themselves when a
command has had no reply for 5 s (RT_REDIS_DEFAULT_TIMEOUT_MS): HELLOs are answered
(WELCOME without pool registration, as with Redis down), /healthz says degraded, and once
Redis answers again the workers reconnect and pushes flow."""

import os
import signal
import time

import pool
import qasync as q
from harness import msg


def test_silent_redis_is_dropped_then_pushes_resume(qagw, private_redis, uid):
    g = qagw(workers=("ml1",), redis=private_redis)
    pool.poll(lambda: g.admin.workers(), lambda ws: (ws.get("ml1") or {}).get("state") == "serving",
              5, "ml1 serving")
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        # A HELLO waits for its pool registration until the connection is dropped.
        c = q.Client("127.0.0.1", g.port("ml1"), timeout=20)
        c.hello(f"H-{uid}", primary=g.address("ml1"), flags=q.FLAG_PERSIST)
        waited = time.monotonic() - t0
        print(f"\n[silent redis] WELCOME after {waited:.1f} s")
        assert waited <= 8, waited
        c.close()
        st, body = g.admin.get("/healthz")
        assert st == 503 and any("redis" in r for r in body["reasons"]), (st, body)
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    # Redis answers again: a PERSIST agent on its primary gets its PUSH.
    A = f"A-{uid}"
    deadline = time.monotonic() + 15
    while True:
        c = pool.persist(g, "ml1", A, primary=g.address("ml1"))
        if c.welcome.on_primary and g.admin.get("/healthz")[0] == 200:
            break
        c.close()
        assert time.monotonic() < deadline, "gateway not healthy 15 s after Redis answered again"
        time.sleep(0.5)
    with q.Client("127.0.0.1", g.port("ml1")) as s:
        s.hello(f"S-{uid}")
        s.upload([msg(f"{A}\\q", body=b"after")], batch=1)
    pool.expect_push(c, 5)
    c.close()
