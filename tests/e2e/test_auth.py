"""Issue 5, agent authentication (docs/operations.md "Agent credentials"): with `[node] auth = token`
each agent proves itself with a 256-bit token that the pool generated (`qagw agent add`, or
POST /api/agents) and keeps only as its SHA-256. A wrong token and an unknown agent get
the same ERROR auth; an authenticated agent still cannot acknowledge or report on another
agent's messages, whatever seqs or ids it sends (checked in the store); `auth = off` is
refused unless every listener is on loopback."""

from __future__ import annotations

import re
import subprocess

from qagwtest import qasync as q
from qagwtest.harness import QAGW, free_port, msg, require_binary, wait_until

TOKEN = {"auth": "token"}
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def hello_error(port: int, agent_id: str, token: str) -> q.Error:
    """HELLO as agent_id with token; the answer must be ERROR, then the close."""
    with q.Client("127.0.0.1", port) as c:
        c.send(q.Hello(agent_id=agent_id, token=token, now_ms=q.now_ms()))
        return c.expect_error_and_close(timeout=10)


def test_agent_add_list_remove_on_the_command_line(qagw_conf, uid):
    g = qagw_conf(node_keys=TOKEN, start=False)  # the CLI needs only the store
    A, B = f"cli-a-{uid}", f"cli-b-{uid}"

    p = g.cli("agent", "add", A)
    assert p.returncode == 0, (p.stdout, p.stderr)
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and HEX64.match(lines[0]), \
        f"`agent add` must print the token (64 lowercase hex) as its only stdout line: {p.stdout!r}"
    token_a = lines[0]
    token_b = g.provision(B)
    assert HEX64.match(token_b) and token_b != token_a

    again = g.cli("agent", "add", A)
    assert again.returncode != 0, f"adding an existing agent succeeded: {again.stdout!r}"
    assert not HEX64.search(again.stdout), "a second token was printed for an existing agent"

    listed = g.cli("agent", "list")
    assert listed.returncode == 0, listed.stderr
    ids = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert A in ids and B in ids, listed.stdout
    assert token_a not in listed.stdout and token_b not in listed.stdout, "list shows tokens"

    rm = g.cli("agent", "remove", A)
    assert rm.returncode == 0, (rm.stdout, rm.stderr)
    ids = [line.split()[0] for line in g.cli("agent", "list").stdout.splitlines() if line.strip()]
    assert A not in ids and B in ids, ids

    # the token is stored only as its SHA-256: the plain token is nowhere in the store
    rows = g.store.query("SELECT agent_id, encode(token_sha256, 'hex') FROM qa_credentials")
    assert all(token_b not in str(r) for r in rows), rows
    import hashlib
    assert (B, hashlib.sha256(token_b.encode()).hexdigest()) in [(r[0], r[1]) for r in rows], rows


def test_hello_right_token_wrong_token_unknown_agent(qagw_conf, uid):
    g = qagw_conf(node_keys=TOKEN)
    port = g.port("ml1")
    A = f"auth-a-{uid}"
    token = g.provision(A)

    with q.Client("127.0.0.1", port) as c:
        w = c.hello(A, token=token)
        assert w.server == "ml1"
        c.ping()
        c.bye()

    wrong = hello_error(port, A, "0" * 64)
    unknown = hello_error(port, f"nobody-{uid}", token)
    empty = hello_error(port, A, "")
    for what, err in (("wrong token", wrong), ("unknown agent", unknown), ("empty token", empty)):
        assert err.code == q.E_AUTH and err.retryable == 0, f"{what}: {err}"
    # an outsider cannot tell "no such agent" from "wrong token"
    assert wrong.text == unknown.text == empty.text, (wrong.text, unknown.text, empty.text)

    # the token never appears in the log
    assert token not in g.log_text()

    # auth failures leave the worker serving
    with q.Client("127.0.0.1", port) as c:
        c.hello(A, token=token)
        c.ping()


def test_admin_api_provisions_and_revokes(qagw_conf, uid):
    g = qagw_conf(node_keys=TOKEN)
    port = g.port("ml1")
    A = f"api-a-{uid}"
    status, body = g.admin.post("/api/agents", {"agent": A})
    assert status == 201, (status, body)
    assert body.get("agent") == A and HEX64.match(body.get("token", "")), body
    token = body["token"]

    status, body2 = g.admin.post("/api/agents", {"agent": A})
    assert status >= 400 and "token" not in (body2 if isinstance(body2, dict) else {}), (status, body2)

    with q.Client("127.0.0.1", port) as c:
        c.hello(A, token=token)
        c.ping()

    status, body = g.admin.delete(f"/api/agents/{A}/token")
    assert status == 200, (status, body)
    err = hello_error(port, A, token)
    assert err.code == q.E_AUTH and err.retryable == 0, err
    assert token not in g.log_text()


def test_other_agents_seqs_and_ids_are_ignored_with_tokens(qagw_conf, store, uid):
    """Must-show 2: C (authenticated) names B's seq in DELIVER_ACK and B's message id in
    STATUS; B's message is untouched in the store and still B's to fetch."""
    g = qagw_conf(node_keys=TOKEN)
    port = g.port("ml1")
    A, B, C = f"own-a-{uid}", f"own-b-{uid}", f"own-c-{uid}"
    tok = {x: g.provision(x) for x in (A, B, C)}

    m = msg(f"{B}\\q")
    with q.Client("127.0.0.1", port) as a:
        a.hello(A, token=tok[A])
        ack = a.upload([m])
        assert [r for _, r in ack.results] == [q.R_STORED], ack
    with q.Client("127.0.0.1", port) as b:
        b.hello(B, token=tok[B])
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m.id]
        seq = d.msgs[0].seq
    # B's session ended holding the message: the store counts that delivery as the session
    # ends (docs/design.md "Delivery": holds live in the worker, counted lazily), so wait
    # for it rather than read it the instant the socket closes.
    def counted():
        rows = store.query("SELECT status, delivery_count FROM qa_messages WHERE seq = %s", (seq,))
        return rows if [tuple(int(v) for v in r) for r in rows] == [(1, 1)] else None
    before = wait_until(counted, 5, interval=0.05, what="B's delivery counted")
    assert [tuple(int(v) for v in r) for r in before] == [(1, 1)], before

    with q.Client("127.0.0.1", port) as c:
        c.hello(C, token=tok[C])
        assert c.fetch().msgs == []                      # nothing of B's is fetched by C
        c.deliver_ack([seq, seq - 1, seq + 1, 2**63 - 1])
        c.status([(m.id, q.S_RECEIVED)])
        c.status([(m.id, q.S_UNRECEIVABLE)])
        c.ping()                                         # both committed (in order) by now

    after = store.query("SELECT status, delivery_count, held_by IS NULL FROM qa_messages "
                        "WHERE seq = %s", (seq,))
    assert [(int(r[0]), int(r[1])) for r in after] == [(1, 1)], \
        f"another agent's DELIVER_ACK/STATUS changed B's message: {after}"
    # no status message went to the sender on C's say-so
    assert int(store.scalar("SELECT count(*) FROM qa_messages WHERE recipient = %s",
                            (A,))) == 0

    with q.Client("127.0.0.1", port) as b:
        b.hello(B, token=tok[B])
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m.id] and d.msgs[0].propdict["ias_DeliveryCount"] == "2"
        b.deliver_ack([d.msgs[0].seq])
        b.ping()
    assert int(store.scalar("SELECT status FROM qa_messages WHERE seq = %s", (seq,))) != 1


def test_auth_off_refused_on_a_non_loopback_listener(tmp_path, store):
    require_binary(QAGW)
    conf = tmp_path / "open.conf"
    conf.write_text("\n".join([
        "[node]", "name = n1", "auth = off",
        "[worker ml1]", f"listen = 0.0.0.0:{free_port()}",
        "[store]", f"conninfo = {store.conninfo}", ""]))
    p = subprocess.run([str(QAGW), "-c", str(conf), "--check"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode == 2, f"auth = off on 0.0.0.0: rc {p.returncode} (2: invalid configuration):\n{out}"
    assert "auth" in out and "loopback" in out.lower(), out

    # the same listener with auth = token (the default) is fine with TLS, or with
    # allow_plaintext_tokens = on (tests/e2e/test_hostile_config.py covers the refusal)
    conf.write_text(conf.read_text().replace("auth = off\n", "allow_plaintext_tokens = on\n"))
    p = subprocess.run([str(QAGW), "-c", str(conf), "--check"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
