#!/usr/bin/python3
"""Purge under ingest (issue 10, must-show 5; docs/benchmarks.md "Purge under ingest"): on a
store of 1,000,000 messages, the retention job purges the 500,000 final ones while qabench
ingest runs, against the ingest rate with nothing to purge before and after.

    /usr/bin/python3 bench/purge.py [--rows N] [--chunk S] [--cap S] [--keep] [--out DIR]

Writes bench/results/PURGE.json and PURGE.md (never LATEST.*), the logs into
bench/results/logs/purge/. At most 10 minutes. Services as bench/run.py starts them
(PostgreSQL 15 with durable commits, Redis, one qagw node of 3 workers; loopback only;
servers on CPU 0, qabench on CPU 1); binaries from $QAGW_BUILD or $BUILD (default build/).
The scenario itself is bench/scenarios/purge.py scenario_purge.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]

from qagwtest import harness
import peers
import report
import run
import scenarios
from scenarios import fmt

BUDGET_S = 570  # the whole run, under 10 minutes with the teardown


def markdown(res: dict) -> str:
    m, s = res["machine"], res["setup"]
    sc = res["scenario"]
    lines = [
        "# Purge under ingest: `bench/purge.py`",
        "",
        f"Run on {m['date']} in {res['elapsed_s']:.0f} s, qagw at commit {m['qagw_commit']} "
        f"(binaries of {res['build']}).",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average (1/5/15 min) {report._load(m.get('loadavg_at_start'))} at the start, "
        f"{report._load(m.get('loadavg_at_end'))} at the end.",
        f"PostgreSQL `{res['versions'].get('postgresql')}`: "
        + ", ".join(f"{k} = {v}" for k, v in s["postgresql"].items()) + ".",
        "Pinning: servers on CPU " + report._cpus(s["server_cpus"]) + ", qabench on CPU "
        + report._cpus(s["load_cpus"]) + " (read back: "
        + ", ".join(f"{k} {c}" for k, c in s["pinning"].items()) + ").",
        "",
    ]
    if res.get("error"):
        lines += [f"**The run stopped early: {res['error']}**", ""]
    if sc.get("not_run"):
        lines += [f"Not run: {sc['not_run']}", ""]
        return "\n".join(lines)
    lines += [sc["what"] + ".", ""]
    lines += report._table(sc["header"], sc["rows"]) + [""]
    lines += report._table(["the purge", ""], sc["purge_rows"]) + [""]
    f = sc["figures"]
    lines += ["Each ingest run (msgs/s, ack p50 / p99 ms, its measured window in s from the "
              "scenario's start):", ""]
    for ph in f["phases"]:
        runs = "; ".join(
            f"{x.get('prefix')}: " + (f"not run: {x['not_run']}" if "not_run" in x else
                                       f"{fmt(x.get('msgs_per_s'))}, "
                                       f"{fmt(scenarios.dig(x, 'ack', 'p50_ms'), 0)} / "
                                       f"{fmt(scenarios.dig(x, 'ack', 'p99_ms'), 0)}, "
                                       f"{x['window_s'][0]:.0f}-{x['window_s'][1]:.0f}")
            for x in ph["runs"])
        cpu = ph["cpu"]
        lines.append(f"- {ph['phase']} (keep_days = {ph['keep_days']}, {ph['seconds']:.0f} s): "
                     f"{runs or 'no runs'}; CPU 0 busy {fmt(cpu['cpu0_busy'], 2)}, qagw "
                     f"{fmt(cpu['qagw_s_per_s'], 2)} CPU s/s, PostgreSQL "
                     f"{fmt(cpu['postgresql_s_per_s'], 2)} CPU s/s; "
                     + waits_line(ph))
    d = f["during"]
    lines.append(f"- the purge ran from {fmt(d.get('purge_t0'), 1)} s to "
                 f"{fmt(d.get('purge_t1'), 1)} s (samples once a second); runs within it: "
                 f"{', '.join(d['runs_inside']) or 'none'}")
    lines += [f"- {n}" for n in sc.get("notes", [])]
    lines += [f"- scenario time: {sc.get('seconds', 0):.0f} s", ""]
    return "\n".join(lines)


def waits_line(ph: dict) -> str:
    """What the active client backends waited on, as shares of the samples, and how often
    a purge batch or an autovacuum of qa_messages was running when sampled."""
    n = len(ph["samples"]) or 1
    tot: dict = {}
    purge = av = 0
    for s in ph["samples"]:
        for k, v in (s.get("waits") or {}).items():
            tot[k] = tot.get(k, 0) + v
        purge += 1 if s.get("purge_running") else 0
        av += 1 if any("qa_messages" in q for q in s.get("autovacuum", [])) else 0
    top = sorted(tot.items(), key=lambda kv: -kv[1])[:5]
    return ("active backends per sample: " + ", ".join(f"{k} {v / n:.1f}" for k, v in top)
            + f"; a purge batch running in {purge}/{n} samples, autovacuum of qa_messages in "
            f"{av}/{n}")


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="messages seeded (half final)")
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--chunk", type=float, default=15.0, help="seconds of each ingest run")
    ap.add_argument("--baseline-runs", type=int, default=2, help="ingest runs per baseline")
    ap.add_argument("--cap", type=float, default=300.0, help="longest purge phase, s")
    ap.add_argument("--purger", choices=("node", "dedicated"), default="node",
                    help="node: the node's retention job (the must-show); dedicated: for "
                         "diagnosis, the job's pacing on a connection of its own, from here")
    ap.add_argument("--out", default=str(run.RESULTS))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _sigterm)
    for path in (harness.QAGW, peers.QABENCH):
        if not path.is_file():
            print(f"bench/purge.py: {path} is not built (make all)", file=sys.stderr)
            return 1
    workdir = harness.make_tempdir("qagw-purge-")
    os.chmod(workdir, 0o755)  # the postgres user must reach its cluster inside
    b = run.Bench("full", workdir)
    b.p["budget_s"] = BUDGET_S
    if b.client_cpus:  # this script's sampling stays off the servers' core
        os.sched_setaffinity(0, b.client_cpus)
    b.say(f"purge under ingest: work directory {workdir}, servers on CPU {b.server_cpus}, "
          f"load on CPU {b.client_cpus}, binaries of {harness.BUILD}")
    error, sc = None, None
    t = time.monotonic()
    try:
        b.start_store()
        sc = scenarios.scenario_purge(b, rows=args.rows, recipients=args.recipients,
                                      chunk_s=args.chunk, baseline_chunks=args.baseline_runs,
                                      cap_s=args.cap, purger=args.purger)
    except KeyboardInterrupt as e:
        error = f"interrupted ({e})"
    except Exception as e:  # the services are stopped and what was measured is written
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        b.say("stopping services")
        b.close()
    if sc is None:
        sc = {"id": 7, "key": "purge", "title": scenarios.title_of(scenarios.scenario_purge),
              "not_run": error or "?", "rows": [], "header": []}
    sc["seconds"] = round(time.monotonic() - t, 1)
    base = run.results_of(b, argparse.Namespace(profile="full", set=[]), error)
    res = {"elapsed_s": base["elapsed_s"], "machine": base["machine"],
           "versions": {"postgresql": base["versions"]["postgresql"],
                        "redis": base["versions"]["redis"]},
           "build": str(harness.BUILD), "setup": {
               **{k: base["setup"][k] for k in ("pinning", "server_cpus", "load_cpus",
                                                "postgresql")},
               "qagw": "one node, workers ml1-ml3, auth off, loopback, [store] max_pending "
                       "100000000, log_level debug; keep_days per phase"},
           "args": vars(args), "scenario": sc, "error": error}
    run.copy_logs(workdir, out / "logs" / "purge")
    (out / "PURGE.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / "PURGE.md").write_text(markdown(res))
    if args.keep:
        b.say(f"kept {workdir}")
    else:
        harness.rmtree(workdir)
    b.say(f"wrote {out}/PURGE.json, PURGE.md" + (f"; error: {error}" if error else ""))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
