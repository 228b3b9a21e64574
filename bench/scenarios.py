"""The six scenarios of a benchmark run (issue 7; docs/benchmarks.md), each with its
same-run baseline. Each takes the run (bench/run.py's Bench: the services, the profile, the
qabench runner) and returns its section of the results: what it measures, a table of
figure, baseline, ratio, target and verdict, and the raw figures of every qabench run.
A figure that could not be measured is {"not_run": REASON} and shows as such."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

import harness
import peers
from peers import NotRun, stop_proc

if TYPE_CHECKING:
    from run import Bench

CERTS = harness.REPO / "conf" / "dev"  # `make certs`


# ------------------------------------------------------------------ figures and table cells


def wall_ms() -> int:
    return int(time.time() * 1000)


def dig(d: Optional[dict], *keys, default=None):
    """d[k1][k2]...; default when a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def fmt(v, digits: int = 0) -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def ratio(a, b) -> Optional[float]:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return None
    return a / b


def verdict(r: Optional[float], op: str, target: float, why: str = "", unit: str = "") -> str:
    """met, or missed by how much (relative to the target); `not run` without a figure."""
    if r is None:
        return f"not run{': ' + why if why else ''}"
    if (op == ">=" and r >= target) or (op == "<=" and r <= target):
        return "met"
    short = (target - r) / target if op == ">=" else (r - target) / target
    sym = "≥" if op == ">=" else "≤"
    return f"missed by {short * 100:.0f}% ({r:.2f}{unit} vs {sym} {target:g}{unit})"


def why_not(*figs: dict) -> str:
    return "; ".join(f["not_run"] for f in figs if isinstance(f, dict) and "not_run" in f)


def cell(fig: dict, value, digits: int = 0) -> str:
    return f"not run: {fig['not_run']}" if "not_run" in fig else fmt(value, digits)


ANOMALIES = ("errors", "closed", "lost", "failed", "rejected", "unacked", "nacked",
             "receivers_failed", "receiver_closes", "overloaded", "quota")


def anomalies(label: str, fig: dict) -> List[str]:
    """A note for each non-zero failure count a qabench run reported (its JSON keys)."""
    if not isinstance(fig, dict) or "not_run" in fig:
        return []
    found = {k: fig[k] for k in ANOMALIES if isinstance(fig.get(k), (int, float)) and fig[k]}
    found.update({k: v for k, v in (fig.get("results") or {}).items() if v})
    if not found:
        return []
    return [f"{label}: qabench reported " + ", ".join(f"{k} {v:,}" for k, v in found.items())]


def lat_cell(fig: dict, *path: str) -> str:
    if "not_run" in fig:
        return f"not run: {fig['not_run']}"
    lat = dig(fig, *path)
    if not isinstance(lat, dict):
        return "—"
    return " / ".join(fmt(lat.get(k), 2) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))


# ------------------------------------------------------------------ 1. ingest


def scenario_ingest(b: Bench) -> dict:
    """Ingest: qagw vs the store limit."""
    p = b.p
    shape = {"agents": p["ingest_agents"], "batch": p["batch"], "size": p["size"],
             "seconds": p["seconds"], "warmup": p["warmup"]}
    nclients = len(p["store_clients"].split(","))
    store = b.measure("store-limit", {"conninfo": b.store.conninfo, "clients": p["store_clients"],
                                      "batch": p["batch"], "size": p["size"],
                                      "seconds": p["store_seconds"], "warmup": p["store_warmup"],
                                      "method": "best"},
                      2 * nclients * (p["store_seconds"] + p["store_warmup"]))
    tcp = b.measure("ingest", {**b.gw_opts(b.plain, False), **shape}, p["seconds"] + p["warmup"])
    tls = b.measure("ingest", {**b.gw_opts(b.tls, True), **shape}, p["seconds"] + p["warmup"])
    b.ingest_tcp = tcp
    limit = dig(store, "best", "msgs_per_s")
    best = dig(store, "best", default={})
    base = cell(store, limit) + (f" ({best.get('method')}, {best.get('clients')} clients)"
                                 if "not_run" not in store and best else "")
    rows, figures = [], {"store_limit": store, "tcp": tcp, "tls": tls}
    for name, fig, target in (("TCP", tcp, 0.8), ("TLS", tls, 0.7)):
        r = ratio(dig(fig, "msgs_per_s"), limit)
        rows.append([f"{name}: committed msgs/s", cell(fig, dig(fig, "msgs_per_s")), base,
                     fmt(r, 2), f"≥ {target}", verdict(r, ">=", target, why_not(fig, store))])
        figures[f"ratio_{name.lower()}"] = r
    for name, fig in (("TCP", tcp), ("TLS", tls)):
        rows.append([f"{name}: ack latency p50 / p90 / p99 / max ms", lat_cell(fig, "ack"),
                     "—", "—", "—", "—"])
    sc = store.get("synchronous_commit") if "not_run" not in store else None
    points = "; ".join(f"{pt.get('method')} × {pt.get('clients')}: {fmt(pt.get('msgs_per_s'))}"
                       for pt in store.get("points", []) if isinstance(pt, dict))
    return {
        "id": 1, "key": "ingest", "title": title_of(scenario_ingest),
        "what": (f"{p['ingest_agents']} agents uploading batches of {p['batch']} messages of "
                 f"{p['size']} B through 3 workers as fast as acks return, {p['seconds']} s "
                 f"(after {p['warmup']} s warm-up); baseline: the same rows written straight "
                 f"by qabench through libpq, one transaction a batch, into a copy of qagw's "
                 f"table (LIKE ... INCLUDING ALL: same columns and indexes) in the same "
                 f"database (best of multi-row INSERT and COPY over {p['store_clients']} "
                 f"clients)"),
        "header": ["measure", "qagw", "store limit", "ratio", "target", "verdict"],
        "rows": rows, "figures": figures,
        "notes": [f"synchronous_commit = {b.store_settings.get('synchronous_commit')} for both "
                  f"(store limit reports {sc or '—'}); fsync = {b.store_settings.get('fsync')}"]
        + ([f"store limit, msgs/s by method × clients: {points}"] if points else [])
        + anomalies("store limit", store) + anomalies("qagw TCP", tcp) + anomalies("qagw TLS", tls),
    }


# ------------------------------------------------------------------ 2. push latency


def scenario_push(b: Bench) -> dict:
    """Push latency: qagw vs Mosquitto."""
    p = b.p
    qagw = b.measure("push", {**b.gw_opts(b.plain, False), "agents": p["push_agents"],
                              "rate": p["push_rate"], "size": p["size"], "seconds": p["seconds"],
                              "warmup": p["warmup"]},
                     p["seconds"] + p["warmup"])
    try:
        mq = b.peer(peers.Mosquitto(b.dir / "mosquitto", cpus=b.server_cpus))
        mqtt = b.measure("mqtt-push", {"host": "127.0.0.1", "port": mq.port,
                                       "subscribers": p["push_agents"], "rate": p["push_rate"],
                                       "size": p["size"], "seconds": p["seconds"],
                                       "warmup": p["warmup"]},
                         p["seconds"] + p["warmup"] + 2)
        mq.stop()
    except RuntimeError as e:
        mqtt = {"not_run": f"mosquitto: {e}"}
    base_p99 = dig(mqtt, "deliver", "p99_ms")
    rows, figures = [], {"qagw": qagw, "mosquitto": mqtt}
    for name, key in (("UPLOAD → PUSH", "upload_to_push"), ("UPLOAD → DELIVER", "upload_to_deliver")):
        r = ratio(dig(qagw, key, "p99_ms"), base_p99)
        figures[f"ratio_{key}_p99"] = r
        rows.append([name, lat_cell(qagw, key), lat_cell(mqtt, "deliver"), fmt(r, 2), "≤ 2",
                     verdict(r, "<=", 2.0, why_not(qagw, mqtt))])
    return {
        "id": 2, "key": "push", "title": title_of(scenario_push),
        "what": (f"{p['push_agents']} PERSIST agents on their primaries (3 workers), one sender "
                 f"of {p['size']} B messages at {p['push_rate']} msgs/s round robin for {p['seconds']} s: time from the "
                 f"sender's UPLOAD to the recipient's PUSH, and to the message in DELIVER; "
                 f"baseline: Mosquitto (persistence off) with {p['push_agents']} QoS 1 "
                 f"persistent-session subscribers and one QoS 1 publisher at the same rate, "
                 f"publish → message at the subscriber"),
        "header": ["measure (p50 / p90 / p99 / max ms)", "qagw", "Mosquitto", "ratio of p99s",
                   "target", "verdict"],
        "rows": rows, "figures": figures,
        "notes": ["qagw commits every message to PostgreSQL (synchronous_commit = "
                  f"{b.store_settings.get('synchronous_commit')}) before it pushes; Mosquitto "
                  "keeps nothing on disk"] + anomalies("qagw", qagw) + anomalies("Mosquitto", mqtt),
    }


# ------------------------------------------------------------------ 3. durable peer


def scenario_nats(b: Bench) -> dict:
    """Durable peer: qagw vs NATS JetStream."""
    p = b.p
    try:
        nats = b.peer(peers.NatsServer(b.dir / "nats", cpus=b.server_cpus))
        fig = b.measure("nats-ingest", {"url": f"nats://127.0.0.1:{nats.port}",
                                        "agents": p["ingest_agents"], "batch": p["batch"],
                                        "size": p["size"], "seconds": p["seconds"],
                                        "warmup": p["warmup"]},
                        p["seconds"] + p["warmup"])
        nats.stop()
    except RuntimeError as e:
        fig = {"not_run": f"nats-server: {e}"}
    tcp = b.ingest_tcp or {"not_run": "scenario 1 not run"}
    r = ratio(dig(tcp, "msgs_per_s"), dig(fig, "msgs_per_s"))
    rp = ratio(dig(tcp, "ack", "p99_ms"), dig(fig, "ack", "p99_ms"))
    nats_fsync = fig.get("fsync") if "not_run" not in fig else None
    sc = b.store_settings.get("synchronous_commit")
    rows = [
        ["committed msgs/s", cell(tcp, dig(tcp, "msgs_per_s")), cell(fig, dig(fig, "msgs_per_s")),
         fmt(r, 2), "≥ 1", verdict(r, ">=", 1.0, why_not(tcp, fig))],
        ["ack latency p50 / p90 / p99 / max ms", lat_cell(tcp, "ack"), lat_cell(fig, "ack"),
         fmt(rp, 2) + " (p99)" if rp is not None else "—", "—", "—"],
        ["fsync before the ack",
         f"yes (PostgreSQL fsync = {b.store_settings.get('fsync')}, synchronous_commit = {sc})"
         if sc == "on" and b.store_settings.get("fsync") == "on" else f"no (synchronous_commit = {sc})",
         str(nats_fsync) if nats_fsync is not None else
         "no: nats-server's file store acks before its periodic fsync (default settings)",
         "—", "—", "—"],
    ]
    return {
        "id": 3, "key": "nats", "title": title_of(scenario_nats),
        "what": (f"scenario 1's shape ({p['ingest_agents']} agents, batches of {p['batch']} × "
                 f"{p['size']} B, acks awaited, {p['seconds']} s) against nats-server -js with "
                 "file storage, through libnats; the qagw side is scenario 1's TCP run"),
        "header": ["measure", "qagw (TCP)", "NATS JetStream", "ratio", "target", "verdict"],
        "rows": rows, "figures": {"qagw_tcp": tcp, "nats": fig, "ratio": r},
        "notes": anomalies("NATS", fig),
    }


# ------------------------------------------------------------------ 4. idle sessions


def _node_sessions(gw: harness.ConfGateway) -> Optional[int]:
    try:
        return int(gw.admin.metrics().value("qagw_sessions"))
    except Exception:
        return None


def _idle_one(b: Bench, label: str, pid_of, restart, mode: str, opts: Dict[str, object],
              n: int, held_of) -> dict:
    """RSS of a fresh server before and while qabench holds n idle sessions."""
    try:
        restart()
    except (AssertionError, RuntimeError) as e:
        return {"not_run": f"{label}: restart failed: {e}"}
    time.sleep(1.0)  # start-up allocations settle
    pid = pid_of()
    before = peers.rss_kib(pid)
    timeout = b.p["idle_connect_timeout"]
    b.say(f"qabench {mode}: {n} sessions ({label})")
    proc = None
    try:
        proc, log = b.qb.start(mode, {**opts, "sessions": n, "src-prefix": "127.0.0.",
                                      "connect-timeout": timeout, "hold-seconds": timeout + 30})
        t = time.monotonic()
        ready = b.qb.ready(mode, proc, log, timeout + 15)
        connect_s = time.monotonic() - t
        time.sleep(2.0)  # HELLO handling and routing-state writes finish
        after = peers.rss_kib(pid)
        held = held_of()
        if held is None:
            held = ready.get("connected", n)
        if held <= 0:
            return {"not_run": f"{label}: no sessions held", "ready": ready}
        return {"sessions": n, "held": held, "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_session": (after - before) / held, "connect_s": round(connect_s, 1),
                "ready": ready}
    except NotRun as e:
        b.say(f"  not run: {e}")
        return {"not_run": str(e)}
    finally:
        stop_proc(proc)


def scenario_idle(b: Bench) -> dict:
    """Idle sessions: memory per session."""
    p = b.p
    limit = peers.raise_nofile(max(p["idle_sessions"]) + 4096)
    mem_kib = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    mq = peers.Mosquitto(b.dir / "mosquitto-idle", cpus=b.server_cpus)
    b.on_close("mosquitto (idle)", mq.stop)
    runs, rows, notes = {}, [], []

    def restart_mq():
        mq.restart()
        b.pinning["mosquitto"] = peers.cpus_allowed(mq.pid)

    # One process on each side holds every session: the count is capped by the descriptor
    # limit (the hard one, when the run may not raise it), less what a process needs besides.
    cap = (limit - 256) // 100 * 100
    # a larger count runs only when the connect rates of the previous one say it fits in
    # the profile's time budget, leaving this much for scenarios 5 and 6 and the teardown
    reserve_s = 4 * p["handshake_seconds"] + 20 * p["failover_trials"] + 40
    prev: Optional[tuple] = None
    for want in p["idle_sessions"]:
        n = min(want, cap)
        skip = None
        need_s = None
        if prev:
            pn, pr = prev
            secs = [dig(pr[k], "connect_s") for k in ("plain", "tls", "mosquitto")]
            if all(isinstance(x, (int, float)) for x in secs):
                need_s = sum(x * n / pn + 8 for x in secs)
        # memory: a generous 64 KiB a session on each of the three sides, under half of
        # what is available
        if n < want and (prev is not None and n <= prev[0]):
            skip = (f"{want:,} sessions need {want + 256:,} descriptors a process; "
                    f"RLIMIT_NOFILE is {limit:,} and this run may not raise its hard limit")
        elif n * 64 * 3 > mem_kib // 2:
            skip = f"{mem_kib // 1024} MiB available is too little for {n:,} sessions"
        elif prev and need_s is None:
            skip = f"the {prev[0]:,}-session runs were not all measured"
        elif need_s is not None and b.elapsed() + need_s + reserve_s > p["budget_s"]:
            skip = (f"time budget: at the connect rates of the {prev[0]:,}-session runs it "
                    f"would take about {need_s:.0f} s, {b.elapsed():.0f} s of "
                    f"{p['budget_s']} s being used")
        if skip:
            r = {k: {"not_run": skip} for k in ("plain", "tls", "mosquitto")}
        else:
            if n < want:
                notes.append(f"{want:,} sessions asked, {n:,} run: RLIMIT_NOFILE is {limit:,} "
                             "and this run may not raise its hard limit (no CAP_SYS_RESOURCE)")
            r = {
                "plain": _idle_one(b, "qagw plain", lambda: b.plain.pid,
                                   lambda: b.restart_gateway(b.plain), "idle",
                                   b.gw_opts(b.plain, False), n, lambda: _node_sessions(b.plain)),
                "tls": _idle_one(b, "qagw TLS", lambda: b.tls.pid,
                                 lambda: b.restart_gateway(b.tls), "idle",
                                 b.gw_opts(b.tls, True), n, lambda: _node_sessions(b.tls)),
                "mosquitto": _idle_one(b, "mosquitto", lambda: mq.pid, restart_mq, "mqtt-idle",
                                       {"host": "127.0.0.1", "port": mq.port}, n, lambda: None),
            }
            mq.stop()
            prev = (n, r)
        runs[want] = r
        for k in ("plain", "tls", "mosquitto"):
            notes += anomalies(f"{n:,} sessions, {k}", r[k].get("ready"))
        if skip:
            rows.append([f"{want:,} sessions, plain and TLS", "not run", "not run", "—",
                         "≤ 4 / ≤ 16 KiB", f"not run: {skip}"])
            continue
        base = dig(r["mosquitto"], "kib_per_session")
        for name, key, target in (("plain", "plain", 4.0), ("TLS", "tls", 16.0)):
            v = dig(r[key], "kib_per_session")
            held = dig(r[key], "held")
            rows.append([f"{n:,} sessions, {name}: KiB per session"
                         + (f" ({held:,} held)" if held is not None and held != n else ""),
                         cell(r[key], v, 2), cell(r["mosquitto"], base, 2),
                         fmt(ratio(v, base), 2), f"≤ {target:g} KiB",
                         verdict(v, "<=", target, why_not(r[key]), unit=" KiB")])
    notes.append("RSS from /proc/PID/status VmRSS of a freshly started process, before the "
                 f"sessions and 2 s after the last one was up; RLIMIT_NOFILE {limit:,}")
    return {
        "id": 4, "key": "idle", "title": title_of(scenario_idle),
        "what": ("idle PERSIST sessions held by qabench from 127.0.0.x source addresses, plain "
                 "and TLS, over 3 workers: the growth of the qagw process's RSS divided by the "
                 "sessions it holds (its qagw_sessions gauge); baseline: Mosquitto holding as "
                 "many idle MQTT connections"),
        "header": ["measure", "qagw", "Mosquitto (KiB per connection)", "ratio", "target",
                   "verdict"], "summary_col": 1,
        "rows": rows, "figures": {str(k): v for k, v in runs.items()}, "notes": notes,
    }


# ------------------------------------------------------------------ 5. handshakes


def _handshakes(b: Bench, opts: Dict[str, object], port: int, pid: int) -> dict:
    """A handshakes run, with the server's CPU time over it (all its threads)."""
    cpu0 = peers.cpu_seconds(pid)
    fig = b.measure("handshakes", {**opts, "port": port}, b.p["handshake_seconds"])
    if "not_run" not in fig and fig.get("handshakes"):
        fig["server_cpu_s"] = round(peers.cpu_seconds(pid) - cpu0, 2)
        fig["server_cpu_us_per_handshake"] = round(fig["server_cpu_s"] * 1e6 / fig["handshakes"], 1)
    return fig


def scenario_handshakes(b: Bench) -> dict:
    """TLS handshakes: qagw vs openssl s_server."""
    p = b.p
    opts = {"host": "127.0.0.1", "seconds": p["handshake_seconds"], "conns": p["handshake_conns"]}
    worker = next(iter(b.tls.ports))
    qagw = _handshakes(b, opts, b.tls.port(worker), b.tls.pid)
    try:
        s = b.peer(peers.SServer(b.dir / "s_server", CERTS / "server.crt", CERTS / "server.key",
                                 cpus=b.server_cpus))
        base = _handshakes(b, opts, s.port, s.pid)
        s.stop()
    except RuntimeError as e:
        base = {"not_run": f"openssl s_server: {e}"}
    r = ratio(dig(qagw, "per_s"), dig(base, "per_s"))
    rc = ratio(dig(qagw, "server_cpu_us_per_handshake"), dig(base, "server_cpu_us_per_handshake"))
    return {
        "id": 5, "key": "handshakes", "title": title_of(scenario_handshakes),
        "what": (f"new-session (full) TLS handshakes per second, {p['handshake_conns']} "
                 f"connections at a time for {p['handshake_seconds']} s, to one TLS worker (one "
                 "thread) and to `openssl s_server` (one process) with the same certificate and "
                 "key, the same client; and the server's CPU time per handshake"),
        "header": ["measure", "qagw worker", "openssl s_server", "ratio", "target", "verdict"],
        "rows": [["handshakes/s", cell(qagw, dig(qagw, "per_s")), cell(base, dig(base, "per_s")),
                  fmt(r, 2), "≥ 0.8", verdict(r, ">=", 0.8, why_not(qagw, base))],
                 ["server CPU per handshake, µs (the whole process)",
                  cell(qagw, dig(qagw, "server_cpu_us_per_handshake")),
                  cell(base, dig(base, "server_cpu_us_per_handshake")), fmt(rc, 2), "—", "—"]],
        "figures": {"qagw": qagw, "s_server": base, "ratio": r},
        "notes": ["s_server serves one connection at a time with blocking I/O, a qagw worker "
                  "overlaps the handshakes of its connections: the CPU row compares the "
                  "cryptography and TLS bookkeeping alone"]
        + anomalies("qagw", qagw) + anomalies("s_server", base),
    }


# ------------------------------------------------------------------ 6. failover


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def _log_ms(line: str) -> Optional[int]:
    m = _TS.match(line)
    if not m:
        return None
    dt = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _trace(path: Path) -> List[dict]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _wait_trace(path: Path, pred, timeout: float) -> Optional[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in _trace(path):
            if pred(e):
                return e
        time.sleep(0.02)
    return None


def _failover_trial(b: Bench, na, nb, fr: int, fd: float, n: int, loaded: bool) -> dict:
    d = b.dir / "failover" / f"fr{fr}-{n}"
    d.mkdir(parents=True, exist_ok=True)
    trace, log = d / "trace.jsonl", d / "agent.log"
    if not na.alive():
        b.start_gateway(na)
    load = []
    agent = None
    try:
        if loaded:  # the primary and the alternate busy with ingest meanwhile
            for gw in (na, nb):
                load.append(b.qb.start("ingest", {**b.gw_opts(gw, False), "agents": 16,
                                                  "batch": b.p["batch"], "size": b.p["size"],
                                                  "seconds": 60, "warmup": 0})[0])
        argv = peers.taskset(b.client_cpus) + [
            str(harness.QAAGENT), "-id", f"fo-{fr}-{n}-{uuid.uuid4().hex[:6]}", "-db",
            str(d / "agent.db"), "-x", na.stream("fa"), "-x", nb.stream("fb"), "-fr", str(fr),
            "-fd", str(fd), "-policy", "automatic", "-v", "-o", str(log), "-trace", str(trace),
            "run", "--for", "60"]
        with open(d / "agent.stderr", "wb") as errf:
            agent = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=errf, start_new_session=True,
                                     preexec_fn=peers.child_setup)
        first = _wait_trace(trace, lambda e: e.get("result") == "welcome", 15)
        if not first or first.get("server") != "primary":
            raise NotRun(f"no WELCOME from the primary within 15 s (trace: {_trace(trace)[-2:]})")
        time.sleep(1.5)  # a session under 1 s old makes the next cycle wait out the second
        kill_ms = wall_ms()
        na.kill(signal.SIGKILL)
        expected_ms = int(round(fr * fd * 1000))
        welcome = _wait_trace(trace, lambda e: e.get("result") == "welcome" and
                              e.get("ts_ms", 0) >= kill_ms - 1 and e.get("server") != "primary",
                              expected_ms / 1000 + 15)
        if not welcome:
            raise NotRun(f"no WELCOME on the alternate within {expected_ms / 1000 + 15:.1f} s "
                         f"of the kill (trace: {_trace(trace)[-3:]})")
        welcome_ms = welcome["ts_ms"] + welcome.get("took_ms", 0)
        tries = [e for e in _trace(trace)
                 if e.get("ts_ms", 0) >= kill_ms - 1 and e["ts_ms"] <= welcome["ts_ms"]
                 and e.get("server") == "primary"]
        # the first successful sync: the PONG ending the session's first transmission
        time.sleep(0.5)
        alt_stream = welcome.get("stream", "")
        sync_ms = None
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            ms = _log_ms(line)
            if ms and ms >= welcome_ms - 1 and alt_stream in line and " recv PONG" in line:
                sync_ms = ms
                break
        failover = welcome_ms - kill_ms
        return {
            "fr": fr, "fd": fd, "kill_ms": kill_ms, "expected_ms": expected_ms,
            "welcome_ms": failover, "sync_ms": (sync_ms - kill_ms) if sync_ms else None,
            "diff_ms": failover - expected_ms,
            "detect_ms": (tries[0]["ts_ms"] - kill_ms) if tries else None,
            "primary_tries": [{"try": e.get("try"), "at_ms": e["ts_ms"] - kill_ms,
                               "took_ms": e.get("took_ms"), "outcome": e.get("outcome")}
                              for e in tries],
            "alternate": welcome.get("welcome_server"), "alt_took_ms": welcome.get("took_ms"),
            "loaded": loaded,
        }
    except (NotRun, AssertionError, RuntimeError, OSError) as e:
        return {"fr": fr, "fd": fd, "not_run": str(e)}
    finally:
        stop_proc(agent, grace=5)
        for lp in load:
            stop_proc(lp, grace=3)


def scenario_failover(b: Bench) -> dict:
    """Failover: against the -fr/-fd schedule."""
    store = b.pg.create_database("qagw_failover")
    na = b.gateway("fa", ("fa",), store=store, prefix="fo:", sections={})
    nb = b.gateway("fb", ("fb",), store=store, prefix="fo:", sections={})
    b.start_gateway(na)
    b.start_gateway(nb)
    # Load: qabench ingest on both nodes while the agent runs (when that mode is built).
    b.failover_load = False
    load_note = "no load"
    try:
        probe = b.qb.run("ingest", {**b.gw_opts(nb, False), "agents": 1, "batch": 1,
                                    "size": 16, "seconds": 1, "warmup": 0}, 20)
        b.failover_load = bool(probe)
        load_note = (f"under load: qabench ingest, 16 agents on each of the two nodes "
                     f"(batches of {b.p['batch']} × {b.p['size']} B)")
    except NotRun as e:
        load_note = f"without load ({e})"
    trials: Dict[str, List[dict]] = {}
    rows = []
    runs = [(fr, fd, b.failover_load, b.p["failover_trials"]) for fr, fd in ((0, 0.0), (3, 0.5))]
    if b.failover_load and b.p["failover_idle_trials"]:
        # the same without load: the agent's schedule apart from the loaded gateway's answer
        runs += [(fr, fd, False, b.p["failover_idle_trials"]) for fr, fd in ((0, 0.0), (3, 0.5))]
    for fr, fd, loaded, ntrials in runs:
        key = f"-fr {fr}" + (f" -fd {fd:g}" if fr else "") + (", under load" if loaded else ", no load")
        b.say(f"failover {key}: {ntrials} trial(s)")
        trials[key] = [_failover_trial(b, na, nb, fr, fd, len(trials) * 10 + i + 1, loaded)
                       for i in range(ntrials)]
        ok = [t for t in trials[key] if "not_run" not in t]
        if not ok:
            reason = trials[key][0]["not_run"] if trials[key] else "no trial"
            rows.append([key, f"not run: {reason}", fmt(int(round(fr * fd * 1000))), "—", "—",
                         "—", "±100 ms", f"not run: {reason}"])
            continue
        worst = max(ok, key=lambda t: abs(t["diff_ms"]))
        each = lambda k, f=fmt: " / ".join(f(t[k]) for t in ok)  # noqa: E731
        parts = " / ".join(f"{fmt(t['detect_ms'])}, {fmt(t['alt_took_ms'])}" for t in ok)
        met = abs(worst["diff_ms"]) <= 100
        rows.append([key, each("welcome_ms"), fmt(worst["expected_ms"]),
                     each("diff_ms", lambda v: f"{v:+,d}"), parts, each("sync_ms"), "±100 ms",
                     "met" if met else f"missed by {abs(worst['diff_ms']) - 100:,} ms "
                                       f"(worst {worst['diff_ms']:+,d} ms)"])
    return {
        "id": 6, "key": "failover", "title": title_of(scenario_failover),
        "what": ("one `qaagent run` with -x primary -x alternate (two qagw nodes of one worker "
                 "each, one pool) is on its primary; the primary's node is SIGKILLed; measured "
                 "from the kill to the agent's WELCOME on the alternate (its -trace file), and "
                 "to the PONG that ends its first sync there (its -v log); expected: the "
                 "schedule's waits, -fr × -fd"),
        "header": ["agent", "kill → WELCOME on the alternate, ms", "schedule, ms",
                   "difference, ms", "of which: kill → first attempt, alternate's WELCOME round trip, ms",
                   "kill → first sync done, ms", "target", "verdict"],
        "summary_col": 3,
        "rows": rows, "figures": trials, "notes": [load_note],
    }


def title_of(fn) -> str:
    """A scenario's title: its docstring."""
    return fn.__doc__.strip().rstrip(".")


# (number, needs the plain and TLS nodes, function), in the order
SCENARIOS = [
    (1, True, scenario_ingest),
    (2, True, scenario_push),
    (3, False, scenario_nats),
    (4, True, scenario_idle),
    (5, True, scenario_handshakes),
    (6, False, scenario_failover),
]
