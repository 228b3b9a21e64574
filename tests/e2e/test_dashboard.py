"""The admin port's dashboard (admin.md "Dashboard", docs/admin.md "GET / (dashboard)") in a
real browser: Debian's Chromium driven through playwright-core by tests/browser/dashboard.mjs.

A pool of two nodes (n1: ml1, ml2; n2: ml3) gets push traffic (pushes acked by a pinned
agent on its primary, one push suppressed because its agent is off its primary), then ml3 is
drained so that its pinned agents are listed as off their primary. Once the figures are
steady, the page on n1 is loaded at a desktop and a phone viewport; what it shows must equal
/api/push, /api/workers and /api/agents-off-primary read around it, it must fetch nothing
outside the admin port and log no JS error, and its layout must reflow on the phone.
Screenshots go to tests/browser/output/.

Needs /usr/bin/chromium, node and tests/browser/node_modules/playwright-core
(`make browser-deps`); without them the tests are skipped, saying what is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.pool import expect_push, fetch_skipping_push, persist, poll, push_json, send_one, two_nodes

BROWSER_DIR = harness.REPO / "tests" / "browser"
SCRIPT = BROWSER_DIR / "dashboard.mjs"
OUTPUT = BROWSER_DIR / "output"
CHROMIUM = Path("/usr/bin/chromium")
PHONE = ("390x844", "--mobile")
DESKTOP = ("1280x900",)
RESULTS = ("routed", "coalesced", "sent", "acked", "suppressed_off_primary", "no_session", "failed")
N_ACKED = 4  # pushes acked by B on its primary


def need_browser() -> str:
    """node's path; skips the test (saying what is missing and how to get it) otherwise."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    node = shutil.which("node")
    if node is None:
        missing.append("node (apt-get install nodejs npm)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        missing.append("tests/browser/node_modules/playwright-core (make browser-deps, "
                       "i.e. npm ci in tests/browser)")
    if missing:
        pytest.skip("dashboard browser test: missing " + "; ".join(missing))
    return node


def browse(node: str, url: str, viewport=DESKTOP, *args: str, timeout: float = 90) -> dict:
    """Runs dashboard.mjs; returns its JSON (what the page shows, requests, errors)."""
    argv = [node, str(SCRIPT), "--url", url, "--viewport", *viewport, *args]
    p = subprocess.run(argv, cwd=BROWSER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-4000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def js_num(v, digits: int = 2) -> str:
    """A figure as the page writes it (num() in the page's script)."""
    if v is None:
        return "\u2013"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(int(v)) if float(v).is_integer() else f"{v:.{digits}f}"


def screenshot_path(name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT / f"dashboard-{name}.png"


def steady(get, what: str, timeout: float = 10.0):
    """Polls get() until two reads 1.2 s apart are equal; returns the value."""
    last = [None]

    def same(v):
        ok = v == last[0]
        last[0] = v
        return ok
    return poll(get, same, timeout, f"{what} to stay the same", interval=1.2)


def check_common(page: dict, port: int) -> None:
    """Nothing outside the admin port, no JS error, no token in URLs of the API calls (it
    goes in the Authorization header). The page's Content-Security-Policy keeps the browser
    from even trying another origin (such a request then never shows among the requests,
    only as a console error, which the caller checks)."""
    csp = page.get("csp") or ""
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp, csp
    origin = f"http://127.0.0.1:{port}/"
    outside = [r["url"] for r in page["requests"] if not r["url"].startswith(origin)]
    assert not outside, f"the page fetched outside the admin port: {outside}"
    assert not page["pageErrors"], f"JS errors: {page['pageErrors']}"
    api = [r["url"] for r in page["requests"] if r["url"].startswith(origin + "api/")]
    assert api, f"the page called no API: {page['requests']}"
    assert not [u for u in api if "token" in u], api


def test_dashboard_shows_the_pool_on_desktop_and_phone(qagw, uid):
    node = need_browser()
    n1, n2 = two_nodes(qagw)
    A, B, C = f"A-{uid}", f"B-{uid}", f"C-{uid}"

    # -- traffic: N_ACKED pushes to B on its primary ml3, acked; one to C, off its primary
    b = persist(n2, "ml3", B, primary=n2.address("ml3"))
    c = persist(n1, "ml2", C, primary=n2.address("ml3"))
    try:
        for _ in range(N_ACKED):
            send_one(n1, "ml1", A, f"{B}\\q")
            push = expect_push(b, 5)
            b.send(q.PushAck(push.push_id))
            d, _ = fetch_skipping_push(b)
            b.deliver_ack([m.seq for m in d.msgs])
            b.ping()
        assert c.welcome.on_primary == 0, c.welcome
        send_one(n1, "ml1", A, f"{C}\\q")
        poll(lambda: push_json(n1),
             lambda j: j["totals"]["acked"] == N_ACKED and j["totals"]["suppressed_off_primary"] == 1,
             5, "acked and suppressed_off_primary on /api/push")
    finally:
        b.close()
        c.close()

    # -- ml3 drains: B and C (pinned to ml3) are off their primary
    status, body = n1.admin.post("/api/workers/ml3/drain")
    assert status == 202, (status, body)
    poll(lambda: n1.admin.get_ok("/api/agents-off-primary"),
         lambda j: {a["agent"] for a in j["agents"]} >= {B, C}, 10, "B and C off their primary")

    def snapshot():
        ws = n1.admin.get_ok("/api/workers")
        return {"push": push_json(n1)["totals"],
                "workers": [(w["name"], w["state"], w["primaries"]) for w in ws],
                "off": n1.admin.get_ok("/api/agents-off-primary")["agents"]}
    before = steady(snapshot, "/api/push, /api/workers and /api/agents-off-primary")

    url = f"http://127.0.0.1:{n1.admin_port}/"
    desk_png, phone_png = screenshot_path("desktop"), screenshot_path("phone")
    desk = browse(node, url, DESKTOP, "--polls", "3", "--screenshot", str(desk_png))
    phone = browse(node, url, PHONE, "--screenshot", str(phone_png))
    push = push_json(n1)
    workers = n1.admin.get_ok("/api/workers")
    off = n1.admin.get_ok("/api/agents-off-primary")
    quota = n1.admin.get_ok("/api/agents-near-quota?limit=10")
    assert snapshot() == before, "the figures moved while the browser read them"
    print(f"\nscreenshots: {desk_png} {phone_png}")

    for page in (desk, phone):
        check_common(page, n1.admin_port)
        f = page["figures"]
        assert page["state"] == "ok" and not page["banner"]["visible"], page["banner"]
        assert f["refreshed"] not in ("", "never"), f["refreshed"]
        # push totals and latency, pool-wide
        for k in RESULTS:
            assert f[f"totals.{k}"] == js_num(push["totals"][k]), (k, f[f"totals.{k}"], push["totals"])
        assert f["totals.acked"] == str(N_ACKED) and f["totals.suppressed_off_primary"] == "1", f
        for k in ("p50", "p90", "p99", "max"):
            assert f[f"totals.latency_ms.{k}"] == js_num(push["totals"]["latency_ms"][k], 1), \
                (k, f[f"totals.latency_ms.{k}"], push["totals"]["latency_ms"])
        # per worker
        for name, s in push["workers"].items():
            for k in ("sent", "acked", "suppressed_off_primary", "failed"):
                assert f[f"push.{name}.{k}"] == js_num(s[k]), (name, k, f, s)
        # the traffic stopped: the page's own rates are zero
        assert f["rate.acked"] == "0.0/s" and f["rate.sent"] == "0.0/s", f
        # workers: names, states, primaries
        assert page["workerRows"] == [w["name"] for w in workers] == ["ml1", "ml2", "ml3"], page["workerRows"]
        for w in workers:
            assert f[f"workers.{w['name']}.state"] == w["state"], (w, f)
            assert f[f"workers.{w['name']}.node"] == w["node"], (w, f)
            assert f[f"workers.{w['name']}.primaries"] == js_num(w["primaries"]), (w, f)
        assert f["workers.ml3.state"] == "draining", f
        # agents off their primary
        assert f["offprimary.count"] == str(len(off["agents"])) == "2", (f["offprimary.count"], off)
        for a in off["agents"]:
            assert f[f"offprimary.agents.{a['agent']}"] == a["agent"], (a, f)
        assert f["offprimary.workers.ml3.state"] == "draining", f
        # nearest their quota: C's suppressed message is still pending
        assert f["quota.max"] == f"max_pending {quota['max_pending']}", f
        assert [a for a in quota["agents"] if a["agent"] == C] == \
            [{"agent": C, "pending": 1, "used": 1 / quota["max_pending"]}], quota
        for a in quota["agents"]:
            assert f[f"quota.agents.{a['agent']}"] == a["agent"], (a, f)
            assert f[f"quota.agents.{a['agent']}.pending"] == js_num(a["pending"]), (a, f)
        # recent push events: one row per event (at most 50) plus the heading
        assert page["eventRows"] == min(50, len(push["events"])) + 1 > 1, (page["eventRows"], push["events"])
        assert f["events.count"].startswith(f"{len(push['events'])} "), f["events.count"]
        assert page["chartLines"] >= 1, "the chart drew nothing"
        assert page["consoleErrors"] == [], page["consoleErrors"]

    assert desk["polls"] >= 3 and int(desk["figures"]["chart.points"]) >= 2, desk["figures"]

    # -- layout: two columns on the desktop, one on the phone, no page-wide horizontal scroll
    ds, ps = desk["layout"]["sections"], phone["layout"]["sections"]
    assert ds["sec-push"]["y"] == ds["sec-chart"]["y"] and ds["sec-push"]["x"] < ds["sec-chart"]["x"], ds
    assert len({s["x"] for s in ps.values()}) == 1, f"phone: not one column: {ps}"
    pw = phone["layout"]["innerWidth"]
    assert pw == 390, phone["layout"]
    assert phone["layout"]["docScrollWidth"] <= pw, f"phone: the page overflows: {phone['layout']}"
    assert all(s["width"] <= pw for s in ps.values()), ps
    wide = [s for s in phone["layout"]["scrollers"] if s["scrollWidth"] > s["clientWidth"]]
    assert wide and all(s["overflowX"] == "auto" for s in wide), phone["layout"]["scrollers"]
    for png in (desk_png, phone_png):
        assert png.stat().st_size > 10000, png


def test_dashboard_with_admin_token(qagw, uid):
    node = need_browser()
    token = f"tok-{uid}-{uuid.uuid4().hex}"
    g = qagw(workers=("ml1", "ml2"), admin_token=token)
    B = f"B-{uid}"
    b = persist(g, "ml1", B, primary=g.address("ml1"))
    try:
        send_one(g, "ml2", f"A-{uid}", f"{B}\\q")
        push = expect_push(b, 5)
        b.send(q.PushAck(push.push_id))
        b.ping()
    finally:
        b.close()
    poll(lambda: push_json(g), lambda j: j["totals"]["acked"] == 1, 5, "acked 1 on /api/push")
    base = f"http://127.0.0.1:{g.admin_port}/"

    # no token at all: GET / itself is refused (admin.c: the page needs the token too)
    page = browse(node, base, DESKTOP, "--wait", "load")
    assert page["status"] == 401 and "unauthorized" in page["bodyText"], page

    # with the token: figures, no banner, the token kept in the tab's sessionStorage
    png = screenshot_path("token")
    page = browse(node, f"{base}?token={token}", DESKTOP, "--screenshot", str(png))
    print(f"\nscreenshot: {png}")
    check_common(page, g.admin_port)
    assert page["state"] == "ok" and not page["banner"]["visible"], page["banner"]
    assert page["figures"]["totals.acked"] == "1" == js_num(push_json(g)["totals"]["acked"]), page["figures"]
    assert page["workerRows"] == ["ml1", "ml2"], page["workerRows"]
    assert page["storedToken"] == token and page["tokenField"] == token

    # the token forgotten (field emptied): every API call is 401, the banner says so
    png = screenshot_path("no-token")
    page = browse(node, f"{base}?token={token}", PHONE, "--set-token", "", "--wait", "error",
                  "--screenshot", str(png))
    print(f"screenshot: {png}")
    assert page["state"] == "error" and page["banner"]["visible"], page["banner"]
    # three calls, four when the 30 s quota list is due
    assert page["banner"]["status"] in ("401,401,401", "401,401,401,401"), page["banner"]
    assert "HTTP 401" in page["banner"]["text"] and "needs its token" in page["banner"]["text"], page["banner"]
    assert page["storedToken"] is None, page
    assert not page["pageErrors"], page["pageErrors"]

    # a wrong token typed in: the banner says it is wrong
    page = browse(node, f"{base}?token={token}", DESKTOP, "--set-token", "wrong-" + token,
                  "--wait", "error")
    assert page["banner"]["visible"] and page["banner"]["status"] in ("401,401,401", "401,401,401,401"), page["banner"]
    assert "token is wrong" in page["banner"]["text"], page["banner"]
