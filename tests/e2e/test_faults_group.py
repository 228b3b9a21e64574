"""Issue 15: faults under group commit (store/group.c, store/upload.c, qa_upload_group):
the UPLOADs of many sessions of one worker are committed by one statement.

Load (class Uploaders): 28 Python QASync clients (qasync.Client, one thread each, one agent
id each) upload batches of 3 messages to 8 recipients as fast as their UPLOAD_ACKs come
back, all on ONE worker (ml1 of node n1). The store is made slow by 20 ms per INSERT
statement into qa_messages (a test trigger), so that while one group statement runs the
next one gathers many sessions' batches, and a fault can be aimed at a group in flight
(pg_stat_activity shows qa_upload_group running on the node's connections, named
application_name qagw/n1/...). What each client got is recorded in a history.History (every
final UPLOAD_ACK result); a client that loses its session (connection closed, ERROR) opens
a new one and uploads the same batch again (same ids: the retry is idempotent). After the
faults the recipients FETCH and acknowledge everything (the application receiving), and
the checker runs: nothing acked (stored or duplicate) lost, nothing delivered twice,
nothing left pending, every acked id exactly once in the store, and every recipient's
pending counter (qa_pending, migration 8) equal to its real count of pending rows.

(a) the node SIGKILLed twice while a group statement is in flight, restarted each time;
(b) PostgreSQL SIGKILLed (postmaster and every backend) under the same load and started
    again: no UPLOAD_ACK while it is down, the sessions get ERROR store_unavailable
    (retryable), and after the restart nothing acked is missing;
(c) a group in which one session's batch makes the statement fail (a test trigger raises
    for one recipient): only that session fails (ERROR store_unavailable); the other
    sessions of the same group get their UPLOAD_ACKs, stored (group.c splits a failed group
    and sends each part alone);
(d) an id repeated within one filling group (an agent's retry on a new session while its
    first attempt still waits in the group): the retry must not be answered `duplicate`
    while the first attempt is not stored (quota): store/upload.c puts a part that repeats
    an id of an earlier part of the group into the next group (found by this test: the
    first version flagged the repeat as a duplicate before the store had decided the first).
Before a fault, /metrics must show grouping on the worker: qagw_store_group_parts_total >
qagw_store_groups_total (more UPLOADs than statements).
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from typing import List, Optional

import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.harness import msg, wait_until
from qagwtest.history import History
from soak import NodeStore, node_app_pattern
from test_faults_store import pg_set, restart_postgres, sigkill_postgres
from test_upgrade import count_mismatches

HOST = "127.0.0.1"
N_SENDERS = 28
N_RCPTS = 8
BATCH = 3
SLOW_INSERT_S = 0.02
QUEUE = "q"


# ------------------------------------------------------------------ helpers


def group_stats(gw, worker: str = "ml1") -> tuple:
    """(qagw_store_groups_total, qagw_store_group_parts_total) of worker, kind upload."""
    m = gw.admin.metrics()
    return (m.value("qagw_store_groups_total", worker=worker, kind="upload"),
            m.value("qagw_store_group_parts_total", worker=worker, kind="upload"))


def wait_grouping(gw, min_groups: int = 20, timeout: float = 10.0) -> tuple:
    """Waits until /metrics (refreshed once a second) shows at least min_groups group
    statements and more parts than groups; returns (groups, parts)."""
    return wait_until(lambda: (lambda gp: gp if gp[0] >= min_groups and gp[1] > gp[0] else None)(
        group_stats(gw)), timeout, interval=0.25,
        what=f"qagw_store_group_parts_total > qagw_store_groups_total >= {min_groups}")


def slow_inserts(store: harness.Store, seconds: float) -> None:
    """Every INSERT statement into qa_messages sleeps `seconds` (a test trigger)."""
    store.query("CREATE FUNCTION qa_test_slow() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({float(seconds)}); RETURN NULL; END $$")
    store.query("CREATE TRIGGER qa_test_slow BEFORE INSERT ON qa_messages FOR EACH STATEMENT "
                "EXECUTE FUNCTION qa_test_slow()")


def slow_for(store: harness.Store, recipient: str, seconds: float) -> None:
    """An INSERT statement into qa_messages that stores a message for recipient sleeps
    `seconds` before it commits: a group statement that stays in flight on demand."""
    store.query("CREATE FUNCTION qa_test_slow_for() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF EXISTS (SELECT 1 FROM nt WHERE recipient = '{recipient}') THEN "
                f"PERFORM pg_sleep({float(seconds)}); END IF; RETURN NULL; END $$")
    store.query("CREATE TRIGGER qa_test_slow_for AFTER INSERT ON qa_messages REFERENCING NEW "
                "TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION qa_test_slow_for()")


def group_in_flight(store: harness.Store, node: str, timeout: float = 5.0) -> bool:
    """Waits until a qa_upload_group statement of node's connections runs in PostgreSQL."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = store.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                         "AND state = 'active' AND query LIKE %s",
                         (node_app_pattern(node), "%qa_upload_group(%"))
        if int(n) > 0:
            return True
        time.sleep(0.003)
    return False


class Uploaders:
    """N_SENDERS Python clients uploading to one worker; see the module's docstring."""

    def __init__(self, gw, worker: str, uid: str, n: int = N_SENDERS,
                 n_rcpts: int = N_RCPTS) -> None:
        self.gw, self.worker = gw, worker
        self.h = History()
        self.senders = [f"gs{i:02d}-{uid}" for i in range(n)]
        self.rcpts = [f"gr{i}-{uid}" for i in range(n_rcpts)]
        self.recs = {r: self.h.py(r) for r in self.rcpts}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.queued: List[str] = []  # every id ever put in a batch
        self.results: Counter = Counter()  # UPLOAD_ACK results
        self.errors: Counter = Counter()  # ERROR names, and connection failures
        self.ack_times: List[float] = []  # when an UPLOAD_ACK with stored/duplicate came
        self.unresolved: List[str] = []  # batches never acked (ids), after the give-up time
        self.failures: List[str] = []  # anything unexpected in a thread
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def start(self) -> "Uploaders":
        for t in self.threads:
            t.start()
        return self

    def _connect(self, aid: str) -> q.Client:
        c = q.Client(HOST, self.gw.port(self.worker), timeout=15)
        try:
            c.hello(aid)
        except BaseException:
            c.close()
            raise
        return c

    def _run(self, i: int) -> None:
        aid = self.senders[i]
        rec = self.h.py(aid)
        rng = random.Random(f"{aid}")
        client: Optional[q.Client] = None
        batch = None
        give_up = None
        try:
            while True:
                if batch is None:
                    if self.stop.is_set():
                        break
                    batch = [msg(f"{rng.choice(self.rcpts)}\\{QUEUE}") for _ in range(BATCH)]
                    with self.lock:
                        self.queued += [str(m.id) for m in batch]
                if self.stop.is_set() and give_up is None:
                    give_up = time.monotonic() + 30
                if give_up is not None and time.monotonic() > give_up:
                    with self.lock:
                        self.unresolved += [str(m.id) for m in batch]
                    break
                try:
                    if client is None:
                        client = self._connect(aid)
                    ack = rec.upload(client, batch)
                    res = [r for _, r in ack.results]
                    with self.lock:
                        self.results.update(res)
                        if any(r in (q.R_STORED, q.R_DUPLICATE) for r in res):
                            self.ack_times.append(time.monotonic())
                    if set(res) - {q.R_STORED, q.R_DUPLICATE}:
                        self.failures.append(f"{aid}: unexpected results {res}")
                        return
                    batch = None
                except q.ServerError as e:
                    with self.lock:
                        self.errors[e.error.name] += 1
                    client.close() if client else None
                    client = None
                    time.sleep(0.05)
                except (q.Closed, OSError, TimeoutError, ConnectionError) as e:
                    with self.lock:
                        self.errors[f"connection: {type(e).__name__}"] += 1
                    if client:
                        client.close()
                    client = None
                    time.sleep(0.05)
        except Exception as e:  # a bug of the test or a protocol violation
            self.failures.append(f"{aid}: {e!r}")
        finally:
            if client:
                client.close()

    def finish(self, timeout: float = 40.0) -> None:
        """Stops queueing new batches; each client goes on until its last batch is acked."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "an uploader thread is stuck"
        assert not self.failures, self.failures[:5]

    def acked_ids_now(self) -> set:
        return set(self.h.acked_ids())

    def fetch_all(self) -> None:
        """The applications: every recipient FETCHes and acknowledges what is pending."""
        for r in self.rcpts:
            with q.Client(HOST, self.gw.port(self.worker), timeout=15) as c:
                c.hello(r)
                while True:
                    d = c.fetch(max_count=1000)
                    self.recs[r].deliver(d)
                    if d.msgs:
                        c.deliver_ack([m.seq for m in d.msgs])
                    if not d.msgs and not d.more:
                        break
                c.ping()

    def check(self, store: harness.Store, title: str):
        """The history check after the faults; returns the report."""
        rep = self.h.drain(timeout=20, interval=0.3, poll=self.fetch_all)
        queued = set(self.queued)
        acked = self.acked_ids_now()
        rows = store.rows_per_id(sorted(queued))
        print(f"\n{title}: {len(self.senders)} senders, {len(queued)} messages queued, "
              f"results {dict(self.results)}, errors {dict(self.errors)}\n{rep.line()}")
        rep.assert_ok()
        assert not self.unresolved, f"{len(self.unresolved)} messages never acked"
        assert rep.pending == 0, rep.details()
        assert acked == queued, f"{len(queued - acked)} queued but never acked"
        assert rep.received == rep.acked == len(queued), rep.details()
        not_once = {i: n for i, n in rows.items() if n != 1}
        assert not not_once, f"{len(not_once)} acked ids not exactly once in the store: " \
                             f"{list(not_once.items())[:5]}"
        others = int(store.scalar("SELECT count(*) FROM qa_messages WHERE sender = any(%s) "
                                  "AND NOT (id::text = any(%s))", (self.senders, sorted(queued))))
        assert others == 0, f"{others} rows from the senders that nobody queued"
        assert count_mismatches(store) == []
        assert int(store.scalar("SELECT count(*) FROM qa_messages WHERE recipient = any(%s) "
                                "AND status = 1", (self.rcpts,))) == 0
        return rep


def one_worker(qagw, store: harness.Store, **kw):
    """Node n1 with one worker, ml1, its store connections named qagw/n1/..."""
    return qagw(workers=("ml1",), node="n1", store_=NodeStore(store, "n1"), **kw)


# ------------------------------------------------------------------ (a) node SIGKILL


def test_sigkill_node_mid_group(qagw, store, uid):
    """(a) Grouping shown on /metrics, then the node SIGKILLed while a group statement runs,
    restarted 1 s later; twice. The kill lands between a group's commit and its acks at
    least once (retries answered `duplicate`); nothing acked is lost or stored twice."""
    g = one_worker(qagw, store)
    slow_inserts(store, SLOW_INSERT_S)
    load = Uploaders(g, "ml1", uid).start()
    kills, caught, grouped, acked_at_kill = 0, 0, [], []
    try:
        for _ in range(2):
            groups, parts = wait_grouping(g, min_groups=20 if not grouped else 5)
            grouped.append((groups, parts))
            time.sleep(1.0)
            if group_in_flight(store, "n1"):
                caught += 1
            g.kill(signal.SIGKILL)
            kills += 1
            acked_at_kill.append(len(load.acked_ids_now()))
            time.sleep(1.0)
            g.start()
            time.sleep(2.0)
        time.sleep(1.0)
    finally:
        load.finish()
    load.check(store, f"SIGKILL of the node x{kills} mid-group")
    print(f"grouping before each kill (groups, parts): {grouped}; kills caught a group in "
          f"flight: {caught}/{kills}")
    for groups, parts in grouped:
        assert parts > groups, grouped
    assert caught >= 1, "no kill landed while a group statement was in flight"
    # the signature of a kill between a group's commit and its UPLOAD_ACKs: the retries
    # of the sessions it carried were answered `duplicate`
    assert load.results[q.R_DUPLICATE] >= 1, dict(load.results)
    assert acked_at_kill[0] > 0 and acked_at_kill[-1] > acked_at_kill[0], acked_at_kill
    assert g.alive(), harness.tail(g.log, 30)


# ------------------------------------------------------------------ (b) PostgreSQL SIGKILL


def test_postgres_sigkill_mid_group(qagw, private_pg, uid):
    """(b) Grouping shown, then PostgreSQL (private, synchronous_commit=on) SIGKILLed under
    the load for ~2.5 s and started again: no UPLOAD_ACK while it is down, ERROR
    store_unavailable instead (and no other ERROR), nothing acked lost afterwards."""
    pg_set(private_pg, "synchronous_commit", "on")  # an ack follows its WAL flush
    st = private_pg.create_database(f"qagw_grp_{uid}")
    g = one_worker(qagw, st)
    slow_inserts(st, SLOW_INSERT_S)
    load = Uploaders(g, "ml1", uid).start()
    try:
        groups, parts = wait_grouping(g)
        time.sleep(1.0)
        caught = group_in_flight(st, "n1")
        pids = sigkill_postgres(private_pg)
        t_kill = time.monotonic()
        time.sleep(2.5)
        errors_down = dict(load.errors)
        restart_postgres(private_pg, pids)
        t_up = time.monotonic()
        wait_until(lambda: any(t > t_up for t in list(load.ack_times)), 20,
                   what="an UPLOAD_ACK after PostgreSQL came back")
        time.sleep(2.0)
    finally:
        load.finish()
    load.check(st, "PostgreSQL SIGKILL mid-group")
    late = [t - t_kill for t in load.ack_times if t_kill + 0.5 <= t < t_up]
    errs = g.admin.metrics().value("qagw_errors_total", code="store_unavailable")
    print(f"grouping before the kill: {groups} groups, {parts} parts; a group in flight at the "
          f"kill: {caught}; PostgreSQL down {t_up - t_kill:.1f}s; errors while down "
          f"{errors_down}; qagw_errors_total{{code=\"store_unavailable\"}} {errs:.0f}")
    assert parts > groups
    assert not late, f"{len(late)} UPLOAD_ACKs while PostgreSQL was down (at {late[:5]} s)"
    assert errors_down.get("store_unavailable", 0) >= 1, errors_down
    assert errs >= 1
    unexpected = {k: v for k, v in load.errors.items()
                  if not (k == "store_unavailable" or k.startswith("connection"))}
    assert not unexpected, f"ERRORs other than store_unavailable: {unexpected}"
    assert g.alive(), harness.tail(g.log, 30)


# ------------------------------------------------------------------ (c) one part fails


def test_failing_part_fails_only_its_session(qagw, store, uid):
    """One group of 5 sessions' UPLOADs, one of which stores a message for a recipient that
    a test trigger refuses (the statement raises): the group is split, the 4 other sessions
    get UPLOAD_ACK stored, the bad one ERROR store_unavailable; once the trigger is gone its
    retry is stored. A primer UPLOAD held 1 s in the store keeps the group filling."""
    g = qagw(workers=("ml1",))
    SLOW, BAD = f"slow-{uid}", f"bad-{uid}"
    slow_for(store, SLOW, 1.0)
    store.query("CREATE FUNCTION qa_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'qa_test_refuse: %% is refused', NEW.recipient; END $$")
    store.query("CREATE TRIGGER qa_test_refuse BEFORE INSERT ON qa_messages FOR EACH ROW "
                f"WHEN (NEW.recipient = '{BAD}') EXECUTE FUNCTION qa_test_refuse()")
    names = [f"c{i}-{uid}" for i in range(5)]
    bad_i = 2
    clients = {}
    try:
        primer = q.Client(HOST, g.port("ml1"))
        primer.hello(f"p-{uid}")
        for n in names:
            clients[n] = q.Client(HOST, g.port("ml1"))
            clients[n].hello(n)
        batches = {n: [msg(f"{names[(i + 1) % 5]}\\{QUEUE}"), msg(f"{names[(i + 2) % 5]}\\{QUEUE}")]
                   for i, n in enumerate(names)}
        batches[names[bad_i]][1] = msg(f"{BAD}\\{QUEUE}")  # one good message, one refused
        base = len(re.findall(r"a group of \d+ parts failed", g.log_text()))
        primer_msg = msg(f"{SLOW}\\{QUEUE}")
        primer.send_upload([primer_msg])
        time.sleep(0.2)  # the primer's group is in flight now (1 s)
        for n in names:
            clients[n].send_upload(batches[n])
        acks = {}
        for i, n in enumerate(names):
            if i == bad_i:
                err = clients[n].expect(q.Error, timeout=15)
                assert err.code == q.E_STORE_UNAVAILABLE and err.retryable == 1, err
                acks[n] = err
            else:
                ack = clients[n].expect(q.UploadAck, timeout=15)
                assert [r for _, r in ack.results] == [q.R_STORED, q.R_STORED], ack
                assert [i for i, _ in ack.results] == [m.id for m in batches[n]]
                acks[n] = ack
        assert [r for _, r in primer.expect(q.UploadAck, timeout=15).results] == [q.R_STORED]
        log = g.log_text()
        failed = [int(x) for x in re.findall(r"a group of (\d+) parts failed", log)][base:]
        print(f"\ngroup failures logged: {failed}; "
              f"{[l for l in log.splitlines() if 'qa_test_refuse' in l][:3]}")
        assert failed == [5], f"expected one failed group of the 5 parts: {failed}\n{log[-3000:]}"
        good_ids = [m.id for n in names if n != names[bad_i] for m in batches[n]]
        bad_ids = [m.id for m in batches[names[bad_i]]]
        rows = store.rows_per_id(good_ids + bad_ids + [primer_msg.id])
        assert all(rows[str(i)] == 1 for i in good_ids + [primer_msg.id]), rows
        assert all(rows[str(i)] == 0 for i in bad_ids), rows  # the bad part is atomic
        assert count_mismatches(store) == []  # the failed group's counting rolled back
        # the others keep working on their sessions; the refused one's retry, once the
        # store accepts it, is stored whole
        for n in names:
            if n != names[bad_i]:
                assert isinstance(clients[n].ping(), q.Pong)
        store.query("DROP TRIGGER qa_test_refuse ON qa_messages")
        with q.Client(HOST, g.port("ml1")) as again:
            again.hello(names[bad_i])
            ack = again.upload(batches[names[bad_i]])
            assert [r for _, r in ack.results] == [q.R_STORED, q.R_STORED], ack
        assert all(n == 1 for n in store.rows_per_id(bad_ids).values())
        assert count_mismatches(store) == []
    finally:
        for c in list(clients.values()):
            c.close()


# ------------------------------------------------------------------ (d) repeated id in a group


class AckedWithoutRow(AssertionError):
    """The defect (d) shows: a message acknowledged while it is in no store."""


def test_retry_in_same_group_is_not_acked_without_a_row(qagw, store, uid):
    """Agent A uploads X to a recipient at its quota; its connection drops while the UPLOAD
    waits in the worker's filling group (a primer group holds the store for 2 s), and A's
    retry on a new session (same id, as qaagent does) arrives while it still waits. The
    retry must be answered quota (5), as the first attempt would have been, never
    `duplicate` while X is in no store. The gateway puts the retry in the group after the
    first attempt's (checked from /metrics: 4 groups for the 4 UPLOADs, where one group
    carried both attempts before the fix)."""
    g = qagw(workers=("ml1",), sections={"store": {"max_pending": 1}})
    SLOW, FULL, A = f"slow-{uid}", f"full-{uid}", f"A-{uid}"
    with q.Client(HOST, g.port("ml1")) as z:
        z.hello(f"Z-{uid}")
        assert [r for _, r in z.upload([msg(f"{FULL}\\{QUEUE}")]).results] == [q.R_STORED]
    slow_for(store, SLOW, 2.0)
    with q.Client(HOST, g.port("ml1")) as primer:
        primer.hello(f"P-{uid}")
        primer.send_upload([msg(f"{SLOW}\\{QUEUE}")])
        time.sleep(0.2)  # the primer's group holds the store now
        x = msg(f"{FULL}\\{QUEUE}")
        first = q.Client(HOST, g.port("ml1"))
        first.hello(A)
        first.send_upload([x])
        time.sleep(0.05)
        first.close()  # the connection drops; its UPLOAD is still in the filling group
        with q.Client(HOST, g.port("ml1")) as retry:
            retry.hello(A)
            ack = retry.upload([x])
        assert [r for _, r in primer.expect(q.UploadAck, timeout=15).results] == [q.R_STORED]
    # groups: Z's, the primer's, the first attempt's and the retry's -> 4 groups, 4 parts
    stats = wait_until(lambda: (lambda gp: gp if gp[1] >= 4 else None)(group_stats(g)), 5,
                       interval=0.2, what="the group counters of the 4 UPLOADs")
    assert stats == (4, 4), f"the retry must not share the first attempt's group: {stats}"
    rows = store.rows_per_id([x.id])[str(x.id)]
    res = ack.results[0][1]
    print(f"\nretry of X in the same group: result {res}, rows of X in the store {rows}")
    assert res in (q.R_STORED, q.R_DUPLICATE, q.R_QUOTA), res
    if res != q.R_QUOTA and rows == 0:
        raise AckedWithoutRow(f"X acknowledged with result {res} but it is not in the store")
    assert res == q.R_QUOTA and rows == 0, (res, rows)


def test_concurrent_uploads_never_exceed_max_pending(qagw, store, uid):
    """qa_upload_group reads the quota without a lock and takes the counter last (so that
    groups to one recipient wait for each other only for that tail): two groups on two
    workers that both read "room for 3" must still leave at most max_pending = 3 pending.
    Each group's INSERT is held 1 s (a test trigger) between its quota read and its counter
    update, so the second group reads the counter before the first has added to it; the
    second then finds the recipient past the quota and answers its newest row quota."""
    g = qagw(workers=("ml1", "ml2"), sections={"store": {"max_pending": 3}})
    R = f"full-{uid}"
    slow_for(store, R, 1.0)
    batches = {"ml1": [msg(f"{R}\\{QUEUE}") for _ in range(2)],
               "ml2": [msg(f"{R}\\{QUEUE}") for _ in range(2)]}
    results = {}

    def upload(worker, delay):
        time.sleep(delay)
        with q.Client(HOST, g.port(worker)) as c:
            c.hello(f"{worker}-{uid}")
            results[worker] = [r for _, r in c.upload(batches[worker]).results]

    threads = [threading.Thread(target=upload, args=("ml1", 0.0)),
               threading.Thread(target=upload, args=("ml2", 0.3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert set(results) == {"ml1", "ml2"}, results
    flat = results["ml1"] + results["ml2"]
    assert all(r in (q.R_STORED, q.R_QUOTA) for r in flat), results
    pending = int(store.scalar("SELECT count(*) FROM qa_messages WHERE recipient = %s "
                               "AND status = 1", (R,)))
    counted = int(store.scalar("SELECT qa_pending(%s)", (R,)))
    print(f"\nresults {results}, pending {pending}, counter {counted}")
    assert pending == flat.count(q.R_STORED) == 3, (results, pending)
    assert flat.count(q.R_QUOTA) == 1, results
    assert counted == pending, (counted, pending)
    # the overlap really happened: the second group read the quota before the first's
    # commit, so its quota answer came from the trim after its insert
    assert results["ml1"] == [q.R_STORED, q.R_STORED] and results["ml2"] == [q.R_STORED, q.R_QUOTA], results
