"""Issue 2, must-show 5: with PostgreSQL stopped, UPLOAD on an established session gets
ERROR store_unavailable (retryable) and no ack; `qaagent sync` exits 1 and keeps its
messages; once PostgreSQL is back, the same agent's sync stores them, once."""

import os
import signal
import subprocess
import time

from qagwtest import qasync as q
from qagwtest.harness import msg


def test_store_down_then_back(qagw, private_pg, agent, uid):
    st = private_pg.create_database("qagw")
    g = qagw(workers=("ml1",), store_=st)
    A, Q, B = f"A-{uid}", f"Q-{uid}", f"B-{uid}"

    qa = agent(Q, g.stream("ml1"))
    qa_ids = [qa.send(f"{B}\\q", f"kept {i}", priority=i) for i in range(5)]
    assert qa.status()["outgoing"] == 5

    c = q.Client("127.0.0.1", g.port("ml1"), timeout=20)
    c.hello(A)
    c.ping()
    msgs = [msg(f"{B}\\q", body=f"py {i}".encode()) for i in range(10)]

    private_pg.stop("fast")
    try:
        # UPLOAD on the already-established session: ERROR store_unavailable, no ack
        c.send_upload(msgs, batch=1)
        reply = c.recv(timeout=20)
        assert isinstance(reply, q.Error), f"expected ERROR store_unavailable, got {reply!r}"
        assert (reply.code, reply.retryable) == (q.E_STORE_UNAVAILABLE, 1), reply
        c.expect_closed(timeout=10)
        c.close()

        # FETCH too (or already the HELLO): store_unavailable, retryable
        with q.Client("127.0.0.1", g.port("ml1"), timeout=20) as f:
            f.send(q.Hello(agent_id=B, now_ms=q.now_ms()))
            first = f.recv()
            if isinstance(first, q.Welcome):
                f.send(q.Fetch(10, 1 << 20))
                first = f.recv()
            assert isinstance(first, q.Error) and first.code == q.E_STORE_UNAVAILABLE \
                and first.retryable == 1, first

        # the agent: sync fails with exit 1, the messages stay in its outbox
        r = qa.sync(expect_rc=1)
        assert qa.status()["outgoing"] == 5, r
    finally:
        private_pg.start()

    # the gateway reconnects with backoff: the same agent's sync succeeds within ~20 s
    deadline = time.monotonic() + 20
    while True:
        r = qa.sync(expect_rc=None)
        if r.rc == 0:
            break
        assert r.rc == 1, f"sync after the store came back: {r!r}"
        assert time.monotonic() < deadline, f"sync still failing 20 s after PostgreSQL came back: {r!r}"
        time.sleep(1)
    assert r.json()["uploaded"]["stored"] == 5, r
    assert qa.status()["outgoing"] == 0

    # nothing of the refused batch was stored; re-sent, it is stored once
    assert set(st.rows_per_id([m.id for m in msgs]).values()) == {0}
    with q.Client("127.0.0.1", g.port("ml1")) as c2:
        c2.hello(A)
        ack = c2.upload(msgs, batch=1)
        assert [r for _, r in ack.results] == [q.R_STORED] * len(msgs), ack
    rows = st.rows_per_id(qa_ids + [str(m.id) for m in msgs])
    assert set(rows.values()) == {1}, rows

    # B gets all 15, once
    with q.Client("127.0.0.1", g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()
        assert sorted(str(m.id) for m in d.msgs) == sorted(qa_ids + [str(m.id) for m in msgs])
        assert d.more == 0


def _postgres_pids(pg) -> list:
    """The postmaster (first line of postmaster.pid) and its children."""
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [master] + [int(p) for p in out.stdout.split()]


def test_hung_store_is_dropped_after_the_timeout(qagw, private_pg, uid):
    """A store that stops answering (SIGSTOP: what a network partition looks like to the
    gateway) never errors by itself: after [store] timeout the connection is dropped, the
    request waiting on it gets ERROR store_unavailable and no ack; the gateway reconnects
    once the store answers again, and the retry leaves one row per message."""
    st = private_pg.create_database("qagw")
    g = qagw(workers=("ml1",), store_=st, sections={"store": {"timeout": "2", "connections": "1"}})
    A, B = f"A-{uid}", f"B-{uid}"
    c = q.Client("127.0.0.1", g.port("ml1"), timeout=30)
    c.hello(A)
    msgs = [msg(f"{B}\\q", body=f"hung {i}".encode()) for i in range(5)]
    pids = _postgres_pids(private_pg)
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        c.send_upload(msgs, batch=1)
        reply = c.recv(timeout=20)
        waited = time.monotonic() - t0
        assert isinstance(reply, q.Error), f"expected ERROR store_unavailable, got {reply!r}"
        assert (reply.code, reply.retryable) == (q.E_STORE_UNAVAILABLE, 1), reply
        print(f"\n[hung store] ERROR store_unavailable after {waited:.1f} s (timeout 2 s)")
        assert 1.5 <= waited <= 6, waited
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with q.Client("127.0.0.1", g.port("ml1"), timeout=10) as c2:
                c2.hello(A)
                ack = c2.upload(msgs, batch=2)
            break
        except (q.ServerError, OSError, AssertionError):
            assert time.monotonic() < deadline, "no successful upload 20 s after the store came back"
            time.sleep(0.5)
    # The hung backend still had the first UPLOAD in its socket: once resumed it may run
    # and commit it although the agent got store_unavailable. That is why the retry is
    # idempotent by id: stored or duplicate, one row each, either way.
    results = [r for _, r in ack.results]
    assert set(results) <= {q.R_STORED, q.R_DUPLICATE} and len(set(results)) == 1, ack
    assert set(st.rows_per_id([m.id for m in msgs]).values()) == {1}
