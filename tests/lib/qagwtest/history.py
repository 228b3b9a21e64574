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
- **misdelivered**: ids handed to an agent other than their intended recipient. The
  intended recipient is the one recorded at send time (`sent(..., to=)`, `queued`,
  `PyRecorder.upload`), else the address of the sender's sent_log/outbox row. A message
  handed only to the wrong agent is lost as well (its recipient never got it).
- **altered**: ids handed with a body other than the one sent (compared by SHA-256). The
  body sent is recorded at send time (`sent(..., body=)`, `queued(..., body=)`,
  `PyRecorder.upload`), else read from the sender's outbox row while it is queued
  (`collect`); the body received is what `qaagent recv` printed (`body`, or
  `body_base64`) or the DELIVER's. An id whose sent body is unknown is not compared
  (counted as `body_unknown` in `details()`).
- **refused**: final results other than stored/duplicate, by name (invalid, expired,
  too_large, conflict). `assert_ok` fails on any the caller did not allow
  (`assert_ok(allow_refused=("expired",))`): a fault test that sees `conflict` or
  `invalid` where it sent well-formed, fresh messages has found a bug.
- **unaccounted** (in `details()`): ids a qaagent `send` printed (recorded with
  `History.sent`) that are in neither its outbox nor its sent_log: a client store that
  dropped a queued message.

API (one History per test; every agent that sends or receives is registered):

    h = History()
    h.add(agent)                       # a harness.Agent (qaagent); its store is read
    h.sent(agent.id, mid, to=ADDRESS, body=BODY)
                                       # an id `qaagent send` printed (unaccounted), with
                                       # the address and body it was given (misdelivered,
                                       # altered); to/body optional
    h.recv(agent, queue=None)          # `qaagent recv` now; records the ids handed out
    h.collect()                        # re-read sent_log/outbox of every qaagent store
    rep = h.drain(timeout=30)          # recv from all, collect, until nothing is in flight
    print(rep.line())                  # history: acked=N received=N lost=0 duplicated=0
                                       #   pending=N misdelivered=0 altered=0
    rep.assert_ok()                    # lost, duplicated, misdelivered, altered, unaccounted
                                       # all 0, every recipient known, no refused result
                                       # but those allowed (allow_refused=...)

    rec = h.py("agentX")               # Python client (qasync.Client) recorder
    rec.upload(client, msgs)           # UPLOAD; records queued ids and the ack results
    rec.deliver(deliver_frame)         # the DELIVER's messages handed to the application
    h.ack(agent_id, mid, result) / h.receive(agent_id, mid, body=None)
    h.queued(agent_id, mid, to, body=None)
                                       # low level, for any other source (bodies as bytes
                                       # or str; None: not known)

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

import base64
import dataclasses
import hashlib
import sqlite3
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

R_STORED, R_DUPLICATE, R_QUOTA = 0, 1, 5
ACKED_RESULTS = (R_STORED, R_DUPLICATE)
# UPLOAD_ACK results by code (docs/protocol.md; qasync.R_*, agent/qa_sync.c)
RESULT_NAMES = {0: "stored", 1: "duplicate", 2: "invalid", 3: "expired", 4: "too_large",
                5: "quota", 6: "conflict"}


def result_name(result: int) -> str:
    return RESULT_NAMES.get(int(result), f"result{int(result)}")


def digest(body) -> Optional[str]:
    """SHA-256 (hex) of a body given as bytes or str (UTF-8); None stays None."""
    if body is None:
        return None
    if isinstance(body, str):
        body = body.encode()
    return hashlib.sha256(bytes(body)).hexdigest()


def canonical(mid) -> str:
    """Canonical UUID text of an id given as UUID, text or 16 bytes."""
    if isinstance(mid, uuid.UUID):
        return str(mid)
    if isinstance(mid, (bytes, bytearray, memoryview)):
        return str(uuid.UUID(bytes=bytes(mid)))
    return str(uuid.UUID(str(mid)))


def recipient_of(address: str) -> str:
    return address.split("\\", 1)[0]


def body_of(line: dict) -> Optional[bytes]:
    """The body of a message `qaagent recv` printed: `body` (UTF-8 text) or `body_base64`
    (any other bytes); None when the line has neither."""
    if "body" in line:
        return str(line["body"]).encode()
    if "body_base64" in line:
        return base64.b64decode(line["body_base64"])
    return None


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
    misdelivered: int = 0
    altered: int = 0
    body_unknown: int = 0
    lost_ids: List[str] = dataclasses.field(default_factory=list)
    duplicated_ids: List[str] = dataclasses.field(default_factory=list)
    untracked_ids: List[str] = dataclasses.field(default_factory=list)
    unaccounted_ids: List[str] = dataclasses.field(default_factory=list)
    # "ID: for R, handed to X" / "ID: handed to X with another body (sha256 A.. sent, B..)"
    misdelivered_ids: List[str] = dataclasses.field(default_factory=list)
    altered_ids: List[str] = dataclasses.field(default_factory=list)
    refused_results: Dict[str, int] = dataclasses.field(default_factory=dict)  # name -> n
    refused_ids: Dict[str, str] = dataclasses.field(default_factory=dict)  # id -> name

    def line(self) -> str:
        return (f"history: acked={self.acked} received={self.received} lost={self.lost} "
                f"duplicated={self.duplicated} pending={self.pending} "
                f"misdelivered={self.misdelivered} altered={self.altered}")

    def details(self) -> str:
        return (f"{self.line()} refused={self.refused} {self.refused_results} "
                f"untracked={self.untracked} unaccounted={self.unaccounted} "
                f"body_unknown={self.body_unknown}; lost e.g. {self.lost_ids[:5]}, duplicated "
                f"e.g. {self.duplicated_ids[:5]}, misdelivered e.g. {self.misdelivered_ids[:5]}, "
                f"altered e.g. {self.altered_ids[:5]}, refused e.g. "
                f"{list(self.refused_ids.items())[:5]}, untracked e.g. {self.untracked_ids[:5]}, "
                f"unaccounted e.g. {self.unaccounted_ids[:5]}")

    def unexpected_refused(self, allow_refused: Sequence = ()) -> Dict[str, int]:
        """{result name: count} of the refused results not in allow_refused (names or
        codes)."""
        allowed = {result_name(a) if isinstance(a, int) else str(a) for a in allow_refused}
        return {k: v for k, v in self.refused_results.items() if k not in allowed}

    def assert_ok(self, allow_refused: Sequence = ()) -> None:
        """Nothing lost, duplicated, delivered to the wrong agent or altered; nothing
        untracked or unaccounted; no refused result but those in allow_refused (result
        names or codes, e.g. ("expired",))."""
        assert (self.lost == 0 and self.duplicated == 0 and self.untracked == 0
                and self.unaccounted == 0 and self.misdelivered == 0 and self.altered == 0), \
            self.details()
        bad = self.unexpected_refused(allow_refused)
        assert not bad, f"refused results the test did not expect: {bad}; {self.details()}"


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

    def outbox_bodies(self) -> Dict[str, tuple]:
        """{id: (address, body bytes)} of the messages still queued."""
        return {canonical(i): (a, bytes(b))
                for i, a, b in self._rows("SELECT id, address, body FROM outbox")}

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
            self.h.queued(self.agent_id, m.id, m.to, body=m.body)
        ack = client.upload(list(msgs), batch=batch)
        for mid, res in ack.results:
            self.h.ack(self.agent_id, mid, res)
        return ack

    def deliver(self, deliver) -> List:
        """Records the messages of a DELIVER frame as handed to the application (every
        message, redeliveries included: dedup is the application's job and a redelivery
        shows here as a duplicate). Returns them."""
        for m in deliver.msgs:
            self.h.receive(self.agent_id, m.id, body=m.body)
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
        # id -> [(agent it was handed to, sha256 of the body handed or None)], per handing
        self._handed_to: Dict[str, List[tuple]] = {}
        # id -> (intended recipient or "", sha256 of the body sent or None), first record
        self._intent: Dict[str, tuple] = {}
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

    def _intend(self, mid: str, to: Optional[str], body) -> None:
        """Records (lock held) what was sent as mid: recipient (from the address) and body
        digest; what is already known is kept (the first record is the send)."""
        rcpt, dig = self._intent.get(mid, ("", None))
        if not rcpt and to:
            rcpt = recipient_of(to)
        if dig is None:
            dig = digest(body)
        self._intent[mid] = (rcpt, dig)

    def queued(self, agent_id: str, mid, to: str, body=None) -> None:
        mid = canonical(mid)
        with self._lock:
            self._queued.setdefault(agent_id, {})[mid] = to
            self._intend(mid, to, body)

    def sent(self, agent_id: str, mid, to: Optional[str] = None, body=None) -> None:
        """An id a qaagent `send` of agent_id printed (it is in the outbox now); to and
        body: the ADDRESS and BODY that `send` was given."""
        mid = canonical(mid)
        with self._lock:
            self._sent.setdefault(agent_id, {})[mid] = time.monotonic()
            self._intend(mid, to, body)

    def ack(self, agent_id: str, mid, result: int) -> None:
        """A final UPLOAD_ACK result (quota is not final: ignored)."""
        if result == R_QUOTA:
            return
        mid = canonical(mid)
        with self._lock:
            to = self._queued.get(agent_id, {}).get(mid, "")
            self._acks.setdefault(agent_id, {})[mid] = (to, int(result))

    def receive(self, agent_id: str, mid, body=None) -> None:
        """mid handed to the application of agent_id, with body (bytes or str; None: not
        known, not compared)."""
        mid = canonical(mid)
        with self._lock:
            self._handed[mid] += 1
            self._handed_to.setdefault(mid, []).append((agent_id, digest(body)))

    # --------------------------------------------------------------- qaagent sources

    def recv(self, agent, queue: Optional[str] = None) -> List[dict]:
        """`qaagent recv [QUEUE]` of agent (no transmission); every message it printed is
        recorded as handed to the application. Returns the parsed lines."""
        r = agent.run(*(["recv"] + ([queue] if queue else [])))
        assert r.rc == 0, repr(r)
        msgs = r.json_lines()
        for m in msgs:
            if m.get("queue") != "system":  # the pool's own status messages: not traffic
                self.receive(agent.id, m["id"], body=body_of(m))
        return msgs

    def collect(self) -> None:
        """Re-reads sent_log and outbox of every registered qaagent's store."""
        for aid, a in list(self.agents.items()):
            if a is None:
                continue
            st = QaAgentStore(a.db)
            t0 = time.monotonic()
            # outbox first: a message moving to sent_log meanwhile is seen
            bodies = st.outbox_bodies()
            out = {mid: addr for mid, (addr, _) in bodies.items()}
            sent = st.sent_log()
            with self._lock:
                self._snap_sent[aid], self._snap_out[aid] = sent, out
                self._collected_at[aid] = t0
                for mid, (addr, body) in bodies.items():  # what was sent, if not recorded
                    self._intend(mid, addr, body)

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
            refused_ids = {mid: result_name(res)
                           for src in list(self._snap_sent.values()) + list(self._acks.values())
                           for mid, (_, res) in src.items() if res not in ACKED_RESULTS}
            intent = dict(self._intent)
            handings = {mid: list(v) for mid, v in self._handed_to.items()}
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

        def recipient(mid: str, fallback: str = "") -> str:
            return intent.get(mid, ("", None))[0] or fallback

        untracked = sorted(m for m, to in acked.items()
                           if recipient(m, to) and recipient(m, to) not in known)
        # lost: acked and never handed to its recipient (to anyone, if it is not known)
        lost = sorted(m for m, to in acked.items() if m not in untracked and not any(
            not recipient(m, to) or got == recipient(m, to) for got, _ in handings.get(m, ())))
        dups = sorted(m for m, n in handed.items() if n > 1)
        misdelivered, altered = [], []
        for mid in sorted(handings):
            rcpt = recipient(mid, acked.get(mid, ""))
            wrong = sorted({got for got, _ in handings[mid] if rcpt and got != rcpt})
            if wrong:
                misdelivered.append(f"{mid}: for {rcpt}, handed to {', '.join(wrong)}")
            sent_dig = intent.get(mid, ("", None))[1]
            other = sorted({(got, d) for got, d in handings[mid]
                            if sent_dig is not None and d is not None and d != sent_dig})
            if other:
                altered.append(f"{mid}: handed to {', '.join(g for g, _ in other)} with another "
                               f"body (sha256 {sent_dig[:12]}.. sent, "
                               f"{', '.join(d[:12] + '..' for _, d in other)} received)")
        body_unknown = sum(1 for m in acked if intent.get(m, ("", None))[1] is None)
        return Report(acked=len(acked), received=len(handed), lost=len(lost),
                      duplicated=len(dups), pending=pending, refused=len(refused_ids),
                      untracked=len(untracked), unaccounted=len(unaccounted),
                      misdelivered=len(misdelivered), altered=len(altered),
                      body_unknown=body_unknown, lost_ids=lost,
                      duplicated_ids=dups, untracked_ids=untracked,
                      unaccounted_ids=unaccounted, misdelivered_ids=misdelivered,
                      altered_ids=altered,
                      refused_results=dict(Counter(refused_ids.values())),
                      refused_ids=refused_ids)

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
