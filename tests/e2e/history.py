"""The history checker of the fault tests (issue 8): a record of what was acknowledged and
what the application received, checked after faults.

What counts:
- **acked**: a message whose sender got UPLOAD_ACK with result stored (0) or duplicate (1).
  For a qaagent that is its client store's `sent_log` (agent/qa_store.c): a row is written
  in the same SQLite transaction that takes the message out of the outbox, only once the
  UPLOAD_ACK arrived, so `sent_log` holds exactly the acks the agent relies on (an ack that
  arrived while the agent died is not there: the message is still in the outbox and is
  uploaded again). Other final results (invalid, expired, too_large, conflict) are
  `refused`, not acked.
- **received**: a message handed to the application. For a qaagent the application is
  whoever calls `qaagent recv`: `History.recv()` runs it and records every id it printed,
  once per printing (a second printing of an id is an application-level duplicate);
  messages of the queue `system` (the pool's status messages) are not traffic: skipped.
  Messages only in the inbox and not yet taken are not received yet.
- **pending**: queued but not yet finally acknowledged: the outbox rows of the qaagent
  stores, and the ids a Python client queued (`PyRecorder.upload`) without a final result.
- **lost**: acked but never received. Only meaningful after a drain: the agents keep
  syncing and the test keeps calling `recv` for a bounded time (`History.drain`).
- **duplicated**: ids handed to the application more than once.
- **unaccounted** (in `details()`): ids a qaagent `send` printed (recorded with
  `History.sent`) that are in neither its outbox nor its sent_log: a client store that
  dropped a queued message.

API (one History per test; every agent that sends or receives is registered):

    h = History()
    h.add(agent)                       # a harness.Agent (qaagent); its store is read
    h.sent(agent.id, mid)              # optional: an id `qaagent send` printed (unaccounted)
    h.recv(agent, queue=None)          # `qaagent recv` now; records the ids handed out
    h.collect()                        # re-read sent_log/outbox of every qaagent store
    rep = h.drain(timeout=30)          # recv from all, collect, until nothing is in flight
    print(rep.line())                  # history: acked=N received=N lost=0 duplicated=0 pending=N
    rep.assert_ok()                    # lost == 0, duplicated == 0, unaccounted == 0,
                                       # every recipient known

    rec = h.py("agentX")               # Python client (qasync.Client) recorder
    rec.upload(client, msgs)           # UPLOAD; records queued ids and the ack results
    rec.deliver(deliver_frame)         # the DELIVER's messages handed to the application
    h.ack(agent_id, mid, result) / h.receive(agent_id, mid) / h.queued(agent_id, mid, to)
                                       # low level, for any other source

`h.drain(poll=..., timeout=...)` calls `h.recv()` on every registered qaagent (and an
optional extra `poll()` of the caller's, e.g. a Python client fetching) every `interval`
seconds until no acked message is missing and nothing is pending, or until `timeout`;
then the report is final (what is still missing is lost). It never raises on loss: the
caller asserts (or, in a negative control, asserts loss).

Ids are canonical lowercase UUID text throughout. Recipients are read from the address
(`AGENT\\QUEUE`); a message acked for an agent nobody registered is `untracked` (and
`assert_ok` fails on it: a loss could hide there).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

R_STORED, R_DUPLICATE, R_QUOTA = 0, 1, 5
ACKED_RESULTS = (R_STORED, R_DUPLICATE)


def canonical(mid) -> str:
    """Canonical UUID text of an id given as UUID, text or 16 bytes."""
    if isinstance(mid, uuid.UUID):
        return str(mid)
    if isinstance(mid, (bytes, bytearray, memoryview)):
        return str(uuid.UUID(bytes=bytes(mid)))
    return str(uuid.UUID(str(mid)))


def recipient_of(address: str) -> str:
    return address.split("\\", 1)[0]


@dataclasses.dataclass
class Report:
    acked: int
    received: int
    lost: int
    duplicated: int
    pending: int
    refused: int = 0
    untracked: int = 0
    unaccounted: int = 0
    lost_ids: List[str] = dataclasses.field(default_factory=list)
    duplicated_ids: List[str] = dataclasses.field(default_factory=list)
    untracked_ids: List[str] = dataclasses.field(default_factory=list)
    unaccounted_ids: List[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        return (f"history: acked={self.acked} received={self.received} lost={self.lost} "
                f"duplicated={self.duplicated} pending={self.pending}")

    def details(self) -> str:
        return (f"{self.line()} refused={self.refused} untracked={self.untracked} "
                f"unaccounted={self.unaccounted}; lost e.g. {self.lost_ids[:5]}, duplicated "
                f"e.g. {self.duplicated_ids[:5]}, untracked e.g. {self.untracked_ids[:5]}, "
                f"unaccounted e.g. {self.unaccounted_ids[:5]}")

    def assert_ok(self) -> None:
        assert (self.lost == 0 and self.duplicated == 0 and self.untracked == 0
                and self.unaccounted == 0), self.details()


class QaAgentStore:
    """Read-only view of a qaagent client store (SQLite, WAL: reading beside a running
    qaagent is safe; busy waits up to 10 s)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _rows(self, sql: str) -> list:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def sent_log(self) -> Dict[str, tuple]:
        """{id: (address, result)} of every message that left the outbox."""
        return {canonical(i): (a, int(r))
                for i, a, r in self._rows("SELECT id, address, result FROM sent_log")}

    def outbox(self) -> Dict[str, str]:
        """{id: address} of the messages still queued."""
        return {canonical(i): a for i, a in self._rows("SELECT id, address FROM outbox")}

    def inbox(self) -> Dict[str, Optional[int]]:
        """{id: taken_ms or None} of every message in the inbox."""
        return {canonical(i): t for i, t in self._rows("SELECT id, taken_ms FROM inbox")}


class PyRecorder:
    """Records what a Python client (qasync.Client) of one agent id did."""

    def __init__(self, history: "History", agent_id: str) -> None:
        self.h = history
        self.agent_id = agent_id

    def upload(self, client, msgs: Sequence, batch: Optional[int] = None):
        """UPLOAD msgs on client and record: queued first, then every final result of the
        UPLOAD_ACK. An exception (connection lost) leaves them pending; the caller may
        upload them again (the server answers duplicate)."""
        for m in msgs:
            self.h.queued(self.agent_id, m.id, m.to)
        ack = client.upload(list(msgs), batch=batch)
        for mid, res in ack.results:
            self.h.ack(self.agent_id, mid, res)
        return ack

    def deliver(self, deliver) -> List:
        """Records the messages of a DELIVER frame as handed to the application (every
        message, redeliveries included: dedup is the application's job and a redelivery
        shows here as a duplicate). Returns them."""
        for m in deliver.msgs:
            self.h.receive(self.agent_id, m.id)
        return list(deliver.msgs)


class History:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.agents: Dict[str, object] = {}  # id -> harness.Agent (qaagent) or None (Python)
        self._acks: Dict[str, Dict[str, tuple]] = {}  # python senders: id -> (to, result)
        self._queued: Dict[str, Dict[str, str]] = {}  # python senders: id -> address
        self._snap_sent: Dict[str, Dict[str, tuple]] = {}  # qaagent: sent_log snapshot
        self._snap_out: Dict[str, Dict[str, str]] = {}  # qaagent: outbox snapshot
        self._handed: Counter = Counter()  # id -> times handed to the application
        self._handed_to: Dict[str, str] = {}  # id -> the agent it was handed to
        self._sent: Dict[str, Dict[str, float]] = {}  # qaagent: id -> when recorded
        self._collected_at: Dict[str, float] = {}  # qaagent: start of its last collect

    # --------------------------------------------------------------- registration

    def add(self, agent) -> "History":
        """Registers a harness.Agent (qaagent): its client store is the source of acks."""
        with self._lock:
            self.agents[agent.id] = agent
        return self

    def py(self, agent_id: str) -> PyRecorder:
        with self._lock:
            self.agents.setdefault(agent_id, None)
            self._acks.setdefault(agent_id, {})
            self._queued.setdefault(agent_id, {})
        return PyRecorder(self, agent_id)

    # --------------------------------------------------------------- low-level records

    def queued(self, agent_id: str, mid, to: str) -> None:
        with self._lock:
            self._queued.setdefault(agent_id, {})[canonical(mid)] = to

    def sent(self, agent_id: str, mid) -> None:
        """An id a qaagent `send` of agent_id printed (it is in the outbox now)."""
        with self._lock:
            self._sent.setdefault(agent_id, {})[canonical(mid)] = time.monotonic()

    def ack(self, agent_id: str, mid, result: int) -> None:
        """A final UPLOAD_ACK result (quota is not final: ignored)."""
        if result == R_QUOTA:
            return
        mid = canonical(mid)
        with self._lock:
            to = self._queued.get(agent_id, {}).get(mid, "")
            self._acks.setdefault(agent_id, {})[mid] = (to, int(result))

    def receive(self, agent_id: str, mid) -> None:
        mid = canonical(mid)
        with self._lock:
            self._handed[mid] += 1
            self._handed_to[mid] = agent_id

    # --------------------------------------------------------------- qaagent sources

    def recv(self, agent, queue: Optional[str] = None) -> List[dict]:
        """`qaagent recv [QUEUE]` of agent (no transmission); every message it printed is
        recorded as handed to the application. Returns the parsed lines."""
        r = agent.run(*(["recv"] + ([queue] if queue else [])))
        assert r.rc == 0, repr(r)
        msgs = r.json_lines()
        for m in msgs:
            if m.get("queue") != "system":  # the pool's own status messages: not traffic
                self.receive(agent.id, m["id"])
        return msgs

    def collect(self) -> None:
        """Re-reads sent_log and outbox of every registered qaagent's store."""
        for aid, a in list(self.agents.items()):
            if a is None:
                continue
            st = QaAgentStore(a.db)
            t0 = time.monotonic()
            out = st.outbox()  # outbox first: a message moving to sent_log meanwhile is seen
            sent = st.sent_log()
            with self._lock:
                self._snap_sent[aid], self._snap_out[aid] = sent, out
                self._collected_at[aid] = t0

    # --------------------------------------------------------------- the check

    def acked_ids(self) -> Dict[str, str]:
        """{id: recipient} of every acked message (stored or duplicate) seen so far."""
        out: Dict[str, str] = {}
        with self._lock:
            for src in list(self._snap_sent.values()) + list(self._acks.values()):
                for mid, (addr, res) in src.items():
                    if res in ACKED_RESULTS:
                        out[mid] = recipient_of(addr)
        return out

    def report(self) -> Report:
        acked = self.acked_ids()
        with self._lock:
            refused = sum(1 for src in list(self._snap_sent.values()) + list(self._acks.values())
                          for _, res in src.values() if res not in ACKED_RESULTS)
            pending = sum(len(o) for o in self._snap_out.values())
            for aid, q in self._queued.items():
                pending += sum(1 for mid in q if mid not in self._acks.get(aid, {}))
            handed = Counter(self._handed)
            known = set(self.agents)
            unaccounted = sorted(
                mid for aid, ids in self._sent.items() for mid, t in ids.items()
                if t < self._collected_at.get(aid, -1.0)
                and mid not in self._snap_out.get(aid, {})
                and mid not in self._snap_sent.get(aid, {}))
        untracked = sorted(m for m, to in acked.items() if to and to not in known)
        lost = sorted(m for m, to in acked.items() if m not in handed and m not in untracked)
        dups = sorted(m for m, n in handed.items() if n > 1)
        return Report(acked=len(acked), received=len(handed), lost=len(lost),
                      duplicated=len(dups), pending=pending, refused=refused,
                      untracked=len(untracked), unaccounted=len(unaccounted), lost_ids=lost,
                      duplicated_ids=dups, untracked_ids=untracked,
                      unaccounted_ids=unaccounted)

    def drain(self, timeout: float = 30.0, interval: float = 0.5, queue: Optional[str] = None,
              poll: Optional[Callable[[], None]] = None, need_pending_zero: bool = True) -> Report:
        """Bounded drain: every interval, `recv` on every qaagent, the caller's poll(), and
        collect(), until nothing acked is missing (and, with need_pending_zero, no outbox
        holds anything); at timeout the report is final. Returns it (never raises on loss).
        The agents must keep syncing meanwhile (their `run`, or the caller's poll)."""
        deadline = time.monotonic() + timeout
        while True:
            self.collect()  # acks first: whatever was acked by now had its chance to arrive
            for a in [a for a in self.agents.values() if a is not None]:
                self.recv(a, queue)
            if poll is not None:
                poll()
            rep = self.report()
            if rep.lost == 0 and (rep.pending == 0 or not need_pending_zero):
                return rep
            if time.monotonic() >= deadline:
                return rep
            time.sleep(interval)
