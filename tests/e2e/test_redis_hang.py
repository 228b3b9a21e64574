"""A Redis that stops answering (SIGSTOP: what a partition looks like from the gateway)
does not close its connections. The gateway's Redis connections drop themselves when a
command has had no reply for 1 s (RT_REDIS_DEFAULT_TIMEOUT_MS): HELLOs are answered
(WELCOME without pool registration, as with Redis down), /healthz says degraded, and once
Redis answers again the workers reconnect and pushes flow."""

import os
import signal
import time

from qagwtest import pool
from qagwtest import qasync as q
from qagwtest.harness import msg


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


def test_hung_redis_stays_down_until_it_answers(qagw, private_redis, uid):
    """Issue 19 (1): with Redis stopped for 10 s and no traffic, the gateway finds it by
    itself (an idle connection is PINGed every 0.25 s, 1 s without a reply drops it) and,
    once found, never reports it up again while nothing answers: a reconnect completes its
    TCP connect (the kernel's backlog) but up means a reply was read. Sampled every 0.25 s:
    /healthz is 503 with qagw_redis_up 0 for at least 8 of the 10 s, in every sample from
    the first such one on; after SIGCONT both are back within 5 s."""
    g = qagw(workers=("ml1",), redis=private_redis)
    pool.poll(lambda: g.admin.workers(), lambda ws: (ws.get("ml1") or {}).get("state") == "serving",
              5, "ml1 serving")
    samples = []
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 10:
            st, _ = g.admin.get("/healthz")
            up = g.admin.metrics().value("qagw_redis_up")
            samples.append((time.monotonic() - t0, st, up))
            time.sleep(0.25)
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    t_cont = time.monotonic()
    down = [s for s in samples if s[1] == 503 and s[2] == 0]
    first = down[0][0] if down else None
    healthy_after = [s for s in samples if first is not None and s[0] >= first and
                     (s[1] == 200 or s[2] != 0)]
    print(f"\n[hung redis] {len(samples)} samples, first 503 at "
          f"{None if first is None else round(first, 2)} s; healthy after that: "
          f"{len(healthy_after)}")
    assert first is not None and first <= 2.0, samples
    assert not healthy_after, f"reported healthy while Redis was stopped: {healthy_after}"
    pool.poll(lambda: (g.admin.get("/healthz")[0], g.admin.metrics().value("qagw_redis_up")),
              lambda v: v == (200, 1), 5, "healthy again within 5 s of SIGCONT")
    print(f"[hung redis] healthy {time.monotonic() - t_cont:.1f} s after SIGCONT")
