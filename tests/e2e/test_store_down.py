"""Issue 2, must-show 5: with PostgreSQL stopped, UPLOAD on an established session gets
ERROR store_unavailable (retryable) and no ack; `qaagent sync` exits 1 and keeps its
messages; once PostgreSQL is back, the same agent's sync stores them, once."""

import time

import qasync as q
from harness import msg


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
