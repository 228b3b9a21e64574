"""Figures, table cells, verdicts and the costs (CPU and transactions a message) that
every scenario of bench/run.py reports with."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Dict, List, Optional

import costs
from qagwtest import harness
import peers

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

def title_of(fn) -> str:
    """A scenario's title: its docstring."""
    return fn.__doc__.strip().rstrip(".")
