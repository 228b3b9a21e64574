"""Issue 2, must-show 1: 1,000 messages from A through ml1 reach B through ml2 of the same
gateway and ml3 of a second gateway on the same store: every unexpired message exactly
once by id after acknowledgement, priority-then-age order in every DELIVER, `more`
exact, un-acknowledged messages redelivered with ias_DeliveryCount 2, expired ones never.
"""

import random
import time
import uuid

from qagwtest import qasync as q
from qagwtest.harness import msg, priority_order_key

N_TOTAL = 1000
N_AGENT = 60         # sent with `qaagent send` (-policy ondemand) and one `qaagent sync`
N_PAST = 100         # expires_ms already past at upload: UPLOAD_ACK expired, never delivered
N_SOON = 50          # stored, then expire before B fetches: never delivered


def check_deliver(d: q.Deliver, where: str) -> None:
    keys = [priority_order_key(m) for m in d.msgs]
    assert keys == sorted(keys), f"{where}: DELIVER not in priority-then-age order: {keys}"
    assert len({m.seq for m in d.msgs}) == len(d.msgs), f"{where}: a seq twice in one DELIVER"


def test_thousand_messages_across_workers_and_gateways(qagw, store, agent, uid):
    g1 = qagw(workers=("ml1", "ml2"), node="n1")
    g2 = qagw(workers=("ml3",), node="n2")
    A, B = f"A-{uid}", f"B-{uid}"
    rng = random.Random(20240501)
    sent = {}  # id (UUID) -> MsgOut, every message that must reach B

    # --- A, part 1: the Python client through ml1 (the bulk, fast) -------------------
    n_py = N_TOTAL - N_AGENT
    now = q.now_ms()
    soon_ms = now + 3000
    py_msgs, kinds = [], {}
    for i in range(n_py):
        kind = "past" if i < N_PAST else "soon" if i < N_PAST + N_SOON else "live"
        exp = now - 60_000 if kind == "past" else soon_ms if kind == "soon" else 0
        queue = "q1" if i % 3 else "q2"
        m = msg(f"{B}\\{queue}", body=f"py {i} ".encode() * (1 + i % 7), priority=rng.randrange(10),
                expires_ms=exp, props=[("n", str(i)), ("kind", kind)])
        py_msgs.append(m)
        kinds[m.id] = kind
    rng.shuffle(py_msgs)
    with q.Client("127.0.0.1", g1.port("ml1")) as a:
        w = a.hello(A)
        assert w.server == "ml1"
        assert w.max_batch >= 100, w
        for k in range(0, n_py, 100):
            batch = py_msgs[k:k + 100]
            ack = a.upload(batch)
            assert [i for i, _ in ack.results] == [m.id for m in batch], "UPLOAD_ACK order differs from UPLOAD"
            for m, (_, res) in zip(batch, ack.results):
                want = q.R_EXPIRED if kinds[m.id] == "past" else q.R_STORED
                assert res == want, f"message {kinds[m.id]} prio {m.priority}: result {res}, expected {want}"
        a.bye()
    for m in py_msgs:
        if kinds[m.id] != "past":
            sent[m.id] = m

    # --- A, part 2: qaagent send (queued only, ondemand) then one sync through ml1 --
    qa = agent(A, g1.stream("ml1"))
    agent_ids = []
    for i in range(N_AGENT):
        prio = rng.randrange(10)
        mid = uuid.UUID(qa.send(f"{B}\\q1", f"agent {i}", priority=prio, props=[f"n=a{i}"]))
        agent_ids.append(mid)
        sent[mid] = q.MsgOut(id=mid, to=f"{B}\\q1", body=f"agent {i}".encode(), priority=prio,
                             props=[("n", f"a{i}")])
    st = qa.status()
    assert st["outgoing"] == N_AGENT, st
    r = qa.sync().json()
    assert r["server"] == "ml1", r
    assert r["uploaded"]["stored"] == N_AGENT, r
    assert qa.status()["outgoing"] == 0

    expected = set(sent) - {i for i, k in kinds.items() if k == "soon"}
    expired_ids = {i for i, k in kinds.items() if k in ("past", "soon")}
    assert len(expected) == N_TOTAL - N_PAST - N_SOON
    # every stored message is in the store exactly once
    rows = store.rows_per_id(sent)
    assert set(rows.values()) == {1}, {k: v for k, v in rows.items() if v != 1}

    # let the "soon" messages expire before B asks
    time.sleep(max(0.0, (soon_ms - q.now_ms()) / 1000 + 0.5))

    # --- B, session 1: ml2 of the same gateway; fetch 4 × 50, ack 2 of them, drop ----
    got1 = []
    with q.Client("127.0.0.1", g1.port("ml2")) as b1:
        w = b1.hello(B)
        assert w.server == "ml2"
        for k in range(4):
            d = b1.fetch(max_count=50)
            check_deliver(d, f"session 1 fetch {k}")
            assert len(d.msgs) == 50, f"fetch {k}: {len(d.msgs)} messages, 50 wanted of {len(expected)} pending"
            assert d.more == 1
            got1 += d.msgs
        keys = [priority_order_key(m) for m in got1]
        assert keys == sorted(keys), "session 1: successive DELIVERs not in priority-then-age order"
        acked1 = got1[:100]
        b1.deliver_ack([m.seq for m in acked1])
        b1.ping()  # acknowledgements durable once the PONG is read
    # dropped without BYE: got1[100:] are held by a dead session and must come back
    unacked1 = {m.id for m in got1[100:]}

    # --- B, session 2: ml3 of the second gateway; fetch and ack everything -----------
    time.sleep(0.3)  # let n1 notice the closed connection
    got2 = []
    with q.Client("127.0.0.1", g2.port("ml3")) as b2:
        w = b2.hello(B)
        assert w.server == "ml3"
        for k in range(100):
            d = b2.fetch(max_count=w.max_batch)
            check_deliver(d, f"session 2 fetch {k}")
            got2 += d.msgs
            pending_after = len(expected) - len(acked1) - len(got2)
            assert d.more == (1 if pending_after > 0 else 0), \
                f"session 2 fetch {k}: more={d.more} with {pending_after} pending not held"
            b2.deliver_ack([m.seq for m in d.msgs])
            if not d.more:
                break
        b2.ping()
        last = b2.fetch(max_count=10)
        assert (len(last.msgs), last.more) == (0, 0), last
        keys = [priority_order_key(m) for m in got2]
        assert keys == sorted(keys), "session 2: successive DELIVERs not in priority-then-age order"

    # --- what arrived ------------------------------------------------------------------
    all_msgs = got1 + got2
    ids1, ids2 = [m.id for m in got1], [m.id for m in got2]
    assert len(set(ids2)) == len(ids2), "a message delivered twice in one session"
    assert not (set(ids1[:100]) & set(ids2)), "acknowledged messages delivered again"
    assert set(ids1[:100]) | set(ids2) == expected, (
        f"missing {len(expected - set(ids1) - set(ids2))}, "
        f"unexpected {len((set(ids1) | set(ids2)) - expected)}")
    assert not (expired_ids & {m.id for m in all_msgs}), "an expired message was delivered"
    for m in all_msgs:
        s = sent[m.id]
        p = m.propdict
        assert m.sender == A and p.get("ias_Originator") == A, m
        assert m.queue == s.to.split("\\", 1)[1], m
        assert m.priority == s.priority and m.body == s.body, m
        assert p.get("n") == dict(s.props)["n"], m
    for m in got1:
        assert m.propdict.get("ias_DeliveryCount") == "1", m.propdict
    for m in got2:
        want = "2" if m.id in unacked1 else "1"
        assert m.propdict.get("ias_DeliveryCount") == want, (m.id in unacked1, m.propdict)
    # seq is the store position: stable across the redelivery
    seq1 = {m.id: m.seq for m in got1}
    for m in got2:
        if m.id in seq1:
            assert m.seq == seq1[m.id]

    # --- after acknowledgement nothing comes back, through either gateway ---------------
    for gw, wk in ((g1, "ml1"), (g2, "ml3")):
        with q.Client("127.0.0.1", gw.port(wk)) as b3:
            b3.hello(B)
            d = b3.fetch()
            assert (len(d.msgs), d.more) == (0, 0), f"{wk}: {len(d.msgs)} messages after all were acked"


def test_qaagent_send_sync_recv(qagw, agent, uid):
    g1 = qagw(workers=("ml1", "ml2"), node="n1")
    g2 = qagw(workers=("ml3",), node="n2")
    A, B = f"A-{uid}", f"B-{uid}"
    a = agent(A, g1.stream("ml1"))
    sent = {}
    for i in range(12):
        mid = a.send(f"{B}\\inbox", f"hello {i}", priority=i % 10, props=[f"k{i}=v{i}", "color=blue"])
        sent[mid] = (i, "inbox")
    for i in range(3):
        mid = a.send(f"{B}\\other", f"other {i}", expires_in=3600)
        sent[mid] = (i, "other")
    assert len(sent) == 15
    r = a.sync().json()
    assert r["uploaded"]["stored"] == 15 and r["server"] == "ml1", r

    b = agent(B, g1.stream("ml2"))
    r = b.sync().json()
    assert r["server"] == "ml2" and r["received"] == 15, r
    st = b.status()
    assert (st["incoming_unread"], st["incoming_total"]) == (15, 15), st

    # the messages were acknowledged: a sync through the other gateway finds nothing
    b3 = agent(B, g2.stream("ml3"))
    r = b3.sync().json()
    assert r["server"] == "ml3" and r["received"] == 0, r

    inbox = b.recv("inbox")
    assert len(inbox) == 12, inbox
    now = q.now_ms()
    for m in inbox:
        i, queue = sent[str(uuid.UUID(m["id"]))]
        assert queue == "inbox"
        assert m["from"] == A and m["queue"] == "inbox"
        assert m["priority"] == i % 10
        assert m["body"] == f"hello {i}"
        assert m["props"].get(f"k{i}") == f"v{i}" and m["props"].get("color") == "blue", m["props"]
        assert abs(m["created_ms"] - now) < 120_000, m
        assert m["expires_ms"] == 0, m
        assert isinstance(m["seq"], int) and m["seq"] > 0
    assert len({m["seq"] for m in inbox}) == 12
    assert b.recv("inbox") == [], "recv printed messages it had already marked received"

    other = b.recv("other")
    assert sorted(m["body"] for m in other) == [f"other {i}" for i in range(3)]
    for m in other:
        assert m["expires_ms"] - now > 3_000_000, m  # about an hour ahead
    st = b.status()
    assert st["incoming_unread"] == 0 and st["statuses_queued"] == 15, st
    r = b.sync().json()
    assert r["statuses_sent"] == 15, r
    assert b.status()["statuses_queued"] == 0
