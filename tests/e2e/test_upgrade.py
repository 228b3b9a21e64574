"""Issue 15: upgrading a store made by the previous release (commit adbbedc, schema
versions 1..7, fixtures/store_adbbedc.sql) to this build's schema (store/sql/migrations/),
with messages in it.

The old store is made by hand, as that release left it: the fixture (its tables, indexes
and functions, exactly as its migrations 1..7 created them), versions 1..7 recorded in
qa_schema_version, and messages put in with the old functions: `qa_send` for three
recipients, some made final by an operator's UPDATE, and an old-style `qa_upload` by an
agent sender (one of its messages already past its expiry, not yet marked).

Then the current qagw starts on that database. Asserted:
- qa_schema_version holds 1..N, N the number of files in store/sql/migrations/, the old
  rows untouched, and the log names each new version once (and none of the old ones);
- qa_pending(r) equals the count of status-1 rows for every recipient of the store, right
  after the upgrade and after every later step (expiry, purge, FETCH/ack, uploads);
- the old pending messages reach their agent: HELLO, FETCH returns exactly them (ids,
  queue, bodies), DELIVER_ACK takes them out of the count;
- an UPLOAD through qagw to an upgraded recipient is stored and counted;
- the quota holds against the migrated counts: with [store] max_pending equal to one
  recipient's migrated pending count, an UPLOAD to it gets result 5 (quota), one to a
  recipient below it 0 (stored);
- a second start of the same build (no migration pending) changes nothing: versions, their
  applied_at, the recorded functions' digest, every counter and pending count.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.harness import REPO, msg, wait_until

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store_adbbedc.sql"
OLD_VERSIONS = 7
HOST = "127.0.0.1"


def build_schema_version() -> int:
    """The newest schema version of this build: one file per migration."""
    files = sorted((REPO / "store" / "sql" / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
    assert files, "no migrations in store/sql/migrations"
    nums = [int(f.name[:3]) for f in files]
    assert nums == list(range(1, len(files) + 1)), f"migrations not numbered 1..N: {nums}"
    return len(files)


def psql_file(st: harness.Store, path: Path) -> None:
    """Runs an SQL file in st's database as role qagw (the gateway's), in one transaction."""
    p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                        "-h", HOST, "-p", str(st.server.port), "-U", "qagw", "-d", st.dbname,
                        "-f", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    assert p.returncode == 0, f"psql -f {path.name} failed ({p.returncode}):\n{p.stdout}"


def count_mismatches(st: harness.Store) -> list:
    """(recipient, qa_pending, real count of status-1 rows) for every recipient the store
    knows (in qa_messages or in either counter table) whose two figures differ; one
    statement, so both are read from one snapshot."""
    rows = st.query(
        "SELECT x.r, qa_pending(x.r), (SELECT count(*) FROM qa_messages m "
        "WHERE m.recipient = x.r AND m.status = 1) FROM (SELECT recipient AS r FROM qa_messages "
        "UNION SELECT recipient FROM qa_pending_in UNION SELECT recipient FROM qa_pending_out) x "
        "ORDER BY 1")
    assert rows, "no recipients at all"
    return [(r, int(p), int(n)) for r, p, n in rows if int(p) != int(n)]


def pending(st: harness.Store, r: str) -> tuple:
    """(qa_pending(r), status-1 rows of r), from one snapshot."""
    p, n = st.query("SELECT qa_pending(%s), (SELECT count(*) FROM qa_messages "
                    "WHERE recipient = %s AND status = 1)", (r, r))[0]
    return int(p), int(n)


def snapshot(st: harness.Store) -> dict:
    """What a start without a pending migration must leave as it was."""
    return {
        "versions": st.query("SELECT version, applied_at FROM qa_schema_version ORDER BY 1"),
        "functions": st.query("SELECT digest FROM qa_schema_functions ORDER BY 1"),
        "in": st.query("SELECT recipient, n FROM qa_pending_in ORDER BY 1"),
        "out": st.query("SELECT recipient, n FROM qa_pending_out ORDER BY 1"),
        "pending": st.query("SELECT recipient, count(*) FROM qa_messages WHERE status = 1 "
                            "GROUP BY 1 ORDER BY 1"),
        "triggers": st.query("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                             "AND tgrelid = 'qa_messages'::regclass ORDER BY 1"),
    }


def make_old_store(pg_server, uid: str) -> harness.Store:
    st = pg_server.create_database(f"qagw_up_{uid}")
    psql_file(st, FIXTURE)
    # what the release's start-up did around its migrations (store/schema.c at adbbedc)
    st.query("CREATE TABLE qa_schema_version (version integer PRIMARY KEY, "
             "applied_at timestamptz NOT NULL DEFAULT now())")
    st.query("INSERT INTO qa_schema_version (version, applied_at) "
             "SELECT v, now() - interval '30 days' + v * interval '1 day' "
             "FROM generate_series(1, %s) v", (OLD_VERSIONS,))
    return st


def results(ack) -> list:
    return [r for _, r in ack.results]


def test_upgrade_from_adbbedc_keeps_messages_counts_and_quota(qagw, pg_server, uid):
    N = build_schema_version()
    assert N > OLD_VERSIONS, f"this build has no migration past {OLD_VERSIONS}: nothing to test"
    st = make_old_store(pg_server, uid)
    assert not {"qa_pending_in", "qa_pending_out"} & set(st.tables()), "not the old schema"

    R1, R2, R3, S = f"up1-{uid}", f"up2-{uid}", f"up3-{uid}", f"ups-{uid}"
    # R1: 5 server-side sends, 2 of them made final by an operator -> 3 pending
    r1_ids = [str(st.scalar("SELECT id FROM qa_send(%s, %s)", (f"{R1}\\inbox", f"hello {i}")))
              for i in range(5)]
    st.query("UPDATE qa_messages SET status = 20, status_ms = status_ms WHERE id = any(%s::uuid[])",
             (r1_ids[:2],))
    r1_pending = r1_ids[2:]
    # R2: 4 server-side sends -> 4 pending (the recipient at quota below)
    for i in range(4):
        st.query("SELECT * FROM qa_send(%s, %s)", (f"{R2}\\inbox", f"quota {i}"))
    # R3: an old-style UPLOAD of agent S, 3 messages, one already past its expiry (the old
    # gateway flagged expiry itself; here it is stored pending, as a message that expired
    # after its upload would be) -> 3 pending, one of them due
    now = int(time.time() * 1000)
    up_ids = [str(uuid.uuid4()) for _ in range(3)]
    got = st.query(
        "SELECT ord, result FROM qa_upload(%s, %s, 100000, %s::uuid[], %s, %s, "
        "%s::smallint[], %s::bigint[], %s::smallint[], "
        "array_fill(qa_props_encode('{}', '{}'), ARRAY[3]), "
        "ARRAY['a'::bytea, 'b'::bytea, 'c'::bytea])",
        (S, now, up_ids, [R3] * 3, ["q"] * 3, [4, 4, 4], [0, 0, now - 60_000], [0, 0, 0]))
    assert [(int(o), int(r)) for o, r in got] == [(1, 0), (2, 0), (3, 0)], got
    old_counts = {r: int(n) for r, n in st.query(
        "SELECT recipient, count(*) FROM qa_messages WHERE status = 1 GROUP BY 1")}
    assert old_counts == {R1: 3, R2: 4, R3: 3}, old_counts
    old_versions = st.query("SELECT version, applied_at FROM qa_schema_version ORDER BY 1")

    # ---- the current build on the old store: max_pending = R2's migrated count
    quota = old_counts[R2]
    g = qagw(workers=("ml1",), store_=st,
             sections={"store": {"max_pending": quota, "keep_days": "4s"}})
    versions = [int(v) for (v,) in st.query("SELECT version FROM qa_schema_version ORDER BY 1")]
    assert versions == list(range(1, N + 1)), versions
    assert st.query("SELECT version, applied_at FROM qa_schema_version WHERE version <= %s "
                    "ORDER BY 1", (OLD_VERSIONS,)) == old_versions
    log = g.log_text()
    for v in range(1, N + 1):
        n = log.count(f"schema migrated to version {v}\n")
        assert n == (1 if v > OLD_VERSIONS else 0), f"version {v} logged {n} times:\n{log}"
    assert {"qa_pending_in", "qa_pending_out"} <= set(st.tables())
    assert count_mismatches(st) == []
    for r, n in old_counts.items():
        assert pending(st, r) == (n, n), (r, pending(st, r))

    # ---- quota against the migrated counts: R2 is full, R3 is not
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(S)
        to_r2 = msg(f"{R2}\\inbox")
        to_r3 = msg(f"{R3}\\q")
        ack = a.upload([to_r2, to_r3])
        assert results(ack) == [q.R_QUOTA, q.R_STORED], results(ack)
    assert st.rows_per_id([to_r2.id, to_r3.id]) == {str(to_r2.id): 0, str(to_r3.id): 1}
    assert pending(st, R2) == (quota, quota)
    assert count_mismatches(st) == []

    # ---- the lifecycle job on migrated rows: R3's due message expires (the sender is told:
    # a system message for S), the final rows of R1 are purged after keep_days=4s
    wait_until(lambda: st.scalar("SELECT status FROM qa_messages WHERE id = %s",
                                 (up_ids[2],)) == 30, 15, what="the migrated due message expired")
    assert count_mismatches(st) == []
    assert pending(st, R3) == (3, 3)  # 2 old + the new upload
    wait_until(lambda: st.scalar("SELECT count(*) FROM qa_messages WHERE id = any(%s::uuid[])",
                                 (r1_ids[:2],)) == 0, 20, what="R1's old final messages purged")
    assert count_mismatches(st) == []

    # ---- the old pending messages reach their agent, and the ack takes them out
    with q.Client(HOST, g.port("ml1")) as b:
        b.hello(R1)
        d = b.fetch()
        assert sorted(str(m.id) for m in d.msgs) == sorted(r1_pending), d.msgs
        assert {m.queue for m in d.msgs} == {"inbox"}
        assert sorted(m.body for m in d.msgs) == [b"hello 2", b"hello 3", b"hello 4"]
        assert d.more == 0
        b.deliver_ack([m.seq for m in d.msgs])
        b.ping()
    assert pending(st, R1) == (0, 0)
    assert count_mismatches(st) == []

    # ---- a new UPLOAD through qagw to upgraded recipients: stored and counted
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(S)
        new = [msg(f"{R1}\\inbox"), msg(f"{R1}\\inbox")]
        assert results(a.upload(new)) == [q.R_STORED] * 2
        # R3: 3 pending (2 migrated, one expired since, + 1 uploaded): room for one more
        more = [msg(f"{R3}\\q"), msg(f"{R3}\\q")]
        assert results(a.upload(more)) == [q.R_STORED, q.R_QUOTA]
    assert pending(st, R1) == (2, 2)
    assert pending(st, R3) == (quota, quota)
    assert count_mismatches(st) == []
    with q.Client(HOST, g.port("ml1")) as b:
        b.hello(R1)
        d = b.fetch()
        assert sorted(m.id for m in d.msgs) == sorted(m.id for m in new)

    # ---- the kept old entry points still work on the upgraded store and are counted
    st.query("SELECT * FROM qa_send(%s, %s)", (f"{R1}\\inbox", "after"))
    got = st.query("SELECT ord, result FROM qa_upload(%s, %s, %s, ARRAY[%s]::uuid[], ARRAY[%s], "
                   "ARRAY['q'], ARRAY[4]::smallint[], ARRAY[0]::bigint[], ARRAY[0]::smallint[], "
                   "ARRAY[qa_props_encode('{}', '{}')], ARRAY['x'::bytea])",
                   (S, int(time.time() * 1000), quota, str(uuid.uuid4()), R2))
    assert [(int(o), int(r)) for o, r in got] == [(1, q.R_QUOTA)], got
    assert pending(st, R1) == (3, 3)
    assert count_mismatches(st) == []

    # ---- a second start of the same build: no migration, nothing changes
    assert g.stop() == 0, harness.tail(g.log, 30)
    before = snapshot(st)
    g.start()
    time.sleep(2.5)  # the lifecycle job runs at least twice (keep 4 s: every 1 s)
    after = snapshot(st)
    second = g.log_text().split("==== harness: start #2")[1]
    assert "schema migrated" not in second, second
    assert after == before, f"a start without a migration changed the store:\n{before}\n{after}"
    assert count_mismatches(st) == []
    # and it serves: the quota still holds, a stored upload is counted
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(S)
        assert results(a.upload([msg(f"{R2}\\inbox"), msg(f"{R1}\\inbox")])) == [q.R_QUOTA,
                                                                                 q.R_STORED]
    assert pending(st, R1) == (4, 4) and pending(st, R2) == (quota, quota)
    assert count_mismatches(st) == []
    print(f"\nupgrade adbbedc (v{OLD_VERSIONS}) -> v{N}: migrated counts {old_counts}, quota "
          f"{quota} held; second start re-applied the functions: {'functions applied' in second}")
