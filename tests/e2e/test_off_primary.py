"""GET /api/agents-off-primary (docs/design.md "The router": agents that name their own primary keep
it, and the admin port lists them as off-primary while their primary is down; docs/admin.md).

Two qagw processes on one PostgreSQL database and one Redis key prefix: n1 with ml1 and
ml2, n2 with ml3. A *pinned* agent names ml3's HOST:PORT in HELLO; a *router-assigned*
agent gets ml3 from the operator (PUT /api/agents/{id}/primary). ml3 goes down (SIGKILL of
n2) or drains, and the endpoint must list the agents whose primary it is.
"""

from __future__ import annotations

import signal
import time
from typing import Dict, Sequence

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.pool import HOST, agent_json, persist, poll, two_nodes

PATH = "/api/agents-off-primary"
WORKERS = ("ml1", "ml2", "ml3")
VIEW_S = 1.2  # one heartbeat more: every router's view of the pool is current
CAP = 1000    # agents listed per worker


def off_primary(gw, **kw):
    status, body = gw.admin.get(PATH, **kw)
    assert status == 200, f"GET {PATH}: {status} {body!r}"
    assert isinstance(body, dict) and set(body) >= {"workers", "agents"}, body
    return body


def by_agent(body) -> Dict[str, dict]:
    return {a["agent"]: a for a in body["agents"]}


def by_worker(body) -> Dict[str, dict]:
    return {w["name"]: w for w in body["workers"]}


# nothing off its primary: no worker, no agent, and no agent pinned to a primary that
# matches no worker (issue 19's "unresolved")
EMPTY = {"workers": [], "agents": [], "unresolved": {"agents": 0, "total": 0, "truncated": False}}


def check_shape(body) -> None:
    """Field types, and the agents sorted by id."""
    ids = [a["agent"] for a in body["agents"]]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), ids
    for w in body["workers"]:
        assert w["state"] in ("down", "draining"), w
        assert isinstance(w["agents"], int) and isinstance(w["truncated"], bool), w
    for a in body["agents"]:
        assert a["primary_state"] in ("down", "draining"), a
        assert a["reason"] == a["primary_state"], a
        assert isinstance(a["pinned"], bool), a
        assert a["session_worker"] is None or isinstance(a["session_worker"], str), a
    counts = {}
    for a in body["agents"]:
        counts[a["primary"]] = counts.get(a["primary"], 0) + 1
    assert counts == {w["name"]: w["agents"] for w in body["workers"] if w["agents"]}, body


def wait_serving(gw, workers: Sequence[str] = WORKERS, timeout: float = 5.0) -> None:
    poll(lambda: gw.admin.workers(),
         lambda ws: all(ws.get(w, {}).get("state") == "serving" for w in workers), timeout,
         f"{', '.join(workers)} serving on /api/workers")
    time.sleep(VIEW_S)


def hello_once(gw, worker: str, agent_id: str, primary: str = "") -> q.Welcome:
    with q.Client(HOST, gw.port(worker)) as c:
        return c.hello(agent_id, primary=primary)


def set_primary(gw, agent_id: str, worker: str) -> None:
    status, body = gw.admin.put(f"/api/agents/{agent_id}/primary", {"worker": worker})
    assert status == 200 and body.get("primary") == worker, (status, body)


def redis_pipeline(redis, commands: Sequence[Sequence[object]]) -> list:
    """Replies of many Redis commands sent over one connection."""
    return harness.redis_pipeline(redis.port, commands, host=HOST, timeout=10,
                                  chunk=max(1, len(commands)))


# ------------------------------------------------------------------ tests


def test_down_primary_lists_pinned_and_not_yet_moved_agents(qagw, uid):
    """SIGKILL of n2: within ~5 s ml3 is down, and its agents are listed: pinned ones with
    their live session's worker (null for the session the dead node held), router-assigned
    ones too (reassign_after has not passed); agents of serving primaries are not."""
    router = {"router": {"reassign_after": 120}}  # the router does not move R meanwhile
    n1, n2 = two_nodes(qagw, sections=router)
    wait_serving(n1)
    ml3 = n2.address("ml3")
    P, P2, Q = f"P-{uid}", f"P2-{uid}", f"Q-{uid}"  # pinned: ml3, ml3, ml1
    R, S = f"R-{uid}", f"S-{uid}"                   # router-assigned: ml3, ml2
    hello_once(n1, "ml1", P, primary=ml3)
    for a, w in ((R, "ml3"), (S, "ml2")):
        hello_once(n1, "ml1", a)
        set_primary(n1, a, w)
    sessions = [persist(n2, "ml3", P2, primary=ml3),  # left behind by the kill
                persist(n1, "ml1", Q, primary=n1.address("ml1")),
                persist(n1, "ml2", R)]
    try:
        before = off_primary(n1)
        assert before == EMPTY, before

        t0 = time.monotonic()
        n2.kill(signal.SIGKILL)
        s = persist(n1, "ml1", P, primary=ml3)  # P's session, after ml3 is gone
        sessions.append(s)
        assert (s.welcome.primary, s.welcome.on_primary) == ("ml3", 0), s.welcome

        def ready(body):
            ws, ag = by_worker(body), by_agent(body)
            return ws.get("ml3", {}).get("state") == "down" and \
                ag.get(P, {}).get("session_worker") == "ml1"
        body = poll(lambda: off_primary(n1), ready, 6, "ml3 down with P listed")
        print(f"\nml3 down, P listed {time.monotonic() - t0:.2f} s after SIGKILL of n2:\n"
              f"  {body}")
        assert time.monotonic() - t0 < 6
        check_shape(body)

        assert body["workers"] == [{"name": "ml3", "state": "down", "agents": 3,
                                    "truncated": False, "primaries": 3}], body["workers"]
        ag = by_agent(body)
        assert set(ag) == {P, P2, R}, ag
        assert {k: ag[P][k] for k in ("primary", "primary_state", "pinned", "session_worker")} \
            == {"primary": "ml3", "primary_state": "down", "pinned": True,
                "session_worker": "ml1"}, ag[P]
        assert ag[P]["on_primary"] is False, ag[P]
        # the session of P2 was on the killed node: no session
        assert (ag[P2]["pinned"], ag[P2]["session_worker"]) == (True, None), ag[P2]
        # router-assigned, not moved yet: listed, pinned false
        assert (ag[R]["primary"], ag[R]["primary_state"], ag[R]["pinned"],
                ag[R]["session_worker"]) == ("ml3", "down", False, "ml2"), ag[R]
        assert Q not in ag and S not in ag
        for c in sessions[1:]:
            c.ping()  # n1's sessions are still served (sessions[0] was on n2)
    finally:
        for c in sessions:
            c.close()


def test_draining_primary_lists_pinned_agents_and_router_moves_the_others(qagw, uid):
    """Drain of ml3 (through n1's admin port): its pinned agents are listed as draining
    (on both nodes); its router-assigned agent is moved by the drain's sweep and leaves the
    list."""
    n1, n2 = two_nodes(qagw)
    wait_serving(n1)
    ml3 = n2.address("ml3")
    P, Q, R = f"P-{uid}", f"Q-{uid}", f"R-{uid}"
    hello_once(n1, "ml1", R)
    set_primary(n1, R, "ml3")
    sessions = [persist(n1, "ml1", P, primary=ml3),
                persist(n1, "ml2", Q, primary=n1.address("ml2"))]
    try:
        assert off_primary(n2) == EMPTY
        t0 = time.monotonic()
        status, body = n1.admin.post("/api/workers/ml3/drain")
        assert status == 202, (status, body)

        def ready(body):
            # The endpoint reads counts and members in separate rounds: wait until both
            # show the router's move (R's script moves it out of both sets at once).
            ws, ag = by_worker(body), by_agent(body)
            return (ws.get("ml3", {}).get("state") == "draining" and P in ag and R not in ag
                    and ws.get("ml3", {}).get("primaries") == 1)
        for gw in (n1, n2):
            body = poll(lambda: off_primary(gw), ready, 5,
                        f"ml3 draining, P listed, R moved, on {gw.node}")
            print(f"\n{gw.node}, {time.monotonic() - t0:.2f} s after the drain: {body}")
            check_shape(body)
            assert body["workers"] == [{"name": "ml3", "state": "draining", "agents": 1,
                                        "truncated": False, "primaries": 1}], body["workers"]
            assert body["agents"] == [{"agent": P, "primary": "ml3",
                                       "primary_state": "draining", "reason": "draining",
                                       "primary_as_sent": ml3, "pinned": True,
                                       "session_worker": "ml1", "on_primary": False}], body
        moved = agent_json(n1, R)
        assert moved["primary"] in ("ml1", "ml2") and moved["pinned"] is False, moved
        for c in sessions:
            c.ping()
    finally:
        for c in sessions:
            c.close()

    # resumed: nobody is off-primary any more
    status, body = n1.admin.post("/api/workers/ml3/resume")
    assert status == 202, (status, body)
    poll(lambda: off_primary(n1), lambda b: b == EMPTY, 5,
         "an empty list after ml3 resumed")


def test_truncated_at_1000_agents_per_worker_and_stale_entries_left_out(qagw, uid):
    """Routing state written straight into Redis: a worker "gone1" that never heartbeats
    (down) is primary of 1005 pinned agents: 1000 are listed, truncated. Of "gone2"'s
    members, one whose hash names another primary, one without hash and one that is not an
    agent id are left out."""
    g = qagw(workers=("ml1",))
    wait_serving(g, ("ml1",))
    P, r = g.redis_prefix, g.redis
    many = [f"T{uid}-{i:04d}" for i in range(CAP + 5)]
    cmds = [("SADD", f"{P}workers", "gone1", "gone2")]
    for a in many:
        cmds += [("SADD", f"{P}primaries:gone1", a),
                 ("HSET", f"{P}agent:{a}", "primary", "gone1", "pinned", "1", "worker", "")]
    A, stale, nohash = f"A-{uid}", f"stale-{uid}", f"nohash-{uid}"
    cmds += [("SADD", f"{P}primaries:gone2", A, stale, nohash, "not an id!"),
             ("HSET", f"{P}agent:{A}", "primary", "gone2", "pinned", "0", "worker", "ml1",
              "on_primary", "0"),
             ("HSET", f"{P}agent:{stale}", "primary", "ml1", "pinned", "1")]
    redis_pipeline(r, cmds)

    t0 = time.monotonic()
    body = off_primary(g)
    print(f"\nanswered in {time.monotonic() - t0:.3f} s: {len(body['agents'])} agents, "
          f"workers {body['workers']}")
    check_shape(body)
    assert body["workers"] == [
        {"name": "gone1", "state": "down", "agents": CAP, "truncated": True,
         "primaries": CAP + 5},
        {"name": "gone2", "state": "down", "agents": 1, "truncated": False, "primaries": 4},
    ], body["workers"]
    ag = by_agent(body)
    assert len(ag) == CAP + 1
    assert set(ag) - {A} <= set(many)
    assert all(e["pinned"] is True and e["primary"] == "gone1" and e["session_worker"] is None
               for a, e in ag.items() if a != A)
    assert ag[A] == {"agent": A, "primary": "gone2", "primary_state": "down", "reason": "down",
                     "primary_as_sent": None, "pinned": False, "session_worker": "ml1",
                     "on_primary": False}, ag[A]


def test_token_required_and_503_without_redis(qagw, private_redis, uid):
    token = f"tok-{uid}"
    g = qagw(workers=("ml1",), admin_token=token, redis=private_redis)
    for tok in (None, "wrong"):
        status, body = g.admin.get(PATH, token=tok)
        assert status == 401 and body.get("error") == "unauthorized", (tok, status, body)
    assert off_primary(g) == EMPTY
    # a path of its own: not an agent id under /api/agents/
    status, body = g.admin.get(PATH + "/x")
    assert status == 404, (status, body)
    status, body = g.admin.post(PATH, {})
    assert status == 405, (status, body)

    private_redis.stop()
    t0 = time.monotonic()
    status, body = poll(lambda: g.admin.get(PATH), lambda sb: sb[0] == 503, 5,
                        "503 with Redis stopped")
    print(f"\n503 {time.monotonic() - t0:.2f} s after Redis stopped: {body}")
    assert body.get("error") == "redis_unavailable", body

    private_redis.start()
    poll(lambda: g.admin.get(PATH), lambda sb: sb == (200, EMPTY), 10,
         "200 again once Redis is back")
