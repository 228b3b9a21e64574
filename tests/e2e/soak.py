"""Traffic under faults (issue 8): the machinery of tests/e2e/test_faults.py and of
`make soak`, which runs this file's test_soak for SOAK_SECONDS (default 600).

Traffic: N (>= 20) `qaagent run` agents (-policy automatic, -fd 0.5) over the pool of
two_node_pool: n1 (ml1, ml2) and n2 (ml3); agent i lists the three workers starting at
worker i mod 3. Sender threads queue messages with `qaagent send -policy ondemand` from a
random agent to another (queue `q`); each `run` uploads its outbox within 0.5 s, pushes
bring them to the recipients, and a thread plays the applications: `qaagent recv` of
every agent all along (recorded in a history.History, with every agent's client store).
`Traffic.drain` goes on taking what arrives until nothing acknowledged is missing, bounded.

Faults (class Faults): SIGKILL of a node and restart, SIGTERM (graceful drain) and
restart, and (with a private PostgreSQL at synchronous_commit=on) an immediate stop of
PostgreSQL and restart. "Mid-batch": slow_uploads makes every insert statement into the
messages table sleep 30 ms (a trigger the test creates), and a node fault can wait until
pg_stat_activity shows one of that node's qa_upload calls running (upload_in_flight; the
nodes' connections carry application_name qagw/NODE/...).

`batch_atomicity` compares the server store with the agents' sent logs: qa_upload runs
one UPLOAD frame in one transaction, with one created_ms for all its rows, and the agent
resolves one UPLOAD_ACK in one SQLite transaction, with one done_ms; so a (sender,
created_ms) group of rows is what one UPLOAD committed, a (agent, done_ms) group of the
sent log what one UPLOAD_ACK acknowledged.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter, defaultdict
from typing import Dict, List, Optional

from qagwtest import harness
from qagwtest.history import QaAgentStore, canonical
from qagwtest.traffic import Traffic

WORKERS = ("ml1", "ml2", "ml3")


class NodeStore(harness.Store):
    """The store as one node sees it. qagw names each of its store connections
    (application_name qagw/NODE/WORKER/N, docs/operations.md), so pg_stat_activity tells
    which node's query is running: node_app_pattern(node)."""

    def __init__(self, store: harness.Store, node: str) -> None:
        super().__init__(store.server, store.dbname)
        self.app = node_app_pattern(node)


def node_app_pattern(node: str) -> str:
    """A LIKE pattern for the application_name of every store connection of node."""
    return f"qagw/{node}/%"


def two_node_pool(qagw, store: harness.Store, **kw) -> Dict[str, harness.Gateway]:
    """n1 (ml1, ml2) and n2 (ml3), one pool on store (each node's connections named, see
    NodeStore); returned as {worker: its gateway}."""
    n1 = qagw(workers=("ml1", "ml2"), node="n1", store_=NodeStore(store, "n1"), **kw)
    n2 = qagw(workers=("ml3",), node="n2", store_=NodeStore(store, "n2"), **kw)
    return {"ml1": n1, "ml2": n1, "ml3": n2}


def slow_uploads(store: harness.Store, seconds: float) -> None:
    """Every INSERT statement into the messages table sleeps `seconds` first (a statement
    trigger, created by the test): an UPLOAD stays in the store long enough for a fault
    to land while it is in flight."""
    t = store.messages_table()
    store.query("CREATE FUNCTION qa_test_slow() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({float(seconds)}); RETURN NULL; END $$")
    store.query(f"CREATE TRIGGER qa_test_slow BEFORE INSERT ON {t} FOR EACH STATEMENT "
                "EXECUTE FUNCTION qa_test_slow()")


def upload_in_flight(store: harness.Store, node: str, timeout: float = 5.0) -> bool:
    """Waits until a qa_upload of node's connections is running in PostgreSQL (committed
    or not, its UPLOAD_ACK has not been sent); False after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = store.scalar("select count(*) from pg_stat_activity where application_name like %s "
                         "and state = 'active' and query like %s",
                         [node_app_pattern(node), "%qa_upload%"])
        if int(n) > 0:
            return True
        time.sleep(0.005)
    return False


def nodes_of(gws: Dict[str, harness.Gateway]) -> List[harness.Gateway]:
    out = []
    for g in gws.values():
        if g not in out:
            out.append(g)
    return out


# --------------------------------------------------------------- batch atomicity


def soak_traffic(gws: Dict[str, harness.Gateway], agent_factory, uid: str, tmp_path,
                 n_agents: int = 20) -> Traffic:
    """The traffic of the module's docstring: qagwtest.traffic.Traffic over the three
    workers, -fd 0.5, the applications taking what arrives all along."""
    return Traffic(agent_factory, tmp_path, [gws[w].stream(w) for w in WORKERS], uid,
                   n=n_agents, fd="0.5", prefix="f", send_pause=0.02, take=True)


def batch_atomicity(store, agents) -> Dict[str, int]:
    """Compares what each UPLOAD committed (server rows grouped by sender and created_ms)
    with what each UPLOAD_ACK acknowledged (sent-log rows grouped by agent and done_ms).

    - upload_tx: transactions that stored traffic;
    - whole: those whose every row the sender holds as `stored`;
    - committed_unacked: transactions with a row the sender never got `stored` for (its
      ack was lost, so the retry said `duplicate`): a commit whose UPLOAD_ACK did not
      arrive. Expected after SIGKILL (the kill fell between commit and ack, "mid-batch");
      never after SIGTERM alone;
    - pipelined: whole transactions acknowledged by more than one UPLOAD_ACK (several
      UPLOADs of one session in one group: qaagent pipelines its UPLOADs, issue 15);
    - acked_missing: ids acked `stored` with no row in the server store (a loss at the
      store);
    - ack_multi_tx: UPLOAD_ACK groups whose stored ids come from more than one transaction
      (only possible if two acks of one agent fell in the same millisecond);
    - duplicate_results: sent-log rows with result duplicate.
    """
    logs = {a.id: sent_log_full(a) for a in agents}
    rows = store.query(f"select id::text, sender, created_ms from {store.messages_table()} "
                       "where sender_is_agent and sender = any(%s)", [list(logs)])
    tx: Dict[tuple, set] = defaultdict(set)
    row_tx: Dict[str, tuple] = {}
    for mid, sender, created in rows:
        tx[(sender, int(created))].add(mid)
        row_tx[mid] = (sender, int(created))
    out = Counter(upload_tx=len(tx))
    for (sender, _), mids in tx.items():
        got = [logs[sender].get(m, (None, None, None)) for m in mids]
        results = {r for _, r, _ in got}
        acks = {d for _, _, d in got}
        if results == {0}:
            out["whole"] += 1
            out["pipelined"] += len(acks) > 1
        else:
            out["committed_unacked"] += 1
    groups: Dict[tuple, set] = defaultdict(set)
    for aid, log in logs.items():
        for mid, (_, res, done) in log.items():
            if res == 1:
                out["duplicate_results"] += 1
            if res != 0:
                continue
            groups[(aid, done)].add(mid)
            if mid not in row_tx:
                out["acked_missing"] += 1
    for mids in groups.values():
        if len({row_tx[m] for m in mids if m in row_tx}) > 1:
            out["ack_multi_tx"] += 1
    for k in ("whole", "committed_unacked", "pipelined", "acked_missing", "ack_multi_tx",
              "duplicate_results"):
        out.setdefault(k, 0)
    return dict(out)


def sent_log_full(agent) -> Dict[str, tuple]:
    """{id: (address, result, done_ms)} of agent's sent log."""
    return {canonical(i): (a, int(r), int(d)) for i, a, r, d in QaAgentStore(agent.db)._rows(
        "SELECT id, address, result, done_ms FROM sent_log")}


def atomicity_line(b: Dict[str, int]) -> str:
    return ("batches: " + " ".join(f"{k}={b[k]}" for k in (
        "upload_tx", "whole", "committed_unacked", "pipelined", "acked_missing",
        "ack_multi_tx", "duplicate_results")))


# --------------------------------------------------------------- faults


class Faults:
    """Fault actions on the pool, each logged with its time (self.log)."""

    def __init__(self, gws: Dict[str, harness.Gateway], pg: Optional[harness.PgServer] = None,
                 t0: Optional[float] = None) -> None:
        self.nodes = nodes_of(gws)
        self.pg = pg
        self.t0 = t0 or time.monotonic()
        self.log: List[str] = []
        self.counts: Counter = Counter()

    def _note(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:7.2f}s {what}")

    def _wait_in_flight(self, gw, store) -> str:
        if store is None:
            return ""
        caught = upload_in_flight(store, gw.node)
        self.counts["in_flight" if caught else "not_in_flight"] += 1
        return " (an UPLOAD in flight)" if caught else " (no UPLOAD seen in flight in 5 s)"

    def kill_node(self, gw, down_s: float, in_flight_of: Optional[harness.Store] = None) -> None:
        """SIGKILL, down for down_s, restart. With in_flight_of (the store): the kill
        waits until one of the node's UPLOADs is running in PostgreSQL (mid-batch)."""
        how = self._wait_in_flight(gw, in_flight_of)
        gw.kill(signal.SIGKILL)
        self._note(f"SIGKILL {gw.node}{how}")
        self.counts["sigkill"] += 1
        time.sleep(down_s)
        gw.start()
        self._note(f"started {gw.node}")

    def term_node(self, gw, down_s: float, in_flight_of: Optional[harness.Store] = None) -> None:
        """SIGTERM: the node drains (in-flight requests answered, then ERROR draining or
        REASSIGN) and must exit 0 within drain_timeout; restart after down_s. With
        in_flight_of: sent while one of the node's UPLOADs is running in PostgreSQL."""
        how = self._wait_in_flight(gw, in_flight_of)
        t = time.monotonic()
        rc = gw.stop(grace=15)
        self._note(f"SIGTERM {gw.node}{how}: exit {rc} after {time.monotonic() - t:.2f}s")
        assert rc == 0, f"qagw {gw.node} exited {rc} on SIGTERM:\n{harness.tail(gw.log, 30)}"
        self.counts["sigterm"] += 1
        time.sleep(down_s)
        gw.start()
        self._note(f"started {gw.node}")

    def crash_pg(self, down_s: float) -> None:
        """PostgreSQL stopped in immediate mode (no shutdown checkpoint, backends quit at
        once: a crash as far as the data is concerned), restarted after down_s."""
        assert self.pg is not None
        self.pg.stop("immediate")
        self._note("PostgreSQL stop -m immediate")
        self.counts["pg_crash"] += 1
        time.sleep(down_s)
        self.pg.start()
        self._note("PostgreSQL started")


def set_synchronous_commit(pg: harness.PgServer, value: str, **more: str) -> str:
    """ALTER SYSTEM synchronous_commit (and more settings), reload; returns SHOW's answer."""
    pg.admin_sql(f"alter system set synchronous_commit = '{value}'")
    for k, v in more.items():
        pg.admin_sql(f"alter system set {k} = '{v}'")
    pg.admin_sql("select pg_reload_conf()")
    time.sleep(0.3)
    return pg.admin_sql("show synchronous_commit")


# --------------------------------------------------------------- the mixed scenario


def mixed(qagw, agent, uid, tmp_path, pg, seconds: float, n_agents: int = 20) -> dict:
    """All the faults of test_faults.py interleaved with traffic for `seconds`: SIGKILL of
    a node and SIGTERM of a node (each while one of its UPLOADs is in PostgreSQL, the
    store slowed by 30 ms an insert), both nodes killed at once, PostgreSQL crashed (at
    synchronous_commit=on, the safe setting). Returns the figures; asserts nothing lost,
    nothing duplicated, nothing pending, every node and agent alive, no UPLOAD
    acknowledged in parts and nothing acked missing from the store."""
    assert set_synchronous_commit(pg, "on") == "on"
    db = pg.create_database(f"qagw_soak_{uid}")
    gws = two_node_pool(qagw, db)
    nodes = nodes_of(gws)
    slow_uploads(db, 0.03)  # so that node faults can wait for an UPLOAD in flight
    tr = soak_traffic(gws, agent, uid, tmp_path, n_agents=n_agents)
    rng = random.Random(uid)
    t0 = time.monotonic()
    faults = Faults(gws, pg=pg, t0=t0)
    tr.start(seed=uid)
    kinds = ["kill", "term", "kill_both", "pg"]
    try:
        time.sleep(2.0)
        i = 0
        next_progress = t0 + 60
        while time.monotonic() - t0 < seconds - 4:
            tr.check_alive()
            if time.monotonic() >= next_progress:
                print(f"\nmixed progress: {tr.progress(time.monotonic() - t0)}, faults "
                      f"{dict(faults.counts)}", flush=True)
                next_progress += 60
            kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds + ["kill"])
            i += 1
            if kind == "kill":
                faults.kill_node(rng.choice(nodes), rng.uniform(0.3, 2.0), in_flight_of=db)
            elif kind == "term":
                faults.term_node(rng.choice(nodes), rng.uniform(0.3, 2.0), in_flight_of=db)
            elif kind == "kill_both":
                for g in nodes:
                    g.kill(signal.SIGKILL)
                faults._note("SIGKILL both nodes")
                faults.counts["sigkill_both"] += 1
                time.sleep(rng.uniform(0.5, 2.0))
                for g in nodes:
                    g.start()
                faults._note("started both nodes")
            else:
                faults.crash_pg(rng.uniform(0.5, 2.0))
            # short runs (make test) keep faults closer together, to fit every kind in
            time.sleep(rng.uniform(2.0, 5.0) if seconds >= 120 else rng.uniform(1.0, 2.0))
        traffic_s = time.monotonic() - t0
        tr.stop_senders()
        assert not tr.send_failures, tr.send_failures[:3]
        rep = tr.drain()
    finally:
        tr.stop_senders()
        tr.stop_runs()
    (tmp_path / "faults.log").write_text("\n".join(faults.log) + "\n")
    batches = batch_atomicity(db, tr.agents)
    figures = {
        "seconds": round(traffic_s, 1), "agents": len(tr.agents), "sent": tr.sent,
        "faults": dict(faults.counts), "sessions": tr.sessions(), "late": tr.late,
        "report": rep, "batches": batches, "server_pending": tr.server_pending(db),
        "run_received_dupes": tr.run_received_dupes(),
    }
    print(f"\nmixed: {figures['seconds']}s, {len(tr.agents)} agents, {tr.sent} messages queued, "
          f"faults {dict(faults.counts)}, {figures['sessions']} sessions, late (only after "
          f"an explicit sync) {tr.late}\n  sessions closed: {tr.closed_reasons()}")
    print(atomicity_line(batches))
    print(rep.line())
    rep.assert_ok()
    assert rep.body_unknown == 0, rep.details()  # every body was compared
    assert rep.pending == 0, rep.details()
    assert rep.acked == tr.sent, f"{tr.sent} queued, {rep.acked} acked: {rep.details()}"
    assert figures["server_pending"] == 0
    assert figures["run_received_dupes"] == 0
    assert batches["acked_missing"] == 0, batches
    for g in nodes:
        assert g.alive(), f"qagw {g.node} died:\n{harness.tail(g.log, 30)}"
    return figures


def soak_seconds(default: float) -> float:
    return float(os.environ.get("SOAK_SECONDS") or default)


def test_soak(qagw, agent, uid, tmp_path, private_pg):
    """`make soak`: the mixed scenario for SOAK_SECONDS (default 600 s), bounded by it
    (plus start-up and a drain of at most ~45 s)."""
    mixed(qagw, agent, uid, tmp_path, private_pg, soak_seconds(600))
