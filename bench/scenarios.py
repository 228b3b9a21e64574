"""The scenarios of a benchmark run (issues 7 and 15; docs/benchmarks.md), each with its
same-run baseline. Each takes the run (bench/run.py's Bench: the services, the profile, the
qabench runner) and returns its section of the results: what it measures, a table of
figure, baseline, ratio, target and verdict, and the raw figures of every qabench run.
A figure that could not be measured is {"not_run": REASON} and shows as such.

Push latencies are open-loop, from each message's due time on the sender's schedule (issue
15); a run whose sender achieved under 99 % of the offered rate is `missed`. The qagw runs of
scenarios 1, 2, 8 and 9 carry what each message cost (bench/costs.py): PostgreSQL
transactions, and CPU time of PostgreSQL, qagw and Redis, over the measured window."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

import psutil  # python3-psutil

import costs
from qagwtest import harness
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
    tcp = ingest_costed(b, b.plain, b.store, {**b.gw_opts(b.plain, False), **shape},
                        p["seconds"] + p["warmup"])
    tls = ingest_costed(b, b.tls, b.tls.store, {**b.gw_opts(b.tls, True), **shape},
                        p["seconds"] + p["warmup"])
    b.ingest_tcp = tcp
    limit = dig(store, "best", "msgs_per_s")
    best = dig(store, "best", default={})
    base = cell(store, limit) + (f" ({best.get('method')}, {best.get('clients')} clients)"
                                 if "not_run" not in store and best else "")
    rows, figures = [], {"store_limit": store, "tcp": tcp, "tls": tls}
    for name, fig, target in (("TCP", tcp, 1.0), ("TLS", tls, 0.9)):
        r = ratio(dig(fig, "msgs_per_s"), limit)
        rows.append([f"{name}: committed msgs/s", cell(fig, dig(fig, "msgs_per_s")), base,
                     fmt(r, 2), f"≥ {target}", verdict(r, ">=", target, why_not(fig, store))])
        figures[f"ratio_{name.lower()}"] = r
    for name, fig in (("TCP", tcp), ("TLS", tls)):
        rows.append([f"{name}: ack latency p50 / p90 / p99 / max ms", lat_cell(fig, "ack"),
                     "—", "—", "—", "—"])
    for name, fig in (("TCP", tcp), ("TLS", tls)):
        rows += cost_rows(name + ": ", fig, 6)
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


def quiet_store(b: Bench) -> None:
    """A CHECKPOINT before a latency scenario: a checkpoint that the previous scenario's
    writes triggered (ingest writes ~0.5 GB of WAL, max_wal_size is 1 GB) would otherwise
    run during this one (its writes spread over minutes, full-page images after it starts),
    a cost of the scenario before. Checkpoints this scenario's own writes trigger count."""
    try:
        b.pg.admin_sql("CHECKPOINT")
    except Exception as e:  # reported in the log; the scenario runs regardless
        print(f"CHECKPOINT before the scenario failed: {e}", flush=True)


def scenario_push(b: Bench) -> dict:
    """Push latency: qagw vs Mosquitto."""
    p = b.p
    quiet_store(b)
    qagw = push_costed(b, {"agents": p["push_agents"], "rate": p["push_rate"],
                           "size": p["size"], "seconds": p["seconds"], "warmup": p["warmup"]},
                       p["seconds"] + p["warmup"] + 5)
    mqtt = mqtt_costed(b, "mosquitto", {"subscribers": p["push_agents"], "rate": p["push_rate"],
                                        "size": p["size"], "seconds": p["seconds"],
                                        "warmup": p["warmup"]},
                       p["seconds"] + p["warmup"] + 5)
    base_p99 = dig(mqtt, "deliver", "p99_ms")
    rq, rm = dig(qagw, "achieved_ratio"), dig(mqtt, "achieved_ratio")
    rows, figures = [], {"qagw": qagw, "mosquitto": mqtt}
    for name, key in (("UPLOAD → PUSH", "upload_to_push"), ("UPLOAD → DELIVER", "upload_to_deliver")):
        r = ratio(dig(qagw, key, "p99_ms"), base_p99)
        figures[f"ratio_{key}_p99"] = r
        rows.append([name, lat_cell(qagw, key), lat_cell(mqtt, "deliver"), fmt(r, 2), "≤ 2",
                     rate_guard(verdict(r, "<=", 2.0, why_not(qagw, mqtt)), rq, rm)])
    rows.append(["achieved rate, msgs/s (share of the offered)", rate_cell(qagw),
                 rate_cell(mqtt), "—", f"≥ {PCT_MIN} of {p['push_rate']:,}",
                 rate_verdict(rq, rm)])
    rows.append(["the sender's own queue (due → written), p50 / p90 / p99 / max ms: part of "
                 "the latencies above, for information", lat_cell(qagw, "sender_queue"),
                 lat_cell(mqtt, "sender_queue"), "—", "—", "—"])
    rows += cost_rows("", qagw, 6, mqtt)
    return {
        "id": 2, "key": "push", "title": title_of(scenario_push),
        "what": (f"{p['push_agents']} PERSIST agents on their primaries (3 workers), one sender "
                 f"of {p['size']} B messages on a fixed schedule of {p['push_rate']} msgs/s "
                 f"round robin for {p['seconds']} s (after {p['warmup']} s warm-up), uploading "
                 f"like qaagent (one UPLOAD at a time, up to the worker's max_batch each); "
                 f"open loop: every latency starts at the message's due time on the schedule, "
                 f"so a message that waits in the sender's queue waits on the clock; to the "
                 f"recipient's PUSH, and to the message in DELIVER; baseline: Mosquitto "
                 f"(persistence off) with {p['push_agents']} QoS 1 persistent-session "
                 f"subscribers and one QoS 1 publisher on the same schedule, due time → "
                 f"message at the subscriber"),
        "header": ["measure (p50 / p90 / p99 / max ms)", "qagw", "Mosquitto", "ratio of p99s",
                   "target", "verdict"],
        "summary_cols": {"achieved rate, msgs/s (share of the offered)": 1},
        "rows": rows, "figures": figures,
        "notes": ["qagw commits every message to PostgreSQL (synchronous_commit = "
                  f"{b.store_settings.get('synchronous_commit')}) before it pushes; Mosquitto "
                  "keeps nothing on disk",
                  "a message never delivered counts in the percentiles with the time from its "
                  "due time to the end of the run (3 s after the last one was sent), as lost",
                  f"a run whose sender achieved under {PCT_MIN} of the offered rate "
                  "is missed whatever its latencies"]
        + anomalies("qagw", qagw) + anomalies("Mosquitto", mqtt),
    }


# ------------------------------------------------------------------ costs and rates (issue 15)

ACHIEVED_MIN = 0.99  # a push run under this share of its offered rate is missed
PCT_MIN = f"{ACHIEVED_MIN * 100:g} %"


def meter_for(b: Bench, gw: harness.ConfGateway, store: harness.Store) -> costs.Meter:
    return costs.Meter(b.pg, store.dbname, {"qagw": gw.pid, "redis": b.redis.proc.pid})


def ingest_costed(b: Bench, gw: harness.ConfGateway, store: harness.Store,
                  opts: Dict[str, object], phases_s: float) -> dict:
    """A qabench ingest run into gw, with what each committed message cost over its
    measured window under "costs"."""
    meter = meter_for(b, gw, store)
    marks = costs.Marks(meter)
    try:
        fig = b.measure("ingest", opts, phases_s, on_mark=marks)
    finally:
        meter.close()
    if "not_run" not in fig:  # the messages committed in the window, whenever sent
        fig["costs"] = marks.window(fig.get("acked_in_window", fig.get("committed")))
    return fig


def push_costed(b: Bench, opts: Dict[str, object], phases_s: float) -> dict:
    """A qabench push run against the plain node, with each step's cost under its
    "costs" (and the first step's at the top, for a one-rate run)."""
    meter = meter_for(b, b.plain, b.store)
    marks = costs.Marks(meter)
    try:
        fig = b.measure("push", {**b.gw_opts(b.plain, False), **opts}, phases_s, on_mark=marks)
    finally:
        meter.close()
    if "not_run" not in fig:
        for k, st in enumerate(fig.get("steps") or []):
            st["costs"] = marks.step(k, "stored")
        if fig.get("steps"):
            fig["costs"] = fig["steps"][0]["costs"]
    return fig


def mqtt_costed(b: Bench, name: str, opts: Dict[str, object], phases_s: float) -> dict:
    """A qabench mqtt-push run against a fresh Mosquitto, with Mosquitto's CPU per
    message of each step."""
    mq = None
    try:
        mq = b.peer(peers.Mosquitto(b.dir / name, cpus=b.server_cpus))
        meter = costs.Meter(None, None, {"mosquitto": mq.pid})
        marks = costs.Marks(meter)
        fig = b.measure("mqtt-push", {"host": "127.0.0.1", "port": mq.port, **opts}, phases_s,
                        on_mark=marks)
        if "not_run" not in fig:
            for k, st in enumerate(fig.get("steps") or []):
                st["costs"] = marks.step(k, "received")
            if fig.get("steps"):
                fig["costs"] = fig["steps"][0]["costs"]
        return fig
    except RuntimeError as e:
        return {"not_run": f"mosquitto: {e}"}
    finally:
        if mq is not None:
            mq.stop()


def cost_rows(label: str, fig: dict, ncols: int, peer: Optional[dict] = None) -> List[list]:
    """The two cost rows of a qagw run (and, beside it, a broker's CPU per message)."""
    c = fig.get("costs") if isinstance(fig, dict) and "not_run" not in fig else None
    pc = peer.get("costs") if isinstance(peer, dict) and "not_run" not in peer else None
    first = cell(fig, None) if c is None else costs.xacts_cell(c)
    cpu = cell(fig, None) if c is None else costs.cell(c)
    pad = ["—"] * (ncols - 3)
    if peer is None:
        return [[f"{label}PostgreSQL transactions per message", first] + ["—"] * (ncols - 2),
                [f"{label}CPU µs per message", cpu] + ["—"] * (ncols - 2)]
    pcpu = cell(peer, None) if pc is None else costs.cell(pc, ("mosquitto",))
    return [[f"{label}PostgreSQL transactions per message", first, "— (no store)"] + pad,
            [f"{label}CPU µs per message", cpu, pcpu] + pad]


def rate_cell(fig: dict) -> str:
    if "not_run" in fig:
        return f"not run: {fig['not_run']}"
    a, o, r = fig.get("achieved_rate"), fig.get("offered_rate"), fig.get("achieved_ratio")
    if not isinstance(r, (int, float)):
        return "—"
    return f"{fmt(a)} of {fmt(o)} ({r * 100:.1f} %)"


def rate_verdict(rq: Optional[float], rm: Optional[float]) -> str:
    if rq is None and rm is None:
        return "not run"
    bad = [f"{who} achieved {r * 100:.1f} %" for who, r in (("qagw's sender", rq),
                                                             ("Mosquitto's publisher", rm))
           if isinstance(r, (int, float)) and r < ACHIEVED_MIN]
    if bad:
        return "missed: " + "; ".join(bad)
    return "met" if rq is not None else "not run"


def rate_guard(v: str, rq: Optional[float], rm: Optional[float]) -> str:
    """A latency verdict, overruled when a run did not keep its schedule: qagw's run missing
    its rate is missed whatever its latencies; a baseline missing its rate is no baseline."""
    if isinstance(rq, (int, float)) and rq < ACHIEVED_MIN:
        return (f"missed: qagw's sender achieved {rq * 100:.1f} % of the offered rate "
                f"(< {PCT_MIN})")
    if isinstance(rm, (int, float)) and rm < ACHIEVED_MIN:
        return (f"not shown: Mosquitto's publisher achieved {rm * 100:.1f} % of the offered "
                f"rate (< {PCT_MIN}), no valid baseline")
    return v


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


# ------------------------------------------------------------------ 8. backlog (issue 15)

BACKLOG_DB = "qagw_backlog"


def later_s(p: dict) -> float:
    """About how long scenarios 8 and 9 take (for the idle scenario's time budget)."""
    backlog = 60 + p["backlog_rounds"] * 2 * (p["backlog_seconds"] + p["warmup"] + 6)
    step = p["capacity_warmup"] + p["capacity_seconds"] + 1.5
    capacity = 2 * (len(p["capacity_rates"]) * step + 15)
    return backlog + capacity


def _seed_backlog(b: Bench, conn, prefix: str, recipients: int, per: int, size: int) -> dict:
    """per pending messages (status 1, never expiring, 128 B bodies) for each of the
    recipients PREFIX.0 .. PREFIX.(recipients - 1), straight into qa_messages with INSERT ...
    SELECT generate_series, one statement per recipient; then VACUUM ANALYZE and a CHECKPOINT
    so that neither lands in a measured window."""
    now = wall_ms()
    t = time.monotonic()
    for j in range(recipients):
        with conn.cursor() as cur:
            cur.execute(
                "insert into qa_messages (id, sender, sender_is_agent, recipient, queue,"
                " priority, created_ms, expires_ms, props, body, status, status_ms,"
                " delivery_count)"
                " select gen_random_uuid(), 'backlog-seeder', true, %(rcpt)s, 'q', 4,"
                "  %(now)s - %(per)s + g, 0, '\\x0000'::bytea,"
                "  convert_to(rpad(g::text || ':', %(size)s, 'abcdefghijklmnopqrstuvwxyz'),"
                "             'UTF8'), 1, %(now)s - %(per)s + g, 0"
                " from generate_series(1, %(per)s) g",
                {"rcpt": f"{prefix}.{j}", "now": now, "per": per, "size": size})
    seed_s = time.monotonic() - t
    t = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("vacuum analyze qa_messages")
    b.pg.admin_sql("checkpoint")
    return {"seed_s": round(seed_s, 1), "vacuum_checkpoint_s": round(time.monotonic() - t, 1),
            "pending": _pending(conn, prefix, recipients)}


def _pending(conn, prefix: str, recipients: int) -> Dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("select recipient, count(*) from qa_messages where status = 1"
                    " and recipient = any(%s) group by 1 order by 1",
                    ([f"{prefix}.{j}" for j in range(recipients)],))
        return {r: int(n) for r, n in cur.fetchall()}


def _upload_fns(a: Dict[str, tuple], z: Dict[str, tuple]) -> Dict[str, dict]:
    """pg_stat_user_functions deltas of qa_upload and any qa_upload* function."""
    out = {}
    for name in sorted(set(a) | set(z)):
        if not name.startswith("qa_upload"):
            continue
        c0, t0, s0 = a.get(name, (0, 0.0, 0.0))
        c1, t1, s1 = z.get(name, (0, 0.0, 0.0))
        if c1 > c0:
            out[name] = {"calls": c1 - c0, "total_ms": t1 - t0, "self_ms": s1 - s0}
    return out


def _half(runs: List[dict]) -> dict:
    """The figures of one half of the backlog scenario (one or more ingest runs)."""
    ok = [r for r in runs if "not_run" not in r]
    if not ok:
        return {"not_run": runs[0]["not_run"] if runs else "no run"}
    # by ack time: the messages acked (stored) within each measured window, whenever their
    # batch was sent (acks here can take seconds, a large part of a window)
    out: dict = {"committed": sum(r.get("acked_in_window", r["committed"]) for r in ok),
                 "seconds": sum(r["seconds"] for r in ok), "runs": len(ok)}
    out["msgs_per_s"] = out["committed"] / out["seconds"] if out["seconds"] else None
    cs = [r.get("costs") for r in ok]
    if all(isinstance(c, dict) and "not_run" not in c for c in cs):
        msgs = sum(c["msgs"] for c in cs)
        agg: dict = {"msgs": msgs, "cpu_us_per_msg": {}}
        for label in cs[0].get("cpu_s", {}):
            if all(label in c.get("cpu_s", {}) for c in cs):
                agg["cpu_us_per_msg"][label] = round(
                    sum(c["cpu_s"][label] for c in cs) * 1e6 / msgs, 1)
        if all("pg_xacts" in c for c in cs):
            agg["pg_xacts_per_msg"] = round(sum(c["pg_xacts"] for c in cs) / msgs, 3)
        if all("pg_write_xacts" in c for c in cs):
            agg["pg_write_xacts_per_msg"] = round(sum(c["pg_write_xacts"] for c in cs) / msgs, 3)
        out["costs"] = agg
    else:
        bad = [c for c in cs if not isinstance(c, dict) or "not_run" in c]
        out["costs"] = {"not_run": (bad[0] or {}).get("not_run", "no cost figures")}
    fns: Dict[str, dict] = {}
    for r in ok:
        for name, f in (r.get("functions") or {}).items():
            g = fns.setdefault(name, {"calls": 0, "total_ms": 0.0, "self_ms": 0.0})
            for k in g:
                g[k] += f[k]
    for g in fns.values():
        g["ms_per_call"] = round(g["total_ms"] / g["calls"], 3)
        g["self_ms_per_call"] = round(g["self_ms"] / g["calls"], 3)
    out["functions"] = fns
    lat = [dig(r, "ack", "p99_ms") for r in ok]
    out["ack_p99_ms"] = lat
    return out


def scenario_backlog(b: Bench) -> dict:
    """Backlog: ingest into recipients with pending messages vs into empty ones"""
    p = b.p
    n_rcpt, per = p["backlog_recipients"], p["backlog_pending"]
    store = b.pg.create_database(BACKLOG_DB)
    track = None
    try:  # per-function call counts and times (qa_upload) of the node's backends
        b.pg.admin_sql(f"alter database {BACKLOG_DB} set track_functions = 'all'")
    except RuntimeError as e:
        track = f"track_functions could not be turned on: {e}"
    gw = b.gateway("backlog", ("bl1", "bl2", "bl3"), store=store, prefix="backlog:")
    b.start_gateway(gw)  # migrates the schema
    conn = _pg(store)
    full = "bkl-full"
    try:
        b.say(f"backlog scenario: seeding {n_rcpt} × {per:,} pending messages")
        seed = _seed_backlog(b, conn, full, n_rcpt, per, p["size"])
        b.say(f"  seeded in {seed['seed_s']} s (+{seed['vacuum_checkpoint_s']} s vacuum "
              f"analyze, checkpoint)")
        short = {r: n for r, n in seed["pending"].items() if n < per}
        if len(seed["pending"]) < n_rcpt or short:
            raise NotRun(f"the seed left {seed['pending']} pending (wanted {per:,} each)")
        runs: Dict[str, List[dict]] = {"empty": [], "backlog": []}
        for rnd in range(p["backlog_rounds"]):
            for half in ("empty", "backlog"):
                rprefix = full if half == "backlog" else f"bkl-empty{rnd}"
                opts = {**b.gw_opts(gw, False), "agents": p["ingest_agents"], "batch": p["batch"],
                        "size": p["size"], "seconds": p["backlog_seconds"],
                        "warmup": p["warmup"], "prefix": f"bkl-a{rnd}{half[0]}",
                        "shared-recipients": n_rcpt, "recipient-prefix": rprefix}
                f0 = _fn_stats(conn) if not track else {}
                fig = ingest_costed(b, gw, store, opts, p["backlog_seconds"] + p["warmup"])
                if not track:
                    time.sleep(1.5)  # backends publish their function counts within a second
                    fig["functions"] = _upload_fns(f0, _fn_stats(conn))
                fig["round"], fig["half"] = rnd, half
                runs[half].append(fig)
                b.say(f"  {half} round {rnd}: "
                      f"{fmt(ratio(fig.get('acked_in_window'), fig.get('seconds')))} msgs/s")
        pending_end = _pending(conn, full, n_rcpt)
    finally:
        conn.close()
        gw.stop(grace=8)  # the node's work is done; scenario 9 runs without it
    e, k = _half(runs["empty"]), _half(runs["backlog"])
    r = ratio(k.get("msgs_per_s"), e.get("msgs_per_s"))
    why = why_not(e, k)

    def lat(half: str) -> str:
        return " / ".join(lat_cell(x, "ack") for x in runs[half])

    def fn_cell(h: dict) -> str:
        if track:
            return f"not run: {track}"
        if "not_run" in h:
            return f"not run: {h['not_run']}"
        fns = h.get("functions") or {}
        if not fns:
            return "not run: no qa_upload* calls in pg_stat_user_functions"
        return "; ".join(f"{n} {fmt(f['ms_per_call'], 3)} ({fmt(f['calls'])} calls)"
                         for n, f in fns.items())

    def fn_ratio() -> str:
        a = dig(k, "functions", "qa_upload", "ms_per_call")
        z = dig(e, "functions", "qa_upload", "ms_per_call")
        return fmt(ratio(a, z), 2)

    def xc(h):
        if "not_run" in h:
            return f"not run: {h['not_run']}"
        return costs.xacts_cell(h.get("costs"))

    def cc(h):
        if "not_run" in h:
            return f"not run: {h['not_run']}"
        return costs.cell(h.get("costs"))
    rows = [
        ["committed msgs/s (acked in the windows)", cell(k, k.get("msgs_per_s")),
         cell(e, e.get("msgs_per_s")),
         fmt(r, 2), "≥ 0.9", verdict(r, ">=", 0.9, why)],
        ["ack latency p50 / p90 / p99 / max ms, each run", lat("backlog"), lat("empty"),
         "—", "—", "—"],
        ["qa_upload* in PostgreSQL, ms per call (track_functions)", fn_cell(k), fn_cell(e),
         fn_ratio() + " (qa_upload)", "—", "—"],
        ["PostgreSQL transactions per message", xc(k), xc(e), "—", "—", "—"],
        ["CPU µs per message", cc(k), cc(e), "—", "—", "—"],
        ["pending per recipient, at the start / at the end",
         f"{min(seed['pending'].values()):,}–{max(seed['pending'].values()):,} / "
         f"{min(pending_end.values(), default=0):,}–{max(pending_end.values(), default=0):,}",
         "0 at the start of each run", "—", "—", "—"],
    ]
    every = sorted(runs["empty"] + runs["backlog"],
                   key=lambda x: (x["round"], x["half"] != "empty"))
    order = ", ".join(f"{x['half']} {x['round'] + 1}" for x in every)
    return {
        "id": 8, "key": "backlog", "title": title_of(scenario_backlog),
        "what": (f"a node of its own (workers bl1-bl3, database {BACKLOG_DB}, [store] "
                 f"max_pending raised so that quota never applies); {n_rcpt} recipients seeded "
                 f"with {per:,} pending messages each (status 1, never expiring, {p['size']} B; "
                 f"INSERT ... SELECT generate_series straight into qa_messages, then VACUUM "
                 f"ANALYZE and CHECKPOINT); scenario 1's ingest ({p['ingest_agents']} agents, "
                 f"batches of {p['batch']} × {p['size']} B, 3 workers, acks awaited) with every "
                 f"batch to one of {n_rcpt} fixed recipients (qabench ingest "
                 f"--shared-recipients {n_rcpt}): into the seeded ones, and into {n_rcpt} empty "
                 f"ones (fresh each round), {p['backlog_rounds']} round(s) of "
                 f"{p['backlog_seconds']} s each (+{p['warmup']} s warm-up), alternating "
                 f"({order}); msgs/s = the messages whose UPLOAD_ACK (stored) came back "
                 f"within the measured windows ÷ their length (acks here can take seconds: "
                 f"counting only batches both sent and acked within a window would "
                 f"undercount the slower half); ratio = backlog msgs/s ÷ empty msgs/s"),
        "header": ["measure", f"into {per:,} pending each", "into empty recipients", "ratio",
                   "target", "verdict"],
        "rows": rows,
        "figures": {"ratio": r, "backlog": k, "empty": e, "seed": seed,
                    "pending_end": pending_end, "runs": runs},
        "notes": [f"seeded {n_rcpt * per:,} rows in {seed['seed_s']} s, then VACUUM ANALYZE "
                  f"and CHECKPOINT in {seed['vacuum_checkpoint_s']} s"]
        + [n for x in runs["empty"] + runs["backlog"]
           for n in anomalies(f"{x['half']} round {x['round'] + 1}", x)],
    }


# ------------------------------------------------------------------ 9. push capacity (issue 15)

CAPACITY_P99_MS = 50.0


def _capacity(fig: dict, rates: List[int]) -> Optional[tuple]:
    """(rate, how): the highest offered rate of the steps that passed, in order from the
    first, with how = "exact" (the next step missed), "at_least" (every step passed) or
    "below" (the first step missed); None without figures."""
    steps = fig.get("steps") if isinstance(fig, dict) and "not_run" not in fig else None
    if not steps:
        return None
    best = None
    for st in steps:
        if not st.get("pass"):
            break
        best = st["rate"]
    if best is None:
        return (rates[0], "below")
    if len(steps) == len(rates) and all(st.get("pass") for st in steps):
        return (best, "at_least")
    return (best, "exact")


def _cap_cell(fig: dict, cap: Optional[tuple]) -> str:
    if "not_run" in fig:
        return f"not run: {fig['not_run']}"
    if cap is None:
        return "—"
    v, how = cap
    return {"below": f"< {v:,.0f} (the lowest step missed)",
            "at_least": f"≥ {v:,.0f} (every step passed)"}.get(how, f"{v:,.0f}")


def _cap_ratio(q: Optional[tuple], m: Optional[tuple]) -> tuple:
    """(value, text) of qagw's capacity ÷ Mosquitto's, with the bound it is."""
    if not q or not m:
        return None, "—"
    r = q[0] / m[0]
    if q[1] == "exact" and m[1] == "exact":
        return r, f"{r:.3f}"
    if q[1] in ("exact", "below") and m[1] == "at_least":
        return r, f"{'<' if q[1] == 'below' else '≤'} {r:.3f}"
    if q[1] == "below" and m[1] == "exact":
        return r, f"< {r:.3f}"
    if q[1] == "at_least" and m[1] == "exact":
        return r, f"≥ {r:.3f}"
    return None, "— (both beyond the steps)" if q[1] == m[1] == "at_least" else "—"


def _step_cell(fig: dict, rate: float, key: str) -> str:
    if "not_run" in fig:
        return f"not run: {fig['not_run']}"
    for st in fig.get("steps") or []:
        if st.get("rate") == rate:
            share = (st.get("achieved_ratio") or 0) * 100
            return (f"{fmt(st.get('achieved_rate'))} ({share:.1f} %)"
                    f"; p99 {fmt(dig(st, key, 'p99_ms'), 2)} ms"
                    + (f"; {st['lost']:,} lost" if st.get("lost") else "")
                    + (": passed" if st.get("pass") else ": missed"))
    return "not run: stepping stopped at the first step that missed"


def scenario_capacity(b: Bench) -> dict:
    """Push capacity: qagw vs Mosquitto"""
    p = b.p
    quiet_store(b)
    rates = [int(x) for x in p["capacity_rates"]]
    step_s = p["capacity_seconds"] + p["capacity_warmup"]
    phases = len(rates) * (step_s + 1) + 4
    common = {"steps": ",".join(str(x) for x in rates), "seconds": p["capacity_seconds"],
              "warmup": p["capacity_warmup"], "gap": 0.5, "stop-p99-ms": CAPACITY_P99_MS,
              "stop-achieved": ACHIEVED_MIN, "size": p["size"]}
    qagw = push_costed(b, {"agents": p["capacity_agents"], **common}, phases)
    mqtt = mqtt_costed(b, "mosquitto-capacity", {"subscribers": p["capacity_agents"], **common},
                       phases)
    cq, cm = _capacity(qagw, rates), _capacity(mqtt, rates)
    rv, rtext = _cap_ratio(cq, cm)
    rows = []
    for rate in rates:
        rows.append([f"{rate:,} msgs/s offered: achieved msgs/s (share); p99 ms",
                     _step_cell(qagw, rate, "upload_to_deliver"),
                     _step_cell(mqtt, rate, "deliver"), "—", "—", "—"])
    both = (f" (qagw {_cap_cell(qagw, cq).split(' (')[0]}, Mosquitto "
            f"{_cap_cell(mqtt, cm).split(' (')[0]})" if cq and cm else "")
    rows.append(["push capacity, msgs/s", _cap_cell(qagw, cq), _cap_cell(mqtt, cm),
                 rtext + both, "reported (no target)", "—"])
    notes = []
    for who, fig, labels in (("qagw", qagw, ("postgresql", "qagw", "redis")),
                             ("Mosquitto", mqtt, ("mosquitto",))):
        for st in (fig.get("steps") or []) if "not_run" not in fig else []:
            c = st.get("costs")
            xa = (f"{costs.xacts_cell(c)} PostgreSQL transactions per message; "
                  if who == "qagw" else "")
            notes.append(f"{who} at {st['rate']:,} msgs/s: {xa}CPU µs per message "
                         f"{costs.cell(c, labels)}")
    return {
        "id": 9, "key": "capacity", "title": title_of(scenario_capacity),
        "what": (f"scenario 2's shape with {p['capacity_agents']:,} receivers, the offered rate "
                 f"stepped up ({', '.join(f'{x:,}' for x in rates)} msgs/s), each step "
                 f"{p['capacity_warmup']:g} s warm-up + {p['capacity_seconds']:g} s measured, "
                 f"one session and one run for all steps, each step starting 0.5 s after the "
                 f"previous one's messages are all delivered (or 3 s after its last was sent); "
                 f"open loop as in scenario 2; a step passes when UPLOAD → DELIVER p99 "
                 f"(Mosquitto: due → message at the subscriber) is under "
                 f"{CAPACITY_P99_MS:g} ms and the sender achieved ≥ {PCT_MIN} of the "
                 f"offered rate; stepping stops at the first step that misses; the capacity "
                 f"is the highest rate passed"),
        "header": ["measure", "qagw", "Mosquitto", "ratio (qagw ÷ Mosquitto)", "target",
                   "verdict"],
        "summary_extra": ["push capacity, msgs/s"],
        "rows": rows,
        "figures": {"qagw": qagw, "mosquitto": mqtt, "capacity_qagw": cq,
                    "capacity_mosquitto": cm, "ratio": rv, "ratio_text": rtext},
        "notes": notes + anomalies("qagw", qagw) + anomalies("Mosquitto", mqtt),
    }


# ------------------------------------------------------------------ 7. purge under ingest
#
# Issue 10, must-show 5. Not in SCENARIOS: its phases (a seed of a million rows, a purge of
# minutes) do not fit make bench's budget, and it writes PURGE.json/PURGE.md, not LATEST.*.
# bench/purge.py runs it (make bench-purge).

PURGE_KEEP_NOTHING = 36500  # keep_days: no seeded message is old enough
PURGE_KEEP = 1  # keep_days (1 day) during the purge: the seeded final messages are 2 days old
DAY_MS = 86400 * 1000
GW_SECTIONS_STORE = {"max_pending": 100000000}  # bench/run.py's GW_SECTIONS

_PURGE_BATCH = re.compile(r"^(\S+) \S+\s+worker (\S+): retention purge batch: (\d+) rows in (\d+) ms")
_PURGE_RUN = re.compile(r"retention: expired (\d+), purged (\d+) .* in (\d+) ms")


def _pg(store: harness.Store):
    """A libpq connection of our own (autocommit), as user qagw."""
    if harness.psycopg2 is None:
        raise NotRun("python3-psycopg2 is not installed (the purge scenario seeds through it)")
    conn = harness.psycopg2.connect(host="127.0.0.1", port=store.server.port,
                                    dbname=store.dbname, user="qagw", connect_timeout=5)
    conn.autocommit = True
    return conn


def _one(conn, sql: str, params=()):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def _table_size(conn) -> dict:
    total, heap, idx, n = _one(conn, "select pg_total_relation_size('qa_messages'), "
                                     "pg_relation_size('qa_messages'), "
                                     "pg_indexes_size('qa_messages'), count(*) from qa_messages")
    with conn.cursor() as cur:
        cur.execute("select indexrelid::regclass::text, pg_relation_size(indexrelid) "
                    "from pg_index where indrelid = 'qa_messages'::regclass order by 1")
        indexes = {name: size for name, size in cur.fetchall()}
    return {"rows": n, "total_bytes": total, "heap_bytes": heap, "index_bytes": idx,
            "indexes": indexes, "bytes_per_message": round(total / n, 1) if n else None}


def _seed(b: Bench, conn, rows: int, size: int, recipients: int, batches: int) -> dict:
    """rows messages straight into qa_messages: every second one final (status 20, acked two
    days ago: due for a purge with keep_days = 1), the others pending (status 1, never
    expiring) for `recipients` agents that the ingest does not use. The two kinds alternate
    in the table, as on a store where some agents stay offline while others collect."""
    now = wall_ms()
    t = time.monotonic()
    step = (rows + batches - 1) // batches
    for lo in range(0, rows, step):
        hi = min(rows, lo + step) - 1
        b.say(f"  seed rows {lo:,}-{hi:,}")
        with conn.cursor() as cur:
            cur.execute(
                "insert into qa_messages (id, sender, sender_is_agent, recipient, queue,"
                " priority, created_ms, expires_ms, props, body, status, status_ms,"
                " delivery_count)"
                " select gen_random_uuid(), 'seed-sender-' || (g %% 1000), true,"
                "  'seed-agent-' || (g %% %(rcpt)s), 'inbox', 4,"
                "  %(now)s - 3 * %(day)s + g, 0, '\\x0000'::bytea,"
                "  convert_to(rpad(g::text || ':', %(size)s, 'abcdefghijklmnopqrstuvwxyz'),"
                "             'UTF8'),"
                "  case when g %% 2 = 0 then 20 else 1 end,"
                "  case when g %% 2 = 0 then %(now)s - 2 * %(day)s - (g %% 3600000)"
                "       else %(now)s - 3 * %(day)s + g end,"
                "  case when g %% 2 = 0 then 1 else 0 end"
                " from generate_series(%(lo)s, %(hi)s) g",
                {"rcpt": recipients, "now": now, "day": DAY_MS, "size": size, "lo": lo, "hi": hi})
    seed_s = time.monotonic() - t
    b.say("  vacuum analyze, checkpoint")
    t = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("vacuum analyze qa_messages")
    b.pg.admin_sql("checkpoint")
    final, pending = _one(conn, "select count(*) filter (where status <> 1),"
                                " count(*) filter (where status = 1) from qa_messages")
    return {"seed_s": round(seed_s, 1), "vacuum_checkpoint_s": round(time.monotonic() - t, 1),
            "final": final, "pending": pending, "recipients": recipients, "body_bytes": size,
            "final_status_ms": "now - 2 days - up to 1 h", "size": _table_size(conn)}


class _PurgeSampler(threading.Thread):
    """Once a second, from a connection of its own: the node's lifecycle and ingest counters
    (admin /metrics), qa_messages' statistics (pg_stat_user_tables: deletes count the purge
    whatever the node exports), and every active backend of the server (pg_stat_activity:
    what it waits on, whether it runs qa_purge, autovacuum on the table)."""

    def __init__(self, gw: harness.ConfGateway, store: harness.Store, t0: float,
                 count_deletes: bool = False) -> None:
        super().__init__(daemon=True)
        self.gw, self.store, self.t0 = gw, store, t0
        self.count_deletes = count_deletes  # the purge is not the node's: count deletes
        self.samples: List[dict] = []
        self.halt = threading.Event()
        self.error: Optional[str] = None

    def run(self) -> None:
        try:
            conn = _pg(self.store)
        except Exception as e:
            self.error = str(e)
            return
        try:
            while not self.halt.is_set():
                s = {"t": round(time.monotonic() - self.t0, 2)}
                try:
                    m = self.gw.admin.metrics()
                    s["purged"] = m.get("qagw_messages_purged_total")
                    s["expired"] = m.get("qagw_messages_expired_total")
                    s["stored"] = m.get("qagw_messages_stored_total")
                except Exception as e:  # a sample without the node's figures
                    s["metrics_error"] = str(e)[:200]
                with conn.cursor() as cur:
                    cur.execute("select n_tup_ins, n_tup_del, n_live_tup, n_dead_tup,"
                                " autovacuum_count from pg_stat_user_tables"
                                " where relname = 'qa_messages'")
                    r = cur.fetchone()
                    if r:
                        s.update(zip(("ins", "del", "live", "dead", "autovacuums"), r))
                    cur.execute("select backend_type, coalesce(wait_event_type, 'CPU'),"
                                " coalesce(wait_event, ''), query from pg_stat_activity"
                                " where state = 'active' and pid <> pg_backend_pid()")
                    waits: Dict[str, int] = {}
                    for btype, wtype, wev, query in cur.fetchall():
                        q = query or ""
                        if "qa_purge" in q:
                            s["purge_running"] = f"{wtype}:{wev}".rstrip(":")
                        if btype == "autovacuum worker":
                            s.setdefault("autovacuum", []).append(q[:80])
                            continue
                        if btype == "client backend":
                            k = f"{wtype}:{wev}".rstrip(":")
                            waits[k] = waits.get(k, 0) + 1
                    s["waits"] = waits
                self.samples.append(s)
                self.halt.wait(1.0)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(10)

    def purged(self, base_del: int) -> int:
        """Rows purged so far in this phase: the node's counter, or the table's deletes."""
        for s in reversed(self.samples):
            if s.get("purged") is not None and not self.count_deletes:
                return int(s["purged"])
            if s.get("del") is not None:
                return int(s["del"]) - base_del
        return 0


def _rate_over(samples: List[dict], windows: List[tuple], key: str = "stored") -> Optional[float]:
    """The rate of a counter over the given (start, end) windows, from the samples inside each
    (at least 2 s apart); None when no window has such samples."""
    num = den = 0.0
    for a, c in windows:
        inside = [s for s in samples if a <= s["t"] <= c and s.get(key) is not None]
        if len(inside) >= 2 and inside[-1]["t"] - inside[0]["t"] >= 2:
            num += inside[-1][key] - inside[0][key]
            den += inside[-1]["t"] - inside[0]["t"]
    return num / den if den else None


def _pct(xs: List[float], p: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _purge_log(gw: harness.ConfGateway) -> dict:
    """The purge batches and runs of the node's current start, from its debug log."""
    text = gw.log_text()
    marker = text.rfind("==== harness: start #")
    lines = text[marker:].splitlines() if marker >= 0 else text.splitlines()
    batches, runs = [], []
    for line in lines:
        m = _PURGE_BATCH.match(line)
        if m:
            batches.append({"at": m.group(1), "rows": int(m.group(3)), "ms": int(m.group(4))})
            continue
        m = _PURGE_RUN.search(line)
        if m:
            runs.append({"expired": int(m.group(1)), "purged": int(m.group(2)),
                         "ms": int(m.group(3))})
    return _batch_stats(batches, runs)


def _batch_stats(batches: List[dict], runs: List[dict]) -> dict:
    ms = [x["ms"] for x in batches]
    return {"batches": len(batches), "rows": sum(x["rows"] for x in batches),
            "batch_list": batches,
            "batch_ms_sum": sum(ms), "batch_ms_p50": _pct(ms, 50), "batch_ms_p90": _pct(ms, 90),
            "batch_ms_p99": _pct(ms, 99), "batch_ms_max": max(ms) if ms else None,
            "batch_ms_first10": ms[:10], "batch_ms_last10": ms[-10:], "runs": runs}


def _cpu0_busy() -> Optional[tuple]:
    """(busy, total) seconds of CPU 0 (every field of its times; idle is idle + iowait), for
    the servers' share of their core."""
    times = psutil.cpu_times(percpu=True)
    if not times:
        return None
    t = times[0]
    return sum(t) - t.idle - t.iowait, sum(t)


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of pid and its children (PostgreSQL: the postmaster and its backends,
    those alive now)."""
    total = 0.0
    for p in peers.tree(pid):
        try:
            total += peers.cpu_seconds(p)
        except psutil.NoSuchProcess:
            pass  # a backend that just ended
    return total


def _fn_stats(conn) -> Dict[str, tuple]:
    """pg_stat_user_functions (track_functions = all): calls, total and self ms."""
    with conn.cursor() as cur:
        cur.execute("select funcname, calls, total_time, self_time from pg_stat_user_functions")
        return {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}


def _fn_delta(a: Dict[str, tuple], z: Dict[str, tuple]) -> Dict[str, dict]:
    out = {}
    for name in ("qa_upload", "qa_purge", "qa_expire", "qa_hello"):
        c0, t0, s0 = a.get(name, (0, 0.0, 0.0))
        c1, t1, s1 = z.get(name, (0, 0.0, 0.0))
        if c1 > c0:
            out[name] = {"calls": c1 - c0, "ms_per_call": round((t1 - t0) / (c1 - c0), 2),
                         "self_ms_per_call": round((s1 - s0) / (c1 - c0), 2),
                         "total_s": round((t1 - t0) / 1000, 1)}
    return out


class _DedicatedPurger(threading.Thread):
    """For diagnosis only (bench/purge.py --purger dedicated): the node's retention job as
    gateway/retention.c paces it (qa_purge batches of 1,000, a pause of 4x the batch's
    duration, at least 20 ms; the first batch 5 s after the start), but on a connection of
    its own, so that a batch's duration is its own and not the wait behind the UPLOADs
    pipelined on a worker's store connection."""

    def __init__(self, store: harness.Store, t0: float, before_ms: int) -> None:
        super().__init__(daemon=True)
        self.store, self.t0, self.before_ms = store, t0, before_ms
        self.halt = threading.Event()
        self.batches: List[dict] = []
        self.error: Optional[str] = None

    def run(self) -> None:
        try:
            conn = _pg(self.store)
            if self.halt.wait(5.0):
                return
            while not self.halt.is_set():
                t = time.monotonic()
                n = int(_one(conn, "select qa_purge(%s, 1000)", (self.before_ms,))[0])
                took = time.monotonic() - t
                self.batches.append({"t": round(t - self.t0, 2), "rows": n,
                                     "ms": int(took * 1000)})
                if n < 1000:
                    return
                self.halt.wait(max(0.02, 4 * took))
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def _purge_phase(b: Bench, gw, conn, name: str, keep_days: int, t0: float, opts: dict,
                 chunks: int = 0, purge_target: int = 0, cap_s: float = 0.0,
                 dedicated: bool = False) -> dict:
    """One phase: the node restarted with keep_days, then qabench ingest runs of
    opts["chunk_s"] seconds each (a fresh agent and recipient prefix each, so that no
    recipient's pending count grows from run to run): `chunks` of them, or, with
    purge_target, as long as the purge has not deleted purge_target rows and a run still
    fits in cap_s."""
    p = b.p
    gw.sections["store"]["keep_days"] = keep_days
    gw.write_config()
    b.say(f"purge scenario: {name}: qagw restarted with keep_days = {keep_days}")
    b.restart_gateway(gw)
    base_del = int(_one(conn, "select n_tup_del from pg_stat_user_tables"
                              " where relname = 'qa_messages'")[0] or 0)
    pg_pid = int((b.pg.data / "postmaster.pid").read_text().split()[0])
    cpu0, qagw_cpu, pg_cpu = _cpu0_busy(), peers.cpu_seconds(gw.pid), _tree_cpu_s(pg_pid)
    fn0 = _fn_stats(conn)
    sampler = _PurgeSampler(gw, b.store, t0, count_deletes=dedicated)
    sampler.start()
    purger = None
    if dedicated:
        purger = _DedicatedPurger(b.store, t0, wall_ms() - DAY_MS)
        purger.start()
    t_start = time.monotonic()
    runs = []
    k = 0
    while True:
        elapsed = time.monotonic() - t_start
        if purge_target:
            if sampler.purged(base_del) >= purge_target:
                break
            if elapsed + opts["chunk_s"] + p["warmup"] + 3 > cap_s:
                b.say(f"  the purge is not done within the {cap_s:.0f} s cap")
                break
        elif k >= chunks:
            break
        k += 1
        tag = f"{name}-{k}"
        fig = b.measure("ingest", {**b.gw_opts(gw, False), "agents": p["ingest_agents"],
                                   "batch": p["batch"], "size": p["size"],
                                   "seconds": opts["chunk_s"], "warmup": p["warmup"],
                                   "prefix": tag}, opts["chunk_s"] + p["warmup"])
        end = time.monotonic() - t0
        fig["window_s"] = [round(end - opts["chunk_s"], 2), round(end, 2)]
        fig["prefix"] = tag
        runs.append(fig)
        if "not_run" in fig:
            break
        b.say(f"  {tag}: {fmt(fig.get('msgs_per_s'))} msgs/s, ack p99 "
              f"{fmt(dig(fig, 'ack', 'p99_ms'), 1)} ms; purged so far "
              f"{sampler.purged(base_del):,}")
    sampler.stop()
    if purger:
        purger.stop()
    busy = _cpu0_busy()
    dt = time.monotonic() - t_start
    out = {"phase": name, "keep_days": keep_days, "seconds": round(dt, 1), "runs": runs,
           "samples": sampler.samples, "sampler_error": sampler.error, "base_del": base_del,
           "cpu": {"cpu0_busy": round((busy[0] - cpu0[0]) / (busy[1] - cpu0[1]), 3)
                   if busy and cpu0 and busy[1] > cpu0[1] else None,
                   "qagw_s_per_s": round((peers.cpu_seconds(gw.pid) - qagw_cpu) / dt, 3),
                   "postgresql_s_per_s": round((_tree_cpu_s(pg_pid) - pg_cpu) / dt, 3)},
           "log": _purge_log(gw) if not purger else _batch_stats(purger.batches, []),
           "functions": _fn_delta(fn0, _fn_stats(conn)), "dedicated": dedicated,
           "purger_error": purger.error if purger else None}
    ok = [r for r in runs if "not_run" not in r]
    out["qabench_msgs_per_s"] = (sum(r["committed"] for r in ok) / sum(r["seconds"] for r in ok)
                                 if ok else None)
    out["counter_msgs_per_s"] = _rate_over(sampler.samples, [tuple(r["window_s"]) for r in ok])
    return out


def _inside(phase: dict, purge_target: int) -> dict:
    """When the purge ran (from the samples: t0 the last one with nothing purged, t1 the first
    with everything; so the interval errs long by up to two sample periods), and the ingest
    figures of the runs whose measured window lies within it."""
    samples, base = phase["samples"], phase["base_del"]

    def purged(s):
        if s.get("purged") is not None and not phase.get("dedicated"):
            return int(s["purged"])
        return (s["del"] - base) if s.get("del") is not None else None
    seen = [(s["t"], purged(s)) for s in samples if purged(s) is not None]
    started = [t for t, n in seen if n > 0]
    done = [t for t, n in seen if n >= purge_target]
    t0 = max([t for t, n in seen if n == 0 and (not started or t < started[0])], default=None)
    t1 = done[0] if done else None
    # a run is within the purge when its window starts after the first sample that saw rows
    # purged and ends before the last sample that saw rows left
    first_seen = started[0] if started else None
    last_left = max([t for t, n in seen if n < purge_target], default=None)
    runs = [r for r in phase["runs"] if "not_run" not in r]
    inside = [r for r in runs if first_seen is not None and last_left is not None
              and r["window_s"][0] >= first_seen and r["window_s"][1] <= last_left]
    final_n = seen[-1][1] if seen else 0
    res = {"purge_t0": t0, "purge_t1": t1, "purged": final_n, "finished": bool(done),
           "runs_inside": [r["prefix"] for r in inside]}
    if inside:
        res["qabench_msgs_per_s"] = sum(r["committed"] for r in inside) / sum(
            r["seconds"] for r in inside)
        res["ack_p99_ms"] = [dig(r, "ack", "p99_ms") for r in inside]
    # the node's stored counter over the part of each run's window that lies in the purge
    if first_seen is not None:
        end = t1 if t1 is not None else (seen[-1][0] if seen else None)
        wins = [(max(r["window_s"][0], first_seen), min(r["window_s"][1], end)) for r in runs]
        res["counter_msgs_per_s"] = _rate_over(phase["samples"], [w for w in wins if w[1] > w[0]])
    return res


def scenario_purge(b: Bench, rows: int = 1_000_000, recipients: int = 10_000,
                   chunk_s: float = 15.0, baseline_chunks: int = 2, cap_s: float = 300.0,
                   seed_batches: int = 10, purger: str = "node") -> dict:
    """Purge under ingest: the retention purge against the ingest rate"""
    p = b.p
    t0 = time.monotonic()
    gw = b.gateway("purge", ("ml1", "ml2", "ml3"),
                   sections={"store": {**GW_SECTIONS_STORE, "keep_days": PURGE_KEEP_NOTHING}})
    gw.node_keys["log_level"] = "debug"  # the job logs each purge batch at debug
    gw.write_config()
    # per-function call counts and times (qa_purge, qa_upload) in each phase
    b.pg.admin_sql(f"alter database {b.store.dbname} set track_functions = 'all'")
    b.start_gateway(gw)  # migrates the schema
    conn = _pg(b.store)
    b.say(f"purge scenario: seeding {rows:,} messages")
    seed = _seed(b, conn, rows, p["size"], recipients, seed_batches)
    target = seed["final"]
    b.say(f"  seeded in {seed['seed_s']} s: {seed['size']['total_bytes'] / 2**20:,.0f} MiB, "
          f"{seed['size']['bytes_per_message']} B a message")
    opts = {"chunk_s": chunk_s}
    before = _purge_phase(b, gw, conn, "baseline-before", PURGE_KEEP_NOTHING, t0, opts,
                          chunks=baseline_chunks)
    budget_left = b.p.get("budget_s", 600) - b.elapsed()
    # what must remain after the purge phase: the later baseline, restarts, the teardown
    reserve = baseline_chunks * (chunk_s + p["warmup"] + 3) + 60
    cap = max(chunk_s + p["warmup"] + 5, min(cap_s, budget_left - reserve))
    dedicated = purger == "dedicated"
    purge = _purge_phase(b, gw, conn, "purge-dedicated" if dedicated else "purge",
                         PURGE_KEEP_NOTHING if dedicated else PURGE_KEEP, t0, opts,
                         purge_target=target, cap_s=cap, dedicated=dedicated)
    during = _inside(purge, target)
    left = int(_one(conn, "select count(*) from qa_messages where status <> 1 and status_ms < %s",
                    (wall_ms() - DAY_MS,))[0])
    after = _purge_phase(b, gw, conn, "baseline-after", PURGE_KEEP_NOTHING, t0, opts,
                         chunks=baseline_chunks)
    size_end = _table_size(conn)
    conn.close()

    # ---- figures
    base_rates = [x["qabench_msgs_per_s"] for x in (before, after)]
    base = (sum(base_rates) / 2) if all(isinstance(x, float) for x in base_rates) else None
    rate = during.get("qabench_msgs_per_s")
    how = "qabench, runs within the purge"
    if rate is None and during.get("counter_msgs_per_s") is not None:
        # the purge was shorter than one run: the node's stored counter over the purge
        cb = [x["counter_msgs_per_s"] for x in (before, after)]
        if all(isinstance(x, float) for x in cb):
            rate, base = during["counter_msgs_per_s"], sum(cb) / 2
            how = "qagw_messages_stored_total over the purge (shorter than one qabench run)"
    r = ratio(rate, base)
    drop = (1 - r) if r is not None else None
    log = purge["log"]
    dur_ms = None
    for run in log["runs"]:
        if run["purged"] >= target:
            dur_ms = run["ms"]
    if purge.get("dedicated") and during["finished"] and purge["log"]["batches"]:
        bl = purge["log"]["batch_list"]
        dur_ms = int((bl[-1]["t"] - bl[0]["t"]) * 1000 + bl[-1]["ms"])
    dur_s = dur_ms / 1000 if dur_ms is not None else (
        during["purge_t1"] - during["purge_t0"]
        if during["purge_t1"] is not None and during["purge_t0"] is not None else None)
    purged = int(during["purged"])
    rows_per_s = (purged / dur_s if dur_s else None) if during["finished"] else (
        purged / (purge["samples"][-1]["t"] - during["purge_t0"])
        if purge["samples"] and during["purge_t0"] is not None else None)
    duty = (log["batch_ms_sum"] / 1000 / dur_s) if dur_s and log["batches"] else None
    why = "" if during["finished"] else (
        f"the purge did not finish within {cap:.0f} s ({purged:,} of {target:,} rows)")
    if rate is None:
        why = why or "no ingest figure within the purge"
    v = f"not run: {why}"
    if drop is not None and drop >= 0.2:
        v = f"missed: the rate dropped by {drop * 100:.1f}% (target < 20%)"
    elif drop is not None and why:
        change = (f"dropped by {drop * 100:.1f}%" if drop >= 0 else
                  f"did not drop ({-drop * 100:.1f}% above the baselines)")
        v = (f"not shown: {why}; while it ran the rate {change} (at "
             f"{fmt(rows_per_s)} rows/s all {target:,} would take about "
             f"{fmt(target / rows_per_s if rows_per_s else None)} s)")
    elif drop is not None:
        v = f"met (drop {max(drop, 0) * 100:.1f}% < 20%)"

    def p99s(ph):
        return " / ".join(fmt(dig(x, "ack", "p99_ms"), 0) for x in ph["runs"] if "not_run" not in x)
    rows_t = [
        ["ingest msgs/s (qabench, committed)", fmt(rate), fmt(base_rates[0]),
         fmt(base_rates[1]), fmt(r, 3), "drop < 20 %", v],
        ["ingest msgs/s (qagw_messages_stored_total)", fmt(during.get("counter_msgs_per_s")),
         fmt(before["counter_msgs_per_s"]), fmt(after["counter_msgs_per_s"]),
         fmt(ratio(during.get("counter_msgs_per_s"),
                   (before["counter_msgs_per_s"] or 0) / 2 + (after["counter_msgs_per_s"] or 0) / 2), 3),
         "—", "—"],
        ["ack latency p99 ms, each run", " / ".join(fmt(x, 0) for x in during.get("ack_p99_ms", []))
         or "—", p99s(before), p99s(after), "—", "—", "—"],
        ["CPU 0 busy (servers' core)", fmt(purge["cpu"]["cpu0_busy"], 2),
         fmt(before["cpu"]["cpu0_busy"], 2), fmt(after["cpu"]["cpu0_busy"], 2), "—", "—", "—"],
        ["qa_upload in PostgreSQL, ms per call (track_functions)",
         fmt(dig(purge, "functions", "qa_upload", "ms_per_call"), 2),
         fmt(dig(before, "functions", "qa_upload", "ms_per_call"), 2),
         fmt(dig(after, "functions", "qa_upload", "ms_per_call"), 2), "—", "—", "—"],
    ]
    purge_rows = [
        ["purged rows", f"{purged:,} of {target:,}" + ("" if during["finished"] else " (cap hit)")],
        ["purge duration, s", fmt(dur_s, 1)],
        ["purge rate, rows/s", fmt(rows_per_s)],
        ["purge batches; ms per batch p50 / p90 / p99 / max",
         f"{log['batches']:,}; {fmt(log['batch_ms_p50'])} / {fmt(log['batch_ms_p90'])} / "
         f"{fmt(log['batch_ms_p99'])} / {fmt(log['batch_ms_max'])}"],
        ["share of the purge's time spent in batches", fmt(duty, 3)],
        ["qa_purge in PostgreSQL: calls, ms per call (track_functions), against the job's "
         "batch time p50", f"{fmt(dig(purge, 'functions', 'qa_purge', 'calls'))}, "
         f"{fmt(dig(purge, 'functions', 'qa_purge', 'ms_per_call'), 1)} ms, against "
         f"{fmt(log['batch_ms_p50'])} ms"],
        ["eligible rows left after the phase", f"{left:,}"],
        ["table + indexes after the seed", f"{seed['size']['total_bytes'] / 2**20:,.1f} MiB "
         f"({seed['size']['rows']:,} rows, {seed['size']['bytes_per_message']} B a message)"],
        ["table + indexes at the end", f"{size_end['total_bytes'] / 2**20:,.1f} MiB "
         f"({size_end['rows']:,} rows, {size_end['bytes_per_message']} B a message)"],
    ]
    return {
        "id": 7, "key": "purge", "title": title_of(scenario_purge),
        "what": (("DIAGNOSIS (--purger dedicated): the node's job is off (keep_days = 36500 "
                  "throughout); the purge is the job's pacing on a connection of its own. "
                  if dedicated else "") + f"{rows:,} messages seeded with SQL ({target:,} final, acknowledged two days "
                 f"ago; {seed['pending']:,} pending for {recipients:,} agents the ingest does "
                 f"not use; {p['size']} B bodies); ingest as in scenario 1 ({p['ingest_agents']} "
                 f"agents, batches of {p['batch']} × {p['size']} B, 3 workers) in runs of "
                 f"{chunk_s:g} s (+{p['warmup']} s warm-up), each with fresh agents and "
                 f"recipients: {baseline_chunks} runs with keep_days = {PURGE_KEEP_NOTHING} "
                 f"(nothing due), runs for as long as the purge takes after a restart with "
                 f"keep_days = {PURGE_KEEP}, {baseline_chunks} runs with keep_days = "
                 f"{PURGE_KEEP_NOTHING} again; ratio = the rate of the runs within the purge "
                 f"÷ the mean of the two baselines ({how})"),
        "header": ["measure", "during the purge", "baseline before", "baseline after",
                   "ratio", "target", "verdict"],
        "rows": rows_t, "purge_rows": purge_rows,
        "figures": {"ratio": r, "drop": drop, "rate_during": rate, "baseline_mean": base,
                    "purge_seconds": dur_s, "purge_rows_per_s": rows_per_s, "purged": purged,
                    "target": target, "eligible_left": left, "batch_duty": duty,
                    "seed": seed, "size_end": size_end, "during": during, "cap_s": cap,
                    "phases": [before, purge, after]},
        "notes": [f"ratio measure: {how}"] + [
            n for ph in (before, purge, after) for x in ph["runs"]
            for n in anomalies(f"{ph['phase']} {x.get('prefix')}", x)],
    }


def title_of(fn) -> str:
    """A scenario's title: its docstring."""
    return fn.__doc__.strip().rstrip(".")


# (number, needs the plain and TLS nodes, function), in the issues' order; 7 is the purge
# (bench/purge.py, not part of make bench)
SCENARIOS = [
    (1, True, scenario_ingest),
    (2, True, scenario_push),
    (3, False, scenario_nats),
    (4, True, scenario_idle),
    (5, True, scenario_handshakes),
    (6, False, scenario_failover),
    (8, False, scenario_backlog),
    (9, True, scenario_capacity),
]
