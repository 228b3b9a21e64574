"""Fixtures of the black-box tests: a private PostgreSQL and a private Redis for the run,
a fresh database and a fresh Redis key prefix per test, qagw processes built from a
generated config, and qaagent runs.

PostgreSQL: its own temp dir and free port, owned by the unprivileged `postgres` user
when we run as root (the server refuses root), initialised with `initdb -A trust`. Trust
authentication is acceptable here only because the server listens on 127.0.0.1 and a
private socket directory, for the length of the test run.
"""

from __future__ import annotations

import itertools
import os
import signal
import uuid
from pathlib import Path

import pytest

from qagwtest import harness
from qagwtest.harness import Agent, Gateway, PgServer, RedisServer
from qagwtest.pgaf import Formation
from qagwtest.sentinel import SentinelSet

_db_counter = itertools.count(1)


def _stop_gateways(started, request) -> None:
    """Teardown of the gateway factories: stop each (SIGTERM, then SIGKILL), print the
    logs when the test failed, and fail on a gateway that died from an unexpected signal."""
    problems = []
    for gw in started:
        if gw.proc is None:
            continue
        rc = gw.proc.poll()
        if rc is not None and rc < 0 and -rc not in (signal.SIGKILL, signal.SIGTERM):
            problems.append(f"qagw {gw.node} died from signal {-rc}:\n{harness.tail(gw.log)}")
        gw.stop(grace=8)
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for gw in started:
            print(f"\n---- qagw {gw.node} log ({gw.log}) ----\n{harness.tail(gw.log, 60)}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture(scope="session")
def run_dir():
    d = harness.make_tempdir("qagw-e2e-")
    os.chmod(d, 0o755)  # the postgres user must traverse it to reach its cluster
    yield d
    if not os.environ.get("QAGW_E2E_KEEP"):
        harness.rmtree(d)


def _start_pg(base: Path) -> PgServer:
    pg = PgServer(base)
    pg.init()
    pg.start()
    return pg


@pytest.fixture(scope="session")
def pg_server(run_dir):
    """The run's shared PostgreSQL; tests get their own database in it (`store`)."""
    pg = _start_pg(run_dir / "pg")
    yield pg
    pg.shutdown()


@pytest.fixture
def store(pg_server):
    """A fresh database `qagw_tN` owned by role qagw, for one test."""
    return pg_server.create_database(f"qagw_t{next(_db_counter)}")


@pytest.fixture
def private_pg(run_dir):
    """A PostgreSQL of this test alone (for tests that stop and start the server)."""
    pg = _start_pg(run_dir / f"pg-private-{uuid.uuid4().hex[:8]}")
    yield pg
    pg.shutdown()


@pytest.fixture(scope="session")
def redis_server(run_dir):
    """The run's shared Redis; every test keeps to its own key prefix (`redis_prefix`)."""
    r = RedisServer(run_dir / "redis")
    r.start()
    yield r
    r.shutdown()


@pytest.fixture
def private_redis(run_dir):
    """A Redis of this test alone, for tests that stop it and start it again (same port)."""
    r = RedisServer(run_dir / f"redis-private-{uuid.uuid4().hex[:8]}")
    r.start()
    yield r
    r.shutdown()


@pytest.fixture
def redis_prefix():
    """This test's Redis key prefix: tests sharing the run's Redis never see each other."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def qagw(tmp_path, store, redis_server, redis_prefix, request):
    """Factory: qagw(workers=("ml1",), node="n1", limits={...}, store_=..., start=True,
    sections={...}, redis=..., redis_prefix=..., policy="primary"|"any", admin_token=...).

    Writes an INI config (auth=off, loopback listeners on free ports, the test's
    database, the run's Redis under this test's key prefix unless another Redis or
    prefix is given) and starts `build/qagw -c FILE`, stderr into a log file, returning
    once every worker accepts TCP connections (15 s, else failure with the log's tail).
    Gateways of one test share database and prefix: they form one pool.
    Every gateway started is stopped in teardown: SIGTERM, then SIGKILL.
    """
    started = []
    names = itertools.count(1)

    def make(workers=("ml1",), node=None, limits=None, store_=None, start=True,
             sections=None, redis=None, redis_prefix_=None, policy=None,
             admin_token=None) -> Gateway:
        node = node or f"n{next(names)}"
        secs = {k: dict(v) for k, v in (sections or {}).items()}
        if policy is not None:
            secs.setdefault("push", {})["policy"] = policy
        gw = Gateway(tmp_path / f"gw-{node}", node, workers, store_ or store,
                     limits=limits, sections=secs, redis=redis or redis_server,
                     redis_prefix=redis_prefix_ or redis_prefix, admin_token=admin_token)
        started.append(gw)
        if start:
            gw.start()
        return gw

    yield make

    _stop_gateways(started, request)


@pytest.fixture
def agent(tmp_path):
    """Factory: agent(id, *streams) -> Agent with its client store in the test's tmp dir."""

    def make(agent_id: str, *streams: str, extra=()) -> Agent:
        return Agent(agent_id, tmp_path / f"agent-{agent_id}.db", streams, extra=extra)

    return make


@pytest.fixture
def uid():
    """A short suffix that keeps agent ids of different tests apart."""
    return uuid.uuid4().hex[:8]


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # lets fixtures see whether the test body failed (to print the gateway logs)
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # A CI timeout or `kill` sends SIGTERM: turn it into an interrupt so that fixture
    # teardown still stops the gateways and the PostgreSQL cluster this run started.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    config.addinivalue_line(
        "markers", "long: a long fault scenario, run by `make test-long` and `make soak`, not by "
        "`make test` (which runs a shorter variant of the same fault)")


@pytest.fixture(scope="session")
def dev_certs(run_dir):
    """conf/make-dev-certs.sh's CA and test certificates, made once per run."""
    return harness.make_dev_certs(run_dir / "certs")


@pytest.fixture
def qagw_conf(tmp_path, store, redis_server, redis_prefix, request):
    """Factory like `qagw`, for a harness.ConfGateway: qagw_conf(workers=..., node_keys=
    {"auth": "token"}, tls_workers=("ml1",), tls_cert=PATH, tls_key=PATH, limits=...,
    node=..., start=True). Stopped in teardown (SIGTERM, then SIGKILL); logs printed when
    the test failed; a gateway killed by a signal other than SIGTERM/SIGKILL fails it."""
    started = []
    names = itertools.count(1)

    def make(workers=("ml1",), node=None, limits=None, start=True, sections=None,
             **kw) -> "harness.ConfGateway":
        node = node or f"c{next(names)}"
        gw = harness.ConfGateway(tmp_path / f"gw-{node}", node, workers, store,
                                 limits=limits, sections=sections, redis=redis_server,
                                 redis_prefix=redis_prefix, **kw)
        started.append(gw)
        if start:
            gw.start()
        return gw

    yield make

    _stop_gateways(started, request)


# ------------------------------------------------------------------ HA engines (issue 18)


@pytest.fixture
def pgaf(run_dir, uid):
    """A pg_auto_failover formation of this test (database qagw owned by role qagw), shut
    down after the test's gateways (request it before `qagw`); no process may be left."""
    f = Formation(run_dir / f"pgaf-{uid}")
    try:
        f.start()
        prim = f.primary()
        f.admin_sql(prim, "create role qagw login")
        f.admin_sql(prim, f'alter database "{f.dbname}" owner to qagw')
        yield f
    finally:
        f.shutdown()
        left = [(n.name, n.pids()) for n in [f.monitor] + f.nodes if n.pids()]
        if not os.environ.get("QAGW_E2E_KEEP"):
            harness.rmtree(f.base)
    assert not left, f"processes left behind by the formation: {left}"


@pytest.fixture
def sentinels(run_dir, uid):
    """A Redis master, its replica and three sentinels of this test (qagwtest.sentinel)."""
    base = Path(run_dir) / f"sentinel-{uid}"
    ss = SentinelSet(base)
    try:
        ss.start()
        yield ss
    finally:
        ss.shutdown()
        harness.rmtree(base)
