"""Issue 8, fault scenarios 2, 4 and 7: the stores under the gateway and under the agent
fail while traffic flows, and nothing acknowledged is lost.

- (2a) PostgreSQL is SIGKILLed (the postmaster and every backend at once) and started again:
  /healthz says degraded meanwhile, nothing is acknowledged while it is down, the agents'
  syncs resume on their own, and every acknowledged message reaches its application.
- (2b) PostgreSQL is made read-only (`default_transaction_read_only = on`, reloaded: reads
  work, every write fails) and then writable again: UPLOAD gets ERROR store_unavailable
  (retryable), nothing is acknowledged meanwhile, nothing is lost afterwards. What the
  operator sees is printed: qagw_errors_total{code="store_unavailable"} grows (/healthz,
  whose store check is "a connection is up", says ok).
- (4) Redis is SIGKILLed and started again empty: the workers re-register, re-announce their
  live sessions and refill the router's assignments from the store; pushes flow again.
- (7) The client store of one agent fills its disk (a tmpfs of its own) while a burst for
  it arrives: its `run` exits 4 naming the full store (docs/agent.md), sends no DELIVER_ACK
  for what it could not commit (the pool keeps those pending), keeps what it queued;
  `send` is refused with exit 4; a `run` started while the disk is still full exits 4 the
  same way; once space is freed a new `run` gets everything.

Topology: node n1 (ml1, ml2) and node n2 (ml3), one pool; 20 `qaagent run` agents
(-policy automatic, -fd 0.5), each with a -x list of the three workers rotated so that the
primaries are spread (in (4) a few agents use `auto(...)`, router-assigned). A sender thread
queues messages between random agents (`qaagent send -policy ondemand` beside `run`), an
application thread takes them with `qaagent recv q`; history.py records acked (the senders'
sent_log) and received (what `recv` handed out), and the figures are printed per test.
The fleet is the fault suite's one traffic generator, qagwtest.traffic.Traffic (one sender).

Durability settings: the run's PostgreSQL clusters have fsync = off and synchronous_commit
= off (fast tests). (2a) kills PostgreSQL's processes, not the machine, so fsync does not
matter, but an acknowledged UPLOAD must have its commit record written: its private cluster
runs with `synchronous_commit = on`, the setting docs/operations.md requires.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import psutil
import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.harness import msg
from qagwtest.history import QaAgentStore, canonical
from qagwtest.pool import HOST, healthz, poll, two_nodes
from qagwtest.traffic import Traffic

WORKERS = ("ml1", "ml2", "ml3")
N_AGENTS = 20
SEND_EVERY_S = 0.04  # the sender thread's pace (each send is one qaagent process)
QUEUE = "q"


# ------------------------------------------------------------------ the fleet of agents


def start_fleet(f: Traffic) -> None:
    """The runs up (a WELCOME each), then the sender and the applications."""
    f.start_runs()
    f.wait_welcomed()
    f.start_senders(1)


@pytest.fixture
def fleet_factory(agent, uid, tmp_path):
    """Traffic (qagwtest.traffic) of N_AGENTS agents F00-uid...: agent i lists the three
    workers rotated by i (primary WORKERS[i % 3]), the first n_auto use `auto(...)` with
    WORKERS[i % 3] as bootstrap; one sender queues a message every SEND_EVERY_S, the
    applications take them all along. dbs: {i: path} puts agent i's client store elsewhere
    (the disk-full test's tmpfs)."""
    made: List[Traffic] = []

    def make(gws: Dict[str, harness.Gateway], n_auto: int = 0, **kw) -> Traffic:
        f = Traffic(agent, tmp_path, [gws[w].stream(w) for w in WORKERS], uid, n=N_AGENTS,
                    fd="0.5", prefix="F", send_pause=SEND_EVERY_S, take=True,
                    auto=[f"auto(host={HOST};port={gws[w].port(w)})" for w in WORKERS],
                    n_auto=n_auto, verbose=True, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def primary_of(f: Traffic, aid: str, n_auto: int) -> Optional[str]:
    """The worker a pinned agent lists first (None for a router-assigned one)."""
    i = f.ids.index(aid)
    return None if i < n_auto else WORKERS[i % 3]


def by_worker(n1, n2) -> Dict[str, harness.Gateway]:
    return {"ml1": n1, "ml2": n1, "ml3": n2}


# ------------------------------------------------------------------ PostgreSQL faults


def pg_postmaster_pid(pg: harness.PgServer) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def sigkill_postgres(pg: harness.PgServer) -> List[int]:
    """SIGKILL of the postmaster and every process it forked (backends, walwriter, ...),
    as a crash of PostgreSQL would leave things: the postmaster is stopped first so that it
    forks nothing between the listing and the kill. Returns the pids, once all are dead."""
    pm = pg_postmaster_pid(pg)
    os.kill(pm, signal.SIGSTOP)
    pids = [pm] + harness.children(pm)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    harness.wait_until(lambda: not any(_alive(p) for p in pids), 10, what="postgres dead")
    return pids


def restart_postgres(pg: harness.PgServer, pids: Sequence[int]) -> None:
    """Starts the killed cluster again (crash recovery). The dead processes are reaped by
    init; until then their pid answers kill(pid, 0), which PostgreSQL would take for a live
    postmaster holding postmaster.pid, so we wait for that (or remove the stale file)."""
    try:
        harness.wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), 8,
                           interval=0.05, what="killed postgres processes reaped")
    except AssertionError:
        (pg.data / "postmaster.pid").unlink(missing_ok=True)  # stale: its owner is dead
    pg.start()


def pg_set(pg: harness.PgServer, setting: str, value: Optional[str]) -> None:
    """ALTER SYSTEM SET (or RESET, value None) and reload."""
    if value is None:
        pg.admin_sql(f"alter system reset {setting}")
    else:
        pg.admin_sql(f"alter system set {setting} = '{value}'")
    pg.admin_sql("select pg_reload_conf()")


def degraded_store(gw) -> bool:
    st, body = healthz(gw)
    return st == 503 and isinstance(body, dict) and any(
        "store" in r for r in body.get("reasons", []))


def sum_errors(gws, code: str) -> float:
    return sum(g.admin.metrics().value("qagw_errors_total", code=code) for g in gws)


def test_postgres_sigkill_and_restart(qagw, private_pg, fleet_factory):
    pg_set(private_pg, "synchronous_commit", "on")
    st = private_pg.create_database("qagw")
    n1, n2 = two_nodes(qagw, store_=st)
    f = fleet_factory(by_worker(n1, n2))
    start_fleet(f)
    f.warm_up(4)

    pids = sigkill_postgres(private_pg)
    t_kill = time.monotonic()
    # /healthz degraded on both nodes, naming the store
    for g in (n1, n2):
        poll(lambda g=g: degraded_store(g), bool, 5, f"/healthz of {g.node} degraded (store)")
    print(f"\n/healthz while PostgreSQL is down: {healthz(n1)}")
    time.sleep(max(0.0, t_kill + 1.0 - time.monotonic()))
    f.history.collect()
    acked_down = set(f.history.acked_ids())
    f.run_traffic(2.5)
    f.history.collect()
    new_acks = set(f.history.acked_ids()) - acked_down
    _, queued_down = f.in_flight()
    assert not new_acks, f"{len(new_acks)} messages acked while PostgreSQL was dead"
    assert queued_down > 0, "nothing queued while PostgreSQL was down: no traffic?"

    restart_postgres(private_pg, pids)
    t_up = time.monotonic()
    print(f"PostgreSQL down {t_up - t_kill:.1f}s, {queued_down} messages queued meanwhile")
    for g in (n1, n2):
        poll(lambda g=g: healthz(g)[0] == 200, bool, 10, f"/healthz of {g.node} ok again")
    healthy_s = time.monotonic() - t_up
    f.run_traffic(3)
    took = f.wait_converged(25, "after PostgreSQL came back")
    back = sorted(min(e["_t"] for e in f.events[a] if e.get("event") == "welcome"
                      and e["_t"] >= t_up) - t_up for a in f.ids if f.welcomed(a, t_up))
    print(f"/healthz ok {healthy_s:.1f}s after the restart; {len(back)} agents had a new "
          f"session, the last {back[-1] if back else 0:.1f}s after it (backoff); everything "
          f"queued or acked by then acked and in its recipient's store "
          f"{time.monotonic() - t_up:.1f}s after it (waited {took:.1f}s)")
    f.settle(st, "2a postgres SIGKILL")


def test_postgres_read_only_then_back(qagw, private_pg, fleet_factory, uid):
    pg_set(private_pg, "synchronous_commit", "on")
    st = private_pg.create_database("qagw")
    n1, n2 = two_nodes(qagw, store_=st)
    f = fleet_factory(by_worker(n1, n2))
    f.start_runs()
    f.wait_welcomed()
    # a Python client with a session on ml1 before the store turns read-only
    probe = q.Client(HOST, n1.port("ml1"), timeout=20)
    probe.hello(f"P-{uid}")
    probe.ping()
    f.start_senders(1)
    f.warm_up(4)

    pg_set(private_pg, "default_transaction_read_only", "on")
    t_ro = time.monotonic()
    # UPLOAD on the established session: a retryable ERROR, no UPLOAD_ACK
    m = msg(f"{f.ids[0]}\\{QUEUE}", body=b"while read-only")
    probe.send_upload([m], batch=1)
    reply = probe.recv(timeout=20)
    print(f"\nUPLOAD while read-only: {reply!r}")
    assert isinstance(reply, q.Error), f"expected ERROR, got {reply!r}"
    assert reply.retryable == 1, reply
    assert reply.code == q.E_STORE_UNAVAILABLE, reply
    probe.close()
    # What the operator sees: /healthz keeps saying ok (every store connection is up), the
    # ERROR counter grows (docs/operations.md, runbook).
    hz = healthz(n1)
    print(f"/healthz while read-only: {hz}")

    time.sleep(max(0.0, t_ro + 1.0 - time.monotonic()))
    f.history.collect()
    acked_ro = set(f.history.acked_ids())
    f.run_traffic(3)
    f.history.collect()
    new_acks = set(f.history.acked_ids()) - acked_ro
    _, queued_ro = f.in_flight()
    errs = sum_errors((n1, n2), "store_unavailable")
    print(f"qagw_errors_total{{code=\"store_unavailable\"}} while read-only: {errs:.0f}")
    assert errs >= 1
    assert not new_acks, f"{len(new_acks)} messages acked while PostgreSQL was read-only"
    assert queued_ro > 0, "nothing queued while PostgreSQL was read-only: no traffic?"
    assert st.rows_per_id([m.id]) == {str(m.id): 0}

    pg_set(private_pg, "default_transaction_read_only", None)
    t_rw = time.monotonic()
    print(f"read-only {t_rw - t_ro:.1f}s, {queued_ro} messages queued meanwhile")
    f.run_traffic(3)
    took = f.wait_converged(25, "after PostgreSQL became writable again")
    print(f"everything queued or acked by then acked and in its recipient's store "
          f"{time.monotonic() - t_rw:.1f}s after (waited {took:.1f}s)")
    f.settle(st, "2b postgres read-only")


# ------------------------------------------------------------------ Redis fault


def redis_routing(redis: harness.RedisServer, prefix: str, agents: Sequence[str]):
    """({agent: (primary, pinned, worker)}, {worker: sorted assigned agents}, workers set)."""
    agents_ = {a: tuple(redis.command("HMGET", f"{prefix}agent:{a}", "primary", "pinned",
                                      "worker")) for a in agents}
    assigned = {w: sorted(redis.command("SMEMBERS", f"{prefix}assigned:{w}")) for w in WORKERS}
    workers = set(redis.command("SMEMBERS", f"{prefix}workers")) & {
        w for w in WORKERS if redis.command("EXISTS", f"{prefix}worker:{w}") == 1}
    return agents_, assigned, workers


def admin_send(f: Traffic, gw, to: str, body: str) -> str:
    """POST /api/messages (server-side send, committed then pushed); recorded in the history
    as acked (the 201 is the server's acknowledgement)."""
    status, resp = gw.admin.post("/api/messages", {"to": f"{to}\\{QUEUE}", "body": body})
    assert status == 201, (status, resp)
    mid = canonical(resp["id"])
    f.history.queued("admin", mid, f"{to}\\{QUEUE}", body=body)
    f.history.ack("admin", mid, q.R_STORED)
    return mid


N_AUTO = 5


def test_redis_sigkill_and_restart_empty(qagw, store, private_redis, fleet_factory):
    n1, n2 = two_nodes(qagw, redis=private_redis)
    prefix = n1.redis_prefix
    f = fleet_factory(by_worker(n1, n2), n_auto=N_AUTO)
    start_fleet(f)
    f.warm_up(3)
    before_agents, before_assigned, before_workers = redis_routing(private_redis, prefix, f.ids)
    assert before_workers == set(WORKERS), before_workers
    assert all(p for p, _, _ in before_agents.values()), before_agents
    assert all(w for _, _, w in before_agents.values()), \
        f"an agent without a session: {before_agents}"
    assert sum(len(v) for v in before_assigned.values()) == N_AUTO, before_assigned

    sentinel = f"{prefix}fault-sentinel"
    assert private_redis.command("SET", sentinel, "1") == "OK"
    private_redis.kill()
    t_kill = time.monotonic()
    for g in (n1, n2):
        poll(lambda g=g: (lambda r: r[0] == 503 and "redis unavailable" in r[1]["reasons"])(
            healthz(g)), bool, 5, f"/healthz of {g.node} degraded (redis)")
    acked_at_kill = f.acked_count()
    f.run_traffic(1.5)
    private_redis.start()  # same port, empty (no persistence)
    t_up = time.monotonic()
    print(f"\nRedis down {t_up - t_kill:.1f}s; acked meanwhile "
          f"{f.acked_count() - acked_at_kill} (the store keeps syncs going)")
    assert private_redis.command("EXISTS", sentinel) == 0, "Redis came back with its data"

    # routing state rebuilt: workers registered, live sessions re-announced, the router's
    # assignments refilled from the store, nobody moved
    def rebuilt():
        agents_, assigned, workers = redis_routing(private_redis, prefix, f.ids)
        ok = (workers == set(WORKERS) and assigned == before_assigned and
              all(agents_[a][:2] == before_agents[a][:2] and agents_[a][2] for a in f.ids))
        return ok, (workers, assigned, {a: v for a, v in agents_.items()
                                        if v[:2] != before_agents[a][:2] or not v[2]})
    poll(rebuilt, lambda r: r[0], 10, "the routing state rebuilt in the new Redis")
    rebuilt_s = time.monotonic() - t_up
    for g in (n1, n2):
        poll(lambda g=g: healthz(g)[0] == 200, bool, 5, f"/healthz of {g.node} ok again")

    # pushes flow again: a message for a PERSIST agent reaches it by PUSH within seconds
    # (one agent per primary worker, and a router-assigned one)
    targets = [next(a for a in f.ids if primary_of(f, a, N_AUTO) == w) for w in WORKERS]
    targets.append(f.ids[0])
    lat = {}
    for a in targets:
        t0 = time.monotonic()
        mid = admin_send(f, n2, a, f"push probe for {a}")
        poll(lambda: f.received_at(a, mid), lambda t: t is not None, 5,
             f"the probe to {a} received by its run (PUSH)")
        lat[a] = round(f.received_at(a, mid) - t0, 3)
        pushes = [e for e in f.events[a] if e.get("event") == "push" and e["_t"] >= t_up]
        assert pushes, f"{a} got the probe without a PUSH after the restart: {f.events[a][-6:]}"
    print(f"routing state rebuilt {rebuilt_s:.1f}s after the restart; probe send -> received "
          f"(s): {lat}")
    status, push = n1.admin.get("/api/push")
    print(f"/api/push totals: {push['totals'] if status == 200 else (status, push)}")

    f.run_traffic(3)
    took = f.wait_converged(20, "after Redis came back")
    print(f"everything queued or acked by then acked and in its recipient's store "
          f"{time.monotonic() - t_up:.1f}s after the restart (waited {took:.1f}s)")
    f.settle(store, "4 redis SIGKILL, empty restart")


# ------------------------------------------------------------------ the agent's disk


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of this test's own (root: `mount -t tmpfs`), unmounted at teardown."""
    d = tmp_path / "small-disk"
    d.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(d)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, f"cannot mount a tmpfs (the test runs as root): {p.stdout}"
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def fill_disk(directory: Path) -> Path:
    """Writes a filler file until the file system is full; returns it."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError:
            pass
    st = os.statvfs(directory)
    assert st.f_bavail == 0, f"{directory} still has {st.f_bavail} blocks free"
    return filler


def test_agent_disk_full(qagw, store, small_disk, fleet_factory):
    n1, n2 = two_nodes(qagw)
    f = fleet_factory(by_worker(n1, n2), dbs={0: small_disk / "agent.db"})
    V = f.ids[0]  # the victim: primary ml1, client store on the small disk
    a = f.by_id[V]
    start_fleet(f)
    f.warm_up(3)

    # Freeze V's run, queue a few messages in its outbox, fill its disk, have the pool
    # commit a burst of messages for it, and let it go on: its next transmission has an
    # outbox to upload and a burst to fetch, and no room to record either.
    f.procs[V].send_signal(signal.SIGSTOP)
    try:
        queued = []
        for i in range(5):
            addr, body = f"{f.ids[1]}\\{QUEUE}", f"queued before the disk filled {i}"
            queued.append(a.send(addr, body))
            f.history.sent(V, queued[-1], to=addr, body=body)
        filler = fill_disk(small_disk)
        burst = [admin_send(f, n1, V, f"burst {i} " + "x" * 8000) for i in range(40)]
    finally:
        f.procs[V].send_signal(signal.SIGCONT)
    t_full = time.monotonic()
    rc = f.wait_exit(V, 20)
    log1 = f.stderr_path(V).read_text(errors="replace")
    print(f"\nqaagent run {V} exited {rc} {time.monotonic() - t_full:.1f}s after the disk "
          f"filled; its log ends:\n  " + "\n  ".join(log1.splitlines()[-4:]))
    assert rc == 4, f"run of {V} exited {rc}, docs/agent.md says 4 (local failure):\n{log1[-2000:]}"
    assert "disk is full" in log1.splitlines()[-1], log1[-2000:]
    # Which write failed depends on what the run was doing when the disk filled (a DELIVER
    # to commit, an UPLOAD_ACK to record, the STATUS reports to remove after a PONG): the
    # checks below hold in every case. Said here for the record.
    frames = [ln for ln in log1.splitlines() if " recv " in ln or " send " in ln]
    print(f"  (the last frame before the failure: {frames[-1].split(' ', 2)[-1][:80]})")

    vs = QaAgentStore(a.db)

    def check_while_full(phase: str) -> None:
        # nothing it queued is lost: each of the five is still queued or acked
        outbox, sent = vs.outbox(), vs.sent_log()
        assert all(m in outbox or m in sent for m in queued), (queued, outbox, sent)
        # the pool holds as acknowledged by V only what V committed to its store
        inbox = set(vs.inbox())
        rows = store.query(f"select id::text, status from {store.messages_table()} "
                           "where recipient = %s and queue = %s", (V, QUEUE))
        acked_by_v = {r[0] for r in rows if int(r[1]) != 1}
        pending_v = {r[0] for r in rows if int(r[1]) == 1}
        on_server = sum(store.rows_per_id(queued).values())
        print(f"{phase}: {V}'s inbox {len(inbox)}, acknowledged by it to the pool "
              f"{len(acked_by_v)}, pending for it {len(pending_v)} (burst {len(burst)}); its "
              f"five queued: {sum(m in outbox for m in queued)} in its outbox, "
              f"{sum(m in sent for m in queued)} acked in its sent_log, {on_server} stored by "
              f"the pool")
        assert acked_by_v <= inbox, \
            f"acknowledged but not in {V}'s store: {sorted(acked_by_v - inbox)[:5]}"
        assert set(burst) - inbox <= pending_v, "burst messages neither stored by V nor pending"
        assert set(burst) - inbox, "the burst fitted: the disk did not fill"

    check_while_full("disk full, run exited")
    # while the disk is full a send is refused cleanly (exit 4, nothing queued)
    r = a.run("send", f"{f.ids[1]}\\{QUEUE}", "while full")
    assert r.rc == 4 and "disk is full" in r.stderr, repr(r)
    r = a.run("recv", QUEUE)  # taking messages is a write too: refused when there is any
    print(f"`recv` while full: exit {r.rc}, {len(r.stdout.splitlines())} lines, "
          f"stderr {r.stderr.strip()[-160:]!r}")
    assert r.rc in (0, 4), repr(r)
    f.run_traffic(1, except_=(V,))

    # V's run started again with the disk still full: it reports it again, loses nothing
    mark = len(log1)
    f.start_run(V)
    rc2 = f.wait_exit(V, 20)
    log2 = f.stderr_path(V).read_text(errors="replace")[mark:]
    print(f"run of {V} started with the disk still full: exit {rc2}, its log ends:\n  " +
          "\n  ".join(log2.splitlines()[-4:]))
    assert rc2 == 4 and "disk is full" in log2.splitlines()[-1], log2[-2000:]
    check_while_full("restarted while full")

    # space freed: V's run again (what its supervisor does after exit 4); it catches up
    filler.unlink()
    f.start_run(V)
    t_free = time.monotonic()
    poll(lambda: f.welcomed(V, t_free) or (f.pump(), False)[1], bool, 10, f"{V} back")
    f.run_traffic(3)
    took = f.wait_converged(20, "after the disk had room again")
    print(f"after the space was freed: every message queued or acked so far acked and in its "
          f"recipient's store after {took:.1f}s")
    print(f"while full: {len(f.send_failures)} sends by {V} refused (exit 4), "
          f"{len(f.recv_failures)} of its `recv` failed")
    # only V's, and only exit 4 (disk full) for a send: anything else fails in finish
    f.settle(store, "7 agent disk full", expect_send=lambda aid, rc, _: aid == V and rc == 4,
             expect_recv=lambda aid, _: aid == V)
    # the burst and the five it had queued went through once there was room
    assert set(burst) | set(queued) <= set(f.history.acked_ids())
