"""Issue 2, must-show 3: B's STATUS received (60) for a message from A reaches A's
`system` queue as a message with ias_MessageType=status, ias_Status=60 and
ias_StatusMessageId = the id as 32 lowercase hex digits."""

import time
import uuid

from qagwtest import qasync as q
from qagwtest.harness import msg


def status_props_ok(props: dict, mid, code: int) -> bool:
    return (props.get("ias_MessageType") == "status" and props.get("ias_Status") == str(code)
            and props.get("ias_StatusMessageId") == q.id_hex(mid))


def test_status_received_reaches_sender_system_queue_qaagent(qagw, agent, uid):
    g = qagw(workers=("ml1", "ml2"))
    A, B = f"A-{uid}", f"B-{uid}"
    a = agent(A, g.stream("ml1"))
    b = agent(B, g.stream("ml2"))
    mid = a.send(f"{B}\\orders", "order 1", priority=6)
    assert a.sync().json()["uploaded"]["stored"] == 1

    assert b.sync().json()["received"] == 1
    got = b.recv("orders")
    assert [str(uuid.UUID(m["id"])) for m in got] == [mid], got
    assert b.status()["statuses_queued"] == 1
    assert b.sync().json()["statuses_sent"] == 1

    assert a.sync().json()["received"] == 1
    sysmsgs = a.recv("system")
    assert len(sysmsgs) == 1, sysmsgs
    s = sysmsgs[0]
    assert s["queue"] == "system"
    assert status_props_ok(s["props"], mid, 60), s["props"]
    assert a.recv("system") == []


def test_status_with_python_client_and_foreign_status_ignored(qagw, uid):
    g = qagw(workers=("ml1", "ml2", "ml3"))
    A, B, C = f"A-{uid}", f"B-{uid}", f"C-{uid}"
    m1 = msg(f"{B}\\q", body=b"one")
    m2 = msg(f"{B}\\q", body=b"two")
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A)
        assert [r for _, r in a.upload([m1, m2]).results] == [q.R_STORED, q.R_STORED]

    # C reports on a message that was never delivered to C: ignored
    with q.Client("127.0.0.1", g.port("ml3")) as c:
        c.hello(C)
        c.status([(m1.id, q.S_UNRECEIVABLE)])
        c.ping()

    with q.Client("127.0.0.1", g.port("ml2")) as b:
        b.hello(B)
        d = b.fetch()
        assert sorted(x.id for x in d.msgs) == sorted([m1.id, m2.id])
        b.deliver_ack([x.seq for x in d.msgs])
        b.status([(m1.id, q.S_RECEIVED)])  # only m1 is reported
        b.ping()

    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A)
        sysmsgs = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            d = a.fetch()
            sysmsgs += d.msgs
            if sysmsgs and not d.more:
                break
            time.sleep(0.2)
        assert len(sysmsgs) == 1, [(x.queue, x.propdict) for x in sysmsgs]
        s = sysmsgs[0]
        assert s.queue == "system"
        assert status_props_ok(s.propdict, m1.id, 60), s.propdict
        a.deliver_ack([s.seq])
        a.ping()
        time.sleep(0.5)  # a late, wrongly accepted status would show up now
        d = a.fetch()
        assert d.msgs == [] and d.more == 0, [(x.queue, x.propdict) for x in d.msgs]
