"""Issue 2, must-show 2: a batch re-sent after a lost ack is stored once. The ack is lost
either because the agent drops the connection before reading it, or because the gateway
is killed with SIGKILL after the UPLOAD was sent. The store must hold exactly one row per
id, and the retry's UPLOAD_ACK says duplicate for every id that was already stored.
"""

import signal
import time

import pytest

from qagwtest import qasync as q
from qagwtest.harness import msg, wait_until


def batch_of(n, to, tag):
    return [msg(to, body=f"{tag} {i}".encode(), priority=i % 10) for i in range(n)]


def stored_snapshot(store, msgs, settle=3.0):
    """Rows per id once the store stops changing (a batch commits whole or not at all)."""
    ids = [m.id for m in msgs]
    deadline = time.monotonic() + settle
    rows = store.rows_per_id(ids)
    while time.monotonic() < deadline and set(rows.values()) != {1}:
        time.sleep(0.1)
        rows = store.rows_per_id(ids)
    assert set(rows.values()) in ({0}, {1}), f"batch half stored (one transaction per batch): {rows}"
    return rows


def retry_and_check(client, store, msgs, batch_no, rows_before):
    ack = client.upload(msgs, batch=batch_no)
    assert [i for i, _ in ack.results] == [m.id for m in msgs]
    for m, (_, res) in zip(msgs, ack.results):
        want = q.R_DUPLICATE if rows_before[str(m.id)] == 1 else q.R_STORED
        assert res == want, f"retry result {res} for an id stored {rows_before[str(m.id)]} time(s) before"
    rows = store.rows_per_id([m.id for m in msgs])
    assert set(rows.values()) == {1}, f"not exactly one row per id after the retry: {rows}"
    return ack


def test_retry_after_ack_lost_in_transit(qagw, store, uid):
    """The ack was sent but the agent never got it: the retry is all duplicates."""
    g = qagw(workers=("ml1", "ml2"))
    A, B = f"A-{uid}", f"B-{uid}"
    msgs = batch_of(30, f"{B}\\q", "transit")
    with q.Client("127.0.0.1", g.port("ml1")) as c:
        c.hello(A)
        ack = c.upload(msgs, batch=1)
        assert [r for _, r in ack.results] == [q.R_STORED] * 30
    rows = store.rows_per_id([m.id for m in msgs])
    assert set(rows.values()) == {1}, rows
    # the agent retries on another worker: the id, not the session, makes it idempotent
    with q.Client("127.0.0.1", g.port("ml2")) as c:
        c.hello(A)
        retry_and_check(c, store, msgs, 1, rows)
        # and once more within the same session
        retry_and_check(c, store, msgs, 2, rows)


def test_retry_after_agent_drops_connection(qagw, store, uid):
    """The agent closes right after sending UPLOAD, before any ack could be read."""
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    msgs = batch_of(50, f"{B}\\q", "drop")
    c = q.Client("127.0.0.1", g.port("ml1"))
    c.hello(A)
    c.send_upload(msgs, batch=7)
    c.close()
    rows = stored_snapshot(store, msgs)
    with q.Client("127.0.0.1", g.port("ml1")) as c2:
        c2.hello(A)
        retry_and_check(c2, store, msgs, 7, rows)


@pytest.mark.parametrize("when", ["at_once", "after_20ms", "after_commit"])
def test_retry_after_gateway_sigkill(qagw, store, uid, when):
    """SIGKILL of qagw after an UPLOAD was sent (at once, a little later, or once the rows
    are visible in the store, i.e. between commit and the ack being read); restart on the
    same ports; the agent re-sends the batch."""
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    msgs = batch_of(100, f"{B}\\q", f"kill {when}")
    c = q.Client("127.0.0.1", g.port("ml1"))
    c.hello(A)
    c.send_upload(msgs, batch=3)
    if when == "after_20ms":
        time.sleep(0.02)
    elif when == "after_commit":
        wait_until(lambda: set(store.rows_per_id([m.id for m in msgs]).values()) == {1}, 10,
                   interval=0.005, what="the batch to be committed")
    g.kill(signal.SIGKILL)
    c.close()
    rows = stored_snapshot(store, msgs, settle=0)
    if when == "after_commit":
        assert set(rows.values()) == {1}
    g.start()
    with q.Client("127.0.0.1", g.port("ml1")) as c2:
        c2.hello(A)
        retry_and_check(c2, store, msgs, 3, rows)


def test_duplicate_and_conflict_results(qagw, store, uid):
    """Same id from the same sender: duplicate (1). From another sender: conflict (6).
    Either way the store keeps the one original row."""
    g = qagw(workers=("ml1",))
    A, C, B = f"A-{uid}", f"C-{uid}", f"B-{uid}"
    m = msg(f"{B}\\q", body=b"original")
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A)
        assert a.upload([m]).results == [(m.id, q.R_STORED)]
        assert a.upload([m]).results == [(m.id, q.R_DUPLICATE)]
    forged = q.MsgOut(id=m.id, to=f"{B}\\q", body=b"forged")
    with q.Client("127.0.0.1", g.port("ml1")) as c:
        c.hello(C)
        assert c.upload([forged]).results == [(m.id, q.R_CONFLICT)]
    assert store.rows_per_id([m.id]) == {str(m.id): 1}
    with q.Client("127.0.0.1", g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()
        assert [(x.id, x.body, x.sender) for x in d.msgs] == [(m.id, b"original", A)]
