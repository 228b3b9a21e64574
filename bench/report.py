"""The files of a benchmark run (bench/run.py): LATEST.json (every figure, the machine, the
versions, the set-up), LATEST.md (a table per scenario with its ratio, target and verdict;
docs/benchmarks.md embeds it) and latency.png (gnuplot: push latency against Mosquitto,
ingest ack latency against NATS)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import List, Optional

PLOT = "latency.png"


def _esc(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(_esc(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_esc(c) for c in r) + " |" for r in rows]
    return out


def _cpus(c) -> str:
    return ",".join(str(x) for x in c) if isinstance(c, list) else str(c)


def _load(la) -> str:
    return " / ".join(f"{x:g}" for x in la) if la else "?"


def markdown(res: dict) -> str:
    m, v, s = res["machine"], res["versions"], res["setup"]
    cmd = "make bench" if res["profile"] == "full" else "make bench-quick"
    lines = [
        f"# Benchmark results: `{cmd}` ({res['profile']} profile)",
        "",
        f"Run on {m['date']} in {res['elapsed_s']:.0f} s, qagw at commit {m['qagw_commit']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average (1/5/15 min) {_load(m.get('loadavg_at_start'))} at the start, "
        f"{_load(m.get('loadavg_at_end'))} at the end (other work on the machine shows here).",
        "Versions: " + "; ".join(f"{k} `{val}`" for k, val in v.items()) + ".",
        "",
        f"Pinning: servers on CPU {_cpus(s['server_cpus'])}, load generators on CPU "
        f"{_cpus(s['load_cpus'])} "
        "(read back from /proc: " + ", ".join(f"{k} {c}" for k, c in s["pinning"].items()) + ").",
        "PostgreSQL: " + ", ".join(f"{k} = {val}" for k, val in s["postgresql"].items()) + ".",
        f"qagw: {s['qagw']}.",
        "",
    ]
    if res.get("overrides"):
        lines += ["Profile settings overridden: " + ", ".join(f"`{o}`" for o in res["overrides"])
                  + ".", ""]
    if res.get("error"):
        lines += [f"**The run stopped early: {res['error']}**", ""]
    summary = []
    for sc in res["scenarios"]:
        if sc.get("not_run"):
            summary.append([str(sc["id"]), sc["title"], "—", "—", f"not run: {sc['not_run']}"])
            continue
        hdr = sc["header"]
        ti = hdr.index("target") if "target" in hdr else None
        for r in sc["rows"]:
            if ti is not None and (r[ti] != "—" or r[0] in sc.get("summary_extra", ())):
                fi = sc.get("summary_cols", {}).get(r[0], sc.get("summary_col", 3))
                summary.append([str(sc["id"]), f"{sc['title']}: {r[0]}",
                                f"{r[fi]} ({hdr[fi]})", r[ti], r[-1]])
    lines += ["## Summary", ""]
    lines += _table(["#", "figure", "figure against the target", "target", "verdict"], summary)
    lines += ["", f"![latency percentiles]({PLOT})", ""]
    for sc in res["scenarios"]:
        lines += [f"## {sc['id']}. {sc['title']}", ""]
        if sc.get("not_run"):
            lines += [f"Not run: {sc['not_run']}", ""]
            continue
        lines += [sc["what"] + ".", ""]
        lines += _table(sc["header"], sc["rows"])
        lines += [""] + [f"- {n}" for n in sc.get("notes", [])]
        lines += [f"- scenario time: {sc.get('seconds', 0):.0f} s", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ the plot


def _lat(fig: Optional[dict], key: str) -> Optional[dict]:
    if not isinstance(fig, dict) or "not_run" in fig:
        return None
    lat = fig.get(key)
    return lat if isinstance(lat, dict) and lat.get("n", 1) else None


def _panel(d: Path, name: str, series: List[tuple], title: str) -> List[str]:
    """A clustered histogram of percentiles (rows) by series (columns); only series with
    figures are drawn, and a panel without any says so."""
    have = [(t, lat) for t, lat in series if lat]
    keys = [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("max", "max_ms")]
    data = d / f"{name}.dat"
    with open(data, "w") as f:
        for label, k in keys:
            vals = []
            for _, lat in have:
                x = lat.get(k)
                vals.append(f"{x:.3f}" if isinstance(x, (int, float)) and x > 0 else "-")
            f.write(label + " " + " ".join(vals) + "\n")
    out = [f'set title "{title}"']
    if not have:
        return out + ["unset logscale y", "set yrange [0:1]", "set xrange [0:1]", "unset border",
                      "unset xtics", "unset ytics", "unset ylabel", "unset grid",
                      'set label 1 "not run (see LATEST.md)" at 0.5,0.5 center font ",14"',
                      "plot 2 notitle", "unset label 1", "set autoscale", "set border",
                      "set xtics", "set ytics", "set grid ytics", "set ylabel 'ms (log scale)'"]
    parts = []
    for i, (t, _) in enumerate(have):
        src = f"'{data}'" if i == 0 else "''"
        parts.append(f"{src} using {i + 2}{':xtic(1)' if i == 0 else ''} title \"{t}\"")
    return out + ["set logscale y", "set autoscale", "plot " + ", ".join(parts)]


def plot(res: dict, out: Path, workdir: Path) -> Optional[str]:
    """Writes out/latency.png with gnuplot; the error text when that fails."""
    sc = {s.get("key"): s for s in res["scenarios"]}
    push = sc.get("push", {}).get("figures", {})
    ing = sc.get("ingest", {}).get("figures", {})
    nats = sc.get("nats", {}).get("figures", {})
    script = [
        "set terminal pngcairo size 1280,520 font 'sans,10'",
        f"set output '{out / PLOT}'",
        "set multiplot layout 1,2 title \"qagw latency percentiles vs the same-run peers "
        f"({res['profile']} profile, {res['machine']['date']})\"",
        "set style data histograms", "set style histogram clustered gap 1",
        "set style fill solid 0.85 border -1", "set boxwidth 0.9",
        'set datafile missing "-"', "set ylabel 'ms (log scale)'", "set grid ytics",
        "set key below",
    ]
    script += _panel(workdir, "push", [
        ("qagw UPLOAD → PUSH", _lat(push.get("qagw"), "upload_to_push")),
        ("qagw UPLOAD → DELIVER", _lat(push.get("qagw"), "upload_to_deliver")),
        ("Mosquitto publish → deliver", _lat(push.get("mosquitto"), "deliver")),
    ], "Push latency from the due time (scenario 2)")
    script += _panel(workdir, "ingest", [
        ("qagw TCP", _lat(ing.get("tcp"), "ack")),
        ("qagw TLS", _lat(ing.get("tls"), "ack")),
        ("NATS JetStream", _lat(nats.get("nats"), "ack")),
    ], "Ingest ack latency (scenarios 1 and 3)")
    script += ["unset multiplot"]
    (workdir / "latency.gp").write_text("\n".join(script) + "\n")
    try:
        p = subprocess.run(["gnuplot", str(workdir / "latency.gp")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if p.returncode == 0 else p.stdout[-500:]


BEGIN, END = "<!-- bench results: begin -->", "<!-- bench results: end -->"


def update_docs(md: str, docs: Path, plot_path: str) -> bool:
    """Replaces the section between the markers of docs (docs/benchmarks.md) with md, its
    headings two levels down and the plot's path relative to docs. False without markers."""
    text = docs.read_text()
    if BEGIN not in text or END not in text:
        return False
    body = "\n".join("##" + ln if ln.startswith("#") else ln for ln in md.splitlines())
    body = body.replace(f"]({PLOT})", f"]({plot_path})")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    docs.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    return True


def write_all(res: dict, out: Path, docs: Optional[Path] = None) -> None:
    """The three files in out; with docs, its results section too."""
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "logs"
    workdir.mkdir(exist_ok=True)
    err = plot(res, out, workdir)
    if err:
        res["plot_error"] = err
    md = markdown(res)
    (out / "LATEST.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / "LATEST.md").write_text(md + "\n")
    if docs is not None:
        update_docs(md, docs, os.path.relpath(out / PLOT, docs.parent))
