"""Helpers of the pool tests (issue 3): two nodes on one Redis and one PostgreSQL, PERSIST
sessions of the Python client, PUSH expectations, polling of the admin port.

Topology used throughout: node n1 with workers ml1 and ml2, node n2 with worker ml3.
An agent "pinned" to a worker says that worker's HOST:PORT as HELLO's primary, as an agent
with an -x list does (protocol.md HELLO "Primary").
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Callable, List, Optional, Sequence, Tuple

from . import qasync as q
from .harness import msg

HOST = "127.0.0.1"


def two_nodes(qagw, names=("n1", "n2"), **kw):
    """n1 (ml1, ml2) and n2 (ml3): one pool (same database, same Redis prefix)."""
    n1 = qagw(workers=("ml1", "ml2"), node=names[0], **kw)
    n2 = qagw(workers=("ml3",), node=names[1], **kw)
    return n1, n2


def persist(gw, worker: str, agent_id: str, primary: str = "", timeout: float = 10.0,
            flags: int = q.FLAG_PERSIST) -> q.Client:
    """A PERSIST session of agent_id on gw's worker (WELCOME in c.welcome)."""
    c = q.Client(HOST, gw.port(worker), timeout=timeout)
    try:
        c.hello(agent_id, primary=primary, flags=flags)
    except BaseException:
        c.close()
        raise
    return c


def expect_push(c: q.Client, timeout: float) -> q.Push:
    """The next frame (PINGs answered) must be PUSH, within timeout seconds."""
    try:
        f = c.recv(timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"no PUSH within {timeout}s") from None
    assert isinstance(f, q.Push), f"expected PUSH, got {f!r}"
    return f


def expect_no_frame(c: q.Client, seconds: float) -> None:
    """Nothing (but PINGs, answered) arrives within seconds: in particular no PUSH."""
    try:
        f = c.recv(timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected nothing within {seconds}s, got {f!r}")


def fetch_skipping_push(c: q.Client, max_count: int = 256) -> Tuple[q.Deliver, List[q.Push]]:
    """FETCH; PUSH frames that arrive before the DELIVER are answered with PUSH_ACK and
    returned alongside (for tests where a PUSH may or may not come)."""
    c.send(q.Fetch(max_count=max_count, max_bytes=1 << 20))
    pushes = []
    while True:
        f = c.recv()
        if isinstance(f, q.Push):
            pushes.append(f)
            c.send(q.PushAck(f.push_id))
            continue
        if isinstance(f, q.Error):
            raise q.ServerError(f)
        assert isinstance(f, q.Deliver), f"expected DELIVER, got {f!r}"
        return f, pushes


def upload(gw, worker: str, sender: str, msgs: Sequence[q.MsgOut]) -> q.UploadAck:
    """A fresh session of sender on gw's worker uploads msgs; every one must be stored."""
    with q.Client(HOST, gw.port(worker)) as a:
        a.hello(sender)
        ack = a.upload(list(msgs))
    assert [r for _, r in ack.results] == [q.R_STORED] * len(msgs), ack
    return ack


def send_one(gw, worker: str, sender: str, to: str, body: bytes = None) -> q.MsgOut:
    m = msg(to, body=body)
    upload(gw, worker, sender, [m])
    return m


def poll(get: Callable[[], object], ok: Callable[[object], bool], timeout: float, what: str,
         interval: float = 0.1):
    """Calls get() until ok(value); returns the value, or fails after timeout seconds showing
    the last value seen (an exception from get() counts as not yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = get()
            if ok(last):
                return last
        except (AssertionError, OSError, KeyError, TypeError, ValueError) as e:
            last = f"<{type(e).__name__}: {e}>"
        if time.monotonic() >= deadline:
            shown = json.dumps(last, indent=1, default=str)[:3000] if not isinstance(last, str) else last[:3000]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen:\n{shown}")
        time.sleep(interval)


def agent_json(gw, agent_id: str):
    status, body = gw.admin.get(f"/api/agents/{agent_id}")
    assert status == 200, f"GET /api/agents/{agent_id}: {status} {body!r}"
    assert isinstance(body, dict), body
    return body


def push_json(gw):
    status, body = gw.admin.get("/api/push")
    assert status == 200, f"GET /api/push: {status} {body!r}"
    assert isinstance(body, dict) and "totals" in body and "workers" in body, body
    return body


PUSH_FIELDS = ("routed", "coalesced", "sent", "acked", "suppressed_off_primary", "no_session",
               "failed")


def truthy(v) -> bool:
    """A JSON flag given as true/false or 1/0."""
    return v is True or v == 1


def falsy(v) -> bool:
    return v is False or v == 0


def canonical(mid) -> str:
    return str(uuid.UUID(str(mid)))


def healthz(gw) -> Tuple[int, object]:
    return gw.admin.get("/healthz", token=None)


def mentions(body, word: str) -> bool:
    """The JSON error body names word (as a whole word, case-insensitive), in a key or value."""
    text = json.dumps(body) if not isinstance(body, str) else body
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text, re.I) is not None


def sum_metric(gws, name: str, **labels) -> float:
    return sum(g.admin.metrics().value(name, **labels) for g in gws)


def expect_error_skipping_push(c: q.Client, timeout: float) -> q.Error:
    """The ERROR that ends c's session, within timeout; PUSHes before it are acked (an
    owed push may come first)."""
    deadline = time.monotonic() + timeout
    while True:
        f = c.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(f, q.Push):
            c.send(q.PushAck(f.push_id))
            continue
        assert isinstance(f, q.Error), f"expected ERROR, got {f!r}"
        return f


def expect_superseded(c: q.Client, timeout: float = 5.0, skip_pushes: bool = False) -> q.Error:
    """ERROR superseded, then the close. skip_pushes: c may still be owed PUSHes (messages
    sent to it while traffic flows), acked as they come before the ERROR."""
    if skip_pushes:
        err = expect_error_skipping_push(c, timeout)
        c.expect_closed(timeout)
    else:
        err = c.expect_error_and_close(timeout=timeout)
    assert (err.code, err.retryable) == (q.E_SUPERSEDED, 0), err
    return err


def opt(d: Optional[dict], key: str):
    return None if d is None else d.get(key)
