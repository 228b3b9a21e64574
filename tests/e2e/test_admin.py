"""The admin port (admin.md): bearer-token auth, JSON errors and their codes, server-side
sends and message queries, cancel, drain/resume, metrics exposition and the dashboard."""

from __future__ import annotations

import re
import socket
import uuid

from qagwtest import qasync as q
from qagwtest.pool import (HOST, agent_json, canonical, fetch_skipping_push, healthz, mentions, persist,
                  poll, send_one)

CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_json_error(body) -> bool:
    return isinstance(body, dict) and len(body) > 0


def test_bearer_token_required_except_healthz(qagw, uid):
    token = f"tok-{uid}-{uuid.uuid4().hex}"
    g = qagw(workers=("ml1",), admin_token=token)
    adm = g.admin  # carries the token
    for path in ("/api/workers", "/api/push", "/metrics", f"/api/agents/x-{uid}", "/nosuch", "/"):
        for tok in (None, "wrong", token[:-1]):
            status, body = adm.get(path, token=tok)
            assert status == 401, (path, tok, status, body)
            assert is_json_error(body), (path, tok, body)
    status, body = adm.post("/api/messages", {"to": f"B-{uid}\\q", "body": "x"}, token=None)
    assert status == 401, (status, body)
    status, body = adm.post("/api/workers/ml1/drain", token=None)
    assert status == 401, (status, body)
    with q.Client(HOST, g.port("ml1")) as c:  # the refused drain did nothing
        assert c.hello(f"still-{uid}").server == "ml1"

    st, body = healthz(g)  # no token needed
    assert (st, body) == (200, {"status": "ok"}), (st, body)
    assert adm.get("/api/workers")[0] == 200
    assert adm.metrics().get("qagw_store_up") == 1
    status, _, text = adm.raw("GET", "/api/push", token=None,
                              headers={"Authorization": f"Basic {token}"})
    assert status == 401, (status, text)


def test_json_errors_404_405_and_unknown_agent(qagw, uid):
    g = qagw(workers=("ml1",))
    adm = g.admin
    for path in ("/nosuch", "/api/nosuch", "/api/workers/ml1/nosuch", "/api/push/nosuch"):
        status, body = adm.get(path)
        assert status == 404 and is_json_error(body), (path, status, body)
    status, body = adm.get(f"/api/agents/never-{uid}")
    assert status == 404 and is_json_error(body), (status, body)

    for method, path in (("POST", "/healthz"), ("DELETE", "/api/workers"), ("PUT", "/api/push"),
                         ("POST", "/metrics"), ("GET", "/api/workers/ml1/drain"),
                         ("GET", "/api/messages"), ("PUT", "/api/messages/" + str(uuid.uuid4()))):
        status, body = adm.request(method, path, body={} if method in ("POST", "PUT") else None)
        assert status == 405, (method, path, status, body)

    # an agent that was only addressed (never said HELLO) is known
    C = f"C-{uid}"
    status, body = adm.post("/api/messages", {"to": f"{C}\\q", "body": "waits"})
    assert status == 201, (status, body)
    j = agent_json(g, C)
    assert j["agent"] == C and j["session"] is None and j["pending"] == 1, j


def test_post_messages_bad_bodies_are_400_naming_the_field(qagw, uid):
    g = qagw(workers=("ml1",))
    adm = g.admin
    B = f"B-{uid}"
    cases = [
        ({"body": "no to"}, "to"),
        ({"to": f"{B}\\q"}, "body"),
        ({"to": "no-backslash", "body": "x"}, "to"),
        ({"to": 42, "body": "x"}, "to"),
        ({"to": f"{B}\\q", "body": 42}, "body"),
        ({"to": f"{B}\\q", "body": "x", "priority": 12}, "priority"),
        ({"to": f"{B}\\q", "body": "x", "priority": "high"}, "priority"),
        ({"to": f"{B}\\q", "body": "x", "expires_ms": "soon"}, "expires_ms"),
        ({"to": f"{B}\\q", "body": "x", "props": ["k", "v"]}, "props"),
        ({"to": f"{B}\\q", "body": "x", "from": 7}, "from"),
    ]
    for body, field in cases:
        status, resp = adm.post("/api/messages", body)
        assert status == 400, (body, status, resp)
        assert is_json_error(resp) and mentions(resp, field), (body, field, resp)
    for raw in ("not json", "{\"to\":", "[]"):
        status, resp = adm.post("/api/messages", raw)
        assert status == 400 and is_json_error(resp), (raw, status, resp)
    # nothing of it was stored
    assert adm.get(f"/api/agents/{B}")[0] == 404


def test_post_get_delete_message(qagw, uid):
    g = qagw(workers=("ml1",))
    adm = g.admin
    A, B = f"A-{uid}", f"B-{uid}"

    status, sent = adm.post("/api/messages", {"to": f"{B}\\q", "body": "from the API"})
    assert status == 201 and CANONICAL.match(sent["id"]) and isinstance(sent["seq"], int), sent
    mid = uuid.UUID(sent["id"])
    for form in (str(mid), mid.hex):
        status, m = adm.get(f"/api/messages/{form}")
        assert status == 200, (form, status, m)
        assert m["id"] == str(mid) and m["from"] == "server" and m["to"] == f"{B}\\q", m
        assert m["status"] == 1 and m["delivery_count"] == 0 and isinstance(m["status_ms"], int), m
    status, body = adm.get(f"/api/messages/{uuid.uuid4()}")
    assert status == 404 and is_json_error(body), (status, body)
    status, body = adm.get(f"/api/messages/{uuid.uuid4().hex}")
    assert status == 404 and is_json_error(body), (status, body)

    # cancel a message A uploaded (32-hex form): 200, status 40, never delivered, A told
    m1 = send_one(g, "ml1", A, f"{B}\\q", body=b"to be canceled")
    status, body = adm.delete(f"/api/messages/{m1.id.hex}")
    assert status == 200, (status, body)
    status, m = adm.get(f"/api/messages/{m1.id}")
    assert status == 200 and m["status"] == 40 and m["from"] == A, m
    status, body = adm.delete(f"/api/messages/{m1.id}")
    assert status == 409 and is_json_error(body), (status, body)

    with q.Client(HOST, g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()
        assert [x.id for x in d.msgs] == [mid], d  # the API message only, not the canceled one
        b.deliver_ack([d.msgs[0].seq])
        b.ping()
    status, m = adm.get(f"/api/messages/{mid}")
    assert m["status"] == 20 and m["delivery_count"] == 1, m
    status, body = adm.delete(f"/api/messages/{mid}")  # already acknowledged: final
    assert status == 409, (status, body)

    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(A)
        sysmsgs = poll(lambda: a.fetch().msgs, lambda ms: len(ms) > 0, 3, "A's system message")
        props = sysmsgs[0].propdict
        assert sysmsgs[0].queue == "system" and props.get("ias_Status") == "40" and \
            props.get("ias_StatusMessageId") == q.id_hex(m1.id), props


def _refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def test_drain_and_resume_worker(qagw, uid):
    g = qagw(workers=("ml1", "ml2"))
    adm = g.admin
    B, C = f"B-{uid}", f"C-{uid}"
    # B names its own primary (ml1): it gets ERROR draining, not REASSIGN
    b = persist(g, "ml1", B, primary=g.address("ml1"))
    try:
        b.ping()
        status, body = adm.post("/api/workers/ml1/drain")
        assert status == 202, (status, body)
        err = b.expect_error_and_close(timeout=8)
        assert (err.code, err.retryable) == (q.E_DRAINING, 1), err
    finally:
        b.close()
    poll(lambda: _refused(g.port("ml1")), bool, 3, "connects to ml1 refused")
    poll(lambda: g.admin.workers(), lambda ws: ws["ml1"]["state"] == "draining", 2.5,
         "ml1 draining on /api/workers")
    assert g.admin.workers()["ml2"]["state"] == "serving"
    st, body = healthz(g)
    assert st == 503 and body.get("status") == "degraded" and body.get("reasons"), (st, body)
    with q.Client(HOST, g.port("ml2")) as c:  # the other worker serves on
        c.hello(C)
        c.ping()

    status, body = adm.post("/api/workers/ml1/resume")
    assert status == 202, (status, body)

    def accepts():
        with q.Client(HOST, g.port("ml1"), timeout=3) as c2:
            return c2.hello(f"{C}-2").server == "ml1"
    poll(accepts, bool, 3, "ml1 accepting again")
    poll(lambda: g.admin.workers(), lambda ws: ws["ml1"]["state"] == "serving", 2.5,
         "ml1 serving on /api/workers")
    poll(lambda: healthz(g), lambda r: r == (200, {"status": "ok"}), 3, "/healthz ok again")

    for action in ("drain", "resume"):
        status, body = adm.post(f"/api/workers/nosuch/{action}")
        assert status == 404 and is_json_error(body), (action, status, body)


def test_metrics_exposition_and_dashboard(qagw, uid):
    g = qagw(workers=("ml1",))
    with q.Client(HOST, g.port("ml1")) as c:
        c.hello(f"M-{uid}")
        c.ping()
        status, headers, text = g.admin.raw("GET", "/metrics")
        assert status == 200 and "text/plain" in headers.get("Content-Type", ""), (status, headers)
        mt = g.admin.metrics()
        assert mt.get("qagw_store_up") == 1 and mt.get("qagw_redis_up") == 1, text
        poll(lambda: g.admin.metrics(), lambda m: m.get("qagw_sessions", worker="ml1") == 1, 1.5,
             "qagw_sessions{worker=ml1} 1")  # gauges may follow the 1 s heartbeat
        for name, kind in (("qagw_push_total", "counter"), ("qagw_push_latency_seconds", "histogram"),
                           ("qagw_store_commit_seconds", "histogram"), ("qagw_sessions", "gauge")):
            assert re.search(rf"^# TYPE {name} {kind}$", text, re.M), (name, kind)
        # each metric family declared once
        types = re.findall(r"^# TYPE (\S+) ", text, re.M)
        assert len(types) == len(set(types)), types

    status, headers, html = g.admin.raw("GET", "/")
    assert status == 200 and "text/html" in headers.get("Content-Type", ""), (status, headers)
    assert "<html" in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I), \
        "the dashboard loads outside assets"

    # canonical ids are accepted only in the two documented forms
    for bad in ("nota-uuid", "1234"):
        status, body = g.admin.get(f"/api/messages/{bad}")
        assert status in (400, 404) and is_json_error(body), (bad, status, body)


def test_admin_api_message_is_pushed_and_fetch_counts(qagw, uid):
    """POST /api/messages on one worker's node pushes to a pinned agent on the same node, and
    GET /api/agents shows the pending count go to 0 after the acknowledgement."""
    g = qagw(workers=("ml1",))
    B = f"B-{uid}"
    b = persist(g, "ml1", B, primary=g.address("ml1"))
    try:
        status, sent = g.admin.post("/api/messages", {"to": f"{B}\\q", "body": "x"})
        assert status == 201, (status, sent)
        push = b.expect(q.Push, timeout=5)
        b.send(q.PushAck(push.push_id))
        d, _ = fetch_skipping_push(b)
        assert [str(x.id) for x in d.msgs] == [canonical(sent["id"])]
        assert agent_json(g, B)["pending"] == 1
        b.deliver_ack([d.msgs[0].seq])
        b.ping()
        poll(lambda: agent_json(g, B), lambda j: j["pending"] == 0, 1.5, "pending 0 after the ack")
    finally:
        b.close()
