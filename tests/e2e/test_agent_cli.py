"""qaagent's command line (agent.md): a STREAM that does not parse is a usage error naming
the bad part (exit 2); sync with no server reachable exits 1 and keeps the messages."""

from harness import free_port


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
