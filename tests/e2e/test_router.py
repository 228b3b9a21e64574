"""Issue 6: the router (docs/design.md "The router"; protocol.md HELLO "Primary", WELCOME, REASSIGN;
admin.md GET /api/workers, PUT /api/agents/{id}/primary; docs/design.md "The router").

Two qagw processes on one PostgreSQL database and one Redis key prefix: n1 with ml1 and
ml2, n2 with ml3. An *auto* agent sends an empty HELLO primary and gets one from the
router; a *pinned* agent sends a worker's HOST:PORT and keeps it. Router state is read
straight from Redis (P assigned:NAME, P agent:ID; P = the test's key prefix).
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.pool import HOST, agent_json, expect_no_frame, falsy, persist, poll, truthy, two_nodes

WORKERS = ("ml1", "ml2", "ml3")
# the workers' heartbeat (and with it every router's view of the pool) is refreshed each 1 s
VIEW_S = 1.2


# ------------------------------------------------------------------ helpers


def redis_pipeline(redis, commands: Sequence[Sequence[object]], chunk: int = 2000) -> list:
    """Replies of many Redis commands sent over one connection, chunk by chunk."""
    return harness.redis_pipeline(redis.port, commands, host=HOST, timeout=10, chunk=chunk)


def routing(redis, prefix: str, agents: Sequence[str]) -> Dict[str, tuple]:
    """{agent: (primary, pinned)} from P agent:ID (None, None for an agent without one)."""
    replies = redis_pipeline(redis, [("HMGET", f"{prefix}agent:{a}", "primary", "pinned")
                                     for a in agents])
    return {a: tuple(r) for a, r in zip(agents, replies)}


def assigned_loads(redis, prefix: str, workers: Sequence[str] = WORKERS) -> Dict[str, int]:
    """SCARD P assigned:NAME: the router-assigned load of each worker."""
    return {w: redis.command("SCARD", f"{prefix}assigned:{w}") for w in workers}


def wait_serving(gw, workers: Sequence[str] = WORKERS, timeout: float = 5.0) -> None:
    """Every worker shows serving on gw's /api/workers, then one more heartbeat so that
    every router's view of the pool (its ring) includes them all."""
    poll(lambda: gw.admin.workers(),
         lambda ws: all(ws.get(w, {}).get("state") == "serving" for w in workers), timeout,
         f"{', '.join(workers)} serving on /api/workers")
    time.sleep(VIEW_S)


def hello_once(gw, worker: str, agent_id: str, primary: str = "") -> q.Welcome:
    """Open, HELLO (not PERSIST), read WELCOME, close."""
    with q.Client(HOST, gw.port(worker)) as c:
        return c.hello(agent_id, primary=primary)


def server_names(servers) -> List[str]:
    return [name for name, _ in servers]


def check_auto_welcome(w: q.Welcome, server: str, gws: Dict[str, object],
                       serving: Sequence[str]) -> None:
    """The WELCOME of a router-assigned agent on worker server: its primary is a serving
    worker, on_primary says whether this is it, and the server list is the primary first,
    then every other serving worker once, each with its advertised stream."""
    assert w.server == server, w
    assert w.primary in serving, (serving, w)
    assert w.on_primary == (1 if w.primary == server else 0), w
    names = server_names(w.servers)
    assert names[0] == w.primary, w
    assert sorted(names) == sorted(serving), (serving, w)
    for name, stream in w.servers:
        assert stream == gws[name].stream(name), (name, stream, w)


def two_nodes_by_worker(n1, n2) -> Dict[str, object]:
    return {"ml1": n1, "ml2": n1, "ml3": n2}


def expect_reassign(c: q.Client, timeout: float) -> q.Reassign:
    """The next frame (PINGs answered) must be REASSIGN, within timeout seconds."""
    try:
        f = c.recv(timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"no REASSIGN within {timeout}s") from None
    assert isinstance(f, q.Reassign), f"expected REASSIGN, got {f!r}"
    return f


# ------------------------------------------------------------------ tests


N_AGENTS = 10000
CONNS_PER_SIDE = 8   # parallel connections per node (the per-address HELLO cap is 64)
CAPACITY = {"ml1": 1, "ml2": 2, "ml3": 1}
EPSILON = 0.25


def test_ten_thousand_new_agents_from_two_nodes_stay_within_the_bound(qagw, uid):
    """Must-show 2: 10,000 new agents assigned concurrently through both nodes; every
    worker's router-assigned load stays within ceil((1+eps) * total * cap / sum cap), and
    each WELCOME's primary is the one Redis records."""
    router = {"router": {"epsilon": EPSILON}}
    n1 = qagw(workers=("ml1", "ml2"), node="n1",
              sections={**router, "worker ml1": {"capacity": CAPACITY["ml1"]},
                        "worker ml2": {"capacity": CAPACITY["ml2"]}})
    n2 = qagw(workers=("ml3",), node="n2",
              sections={**router, "worker ml3": {"capacity": CAPACITY["ml3"]}})
    wait_serving(n1)
    got_caps = {w: int(n1.redis.command("HGET", f"{n1.redis_prefix}worker:{w}", "capacity"))
                for w in WORKERS}
    assert got_caps == CAPACITY, got_caps

    half = N_AGENTS // 2
    sides = [(n1, ("ml1", "ml2"), [f"N{uid}-a{i}" for i in range(half)]),
             (n2, ("ml3",), [f"N{uid}-b{i}" for i in range(half)])]
    welcomes: Dict[str, q.Welcome] = {}
    errors: List[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(sides))

    def one(gw, worker, agent_id):
        try:
            w = hello_once(gw, worker, agent_id)
        except Exception as e:  # noqa: BLE001 - reported below, with the agent
            with lock:
                errors.append(f"{agent_id} on {worker}: {type(e).__name__}: {e}")
            return
        with lock:
            welcomes[agent_id] = w

    def side(gw, workers, ids):
        start.wait()
        with ThreadPoolExecutor(CONNS_PER_SIDE) as ex:
            for i, a in enumerate(ids):
                ex.submit(one, gw, workers[i % len(workers)], a)

    t0 = time.monotonic()
    threads = [threading.Thread(target=side, args=s) for s in sides]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    print(f"\n{N_AGENTS} HELLOs in {elapsed:.1f} s ({N_AGENTS / elapsed:.0f}/s), "
          f"{2 * CONNS_PER_SIDE} connections")
    assert not errors, f"{len(errors)} HELLOs failed, e.g. {errors[:5]}"
    assert len(welcomes) == N_AGENTS

    prefix = n1.redis_prefix
    loads = assigned_loads(n1.redis, prefix)
    total, sum_cap = sum(loads.values()), sum(CAPACITY.values())
    bounds = {w: math.ceil((1 + EPSILON) * N_AGENTS * CAPACITY[w] / sum_cap) for w in WORKERS}
    for w in WORKERS:
        print(f"  {w}: capacity {CAPACITY[w]}, assigned {loads[w]}, bound {bounds[w]}, "
              f"ideal {N_AGENTS * CAPACITY[w] // sum_cap}")
    assert total == N_AGENTS, loads
    over = {w: (loads[w], bounds[w]) for w in WORKERS if loads[w] > bounds[w]}
    assert not over, f"over the bound: {over}"

    by_welcome = {w: 0 for w in WORKERS}
    for w in welcomes.values():
        by_welcome[w.primary] = by_welcome.get(w.primary, 0) + 1
    assert by_welcome == loads, (by_welcome, loads)
    rt = routing(n1.redis, prefix, list(welcomes))
    wrong = {a: (welcomes[a].primary, rt[a]) for a in welcomes
             if rt[a] != (welcomes[a].primary, "0")}
    assert not wrong, f"{len(wrong)} agents whose Redis (primary, pinned) differs from WELCOME, " \
                      f"e.g. {list(wrong.items())[:5]}"


def test_welcome_of_auto_agents_sticky_and_drained_worker_left_out(qagw, uid):
    n1, n2 = two_nodes(qagw)
    gws = two_nodes_by_worker(n1, n2)
    wait_serving(n1)

    first: Dict[str, str] = {}
    for i in range(30):
        a, worker = f"W{uid}-{i}", WORKERS[i % 3]
        w = hello_once(gws[worker], worker, a)
        check_auto_welcome(w, worker, gws, WORKERS)
        first[a] = w.primary
    print(f"\nprimaries of 30 agents: { {x: list(first.values()).count(x) for x in WORKERS} }")

    # sticky: the same agents again, each through another worker
    for i, a in enumerate(first):
        worker = WORKERS[(i + 1) % 3]
        w = hello_once(gws[worker], worker, a)
        check_auto_welcome(w, worker, gws, WORKERS)
        assert w.primary == first[a], (a, first[a], w)
    assert set(first.values()) != {first[next(iter(first))]}, \
        f"30 agents all on one worker: {first}"

    status, body = n1.admin.post("/api/workers/ml2/drain")
    assert status == 202, (status, body)
    poll(lambda: n2.admin.workers(), lambda ws: ws["ml2"]["state"] == "draining", 3,
         "ml2 draining on n2's /api/workers")
    time.sleep(VIEW_S)  # every router's ring without ml2
    serving = ("ml1", "ml3")
    for i in range(30):
        a, worker = f"X{uid}-{i}", serving[i % 2]
        w = hello_once(gws[worker], worker, a)
        check_auto_welcome(w, worker, gws, serving)
    # the agents ml2 had were moved: they learn it at their next WELCOME
    moved = [a for a, p in first.items() if p == "ml2"]
    assert moved, first
    for i, a in enumerate(first):
        worker = serving[i % 2]
        w = hello_once(gws[worker], worker, a)
        check_auto_welcome(w, worker, gws, serving)
        if first[a] != "ml2":
            assert w.primary == first[a], (a, first[a], w)
    print(f"{len(moved)} agents of ml2 moved on drain")


def test_pinned_agent_never_moved_on_drain(qagw, uid):
    n1, n2 = two_nodes(qagw)
    prefix = n1.redis_prefix
    wait_serving(n1)
    A, C = f"A-{uid}", f"C-{uid}"
    # C, router-assigned, gets ml1 as its primary from the operator: the control that the
    # drain does reassign (and that a REASSIGN would have had time to reach A)
    hello_once(n2, "ml3", C)
    status, body = n1.admin.put(f"/api/agents/{C}/primary", {"worker": "ml1"})
    assert status == 200 and body.get("primary") == "ml1", (status, body)
    c = persist(n2, "ml3", C)
    a = persist(n2, "ml3", A, primary=n1.address("ml1"))
    try:
        assert (c.welcome.primary, c.welcome.on_primary) == ("ml1", 0), c.welcome
        assert (a.welcome.primary, a.welcome.on_primary) == ("ml1", 0), a.welcome
        assert server_names(a.welcome.servers)[0] == "ml1", a.welcome
        assert routing(n1.redis, prefix, [A])[A] == ("ml1", "1")

        t0 = time.monotonic()
        status, body = n1.admin.post("/api/workers/ml1/drain")
        assert status == 202, (status, body)
        r = expect_reassign(c, 8)
        print(f"\ncontrol agent REASSIGN after {time.monotonic() - t0:.2f} s: {r}")
        assert r.primary in ("ml2", "ml3") and server_names(r.servers)[0] == r.primary, r
        expect_no_frame(a, 2.0)
        a.ping()  # A's session is alive and well

        assert routing(n1.redis, prefix, [A, C]) == {A: ("ml1", "1"), C: (r.primary, "0")}
        for w in WORKERS:
            assert n1.redis.command("SISMEMBER", f"{prefix}assigned:{w}", A) == 0, w
        j = agent_json(n2, A)
        assert j["primary"] == "ml1" and truthy(j["pinned"]), j
        assert j["session"] and j["session"]["worker"] == "ml3", j
    finally:
        a.close()
        c.close()
    # its next HELLO still names ml1 (draining) as its primary
    w = hello_once(n2, "ml3", A, primary=n1.address("ml1"))
    assert (w.primary, w.on_primary) == ("ml1", 0), w
    assert routing(n1.redis, prefix, [A])[A] == ("ml1", "1")


def _drain_ml1_with_sessions_on(qagw, uid, on: Sequence[str]):
    """Router-assigned agents whose primary is ml1 (set by the admin PUT), each with a
    PERSIST session on one worker of on; then ml1 is drained. Returns (n1, the sessions by
    worker, the first frame (or exception) each session saw within 8 s, {worker: agent})."""
    n1, n2 = two_nodes(qagw)
    gws = two_nodes_by_worker(n1, n2)
    wait_serving(n1)
    agents = {w: f"D{uid}-{w}" for w in on}  # session worker -> agent
    for a in agents.values():
        hello_once(n2, "ml3", a)
        status, body = n1.admin.put(f"/api/agents/{a}/primary", {"worker": "ml1"})
        assert status == 200 and body.get("primary") == "ml1", (status, body)
    sessions = {}
    for w, a in agents.items():
        sessions[w] = persist(gws[w], w, a)
        assert (sessions[w].welcome.primary, sessions[w].welcome.on_primary) == \
            ("ml1", int(w == "ml1")), sessions[w].welcome
        sessions[w].ping()
    t0 = time.monotonic()
    status, body = n1.admin.post("/api/workers/ml1/drain")
    assert status == 202, (status, body)
    got = {}
    for w, c in sessions.items():  # every session's answer first, then the verdicts
        try:
            got[w] = c.recv(timeout=8)
        except (TimeoutError, q.Closed) as e:
            got[w] = e
    print(f"\nwithin {time.monotonic() - t0:.2f} s of the drain of ml1:")
    for w, r in got.items():
        print(f"  {agents[w]} (primary ml1), session on {w}: {r!r}")
    return n1, sessions, got, agents


def test_drain_reassign_names_only_serving_workers(qagw, uid):
    """Sessions on ml2 and ml3 of agents whose router-assigned primary is ml1: the drain of
    ml1 sends each REASSIGN to a serving worker, the new primary first, then the other
    serving workers (docs/design.md "Drain and SIGTERM"), so not ml1, whose listener is
    closed; Redis records the new primary."""
    n1, sessions, got, agents = _drain_ml1_with_sessions_on(qagw, uid, ("ml2", "ml3"))
    try:
        rt = routing(n1.redis, n1.redis_prefix, list(agents.values()))
        for w, r in got.items():
            assert isinstance(r, q.Reassign), f"session on {w}: expected REASSIGN, got {r!r}"
            assert r.primary in ("ml2", "ml3"), (w, r)
            assert rt[agents[w]] == (r.primary, "0"), (w, r, rt)
        for w, r in got.items():
            names = server_names(r.servers)
            assert names[0] == r.primary and sorted(names) == ["ml2", "ml3"], \
                f"REASSIGN on {w}: servers {names}; expected {r.primary} first, then the " \
                f"other serving worker, and not the drained ml1"
    finally:
        for c in sessions.values():
            c.close()


def test_drain_sends_reassign_not_error_on_the_drained_worker(qagw, uid):
    """docs/operations.md "Draining a worker": on drain, sessions of router-assigned agents whose
    primary is the draining worker get REASSIGN; a session sent REASSIGN is not also sent
    ERROR draining (protocol.md REASSIGN), and the server closes it itself."""
    n1, sessions, got, agents = _drain_ml1_with_sessions_on(qagw, uid, ("ml1",))
    try:
        r = got["ml1"]
        assert isinstance(r, q.Reassign), f"session on ml1: expected REASSIGN, got {r!r}"
        assert r.primary in ("ml2", "ml3"), r
        assert routing(n1.redis, n1.redis_prefix, [agents["ml1"]])[agents["ml1"]] == \
            (r.primary, "0")
        sessions["ml1"].expect_closed(timeout=8)  # 5 s after REASSIGN, no ERROR first
    finally:
        for c in sessions.values():
            c.close()


def test_admin_put_primary_reassigns_connected_agent(qagw, store, uid):
    n1, n2 = two_nodes(qagw)
    gws = two_nodes_by_worker(n1, n2)
    prefix = n1.redis_prefix
    wait_serving(n1)
    A, B = f"A-{uid}", f"B-{uid}"
    old = hello_once(n1, "ml1", A).primary
    new = next(w for w in WORKERS if w != old)
    s = persist(gws[old], old, A)
    try:
        assert (s.welcome.primary, s.welcome.on_primary) == (old, 1), s.welcome
        s.ping()

        t0 = time.monotonic()
        status, body = n2.admin.put(f"/api/agents/{A}/primary", {"worker": new})
        assert status == 200, (status, body)
        assert body["agent"] == A and body["primary"] == new and falsy(body["pinned"]), body
        r = expect_reassign(s, 5)
        print(f"\nPUT primary {old} -> {new}: REASSIGN after {time.monotonic() - t0:.2f} s: {r}")
        assert r.primary == new, r
        names = server_names(r.servers)
        assert names[0] == new and sorted(names) == sorted(WORKERS), r
        for name, stream in r.servers:
            assert stream == gws[name].stream(name), r
        s.bye()
    finally:
        s.close()

    assert n1.redis.command("SISMEMBER", f"{prefix}assigned:{new}", A) == 1
    assert n1.redis.command("SISMEMBER", f"{prefix}assigned:{old}", A) == 0
    assert routing(n1.redis, prefix, [A])[A] == (new, "0")
    poll(lambda: store.query("select assigned from qa_agents where agent_id = %s", (A,)),
         lambda rows: rows == [(new,)], 3, f"qa_agents.assigned of {A} = {new}")
    # the agent reconnects starting with its new primary, and stays there
    w = persist(gws[new], new, A)
    try:
        assert (w.welcome.primary, w.welcome.on_primary) == (new, 1), w.welcome
    finally:
        w.close()

    # a pinned agent: 409, and nothing changes
    hello_once(n2, "ml3", B, primary=n2.address("ml3"))
    status, body = n1.admin.put(f"/api/agents/{B}/primary", {"worker": "ml1"})
    assert status == 409, (status, body)
    assert routing(n1.redis, prefix, [B])[B] == ("ml3", "1")
    # an unknown worker: 404, and nothing changes
    status, body = n1.admin.put(f"/api/agents/{A}/primary", {"worker": "nosuch"})
    assert status == 404, (status, body)
    assert routing(n1.redis, prefix, [A])[A] == (new, "0")
    # an agent that never said HELLO: 404
    ghost = f"ghost-{uid}"
    status, body = n1.admin.put(f"/api/agents/{ghost}/primary", {"worker": "ml1"})
    assert status == 404, (status, body)
    assert n1.redis.command("EXISTS", f"{prefix}agent:{ghost}") == 0
    for w_ in WORKERS:
        assert n1.redis.command("SISMEMBER", f"{prefix}assigned:{w_}", ghost) == 0


N_REFILL = 200


def test_emptied_redis_is_refilled_from_the_store_and_nobody_moves(qagw, store, private_redis,
                                                                    uid):
    """The test's own Redis: FLUSHALL wipes it, and the assignments come back from the store."""
    n1, n2 = two_nodes(qagw, redis=private_redis)
    gws = two_nodes_by_worker(n1, n2)
    prefix = n1.redis_prefix
    wait_serving(n1)
    primaries: Dict[str, str] = {}
    for i in range(N_REFILL):
        a, worker = f"R{uid}-{i}", WORKERS[i % 3]
        primaries[a] = hello_once(gws[worker], worker, a).primary
    counts = {w: list(primaries.values()).count(w) for w in WORKERS}
    assert assigned_loads(private_redis, prefix) == counts
    # the store records every assignment (what a refill reads)
    want = sorted(primaries.items())
    poll(lambda: sorted(store.query("select agent_id, assigned from qa_agents "
                                    "where agent_id like %s", (f"R{uid}-%",))),
         lambda rows: rows == want, 5, f"qa_agents.assigned of the {N_REFILL} agents")

    assert private_redis.command("FLUSHALL") == "OK"
    t0 = time.monotonic()
    agents = list(primaries)

    def refilled():
        rt = routing(private_redis, prefix, agents)
        return all(rt[a] == (primaries[a], "0") for a in agents) and \
            assigned_loads(private_redis, prefix) == counts
    poll(refilled, bool, 5, f"the {N_REFILL} assignments back in Redis", interval=0.2)
    print(f"\nrefilled after {time.monotonic() - t0:.2f} s: {counts}")
    # and they hold (no rebalance after the refill)
    time.sleep(VIEW_S)
    assert refilled(), (routing(private_redis, prefix, agents),
                        assigned_loads(private_redis, prefix))
    for i, a in enumerate(agents[:6]):
        worker = WORKERS[(i + 1) % 3]
        w = hello_once(gws[worker], worker, a)
        assert (w.primary, w.on_primary) == (primaries[a], int(primaries[a] == worker)), (a, w)


def test_api_workers_load_and_sessions(qagw, uid):
    n1, n2 = two_nodes(qagw)
    wait_serving(n1)
    before = n2.admin.workers()
    assert set(before) == set(WORKERS), before
    for name, e in before.items():
        assert isinstance(e["load"], (int, float)) and not isinstance(e["load"], bool), e
        assert isinstance(e["sessions"], int) and not isinstance(e["sessions"], bool), e
        assert e["sessions"] == 0, e
    print("\n" + "\n".join(f"  before {n}: sessions {e['sessions']}, load {e['load']}"
                           for n, e in sorted(before.items())))

    n_sessions = 3
    sessions = [persist(n1, "ml2", f"S{uid}-{i}", primary=n1.address("ml2"))
                for i in range(n_sessions)]
    try:
        t0 = time.monotonic()
        after = poll(lambda: n2.admin.workers(),
                     lambda ws: ws["ml2"]["sessions"] == n_sessions, 2.5,
                     f"ml2 sessions {n_sessions} on n2's /api/workers")
        print(f"  sessions seen after {time.monotonic() - t0:.2f} s")
        print("\n".join(f"  after {n}: sessions {e['sessions']}, load {e['load']}"
                        for n, e in sorted(after.items())))
        e = after["ml2"]
        assert isinstance(e["load"], (int, float)) and e["load"] >= n_sessions, e
        assert after["ml1"]["sessions"] == 0 and after["ml3"]["sessions"] == 0, after
        assert n1.admin.workers()["ml2"]["sessions"] == n_sessions
    finally:
        for s in sessions:
            s.close()
    poll(lambda: n1.admin.workers(), lambda ws: ws["ml2"]["sessions"] == 0, 2.5,
         "ml2 sessions back to 0")
