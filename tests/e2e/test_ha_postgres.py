"""Issue 18: the store on pg_auto_failover. A formation on loopback (qagwtest.pgaf: a
monitor, a primary and a secondary with synchronous replication, started here as the
postgres user, monitor timeouts lowered for a test); two qagw nodes (ml1+ml2, ml3) use the
formation's URI as printed by `pg_autoctl show uri` (plus user=qagw), i.e. libpq's
multi-host URI with target_session_attrs=read-write: qagw has no code of its own for it.

With 20 `qaagent run` agents exchanging messages, the primary is LOST (SIGKILL of its
keeper, postmaster and backends: nothing restarts it). The monitor promotes the secondary
(stop_replication, then wait_primary after primary_demote_timeout); meanwhile the gateways
answer store_unavailable (retryable) and the agents retry. Checked: nothing acknowledged is
lost (history checker), every acked message is on the new primary exactly once, and syncs
resume within 5 s of the monitor's promotion. Printed: kill -> promotion, kill -> first
commit on the new primary (the first UPLOAD_ACK after the kill), promotion -> first ack.
"""

from __future__ import annotations

import time

import pytest

from qagwtest.harness import Store
from qagwtest.pgaf import FormationStore
from qagwtest.traffic import N_AGENTS, Traffic
from test_faults_failover import DRAIN_S, log_events_ms, log_lines_after, max_gap_s

PRE_KILL_S = 3       # traffic before the kill
POST_PROMOTE_S = 6   # traffic after the monitor's promotion
PROMOTE_TIMEOUT_S = 30
RESUME_S = 5         # syncs resume within this long of the promotion


def test_pgaf_primary_lost(pgaf, qagw, agent, uid, tmp_path):
    f = pgaf
    t_start = time.monotonic()
    old, new = f.primary(), f.secondary()
    st = FormationStore(f)
    print(f"\nformation up in {f.timings['ready_s']:.1f}s ({f.timings}); primary {old.name} "
          f":{old.port}, secondary {new.name} :{new.port}")
    print(f"settings: {f.settings}")
    print(f"pg_autoctl show uri: {st.base_uri}; qagw conninfo: {st.conninfo}")
    assert f.settings["synchronous_commit"] == "on"
    assert f.settings["synchronous_standby_names"].startswith("ANY 1 ("), f.settings
    assert f.settings["sync_state"].endswith(("=quorum", "=sync")), f.settings
    assert "target_session_attrs=read-write" in st.base_uri

    n1 = qagw(workers=("ml1", "ml2"), node="n1", store_=st)
    n2 = qagw(workers=("ml3",), node="n2", store_=st)
    gws = {"ml1": n1, "ml2": n1, "ml3": n2}
    tr = Traffic(agent, tmp_path, [gws[w].stream(w) for w in ("ml1", "ml2", "ml3")], uid,
                 n=N_AGENTS)
    try:
        tr.start_runs()
        tr.start_senders(seed=uid)
        try:
            acks_before = tr.flowing(PRE_KILL_S)

            kill_ms = time.time() * 1000
            t_kill = time.monotonic()
            k = f.kill_node(old)
            t_promo = f.wait_promoted(timeout=PROMOTE_TIMEOUT_S)
            promo_ms = kill_ms + (t_promo - t_kill) * 1000
            kill_to_promo = t_promo - t_kill
            print(f"SIGKILL {old.name}: {k['pids']} processes (keeper, postmaster, backends) "
                  f"gone in {k['gone_s']:.3f}s, left {k['left']}; acked before: {acks_before}")
            print(f"monitor reports {new.name} {f.states().get(new.name)} "
                  f"{kill_to_promo:.2f}s after the kill")
            time.sleep(POST_PROMOTE_S)
            tr.check_alive()
        finally:
            tr.stop_senders()
        assert n1.alive() and n2.alive()
        rep = tr.finish(DRAIN_S)
        acks = tr.ack_times_ms()
        gone_ms = kill_ms + k["gone_s"] * 1000
        after_kill = [t for t in acks if t >= gone_ms]
        after_promo = [t for t in acks if t >= promo_ms]
        first_commit_s = (after_kill[0] - kill_ms) / 1000 if after_kill else None
        resume_s = (after_promo[0] - promo_ms) / 1000 if after_promo else None
        between = [t for t in acks if gone_ms <= t < promo_ms]
        gap = max_gap_s(acks, kill_ms - 2000, promo_ms + POST_PROMOTE_S * 1000)
        store_up = {w: min(((t - kill_ms) / 1000 for t, _ in log_events_ms(g, f"worker {w}: store up")
                            if t > kill_ms), default=None)
                    for w, g in gws.items()}
        lost_lines = {g.node: len(log_lines_after(g, "==== harness: start", "connection lost"))
                      for g in (n1, n2)}
        store_unavail = len(tr.error_events("store_unavailable"))
        events = [e for e in f.events() if e[1] == new.name or "unhealthy" in e[4]][-8:]
        print(f"killed at {time.strftime('%H:%M:%S', time.localtime(kill_ms / 1000))}"
              f".{int(kill_ms) % 1000:03d}; monitor events (reported -> assigned):\n  " +
              "\n  ".join(f"{e[0]} {e[1]} {e[2]} -> {e[3]}"
                           f"{': ' + e[4][:90] if 'unhealthy' in e[4] else ''}" for e in events))
        print(f"sent {tr.sent} messages; {rep.line()} (refused={rep.refused})")
        print(f"kill -> promotion (monitor reports {new.name} writable): {kill_to_promo:.2f}s")
        print(f"kill -> first commit on the new primary (first UPLOAD_ACK after the kill): "
              f"{'none' if first_commit_s is None else f'{first_commit_s:.2f}s'}; "
              f"promotion -> first UPLOAD_ACK: "
              f"{'none' if resume_s is None else f'{resume_s:.2f}s'}; acks between the kill and "
              f"the monitor's report: {len(between)}; longest pause between acks: {gap:.2f}s")
        print(f"workers' store up again after the kill (s): "
              f"{ {w: None if v is None else round(v, 2) for w, v in store_up.items()} }; "
              f"store_unavailable errors seen by agents: {store_unavail}; gateway store "
              f"connections lost: {lost_lines}")
        rep.assert_ok()
        assert rep.pending == 0, rep.details()
        assert rep.acked >= 100, rep.details()
        assert resume_s is not None and resume_s < RESUME_S, \
            f"syncs resumed {resume_s}s after the monitor's promotion (limit {RESUME_S}s)"
        # the new primary has every acked message, once
        rows = Store(new, f.dbname).rows_per_id(sorted(tr.history.acked_ids()))
        bad = {m: n for m, n in rows.items() if n != 1}
        assert not bad, f"{len(bad)} acked messages not on {new.name} exactly once: " \
                        f"{list(bad.items())[:5]}"
        assert f.primary().name == new.name
        assert all(v >= 1 for v in lost_lines.values()), lost_lines
    finally:
        rcs = tr.stop_runs()
        print(f"test body {time.monotonic() - t_start:.1f}s")
    assert all(v == 0 for v in rcs.values()), rcs


ROUNDS = 2  # the long variant: failovers, each lost node brought back as the secondary


@pytest.mark.long
def test_pgaf_primary_lost_twice_with_rejoin(pgaf, qagw, agent, uid, tmp_path):
    """The long variant: under 20 agents of traffic the primary is lost, the monitor
    promotes the secondary, the lost node's keeper is started again and rejoins as the
    synchronous secondary (pg_rewind where needed), and then the new primary is lost too.
    Nothing acknowledged is lost over both failovers; each time syncs resume within 5 s
    of the promotion."""
    f = pgaf
    st = FormationStore(f)
    n1 = qagw(workers=("ml1", "ml2"), node="n1", store_=st)
    n2 = qagw(workers=("ml3",), node="n2", store_=st)
    gws = {"ml1": n1, "ml2": n1, "ml3": n2}
    tr = Traffic(agent, tmp_path, [gws[w].stream(w) for w in ("ml1", "ml2", "ml3")], uid)
    rounds = []
    try:
        tr.start_runs()
        tr.start_senders(seed=uid)
        for r in range(ROUNDS):
            tr.flowing(PRE_KILL_S)
            old = f.primary()
            kill_ms = time.time() * 1000
            t_kill = time.monotonic()
            f.kill_node(old)
            t_promo = f.wait_promoted(timeout=PROMOTE_TIMEOUT_S)
            time.sleep(POST_PROMOTE_S)
            promo_ms = kill_ms + (t_promo - t_kill) * 1000
            after = [t for t in tr.ack_times_ms() if t >= promo_ms]
            resume_s = (after[0] - promo_ms) / 1000 if after else None
            rejoin_s = f.rejoin(old) if r + 1 < ROUNDS else None
            rounds.append({"lost": old.name, "kill_to_promotion_s": round(t_promo - t_kill, 2),
                           "promotion_to_first_ack_s": resume_s, "rejoin_s": rejoin_s})
            print(f"\nround {r + 1}: {rounds[-1]}")
            assert resume_s is not None and resume_s < RESUME_S, rounds[-1]
    finally:
        tr.stop_senders()
    rep = tr.finish(DRAIN_S)
    rcs = tr.stop_runs()
    print(f"sent {tr.sent} messages; {rep.line()}")
    rep.assert_ok()
    assert rep.pending == 0, rep.details()
    rows = Store(f.primary(), f.dbname).rows_per_id(sorted(tr.history.acked_ids()))
    bad = {m: n for m, n in rows.items() if n != 1}
    assert not bad, f"{len(bad)} acked messages not on the last primary exactly once"
    assert all(v == 0 for v in rcs.values()), rcs
