"""Scenarios 1 (ingest against the store limit), 3 (against NATS JetStream) and 8
(ingest into recipients with a backlog)."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Dict, List, Optional

import costs
import peers
from peers import NotRun

if TYPE_CHECKING:
    from run import Bench

from scenarios.purge import _fn_stats, _pg
from scenarios.common import (
    anomalies, cell, cost_rows, dig, fmt, ingest_costed, lat_cell, ratio, title_of, verdict,
    wall_ms, why_not)

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


def _acked(run: dict) -> int:
    """A backlog-scenario run's messages, by ack time: those acked (stored) within its
    measured window, whenever their batch was sent (acks here can take seconds, a large
    part of a window)."""
    return run.get("acked_in_window", run["committed"])


def _rate(run: dict) -> Optional[float]:
    """One backlog-scenario run's msgs/s, counted as _half counts them."""
    if "not_run" in run or not run.get("seconds"):
        return None
    return _acked(run) / run["seconds"]


def _half(runs: List[dict]) -> dict:
    """The figures of one half of the backlog scenario (one or more ingest runs)."""
    ok = [r for r in runs if "not_run" not in r]
    if not ok:
        return {"not_run": runs[0]["not_run"] if runs else "no run"}
    out: dict = {"committed": sum(_acked(r) for r in ok),
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
            # ABBA: a drift of the machine over the scenario (other work, a checkpoint, an
            # autovacuum of the seeded table) falls on both halves alike
            for half in ("empty", "backlog") if rnd % 2 == 0 else ("backlog", "empty"):
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
                      f"{fmt(_rate(fig))} msgs/s")
        pending_end = _pending(conn, full, n_rcpt)
    finally:
        conn.close()
        gw.stop(grace=8)  # the node's work is done; scenario 9 runs without it
    e, k = _half(runs["empty"]), _half(runs["backlog"])
    pooled = ratio(k.get("msgs_per_s"), e.get("msgs_per_s"))
    # The figure: the median of the rounds' ratios (each round's backlog run against its
    # own empty run, next to it in time), not the ratio of the pooled rates, which one
    # disturbed run moves as much as a real difference would.
    per_round = [ratio(_rate(b2), _rate(e2)) for e2, b2 in zip(runs["empty"], runs["backlog"])]
    r = statistics.median(per_round) if per_round and None not in per_round else None
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
        ["ratio of each round (backlog ÷ empty msgs/s, in run order); the pooled rates' ratio",
         " / ".join(fmt(x, 2) for x in per_round) + f"; pooled {fmt(pooled, 2)}", "—",
         "median " + fmt(r, 2), "—", "—"],
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
                   key=lambda x: (x["round"], (x["half"] != "empty") == (x["round"] % 2 == 0)))
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
                 f"({order}: ABBA, so that a drift falls on both alike); msgs/s = the messages "
                 f"whose UPLOAD_ACK (stored) came back within the measured windows ÷ their "
                 f"length (acks here can take seconds: counting only batches both sent and "
                 f"acked within a window would undercount the slower half); ratio = the "
                 f"median over the rounds of backlog msgs/s ÷ empty msgs/s"),
        "header": ["measure", f"into {per:,} pending each", "into empty recipients", "ratio",
                   "target", "verdict"],
        "rows": rows,
        "figures": {"ratio": r, "ratio_per_round": per_round, "ratio_pooled": pooled,
                    "backlog": k, "empty": e, "seed": seed,
                    "pending_end": pending_end, "runs": runs},
        "notes": [f"seeded {n_rcpt * per:,} rows in {seed['seed_s']} s, then VACUUM ANALYZE "
                  f"and CHECKPOINT in {seed['vacuum_checkpoint_s']} s"]
        + [n for x in runs["empty"] + runs["backlog"]
           for n in anomalies(f"{x['half']} round {x['round'] + 1}", x)],
    }
