"""Issue 18: both HA engines lose their primary at once. The store is a pg_auto_failover
formation (conftest's `pgaf`), Redis a master, a replica and three sentinels
(conftest's `sentinels`); two qagw nodes (ml1+ml2, ml3) use the formation's URI and the
sentinels. 20 `qaagent run` agents exchange messages and three PERSIST probes, one per
worker, time pushes. The Redis master is SIGKILLed, and within the same second the
PostgreSQL primary node is lost (keeper, postmaster and backends SIGKILLed).

Shown: nothing acknowledged is lost (history checker; every acked message on the new
primary exactly once), syncs resume within 5 s of the monitor's promotion, pushes resume
within 10 s of the later of the two promotions, and one live session per agent holds (a
second HELLO of a probe's agent on the other node ends the first with ERROR superseded).
"""

from __future__ import annotations

import time

from qagwtest.harness import Store
from qagwtest.pgaf import FormationStore
from qagwtest.traffic import Traffic
from test_faults_failover import DRAIN_S
from test_ha_redis import after_failover, open_probes, sentinel_pool, sentinel_sections

PRE_KILL_S = 3
POST_KILL_S = 10
SYNC_RESUME_S = 5
PUSH_RESUME_S = 10


def test_redis_master_and_postgres_primary_killed_together(pgaf, sentinels, qagw, agent, uid,
                                                            tmp_path):
    f, ss = pgaf, sentinels
    st = FormationStore(f)
    gws = sentinel_pool(qagw, ss, sentinel_sections(ss), store_=st)
    n1, n2 = gws["ml1"], gws["ml3"]
    probes = open_probes(gws, uid)
    old_pg, new_pg = f.primary(), f.secondary()
    tr = Traffic(agent, tmp_path, [gws[w].stream(w) for w in gws], uid)
    try:
        tr.start_runs()
        tr.start_senders(seed=uid)
        tr.flowing(PRE_KILL_S)

        kill_ms = time.time() * 1000
        t_kill = time.monotonic()
        old_redis = ss.master.port
        ss.master.kill()
        k = f.kill_node(old_pg)
        t_both_killed = time.monotonic() - t_kill
        t_redis = ss.wait_promoted(old_redis)
        t_pg = f.wait_promoted(timeout=30)
        print(f"\nkilled the Redis master and PostgreSQL {old_pg.name} within "
              f"{t_both_killed:.2f}s; sentinels promoted {t_redis - t_kill:.2f}s and the "
              f"monitor {t_pg - t_kill:.2f}s after the kill")

        resumed = after_failover(gws, probes, uid, max(t_redis, t_pg), PUSH_RESUME_S)
        print(f"first PUSH after the later promotion, per probe (s): "
              f"{ {w: round(v, 2) for w, v in resumed.items()} }")
        assert all(v <= PUSH_RESUME_S for v in resumed.values()), resumed

        time.sleep(max(0.0, POST_KILL_S - (time.monotonic() - t_kill)))
        tr.check_alive()
    finally:
        tr.stop_senders()
    rep = tr.finish(DRAIN_S)
    rcs = tr.stop_runs()
    for _, c in probes.values():
        c.close()
    acks = tr.ack_times_ms()
    promo_ms = kill_ms + (t_pg - t_kill) * 1000
    after_promo = [t for t in acks if t >= promo_ms]
    resume_s = (after_promo[0] - promo_ms) / 1000 if after_promo else None
    after_kill = [t for t in acks if t >= kill_ms + k["gone_s"] * 1000]
    print(f"sent {tr.sent} messages; {rep.line()}; kill -> first commit on the new primary: "
          f"{(after_kill[0] - kill_ms) / 1000 if after_kill else None}s; promotion -> first "
          f"UPLOAD_ACK: {resume_s}s")
    rep.assert_ok()
    assert rep.pending == 0, rep.details()
    assert rep.acked >= 50, rep.details()
    assert resume_s is not None and resume_s < SYNC_RESUME_S, resume_s
    rows = Store(new_pg, f.dbname).rows_per_id(sorted(tr.history.acked_ids()))
    bad = {m: n for m, n in rows.items() if n != 1}
    assert not bad, f"{len(bad)} acked messages not on {new_pg.name} exactly once"
    assert all(v == 0 for v in rcs.values()), rcs
    assert n1.alive() and n2.alive()
