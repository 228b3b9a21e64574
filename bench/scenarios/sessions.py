"""Scenarios 4 (memory of idle sessions) and 5 (TLS handshakes)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Dict, Optional

import psutil  # python3-psutil

from qagwtest import harness
import peers
from peers import NotRun, stop_proc

if TYPE_CHECKING:
    from run import Bench

from scenarios.ingest import later_s
from scenarios.common import CERTS, anomalies, cell, dig, fmt, ratio, title_of, verdict, why_not

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
    mem_kib = psutil.virtual_memory().available // 1024
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
    reserve_s = 4 * p["handshake_seconds"] + 20 * p["failover_trials"] + 40 + later_s(p)
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
