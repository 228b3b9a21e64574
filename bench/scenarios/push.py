"""Scenarios 2 (push latency against Mosquitto), 9 (push capacity) and 11 (one sender's
UPLOAD pipeline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

import costs

if TYPE_CHECKING:
    from run import Bench

from scenarios.common import (
    ACHIEVED_MIN, PCT_MIN, anomalies, cost_rows, dig, fmt, lat_cell, mqtt_costed,
    push_costed, rate_cell, rate_guard, rate_verdict, ratio, title_of, verdict, why_not)

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
                 f"like qaagent (what is queued, up to the worker's max_batch messages an UPLOAD, then the next UPLOAD once the ack is back); "
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


# ------------------------------------------------------------------ 11. one sender's pipeline

PIPELINE_WINDOWS = (1, 32)  # one UPLOAD at a time (before issue 15's pipelining); the gateway's


def scenario_pipeline(b: Bench) -> dict:
    """One sender's UPLOAD pipeline: UPLOADs in flight at once"""
    p = b.p
    quiet_store(b)
    rate, n, secs = p["pipeline_rate"], p["pipeline_agents"], p["pipeline_seconds"]
    runs = {w: push_costed(b, {"agents": n, "rate": rate, "batch": 1, "window": w,
                               "size": p["size"], "seconds": secs, "warmup": 1}, secs + 1 + 5)
            for w in PIPELINE_WINDOWS}
    one, many = runs[PIPELINE_WINDOWS[0]], runs[PIPELINE_WINDOWS[-1]]
    gain = ratio(dig(many, "achieved_rate"), dig(one, "achieved_rate"))
    rows = [["achieved rate, msgs/s (share of the offered)", rate_cell(one), rate_cell(many),
             fmt(gain, 2), "reported", "—"],
            ["UPLOAD → DELIVER, p50 / p90 / p99 / max ms", lat_cell(one, "upload_to_deliver"),
             lat_cell(many, "upload_to_deliver"),
             # (4 places: window 1's p99 is seconds, window 32's milliseconds)
             fmt(ratio(dig(many, "upload_to_deliver", "p99_ms"),
                       dig(one, "upload_to_deliver", "p99_ms")), 4) + " (p99)", "reported", "—"],
            ["the sender's own queue (due → written), p50 / p90 / p99 / max ms",
             lat_cell(one, "sender_queue"), lat_cell(many, "sender_queue"), "—", "—", "—"]]
    return {
        "id": 11, "key": "pipeline", "title": title_of(scenario_pipeline),
        "what": (f"scenario 2's sender at {rate:,} msgs/s to {n:,} receivers for {secs} s "
                 f"(after 1 s warm-up), every message its own UPLOAD (--batch 1: the case "
                 f"where a sender is held to one commit per round trip), with at most "
                 f"{PIPELINE_WINDOWS[0]} UPLOAD awaiting its ack (a sender that waits for each "
                 f"ack; before issue 15 the gateway read one request at a time, whatever the "
                 f"sender did) against at most {PIPELINE_WINDOWS[-1]} (the gateway's "
                 f"GW_UPLOAD_PIPELINE); open loop from each message's due time"),
        "header": ["measure", f"window {PIPELINE_WINDOWS[0]}", f"window {PIPELINE_WINDOWS[-1]}",
                   "ratio", "target", "verdict"],
        "summary_extra": ["achieved rate, msgs/s (share of the offered)"],
        "rows": rows,
        "figures": {**{f"window_{w}": f for w, f in runs.items()}, "achieved_gain": gain},
        "notes": [f"window {w}: {costs.xacts_cell(f.get('costs'))} PostgreSQL transactions "
                  f"per message; CPU µs per message "
                  f"{costs.cell(f.get('costs'), ('postgresql', 'qagw', 'redis'))}"
                  for w, f in runs.items() if "not_run" not in f]
        + anomalies(f"window {PIPELINE_WINDOWS[0]}", one)
        + anomalies(f"window {PIPELINE_WINDOWS[-1]}", many),
    }
