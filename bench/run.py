#!/usr/bin/python3
"""The benchmark run of issues 7 and 15 (docs/benchmarks.md): starts every service on
loopback in a temporary directory, runs the scenarios (1-6, 8 backlog, 9 push capacity), each
beside its same-run baseline, and writes bench/results/LATEST.json, LATEST.md and latency.png.

    /usr/bin/python3 bench/run.py --profile quick|full [--only 1,6] [--keep]

`make bench` runs the full profile (about 12 minutes at most), `make bench-quick` the quick
one (about 3). The load comes from build/qabench (one mode per run, one JSON object on its
stdout) and, for failover, from build/qaagent. A mode that fails or is not built makes its
figure "not run: REASON"; nothing is ever filled in. Targets are reported, not asserted.

Pinning (on a machine of 2+ CPUs): the server under test and every peer server, with
PostgreSQL and Redis, on CPU 0; qabench and qaagent on CPU 1.

PostgreSQL, Redis and qagw are started through tests/lib/qagwtest/harness.py, the peers and qabench
through bench/peers.py; the scenarios are bench/scenarios/, the files bench/report.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import threading
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Set

import psutil  # python3-psutil

REPO = Path(__file__).resolve().parents[1]

from qagwtest import harness
import peers
import report
import scenarios
from peers import NotRun, Qabench

CERTS = REPO / "conf" / "dev"  # `make certs`
RESULTS = REPO / "bench" / "results"

# What each profile runs (full: about 12 minutes at most). quick: the same scenarios, shorter
# and smaller (about 3 minutes at most).
PROFILES: Dict[str, dict] = {
    "full": {
        "seconds": 20, "warmup": 2,
        "ingest_agents": 64, "batch": 32, "size": 128,
        "store_clients": "1,2,4,8", "store_seconds": 5, "store_warmup": 1,
        "push_agents": 1000, "push_rate": 1000,
        "idle_sessions": [20000, 50000], "idle_connect_timeout": 150,
        "handshake_seconds": 10, "handshake_conns": 8,
        "failover_trials": 3, "failover_idle_trials": 1,
        "backlog_recipients": 8, "backlog_pending": 100000, "backlog_seconds": 10,
        "backlog_rounds": 3,
        "capacity_rates": [500, 1000, 2000, 4000, 8000], "capacity_agents": 1000,
        "capacity_seconds": 5, "capacity_warmup": 1,
        "coverage_agents": 3000, "coverage_reassign_after": 5, "coverage_tail": 10,
        "coverage_probes": 5,
        "pipeline_agents": 200, "pipeline_rate": 1000, "pipeline_seconds": 10,
        "budget_s": 800,
    },
    "quick": {
        "seconds": 5, "warmup": 1,
        "ingest_agents": 64, "batch": 32, "size": 128,
        "store_clients": "1,4", "store_seconds": 2, "store_warmup": 0.5,
        "push_agents": 200, "push_rate": 1000,
        "idle_sessions": [2000], "idle_connect_timeout": 40,
        "handshake_seconds": 5, "handshake_conns": 8,
        "failover_trials": 1, "failover_idle_trials": 1,
        "backlog_recipients": 8, "backlog_pending": 100000, "backlog_seconds": 5,
        "backlog_rounds": 1,
        "capacity_rates": [500, 1000, 2000, 4000, 8000], "capacity_agents": 200,
        "capacity_seconds": 2, "capacity_warmup": 0.5,
        "coverage_agents": 600, "coverage_reassign_after": 3, "coverage_tail": 6,
        "coverage_probes": 5,
        "pipeline_agents": 100, "pipeline_rate": 1000, "pipeline_seconds": 3,
        "budget_s": 215,
    },
}

# The store as production runs it: every commit flushed to disk before it returns (and so
# before qagw acks). The same server, settings and table serve the store limit.
PG_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
               "max_connections": "300"}

# qagw's configuration beyond the harness's (auth off, loopback, drain_timeout 2): the
# per-recipient cap raised so that a long ingest run is never answered quota.
GW_SECTIONS = {"store": {"max_pending": 100000000}}
# what build/qagw, qaagent and qabench are built from (the results name the commit)
SOURCE_DIRS = ("gateway", "router", "store", "admin", "proto", "agent", "bench", "Makefile")
SLACK_S = 45  # a qabench run may take this long beyond its own phases (connects, reports)


class WaitSampler(threading.Thread):
    """QAGW_BENCH_WAITS=FILE (profiling only): what PostgreSQL's client backends are doing,
    sampled every 5 ms from pg_stat_activity through a connection of its own, counted per
    scenario, database, wait event (running: active with no wait event, on a CPU or waiting
    for one) and statement; written to
    FILE as the run stops. The share of samples is the mean number of backends in that
    state: 0.26 means that on average a quarter of a backend was always there."""

    def __init__(self, pg: harness.PgServer, out: Path) -> None:
        super().__init__(daemon=True)
        self.pg, self.out = pg, out
        self.label = "start-up"
        self.counts: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.samples: Dict[str, int] = collections.Counter()
        self.stopping = threading.Event()
        self.error: Optional[str] = None

    def run(self) -> None:
        sql = ("select datname, coalesce(wait_event_type || ':' || wait_event, 'running'), "
               "left(regexp_replace(query, '\\s+', ' ', 'g'), 60) from pg_stat_activity "
               "where backend_type = 'client backend' and state = 'active' "
               "and pid <> pg_backend_pid()")
        try:
            conn = self.pg.admin_conn()
            with conn.cursor() as cur:
                while not self.stopping.wait(0.005):
                    cur.execute(sql)
                    label = self.label
                    self.samples[label] += 1
                    for db, wait, query in cur.fetchall():
                        self.counts[label][(db, wait, query)] += 1
            conn.close()
        except Exception as e:  # the run goes on without this profile
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        text = f"error: {self.error}\n" if self.error else ""
        for label, n in self.samples.items():
            text += f"## {label}: {n} samples\n"
            for (db, wait, query), k in self.counts[label].most_common(20):
                text += f"{k / n:7.3f}  {db}  {wait}  {query}\n"
            text += "\n"
        self.out.write_text(text)


class Bench:
    """One run: its directory, the services it started (all stopped by close(), in reverse
    order, also on error), the pinning, and the results of each scenario."""

    def __init__(self, profile: str, workdir: Path) -> None:
        self.profile_name = profile
        self.p = PROFILES[profile]
        self.dir = workdir
        self.t0 = time.monotonic()
        self.loadavg_start = os.getloadavg()
        self._stops: List[tuple] = []
        ncpu = peers.cpu_count()
        self.server_cpus: Optional[Set[int]] = {0} if ncpu >= 2 else None
        self.client_cpus: Optional[Set[int]] = {1} if ncpu >= 2 else None
        self.qb = Qabench(self.dir, self.client_cpus)
        self.pinning: Dict[str, str] = {}
        self.scenarios: List[dict] = []
        self.store_settings: Dict[str, str] = {}
        self.ingest_tcp: Optional[dict] = None  # scenario 1's figures, scenario 3's qagw side
        self.failover_load = False  # scenario 6: qabench ingest runs beside the agent
        self.waits: Optional[WaitSampler] = None  # QAGW_BENCH_WAITS

    # -------------------------------------------------------------- bookkeeping

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def on_close(self, what: str, fn) -> None:
        self._stops.append((what, fn))

    def close(self) -> None:
        while self._stops:
            what, fn = self._stops.pop()
            try:
                fn()
            except Exception as e:  # teardown goes on whatever one stop does
                print(f"bench: stopping {what}: {e}", file=sys.stderr)

    def pin_server(self, what: str, pid: int) -> None:
        if self.server_cpus:
            peers.pin_tree(pid, self.server_cpus)
        self.pinning[what] = peers.cpus_allowed(pid)

    def dump_pgss(self, out: Path) -> None:
        """QAGW_BENCH_PGSS=FILE: the run's top statements by total time, and its functions."""
        q = ("select round(total_exec_time::numeric, 1) || ' ms  ' || calls || ' calls  ' || "
             "round((total_exec_time / calls * 1000)::numeric, 1) || ' us/call  ' || "
             "left(regexp_replace(query, '\\s+', ' ', 'g'), 160) from pg_stat_statements "
             "order by total_exec_time desc limit 40")
        f = ("select funcname || '  ' || calls || ' calls  total ' || round(total_time::numeric, 1)"
             " || ' ms  self ' || round(self_time::numeric, 1) || ' ms' "
             "from pg_stat_user_functions order by total_time desc")
        text = ""
        for db in self.pg.databases:
            text += f"## {db}\n" + self._psql(db, "create extension if not exists "
                                              "pg_stat_statements") + self._psql(db, q) + "\n"
            text += self._psql(db, f) + "\n"
        out.write_text(text)

    def _psql(self, db: str, sql: str) -> str:
        p = self.pg._as_pg([str(harness.PGBIN / "psql"), "-X", "-q", "-h", str(self.pg.sock),
                            "-p", str(self.pg.port), "-U", "postgres", "-d", db, "-tA", "-c", sql],
                           check=False)
        return p.stdout

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    # -------------------------------------------------------------- services

    def start_store(self) -> None:
        pg = harness.PgServer(self.dir / "pg")
        pg.init()
        with open(pg.data / "postgresql.conf", "a") as f:  # later lines win over the harness's
            f.write("\n# bench/run.py: durable commits\n" +
                    "".join(f"{k} = {v}\n" for k, v in PG_SETTINGS.items()))
            if os.environ.get("QAGW_BENCH_PGSS"):  # profiling only (docs/benchmarks.md)
                f.write("shared_preload_libraries = 'pg_stat_statements'\n"
                        "pg_stat_statements.track = all\ntrack_functions = all\n")
        self.on_close("postgresql", pg.shutdown)
        if os.environ.get("QAGW_BENCH_PGSS"):
            self.on_close("pg_stat_statements", lambda: self.dump_pgss(
                Path(os.environ["QAGW_BENCH_PGSS"])))
        pg.start()
        self.pg = pg
        if os.environ.get("QAGW_BENCH_WAITS") and harness.psycopg2 is not None:
            self.waits = WaitSampler(pg, Path(os.environ["QAGW_BENCH_WAITS"]))
            self.on_close("pg_stat_activity sampling", self.waits.stop)
            self.waits.start()
        self.pin_server("postgresql", int((pg.data / "postmaster.pid").read_text().split()[0]))
        for k in ("synchronous_commit", "fsync", "full_page_writes", "wal_sync_method",
                  "shared_buffers"):
            self.store_settings[k] = pg.admin_sql(f"show {k}")
        self.store = pg.create_database("qagw_bench")
        self.redis = harness.RedisServer(self.dir / "redis")
        self.on_close("redis", self.redis.shutdown)
        self.redis.start()
        self.pin_server("redis", self.redis.proc.pid)

    def gateway(self, node: str, workers, tls: bool = False, store=None, prefix="bench:",
                sections=None) -> harness.ConfGateway:
        gw = harness.ConfGateway(
            self.dir / f"gw-{node}", node, workers, store or self.store,
            sections=sections if sections is not None else GW_SECTIONS, redis=self.redis,
            redis_prefix=prefix, tls_workers=workers if tls else (),
            tls_cert=CERTS / "server.crt" if tls else None,
            tls_key=CERTS / "server.key" if tls else None)
        self.on_close(f"qagw {node}", lambda: gw.stop(grace=8))
        return gw

    def start_gateway(self, gw: harness.ConfGateway) -> None:
        gw.start(timeout=30)
        self.pin_server(f"qagw {gw.node}", gw.pid)

    def restart_gateway(self, gw: harness.ConfGateway) -> None:
        gw.stop(grace=8)
        self.start_gateway(gw)

    def start_gateways(self) -> None:
        # Two pools, so that the router never assigns a plain agent a TLS worker or the
        # reverse: a pool is a database and a Redis prefix.
        self.plain = self.gateway("plain", ("ml1", "ml2", "ml3"))
        self.tls = self.gateway("tls", ("tl1", "tl2", "tl3"), tls=True,
                                store=self.pg.create_database("qagw_bench_tls"),
                                prefix="benchtls:")
        self.start_gateway(self.plain)
        self.start_gateway(self.tls)

    def peer(self, svc: peers.Service) -> peers.Service:
        self.on_close(svc.name, svc.stop)
        svc.start()
        self.pinning[svc.name] = peers.cpus_allowed(svc.pid)
        return svc

    def ports(self, gw: harness.ConfGateway) -> str:
        return ",".join(str(p) for p in gw.ports.values())

    def gw_opts(self, gw: harness.ConfGateway, tls: bool) -> Dict[str, object]:
        o: Dict[str, object] = {"host": "127.0.0.1", "ports": self.ports(gw)}
        if tls:
            o.update({"tls": True, "ca": CERTS / "ca.crt"})
        return o

    def timed(self, phases_s: float) -> float:
        return phases_s + SLACK_S

    # -------------------------------------------------------------- scenarios

    def measure(self, mode: str, opts: Dict[str, object], phases_s: float,
                on_mark=None) -> dict:
        """A qabench run as a figure: its JSON, or {"not_run": REASON}. on_mark: called at
        each of qabench's window/step marks (bench/costs.py Marks)."""
        self.say(f"qabench {mode} ({phases_s:.0f} s)")
        try:
            return self.qb.run(mode, opts, self.timed(phases_s), on_mark=on_mark)
        except NotRun as e:
            self.say(f"  not run: {e}")
            return {"not_run": str(e)}


# ------------------------------------------------------------------ machine


def machine() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO)] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout
    commit = git("rev-parse", "--short", "HEAD").strip()
    # the binaries are built from the work tree: say when its sources differ from the commit
    dirty = sorted({line[3:].split("/")[0] for line in git(
        "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_DIRS).splitlines()})
    if commit and dirty:
        names = [d + "/" if (REPO / d).is_dir() else d for d in dirty]
        commit += f" + uncommitted changes in {', '.join(names)}"
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024 ** 3, 1),
        "kernel": os.uname().release,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "file_max": Path("/proc/sys/fs/file-max").read_text().strip(),
        "qagw_commit": commit or "?",
    }


def results_of(b: Bench, args, error: Optional[str]) -> dict:
    """Everything LATEST.json holds."""
    return {
        "profile": args.profile, "elapsed_s": round(b.elapsed(), 1),
        "machine": {**machine(), "loadavg_at_start": [round(x, 1) for x in b.loadavg_start],
                    "loadavg_at_end": [round(x, 1) for x in os.getloadavg()]},
        "versions": peers.versions(),
        "setup": {
            "pinning": b.pinning,
            "server_cpus": sorted(b.server_cpus) if b.server_cpus else "not pinned",
            "load_cpus": sorted(b.client_cpus) if b.client_cpus else "not pinned",
            "postgresql": b.store_settings,
            "qagw": "auth off, loopback; a plain node (workers ml1-ml3) and a TLS node "
                    "(tl1-tl3), each its own pool (database and Redis prefix), and for "
                    "scenario 8 a node of its own (bl1-bl3); [store] max_pending 100000000; "
                    "everything else default",
        },
        "profile_settings": b.p, "overrides": args.set, "scenarios": b.scenarios,
        "error": error,
    }


def copy_logs(workdir: Path, logs: Path) -> None:
    """Every log and configuration of the run into logs/ (kept out of git), for a look at
    what happened after the temporary directory is gone."""
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    for f in workdir.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".conf", ".jsonl", ".stderr") \
                and "pg/data" not in str(f):
            shutil.copy(f, logs / str(f.relative_to(workdir)).replace("/", "_"))


# ------------------------------------------------------------------ main


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    ap.add_argument("--only", default="", help="comma-separated scenario numbers (default all)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument("--keep", action="store_true", help="keep the run's temporary directory")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a profile setting, e.g. --set 'idle_sessions=[20000]'")
    args = ap.parse_args(argv)
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in PROFILES[args.profile]:
            ap.error(f"--set {k}: no such setting (one of {', '.join(PROFILES[args.profile])})")
        PROFILES[args.profile][k] = json.loads(v)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _sigterm)
    for path in (harness.QAGW, harness.QAAGENT):
        if not path.is_file():
            print(f"bench: {path} is not built (make all)", file=sys.stderr)
            return 1
    if not (CERTS / "server.crt").is_file():
        print(f"bench: {CERTS}/server.crt missing (make certs)", file=sys.stderr)
        return 1

    workdir = harness.make_tempdir("qagw-bench-")
    os.chmod(workdir, 0o755)  # the postgres user must reach its cluster inside
    b = Bench(args.profile, workdir)
    b.say(f"profile {args.profile}, work directory {workdir}, "
          f"servers on CPU {b.server_cpus}, load on CPU {b.client_cpus}")
    peers.raise_nofile(8192)
    error = None
    try:
        b.start_store()
        started, gw_error = False, None
        for num, needs_gateways, fn in scenarios.SCENARIOS:
            if only and num not in only:
                continue
            if needs_gateways and not started:
                started = True
                try:
                    b.start_gateways()
                except (AssertionError, RuntimeError, OSError) as e:
                    gw_error = f"qagw did not start: {e}"
            b.say(f"scenario {num}: {fn.__name__[len('scenario_'):]}")
            if b.waits:
                b.waits.label = f"scenario {num}"
            t = time.monotonic()
            try:
                if needs_gateways and gw_error:
                    raise NotRun(gw_error)
                sc = fn(b)
            except Exception as e:  # one scenario's failure is its own: the others go on
                if not isinstance(e, NotRun):
                    traceback.print_exc()
                sc = {"id": num, "key": fn.__name__[len("scenario_"):],
                      "title": scenarios.title_of(fn),
                      "not_run": f"{type(e).__name__}: {e}", "rows": [], "header": []}
                b.say(f"  scenario {num} not run: {e}")
            sc["seconds"] = round(time.monotonic() - t, 1)
            b.scenarios.append(sc)
    except KeyboardInterrupt as e:
        error = f"interrupted ({e})"
    except Exception as e:  # the services are stopped and what was measured is written
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the stops
            signal.signal(sig, signal.SIG_IGN)
        b.say("stopping services")
        b.close()
    results = results_of(b, args, error)
    copy_logs(workdir, out / "logs")
    # a run into bench/results/ refreshes the results section of docs/benchmarks.md
    same = out.resolve() == RESULTS.resolve()
    report.write_all(results, out, docs=REPO / "docs" / "benchmarks.md" if same else None)
    if args.keep:
        b.say(f"kept {workdir}")
    else:
        harness.rmtree(workdir)
    b.say(f"wrote {out}/LATEST.json, LATEST.md, latency.png" + (f"; error: {error}" if error else ""))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
