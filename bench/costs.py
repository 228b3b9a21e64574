"""What a message costs (issue 15, "The benchmark must tell the truth"): PostgreSQL
transactions per message and CPU time per message of PostgreSQL, qagw and Redis, read before
and after a measured window (bench/scenarios/; docs/benchmarks.md "How to read").

- CPU: psutil's cpu_times of each server's whole process tree, utime + stime + cutime + cstime
  (peers.tree_cpu_seconds): PostgreSQL is the postmaster and every backend and auxiliary
  process (a backend that ends inside the window still counts, through the postmaster's
  cutime); qagw is the node under test (all its threads); Redis the one redis-server.
- Transactions: pg_stat_database xact_commit + xact_rollback of the node's database, read
  through a connection of our own to the database `postgres` (so that the readings are not
  transactions of the database they count). PostgreSQL publishes a backend's counts when it
  goes idle, at most once a second: a reading lags by up to a second, at both ends of the
  window alike. Beside it, without that lag: the transaction ids assigned in the window
  (pg_snapshot_xmax of the current snapshot; every transaction that writes gets one, a
  read-only one does not), for the whole cluster (the other nodes' background writes
  included, which are few).

A Meter.snap() is taken at qabench's {"mark": ...} lines (the start and end of its measured
window, or of each step); cost() turns two snapshots and the messages committed in between
into per-message figures. Nothing is estimated: a reading that fails leaves its figure out
with the reason under "errors".
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional

from qagwtest import harness
import peers


class Meter:
    """Snapshots of the CPU and transaction counters of one node under test."""

    def __init__(self, pg: Optional[harness.PgServer], dbname: Optional[str],
                 procs: Dict[str, int]) -> None:
        """pg and dbname: the PostgreSQL server and the node's database (None: no
        PostgreSQL figures, e.g. for a Mosquitto run); procs: label -> pid of each process
        tree to account (the label "postgresql" is added for pg's postmaster)."""
        self.pg, self.dbname = pg, dbname
        self.procs = dict(procs)
        self.conn = None
        self.errors: List[str] = []
        if pg is not None:
            self.procs["postgresql"] = int((pg.data / "postmaster.pid").read_text().split()[0])
            if harness.psycopg2 is not None:
                try:
                    self.conn = pg.admin_conn()
                except Exception as e:
                    self.errors.append(f"monitoring connection: {e}")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _xacts(self) -> tuple:
        """(xact_commit + xact_rollback of the database, next transaction id)."""
        sql = ("select (select xact_commit + xact_rollback from pg_stat_database "
               f"where datname = '{self.dbname}'), "
               "pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        if self.conn is not None:
            with self.conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
        else:  # psql: its own backend, in the database postgres
            row = [x or None for x in self.pg.admin_sql(sql).split("|")]  # psql -tA
        return (int(row[0]) if row and row[0] is not None else None,
                int(row[1]) if row and len(row) > 1 else None)

    def snap(self) -> dict:
        s: dict = {"t": time.monotonic(), "cpu_s": {}}
        for label, pid in self.procs.items():
            try:
                s["cpu_s"][label] = peers.tree_cpu_seconds(pid)
            except OSError as e:
                self.errors.append(f"{label} CPU: {e}")
        if self.pg is not None and self.dbname:
            try:
                s["xacts"], s["xid"] = self._xacts()
            except Exception as e:
                self.errors.append(f"pg_stat_database: {e}")
        return s


def cost(a: Optional[dict], z: Optional[dict], msgs, errors: Optional[List[str]] = None) -> dict:
    """Per-message figures between snapshots a and z for msgs messages committed (delivered,
    for a broker) in between; {"not_run": REASON} when a figure cannot be had."""
    if not a or not z:
        return {"not_run": "no snapshot at the " + ("start" if not a else "end") +
                " of the window" + (f" ({'; '.join(errors)})" if errors else "")}
    if not isinstance(msgs, (int, float)) or msgs <= 0:
        return {"not_run": "no message committed in the window"}
    out: dict = {"window_s": round(z["t"] - a["t"], 3), "msgs": int(msgs), "cpu_s": {},
                 "cpu_us_per_msg": {}}
    for label, v in z["cpu_s"].items():
        if label in a["cpu_s"]:
            d = v - a["cpu_s"][label]
            out["cpu_s"][label] = round(d, 3)
            out["cpu_us_per_msg"][label] = round(d * 1e6 / msgs, 1)
    if a.get("xacts") is not None and z.get("xacts") is not None:
        out["pg_xacts"] = z["xacts"] - a["xacts"]
        out["pg_xacts_per_msg"] = round(out["pg_xacts"] / msgs, 3)
    if a.get("xid") is not None and z.get("xid") is not None:
        out["pg_write_xacts"] = z["xid"] - a["xid"]
        out["pg_write_xacts_per_msg"] = round(out["pg_write_xacts"] / msgs, 3)
    if errors:
        out["errors"] = list(errors)
    return out


class Marks:
    """The on_mark callback of a qabench run (peers.Qabench.run): a snapshot at each mark,
    keyed by the mark's name and step ("window_start", ("step_start", 0), ...), with the
    mark itself."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.snaps: Dict[object, dict] = {}
        self.marks: Dict[object, dict] = {}

    def __call__(self, mark: dict) -> None:
        key = (mark["mark"], mark["step"]) if "step" in mark else mark["mark"]
        self.snaps[key] = self.meter.snap()
        self.marks[key] = mark

    def window(self, msgs) -> dict:
        """The cost of an ingest run's measured window."""
        return cost(self.snaps.get("window_start"), self.snaps.get("window_end"), msgs,
                    self.meter.errors)

    def step(self, k: int, msgs_key: str) -> dict:
        """The cost of step k of a push run: from its first message's due time to its end,
        for the messages its step_end mark counts under msgs_key (all of the step's
        messages, its warm-up included: they are the work done in between)."""
        end = self.marks.get(("step_end", k), {})
        return cost(self.snaps.get(("step_start", k)), self.snaps.get(("step_end", k)),
                    end.get(msgs_key), self.meter.errors)


def cell(c: Optional[dict], labels=("postgresql", "qagw", "redis")) -> str:
    """'PostgreSQL 412 / qagw 95 / Redis 21' µs per message, or not run."""
    if not isinstance(c, dict):
        return "—"
    if "not_run" in c:
        return f"not run: {c['not_run']}"
    names = {"postgresql": "PostgreSQL", "qagw": "qagw", "redis": "Redis",
             "mosquitto": "Mosquitto"}
    per = c.get("cpu_us_per_msg", {})
    return " / ".join(f"{names.get(k, k)} {per[k]:,.1f}" for k in labels if k in per) or "—"


def xacts_cell(c: Optional[dict]) -> str:
    if not isinstance(c, dict):
        return "—"
    if "not_run" in c:
        return f"not run: {c['not_run']}"
    v, w = c.get("pg_xacts_per_msg"), c.get("pg_write_xacts_per_msg")
    if not isinstance(v, (int, float)):
        return "not run: " + ("; ".join(c.get("errors", [])) or "no pg_stat_database reading")
    return f"{v:,.3f}" + (f" (writing: {w:,.3f})" if isinstance(w, (int, float)) else "")
