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

Durability settings: the run's PostgreSQL clusters have fsync = off and synchronous_commit
= off (fast tests). (2a) kills PostgreSQL's processes, not the machine, so fsync does not
matter, but an acknowledged UPLOAD must have its commit record written: its private cluster
runs with `synchronous_commit = on`, the setting docs/operations.md requires.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import psutil
import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.harness import msg
from qagwtest.history import History, QaAgentStore, canonical, recipient_of
from qagwtest.pool import HOST, healthz, poll, two_nodes
from qagwtest.traffic import json_lines, stop_run

WORKERS = ("ml1", "ml2", "ml3")
N_AGENTS = 20
SEND_EVERY_S = 0.04  # the sender thread's pace (each send is one qaagent process)
QUEUE = "q"


# ------------------------------------------------------------------ the fleet of agents


class Fleet:
    """N `qaagent run` processes with traffic between them, recorded in a History.

    Agent i is F{i}-{uid}. Pinned agents list the three workers rotated by i (primary
    WORKERS[i % 3]); the first n_auto agents use `auto(...)` with WORKERS[i % 3] as bootstrap.
    dbs: {i: path} puts agent i's client store elsewhere (the disk-full test's tmpfs).
    """

    def __init__(self, agent, gws: Dict[str, harness.Gateway], uid: str, tmp_path: Path,
                 n: int = N_AGENTS, n_auto: int = 0, dbs: Optional[Dict[int, Path]] = None):
        self.tmp = Path(tmp_path)
        self.gws = gws
        self.h = History()
        self.agents: Dict[str, harness.Agent] = {}
        for i in range(n):
            aid = f"F{i:02d}-{uid}"
            k = i % 3
            if i < n_auto:
                w = WORKERS[k]
                streams = [f"auto(host={HOST};port={gws[w].port(w)})"]
            else:
                streams = [gws[w].stream(w) for w in WORKERS[k:] + WORKERS[:k]]
            a = agent(aid, *streams, extra=["-fd", "0.5"])
            if dbs and i in dbs:
                a.db = Path(dbs[i])
            self.agents[aid] = a
            self.h.add(a)
        self.ids = list(self.agents)
        self.pinned_primary = {aid: WORKERS[i % 3] for i, aid in enumerate(self.ids)
                               if i >= n_auto}
        self.procs: Dict[str, subprocess.Popen] = {}
        self.lines: Dict[str, object] = {}
        self.events: Dict[str, List[dict]] = {aid: [] for aid in self.ids}
        self.exits: Dict[str, List[int]] = {aid: [] for aid in self.ids}  # runs that ended
        self.rng = random.Random(uid)
        self.sent: List[tuple] = []  # (from, to, id, monotonic time queued)
        self.send_failures: List[tuple] = []  # (from, rc, stderr tail)
        self.recv_failures: List[tuple] = []  # (agent, error text)
        self.no_send: set = set()  # agents the sender leaves alone for now
        self.no_recv: set = set()  # agents the application thread leaves alone for now
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []

    # -------------------------------------------------------------- the run processes

    def stderr_path(self, aid: str) -> Path:
        return self.tmp / f"run-{aid}.stderr"

    def start_run(self, aid: str) -> None:
        a = self.agents[aid]
        p = a.popen("run", policy="automatic", verbose=True, stderr_path=self.stderr_path(aid))
        self.procs[aid] = p
        self.lines[aid] = json_lines(p)

    def start(self, timeout: float = 20.0) -> None:
        for aid in self.ids:
            self.start_run(aid)
        poll(lambda: (self.pump(), [a for a in self.ids if not self.welcomed(a)])[1],
             lambda missing: not missing, timeout, "a WELCOME for every agent")

    def pump(self) -> None:
        """Moves every run's JSON events into self.events (each stamped `_t`, monotonic)."""
        harness.drain_events(self.lines, self.events, stamp=time.monotonic())

    def welcomed(self, aid: str, since: float = 0.0) -> bool:
        return any(e.get("event") == "welcome" and e["_t"] >= since for e in self.events[aid])

    def received_at(self, aid: str, mid: str) -> Optional[float]:
        """When `run` of aid reported mid in a `received` event (monotonic), or None."""
        self.pump()
        for e in self.events[aid]:
            if e.get("event") == "received" and mid in e.get("ids", []):
                return e["_t"]
        return None

    def check_alive(self, except_: Sequence[str] = ()) -> None:
        self.pump()
        for aid, p in self.procs.items():
            if aid in except_:
                continue
            assert p.poll() is None, (
                f"qaagent run {aid} exited {p.returncode}:\n"
                f"{harness.tail(self.stderr_path(aid), 30)}\nevents: {self.events[aid][-8:]}")

    def wait_exit(self, aid: str, timeout: float) -> int:
        p = self.procs[aid]
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"qaagent run {aid} still running after {timeout}s:\n"
                                 f"{harness.tail(self.stderr_path(aid), 30)}") from None
        self.exits[aid].append(rc)
        self.pump()
        return rc

    def stop_runs(self) -> Dict[str, int]:
        rcs = {}
        for aid, p in self.procs.items():
            if p.poll() is not None:
                continue  # already ended (and recorded by wait_exit)
            rcs[aid] = stop_run(p)
        self.pump()
        return rcs

    # -------------------------------------------------------------- traffic

    def _sender(self) -> None:
        k = 0
        while not self._stop.is_set():
            frm, to = self.rng.sample(self.ids, 2)
            if frm in self.no_send:
                time.sleep(0.005)
                continue
            addr, body = f"{to}\\{QUEUE}", f"m{k} {frm}->{to}"
            r = self.agents[frm].run("send", addr, body)
            if r.rc == 0:
                mid = canonical(r.stdout.split()[-1])
                self.h.sent(frm, mid, to=addr, body=body)
                self.sent.append((frm, to, mid, time.monotonic()))
            else:
                self.send_failures.append((frm, r.rc, r.stderr[-300:]))
            k += 1
            self._stop.wait(SEND_EVERY_S)

    def _application(self) -> None:
        while not self._stop.is_set():
            for aid in self.ids:
                if self._stop.is_set():
                    return
                if aid in self.no_recv:
                    continue
                try:
                    self.h.recv(self.agents[aid], QUEUE)
                except AssertionError as e:
                    self.recv_failures.append((aid, str(e)[-400:]))
                self._stop.wait(0.05)

    def start_traffic(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._sender, daemon=True),
                         threading.Thread(target=self._application, daemon=True)]
        for t in self._threads:
            t.start()

    def stop_traffic(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self._threads = []

    def run_traffic(self, seconds: float, except_: Sequence[str] = ()) -> None:
        """Lets traffic flow for seconds, checking that the runs stay up."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check_alive(except_)
            time.sleep(0.25)

    def warm_up(self, seconds: float, min_acked: int = 20, timeout: float = 20.0) -> None:
        """Traffic for at least seconds, and until min_acked messages were acked."""
        t0 = time.monotonic()
        self.run_traffic(seconds)
        while self.acked_count() < min_acked:
            assert time.monotonic() - t0 < timeout, \
                f"traffic is not flowing: {self.acked_count()} acked in {timeout}s"
            self.run_traffic(0.5)

    # -------------------------------------------------------------- what the stores say

    def inboxes(self) -> Dict[str, set]:
        return {aid: set(QaAgentStore(a.db).inbox()) for aid, a in self.agents.items()}

    def outboxes(self) -> Dict[str, str]:
        """{id: recipient} of every message queued in a client store right now."""
        out: Dict[str, str] = {}
        for a in self.agents.values():
            out.update({m: recipient_of(addr) for m, addr in QaAgentStore(a.db).outbox().items()})
        return out

    def in_flight(self):
        """(acked ids not yet in their recipient's inbox, number of outbox rows)."""
        self.h.collect()
        acked = self.h.acked_ids()
        boxes = self.inboxes()
        missing = sorted(m for m, to in acked.items() if m not in boxes.get(to, ()))
        return missing, len(self.outboxes())

    def wait_converged(self, timeout: float, what: str) -> float:
        """Waits, without any help, until every message queued or acked so far is acked and
        in its recipient's client store: the runs alone moved them (traffic goes on
        meanwhile; what is queued later is not waited for). Returns the seconds."""
        t0 = time.monotonic()
        self.h.collect()
        target = dict(self.h.acked_ids())
        target.update(self.outboxes())
        deadline = t0 + timeout
        while True:
            self.check_alive()
            self.h.collect()
            acked = self.h.acked_ids()
            boxes = self.inboxes()
            unacked = [m for m in target if m not in acked]
            missing = [m for m, to in target.items() if m in acked and m not in boxes.get(to, ())]
            if not unacked and not missing:
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{what}: of the {len(target)} messages queued or acked {timeout}s ago, "
                    f"{len(unacked)} are not acked yet (e.g. {unacked[:3]}) and {len(missing)} "
                    f"acked ones are not in their recipient's store (e.g. {missing[:3]})")
            time.sleep(0.3)

    def acked_count(self) -> int:
        self.h.collect()
        return len(self.h.acked_ids())

    # -------------------------------------------------------------- the end

    def finish(self, store: harness.Store, label: str,
               expect_send: Optional[Callable[[str, int, str], bool]] = None,
               expect_recv: Optional[Callable[[str, str], bool]] = None):
        """Stops traffic and the runs (each must exit 0), syncs every agent once (so what no
        push announced is fetched too), drains into the applications and checks: nothing
        lost, nothing duplicated, nothing pending in the client stores or the server store,
        and no `send` or `recv` of the traffic threads failed, but those the test expects:
        expect_send(agent, rc, stderr) / expect_recv(agent, error) true. (`send` here only
        queues in the client store, -policy ondemand, and `recv` only reads it: neither
        touches the network, so a failure is the client store's, never an outage's; a
        failed `send` is a message the application could not queue.)
        Prints the figures and returns the report."""
        self.stop_traffic()
        # what the sender queued last goes out through the runs
        poll(lambda: len(self.outboxes()), lambda n: n == 0, 10, "every outbox empty")
        rcs = self.stop_runs()
        assert set(rcs.values()) <= {0}, {a: rc for a, rc in rcs.items() if rc != 0}
        # Syncs until a round finds nothing new (a message uploaded by a later agent's sync
        # would otherwise wait for a recipient synced earlier in the same round).
        late = 0
        for _ in range(3):
            got = sum(a.sync().json()["received"] for a in self.agents.values())
            late += got
            if got == 0 and not self.outboxes():
                break
        rep = self.h.drain(timeout=20, queue=QUEUE)
        pending = int(store.scalar(
            f"select count(*) from {store.messages_table()} "
            "where recipient = any(%s) and queue = %s and status = 1", [self.ids, QUEUE]))
        bad_sends = [x for x in self.send_failures if not (expect_send and expect_send(*x))]
        bad_recvs = [x for x in self.recv_failures if not (expect_recv and expect_recv(*x))]
        print(f"\n[{label}] {rep.line()} (messages queued {len(self.sent)}, send failures "
              f"{len(self.send_failures)} ({len(bad_sends)} unexpected), recv failures "
              f"{len(self.recv_failures)} ({len(bad_recvs)} unexpected), fetched only by the "
              f"final syncs {late}, pending in the server store {pending})")
        if rep.lost or rep.duplicated:
            print(self.explain(store, rep.lost_ids[:5] + rep.duplicated_ids[:5]))
        assert not bad_sends, f"`qaagent send` failed (agent, rc, stderr): {bad_sends[:3]}"
        assert not bad_recvs, f"`qaagent recv` failed (agent, error): {bad_recvs[:3]}"
        rep.assert_ok()
        assert rep.body_unknown == 0, rep.details()  # every body was compared
        assert rep.pending == 0, rep.details()
        assert pending == 0, f"{pending} messages still pending in the server store"
        # every message queued by a successful `send` was acked and received
        queued = {mid for _, _, mid, _ in self.sent}
        acked = set(self.h.acked_ids())
        assert queued <= acked, f"{len(queued - acked)} queued messages never acked"
        return rep

    def explain(self, store: harness.Store, mids: Sequence[str]) -> str:
        """Where each of mids is: the server's row, the senders' and recipients' stores,
        the runs' events and -v log lines naming it (for a failure report)."""
        out = []
        t = store.messages_table()
        for mid in mids:
            rows = store.query(f"select sender, recipient, queue, status, status_ms, "
                               f"delivery_count, held_by, seq from {t} where id = %s", (mid,))
            out.append(f"-- {mid}: server {rows}")
            for aid, a in self.agents.items():
                st = QaAgentStore(a.db)
                where = [name for name, d in (("outbox", st.outbox()), ("sent_log", st.sent_log()),
                                              ("inbox", st.inbox())) if mid in d]
                evs = [e for e in self.events[aid] if mid in e.get("ids", [])]
                if where or evs:
                    out.append(f"   {aid}: in {where}, events {evs}")
        return "\n".join(out)

    def close(self) -> None:
        """Teardown: never raises."""
        self._stop.set()
        for p in self.procs.values():
            try:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)
            except Exception:
                pass


@pytest.fixture
def fleet_factory(agent, uid, tmp_path):
    made: List[Fleet] = []

    def make(gws, **kw) -> Fleet:
        f = Fleet(agent, gws, uid, tmp_path, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


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
    f.start()
    f.start_traffic()
    f.warm_up(4)

    pids = sigkill_postgres(private_pg)
    t_kill = time.monotonic()
    # /healthz degraded on both nodes, naming the store
    for g in (n1, n2):
        poll(lambda g=g: degraded_store(g), bool, 5, f"/healthz of {g.node} degraded (store)")
    print(f"\n/healthz while PostgreSQL is down: {healthz(n1)}")
    time.sleep(max(0.0, t_kill + 1.0 - time.monotonic()))
    f.h.collect()
    acked_down = set(f.h.acked_ids())
    f.run_traffic(2.5)
    f.h.collect()
    new_acks = set(f.h.acked_ids()) - acked_down
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
    f.finish(st, "2a postgres SIGKILL")


def test_postgres_read_only_then_back(qagw, private_pg, fleet_factory, uid):
    pg_set(private_pg, "synchronous_commit", "on")
    st = private_pg.create_database("qagw")
    n1, n2 = two_nodes(qagw, store_=st)
    f = fleet_factory(by_worker(n1, n2))
    f.start()
    # a Python client with a session on ml1 before the store turns read-only
    probe = q.Client(HOST, n1.port("ml1"), timeout=20)
    probe.hello(f"P-{uid}")
    probe.ping()
    f.start_traffic()
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
    f.h.collect()
    acked_ro = set(f.h.acked_ids())
    f.run_traffic(3)
    f.h.collect()
    new_acks = set(f.h.acked_ids()) - acked_ro
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
    f.finish(st, "2b postgres read-only")


# ------------------------------------------------------------------ Redis fault


def redis_routing(redis: harness.RedisServer, prefix: str, agents: Sequence[str]):
    """({agent: (primary, pinned, worker)}, {worker: sorted assigned agents}, workers set)."""
    agents_ = {a: tuple(redis.command("HMGET", f"{prefix}agent:{a}", "primary", "pinned",
                                      "worker")) for a in agents}
    assigned = {w: sorted(redis.command("SMEMBERS", f"{prefix}assigned:{w}")) for w in WORKERS}
    workers = set(redis.command("SMEMBERS", f"{prefix}workers")) & {
        w for w in WORKERS if redis.command("EXISTS", f"{prefix}worker:{w}") == 1}
    return agents_, assigned, workers


def admin_send(f: Fleet, gw, to: str, body: str) -> str:
    """POST /api/messages (server-side send, committed then pushed); recorded in the history
    as acked (the 201 is the server's acknowledgement)."""
    status, resp = gw.admin.post("/api/messages", {"to": f"{to}\\{QUEUE}", "body": body})
    assert status == 201, (status, resp)
    mid = canonical(resp["id"])
    f.h.queued("admin", mid, f"{to}\\{QUEUE}", body=body)
    f.h.ack("admin", mid, q.R_STORED)
    return mid


N_AUTO = 5


def test_redis_sigkill_and_restart_empty(qagw, store, private_redis, fleet_factory):
    n1, n2 = two_nodes(qagw, redis=private_redis)
    prefix = n1.redis_prefix
    f = fleet_factory(by_worker(n1, n2), n_auto=N_AUTO)
    f.start()
    f.start_traffic()
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
    targets = [next(a for a in f.ids[N_AUTO:] if f.pinned_primary[a] == w) for w in WORKERS]
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
    f.finish(store, "4 redis SIGKILL, empty restart")


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
    a = f.agents[V]
    f.start()
    f.start_traffic()
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
            f.h.sent(V, queued[-1], to=addr, body=body)
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
    f.finish(store, "7 agent disk full", expect_send=lambda aid, rc, _: aid == V and rc == 4,
             expect_recv=lambda aid, _: aid == V)
    # the burst and the five it had queued went through once there was room
    assert set(burst) | set(queued) <= set(f.h.acked_ids())
