"""Issue 8, scenario 3: store failover. A PostgreSQL primary and a streaming-replication
standby, both started here; qagw (two nodes, three workers) uses libpq's multi-host
`host=127.0.0.1,127.0.0.1 port=P1,P2 ... target_session_attrs=read-write`. With 20
`qaagent run` agents exchanging messages, the primary is SIGKILLed and the standby
promoted: syncs resume by themselves and nothing acknowledged is lost (history checker).

Replication settings (printed by the test):
- primary: `synchronous_standby_names = 'FIRST 1 (qagw_standby)'`, `synchronous_commit = on`
  (a commit returns once the standby has flushed its WAL), `fsync = on`; the standby is a
  `pg_basebackup -R -X stream` copy whose walreceiver says application_name=qagw_standby;
- the standby carries no synchronous_standby_names (the basebackup is taken before it is
  set on the primary), so once promoted it commits alone, without a standby.

The traffic (the agents, their `run` processes, the senders) is qagwtest.traffic.Traffic,
shared by every fault test.
"""

from __future__ import annotations

import os
import signal
import time
from typing import List, Sequence

import psutil
import pytest

from qagwtest import harness
from qagwtest.harness import PGBIN, PgServer, Store
from qagwtest.traffic import Traffic



# ------------------------------------------------------------------ traffic


def log_events_ms(gw, needle: str) -> List[tuple]:
    """(wall ms, line) of every line of gw's log containing needle (the log's UTC time)."""
    import datetime
    out = []
    for line in gw.log_text().splitlines():
        if needle not in line or not line[:4].isdigit():
            continue
        ts = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
        out.append((ts.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000, line))
    return out


def max_gap_s(times_ms: Sequence[int], lo: float, hi: float) -> float:
    """The longest pause between consecutive times (ms) in [lo, hi], in seconds."""
    ts = [t for t in times_ms if lo <= t <= hi]
    return max((b - a for a, b in zip(ts, ts[1:])), default=0) / 1000


def log_lines_after(gw, marker: str, needle: str) -> List[str]:
    """Lines of gw's log containing needle, after the last line containing marker."""
    lines = gw.log_text().splitlines()
    start = max((i for i, l in enumerate(lines) if marker in l), default=-1)
    return [l for l in lines[start + 1:] if needle in l]


# ------------------------------------------------------------------ replication


STANDBY_NAME = "qagw_standby"


class ReplPgServer(PgServer):
    """A PgServer that is a replication primary or a standby made from one: production
    durability (fsync = on, synchronous_commit = on, full_page_writes = on) instead of the
    harness's fast settings. The same trust/loopback rules as PgServer."""

    def init(self) -> "ReplPgServer":
        super().init()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# test_faults_failover: production durability, replication\n"
                    "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
                    "wal_level = replica\nmax_wal_senders = 5\nwal_keep_size = 256MB\n"
                    "hot_standby = on\n")
        return self

    def init_standby_of(self, primary: "ReplPgServer") -> "ReplPgServer":
        """pg_basebackup -R -X stream of primary (over TCP, trust for replication from
        127.0.0.1 as initdb sets it), walreceiver application_name = STANDBY_NAME."""
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o700)
        self._as_pg([str(PGBIN / "pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream",
                     "-c", "fast", "-d",
                     f"host=127.0.0.1 port={primary.port} user=postgres "
                     f"application_name={STANDBY_NAME}"])
        self._as_pg(["mkdir", "-p", str(self.sock)])
        return self

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def promote(self) -> None:
        self._as_pg([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "promote"])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def sigkill_postmaster(pg: ReplPgServer, grace: float = 5.0) -> dict:
    """SIGKILL of the primary's postmaster. Its backends (the gateway's connections, the
    walsender) notice the postmaster's death by themselves; the time they take is returned,
    and any still alive after grace seconds is SIGKILLed too (counted)."""
    pm = pg.postmaster_pid()
    kids = harness.children(pm)
    t0 = time.monotonic()
    os.kill(pm, signal.SIGKILL)
    while any(_alive(k) for k in kids) and time.monotonic() - t0 < grace:
        time.sleep(0.02)
    left = [k for k in kids if _alive(k)]
    gone_s = time.monotonic() - t0
    for k in left:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"postmaster": pm, "backends": len(kids), "left_after_grace": len(left),
            "backends_gone_s": gone_s}


class MultiHostStore(Store):
    """The gateway's view: libpq multi-host conninfo; queries go to `server` (the one the
    test knows to be the primary at the time)."""

    def __init__(self, servers: Sequence[PgServer], dbname: str, extra: str = "") -> None:
        super().__init__(servers[0], dbname)
        self.servers = list(servers)
        self.extra = extra

    @property
    def conninfo(self) -> str:
        hosts = ",".join("127.0.0.1" for _ in self.servers)
        ports = ",".join(str(s.port) for s in self.servers)
        return (f"host={hosts} port={ports} dbname={self.dbname} user=qagw "
                f"target_session_attrs=read-write {self.extra}").strip()


# ------------------------------------------------------------------ the test


PRE_KILL_S = 6      # traffic before the kill
POST_KILL_S = 12    # traffic after it
DRAIN_S = 40


@pytest.fixture
def repl_pair(run_dir, uid):
    """(primary, standby, settings): a primary with synchronous replication to a standby
    made from it with pg_basebackup; both torn down (immediate stop, else SIGKILL) after
    the test's gateways (request this fixture before `qagw`)."""
    base = run_dir / f"repl-{uid}"
    primary = ReplPgServer(base / "primary")
    standby = ReplPgServer(base / "standby")
    try:
        primary.init()
        primary.start()
        primary.admin_sql("create role qagw login")
        primary.admin_sql('create database "qagw" owner qagw')
        standby.init_standby_of(primary)
        standby.start()
        # synchronous replication, set after the basebackup so the standby has none
        primary.admin_sql(f"alter system set synchronous_standby_names = 'FIRST 1 ({STANDBY_NAME})'")
        primary.admin_sql("select pg_reload_conf()")
        harness.wait_until(
            lambda: primary.admin_sql("select sync_state from pg_stat_replication where "
                                      f"application_name = '{STANDBY_NAME}'") == "sync",
            20, what="the standby to be a synchronous standby")
        settings = {k: primary.admin_sql(f"show {k}") for k in
                    ("synchronous_commit", "synchronous_standby_names", "fsync", "wal_level")}
        settings["standby synchronous_standby_names"] = standby.admin_sql(
            "show synchronous_standby_names") or "''"
        settings["standby in recovery"] = standby.admin_sql("select pg_is_in_recovery()")
        yield primary, standby, settings
    finally:
        primary.shutdown()
        standby.shutdown()
        if not os.environ.get("QAGW_E2E_KEEP"):
            harness.rmtree(base)


def test_store_failover_to_promoted_standby(repl_pair, qagw, agent, uid, tmp_path):
    primary, standby, settings = repl_pair
    print(f"\nreplication: primary :{primary.port}, standby :{standby.port}; {settings}")
    assert settings["synchronous_commit"] == "on"
    assert settings["standby in recovery"] == "t"
    tr = None
    try:
        st = MultiHostStore([primary, standby], "qagw")
        n1 = qagw(workers=("ml1", "ml2"), node="n1", store_=st)
        n2 = qagw(workers=("ml3",), node="n2", store_=st)
        print(f"conninfo: {st.conninfo}")
        gws = {"ml1": n1, "ml2": n1, "ml3": n2}
        streams = [gws[w].stream(w) for w in ("ml1", "ml2", "ml3")]
        tr = Traffic(agent, tmp_path, streams, uid)

        tr.start_runs()
        tr.start_senders(seed=uid)
        try:
            acks_before = tr.flowing(PRE_KILL_S)

            kill_ms = time.time() * 1000
            k = sigkill_postmaster(primary)
            t_kill = time.monotonic()
            standby.promote()
            promote_s = time.monotonic() - t_kill
            print(f"SIGKILL primary postmaster {k['postmaster']}: {k['backends']} backends gone "
                  f"after {k['backends_gone_s']:.2f}s ({k['left_after_grace']} SIGKILLed after "
                  f"the grace); standby promoted in {promote_s:.2f}s; acked before: {acks_before}")

            time.sleep(POST_KILL_S)
            tr.check_alive()
        finally:
            tr.stop_senders()
        assert n1.alive() and n2.alive()
        rep = tr.finish(DRAIN_S)
        acks = tr.ack_times_ms()
        gone_ms = kill_ms + k["backends_gone_s"] * 1000
        after = [t for t in acks if t >= gone_ms]
        first_after_s = (after[0] - kill_ms) / 1000 if after else None
        gap = max_gap_s(acks, kill_ms - 2000, kill_ms + POST_KILL_S * 1000)
        store_up = {w: min(((t - kill_ms) / 1000 for t, _ in log_events_ms(g, f"worker {w}: store up")
                            if t > kill_ms), default=None)
                    for w, g in gws.items()}
        store_unavail = len(tr.error_events("store_unavailable"))
        lost_lines = {g.node: len(log_lines_after(g, "==== harness: start", "connection lost"))
                      for g in (n1, n2)}
        print(f"sent {tr.sent} messages; {rep.line()} (refused={rep.refused})")
        print(f"first UPLOAD_ACK after the old primary's last backend was gone: "
              f"{'none' if first_after_s is None else f'{first_after_s:.2f}s'} after the kill "
              f"({len(after)} acks after it); longest pause between acks around the kill: "
              f"{gap:.2f}s; workers' store up again after the kill (s): "
              f"{ {w: None if v is None else round(v, 2) for w, v in store_up.items()} }")
        print(f"store_unavailable errors seen by agents: {store_unavail}; gateway store "
              f"connections lost: {lost_lines}")
        rep.assert_ok()
        assert rep.pending == 0, rep.details()
        assert rep.acked >= 100, rep.details()
        assert first_after_s is not None and first_after_s < POST_KILL_S, first_after_s
        # the promoted standby has every acked message
        rows = Store(standby, "qagw").rows_per_id(sorted(tr.history.acked_ids()))
        missing = [m for m, n in rows.items() if n != 1]
        assert not missing, f"{len(missing)} acked messages not on the promoted standby"
        # the gateways did lose their primary connections and came back by themselves
        assert all(v >= 1 for v in lost_lines.values()), lost_lines
        assert all(v is not None and v < POST_KILL_S for v in store_up.values()), store_up
    finally:
        rcs = tr.stop_runs() if tr is not None else {}
    assert all(v == 0 for v in rcs.values()), rcs


# ------------------------------------------------------------------ the standby lost


STANDBY_DOWN_S = 15


@pytest.mark.long
def test_sync_standby_lost_commits_hang(repl_pair, qagw, agent, uid, tmp_path):
    """The other side of synchronous replication: the standby dies, the primary lives.
    Every commit that must wait for the standby (an upload: synchronous_commit = on)
    hangs in PostgreSQL (wait event SyncRep). With `[store] timeout = 3` the gateway drops
    such a connection after 3 s and answers store_unavailable: nothing is acknowledged
    while the standby is down; once it is back, syncs resume and nothing acked is lost.
    Measured: how many PostgreSQL backends are left waiting (the gateway closed their
    connections, PostgreSQL does not notice while a backend waits for SyncRep)."""
    primary, standby, settings = repl_pair
    print(f"\nreplication: {settings}")
    st = MultiHostStore([primary, standby], "qagw")
    # a second [store] block after the harness's (conninfo): the parser merges them
    timeout3 = {"store": {"timeout": 3}}
    n1 = qagw(workers=("ml1", "ml2"), node="n1", store_=st, sections=timeout3)
    n2 = qagw(workers=("ml3",), node="n2", store_=st, sections=timeout3)
    gws = {"ml1": n1, "ml2": n1, "ml3": n2}
    tr = Traffic(agent, tmp_path, [gws[w].stream(w) for w in ("ml1", "ml2", "ml3")], uid)
    sync_waits: List[int] = []
    try:
        tr.start_runs()
        tr.start_senders(seed=uid)
        tr.flowing(PRE_KILL_S)
        kill_ms = time.time() * 1000
        k = sigkill_postmaster(standby)
        t0 = time.monotonic()
        while time.monotonic() - t0 < STANDBY_DOWN_S:
            sync_waits.append(int(primary.admin_sql(
                "select count(*) from pg_stat_activity where wait_event = 'SyncRep'")))
            time.sleep(1)
        back_ms = time.time() * 1000
        standby.start()
        harness.wait_until(
            lambda: primary.admin_sql("select sync_state from pg_stat_replication where "
                                      f"application_name = '{STANDBY_NAME}'") == "sync",
            30, what="the standby to be synchronous again")
        sync_after = int(primary.admin_sql(
            "select count(*) from pg_stat_activity where wait_event = 'SyncRep'"))
        time.sleep(8)
        tr.check_alive()
    finally:
        tr.stop_senders()
    try:
        rep = tr.finish(DRAIN_S)
        acks = tr.ack_times_ms()
        during = [t for t in acks if kill_ms + 1000 <= t <= back_ms]
        after = [t for t in acks if t >= back_ms]
        lost = {g.node: len(log_lines_after(g, "==== harness: start", "store timeout"))
                for g in (n1, n2)}
        print(f"standby postmaster SIGKILLed ({k['backends']} processes); PostgreSQL backends "
              f"waiting for SyncRep, once a second: {sync_waits}; after the standby was back "
              f"and synchronous: {sync_after}")
        print(f"acks while the standby was down (from +1 s): {len(during)}; first ack after "
              f"it was back: {f'{(after[0] - back_ms) / 1000:.2f}' if after else None} s; gateway "
              f"log lines naming the store timeout: {lost}; store_unavailable seen by agents: "
              f"{len(tr.error_events('store_unavailable'))}")
        print(f"sent {tr.sent}; {rep.line()}")
        rep.assert_ok()
        assert rep.pending == 0, rep.details()
        assert not during, f"{len(during)} uploads acked with the synchronous standby down"
        assert after, "no upload acked after the standby came back"
        assert all(v > 0 for v in lost.values()), lost  # the [store] timeout did fire
    finally:
        rcs = tr.stop_runs()
    assert all(v == 0 for v in rcs.values()), rcs
