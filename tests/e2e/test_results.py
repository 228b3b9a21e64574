"""Every UPLOAD_ACK result and its precedence, the HELLO clock shift, FETCH's byte budget,
acknowledgements of other agents' messages, max_sessions, and two nodes migrating one
fresh store at the same time (protocol.md UPLOAD/FETCH, docs/design.md "Store (store/)")."""

from __future__ import annotations

import subprocess
import time

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.harness import msg


def results(ack):
    return [r for _, r in ack.results]


def test_invalid_expired_too_large_quota(qagw, store, uid):
    g = qagw(workers=("ml1",), limits={"max_frame": 65536}, sections={"store": {"max_pending": 3}})
    A, B = f"A-{uid}", f"B-{uid}"
    now = q.now_ms()
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A, now=now)
        batch = [
            msg(f"{B}\\q"),                                   # 0 stored
            msg(f"{B}q"),                                     # 1 invalid: no backslash
            msg(f"{B}\\system"),                              # 2 invalid: reserved queue
            msg(f"{B}\\q", priority=10),                      # 3 invalid: priority
            msg(f"{B}\\q", props=[("IAS_x", "1")]),           # 4 invalid: reserved key
            msg(f"{B}\\q", props=[("k", "1"), ("k", "2")]),   # 5 invalid: repeated key
            msg(f"{B}\\q", expires_ms=now - 1000),            # 6 expired
            msg(f"{B}\\q"),                                   # 7 stored (2nd pending)
            msg(f"{B}\\q"),                                   # 8 stored (3rd pending)
            msg(f"{B}\\q"),                                   # 9 quota
        ]
        ack = a.upload(batch)
        assert results(ack) == [0, 2, 2, 2, 2, 2, 3, 0, 0, 5], results(ack)
        # too_large (MSG_OUT over max_frame - 1024) precedes quota; expired precedes too_large
        assert results(a.upload([msg(f"{B}\\q", body=b"x" * (65536 - 1000))])) == [4]
        assert results(a.upload([msg(f"{B}\\q", expires_ms=now - 1, body=b"x" * 65000)])) == [3]
        # precedence: an invalid message that is also a duplicate id is invalid;
        # a stored id re-sent with a past expiry is duplicate, not expired
        again = [batch[1], batch[0]]
        batch[0].expires_ms = now - 1
        assert results(a.upload(again)) == [2, 1]
        # quota frees up when the recipient acknowledges
        with q.Client("127.0.0.1", g.port("ml1")) as b:
            b.hello(B)
            d = b.fetch()
            assert len(d.msgs) == 3
            b.deliver_ack([d.msgs[0].seq])
            b.ping()
        assert results(a.upload([msg(f"{B}\\q"), msg(f"{B}\\q")])) == [0, 5]
    rows = store.scalar("SELECT count(*) FROM qa_messages WHERE recipient = %s", (B,))
    assert int(rows) == 4


def test_quota_refusal_writes_no_row(qagw, store, uid):
    """A small UPLOAD to a full recipient is refused from the counters before the INSERT
    (qa_upload_group step 1: the bound that needs no grouping must send it to the exact
    count), not inserted and deleted again by the counters' step: no row, no sequence
    value taken; and the same for a sender at max_pending_per_sender."""
    g = qagw(workers=("ml1",), sections={"store": {"max_pending": 2,
                                                    "max_pending_per_sender": 3}})
    A, B, C = f"A-{uid}", f"B-{uid}", f"C-{uid}"
    last = "SELECT last_value FROM qa_messages_seq_seq"
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A)
        assert results(a.upload([msg(f"{B}\\q"), msg(f"{B}\\q")])) == [0, 0]
        seq = store.scalar(last)
        assert results(a.upload([msg(f"{B}\\q")])) == [5]  # B full
        assert results(a.upload([msg(f"{B}\\q"), msg(f"{C}\\q")])) == [5, 0]
        assert store.scalar(last) == seq + 1, "a refused message took a row"
        seq = store.scalar(last)
        assert results(a.upload([msg(f"{C}\\q")])) == [5]  # A at its 3 pending
        assert store.scalar(last) == seq, "a refused message took a row"
    assert store.scalar("SELECT count(*) FROM qa_messages WHERE sender = %s", (A,)) == 3


def test_clock_shift_follows_the_agents_intent(qagw, uid):
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    skew = 3_600_000  # the agent's clock is an hour behind
    agent_now = q.now_ms() - skew
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A, now=agent_now)
        live = msg(f"{B}\\q", expires_ms=agent_now + 60_000)   # in a minute, by its clock
        dead = msg(f"{B}\\q", expires_ms=agent_now - 1_000)    # a second ago, by its clock
        soon = msg(f"{B}\\q", expires_ms=agent_now + 1_500)
        assert results(a.upload([live, dead, soon])) == [0, 3, 0]
    time.sleep(2.0)
    with q.Client("127.0.0.1", g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()
        assert [m.id for m in d.msgs] == [live.id]  # soon expired in the store meanwhile
        server_now = q.now_ms()
        # stored shifted: within a few seconds of a minute from now (server clock)
        assert abs(d.msgs[0].expires_ms - (server_now + 58_000)) < 5_000, d.msgs[0].expires_ms


def test_fetch_byte_budget_and_at_least_one(qagw, uid):
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A)
        big = [msg(f"{B}\\q", body=b"b" * 5000) for _ in range(4)]
        assert results(a.upload(big)) == [0] * 4
    with q.Client("127.0.0.1", g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch(max_count=10, max_bytes=100)       # smaller than one message: still one
        assert len(d.msgs) == 1 and d.more == 1
        d2 = b.fetch(max_count=10, max_bytes=10_500)   # two fit, not three
        assert len(d2.msgs) == 2 and d2.more == 1
        d3 = b.fetch(max_count=10, max_bytes=1 << 20)
        assert len(d3.msgs) == 1 and d3.more == 0
        assert len({m.id for m in d.msgs + d2.msgs + d3.msgs}) == 4
        d4 = b.fetch()                                  # all held by this session
        assert d4.msgs == [] and d4.more == 0


def test_acks_of_other_agents_messages_are_ignored(qagw, store, uid):
    g = qagw(workers=("ml1",))
    A, B, C = f"A-{uid}", f"B-{uid}", f"C-{uid}"
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A)
        m = msg(f"{B}\\q")
        assert results(a.upload([m])) == [0]
    with q.Client("127.0.0.1", g.port("ml1")) as b:
        b.hello(B)
        seq = b.fetch().msgs[0].seq
    with q.Client("127.0.0.1", g.port("ml1")) as c:  # C guesses B's seq
        c.hello(C)
        c.deliver_ack([seq, seq + 1000, 2**63 - 1])
        c.status([(m.id, 60)])
        c.ping()
    status = store.scalar("SELECT status FROM qa_messages WHERE seq = %s", (seq,))
    assert int(status) == 1  # still pending for B
    with q.Client("127.0.0.1", g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m.id] and d.msgs[0].propdict["ias_DeliveryCount"] == "2"


def test_max_sessions_answers_overloaded(qagw, uid):
    g = qagw(workers=("ml1",), limits={"max_sessions": 1})
    with q.Client("127.0.0.1", g.port("ml1")) as first:
        first.hello(f"one-{uid}")
        with q.Client("127.0.0.1", g.port("ml1")) as second:
            second.send(q.Hello(agent_id=f"two-{uid}", now_ms=q.now_ms()))
            err = second.expect_error_and_close(timeout=5)
            assert err.code == 7 and err.retryable == 1, err
        assert isinstance(first.ping(), q.Pong)


def test_two_nodes_migrate_one_fresh_store_together(qagw, store, uid):
    """Both processes are launched back to back (not one after the other's start-up), so
    their migrations race; the advisory lock must make one wait for the other."""
    g1 = qagw(workers=("ml1",), node="na", start=False)
    g2 = qagw(workers=("ml2",), node="nb", start=False)
    procs = []
    try:
        for g in (g1, g2):
            log = open(g.log, "ab")
            procs.append(subprocess.Popen([str(harness.QAGW), "-c", str(g.conf)], cwd=harness.REPO,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            log.close()
        for g, w in ((g1, "ml1"), (g2, "ml2")):
            harness.wait_until(lambda g=g, w=w: harness.port_open(g.port(w)), 15, what=f"{w} listening")
        assert int(store.scalar("SELECT count(*) FROM qa_schema_version")) >= 1
        for g, w in ((g1, "ml1"), (g2, "ml2")):
            with q.Client("127.0.0.1", g.port(w)) as c:
                welcome = c.hello(f"x-{uid}", primary="ml2")
                assert welcome.primary == "ml2" and welcome.on_primary == (w == "ml2")
                assert sorted(n for n, _ in welcome.servers) == ["ml1", "ml2"]
        assert int(store.scalar("SELECT count(*) FROM qa_workers")) == 2
        logs = g1.log_text() + g2.log_text()
        assert logs.count("schema migrated to version 1") == 1, logs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)
