"""Issue 3, must-show 1-6: Redis-tracked primaries, one live session per agent in the pool,
PUSH only on the primary, Redis faults, and the pool as the admin port shows it
(docs/design.md "Redis: routing state", "Push"; protocol.md PUSH/PUSH_ACK, ERROR superseded; admin.md).

Every test runs two qagw processes on one PostgreSQL database and one Redis key prefix:
n1 with ml1 and ml2, n2 with ml3 (pool.two_nodes). Agent B pins itself to ml3 by sending
ml3's HOST:PORT as its primary, as an agent with an -x list does.
"""

from __future__ import annotations

import json
import socket
import queue
import time

import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.traffic import json_lines
from qagwtest.pool import (agent_json, canonical, expect_no_frame, expect_push, expect_superseded, falsy,
                  fetch_skipping_push, healthz, persist, poll, push_json, send_one, sum_metric,
                  truthy, two_nodes)

# "Push counters are pool-wide and current within 1 s" (admin.md): a little slack on top
COUNTERS_S = 1.5


def test_push_to_pinned_agent_on_primary_of_other_node_then_fetch_and_counters(qagw, uid):
    n1, n2 = two_nodes(qagw)
    A, B = f"A-{uid}", f"B-{uid}"
    b = persist(n2, "ml3", B, primary=n2.address("ml3"))
    try:
        w = b.welcome
        assert (w.server, w.primary, w.on_primary) == ("ml3", "ml3", 1), w
        expect_no_frame(b, 0.3)  # nothing pending: no PUSH after WELCOME

        m = send_one(n1, "ml1", A, f"{B}\\q", body=b"for B, through ml1")
        push = expect_push(b, 5)
        assert push.pending >= 1, push
        b.send(q.PushAck(push.push_id))
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m.id], d
        assert (d.msgs[0].sender, d.msgs[0].queue, d.msgs[0].body) == (A, "q", m.body)
        assert d.more == 0
        b.deliver_ack([d.msgs[0].seq])
        b.ping()  # PUSH_ACK, FETCH and DELIVER_ACK are processed (in order) by now

        # the other node answers with pool-wide figures, current within ~1 s
        def ready(j):
            p = j.get("push") or {}
            return p.get("sent") == 1 and p.get("acked") == 1 and \
                isinstance(p.get("last_latency_ms"), (int, float))
        j = poll(lambda: agent_json(n1, B), ready, COUNTERS_S, "/api/agents/B push sent+acked on n1")
        assert j["agent"] == B and j["primary"] == "ml3" and truthy(j["pinned"]), j
        assert j["primary_as_sent"] == n2.address("ml3"), j
        s = j["session"]
        assert s is not None and s["worker"] == "ml3" and truthy(s["on_primary"]) \
            and truthy(s["persist"]) and isinstance(s["since_ms"], int), j
        assert j["pending"] == 0, j
        p = j["push"]
        assert p["suppressed_off_primary"] == 0 and p["no_session"] == 0, j
        assert 0 <= p["last_latency_ms"] < 5000, j
        assert agent_json(n2, B)["push"]["acked"] == 1  # the same answer on n2

        # /metrics of n2 counts the push under worker ml3
        mt = n2.admin.metrics()
        assert mt.get("qagw_push_total", worker="ml3", result="sent") == 1, mt.text
        assert mt.get("qagw_push_total", worker="ml3", result="acked") == 1, mt.text
        assert mt.value("qagw_push_latency_seconds_count") >= 1, mt.text
        # gauges may follow the worker's 1 s heartbeat
        poll(lambda: n2.admin.metrics(), lambda m: m.get("qagw_sessions", worker="ml3") == 1 and
             m.get("qagw_sessions_on_primary", worker="ml3") == 1, COUNTERS_S,
             "qagw_sessions and qagw_sessions_on_primary {worker=ml3} 1 on n2")
        # routed exactly once in the pool (by whichever worker committed it)
        assert sum_metric([n1, n2], "qagw_push_total", result="routed") == 1
    finally:
        b.close()


def _next_event(lines, event: str, timeout: float, seen: list):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            ev = lines.get(timeout=max(0.01, left))
        except queue.Empty:
            raise AssertionError(f"qaagent run: no {event!r} event within {timeout}s; saw {seen}") from None
        if ev is None:
            raise AssertionError(f"qaagent run ended before a {event!r} event; saw {seen}")
        seen.append(ev)
        if ev.get("event") == event:
            return ev
        if time.monotonic() > deadline:
            raise AssertionError(f"qaagent run: no {event!r} event within {timeout}s; saw {seen}")


def test_qaagent_run_gets_push_on_primary_and_the_message(qagw, agent, uid, tmp_path):
    """The same, with `qaagent ... run --count 1` as B (agent.md `run`): it keeps a PERSIST
    session with ml3 (its first -x entry), answers the PUSH and fetches, then exits 0."""
    n1, n2 = two_nodes(qagw)
    A, B = f"A-{uid}", f"B-{uid}"
    b = agent(B, n2.stream("ml3"), n1.stream("ml1"))
    errlog = tmp_path / "qaagent-run.stderr"
    proc = b.popen("run", "--count", "1", verbose=True, stderr_path=errlog)
    seen: list = []
    try:
        lines = json_lines(proc)
        welcome = _next_event(lines, "welcome", 15, seen)
        for k, want in (("server", "ml3"), ("primary", "ml3"), ("on_primary", 1)):
            if k in welcome:
                assert welcome[k] == want or (want == 1 and welcome[k] is True), welcome
        m = send_one(n1, "ml1", A, f"{B}\\q", body=b"for qaagent run")
        push = _next_event(lines, "push", 5, seen)
        assert isinstance(push.get("push_id"), int) and push.get("pending", 0) >= 1, push
        rec = _next_event(lines, "received", 10, seen)
        assert rec.get("count") == 1, rec
        assert [canonical(i) for i in rec.get("ids", [])] == [str(m.id)], rec
        rc = proc.wait(15)
        assert rc == 0, f"qaagent run --count 1 exited {rc}; events {seen}\n{harness.tail(errlog)}"
    except BaseException:
        print(f"---- qaagent run stderr ----\n{harness.tail(errlog, 60)}")
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    j = poll(lambda: agent_json(n1, B), lambda j: (j.get("push") or {}).get("acked") == 1,
             COUNTERS_S, "/api/agents/B push acked")
    assert j["push"]["sent"] == 1, j
    got = b.recv("q")
    assert [canonical(x["id"]) for x in got] == [str(m.id)], got


def test_no_push_off_primary_counted_suppressed_and_policy_any_pushes(qagw, pg_server, uid,
                                                                    redis_prefix):
    # -- policy primary (default): B on ml2 while its primary ml3 is up
    n1, n2 = two_nodes(qagw)
    A, B = f"A-{uid}", f"B-{uid}"
    b = persist(n1, "ml2", B, primary=n2.address("ml3"))
    try:
        w = b.welcome
        assert (w.server, w.primary, w.on_primary) == ("ml2", "ml3", 0), w
        m = send_one(n1, "ml1", A, f"{B}\\q")
        expect_no_frame(b, 2.0)

        def suppressed(j):
            return j["totals"].get("routed") == 1 and (
                j["totals"].get("suppressed_off_primary", 0) >= 1 or
                (j["workers"].get("ml3") or {}).get("suppressed_off_primary", 0) >= 1)
        pj = poll(lambda: push_json(n1), suppressed, COUNTERS_S, "suppressed_off_primary on /api/push")
        t = pj["totals"]
        assert t["suppressed_off_primary"] == 1 and t["routed"] == 1 and t["sent"] == 0, pj
        aj = agent_json(n2, B)
        assert aj["push"]["suppressed_off_primary"] == 1 and aj["push"]["sent"] == 0, aj
        assert aj["session"]["worker"] == "ml2" and falsy(aj["session"]["on_primary"]), aj

        d = b.fetch()
        assert [x.id for x in d.msgs] == [m.id], d
    finally:
        b.close()

    # -- policy any, a separate pool (own database and Redis prefix): the same case pushes
    st = pg_server.create_database(f"qagw_any_{uid}")
    prefix = redis_prefix.rstrip(":") + "any:"
    p1, p2 = two_nodes(qagw, names=("a1", "a2"), store_=st, redis_prefix_=prefix, policy="any")
    b = persist(p1, "ml2", B, primary=p2.address("ml3"))
    try:
        assert (b.welcome.server, b.welcome.primary, b.welcome.on_primary) == ("ml2", "ml3", 0)
        m = send_one(p1, "ml1", A, f"{B}\\q")
        push = expect_push(b, 5)
        assert push.pending >= 1
        b.send(q.PushAck(push.push_id))
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m.id], d
        pj = poll(lambda: push_json(p2),
                  lambda j: j["totals"].get("routed") == j["totals"].get("acked") == 1, COUNTERS_S,
                  "routed and acked on /api/push (policy any)")
        assert pj["totals"]["sent"] == 1 and pj["totals"]["suppressed_off_primary"] == 0, pj
    finally:
        b.close()


def test_api_and_sql_sent_messages_are_pushed(qagw, store, uid):
    n1, n2 = two_nodes(qagw)
    B = f"B-{uid}"
    b = persist(n2, "ml3", B, primary=n2.address("ml3"))
    try:
        assert b.welcome.on_primary == 1

        # POST /api/messages (through n1's admin port)
        status, body = n1.admin.post("/api/messages", {
            "to": f"{B}\\q", "body": "sent by the API", "from": "billing", "priority": 7,
            "props": {"k": "v"}})
        assert status == 201, (status, body)
        assert canonical(body["id"]) == body["id"], body  # canonical form
        assert isinstance(body["seq"], int), body
        push = expect_push(b, 5)
        assert push.pending >= 1
        b.send(q.PushAck(push.push_id))
        d = b.fetch()
        assert [str(x.id) for x in d.msgs] == [body["id"]], d
        x = d.msgs[0]
        assert (x.seq, x.sender, x.queue, x.priority, x.body) == \
            (body["seq"], "billing", "q", 7, b"sent by the API"), x
        assert x.propdict.get("k") == "v" and x.propdict.get("ias_Originator") == "billing", x
        b.deliver_ack([x.seq])
        b.ping()

        # SQL: the store's send function, which NOTIFYs the gateways
        rows = store.query("SELECT * FROM qa_send(%s, %s)", (f"{B}\\q", "sent by SQL"))
        assert len(rows) == 1, rows
        sql_id, sql_seq = _id_and_seq(rows[0])
        assert sql_id is not None and sql_seq is not None, f"qa_send returned no id and seq: {rows}"
        push = expect_push(b, 5)
        assert push.pending >= 1
        b.send(q.PushAck(push.push_id))
        d = b.fetch()
        assert [str(x.id) for x in d.msgs] == [sql_id], d
        x = d.msgs[0]
        assert (x.sender, x.queue, x.body) == ("server", "q", b"sent by SQL"), x
        assert x.seq == sql_seq, (x.seq, rows)
        b.deliver_ack([x.seq])
        b.ping()
        j = poll(lambda: agent_json(n1, B), lambda j: j["push"]["acked"] == 2, COUNTERS_S,
                 "two pushes acked")
        assert j["push"]["sent"] == 2 and j["push"]["no_session"] == 0, j
        # one push each: a NOTIFY is routed by one node of the pool only
        assert sum_metric([n1, n2], "qagw_push_total", result="routed") == 2
    finally:
        b.close()


def _id_and_seq(row):
    """(canonical id, seq or None) from the row qa_send returned."""
    sql_id, sql_seq = None, None
    for v in row:
        if isinstance(v, bool):
            continue
        if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
            sql_seq = int(v)
            continue
        try:
            sql_id = canonical(v) if sql_id is None else sql_id
        except ValueError:
            pass
    return sql_id, sql_seq


def test_second_hello_on_other_node_supersedes_the_live_session(qagw, uid):
    n1, n2 = two_nodes(qagw)
    B = f"B-{uid}"
    old = persist(n2, "ml3", B, primary=n2.address("ml3"))
    try:
        old.ping()
        new = persist(n1, "ml1", B, primary=n2.address("ml3"))
        try:
            assert (new.welcome.server, new.welcome.on_primary) == ("ml1", 0), new.welcome
            expect_superseded(old)
            new.ping()  # the newer session lives on

            j = poll(lambda: agent_json(n2, B),
                     lambda j: (j.get("session") or {}).get("worker") == "ml1", COUNTERS_S,
                     "/api/agents/B session on ml1")
            assert falsy(j["session"]["on_primary"]), j
            mt = poll(lambda: n2.admin.metrics(), lambda m: m.get("qagw_sessions", worker="ml3") == 0,
                      COUNTERS_S, "qagw_sessions{worker=ml3} 0 on n2")
            assert mt.value("qagw_errors_total", code="superseded") == 1, mt.text
            ws = poll(lambda: n1.admin.workers(),
                      lambda ws: ws["ml3"]["sessions"] == 0 and ws["ml1"]["sessions"] == 1, 2.5,
                      "/api/workers sessions ml3 0, ml1 1")
            assert ws["ml2"]["sessions"] == 0, ws
        finally:
            new.close()
    finally:
        old.close()


def test_redis_down_syncs_go_on_healthz_degraded_push_failed_then_recovers(qagw, private_redis, uid):
    n1, n2 = two_nodes(qagw, redis=private_redis)
    pids = (n1.pid, n2.pid)
    A, B = f"A-{uid}", f"B-{uid}"
    got_ids = set()
    b = persist(n2, "ml3", B, primary=n2.address("ml3"))
    try:
        # baseline: pushes flow
        m0 = send_one(n1, "ml1", A, f"{B}\\q", body=b"before")
        push = expect_push(b, 5)
        b.send(q.PushAck(push.push_id))
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m0.id]
        b.deliver_ack([d.msgs[0].seq])
        b.ping()
        for g in (n1, n2):
            st, body = healthz(g)
            assert (st, body) == (200, {"status": "ok"}), (g.node, st, body)

        private_redis.stop()

        def degraded(r):
            st, body = r
            return st == 503 and isinstance(body, dict) and body.get("status") == "degraded" and \
                any("redis" in json.dumps(x).lower() for x in body.get("reasons", []))
        for g in (n1, n2):
            poll(lambda g=g: healthz(g), degraded, 5, f"/healthz of {g.node} 503 naming redis")
            poll(lambda g=g: g.admin.metrics(), lambda m: m.get("qagw_redis_up") == 0, 5,
                 f"qagw_redis_up 0 on {g.node}")

        # A's upload (a fresh HELLO too) still works
        m1 = send_one(n1, "ml1", A, f"{B}\\q", body=b"during the outage")
        poll(lambda: n1.admin.metrics(), lambda m: m.value("qagw_push_total", result="failed") >= 1,
             3, "qagw_push_total{result=failed} on n1 (the node that committed)")

        # B's fetch still works (its session, or a new one if the gateway closed it)
        try:
            d, _ = fetch_skipping_push(b)
        except (q.Closed, q.ServerError) as e:
            print(f"B's PERSIST session did not survive the Redis outage ({e}); reconnecting")
            b.close()
            b = persist(n2, "ml3", B, primary=n2.address("ml3"))
            d, _ = fetch_skipping_push(b)
        assert [x.id for x in d.msgs] == [m1.id], d
        b.deliver_ack([d.msgs[0].seq])
        b.ping()
        got_ids.add(m1.id)

        # Redis back (same port, empty): pushes flow again within a few seconds
        private_redis.start()
        t0 = time.monotonic()
        sent, pushed, reconnects = [], None, 0
        while pushed is None:
            assert time.monotonic() - t0 < 10, \
                f"no PUSH to B within 10 s of Redis coming back ({len(sent)} messages sent)"
            sent.append(send_one(n1, "ml1", A, f"{B}\\q", body=b"after %d" % len(sent)))
            try:
                f = b.recv(timeout=1.5)
                assert isinstance(f, q.Push), f"expected PUSH, got {f!r}"
                pushed = f
            except TimeoutError:
                continue
            except q.Closed:
                reconnects += 1
                b.close()
                b = persist(n2, "ml3", B, primary=n2.address("ml3"))
        b.send(q.PushAck(pushed.push_id))
        d, _ = fetch_skipping_push(b)
        assert {x.id for x in d.msgs} == {m.id for m in sent}, (d, sent)
        b.deliver_ack([x.seq for x in d.msgs])
        b.ping()
        print(f"push resumed {time.monotonic() - t0:.1f}s after Redis restarted "
              f"({len(sent)} messages, {reconnects} reconnects of B)")

        for g in (n1, n2):
            poll(lambda g=g: healthz(g), lambda r: r == (200, {"status": "ok"}), 10,
                 f"/healthz of {g.node} ok again")
            assert g.admin.metrics().get("qagw_redis_up") == 1
        poll(lambda: n1.admin.workers(),
             lambda ws: all((ws.get(n) or {}).get("state") == "serving" for n in ("ml1", "ml2", "ml3")),
             5, "every worker re-registered")
        j = poll(lambda: agent_json(n1, B), lambda j: (j.get("session") or {}).get("worker") == "ml3",
                 5, "B's session re-announced")
        assert j["primary"] == "ml3" and truthy(j["pinned"]), j
        # no gateway restart
        assert (n1.pid, n2.pid) == pids and n1.alive() and n2.alive() and n1.starts == n2.starts == 1
    finally:
        b.close()


def test_sigkill_of_node_removes_its_worker_from_api_workers_within_5s(qagw, uid):
    n1, n2 = two_nodes(qagw)
    ws = poll(lambda: n1.admin.workers(),
              lambda ws: all((ws.get(n) or {}).get("state") == "serving" for n in ("ml1", "ml2", "ml3")),
              5, "ml1, ml2, ml3 serving on /api/workers")
    for name, gw, node in (("ml1", n1, "n1"), ("ml2", n1, "n1"), ("ml3", n2, "n2")):
        w = ws[name]
        assert w["node"] == node and w["address"] == gw.address(name), w
        for k in ("sessions", "primaries", "load"):
            assert isinstance(w[k], (int, float)), w
    assert set(n2.admin.workers()) == set(ws)  # the same pool seen from n2

    n2.kill()  # SIGKILL
    t0 = time.monotonic()

    def ml3_gone(ws):
        return ws.get("ml3") is None or ws["ml3"].get("state") != "serving"
    ws = poll(lambda: n1.admin.workers(), ml3_gone, 5, "ml3 not serving after SIGKILL of n2")
    print(f"ml3 left the pool {time.monotonic() - t0:.2f}s after SIGKILL")
    if "ml3" in ws:
        assert ws["ml3"]["state"] == "down", ws
        # what the pool knew of it is kept while it is down
        assert ws["ml3"]["node"] == "n2" and ws["ml3"]["address"] == n2.address("ml3"), ws
    assert ws["ml1"]["state"] == "serving" and ws["ml2"]["state"] == "serving", ws
    st, body = healthz(n1)  # n1's own workers, store and Redis are fine
    assert (st, body) == (200, {"status": "ok"}), (st, body)


def test_drain_and_resume_a_worker_of_another_node(qagw, uid):
    """admin.md: POST /api/workers/{name}/drain drains *that* worker, whichever node's
    admin port is asked; the command travels through the pool (Redis)."""
    n1, n2 = two_nodes(qagw)
    poll(lambda: n1.admin.workers(), lambda ws: (ws.get("ml3") or {}).get("state") == "serving",
         5, "ml3 serving")
    # Pinned to ml3: ERROR draining (a router-assigned agent of ml3 would get REASSIGN:
    # test_router.py).
    c = persist(n2, "ml3", f"B-{uid}", primary=n2.address("ml3"))
    st, body = n1.admin.post("/api/workers/ml3/drain", {})
    assert st == 202 and body["node"] == "n2", (st, body)
    err = c.expect_error_and_close(timeout=5)
    assert err.code == 8 and err.retryable == 1, err
    poll(lambda: n1.admin.workers(), lambda ws: ws["ml3"]["state"] == "draining", 3, "ml3 draining")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", n2.port("ml3")), timeout=1).close()
    st, body = n1.admin.post("/api/workers/ml3/resume", {})
    assert st == 202, (st, body)
    poll(lambda: harness.port_open(n2.port("ml3")), bool, 5, "ml3 listening again")
    persist(n2, "ml3", f"C-{uid}").close()
    st, body = n1.admin.post("/api/workers/nosuch/drain", {})
    assert st == 404, (st, body)


def test_push_owed_during_a_redis_outage_is_sent_when_it_returns(qagw, private_redis, uid):
    """Issue 19 (2): B is connected, PERSIST, on its primary; Redis dies; a message to B is
    stored (its push fails: no route); Redis comes back (empty). B gets its PUSH without
    any other message to carry it, within a few seconds, and fetches the message."""
    g = qagw(workers=("ml1",), redis=private_redis)
    B = f"B-{uid}"
    b = persist(g, "ml1", B, primary=g.address("ml1"))
    try:
        assert b.welcome.on_primary
        private_redis.stop()
        poll(lambda: g.admin.metrics(), lambda m: m.get("qagw_redis_up") == 0, 10,
             "qagw_redis_up 0")
        m = send_one(g, "ml1", f"A-{uid}", f"{B}\\q", body=b"owed")
        poll(lambda: g.admin.metrics(), lambda x: x.value("qagw_push_total", result="failed") >= 1,
             3, "the push failed (no route)")
        expect_no_frame(b, 0.5)
        private_redis.start()
        t0 = time.monotonic()
        push = expect_push(b, 5)  # issue 19: within 5 s of Redis's return
        print(f"\n[owed push] PUSH {time.monotonic() - t0:.1f} s after Redis came back")
        b.send(q.PushAck(push.push_id))
        d, _ = fetch_skipping_push(b)
        assert [x.id for x in d.msgs] == [m.id], d
    finally:
        b.close()
