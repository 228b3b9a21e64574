"""Issue 4: agent failover exactly as agent.md "Failover" (the seed's -x list, -fr, -fd),
proved against real qagw processes that are killed and restarted.

Topology: three qagw processes of one worker each, one pool (same PostgreSQL database,
same Redis prefix): n1 runs ml1, n2 runs ml2, n3 runs ml3. An agent's `-x` list names them
in its own order; its first entry is its primary. The schedule of attempts is read from the
trace the agent writes with `-trace FILE` (one JSON line per connection attempt, see
docs/agent.md): {"ts_ms", "phase", "cycle", "server", "stream", "try", "of", "result",
"outcome", "took_ms", ...}.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path
from typing import List

from qagwtest import harness
from qagwtest.traffic import json_lines, stop_run
from qagwtest import qasync as q
from qagwtest.pool import canonical, send_one

# Slack for "immediately" and for "within 150 ms of schedule" (the bound).
SCHEDULE_SLACK_MS = 150


def three_nodes(qagw):
    """n1 (ml1), n2 (ml2), n3 (ml3): one pool of three processes, one worker each."""
    return {w: qagw(workers=(w,), node=n) for w, n in (("ml1", "n1"), ("ml2", "n2"),
                                                        ("ml3", "n3"))}


def streams(gws, order):
    return [gws[w].stream(w) for w in order]


def read_trace(path: Path) -> List[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def next_event(lines, pred, timeout: float, seen: list, what: str):
    """The next event for which pred(ev) holds, within timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"qaagent run: no {what} within {timeout}s; saw {seen[-30:]}")
        try:
            ev = lines.get(timeout=left)
        except queue.Empty:
            continue
        if ev is None:
            raise AssertionError(f"qaagent run ended before {what}; saw {seen[-30:]}")
        seen.append(ev)
        if pred(ev):
            return ev


def no_event(lines, pred, seconds: float, seen: list, what: str):
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            ev = lines.get(timeout=left)
        except queue.Empty:
            return
        if ev is None:
            raise AssertionError(f"qaagent run ended while checking for no {what}; saw {seen[-30:]}")
        seen.append(ev)
        assert not pred(ev), f"unexpected {what}: {ev}; saw {seen[-30:]}"


def welcome_from(server):
    return lambda ev: ev.get("event") == "welcome" and ev.get("server") == server


# ---------------------------------------------------------------- must-show 1


def test_default_failover_reaches_first_alternate_at_once(qagw, agent, uid, tmp_path):
    """Primary killed under a running agent: its next cycle tries ml1 once and reaches
    ml2 right after (no delay between the failed attempt and the alternate)."""
    gws = three_nodes(qagw)
    trace = tmp_path / "trace-default.jsonl"
    a = agent(f"D-{uid}", *streams(gws, ("ml1", "ml2", "ml3")), extra=["-trace", str(trace)])
    errlog = tmp_path / "run-default.stderr"
    proc = a.popen("run", policy="ondemand", verbose=True, stderr_path=errlog)
    seen: list = []
    try:
        lines = json_lines(proc)
        w = next_event(lines, welcome_from("ml1"), 15, seen, "welcome from ml1")
        assert w["on_primary"] == 1, w
        time.sleep(1.2)  # a session older than the 1 s quick-loss guard
        killed_at = time.time() * 1000
        gws["ml1"].kill()
        w = next_event(lines, welcome_from("ml2"), 5, seen, "welcome from ml2")
        assert w["on_primary"] == 0 and w["primary"] == "ml1", w
        assert w["ts_ms"] - killed_at < 1000, (w, killed_at)
        tr = [t for t in read_trace(trace) if t["ts_ms"] >= killed_at - 5]
        assert [(t["server"], t["try"], t["of"], t["result"]) for t in tr[:2]] == \
            [("primary", 1, 1, "failed"), ("alt1", 1, 1, "welcome")], tr
        assert tr[0]["stream"] == gws["ml1"].stream("ml1") and \
            tr[1]["stream"] == gws["ml2"].stream("ml2"), tr
        assert tr[0]["cycle"] == tr[1]["cycle"] == 2, tr
        gap = tr[1]["ts_ms"] - (tr[0]["ts_ms"] + tr[0]["took_ms"])
        assert -2 <= gap < SCHEDULE_SLACK_MS, f"alternate tried {gap} ms after the primary failed: {tr}"
        # the -v log shows the same attempts, with their times
        log = errlog.read_text()
        # (connection refused, or reset when the dying process had still accepted it)
        assert f"attempt primary {gws['ml1'].stream('ml1')} try 1/1: {tr[0]['outcome']}" in log, \
            log[-3000:]
        assert f"attempt alt1 {gws['ml2'].stream('ml2')} try 1/1: WELCOME from ml2" in log, log[-3000:]
    finally:
        rc = stop_run(proc)
    assert rc == 0, (rc, harness.tail(errlog))


def test_fr_fd_retries_primary_on_schedule_then_alternate_once(qagw, agent, uid, tmp_path):
    """-fr 3 -fd 1: attempts on ml1 at t, t+1, t+2, t+3 (each within 150 ms of schedule),
    then ml2 once, which answers."""
    gws = three_nodes(qagw)
    gws["ml1"].kill()
    trace = tmp_path / "trace-fr.jsonl"
    a = agent(f"F-{uid}", *streams(gws, ("ml1", "ml2", "ml3")),
              extra=["-fr", "3", "-fd", "1", "-trace", str(trace)])
    r = a.run("sync", verbose=True, timeout=30)
    assert r.rc == 0, repr(r)
    assert r.json()["server"] == "ml2" and r.json()["on_primary"] == 0, repr(r)
    tr = read_trace(trace)
    assert [(t["server"], t["try"], t["of"], t["result"]) for t in tr] == \
        [("primary", i, 4, "failed") for i in (1, 2, 3, 4)] + [("alt1", 1, 1, "welcome")], tr
    assert all(t["stream"] == gws["ml1"].stream("ml1") for t in tr[:4]), tr
    t0 = tr[0]["ts_ms"]
    for i, t in enumerate(tr[:4]):
        off = t["ts_ms"] - (t0 + 1000 * i)
        assert -2 <= off <= SCHEDULE_SLACK_MS, f"try {i + 1} at t+{t['ts_ms'] - t0} ms: {tr}"
    # ml2 right after the last failure on ml1, no -fd delay before an alternate
    gap = tr[4]["ts_ms"] - (tr[3]["ts_ms"] + tr[3]["took_ms"])
    assert -2 <= gap < SCHEDULE_SLACK_MS, tr
    # the -v log shows the schedule too
    for i in (1, 2, 3, 4):
        assert f"attempt primary {gws['ml1'].stream('ml1')} try {i}/4: connect failed" in r.stderr, r.stderr

    # The same under `run`: on ml1, which is then killed; the next cycle follows the plan.
    gws["ml1"].start()
    trace.unlink()
    errlog = tmp_path / "run-fr.stderr"
    proc = a.popen("run", policy="ondemand", stderr_path=errlog)
    seen: list = []
    try:
        lines = json_lines(proc)
        next_event(lines, welcome_from("ml1"), 15, seen, "welcome from ml1")
        time.sleep(1.1)
        gws["ml1"].kill()
        w = next_event(lines, welcome_from("ml2"), 8, seen, "welcome from ml2")
        assert w["on_primary"] == 0, w
        tr = [t for t in read_trace(trace) if t["cycle"] == 2]
        assert [(t["server"], t["try"], t["result"]) for t in tr] == \
            [("primary", i, "failed") for i in (1, 2, 3, 4)] + [("alt1", 1, "welcome")], tr
        for i, t in enumerate(tr[:4]):
            off = t["ts_ms"] - (tr[0]["ts_ms"] + 1000 * i)
            assert -2 <= off <= SCHEDULE_SLACK_MS, f"try {i + 1} at t+{t['ts_ms'] - tr[0]['ts_ms']} ms: {tr}"
        gap = tr[4]["ts_ms"] - (tr[3]["ts_ms"] + tr[3]["took_ms"])
        assert -2 <= gap < SCHEDULE_SLACK_MS, tr
    finally:
        rc = stop_run(proc)
    assert rc == 0, (rc, harness.tail(errlog))


def test_primary_and_first_alternate_down_reaches_third_after_one_try_on_second(
        qagw, agent, uid, tmp_path):
    """ml1 and ml2 down, -fr 2 -fd 0.2: three attempts on ml1 (-fr applies to the primary
    only), exactly one on ml2, then ml3."""
    gws = three_nodes(qagw)
    gws["ml1"].kill()
    gws["ml2"].kill()
    trace = tmp_path / "trace-3rd.jsonl"
    a = agent(f"T-{uid}", *streams(gws, ("ml1", "ml2", "ml3")),
              extra=["-fr", "2", "-fd", "0.2", "-trace", str(trace)])
    r = a.run("sync", timeout=30)
    assert r.rc == 0 and r.json()["server"] == "ml3", repr(r)
    tr = read_trace(trace)
    assert [(t["stream"], t["result"]) for t in tr] == \
        [(gws["ml1"].stream("ml1"), "failed")] * 3 + \
        [(gws["ml2"].stream("ml2"), "failed"), (gws["ml3"].stream("ml3"), "welcome")], tr
    assert (tr[3]["server"], tr[3]["try"], tr[3]["of"]) == ("alt1", 1, 1), tr
    for i in (1, 2):
        off = tr[i]["ts_ms"] - (tr[i - 1]["ts_ms"] + tr[i - 1]["took_ms"]) - 200
        assert -2 <= off <= SCHEDULE_SLACK_MS, tr
    # and the same without -fr: one attempt each on ml1 and ml2
    trace.unlink()
    a = agent(f"T-{uid}", *streams(gws, ("ml1", "ml2", "ml3")), extra=["-trace", str(trace)])
    r = a.run("sync", timeout=30)
    assert r.rc == 0 and r.json()["server"] == "ml3", repr(r)
    assert [t["result"] for t in read_trace(trace)] == ["failed", "failed", "welcome"]


def test_all_down_sync_fails_naming_every_server(qagw, agent, uid, tmp_path):
    gws = three_nodes(qagw)
    for g in gws.values():
        g.kill()
    a = agent(f"X-{uid}", *streams(gws, ("ml1", "ml2", "ml3")), extra=["-fr", "1"])
    mid = a.send(f"Y-{uid}\\q", "kept")
    r = a.run("sync", timeout=30)
    assert r.rc == 1, repr(r)
    for w in ("ml1", "ml2", "ml3"):
        assert gws[w].stream(w) in r.stderr, f"{w} not named: {r!r}"
    assert "no server could be reached" in r.stderr and "Connection refused" in r.stderr, repr(r)
    assert a.status()["outgoing"] == 1, mid


def test_retryable_error_on_hello_fails_over_and_final_error_does_not(qagw, agent, uid, tmp_path):
    """A worker over max_sessions answers HELLO with ERROR overloaded (retryable): the
    agent moves on to the alternate. A non-retryable ERROR (superseded of a live run, here
    provoked by a second `run` of the same id) ends `run` with exit 3."""
    gws = three_nodes(qagw)
    full = qagw(workers=("ml9",), node="n9", limits={"max_sessions": 1})
    hog = q.Client("127.0.0.1", full.port("ml9"))
    try:
        hog.hello(f"H-{uid}", flags=q.FLAG_PERSIST)
        trace = tmp_path / "trace-over.jsonl"
        a = agent(f"O-{uid}", full.stream("ml9"), gws["ml2"].stream("ml2"),
                  extra=["-trace", str(trace)])
        r = a.run("sync", timeout=30)
        assert r.rc == 0 and r.json()["server"] == "ml2", repr(r)
        tr = read_trace(trace)
        assert tr[0]["result"] == "failed" and "overloaded" in tr[0]["outcome"], tr
        assert tr[1]["result"] == "welcome", tr
    finally:
        hog.close()
    # superseded is not retryable: the first `run` stops with exit 3 instead of failing over
    o = agent(f"S-{uid}", *streams(gws, ("ml1", "ml2", "ml3")))
    first = o.popen("run", policy="ondemand", stderr_path=tmp_path / "first.stderr")
    second = None
    seen: list = []
    try:
        lines = json_lines(first)
        next_event(lines, welcome_from("ml1"), 15, seen, "first run's welcome")
        second = o.popen("run", policy="ondemand", stderr_path=tmp_path / "second.stderr")
        err = next_event(lines, lambda e: e.get("event") == "error", 10, seen, "superseded")
        assert (err["name"], err["retryable"]) == ("superseded", 0), err
        assert first.wait(10) == 3, harness.tail(tmp_path / "first.stderr")
        assert not any(e.get("event") == "welcome" for e in seen[1:]), seen
    finally:
        stop_run(first)
        if second is not None:
            assert stop_run(second) == 0


def test_run_backs_off_after_a_cycle_where_everything_failed(qagw, agent, uid, tmp_path):
    """Step 5: every server down: `run` reports the failure naming every server, waits
    min(2^k, 300) s x [0.5, 1.5] (k = cycles failed in a row), then starts again at the
    primary; a server that comes back is reached at the next cycle."""
    gws = three_nodes(qagw)
    for g in gws.values():
        g.kill()
    trace = tmp_path / "trace-backoff.jsonl"
    a = agent(f"K-{uid}", *streams(gws, ("ml1", "ml2", "ml3")), extra=["-trace", str(trace)])
    errlog = tmp_path / "run-backoff.stderr"
    proc = a.popen("run", policy="ondemand", stderr_path=errlog)
    seen: list = []
    try:
        lines = json_lines(proc)
        u1 = next_event(lines, lambda e: e.get("event") == "unreachable", 10, seen, "unreachable")
        assert 1000 <= u1["retry_in_ms"] <= 3000, u1  # k = 1: 2 s x [0.5, 1.5]
        for w in ("ml1", "ml2", "ml3"):
            assert gws[w].stream(w) in u1["reason"], u1
        u2 = next_event(lines, lambda e: e.get("event") == "unreachable", 8, seen, "unreachable 2")
        assert 2000 <= u2["retry_in_ms"] <= 6000, u2  # k = 2: 4 s x [0.5, 1.5]
        tr = read_trace(trace)
        c1 = [t for t in tr if t["cycle"] == 1]
        c2 = [t for t in tr if t["cycle"] == 2]
        assert [t["server"] for t in c1] == [t["server"] for t in c2] == ["primary", "alt1", "alt2"], tr
        waited = c2[0]["ts_ms"] - (c1[-1]["ts_ms"] + c1[-1]["took_ms"])
        assert abs(waited - u1["retry_in_ms"]) <= SCHEDULE_SLACK_MS, (waited, u1, tr)
        gws["ml2"].start()
        w = next_event(lines, welcome_from("ml2"), u2["retry_in_ms"] / 1000 + 3, seen,
                       "welcome from ml2 after the backoff")
        assert w["on_primary"] == 0
        c3 = [t for t in read_trace(trace) if t["cycle"] == 3]
        assert [(t["server"], t["result"]) for t in c3] == [("primary", "failed"),
                                                            ("alt1", "welcome")], c3
    finally:
        rc = stop_run(proc)
    assert rc == 0, (rc, harness.tail(errlog))


def test_auto_bootstrap_keeps_the_routers_list(qagw, agent, uid, tmp_path):
    """Step 8: -x auto(...): HELLO's primary is empty; the server list of the WELCOME is
    kept in the client store and tried first (by worker name), the bootstrap last; so with
    the bootstrap down the agent still reaches the pool."""
    gws = three_nodes(qagw)
    trace = tmp_path / "trace-auto.jsonl"
    a = agent(f"Z-{uid}", f"auto(host=127.0.0.1;port={gws['ml3'].port('ml3')})",
              extra=["-trace", str(trace)])
    r = a.run("sync", verbose=True)
    assert r.rc == 0 and r.json()["server"] == "ml3", repr(r)
    assert 'send HELLO version=1 agent=Z-' in r.stderr and 'primary="" flags=0' in r.stderr, r.stderr
    first = read_trace(trace)
    assert [(t["server"], t["result"]) for t in first] == [("bootstrap", "welcome")], first
    gws["ml3"].kill()
    trace.unlink()
    r = a.run("sync", verbose=True)
    assert r.rc == 0, repr(r)
    assert 'primary="" flags=0' in r.stderr and 'primary="127.0.0.1' not in r.stderr, r.stderr
    tr = read_trace(trace)
    names = [t["server"] for t in tr]
    assert names[-1] in ("ml1", "ml2") and tr[-1]["result"] == "welcome", tr
    assert set(names[:-1]) <= {"ml3"} and "bootstrap" not in names, tr
    assert r.json()["server"] == names[-1]
    # everything down: the error names the stored servers and the bootstrap
    for g in gws.values():
        g.kill()
    r = a.run("sync")
    assert r.rc == 1, repr(r)
    for w in ("ml1", "ml2", "ml3"):
        assert f"{w} {gws[w].stream(w)}" in r.stderr, r.stderr
    assert "bootstrap auto(host=127.0.0.1;port=" in r.stderr, r.stderr


# ---------------------------------------------------------------- must-show 2


def test_push_follows_the_primary(qagw, agent, uid, tmp_path):
    """On ml2 the session says on_primary 0 and gets no PUSH; once ml1 is back, `run`
    returns to it within -fd (+1 s) and the next message is pushed."""
    gws = three_nodes(qagw)
    B, A = f"B-{uid}", f"A-{uid}"
    trace = tmp_path / "trace-push.jsonl"
    b = agent(B, *streams(gws, ("ml1", "ml2", "ml3")), extra=["-fd", "1", "-trace", str(trace)])
    errlog = tmp_path / "run-push.stderr"
    proc = b.popen("run", policy="automatic", verbose=True, stderr_path=errlog)
    seen: list = []
    try:
        lines = json_lines(proc)
        w = next_event(lines, welcome_from("ml1"), 15, seen, "welcome from ml1")
        assert (w["primary"], w["on_primary"]) == ("ml1", 1), w
        m0 = send_one(gws["ml3"], "ml3", A, f"{B}\\q", body=b"on the primary")
        next_event(lines, lambda e: e.get("event") == "push", 5, seen, "push on ml1")
        rec = next_event(lines, lambda e: e.get("event") == "received", 5, seen, "received")
        assert [canonical(i) for i in rec["ids"]] == [str(m0.id)], rec

        time.sleep(1.1)
        gws["ml1"].kill()
        w = next_event(lines, welcome_from("ml2"), 5, seen, "welcome from ml2")
        assert (w["primary"], w["on_primary"]) == ("ml1", 0), w
        # a message while on the alternate, after the session's first transmission (which
        # fetches what is waiting): no PUSH (the seed: pushes only on the primary)
        time.sleep(0.8)
        assert not any(e.get("event") == "received" for e in seen[seen.index(w):]), seen
        m1 = send_one(gws["ml3"], "ml3", A, f"{B}\\q", body=b"while on ml2")
        no_event(lines, lambda e: e.get("event") in ("push", "received"), 2.0, seen,
                 "PUSH or message on ml2")
        # the return to the primary is tried every -fd (1 s) meanwhile
        probes = [t for t in read_trace(trace) if t["phase"] == "failback"]
        assert len(probes) >= 2 and all(t["result"] == "failed" for t in probes), probes
        gaps = [b2["ts_ms"] - b1["ts_ms"] for b1, b2 in zip(probes, probes[1:])]
        assert all(900 <= g <= 1000 + 2 * SCHEDULE_SLACK_MS for g in gaps), gaps

        gws["ml1"].start()
        up_at = time.time() * 1000
        w = next_event(lines, welcome_from("ml1"), 2.0 + 1.0, seen, "welcome from ml1 again")
        assert w["on_primary"] == 1, w
        assert w["ts_ms"] - up_at <= 2000, f"back on ml1 {w['ts_ms'] - up_at} ms after its restart"
        closed = [e for e in seen if e.get("event") == "closed"]
        assert closed and closed[-1]["reason"] == "back to the primary", seen
        # the message that waited arrives with the session's first transmission
        rec = next_event(lines, lambda e: e.get("event") == "received", 5, seen, "received m1")
        assert [canonical(i) for i in rec["ids"]] == [str(m1.id)], rec
        # and the next message is pushed, and received: in either order, since a FETCH the
        # agent has in flight (its answer to the WELCOME's PUSH) may carry m2 before m2's own
        # PUSH arrives
        m2 = send_one(gws["ml2"], "ml2", A, f"{B}\\q", body=b"back on ml1")
        got_push = got_m2 = None
        deadline = time.monotonic() + 5
        while not (got_push and got_m2):
            ev = next_event(lines, lambda e: e.get("event") in ("push", "received"),
                            max(0.01, deadline - time.monotonic()), seen,
                            "push and receipt of m2 after the return")
            if ev["event"] == "push":
                got_push = ev
            elif str(m2.id) in [canonical(i) for i in ev["ids"]]:
                got_m2 = ev
        assert got_push["pending"] >= 1, got_push
        assert [canonical(i) for i in got_m2["ids"]] == [str(m2.id)], got_m2
    finally:
        rc = stop_run(proc)
    assert rc == 0, (rc, harness.tail(errlog))
    got = [canonical(x["id"]) for x in b.recv("q")]
    assert got == [str(m0.id), str(m1.id), str(m2.id)], got


# ---------------------------------------------------------------- -policy, -push none


def test_run_policies(qagw, agent, uid, tmp_path, store):
    """`run -policy automatic` uploads what `send` queues beside it within ~0.5 s;
    `run -push none -policy scheduled[1]` keeps no session and transmits every second."""
    gw = qagw(workers=("ml1",), node="p1")
    S, R = f"S-{uid}", f"R-{uid}"
    s_agent = agent(S, gw.stream("ml1"))
    r_agent = agent(R, gw.stream("ml1"), extra=["-push", "none"])
    procs = {}
    seen = {S: [], R: []}
    try:
        procs[S] = s_agent.popen("run", policy="automatic", stderr_path=tmp_path / "S.stderr")
        procs[R] = r_agent.popen("run", policy="scheduled[1]", stderr_path=tmp_path / "R.stderr")
        ls, lr = json_lines(procs[S]), json_lines(procs[R])
        next_event(ls, welcome_from("ml1"), 15, seen[S], "S welcome")
        next_event(lr, lambda e: e.get("event") == "closed" and
                   e.get("reason") == "transmission done", 15, seen[R], "R's first transmission")
        time.sleep(0.3)
        t0 = time.monotonic()
        mid = s_agent.send(f"{R}\\q", "queued beside run")  # -policy ondemand: only queued
        harness.wait_until(lambda: store.rows_per_id([mid])[mid] == 1, 3,
                           what="run -policy automatic to upload the queued message")
        assert time.monotonic() - t0 < 1.5
        assert s_agent.status()["outgoing"] == 0
        rec = next_event(lr, lambda e: e.get("event") == "received", 3, seen[R],
                         "R receives on its schedule")
        assert [canonical(i) for i in rec["ids"]] == [mid], rec
        assert not any(e.get("event") == "push" for e in seen[R]), seen[R]
        # each transmission of R is a session of its own, closed at once
        welcomes = [e for e in seen[R] if e.get("event") == "welcome"]
        closed = [e for e in seen[R] if e.get("event") == "closed"]
        assert len(welcomes) >= 2 and len(closed) >= len(welcomes) - 1, seen[R]
    finally:
        rcs = {n: stop_run(p) for n, p in procs.items()}
    assert rcs == {S: 0, R: 0}, (rcs, harness.tail(tmp_path / "S.stderr"),
                                 harness.tail(tmp_path / "R.stderr"))


# ---------------------------------------------------------------- must-show 4


def test_bad_x_values_are_usage_errors_naming_the_part(agent, uid):
    for stream, bad in [("tcpip(host=;port=x)", '"host"'),
                        ("udp(host=a)", '"udp"'),
                        ("tcpip(host=a", 'missing ")"'),
                        ("tcpip(host=a))", 'junk ")"'),
                        ("tcpip(host=a;port=2439", 'missing ")"')]:
        a = agent(f"U-{uid}", stream)
        r = a.run("sync")
        assert r.rc == 2, f"{stream}: {r!r}"
        assert f'bad -x stream "{stream}"' in r.stderr and bad in r.stderr, \
            f"{stream}: usage error should name {bad}: {r!r}"
