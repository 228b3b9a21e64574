"""Scenario 6: failover against the -fr/-fd schedule."""

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

from qagwtest import harness
import peers
from peers import NotRun, stop_proc

if TYPE_CHECKING:
    from run import Bench

from scenarios.common import fmt, title_of, wall_ms

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
