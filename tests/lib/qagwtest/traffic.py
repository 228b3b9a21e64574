"""The fault suite's traffic (issues 8, 17, 18): one generator for the tests that break
something while agents work (test_faults*, test_ha_*, soak.py).

Traffic: N `qaagent run` agents (-policy automatic, `-fd` given), agent i listing the
streams starting at stream i mod len(streams), so that the primaries spread; sender
threads queue messages with `qaagent send` (-policy ondemand: `run` uploads them within
its -fd) from a random agent to another; every agent is registered with a
history.History, which checks after the fault that nothing acknowledged was lost,
duplicated or altered. Run's JSON events are pumped (and kept) so that its stdout never
fills. With take=True a thread plays the applications as well: `qaagent recv` of every
agent all along (what soak.py and test_faults.py check), and drain() ends a run in two
bounded steps (the runs first, then syncs).

test_faults_store.py uses the same class with one paced sender: wait_converged() follows
every message to its recipient's client store while a store fails, and settle() ends such a
test (outboxes empty, runs stopped, syncs, nothing pending anywhere, per-message
explanations when something is lost).

Not here, on purpose: test_faults_group.py's Uploaders (protocol clients that upload as
fast as acks return, to fill group commits): another load, recording other facts.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from . import procs
from .history import History, QaAgentStore, Report, canonical, recipient_of

N_AGENTS = 20
SENDERS = 3
QUEUE = "q"


def json_lines(proc) -> "queue.Queue":
    """A thread turning proc's stdout into a queue of parsed JSON lines (None at EOF)."""
    out: "queue.Queue" = queue.Queue()

    def pump():
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                out.put(json.loads(line))
            except ValueError:
                out.put({"event": "<not json>", "line": line})
        out.put(None)
    threading.Thread(target=pump, daemon=True).start()
    return out


def poll_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def stop_run(proc, timeout: float = 15) -> int:
    """SIGTERM to a `qaagent run`, its exit code (SIGKILL if it does not go in time)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except Exception:
            proc.kill()
            proc.wait(10)
            raise
    return proc.returncode


class Traffic:
    """N `qaagent run` agents exchanging messages; see the module's docstring."""

    def __init__(self, agent_factory, tmp_path: Path, streams: Sequence[str], uid: str,
                 n: int = N_AGENTS, extra: Sequence[str] = (), fd: str = "1",
                 tokens: Optional[Dict[str, str]] = None, ids: Optional[Sequence[str]] = None,
                 prefix: str = "a", send_pause: float = 0.0, take: bool = False,
                 verbose: Optional[bool] = None, auto: Sequence[str] = (), n_auto: int = 0,
                 dbs: Optional[Dict[int, Path]] = None) -> None:
        """auto, n_auto: agents 0..n_auto-1 list only auto[i % len(auto)] (an `auto(...)`
        stream: router-assigned). dbs: {i: path} puts agent i's client store elsewhere."""
        self.tmp = Path(tmp_path)
        self.history = History()
        self.agents = []
        ids = list(ids) if ids else [f"{prefix}{i:02d}-{uid}" for i in range(n)]
        for i, aid in enumerate(ids):
            k = i % len(streams)
            order = list(streams[k:]) + list(streams[:k])
            if i < n_auto:
                order = [auto[i % len(auto)]]
            ex = ["-fd", fd] + list(extra)
            if tokens:
                ex += ["-token", tokens[aid]]
            a = agent_factory(aid, *order, extra=ex)
            if dbs and i in dbs:
                a.db = Path(dbs[i])
            self.agents.append(a)
            self.history.add(a)
        self.ids = [a.id for a in self.agents]
        self.by_id = {a.id: a for a in self.agents}
        # QAGW_FAULTS_VERBOSE=1: the runs log every frame (-v) into run-ID.stderr
        self.verbose = bool(os.environ.get("QAGW_FAULTS_VERBOSE")) if verbose is None else verbose
        self.send_pause = send_pause
        self.taking = take
        self.late, self.late_detail = 0, ""  # set by drain()
        self.sync_failures = 0
        self.procs: Dict[str, object] = {}
        self.lines: Dict[str, object] = {}
        self.events: Dict[str, List[dict]] = {a.id: [] for a in self.agents}
        self.sent = 0
        self.queued: List[tuple] = []  # (from, to, id, monotonic time queued)
        self.send_failures: List[tuple] = []  # (agent, text): `qaagent send` failed
        self.recv_failures: List[tuple] = []  # (agent, text): `qaagent recv` failed
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        # bodies differ, so that one message's body handed with another's id shows
        self._body_n = itertools.count(1)

    # ----------------------------------------------------------- starting

    def stderr_path(self, aid: str) -> Path:
        return self.tmp / f"run-{aid}.stderr"

    def start_run(self, aid: str) -> None:
        """(Again) a `qaagent run` of aid."""
        p = self.by_id[aid].popen("run", policy="automatic", verbose=self.verbose,
                                  stderr_path=self.stderr_path(aid))
        self.procs[aid] = p
        self.lines[aid] = json_lines(p)

    def start_runs(self) -> None:
        for a in self.agents:
            self.start_run(a.id)

    def wait_welcomed(self, timeout: float = 20.0) -> None:
        """Until every run has had a WELCOME."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            missing = [a for a in self.ids if not self.welcomed(a)]
            if not missing:
                return
            assert time.monotonic() < deadline, f"no WELCOME within {timeout}s for {missing}"
            time.sleep(0.1)

    def start_senders(self, n: int = SENDERS, seed: str = "") -> None:
        for k in range(n):
            self._thread(self._sender, random.Random(f"{seed}-{k}"))
        if self.taking:
            self._thread(self._taker)

    def start(self, senders: int = SENDERS, seed: str = "") -> "Traffic":
        self.start_runs()
        self.start_senders(senders, seed)
        return self

    def _thread(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _sender(self, rng: random.Random) -> None:
        while not self._stop.is_set():
            frm, to = rng.sample(self.agents, 2)
            addr = f"{to.id}\\{QUEUE}"
            body = f"fault traffic {frm.id} -> {to.id} #{next(self._body_n)}"
            # queueing is local (SQLite): a failure is the client store's (a test that
            # expects one says so to settle(); finish() and drain() allow none)
            r = frm.run("send", addr, body)
            with self._lock:
                if r.rc == 0:
                    mid = canonical(r.stdout.split()[-1])
                    self.sent += 1
                    self.queued.append((frm.id, to.id, mid, time.monotonic()))
                    self.history.sent(frm.id, mid, to=addr, body=body)
                else:
                    self.send_failures.append((frm.id, r.rc, r.stderr[-2000:]))
            self._stop.wait(self.send_pause if r.rc == 0 else max(self.send_pause, 0.05))

    def _taker(self) -> None:
        """The applications: take what arrived, agent after agent, all along."""
        while not self._stop.is_set():
            self.take()
            self._stop.wait(0.5)

    def take(self) -> None:
        """The applications take what arrived so far (`qaagent recv` of every agent; the
        STATUS reports it queues become traffic too); a failed `recv` is recorded."""
        for a in self.agents:
            if self._stop.is_set():
                return
            try:
                self.history.recv(a, QUEUE)
            except AssertionError as e:
                with self._lock:
                    self.recv_failures.append((a.id, str(e)[-2000:]))


    # ----------------------------------------------------------- while it runs

    def stop_senders(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def pump(self) -> None:
        """Moves every run's JSON events into self.events (each stamped `_t`, monotonic)."""
        procs.drain_events(self.lines, self.events, stamp=time.monotonic())

    def welcomed(self, aid: str, since: float = 0.0) -> bool:
        return any(e.get("event") == "welcome" and e["_t"] >= since for e in self.events[aid])

    def received_at(self, aid: str, mid: str) -> Optional[float]:
        """When `run` of aid reported mid in a `received` event (monotonic), or None."""
        self.pump()
        for e in self.events[aid]:
            if e.get("event") == "received" and mid in e.get("ids", []):
                return e["_t"]
        return None

    def wait_exit(self, aid: str, timeout: float) -> int:
        """The exit code of aid's run, which must end within timeout."""
        p = self.procs[aid]
        try:
            rc = p.wait(timeout)
        except Exception:
            raise AssertionError(f"qaagent run {aid} still running after {timeout}s:\n"
                                 f"{procs.tail(self.stderr_path(aid), 30)}") from None
        self.pump()
        return rc

    def run_traffic(self, seconds: float, except_: Sequence[str] = ()) -> None:
        """Lets traffic flow for seconds, checking that the runs (but except_) stay up."""
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

    def check_alive(self, except_: Sequence[str] = ()) -> None:
        self.pump()
        for aid, p in self.procs.items():
            if aid in except_:
                continue
            assert p.poll() is None, (
                f"qaagent run {aid} exited {p.returncode}:\n"
                f"{procs.tail(self.tmp / f'run-{aid}.stderr', 30)}\n"
                f"events: {self.events[aid][-8:]}")

    def flowing(self, seconds: float) -> int:
        """Lets the traffic run for seconds (before a fault): the runs must still be up and
        some upload acknowledged. Returns the acknowledged messages so far."""
        time.sleep(seconds)
        self.check_alive()
        acked = len(self.ack_times_ms())
        assert acked > 0, f"no upload acknowledged in {seconds} s of traffic"
        return acked

    def progress(self, t: float) -> str:
        self.history.collect()
        r = self.history.report()
        return (f"t={t:.0f}s queued={self.sent} acked={r.acked} received={r.received} "
                f"duplicated={r.duplicated} pending={r.pending}")

    def error_events(self, name: Optional[str] = None) -> List[dict]:
        self.pump()
        return [e for evs in self.events.values() for e in evs
                if e.get("event") == "error" and (name is None or e.get("name") == name)]

    def ack_times_ms(self) -> List[int]:
        """done_ms of every acked message (sent_log result stored/duplicate) of every agent:
        when the agent took the UPLOAD_ACK (wall clock ms)."""
        out = []
        for a in self.agents:
            if not a.db.exists():
                continue
            conn = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True, timeout=10)
            try:
                out += [int(r[0]) for r in
                        conn.execute("SELECT done_ms FROM sent_log WHERE result IN (0, 1)")]
            finally:
                conn.close()
        return sorted(out)

    # ----------------------------------------------------------- the end

    def finish(self, timeout: float) -> Report:
        """The end of a fault test's traffic: the senders stopped (none may have failed to
        queue), then the history checker waits up to timeout for every acknowledged
        message to arrive; the runs must still be up. The report is the test's to assert."""
        self.stop_senders()
        assert not self.send_failures, self.send_failures[:3]
        assert not self.recv_failures, self.recv_failures[:3]
        rep = self.history.drain(timeout=timeout)
        self.check_alive()
        return rep

    def stop_runs(self) -> Dict[str, object]:
        rcs: Dict[str, object] = {}
        for aid, p in self.procs.items():
            try:
                rcs[aid] = stop_run(p)
            except Exception as e:  # noqa: BLE001 - teardown: report, keep going
                rcs[aid] = f"{e!r}"
        self.pump()
        return rcs

    def drain(self, run_timeout: float = 25.0, sync_timeout: float = 20.0) -> Report:
        """The bounded drain of a run with take=True: first with the runs up (they transmit
        on their own: pushes, -policy automatic, the STATUS reports `recv` queues) for
        run_timeout; what is still missing or pending then is counted in self.late and
        fetched by stopping the runs and syncing every agent (retried while a sync exits 1)
        for sync_timeout. The report after that is final. The runs must exit 0 (SIGTERM)."""
        self.check_alive()
        rep = self.history.drain(timeout=run_timeout, queue=QUEUE)
        self.late = rep.lost + rep.pending
        self.late_detail = rep.details()
        self.check_alive()
        rcs = self.stop_runs()
        assert all(rc == 0 for rc in rcs.values()), rcs

        def sync_all():
            for a in self.agents:
                r = a.run("sync", timeout=60)
                if r.rc != 0:
                    self.sync_failures += 1
                    assert r.rc == 1, repr(r)  # unreachable for now: tried again
        return self.history.drain(timeout=sync_timeout, queue=QUEUE, poll=sync_all)

    # ----------------------------------------------------------- following every message

    def inboxes(self) -> Dict[str, set]:
        return {a.id: set(QaAgentStore(a.db).inbox()) for a in self.agents}

    def outboxes(self) -> Dict[str, str]:
        """{id: recipient} of every message queued in a client store right now."""
        out: Dict[str, str] = {}
        for a in self.agents:
            out.update({m: recipient_of(addr) for m, addr in QaAgentStore(a.db).outbox().items()})
        return out

    def in_flight(self):
        """(acked ids not yet in their recipient's inbox, number of outbox rows)."""
        self.history.collect()
        acked = self.history.acked_ids()
        boxes = self.inboxes()
        missing = sorted(m for m, to in acked.items() if m not in boxes.get(to, ()))
        return missing, len(self.outboxes())

    def acked_count(self) -> int:
        self.history.collect()
        return len(self.history.acked_ids())

    def wait_converged(self, timeout: float, what: str) -> float:
        """Waits, without any help, until every message queued or acked so far is acked and
        in its recipient's client store: the runs alone moved them (traffic goes on
        meanwhile; what is queued later is not waited for). Returns the seconds."""
        t0 = time.monotonic()
        self.history.collect()
        target = dict(self.history.acked_ids())
        target.update(self.outboxes())
        deadline = t0 + timeout
        while True:
            self.check_alive()
            self.history.collect()
            acked = self.history.acked_ids()
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

    def settle(self, store, label: str,
               expect_send: Optional[Callable[[str, int, str], bool]] = None,
               expect_recv: Optional[Callable[[str, str], bool]] = None) -> Report:
        """The end of a store fault test (take=True): stops the senders and the applications,
        waits for every outbox to empty through the runs, stops the runs (each must exit 0),
        syncs every agent until a round finds nothing new (what no push announced is fetched
        too), drains into the applications and checks: nothing lost, nothing duplicated,
        nothing pending in the client stores or the server store, and no `send` or `recv`
        failed but those the test expects: expect_send(agent, rc, stderr) /
        expect_recv(agent, error) true. Prints the figures and returns the report."""
        self.stop_senders()
        poll_until(lambda: len(self.outboxes()) == 0, 10, "every outbox empty")
        rcs = {}
        for aid, p in self.procs.items():
            if p.poll() is None:  # one that ended was waited for (wait_exit)
                rcs[aid] = stop_run(p)
        self.pump()
        assert set(rcs.values()) <= {0}, {a: rc for a, rc in rcs.items() if rc != 0}
        # a message uploaded by a later agent's sync would otherwise wait for a recipient
        # synced earlier in the same round
        late = 0
        for _ in range(3):
            got = sum(a.sync().json()["received"] for a in self.agents)
            late += got
            if got == 0 and not self.outboxes():
                break
        rep = self.history.drain(timeout=20, queue=QUEUE)
        pending = self.server_pending(store)
        bad_sends = [x for x in self.send_failures if not (expect_send and expect_send(*x))]
        bad_recvs = [x for x in self.recv_failures if not (expect_recv and expect_recv(*x))]
        print(f"\n[{label}] {rep.line()} (messages queued {len(self.queued)}, send failures "
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
        queued = {mid for _, _, mid, _ in self.queued}
        acked = set(self.history.acked_ids())
        assert queued <= acked, f"{len(queued - acked)} queued messages never acked"
        return rep

    def explain(self, store, mids: Sequence[str]) -> str:
        """Where each of mids is: the server's row, the senders' and recipients' stores,
        the runs' events naming it (for a failure report)."""
        out = []
        t = store.messages_table()
        for mid in mids:
            rows = store.query(f"select sender, recipient, queue, status, status_ms, "
                               f"delivery_count, held_by, seq from {t} where id = %s", (mid,))
            out.append(f"-- {mid}: server {rows}")
            for a in self.agents:
                st = QaAgentStore(a.db)
                where = [name for name, d in (("outbox", st.outbox()), ("sent_log", st.sent_log()),
                                              ("inbox", st.inbox())) if mid in d]
                evs = [e for e in self.events[a.id] if mid in e.get("ids", [])]
                if where or evs:
                    out.append(f"   {a.id}: in {where}, events {evs}")
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

    def run_received_dupes(self) -> int:
        """Ids that `run` reported as new to the inbox more than once for one agent (the
        inbox's dedup failing): must be 0."""
        n = 0
        for evs in self.events.values():
            c = Counter(i for e in evs if e.get("event") == "received" for i in e.get("ids", []))
            n += sum(1 for v in c.values() if v > 1)
        return n

    def closed_reasons(self) -> Dict[str, int]:
        """How the agents' sessions ended (`closed` events): the reason without what was
        awaited and without the ERROR's text, e.g. {"ERROR draining": 12,
        "connection closed by the server": 9}."""
        c: Counter = Counter()
        for evs in self.events.values():
            for e in evs:
                if e.get("event") == "closed":
                    r = re.sub(r"^waiting \d+ ms for \w+ from \S+: ", "", str(e.get("reason", "")))
                    c[re.split(r"[:(]", r, 1)[0].strip()] += 1
        return dict(c.most_common())

    def sessions(self) -> int:
        return sum(1 for evs in self.events.values() for e in evs if e.get("event") == "welcome")

    def server_pending(self, store) -> int:
        return int(store.scalar(f"select count(*) from {store.messages_table()} "
                                "where recipient = any(%s) and status = 1 and queue = %s",
                                [[a.id for a in self.agents], QUEUE]))
