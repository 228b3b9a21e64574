"""Issue 19, what an operator looks for: the store connections told apart in
pg_stat_activity (application_name), and the metrics a dashboard needs (build, the
store's backlog, the lifecycle job's runs)."""

import re
import time

from qagwtest.harness import REPO, msg
from qagwtest.pool import poll, upload

VERSION_RE = re.compile(r'^qagw_build_info\{version="([^"]+)"\} 1$', re.M)


def app_names(store):
    out = store.server.admin_sql(
        "select application_name from pg_stat_activity "
        f"where datname = '{store.dbname}' and application_name like 'qagw/%' order by 1")
    return [line for line in out.splitlines() if line]


def test_every_store_connection_says_who_it_is(qagw, store):
    g = qagw(workers=("ml1", "ml2", "ml3"), node="n7")
    want = sorted([f"qagw/n7/{w}/{i}" for w in ("ml1", "ml2", "ml3") for i in range(4)] +
                  [f"qagw/n7/{w}/hello" for w in ("ml1", "ml2", "ml3")] +
                  ["qagw/n7/node", "qagw/n7/ml1/retention"])
    got = poll(lambda: app_names(store), lambda names: names == want, 10,
               "every store connection named qagw/NODE/...")
    # docs/operations.md "Store connections" gives the count for a node of 3 workers
    print(f"\n[connections] {len(got)}: {got}")
    doc = (REPO / "docs" / "operations.md").read_text()
    m = re.search(r"a node of 3 workers uses (\d+)", doc)
    assert m and int(m.group(1)) == len(got), (m and m.group(0), len(got))


def test_build_backlog_and_lifecycle_metrics(qagw, store):
    g = qagw(workers=("ml1",), sections={"store": {"keep_days": "4s"}})
    m = g.admin.metrics()
    v = VERSION_RE.search(m.text)
    assert v and v.group(1) == (REPO / "VERSION").read_text().strip(), m.text[:400]
    upload(g, "ml1", "S-op", [msg("R-op\\q", body=b"one"), msg("R-op\\q", body=b"two")])
    t_sent = time.time()
    # keep 4 s: a lifecycle run every second (keep/4, at least 1 s), the first 5 s after
    # the start; after a run the backlog is read
    m = poll(lambda: g.admin.metrics(),
             lambda x: x.get("qagw_retention_last_run_seconds", worker="ml1") and
             x.get("qagw_pending_messages") == 2, 15,
             "a lifecycle run and the backlog read")
    age = m.value("qagw_oldest_pending_age_seconds")
    assert 0 < age <= time.time() - t_sent + 16, age
    assert m.value("qagw_retention_runs_total", worker="ml1") >= 1
    assert m.value("qagw_retention_failures_total", worker="ml1") == 0
    last = m.value("qagw_retention_last_run_seconds", worker="ml1")
    assert abs(last - time.time()) < 10, last


def test_a_clean_stop_logs_no_warning(qagw, uid):
    """Issue 19: SIGTERM with nothing wrong logs no warning (it logged one "connection
    lost: closed" per Redis connection, which `journalctl -p warning` then showed)."""
    g = qagw(workers=("ml1", "ml2"))
    poll(lambda: g.admin.get("/healthz")[0], lambda st: st == 200, 10, "healthy")
    upload(g, "ml1", f"S-{uid}", [msg(f"R-{uid}\\q", body=b"x")])
    before = len(g.log_text())
    assert g.stop() == 0
    tail = g.log_text()[before:]
    warnings = [line for line in tail.splitlines() if " warn " in line or " error " in line]
    assert "stopped" in tail, tail[-2000:]
    assert not warnings, "\n".join(warnings)


def test_agent_pinned_to_no_worker_is_listed_and_counted(qagw, uid):
    """Issue 19: an agent whose HELLO names a primary that matches no worker (a mistyped
    -x) is listed in /api/agents-off-primary with reason unresolved, and counted in
    qagw_sessions_unresolved_primary; once it names a real primary it leaves both."""
    from qagwtest import qasync as q
    from qagwtest.pool import persist
    g = qagw(workers=("ml1",))
    A = f"A-{uid}"
    c = persist(g, "ml1", A, primary="10.9.9.9:2439")
    try:
        assert not c.welcome.on_primary
        off = poll(lambda: g.admin.get_ok("/api/agents-off-primary"),
                   lambda j: any(e["agent"] == A for e in j["agents"]), 5, "A listed")
        e = next(e for e in off["agents"] if e["agent"] == A)
        assert (e["reason"], e["primary"], e["primary_as_sent"], e["pinned"],
                e["session_worker"]) == ("unresolved", None, "10.9.9.9:2439", True, "ml1"), e
        assert off["unresolved"]["agents"] >= 1, off
        m = g.admin.metrics()
        assert m.value("qagw_sessions_unresolved_primary", worker="ml1") == 1
    finally:
        c.close()
    c = persist(g, "ml1", A, primary=g.address("ml1"))
    try:
        assert c.welcome.on_primary
        poll(lambda: g.admin.get_ok("/api/agents-off-primary"),
             lambda j: all(e["agent"] != A for e in j["agents"]), 5, "A no longer listed")
        poll(lambda: g.admin.metrics(),
             lambda m: m.value("qagw_sessions_unresolved_primary", worker="ml1") == 0, 5,
             "gauge back to 0")
    finally:
        c.close()


def test_a_stopped_node_is_removed_and_its_agents_move(qagw, store, uid):
    """Issue 19, retiring a node: DELETE /api/workers/{name} (409 while the worker has a
    heartbeat) and `qagw -c FILE workers remove NAME`. The worker leaves /api/workers and
    the store's known workers; its router-assigned agents move at once (not reassign_after
    later); an agent pinned to it is listed unresolved; a second removal is 404."""
    import subprocess
    from qagwtest import qasync as q
    from qagwtest.harness import QAGW
    n1 = qagw(workers=("ml1",), node="n1")
    n2 = qagw(workers=("ml3",), node="n2")
    poll(lambda: {w["name"]: w["state"] for w in n1.admin.get_ok("/api/workers")},
         lambda ws: ws.get("ml1") == "serving" and ws.get("ml3") == "serving", 10, "both serve")
    agents = [f"R{i}-{uid}" for i in range(12)]
    for a in agents:  # router-assigned (empty primary): some to ml3
        with q.Client("127.0.0.1", n2.port("ml3")) as c:
            c.hello(a)
    P = f"P-{uid}"
    with q.Client("127.0.0.1", n2.port("ml3")) as c:
        c.hello(P, primary=n2.address("ml3"))
    on_ml3 = [a for a in agents if n1.admin.get_ok(f"/api/agents/{a}")["primary"] == "ml3"]
    assert on_ml3, "no agent assigned to ml3"

    st, body = n1.admin.delete("/api/workers/ml3")
    assert st == 409 and body["error"] == "worker_not_down", (st, body)

    n2.kill()
    poll(lambda: {w["name"]: w["state"] for w in n1.admin.get_ok("/api/workers")},
         lambda ws: ws.get("ml3") == "down", 10, "ml3 down")
    t0 = time.monotonic()
    p = subprocess.run([str(QAGW), "-c", str(n1.conf), "workers", "remove", "ml3"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "worker ml3: retiring" in p.stdout, (p.returncode, p.stdout,
                                                                       p.stderr)
    poll(lambda: [w["name"] for w in n1.admin.get_ok("/api/workers")],
         lambda names: "ml3" not in names, 10, "ml3 gone from /api/workers")
    took = time.monotonic() - t0
    for a in on_ml3:
        assert n1.admin.get_ok(f"/api/agents/{a}")["primary"] == "ml1", a
    off = n1.admin.get_ok("/api/agents-off-primary")
    assert [e["agent"] for e in off["agents"]] == [P], off
    assert off["agents"][0]["reason"] == "unresolved" and \
        off["agents"][0]["primary_as_sent"] == n2.address("ml3"), off
    assert off["workers"] == [], off
    assert store.scalar("select count(*) from qa_workers where name = 'ml3'") in (0, "0")
    print(f"\n[retire] {len(on_ml3)} agents moved, ml3 gone {took:.1f} s after the removal")
    st, body = n1.admin.delete("/api/workers/ml3")
    assert st == 404, (st, body)
