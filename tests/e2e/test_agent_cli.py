"""qaagent's command line (agent.md): a STREAM that does not parse is a usage error naming
the bad part (exit 2); sync with no server reachable exits 1 and keeps the messages."""

from qagwtest.harness import free_port


def test_bad_stream_is_usage_error_naming_the_part(agent, uid):
    for stream, bad in [("tcpip(host=127.0.0.1;prot=2439)", "prot"),
                        ("tcpip(host=127.0.0.1;port=notaport)", "notaport"),
                        ("carrier-pigeon(host=x)", "carrier-pigeon")]:
        a = agent(f"U-{uid}", stream)
        r = a.run("status")
        assert r.rc == 2, f"{stream}: {r!r}"
        assert bad in r.stderr, f"{stream}: usage error should name '{bad}': {r!r}"


def test_sync_with_no_server_exits_1_and_keeps_outbox(agent, uid):
    a = agent(f"N-{uid}", f"tcpip(host=127.0.0.1;port={free_port()})",
              f"tcpip(host=127.0.0.1;port={free_port()})")
    mid = a.send(f"B-{uid}\\q", "waiting")
    r = a.sync(expect_rc=1, timeout=30)
    st = a.status()
    assert st["outgoing"] == 1, (st, r)
    assert mid


def test_send_with_a_chosen_id_is_idempotent(qagw, agent, uid):
    """Issue 19: `send --id UUID` run again (the application was killed before it read
    the id) queues nothing twice: duplicate on stderr, the same id printed, exit 0; after
    the sync the id is in the sent log and a third run is a duplicate too. One message
    reaches the recipient."""
    import uuid as uuidlib
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    a = agent(A, g.stream("ml1"))
    mid = str(uuidlib.uuid4())
    first = a.run("send", f"{B}\\q", "once", "--id", mid)
    assert first.rc == 0 and first.stdout.strip() == mid and "duplicate" not in first.stderr, \
        repr(first)
    again = a.run("send", f"{B}\\q", "once", "--id", mid.upper())
    assert again.rc == 0 and again.stdout.strip() == mid and "duplicate" in again.stderr, \
        repr(again)
    assert a.status()["outgoing"] == 1
    assert a.sync().json()["uploaded"]["stored"] == 1
    third = a.run("send", f"{B}\\q", "once", "--id", mid)
    assert third.rc == 0 and third.stdout.strip() == mid and "duplicate" in third.stderr, \
        repr(third)
    assert a.status()["outgoing"] == 0
    b = agent(B, g.stream("ml1"))
    assert b.sync().json()["received"] == 1
    assert [m["id"] for m in b.recv("q")] == [mid]
    bad = a.run("send", f"{B}\\q", "x", "--id", "not-a-uuid")
    assert bad.rc == 2 and "--id" in bad.stderr, repr(bad)
