"""Issue 8: faults with traffic flowing, checked by the history checker (history.py).

Traffic (soak.Traffic): 20 `qaagent run` agents, -x lists over the three workers of two
nodes (n1: ml1, ml2; n2: ml3), messages queued continuously by sender threads. After the
faults, a bounded drain; then the checker's figures are printed and asserted:
acked-but-never-received (lost) 0, application duplicates 0, nothing pending.

1. SIGKILL of a node mid-batch, three times in ~20 s: each kill waits until one of the
   node's UPLOADs is running in PostgreSQL (pg_stat_activity, by application_name; a
   test trigger makes each insert statement sleep 30 ms so that an UPLOAD is in flight
   long enough to be caught).
6. SIGTERM during traffic, sent the same way while an UPLOAD is in flight: the node drains
   and exits 0; every UPLOAD is either acked whole or committed nothing
   (soak.batch_atomicity: no commit without its ack reaching the agent, no batch
   acknowledged in parts, nothing acked missing from the store).
Negative control: the same checker against PostgreSQL at synchronous_commit=off crashed
right after uploads were acked must see loss (and sees none at synchronous_commit=on).
Mixed: soak.mixed, the scenario of `make soak`, for 30 s.
"""

from __future__ import annotations

import threading
import time

from qagwtest import harness
from qagwtest.history import History
from qagwtest.traffic import Traffic
from soak import (Faults, atomicity_line, batch_atomicity, mixed, nodes_of,
                  set_synchronous_commit, slow_uploads, soak_traffic, two_node_pool)

TRAFFIC_AGENTS = 20
MIN_TRAFFIC = 150  # messages queued in ~16 s of traffic; ~450-1200 seen on a 2-core machine
SLOW_INSERT_S = 0.03


def _finish(tr: Traffic, store, faults: Faults, tmp_path, title: str):
    """Stops the senders, drains, prints the figures; returns (report, batches)."""
    tr.stop_senders()
    assert not tr.send_failures, tr.send_failures[:3]
    rep = tr.drain()
    (tmp_path / "faults.log").write_text("\n".join(faults.log) + "\n")
    batches = batch_atomicity(store, tr.agents)
    print(f"\n{title}: {len(tr.agents)} agents, {tr.sent} messages queued, faults "
          f"{dict(faults.counts)}, {tr.sessions()} sessions, late (only after an explicit "
          f"sync) {tr.late}\n  sessions closed: {tr.closed_reasons()}\n  "
          + "\n  ".join(faults.log))
    print(atomicity_line(batches))
    print(rep.line())
    return rep, batches


def _assert_clean(tr: Traffic, rep, batches, store, gws) -> None:
    rep.assert_ok()
    assert rep.body_unknown == 0, rep.details()  # every body was compared
    assert rep.pending == 0, rep.details()
    assert rep.acked == tr.sent, f"{tr.sent} queued, {rep.acked} acked: {rep.details()}"
    assert rep.received == rep.acked, rep.details()
    assert tr.run_received_dupes() == 0
    assert tr.server_pending(store) == 0
    assert batches["acked_missing"] == 0, batches
    for g in nodes_of(gws):
        assert g.alive(), f"qagw {g.node} died:\n{harness.tail(g.log, 30)}"


def _node_fault_rounds(qagw, agent, uid, tmp_path, store, fault: str, what: str):
    """Traffic on a two-node pool with a slow store (30 ms an insert statement, so that a
    fault lands while an UPLOAD runs in PostgreSQL); fault ("kill_node" or "term_node")
    hits n1, n2, n1, 4 s apart; then the drain and the history check. Returns
    (gws, traffic, faults, report, batches), already checked clean."""
    gws = two_node_pool(qagw, store)
    n1, n2 = nodes_of(gws)
    slow_uploads(store, SLOW_INSERT_S)
    tr = soak_traffic(gws, agent, uid, tmp_path, n_agents=TRAFFIC_AGENTS).start(seed=uid)
    faults = Faults(gws)
    try:
        for victim in (n1, n2, n1):
            time.sleep(4.0)
            tr.check_alive()
            getattr(faults, fault)(victim, down_s=1.5, in_flight_of=store)
        time.sleep(4.0)
        tr.check_alive()
        rep, batches = _finish(tr, store, faults, tmp_path, what)
    finally:
        tr.stop_runs()
    _assert_clean(tr, rep, batches, store, gws)
    assert tr.sent >= MIN_TRAFFIC, f"too little traffic to mean anything: {tr.sent}"
    return gws, tr, faults, rep, batches


def test_sigkill_node_mid_batch(qagw, agent, uid, tmp_path, store):
    """(1) A node SIGKILLed three times, each time while one of its UPLOADs is running in
    PostgreSQL (the store made slow: 30 ms an insert statement)."""
    _, _, faults, _, batches = _node_fault_rounds(qagw, agent, uid, tmp_path, store,
                                                  "kill_node", "SIGKILL of a node x3")
    assert faults.counts["sigkill"] == 3
    assert faults.counts["in_flight"] >= 2, f"kills not mid-batch: {faults.log}"
    # the signature of a kill between commit and UPLOAD_ACK: committed, ack never arrived,
    # the retry answered `duplicate` -- and the message still delivered once
    assert batches["committed_unacked"] >= 1, batches


def test_sigterm_drains_batches_whole(qagw, agent, uid, tmp_path, store):
    """(6) SIGTERM during traffic: exit 0 after the drain; each in-flight UPLOAD acked
    whole or refused having committed nothing (no `duplicate` ever comes back). Each
    SIGTERM is sent while one of the node's UPLOADs is running in PostgreSQL (slow store,
    as in the SIGKILL test)."""
    _, _, faults, _, batches = _node_fault_rounds(qagw, agent, uid, tmp_path, store,
                                                  "term_node", "SIGTERM of a node x3")
    assert faults.counts["sigterm"] == 3
    assert faults.counts["in_flight"] >= 2, f"SIGTERMs not mid-batch: {faults.log}"
    assert batches["whole"] == batches["upload_tx"], batches
    assert batches["committed_unacked"] == 0 and batches["duplicate_results"] == 0, (
        f"an UPLOAD was committed but its UPLOAD_ACK never reached the agent: {batches}")


# --------------------------------------------------------------- negative control

SENDERS = RECIPIENTS = 10
PER_SENDER = 10


def _crash_round(qagw_gws, agent, tag: str, pg, db) -> tuple:
    """20 fresh agents: 10 senders queue 10 messages each and sync (all acked), then
    PostgreSQL is stopped in immediate mode at once and restarted; the 10 recipients sync
    and take what arrived, for at most 10 s. Returns (report, batches)."""
    gws = qagw_gws
    senders = [agent(f"s{i}-{tag}", gws["ml1"].stream("ml1"), gws["ml3"].stream("ml3"))
               for i in range(SENDERS)]
    rcpts = [agent(f"r{i}-{tag}", gws["ml3"].stream("ml3"), gws["ml1"].stream("ml1"))
             for i in range(RECIPIENTS)]
    h = History()
    for a in senders + rcpts:
        h.add(a)
    errors = []

    def queue_and_sync(k, s):
        try:
            for j in range(PER_SENDER):
                addr, body = f"{rcpts[(k + j) % RECIPIENTS].id}\\q", f"nc {tag} {k} {j}"
                h.sent(s.id, s.send(addr, body), to=addr, body=body)
            s.sync()
        except AssertionError as e:
            errors.append(str(e))
    ths = [threading.Thread(target=queue_and_sync, args=(k, s)) for k, s in enumerate(senders)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    assert not errors, errors[:2]
    pg.stop("immediate")  # right after the UPLOAD_ACKs
    pg.start()

    def sync_rcpts():
        for r in rcpts:
            res = r.run("sync")
            assert res.rc in (0, 1), repr(res)
    rep = h.drain(timeout=10, queue="q", poll=sync_rcpts)
    return rep, batch_atomicity(db, senders)


def test_negative_control_async_commit_crash_loses(qagw, agent, uid, private_pg):
    """The checker can see loss: at synchronous_commit=off (ALTER SYSTEM + reload, and
    wal_writer_delay 10 s, so an asynchronous commit stays in PostgreSQL's memory that
    long) a PostgreSQL crash right after UPLOAD_ACKs loses acked messages, and the
    checker reports them lost. The same procedure at synchronous_commit=on loses none.
    Up to three unsafe rounds; never seeing loss fails the test (it would prove nothing)."""
    db = private_pg.create_database(f"qagw_nc_{uid}")
    gws = two_node_pool(qagw, db)
    assert set_synchronous_commit(private_pg, "on", wal_writer_delay="10s") == "on"
    rep, batches = _crash_round(gws, agent, f"safe-{uid}", private_pg, db)
    print("\nnegative control, synchronous_commit=on + PostgreSQL crash:\n"
          f"{atomicity_line(batches)}"
          f"\n{rep.line()}")
    assert rep.acked == SENDERS * PER_SENDER, rep.details()
    rep.assert_ok()
    assert batches["acked_missing"] == 0, batches

    assert set_synchronous_commit(private_pg, "off", wal_writer_delay="10s") == "off"
    seen = []
    for rnd in range(1, 4):
        rep, batches = _crash_round(gws, agent, f"unsafe{rnd}-{uid}", private_pg, db)
        seen.append(rep.line())
        print(f"negative control, synchronous_commit=off + PostgreSQL crash, round {rnd}:\n"
              f"{atomicity_line(batches)}\n{rep.line()}")
        assert rep.acked == SENDERS * PER_SENDER, rep.details()
        if rep.lost > 0:
            # the checker's loss is the store's: acked `stored`, no row in PostgreSQL
            assert batches["acked_missing"] == rep.lost, (batches, rep.details())
            break
    else:
        raise AssertionError("negative control inconclusive: the checker saw no loss in 3 "
                             "rounds of synchronous_commit=off + PostgreSQL crash:\n"
                             + "\n".join(seen))
    for g in nodes_of(gws):
        assert g.alive(), f"qagw {g.node} died:\n{harness.tail(g.log, 30)}"


# --------------------------------------------------------------- mixed, short


def test_mixed_faults_short(qagw, agent, uid, tmp_path, private_pg):
    """The scenario of `make soak` (soak.mixed) for 24 s: node SIGKILL, node SIGTERM, both
    nodes SIGKILLed, PostgreSQL crashed (synchronous_commit=on), interleaved."""
    mixed(qagw, agent, uid, tmp_path, private_pg, 24)
