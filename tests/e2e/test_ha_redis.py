"""Issue 18: Redis under Sentinel. A master, a replica and three sentinels (qagwtest.sentinel,
the layout of docs/operations.md "High availability"); two qagw nodes (ml1+ml2, ml3) with
`[redis] sentinels` and `master_name`, and `[redis] port` pointing at a closed port, so
that only the sentinels can tell them where Redis is. 20 `qaagent run` agents exchange
messages (the fault suite's Traffic, with the history checker); three PERSIST probe
sessions, one on each worker, pinned to it, time their pushes. The sentinels list given to
qagw starts with a sentinel that is down and one that names the replica as the master
(stale): both are skipped.

The master is SIGKILLed. Shown:
- pushes resume within 10 s of the promotion (a probe message every 0.25 s to each probe
  until its PUSH comes);
- nothing acknowledged is lost (history checker), syncs never stop (Redis is not on the
  sync path);
- one live session per agent: a second HELLO of a probe's agent on another node ends the
  first one with ERROR superseded;
- the routing repairs itself after lost writes: replication is asynchronous, so before
  the kill the test writes into the replica (made writable) a record that names another
  worker for one probe's agent, as a master that died before replicating the last
  claims would leave it. That probe's session must end (retryable ERROR internal: the
  pool names another session) so that its agent's next HELLO claims the one session;
  and the claim, and its pushes, work again.
"""

from __future__ import annotations

import socketserver
import threading
import time

import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.pool import (expect_error_skipping_push, expect_push, expect_superseded, fetch_skipping_push, persist,
                           poll, send_one)
from qagwtest.sentinel import MASTER_NAME, SentinelSet
from qagwtest.traffic import Traffic

PRE_KILL_S = 3
POST_KILL_S = 8
DRAIN_S = 40
PUSH_RESUME_S = 10  # issue 18: pushes resume within 10 s of the promotion


class StaleSentinel(socketserver.ThreadingTCPServer):
    """A sentinel that answers every command with the replica's address as the master's,
    as a sentinel cut off from the others since before a failover would: qagw must see
    (ROLE) that it is not a master and go on to the next sentinel."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, replica_port: int) -> None:
        name = str(replica_port).encode()
        reply = b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(name), name)

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.server.asked += 1
                while True:  # one reply a command (RESP: *N, then N times $len and data)
                    head = self.rfile.readline()
                    if not head.startswith(b"*"):
                        return
                    for _ in range(int(head[1:])):
                        self.rfile.readline()
                        self.rfile.readline()
                    self.wfile.write(reply)

        super().__init__(("127.0.0.1", 0), Handler)
        self.asked = 0
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


def sentinel_sections(ss: SentinelSet, first=()) -> dict:
    """qagw's [redis] for ss: the sentinels after `first` (addresses tried before them);
    `port` points where nothing listens, so only the sentinels can tell where Redis is."""
    return {"redis": {"sentinels": ",".join(list(first) + [ss.conf]),
                      "master_name": MASTER_NAME, "port": harness.free_port()}}


def push_round_trip(gw, worker: str, probe: q.Client, probe_id: str, sender: str,
                    timeout: float) -> float:
    """Sends a message to probe every 0.25 s until a PUSH arrives; acknowledges it and
    fetches. Returns time.monotonic() at the PUSH."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            send_one(gw, worker, sender, f"{probe_id}\\q")
        except (OSError, q.ServerError, AssertionError):
            pass  # the upload itself does not need Redis; count only the PUSH
        try:
            p = expect_push(probe, 0.25)
        except AssertionError:
            continue
        t = time.monotonic()
        probe.send(q.PushAck(p.push_id))
        fetch_skipping_push(probe)
        return t
    raise AssertionError(f"no PUSH to {probe_id} within {timeout}s")


def sentinel_pool(qagw, ss: SentinelSet, sec: dict, store_=None) -> dict:
    """Two nodes, n1 (ml1, ml2) and n2 (ml3), on the sentinels of sec ({worker: gateway}),
    once each says Redis is up."""
    n1 = qagw(workers=("ml1", "ml2"), node="n1", sections=sec, redis=ss.master, store_=store_)
    n2 = qagw(workers=("ml3",), node="n2", sections=sec, redis=ss.master, store_=store_)
    for g in (n1, n2):
        poll(lambda g=g: g.admin.metrics(), lambda m: m.get("qagw_redis_up") == 1, 10,
             f"{g.node}: redis up through the sentinels")
    return {"ml1": n1, "ml2": n1, "ml3": n2}


def open_probes(gws: dict, uid: str) -> dict:
    """{worker: (agent id, PERSIST session pinned to it)}, one per worker, each pushed once."""
    probes = {}
    for w, g in gws.items():
        pid = f"P{w}-{uid}"
        probes[w] = (pid, persist(g, w, pid, primary=g.address(w)))
        assert probes[w][1].welcome.on_primary
        push_round_trip(g, w, probes[w][1], pid, f"S-{uid}", 5)
    return probes


def after_failover(gws: dict, probes: dict, uid: str, since: float, timeout: float) -> dict:
    """Each probe's first PUSH after `since` (seconds, per worker; within timeout of now),
    then one live session per agent: a second HELLO of ml1's probe agent on ml3 (the other
    node) ends the first with ERROR superseded, and a third, on ml1 again (the probe back on
    its primary), ends the second."""
    resumed = {}
    for w, (pid, c) in probes.items():
        resumed[w] = push_round_trip(gws[w], w, c, pid, f"S-{uid}", timeout) - since
    pid, first = probes["ml1"]
    primary = gws["ml1"].address("ml1")
    second = persist(gws["ml3"], "ml3", pid, primary=primary)
    # push_round_trip sent a message every 0.25 s until one was pushed: the later ones'
    # PUSHes may still be on their way to first
    expect_superseded(first, 5, skip_pushes=True)
    third = persist(gws["ml1"], "ml1", pid, primary=primary)
    expect_superseded(second, 5, skip_pushes=True)
    probes["ml1"] = (pid, third)
    return resumed


def test_redis_master_sigkilled_under_sentinel(sentinels, qagw, agent, uid, tmp_path,
                                               redis_prefix):
    ss = sentinels
    # listed first: a sentinel that is down, and one that names the replica
    stale = StaleSentinel(ss.replica.port)
    sec = sentinel_sections(ss, [f"127.0.0.1:{harness.free_port()}", f"127.0.0.1:{stale.port}"])
    gws = sentinel_pool(qagw, ss, sec)
    n1, n2 = gws["ml1"], gws["ml3"]
    for g in (n1, n2):
        assert "named by a sentinel, is not a master (ROLE slave)" in g.log.read_text(), \
            harness.tail(g.log, 20)
    assert stale.asked >= 1
    stale.shutdown()
    probes = {}
    tr = None
    try:
        probes = open_probes(gws, uid)

        tr = Traffic(agent, tmp_path, [gws[w].stream(w) for w in gws], uid)
        tr.start_runs()
        tr.start_senders(seed=uid)
        tr.flowing(PRE_KILL_S)

        # a write the dead master will not have replicated: ml2's probe named ml3's
        stale_id = probes["ml2"][0]
        ss.replica.command("CONFIG", "SET", "replica-read-only", "no")
        ss.replica.command("HSET", f"{redis_prefix}agent:{stale_id}", "worker", "ml3",
                           "epoch", "999999")

        old_port = ss.master.port
        t_kill = time.monotonic()
        ss.master.kill()
        t_prom = ss.wait_promoted(old_port)
        print(f"\nmaster :{old_port} SIGKILLed; sentinels promoted "
              f":{ss.current_master()[1]} {t_prom - t_kill:.2f}s later")

        # the stale record: ml2's probe is ended (retryable), its agent claims again
        refused = probes["ml2"][1]
        err = expect_error_skipping_push(refused, PUSH_RESUME_S)
        assert (err.code, err.retryable) == (q.E_INTERNAL, 1), err
        t_refused = time.monotonic()
        probes["ml2"] = (stale_id, persist(n1, "ml2", stale_id, primary=n1.address("ml2")))
        assert probes["ml2"][1].welcome.on_primary

        resumed = after_failover(gws, probes, uid, t_prom, PUSH_RESUME_S)
        print(f"stale session of {stale_id} ended {t_refused - t_prom:.2f}s after the "
              f"promotion; first PUSH after the promotion, per probe (s): "
              f"{ {w: round(v, 2) for w, v in resumed.items()} }")
        assert all(v <= PUSH_RESUME_S for v in resumed.values()), resumed

        time.sleep(max(0.0, POST_KILL_S - (time.monotonic() - t_kill)))
        tr.check_alive()
    finally:
        if tr is not None:
            tr.stop_senders()
    rep = tr.finish(DRAIN_S)
    print(f"sent {tr.sent} messages; {rep.line()}")
    rcs = tr.stop_runs()
    for _, c in probes.values():
        c.close()
    rep.assert_ok()
    assert rep.pending == 0, rep.details()
    assert rep.acked >= 50, rep.details()
    assert all(v == 0 for v in rcs.values()), rcs
    for g in (n1, n2):
        assert g.alive()
        log = g.log.read_text(errors="replace")
        assert "the sentinels switched the master" in log or "names 127.0.0.1:" in log, \
            harness.tail(g.log, 30)


@pytest.mark.long
def test_redis_failovers_back_and_forth_long(sentinels, qagw, agent, uid, tmp_path):
    """The long variant: three failovers under 20 agents of traffic, each time the killed
    master started again (the sentinels make it a replica of the new one) before the next
    kill, so the master moves back and forth. After each promotion pushes resume within
    10 s and one session per agent holds; nothing acknowledged is lost."""
    ss = sentinels
    gws = sentinel_pool(qagw, ss, sentinel_sections(ss))
    probes = open_probes(gws, uid)
    tr = Traffic(agent, tmp_path, [gws[w].stream(w) for w in gws], uid)
    try:
        tr.start_runs()
        tr.start_senders(seed=uid)
        for r in range(3):
            tr.flowing(PRE_KILL_S)
            port = ss.current_master()[1]
            victim = ss.server_at(port)
            t_kill = time.monotonic()
            victim.kill()
            t_prom = ss.wait_promoted(port)
            resumed = after_failover(gws, probes, uid, t_prom, PUSH_RESUME_S)
            print(f"\nround {r + 1}: master :{port} killed, promoted in "
                  f"{t_prom - t_kill:.2f}s; pushes resumed (s) "
                  f"{ {w: round(v, 2) for w, v in resumed.items()} }")
            assert all(v <= PUSH_RESUME_S for v in resumed.values()), resumed
            victim.start()  # back as a replica of the new master (the sentinels say so)
            poll(lambda: victim.command("ROLE")[0], lambda role: role == "slave", 30,
                 f":{port} a replica again")
    finally:
        tr.stop_senders()
    rep = tr.finish(DRAIN_S)
    rcs = tr.stop_runs()
    for _, c in probes.values():
        c.close()
    print(f"sent {tr.sent} messages; {rep.line()}")
    rep.assert_ok()
    assert rep.pending == 0, rep.details()
    assert all(v == 0 for v in rcs.values()), rcs


def test_no_sentinel_answers_then_they_do(run_dir, qagw, uid):
    """Issue 18, the dead-dependency path: every sentinel of the list is down when the node
    starts. The node serves anyway (syncs do not need Redis: an upload is stored), says
    Redis is down (qagw_redis_up 0, /healthz 503) and logs once that no sentinel named a
    master (once for each Redis connection); when the sentinels (and their master) start, on the same ports, the node
    finds the master by itself and pushes work."""
    ss = SentinelSet(run_dir / f"sentinel-late-{uid}")
    sec = sentinel_sections(ss)
    g = qagw(workers=("ml1",), sections=sec, redis=ss.master)
    try:
        m = poll(lambda: g.admin.metrics(), lambda m: m.get("qagw_redis_up") == 0, 10,
                 "qagw_redis_up 0 with every sentinel down")
        assert g.admin.get("/healthz")[0] == 503
        send_one(g, "ml1", f"S-{uid}", f"R-{uid}\\q")  # stored without Redis
        time.sleep(1.0)  # a few rounds of asking
        log = g.log.read_text(errors="replace")
        for conn in ("n1/node", "ml1", "ml1/sub"):  # once a connection, not once a round
            assert log.count(f'redis {conn}: no sentinel named a master for "qagwha"') == 1, \
                harness.tail(g.log, 20)
        ss.start()
        poll(lambda: g.admin.metrics(), lambda m: m.get("qagw_redis_up") == 1, 15,
             "qagw_redis_up 1 once the sentinels are up")
        pid = f"P-{uid}"
        c = persist(g, "ml1", pid, primary=g.address("ml1"))
        try:
            push_round_trip(g, "ml1", c, pid, f"S-{uid}", 5)
        finally:
            c.close()
        print(f"\nbefore: {m.get('qagw_redis_up')}; after the sentinels started: pushes work")
    finally:
        ss.shutdown()
        harness.rmtree(ss.base)
