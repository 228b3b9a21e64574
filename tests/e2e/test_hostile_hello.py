"""Issue 16 item 3, hostile HELLOs (docs/design.md "Hostile HELLOs"): a connection counts
against the pending-HELLO caps until WELCOME is written, also while the store checks its
token; a source address that spends its failed-HELLO budget is answered ERROR overloaded
for a back-off without a store lookup (counted on the admin port); and removing an agent's
token (admin API or `qagw agent remove`) ends its live sessions with ERROR auth within a
second."""

from __future__ import annotations

import time

import psycopg2
import pytest

from qagwtest import qasync as q

TOKEN = {"auth": "token"}
BUDGET = 10          # GW_AUTH_BUDGET (gateway/credentials.h)
FIRST_BACKOFF = 2.0  # GW_AUTH_BACKOFF_MIN_S


def frame_within(c: q.Client, timeout: float):
    """The next frame from c (decoded), or None if none came within timeout."""
    try:
        return q.decode(*c.recv_frame(timeout))
    except TimeoutError:
        return None


def warm_up(g, token: str, agent_id: str) -> None:
    """The harness's port probes may still be queued: a HELLO from elsewhere first."""
    with q.Client("127.0.0.1", g.port("ml1"), source="127.0.0.3") as c:
        c.hello(agent_id, token=token)
    time.sleep(0.5)


def test_held_hellos_count_against_the_per_address_cap(qagw_conf, uid):
    CAP = 4
    g = qagw_conf(node_keys=TOKEN, limits={"max_pending_hello_per_ip": CAP,
                                            "hello_timeout": 30})
    port = g.port("ml1")
    warm_up(g, g.provision(f"warm-{uid}"), f"warm-{uid}")
    tok = g.provision(f"other-{uid}")  # before the lock: the CLI would wait for it
    lock = psycopg2.connect(host="127.0.0.1", port=g.store.server.port, dbname=g.store.dbname,
                            user="qagw", connect_timeout=5)
    conns = []
    try:
        with lock.cursor() as cur:  # the credentials lookup now waits
            cur.execute("LOCK TABLE qa_credentials IN ACCESS EXCLUSIVE MODE")
        for i in range(2 * CAP):
            c = q.Client("127.0.0.1", port, source="127.0.0.1")
            conns.append(c)
            c.send(q.Hello(agent_id=f"nobody-{i}-{uid}", token="0" * 64, now_ms=q.now_ms()))
            time.sleep(0.2)  # accepted and its HELLO read before the next connects
        answers = [frame_within(c, 1.0) for c in conns]
        held = [a for a in answers if a is None]
        assert len(held) == CAP, \
            f"{len(held)} of {2 * CAP} connections held by one address (cap {CAP}): {answers}"
        for err in answers:
            assert err is None or (isinstance(err, q.Error) and err.code == q.E_OVERLOADED
                                   and err.retryable == 1), err
        lock.rollback()  # the lookups go on: the held ones are refused auth
        for c, a in zip(conns, answers):
            if a is None:
                err = c.expect_error_and_close(timeout=10)
                assert err.code == q.E_AUTH and err.retryable == 0, err
    finally:
        lock.rollback()
        lock.close()
        for c in conns:
            c.close()
    with q.Client("127.0.0.1", port, source="127.0.0.2") as c:
        c.hello(f"other-{uid}", token=tok)
    m = g.admin.metrics()
    assert m.value("qagw_hello_refused_total", worker="ml1",
                   reason="max_pending_hello_per_ip") == CAP, m
    assert m.value("qagw_hello_auth_failures_total", worker="ml1") == CAP


def test_failed_hello_budget_then_backoff(qagw_conf, uid):
    g = qagw_conf(node_keys=TOKEN)
    port = g.port("ml1")
    A = f"bud-a-{uid}"
    token = g.provision(A)
    warm_up(g, token, A)
    for i in range(BUDGET):
        with q.Client("127.0.0.1", port, source="127.0.0.1") as c:
            c.send(q.Hello(agent_id=A, token="f" * 64, now_ms=q.now_ms()))
            err = c.expect_error_and_close(timeout=10)
            assert err.code == q.E_AUTH and err.retryable == 0, (i, err)
    t_spent = time.monotonic()
    # the budget is spent: even the right token is refused, retryable, without a lookup
    with q.Client("127.0.0.1", port, source="127.0.0.1") as c:
        c.send(q.Hello(agent_id=A, token=token, now_ms=q.now_ms()))
        err = c.expect_error_and_close(timeout=10)
        assert err.code == q.E_OVERLOADED and err.retryable == 1, err
        assert "failed HELLO" in err.text, err
    m = g.admin.metrics()
    assert m.value("qagw_hello_refused_total", worker="ml1", reason="auth_backoff") == 1
    assert m.value("qagw_hello_auth_failures_total", worker="ml1") == BUDGET
    assert m.value("qagw_hello_auth_backoffs_total", worker="ml1") == 1
    # another address is not affected
    with q.Client("127.0.0.1", port, source="127.0.0.2") as c:
        c.hello(A, token=token)
        c.ping()
    # after the back-off the address is served again
    time.sleep(max(0.0, FIRST_BACKOFF + 0.3 - (time.monotonic() - t_spent)))
    with q.Client("127.0.0.1", port, source="127.0.0.1") as c:
        c.hello(A, token=token)
        c.ping()
    assert g.admin.metrics().value("qagw_hello_refused_total", worker="ml1",
                                     reason="auth_backoff") == 1


def live_session(g, agent_id: str, token: str) -> q.Client:
    c = q.Client("127.0.0.1", g.port("ml1"))
    c.hello(agent_id, token=token)
    c.ping()
    return c


def ended_by_auth_within(c: q.Client, t0: float, limit: float) -> float:
    err = c.expect_error_and_close(timeout=5)
    elapsed = time.monotonic() - t0
    assert err.code == q.E_AUTH and err.retryable == 0, err
    assert elapsed <= limit, f"ended {elapsed:.2f} s after the token was removed"
    return elapsed


def test_removing_a_token_ends_live_sessions(qagw_conf, uid):
    g = qagw_conf(node_keys=TOKEN)
    A, B, C = f"rm-a-{uid}", f"rm-b-{uid}", f"rm-c-{uid}"
    ta, tb, tc = g.provision(A), g.provision(B), g.provision(C)
    a, b, c = live_session(g, A, ta), live_session(g, B, tb), live_session(g, C, tc)
    try:
        # the admin API
        status, _, text = g.admin.raw("DELETE", f"/api/agents/{A}/token")
        t0 = time.monotonic()
        assert status == 200, text
        ended_by_auth_within(a, t0, 1.0)
        # the command line, which writes the store only
        p = g.cli("agent", "remove", B)
        t0 = time.monotonic()
        assert p.returncode == 0, p.stderr
        ended_by_auth_within(b, t0, 1.0)
        # the others are untouched
        c.ping()
        # the removed agents cannot come back
        for agent_id, tok in ((A, ta), (B, tb)):
            with q.Client("127.0.0.1", g.port("ml1"), source="127.0.0.4") as x:
                x.send(q.Hello(agent_id=agent_id, token=tok, now_ms=q.now_ms()))
                assert x.expect_error_and_close(timeout=10).code == q.E_AUTH
    finally:
        for x in (a, b, c):
            x.close()
    assert g.admin.metrics().value("qagw_sessions_revoked_total", worker="ml1") == 2
