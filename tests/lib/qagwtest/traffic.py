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

Not here, on purpose: test_faults_store.py's Fleet (an agent fleet whose every message is
followed to its inbox while the store is made to fail, with per-message explanations) and
test_faults_group.py's Uploaders (protocol clients that upload as fast as acks return, to
fill group commits): they generate other loads and record other facts.
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
from typing import Dict, List, Optional, Sequence

from . import procs
from .history import History, Report

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
                 verbose: Optional[bool] = None) -> None:
        self.tmp = Path(tmp_path)
        self.history = History()
        self.agents = []
        ids = list(ids) if ids else [f"{prefix}{i:02d}-{uid}" for i in range(n)]
        for i, aid in enumerate(ids):
            k = i % len(streams)
            order = list(streams[k:]) + list(streams[:k])
            ex = ["-fd", fd] + list(extra)
            if tokens:
                ex += ["-token", tokens[aid]]
            a = agent_factory(aid, *order, extra=ex)
            self.agents.append(a)
            self.history.add(a)
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
        self.send_failures: List[str] = []
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        # bodies differ, so that one message's body handed with another's id shows
        self._body_n = itertools.count(1)

    # ----------------------------------------------------------- starting

    def start_runs(self) -> None:
        for a in self.agents:
            p = a.popen("run", policy="automatic", verbose=self.verbose,
                        stderr_path=self.tmp / f"run-{a.id}.stderr")
            self.procs[a.id] = p
            self.lines[a.id] = json_lines(p)

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
            try:
                mid = frm.send(addr, body)
            except AssertionError as e:  # queueing is local (SQLite): it must not fail
                with self._lock:
                    self.send_failures.append(str(e)[-2000:])
                return
            with self._lock:
                self.sent += 1
                self.history.sent(frm.id, mid, to=addr, body=body)
            if self.send_pause:
                time.sleep(self.send_pause)

    def _taker(self) -> None:
        """The applications: take what arrived, agent after agent, all along."""
        while not self._stop.is_set():
            try:
                self.take()
            except AssertionError as e:
                with self._lock:
                    self.send_failures.append(f"recv: {str(e)[-2000:]}")
                return
            self._stop.wait(0.5)

    def take(self) -> None:
        """The applications take what arrived so far (`qaagent recv` of every agent; the
        STATUS reports it queues become traffic too)."""
        for a in self.agents:
            self.history.recv(a, QUEUE)

    # ----------------------------------------------------------- while it runs

    def stop_senders(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def pump(self) -> None:
        procs.drain_events(self.lines, self.events)

    def check_alive(self) -> None:
        self.pump()
        for aid, p in self.procs.items():
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
