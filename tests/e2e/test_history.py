"""The history checker (history.py) checked against a test double (issue 17): no gateway,
no PostgreSQL, no Redis, no qaagent binary.

DoubleGateway plays the pool in-process: an UPLOAD is encoded to its frame, decoded
(qasync's codec, as the gateway would), stored for the recipient named in its address and
acknowledged `stored`; a FETCH returns the recipient's messages as a DELIVER frame, encoded
and decoded again. It can misbehave on purpose:
- misroute: {id: agent} hands that message to another agent instead of its recipient;
- alter: {id: function(body) -> body} changes that message's body in flight (in the
  DELIVER, after it was stored as uploaded);
- results: {id: result} answers that UPLOAD_ACK result instead of stored.

Two kinds of client ride on it, the two the checker knows:
- a Python client (PyRecorder: upload() and deliver() record what the application did);
- QaAgentDouble, a stand-in for harness.Agent: a SQLite client store with the columns the
  checker reads (outbox with bodies, sent_log), `send`, `sync` through the double, and
  `run("recv", QUEUE)` printing JSON lines as `qaagent recv` does (`body`, or `body_base64`
  for bytes that are not UTF-8), read by History.recv.

The negative controls: a delivery to the wrong agent and a body altered in flight are each
reported (misdelivered, altered) and fail assert_ok; refused results (conflict, invalid)
fail it unless the test allowed them. The positive control: the same traffic, the double
behaving, passes.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from qagwtest import qasync as q
from qagwtest.harness import AgentResult
from qagwtest.history import History, canonical

QUEUE = "q"


# ------------------------------------------------------------------ the test double


def _wire(obj):
    """obj encoded to its frame and decoded back (every field through the codec)."""
    ftype, payload, rest = q.split_frame(q.encode(obj))
    assert rest == b""
    return q.decode(ftype, payload)


class DoubleGateway:
    def __init__(self, misroute: Optional[Dict[str, str]] = None,
                 alter: Optional[Dict[str, Callable[[bytes], bytes]]] = None,
                 results: Optional[Dict[str, int]] = None) -> None:
        self.misroute = {canonical(k): v for k, v in (misroute or {}).items()}
        self.alter = {canonical(k): v for k, v in (alter or {}).items()}
        self.results = {canonical(k): v for k, v in (results or {}).items()}
        self.boxes: Dict[str, List[q.MsgIn]] = {}
        self.seq = 0
        self.batch = 0

    def client(self, agent_id: str) -> "DoubleClient":
        return DoubleClient(self, agent_id)

    def upload(self, sender: str, msgs) -> q.UploadAck:
        self.batch += 1
        up = _wire(q.Upload(batch=self.batch, msgs=list(msgs)))
        results = []
        for m in up.msgs:
            mid = canonical(m.id)
            res = self.results.get(mid, q.R_STORED)
            results.append((m.id, res))
            if res != q.R_STORED:
                continue
            rcpt, queue = m.to.split("\\", 1)
            rcpt = self.misroute.get(mid, rcpt)  # the misbehaviour: another agent's box
            self.seq += 1
            self.boxes.setdefault(rcpt, []).append(q.MsgIn(
                seq=self.seq, id=m.id, sender=sender, queue=queue, priority=m.priority,
                created_ms=q.now_ms(), expires_ms=m.expires_ms, props=list(m.props),
                body=m.body))
        return _wire(q.UploadAck(batch=up.batch, results=results))

    def fetch(self, agent_id: str) -> q.Deliver:
        msgs = []
        for m in self.boxes.pop(agent_id, []):
            change = self.alter.get(canonical(m.id))
            if change is not None:  # the misbehaviour: the body altered in flight
                m = q.MsgIn(**{**m.__dict__, "body": change(m.body)})
            msgs.append(m)
        return _wire(q.Deliver(msgs=msgs, more=0))


class DoubleClient:
    """The part of qasync.Client that PyRecorder and the tests use."""

    def __init__(self, gw: DoubleGateway, agent_id: str) -> None:
        self.gw, self.agent_id = gw, agent_id

    def upload(self, msgs, batch: Optional[int] = None) -> q.UploadAck:
        return self.gw.upload(self.agent_id, msgs)

    def fetch(self, max_count: int = 256, max_bytes: int = 1 << 20) -> q.Deliver:
        return self.gw.fetch(self.agent_id)


class QaAgentDouble:
    """What History reads of a harness.Agent: .id, .db (outbox, sent_log) and
    run("recv", QUEUE) -> AgentResult with `qaagent recv`'s JSON lines."""

    def __init__(self, agent_id: str, db: Path, gw: DoubleGateway) -> None:
        self.id, self.db, self.gw = agent_id, Path(db), gw
        self.inbox: List[q.MsgIn] = []
        with sqlite3.connect(self.db) as c:
            c.executescript(
                "CREATE TABLE outbox(qid INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL "
                "UNIQUE, address TEXT NOT NULL, body BLOB NOT NULL);"
                "CREATE TABLE sent_log(id BLOB PRIMARY KEY, address TEXT NOT NULL, "
                "result INTEGER NOT NULL, done_ms INTEGER NOT NULL);")

    def send(self, address: str, body) -> str:
        mid = uuid.uuid4()
        body = body.encode() if isinstance(body, str) else bytes(body)
        with sqlite3.connect(self.db) as c:
            c.execute("INSERT INTO outbox(id, address, body) VALUES (?, ?, ?)",
                      (mid.bytes, address, body))
        return str(mid)

    def sync(self) -> None:
        with sqlite3.connect(self.db) as c:
            rows = c.execute("SELECT id, address, body FROM outbox ORDER BY qid").fetchall()
            if rows:
                ack = self.gw.upload(self.id, [q.MsgOut(id=uuid.UUID(bytes=i), to=a, body=b)
                                               for i, a, b in rows])
                addr = {uuid.UUID(bytes=i): a for i, a, _ in rows}
                for mid, res in ack.results:  # one transaction, as qa_store.c does
                    c.execute("DELETE FROM outbox WHERE id = ?", (mid.bytes,))
                    c.execute("INSERT INTO sent_log VALUES (?, ?, ?, ?)",
                              (mid.bytes, addr[mid], res, int(time.time() * 1000)))
        self.inbox += self.gw.fetch(self.id).msgs

    def run(self, *args: str) -> AgentResult:
        assert args[0] == "recv", args
        queue = args[1] if len(args) > 1 else None
        out, keep = [], []
        for m in self.inbox:
            if queue is not None and m.queue != queue:
                keep.append(m)
                continue
            line = {"id": str(m.id), "seq": m.seq, "from": m.sender, "queue": m.queue}
            try:
                line["body"] = m.body.decode("utf-8")
            except UnicodeDecodeError:
                line["body_base64"] = base64.b64encode(m.body).decode()
            out.append(json.dumps(line))
        self.inbox = keep
        return AgentResult(["qaagent-double", *args], 0, "".join(l + "\n" for l in out), "")


# ------------------------------------------------------------------ traffic through it


AGENTS = ("A", "B", "C")


def py_traffic(gw: DoubleGateway) -> tuple:
    """Python clients A, B, C; each uploads two messages to each other one (a binary body
    among them), then each fetches and hands what came to its application. Returns
    (history, {(sender, recipient, k): id})."""
    h = History()
    recs = {a: h.py(a) for a in AGENTS}
    ids = {}
    for s in AGENTS:
        msgs = []
        for r in AGENTS:
            if r == s:
                continue
            for k in range(2):
                body = b"\xff\x00binary" if k else f"{s} to {r}".encode()
                m = q.MsgOut(id=uuid.uuid4(), to=f"{r}\\{QUEUE}", body=body)
                ids[(s, r, k)] = str(m.id)
                msgs.append(m)
        ack = recs[s].upload(gw.client(s), msgs)
        assert len(ack.results) == len(msgs)
    for a in AGENTS:
        recs[a].deliver(gw.client(a).fetch())
    return h, ids


def qaagent_traffic(gw: DoubleGateway, tmp_path: Path, ids: Dict,
                    record_body: bool = True) -> tuple:
    """The same messages queued with QaAgentDouble.send (recorded with h.sent(to=, body=));
    ids filled with (sender, recipient, k) -> id. Returns (history, {id: agent double});
    _qaagent_report syncs and receives."""
    h = History()
    agents = {a: QaAgentDouble(a, tmp_path / f"{a}.db", gw) for a in AGENTS}
    for a in agents.values():
        h.add(a)
    for s in AGENTS:
        for r in AGENTS:
            if r == s:
                continue
            for k in range(2):
                body = b"\xff\x00binary" if k else f"{s} to {r}"
                mid = agents[s].send(f"{r}\\{QUEUE}", body)
                if record_body:
                    h.sent(s, mid, to=f"{r}\\{QUEUE}", body=body)
                else:  # only the outbox row tells what was sent (History.collect)
                    h.sent(s, mid)
                ids[(s, r, k)] = mid
    return h, agents


def _py_report(misroute=None, alter=None, results=None):
    gw = KeyedDouble(misroute or {}, alter or {}, results or {})
    h, ids = py_traffic(gw)
    return h.report(), ids


class KeyedDouble(DoubleGateway):
    """A DoubleGateway whose faults name messages by (sender, recipient, k), resolved to
    ids as the uploads arrive (the ids are made by the client)."""

    def __init__(self, misroute, alter, results) -> None:
        super().__init__()
        self.k_misroute, self.k_alter, self.k_results = misroute, alter, results

    def upload(self, sender, msgs):
        for m in msgs:
            rcpt = m.to.split("\\", 1)[0]
            k = 1 if m.body.startswith(b"\xff") else 0
            key = (sender, rcpt, k)
            if key in self.k_misroute:
                self.misroute[canonical(m.id)] = self.k_misroute[key]
            if key in self.k_alter:
                self.alter[canonical(m.id)] = self.k_alter[key]
            if key in self.k_results:
                self.results[canonical(m.id)] = self.k_results[key]
        return super().upload(sender, msgs)


def _qaagent_report(tmp_path, misroute=None, alter=None, results=None, record_body=True):
    gw = KeyedDouble(misroute or {}, alter or {}, results or {})
    ids: Dict = {}
    h, agents = qaagent_traffic(gw, tmp_path, ids, record_body)
    h.collect()  # everything is in the outboxes now (bodies read from there too)
    for a in agents.values():
        a.sync()
    for a in agents.values():  # a second round: the recipients fetch what came after them
        a.sync()
    rep = h.drain(timeout=0, queue=QUEUE)  # recv from every agent, collect; final at once
    return rep, ids


def report_of(side: str, tmp_path, **faults):
    if side == "python":
        return _py_report(**faults)
    return _qaagent_report(tmp_path, **faults)


def flip(body: bytes) -> bytes:
    """One bit of the first byte flipped: the smallest alteration."""
    return bytes([body[0] ^ 0x01]) + body[1:]


SIDES = ["python", "qaagent"]


# ------------------------------------------------------------------ positive control


@pytest.mark.parametrize("side", SIDES)
def test_clean_history_passes(side, tmp_path):
    """The double behaving: 12 messages acked, each received once by its recipient with
    the body sent; the report is clean and assert_ok passes."""
    rep, ids = report_of(side, tmp_path)
    print(f"\n{side}, double behaving: {rep.line()}")
    assert len(ids) == 12
    assert (rep.acked, rep.received, rep.lost, rep.duplicated, rep.pending) == (12, 12, 0, 0, 0), \
        rep.details()
    assert (rep.misdelivered, rep.altered, rep.refused, rep.body_unknown) == (0, 0, 0, 0), \
        rep.details()
    rep.assert_ok()


# ------------------------------------------------------------------ negative controls


@pytest.mark.parametrize("side", SIDES)
def test_delivery_to_wrong_agent_is_reported(side, tmp_path):
    """The double hands the message A -> B (text body) to C instead: the checker reports it
    misdelivered (naming both agents) and lost (B never got it); assert_ok fails."""
    rep, ids = report_of(side, tmp_path, misroute={("A", "B", 0): "C"})
    mid = ids[("A", "B", 0)]
    print(f"\n{side}, double misrouting A->B to C: {rep.details()}")
    assert rep.misdelivered == 1, rep.details()
    assert rep.misdelivered_ids == [f"{mid}: for B, handed to C"], rep.misdelivered_ids
    assert rep.lost_ids == [mid], rep.details()
    assert rep.received == 12 and rep.altered == 0 and rep.duplicated == 0, rep.details()
    with pytest.raises(AssertionError) as e:
        rep.assert_ok()
    assert "misdelivered=1" in str(e.value) and mid in str(e.value)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("k", [0, 1], ids=["text", "binary"])
def test_body_altered_in_flight_is_reported(side, k, tmp_path):
    """The double flips one bit of the body of C -> A (a text body, or a binary one, which
    `qaagent recv` prints as body_base64) in the DELIVER: the checker reports it altered
    (it was received by the right agent, once: nothing else is wrong); assert_ok fails."""
    rep, ids = report_of(side, tmp_path, alter={("C", "A", k): flip})
    mid = ids[("C", "A", k)]
    print(f"\n{side}, double altering C->A ({'binary' if k else 'text'}): {rep.details()}")
    assert rep.altered == 1, rep.details()
    assert rep.altered_ids[0].startswith(f"{mid}: handed to A with another body"), rep.altered_ids
    assert (rep.acked, rep.received, rep.lost, rep.duplicated, rep.misdelivered) == \
        (12, 12, 0, 0, 0), rep.details()
    with pytest.raises(AssertionError) as e:
        rep.assert_ok()
    assert "altered=1" in str(e.value) and mid in str(e.value)


def test_body_read_from_the_outbox_when_send_did_not_record_it(tmp_path):
    """h.sent(agent, id) without to/body: the checker takes recipient and body from the
    sender's outbox row (collect, while it is queued) and still sees the alteration."""
    rep, ids = _qaagent_report(tmp_path, alter={("B", "C", 0): flip}, record_body=False)
    print(f"\n{rep.details()}")
    assert rep.body_unknown == 0 and rep.altered == 1, rep.details()
    assert rep.altered_ids[0].startswith(ids[("B", "C", 0)]), rep.altered_ids


@pytest.mark.parametrize("side", SIDES)
def test_refused_results_fail_unless_expected(side, tmp_path):
    """The double answers conflict for one message and invalid for another: they are
    refused (not acked, not lost); assert_ok fails naming them, passes only when the test
    allows both."""
    rep, ids = report_of(side, tmp_path, results={("A", "C", 0): q.R_CONFLICT,
                                                  ("B", "A", 1): q.R_INVALID})
    print(f"\n{side}, double refusing two: {rep.details()}")
    assert rep.refused == 2 and rep.refused_results == {"conflict": 1, "invalid": 1}, \
        rep.details()
    assert rep.refused_ids == {ids[("A", "C", 0)]: "conflict", ids[("B", "A", 1)]: "invalid"}
    assert (rep.acked, rep.lost, rep.misdelivered, rep.altered) == (10, 0, 0, 0), rep.details()
    with pytest.raises(AssertionError, match="did not expect: {'conflict': 1, 'invalid': 1}"):
        rep.assert_ok()
    with pytest.raises(AssertionError, match="did not expect: {'invalid': 1}"):
        rep.assert_ok(allow_refused=("conflict",))
    rep.assert_ok(allow_refused=("conflict", q.R_INVALID))


def test_misdelivered_copy_beside_the_right_one(tmp_path):
    """A message handed to its recipient and, as well, to another agent: not lost, but
    misdelivered (and duplicated: two handings of one id)."""
    h = History()
    h.py("A").upload(DoubleGateway().client("A"),
                     [q.MsgOut(id=uuid.UUID(int=7), to=f"B\\{QUEUE}", body=b"x")])
    h.py("B")
    h.py("C")
    mid = canonical(uuid.UUID(int=7))
    h.receive("B", mid, body=b"x")
    h.receive("C", mid, body=b"x")
    rep = h.report()
    print(f"\n{rep.details()}")
    assert (rep.lost, rep.misdelivered, rep.duplicated, rep.altered) == (0, 1, 1, 0), rep.details()
    with pytest.raises(AssertionError):
        rep.assert_ok()
