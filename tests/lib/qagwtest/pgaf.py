"""A pg_auto_failover formation on loopback for the fault tests (issue 18): a monitor, a
primary and a secondary with synchronous replication, each a `pg_autoctl` service (the
Debian packages postgresql-15-auto-failover and pg-auto-failover-cli, installed by
scripts/install-deps.sh), all in a temp dir the caller gives, torn down by shutdown().

The commands (as the unprivileged `postgres` user when we are root: the server refuses
root; through `runuser -u postgres --` as stores.PgServer does). Every command gets the
environment below, so that nothing lands in postgres's home or in /tmp and two runs never
see each other:

    XDG_CONFIG_HOME=BASE/xdg/config  XDG_DATA_HOME=BASE/xdg/data  XDG_RUNTIME_DIR=BASE/xdg/run
        (pg_autoctl's config file, state file and pid file: one set per --pgdata)
    PGHOST=BASE/sock  PG_REGRESS_SOCK_DIR=BASE/sock
        (pg_autoctl starts postgres with `-k $PG_REGRESS_SOCK_DIR`: a private socket dir)

    pg_autoctl create monitor --pgdata BASE/monitor --pgport PM --hostname 127.0.0.1 \\
        --listen 127.0.0.1 --auth trust --no-ssl --pgctl PGBIN/pg_ctl --run
    # on the monitor, once it answers (psql over BASE/sock as postgres):
    ALTER SYSTEM SET pgautofailover.<GUC> = ...   (FAST_MONITOR_GUCS below); SELECT pg_reload_conf();
    pg_autoctl create postgres --pgdata BASE/node1 --pgport P1 --hostname 127.0.0.1 \\
        --listen 127.0.0.1 --name node1 --monitor MONITOR_URI --auth trust --no-ssl \\
        --dbname qagw --pgctl PGBIN/pg_ctl --run
    # once node1 reports `single` (the first node is the primary):
    pg_autoctl create postgres ... BASE/node2 --pgport P2 --name node2 ... --run
    # until the monitor reports one `primary` and one `secondary`, and the primary has
    # sync_state = 'sync' for the secondary in pg_stat_replication
    pg_autoctl show uri --formation default --pgdata BASE/monitor
        -> postgres://127.0.0.1:P1,127.0.0.1:P2/qagw?target_session_attrs=read-write&sslmode=prefer

`--auth trust` and `--no-ssl` are for tests on loopback only: every postgres listens on
127.0.0.1 (`--listen`; pg_autoctl's default is '*') and a private socket directory, for the
length of the test. Ports are picked free at run time (procs.free_port).

Replication as pg_autoctl sets it up (checked by start(), see `settings`): the keepers
write `synchronous_commit = on` into each node's postgresql-auto-failover.conf, and the
monitor gives the primary `synchronous_standby_names = 'ANY 1 (pgautofailover_standby_N)'`
once the secondary has caught up (state `secondary`). The formation's
number_sync_standbys is 0 with two data nodes (pg_autoctl refuses more than the standbys
it has minus one): the primary still waits for its one standby; 0 only means that when the
standby is lost the primary goes to `wait_primary` and stops waiting (sync rep off) rather
than blocking writes. The same holds after a failover: the promoted node is
`wait_primary`, writable, committing alone. (Acknowledged-on-two-machines after a failover
needs a third data node, and number_sync_standbys = 1.)

Failover timing. With pg_auto_failover's defaults a killed primary is replaced after about
50 s: the monitor calls a node unhealthy once its health checks fail (every 5 s, 2 retries
2 s apart) and its keeper has not reported for 20 s (node_considered_unhealthy_timeout),
then gives the old primary 30 s to demote itself (primary_demote_timeout) before the
secondary, already promoted but read-only (stop_replication), turns writable
(wait_primary). Those are monitor GUCs (PGC_SIGHUP, in milliseconds); a loopback test
lowers them (FAST_MONITOR_GUCS) so that a loss is acted on in about 3-5 s. On a real
network the defaults protect against a primary that is only slow or partitioned; they
are not advice for production. Nothing on the keepers needs changing: a keeper runs its
loop every second and also wakes up on the monitor's NOTIFY of a new goal state.

kill_node() is a node LOSS: SIGKILL of the node's whole process tree, snapshotted first
(runuser, the `pg_autoctl run` supervisor, its `node-active` and `postgres` services, the
postmaster and every backend), so that no keeper is left to restart postgres locally.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import psutil  # python3-psutil

from . import procs
from .procs import PGBIN, free_port, psycopg2, tail

__all__ = ["Formation", "PgafNode", "FAST_MONITOR_GUCS", "PRIMARY_STATES", "PG_AUTOCTL"]

PG_AUTOCTL = Path(os.environ.get("PG_AUTOCTL", "/usr/bin/pg_autoctl"))

# Monitor GUCs (pgautofailover extension, v2.0; units: milliseconds unless said):
# - health_check_period 1000 (default 5000): a round of health checks every second;
# - health_check_timeout 1000 (5000): a health-check connection that takes longer fails;
# - health_check_max_retries 1 (2) and health_check_retry_delay 200 (2000): a node is
#   marked bad after 2 failed connections 0.2 s apart (a dead postmaster refuses at once);
# - node_considered_unhealthy_timeout 2000 (20000): ... and once its keeper has not
#   reported for 2 s (a killed keeper reports nothing);
# - primary_demote_timeout 2000 (30000): how long the monitor waits for an unreachable old
#   primary to demote itself before the promoted standby takes writes; a killed primary
#   cannot demote, so this is pure waiting in our test;
# - startup_grace_period 1000 (10000): no failover within this long of the monitor's start.
FAST_MONITOR_GUCS: Dict[str, str] = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "200",
    "pgautofailover.node_considered_unhealthy_timeout": "2000",
    "pgautofailover.primary_demote_timeout": "2000",
    "pgautofailover.startup_grace_period": "1000",
}

# reported states of a writable primary: `primary` (with a synchronous standby) or
# `wait_primary` (alone: sync rep off, as after a failover with two data nodes)
PRIMARY_STATES = ("primary", "wait_primary")


def _os_user() -> str:
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tree(pid: int) -> List[int]:
    """pid and all its descendants now."""
    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class PgafNode:
    """One `pg_autoctl ... --run` service (the monitor or a data node) and its pgdata."""

    def __init__(self, formation: "Formation", name: str, port: int) -> None:
        self.formation = formation
        self.name = name
        self.port = port
        self.pgdata = formation.base / name
        self.log = formation.base / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, argv: Sequence[str]) -> None:
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.formation._argv(argv), cwd="/", stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=logf, start_new_session=True,
                                     preexec_fn=lambda: procs._die_with_parent())
        logf.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def postmaster_pid(self) -> Optional[int]:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> List[int]:
        """Every process of this node now: the service's tree (runuser, pg_autoctl and its
        services, the postmaster) and the postmaster's backends (also when the postmaster
        is no longer the service's child)."""
        out: List[int] = []
        if self.proc is not None:
            out += _tree(self.proc.pid)
        pm = self.postmaster_pid()
        if pm is not None and _alive(pm):
            try:
                if any(str(self.pgdata) in a for a in psutil.Process(pm).cmdline()):
                    out += _tree(pm)
            except psutil.NoSuchProcess:
                pass
        return sorted(set(out))

    def sigkill(self, grace: float = 5.0) -> dict:
        """SIGKILL of every process of the node at once (snapshotted first); waits up to
        grace seconds for them to be gone. Returns what was killed."""
        pids = self.pids()
        t0 = time.monotonic()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while any(_alive(p) for p in pids) and time.monotonic() - t0 < grace:
            time.sleep(0.01)
        # anything forked in between (a backend accepted during the snapshot)
        late = [p for p in self.pids() if p not in pids]
        for pid in late:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        return {"pids": len(pids) + len(late), "gone_s": time.monotonic() - t0,
                "left": [p for p in pids + late if _alive(p)]}


class Formation:
    """A pg_auto_failover monitor and two data nodes (node1, node2) on loopback; see the
    module docstring for the commands and settings."""

    def __init__(self, base: Path, dbname: str = "qagw", fast: bool = True,
                 monitor_gucs: Optional[Dict[str, str]] = None) -> None:
        self.base = Path(base)
        self.dbname = dbname
        self.os_user = _os_user()
        self.sock = self.base / "sock"
        self.xdg = self.base / "xdg"
        self.monitor = PgafNode(self, "monitor", free_port())
        self.nodes = [PgafNode(self, "node1", free_port()), PgafNode(self, "node2", free_port())]
        self.gucs = dict(FAST_MONITOR_GUCS if fast else {})
        self.gucs.update(monitor_gucs or {})
        self.settings: Dict[str, str] = {}
        self.timings: Dict[str, float] = {}
        self._mon_conn = None
        self.last_killed: Optional[PgafNode] = None

    # ------------------------------------------------------------ commands

    def _env(self) -> List[str]:
        return ["env", f"XDG_CONFIG_HOME={self.xdg}/config", f"XDG_DATA_HOME={self.xdg}/data",
                f"XDG_RUNTIME_DIR={self.xdg}/run", f"PGHOST={self.sock}",
                f"PG_REGRESS_SOCK_DIR={self.sock}", "PGCONNECT_TIMEOUT=5"]

    def _argv(self, argv: Sequence[str]) -> List[str]:
        out = self._env() + [str(a) for a in argv]
        if os.geteuid() == 0:
            out = ["runuser", "-u", "postgres", "--"] + out
        return out

    def _run(self, argv: Sequence[str], check: bool = True, timeout: float = 60):
        p = subprocess.run(self._argv(argv), cwd="/", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} failed ({p.returncode}):\n"
                               f"{p.stdout}\n{p.stderr}")
        return p

    def autoctl(self, *args, pgdata: Optional[Path] = None, check: bool = True,
                timeout: float = 60) -> str:
        """`pg_autoctl ARGS --pgdata PGDATA` (the monitor's by default); its stdout."""
        pgdata = pgdata or self.monitor.pgdata
        return self._run([PG_AUTOCTL, *args, "--pgdata", pgdata], check=check,
                         timeout=timeout).stdout

    def psql(self, node: PgafNode, sql: str, dbname: str = "postgres", check: bool = True) -> str:
        p = self._run([PGBIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sock,
                       "-p", node.port, "-U", self.os_user, "-d", dbname, "-tA", "-c", sql],
                      check=check, timeout=30)
        return p.stdout.strip()

    # ------------------------------------------------------------ start

    def monitor_uri(self) -> str:
        return (f"postgres://autoctl_node@127.0.0.1:{self.monitor.port}/pg_auto_failover"
                "?sslmode=disable")

    def start(self, timeout: float = 120) -> "Formation":
        t0 = time.monotonic()
        deadline = t0 + timeout
        for d in (self.base, self.sock, self.xdg, self.xdg / "config", self.xdg / "data",
                  self.xdg / "run"):
            d.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700)
        common = ["--hostname", "127.0.0.1", "--listen", "127.0.0.1", "--auth", "trust",
                  "--no-ssl", "--pgctl", PGBIN / "pg_ctl"]
        self.monitor.start([PG_AUTOCTL, "create", "monitor", "--pgdata", self.monitor.pgdata,
                            "--pgport", self.monitor.port, *common, "--run"])
        self._wait(lambda: self._monitor_ready(), deadline, "the monitor to answer")
        self.timings["monitor_s"] = time.monotonic() - t0
        if self.gucs:
            for k, v in self.gucs.items():
                self.psql(self.monitor, f"alter system set {k} = '{v}'")
            self.psql(self.monitor, "select pg_reload_conf()")
        for i, node in enumerate(self.nodes):
            node.start([PG_AUTOCTL, "create", "postgres", "--pgdata", node.pgdata,
                        "--pgport", node.port, *common, "--name", node.name,
                        "--monitor", self.monitor_uri(), "--dbname", self.dbname, "--run"])
            want = "single" if i == 0 else "secondary"
            self._wait(lambda: self._reported(node.name) == want, deadline,
                       f"{node.name} to report {want}", node)
            self.timings[f"{node.name}_s"] = time.monotonic() - t0
            if i == 0:
                # node2's pg_basebackup asks for a spread checkpoint, which paces the
                # dirty buffers of node1's fresh cluster at up to 0.1 s each (about 90 s
                # here); a checkpoint now leaves it next to nothing to write
                self.psql(node, "checkpoint")
        self._wait(lambda: sorted(self.states().values()) == ["primary", "secondary"], deadline,
                   "one primary and one secondary")
        prim = self.primary()
        # 'ANY 1 (...)' makes the standby's sync_state 'quorum' ('FIRST 1' would say 'sync')
        self._wait(lambda: self.psql(prim, "select string_agg(sync_state, ',') from "
                                     "pg_stat_replication") in ("quorum", "sync"), deadline,
                   "the secondary to be a synchronous standby", prim)
        self.timings["ready_s"] = time.monotonic() - t0
        self.settings = {
            "number_sync_standbys": self.autoctl("get", "formation", "number-sync-standbys").strip(),
            "synchronous_commit": self.psql(prim, "show synchronous_commit"),
            "synchronous_standby_names": self.psql(prim, "show synchronous_standby_names"),
            "sync_state": self.psql(prim, "select string_agg(application_name || '=' || "
                                    "sync_state, ',') from pg_stat_replication"),
            "fsync": self.psql(prim, "show fsync"),
        }
        self.settings.update({k: self.psql(self.monitor, f"show {k}") for k in self.gucs})
        return self

    def _wait(self, pred, deadline: float, what: str, node: Optional[PgafNode] = None) -> None:
        while True:
            try:
                if pred():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            for n in [self.monitor] + self.nodes:
                if n.proc is not None and n.proc.poll() is not None:
                    raise AssertionError(f"pg_autoctl {n.name} exited {n.proc.returncode} "
                                         f"while waiting for {what}:\n{tail(n.log, 40)}")
            if time.monotonic() > deadline:
                logs = "".join(f"\n---- {n.name} ----\n{tail(n.log, 25)}"
                               for n in [self.monitor] + self.nodes if n.proc is not None)
                raise AssertionError(f"timed out waiting for {what}; states "
                                     f"{self._states_or_error()}{logs}")
            time.sleep(0.2)

    def _states_or_error(self):
        try:
            return self.node_table()
        except Exception as e:  # noqa: BLE001
            return f"({e})"

    def _monitor_ready(self) -> bool:
        return self.psql(self.monitor, "select count(*) from pg_extension where extname = "
                         "'pgautofailover'", dbname="pg_auto_failover", check=False) == "1"

    # ------------------------------------------------------------ the monitor's view

    def _monitor_query(self, sql: str) -> List[tuple]:
        """Rows of a query on the monitor's pg_auto_failover database, on one kept
        connection (psycopg2 over the private socket dir; psql if psycopg2 is absent)."""
        if psycopg2 is None:
            out = self.psql(self.monitor, sql, dbname="pg_auto_failover")
            return [tuple(l.split("|")) for l in out.splitlines() if l]
        for attempt in (0, 1):
            try:
                if self._mon_conn is None or self._mon_conn.closed:
                    self._mon_conn = psycopg2.connect(host=str(self.sock), port=self.monitor.port,
                                                      user=self.os_user,
                                                      dbname="pg_auto_failover",
                                                      connect_timeout=5)
                    self._mon_conn.autocommit = True
                with self._mon_conn.cursor() as cur:
                    cur.execute(sql)
                    return [tuple(r) for r in cur.fetchall()]
            except psycopg2.Error:
                if self._mon_conn is not None:
                    self._mon_conn.close()
                self._mon_conn = None
                if attempt:
                    raise
        return []

    def node_table(self) -> List[dict]:
        cols = ("nodename", "nodeport", "reportedstate", "goalstate", "health",
                "reportedpgisrunning")
        rows = self._monitor_query(f"select {', '.join(cols)} from pgautofailover.node "
                                   "where formationid = 'default' order by nodeid")
        return [dict(zip(cols, r)) for r in rows]

    def states(self) -> Dict[str, str]:
        """node name -> the state its keeper reported to the monitor last."""
        return {r["nodename"]: r["reportedstate"] for r in self.node_table()}

    def _reported(self, name: str) -> Optional[str]:
        return self.states().get(name)

    def node(self, name: str) -> PgafNode:
        return next(n for n in self.nodes if n.name == name)

    def _in_state(self, states: Sequence[str]) -> PgafNode:
        """The one node whose reported and assigned states are both in states (a lost
        primary's last report stays `primary` while the monitor assigns it `demoted`)."""
        table = self.node_table()
        names = [r["nodename"] for r in table
                 if r["reportedstate"] in states and r["goalstate"] in states]
        assert len(names) == 1, f"nodes in {states}: {names}; {table}"
        return self.node(names[0])

    def primary(self) -> PgafNode:
        """The node the monitor reports as primary (or wait_primary) and keeps there."""
        return self._in_state(PRIMARY_STATES)

    def secondary(self) -> PgafNode:
        return self._in_state(("secondary",))

    def show_state(self) -> str:
        return self.autoctl("show", "state")

    def show_state_json(self) -> list:
        return json.loads(self.autoctl("show", "state", "--json"))

    def events(self, since: Optional[str] = None) -> List[tuple]:
        """(eventtime, nodename, reportedstate, goalstate, description) from the monitor's
        pgautofailover.event, oldest first."""
        where = f"where eventtime >= '{since}'" if since else ""
        return self._monitor_query(
            "select to_char(eventtime, 'HH24:MI:SS.MS'), nodename, reportedstate, goalstate, "
            f"description from pgautofailover.event {where} order by eventid")

    def uri(self) -> str:
        """`pg_autoctl show uri --formation default`: the multi-host URI for libpq (every
        data node, target_session_attrs=read-write)."""
        return self.autoctl("show", "uri", "--formation", "default").strip()

    # ------------------------------------------------------------ faults

    def kill_node(self, node: PgafNode) -> dict:
        """A node LOSS: SIGKILL of its keeper (every pg_autoctl process), its postmaster and
        its backends, all at once, so nothing is left to restart postgres locally."""
        self.last_killed = node
        return node.sigkill()

    def wait_promoted(self, timeout: float = 60, old: Optional[PgafNode] = None,
                      interval: float = 0.05) -> float:
        """Polls the monitor (every interval seconds) until a node other than old (default:
        the node kill_node() killed last) is reported and assigned a writable primary state
        (primary or wait_primary); returns the time.monotonic() of the first poll that saw
        it. The keeper makes postgres writable just before it reports the state."""
        old = old or self.last_killed
        assert old is not None, "wait_promoted: which node was lost?"
        deadline = time.monotonic() + timeout
        while True:
            try:
                for r in self.node_table():
                    if r["nodename"] != old.name and r["reportedstate"] in PRIMARY_STATES \
                            and r["goalstate"] in PRIMARY_STATES:
                        return time.monotonic()
            except Exception:  # noqa: BLE001 - a poll may fail, the next one counts
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no promotion within {timeout}s: {self._states_or_error()}")
            time.sleep(interval)

    def rejoin(self, node: PgafNode, timeout: float = 120) -> float:
        """Starts a lost node's keeper again (`pg_autoctl run`): the monitor makes it a
        secondary of the current primary (pg_rewind if its history diverged). Returns the
        seconds until it is a synchronous standby again."""
        t0 = time.monotonic()
        node.start([PG_AUTOCTL, "run", "--pgdata", node.pgdata])
        deadline = t0 + timeout
        self._wait(lambda: sorted(self.states().values()) == ["primary", "secondary"], deadline,
                   f"{node.name} back as the secondary", node)
        prim = self.primary()
        self._wait(lambda: self.psql(prim, "select string_agg(sync_state, ',') from "
                                     "pg_stat_replication") in ("quorum", "sync"), deadline,
                   f"{node.name} a synchronous standby again", prim)
        return time.monotonic() - t0

    def admin_sql(self, node: PgafNode, sql: str, dbname: Optional[str] = None) -> str:
        """sql as the superuser on node (psql over the private socket dir), its output."""
        return self.psql(node, sql, dbname=dbname or "postgres")

    # ------------------------------------------------------------ teardown

    def shutdown(self) -> None:
        """Stops everything and leaves no process behind; never raises. SIGKILL of every
        process of each node, then of the monitor: the formation's files are thrown away
        (`pg_autoctl stop --immediate` one node at a time took ~10 s of each test)."""
        if self._mon_conn is not None:
            try:
                self._mon_conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._mon_conn = None
        for n in self.nodes + [self.monitor]:
            try:
                n.sigkill(grace=5)
            except Exception:  # noqa: BLE001
                pass


class FormationStore:
    """What the `qagw` fixture's store_= takes: the formation's URI as conninfo."""

    def __init__(self, formation: Formation, user: str = "qagw") -> None:
        self.formation = formation
        self.dbname = formation.dbname
        self.base_uri = formation.uri()
        sep = "&" if "?" in self.base_uri else "?"
        self.uri = f"{self.base_uri}{sep}user={user}"

    @property
    def conninfo(self) -> str:
        return self.uri
