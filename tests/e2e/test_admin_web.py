"""admin.md "Requests from web pages" (issue 16 item 2): with no admin token (the loopback
default), a web page must neither read the admin port through DNS rebinding (a Host that
is not ours: 403) nor change state with a cross-site request (an Origin that is not the
port's own, or Sec-Fetch-Site: cross-site: 403; a body that is not application/json:
415). Each refusal has its legitimate counterpart, which is served."""

from __future__ import annotations

import json
import socket
import subprocess

from qagwtest.harness import QAGW, port_open, require_binary
from qagwtest.pool import poll

EVIL = "https://evil.example"


def node(qagw, **kw):
    """A started node whose admin port is open too: the harness returns once the workers'
    ports accept, and qagw binds them before the admin port (a test whose first request
    goes to the admin port could otherwise be refused under load)."""
    g = qagw(workers=("ml1",), **kw)
    poll(lambda: port_open(g.admin_port), bool, 10, "the admin port")
    return g


def call(gw, method, path, body=None, headers=None):
    """(status, parsed JSON or text) of one request with exactly these extra headers."""
    status, _, text = gw.admin.raw(method, path, body, headers=headers)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def raw_http(gw, request: bytes):
    """(status, parsed JSON body) of a request written byte for byte (urllib always adds
    Host, and a Content-Type to a body)."""
    with socket.create_connection(("127.0.0.1", gw.admin_port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def refused(got, status, error, *words):
    code, body = got
    assert code == status, got
    assert isinstance(body, dict) and body.get("error") == error, got
    assert isinstance(body.get("message"), str), got
    for w in words:
        assert w in body["message"], (w, got)


def provisioned(gw):
    status, body = gw.admin.get("/api/agents")
    assert status == 200, (status, body)
    return {a["agent"] for a in body}


def test_host_must_be_loopback(qagw, uid):
    g = node(qagw)
    port = g.admin_port
    # DNS rebinding: the page's own name, now resolving to 127.0.0.1
    for path in ("/api/workers", "/healthz", "/metrics", "/", "/nosuch"):
        refused(call(g, "GET", path, headers={"Host": f"evil.example:{port}"}),
                403, "host_not_allowed", f"evil.example:{port}", "allowed_hosts")
    for host in ("evil.example", f"localhost.evil.example:{port}", f"0.0.0.0:{port}",
                 f"10.9.8.7:{port}", f"[::2]:{port}"):
        refused(call(g, "GET", "/api/workers", headers={"Host": host}), 403, "host_not_allowed")
    # a refused Host changes nothing either, whatever the Origin
    refused(call(g, "POST", "/api/agents", {"agent": f"rb-{uid}"},
                 headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}),
            403, "host_not_allowed")
    assert f"rb-{uid}" not in provisioned(g)

    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"127.3.2.1:{port}", f"localhost:{port}",
                 "LOCALHOST", f"dash.localhost:{port}", f"[::1]:{port}", "[::1]"):
        status, body = call(g, "GET", "/api/workers", headers={"Host": host})
        assert status == 200 and isinstance(body, list), (host, status, body)
        status, body = call(g, "GET", "/healthz", headers={"Host": host})
        assert status == 200 and body == {"status": "ok"}, (host, status, body)


def test_allowed_hosts_are_served(qagw, uid):
    g = node(qagw, sections={"admin": {"allowed_hosts": "Admin.Example.test, 10.9.8.7"}})
    port = g.admin_port
    for host in (f"admin.example.test:{port}", "ADMIN.EXAMPLE.TEST", f"10.9.8.7:{port}",
                 f"127.0.0.1:{port}"):
        status, body = call(g, "GET", "/api/workers", headers={"Host": host})
        assert status == 200 and isinstance(body, list), (host, status, body)
    for host in (f"evil.example:{port}", f"x.admin.example.test:{port}", f"10.9.8.6:{port}"):
        refused(call(g, "GET", "/api/workers", headers={"Host": host}), 403, "host_not_allowed")
    # behind a proxy that keeps Host (TLS ends at the proxy): the page's origin is https
    status, body = call(g, "POST", "/api/agents", {"agent": f"px-{uid}"},
                        headers={"Host": "admin.example.test",
                                 "Origin": "https://admin.example.test"})
    assert status == 201, (status, body)


def test_no_host_header_is_served(qagw):
    """HTTP/1.0 without Host (no browser sends that): served as before."""
    g = node(qagw)
    # healthy first (the store and Redis may still be connecting, slower under ASan)
    poll(lambda: g.admin.get("/healthz")[0], lambda st: st == 200, 15, "/healthz 200")
    assert raw_http(g, b"GET /healthz HTTP/1.0\r\n\r\n") == (200, {"status": "ok"})
    assert raw_http(g, b"GET /api/workers HTTP/1.0\r\n\r\n")[0] == 200


def test_cross_origin_writes_are_refused(qagw, uid):
    g = node(qagw)
    port = g.admin_port
    A, B = f"A-{uid}", f"B-{uid}"
    msg = {"to": f"{B}\\q", "body": "forged", "from": "alice"}

    # another site's page: Origin, with or without Sec-Fetch-Site
    for hdrs in ({"Origin": EVIL}, {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
                 {"Origin": "null"}, {"Origin": f"http://localhost:{port + 1}"},
                 {"Origin": f"http://127.0.0.1:{port}", "Host": f"localhost:{port}"}):
        refused(call(g, "POST", "/api/agents", {"agent": A}, headers=hdrs),
                403, "cross_origin", "Origin", "own origin")
        refused(call(g, "POST", "/api/messages", msg, headers=hdrs), 403, "cross_origin")
        refused(call(g, "POST", "/api/workers/ml1/drain", headers=hdrs), 403, "cross_origin")
        refused(call(g, "PUT", f"/api/agents/{A}/primary", {"worker": "ml1"}, headers=hdrs),
                403, "cross_origin")
        refused(call(g, "DELETE", f"/api/agents/{A}/token", headers=hdrs), 403, "cross_origin")
    # a browser that sends Sec-Fetch-Site but (for a form) no Origin
    refused(call(g, "POST", "/api/agents", {"agent": A}, headers={"Sec-Fetch-Site": "cross-site"}),
            403, "cross_origin", "Sec-Fetch-Site")
    # GETs with a foreign Origin are answered (the browser keeps the answer from the page:
    # no CORS headers)
    status, _, text = g.admin.raw("GET", "/api/workers", headers={"Origin": EVIL})
    assert status == 200, (status, text)

    # nothing was created, stored or drained
    assert A not in provisioned(g)
    assert g.admin.get(f"/api/agents/{B}")[0] == 404
    workers = g.admin.workers()
    assert workers["ml1"]["state"] == "serving", workers

    # the port's own page (the dashboard's origin), same-origin fetch
    own = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    status, body = call(g, "POST", "/api/agents", {"agent": A}, headers=own)
    assert status == 201 and body["agent"] == A and len(body["token"]) == 64, (status, body)
    status, body = call(g, "POST", "/api/messages", msg,
                        headers={"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"})
    assert status == 201 and "id" in body, (status, body)
    # a script (curl, qagw's CLI, Python): no Origin
    status, body = call(g, "POST", "/api/agents", {"agent": B})
    assert status == 201 and body["agent"] == B, (status, body)
    status, body = call(g, "POST", "/api/messages", dict(msg, body="scripted"),
                        headers={"Sec-Fetch-Site": "none"})
    assert status == 201, (status, body)
    assert {A, B} <= provisioned(g)
    assert g.admin.get(f"/api/agents/{B}")[1]["pending"] == 2


def test_bodies_must_be_json(qagw, uid):
    g = node(qagw)
    A, B = f"A-{uid}", f"B-{uid}"
    body = json.dumps({"to": f"{B}\\q", "body": "forged", "from": "alice"})
    # what an HTML form can send without a CORS preflight
    for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", "application/json; charset=latin1"):
        refused(call(g, "POST", "/api/messages", body, headers={"Content-Type": ctype}),
                415, "unsupported_media_type", "application/json", ctype)
        refused(call(g, "POST", "/api/agents", json.dumps({"agent": A}),
                     headers={"Content-Type": ctype}), 415, "unsupported_media_type")
    # a body without Content-Type; an empty form (Content-Type, no body)
    refused(raw_http(g, b"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(body), body.encode())),
            415, "unsupported_media_type", "none")
    refused(call(g, "POST", "/api/workers/ml1/drain", b"",
                 headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    assert A not in provisioned(g)
    assert g.admin.get(f"/api/agents/{B}")[0] == 404
    assert g.admin.workers()["ml1"]["state"] == "serving"

    for ctype in ("application/json", "application/json; charset=utf-8",
                  "Application/JSON;charset=\"UTF-8\""):
        status, resp = call(g, "POST", "/api/messages", body, headers={"Content-Type": ctype})
        assert status == 201, (ctype, status, resp)
    status, resp = call(g, "POST", "/api/agents", {"agent": A})  # AdminClient's default
    assert status == 201, (status, resp)
    # no body, no Content-Type (curl -X POST): served
    status, resp = call(g, "POST", "/api/workers/ml1/drain")
    assert status == 202, (status, resp)
    status, resp = call(g, "POST", "/api/workers/ml1/resume")
    assert status == 202, (status, resp)


def test_checks_come_before_the_token(qagw, uid):
    """With [admin] token: a foreign Host or Origin is 403 whether or not the token is
    right (it says nothing about the token); a good token with a text/plain body is 415."""
    token = f"tok-{uid}"
    g = node(qagw, admin_token=token)
    port = g.admin_port
    for tok in (None, "wrong", token):
        status, _, text = g.admin.raw("GET", "/api/workers", token=tok,
                                      headers={"Host": f"evil.example:{port}"})
        assert status == 403 and json.loads(text)["error"] == "host_not_allowed", (tok, text)
        status, _, text = g.admin.raw("POST", "/api/agents", {"agent": f"x-{uid}"}, token=tok,
                                      headers={"Origin": EVIL})
        assert status == 403 and json.loads(text)["error"] == "cross_origin", (tok, text)
    status, _, text = g.admin.raw("POST", "/api/agents", json.dumps({"agent": f"x-{uid}"}),
                                  token=None, headers={"Content-Type": "text/plain"})
    assert status == 401, (status, text)
    status, _, text = g.admin.raw("POST", "/api/agents", json.dumps({"agent": f"x-{uid}"}),
                                  headers={"Content-Type": "text/plain"})
    assert status == 415, (status, text)
    status, _, text = g.admin.raw("POST", "/api/agents", {"agent": f"x-{uid}"},
                                  headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 201, (status, text)


def test_bad_allowed_hosts_stops_the_start(qagw):
    require_binary(QAGW)
    g = qagw(workers=("ml1",), start=False,
             sections={"admin": {"allowed_hosts": "ok.example, http://admin.example:8439/"}})
    p = subprocess.run([str(QAGW), "-c", str(g.conf)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode != 0, p
    assert "allowed_hosts" in p.stderr and "http://admin.example:8439/" in p.stderr, p.stderr
    check = subprocess.run([str(QAGW), "-c", str(g.conf), "--check"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert check.returncode == 2, check
    assert "allowed_hosts" in check.stderr and "http://admin.example:8439/" in check.stderr
