"""Scenario 7: the purge under ingest (bench/purge.py, not part of make bench)."""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Dict, List, Optional

import psutil  # python3-psutil

from qagwtest import harness
import peers
from peers import NotRun

if TYPE_CHECKING:
    from run import Bench

from scenarios.common import anomalies, dig, fmt, ratio, title_of, wall_ms

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
