"""The push rules around must-show 1-7 (protocol.md PUSH/PUSH_ACK, docs/design.md "Push accounting",
design.md "Push accounting"): coalescing and what ends it, the PUSH right after WELCOME,
no PUSH on a session without PERSIST, no_session accounting, and supersede within one node."""

from __future__ import annotations

from qagwtest import qasync as q
from qagwtest.harness import msg
from qagwtest.pool import (HOST, agent_json, expect_no_frame, expect_push, expect_superseded, persist, poll,
                  push_json, send_one, upload)

COUNTERS_S = 1.5


def test_coalescing_until_push_ack_or_fetch(qagw, uid):
    g = qagw(workers=("ml1", "ml2"))
    A, B = f"A-{uid}", f"B-{uid}"
    b = persist(g, "ml2", B, primary=g.address("ml2"))
    try:
        assert b.welcome.on_primary == 1
        send_one(g, "ml1", A, f"{B}\\q")
        p1 = expect_push(b, 5)
        # unacknowledged: two more commits raise no second PUSH
        send_one(g, "ml1", A, f"{B}\\q")
        upload(g, "ml1", A, [msg(f"{B}\\q")])
        expect_no_frame(b, 1.0)
        b.send(q.PushAck(p1.push_id))
        b.ping()
        # PUSH_ACK ended coalescing: the next commit is pushed, with a new push_id
        send_one(g, "ml1", A, f"{B}\\q")
        p2 = expect_push(b, 5)
        assert p2.push_id != p1.push_id and p2.pending >= 1, (p1, p2)
        # a FETCH ends coalescing too (p2 stays unacknowledged)
        d = b.fetch()
        assert len(d.msgs) == 4 and d.more == 0, d
        b.deliver_ack([x.seq for x in d.msgs])
        b.ping()
        send_one(g, "ml1", A, f"{B}\\q")
        p3 = expect_push(b, 5)
        assert p3.push_id not in (p1.push_id, p2.push_id), (p1, p2, p3)
        b.send(q.PushAck(p3.push_id))
        b.ping()

        def counted(j):
            t = j["totals"]
            return (t["routed"], t["sent"], t["coalesced"], t["acked"]) == (5, 3, 2, 2)
        pj = poll(lambda: push_json(g), counted, COUNTERS_S,
                  "routed 5, sent 3, coalesced 2, acked 2 on /api/push")
        assert pj["totals"]["no_session"] == pj["totals"]["failed"] == 0, pj["totals"]
        # the agent's counters are current within 1 s (admin.md) of their own: not
        # necessarily with the workers' totals at the same instant
        poll(lambda: agent_json(g, B), lambda j: (j["push"]["sent"], j["push"]["acked"]) == (3, 2),
             COUNTERS_S, "sent 3, acked 2 on B's /api/agents")
    finally:
        b.close()


def test_push_right_after_welcome_and_no_session_accounting(qagw, uid):
    g = qagw(workers=("ml1", "ml2"))
    A, C = f"A-{uid}", f"C-{uid}"
    m = send_one(g, "ml1", A, f"{C}\\q")  # C has never connected: no session anywhere
    poll(lambda: push_json(g), lambda j: j["totals"]["no_session"] == 1 and j["totals"]["routed"] == 1,
         COUNTERS_S, "no_session 1 on /api/push")
    # C's first PERSIST session with its primary: PUSH right after WELCOME
    c = persist(g, "ml2", C, primary=g.address("ml2"))
    try:
        assert c.welcome.on_primary == 1
        p = expect_push(c, 3)
        assert p.pending == 1, p
        c.send(q.PushAck(p.push_id))
        d = c.fetch()
        assert [x.id for x in d.msgs] == [m.id]
        c.deliver_ack([d.msgs[0].seq])
        c.ping()
        j = poll(lambda: agent_json(g, C), lambda j: j["push"]["acked"] == 1, COUNTERS_S,
                 "C's push acked")
        assert (j["push"]["sent"], j["push"]["no_session"]) == (1, 1), j
    finally:
        c.close()
    # C gone: the next message counts no_session again, once the session end is known
    poll(lambda: agent_json(g, C), lambda j: j["session"] is None, COUNTERS_S, "C's session gone")
    send_one(g, "ml1", A, f"{C}\\q")
    poll(lambda: agent_json(g, C), lambda j: j["push"]["no_session"] == 2, COUNTERS_S,
         "C's no_session 2")
    pj = poll(lambda: push_json(g), lambda j: j["totals"]["routed"] == 3, COUNTERS_S, "routed 3")
    t = pj["totals"]
    assert (t["sent"], t["no_session"], t["acked"], t["suppressed_off_primary"]) == (1, 2, 1, 0), t


def test_no_push_without_persist_even_on_primary(qagw, uid):
    g = qagw(workers=("ml1",))
    A, D = f"A-{uid}", f"D-{uid}"
    send_one(g, "ml1", A, f"{D}\\q")
    d = persist(g, "ml1", D, primary=g.address("ml1"), flags=0)  # no PERSIST
    try:
        assert d.welcome.on_primary == 1
        expect_no_frame(d, 1.0)  # nothing after WELCOME though a message waits
        send_one(g, "ml1", A, f"{D}\\q")
        expect_no_frame(d, 1.0)
        assert len(d.fetch().msgs) == 2
    finally:
        d.close()
    assert agent_json(g, D)["push"]["sent"] == 0


def test_supersede_on_the_same_worker_and_the_same_node(qagw, uid):
    g = qagw(workers=("ml1", "ml2"))
    B = f"B-{uid}"
    first = persist(g, "ml1", B, primary=g.address("ml1"))
    second = third = None
    try:
        second = persist(g, "ml1", B, primary=g.address("ml1"))  # same worker
        expect_superseded(first)
        third = q.Client(HOST, g.port("ml2"))                     # other worker, same node
        third.hello(B, primary=g.address("ml1"))
        expect_superseded(second)
        third.ping()
        j = poll(lambda: agent_json(g, B), lambda j: (j["session"] or {}).get("worker") == "ml2",
                 COUNTERS_S, "B's one session on ml2")
        assert j["session"]["persist"] in (False, 0), j
    finally:
        for c in (first, second, third):
            if c is not None:
                c.close()


def test_session_on_a_killed_node_is_no_session(qagw, uid):
    """B's session was on ml3 when n2 got SIGKILL: once ml3 has left the pool, B has no live
    session anywhere, so a push for B counts no_session (not suppressed_off_primary, which
    means a live session off the primary), and /api/agents/B shows no session."""
    n1, n2 = qagw(workers=("ml1", "ml2"), node="n1"), qagw(workers=("ml3",), node="n2")
    A, B = f"A-{uid}", f"B-{uid}"
    b = persist(n2, "ml3", B, primary=n2.address("ml3"))
    try:
        n2.kill()
    finally:
        b.close()
    poll(lambda: n1.admin.workers(), lambda ws: (ws.get("ml3") or {}).get("state") != "serving", 5,
         "ml3 out of the pool")
    send_one(n1, "ml1", A, f"{B}\\q")
    j = poll(lambda: agent_json(n1, B),
             lambda j: sum(j["push"][k] for k in ("no_session", "suppressed_off_primary")) == 1,
             COUNTERS_S, "the push for B accounted")
    assert j["push"]["no_session"] == 1 and j["push"]["suppressed_off_primary"] == 0, j
    assert j["session"] is None, j


def test_status_message_is_pushed_to_the_sender(qagw, uid):
    """The message that STATUS sends to the sender's system queue is pushed like any
    other (NOTIFY from qa_status), and so is the one a cancellation sends."""
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    a = persist(g, "ml1", A, primary="ml1")
    m1, m2 = msg(f"{B}\\q"), msg(f"{B}\\q")
    a.send(q.Upload(batch=1, msgs=[m1, m2]))
    assert isinstance(a.expect(q.UploadAck), q.UploadAck)
    with q.Client(HOST, g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()
        assert {x.id for x in d.msgs} == {m1.id, m2.id}
        b.deliver_ack([d.msgs[0].seq])
        b.status([(d.msgs[0].id, q.S_RECEIVED)])
        b.ping()
    p = expect_push(a, 5)
    a.send(q.PushAck(push_id=p.push_id))
    d = a.fetch()
    assert [x.queue for x in d.msgs] == ["system"], d
    assert d.msgs[0].propdict["ias_Status"] == "60"
    a.deliver_ack([x.seq for x in d.msgs])
    a.ping()
    # cancel the other one through the admin port: status 40 reaches A, pushed
    other = d.msgs[0].propdict["ias_StatusMessageId"]
    left = m2.id if other == m1.id.hex else m1.id
    st, _ = g.admin.delete(f"/api/messages/{left}")
    assert st == 200
    p = expect_push(a, 5)
    a.send(q.PushAck(push_id=p.push_id))
    d = a.fetch()
    assert [x.propdict["ias_Status"] for x in d.msgs] == ["40"], d
