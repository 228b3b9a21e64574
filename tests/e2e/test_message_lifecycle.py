"""Issue 10: the message lifecycle. Retention (keep_days as a duration, a batched purge
that does not stall syncs), cancel of a held message, expiry by the background job with
the sender told, max_pending quotas and the admin list of agents nearest their quota,
and `qaagent status ID` on the sending device."""

import threading
import time
import uuid

from qagwtest import qasync as q
from qagwtest.harness import msg, wait_until
from qagwtest.pool import poll

HOST = "127.0.0.1"


def message(g, mid) -> dict:
    status, m = g.admin.get(f"/api/messages/{mid}")
    assert status in (200, 404), (status, m)
    return m if status == 200 else None


def seed_final(store, n: int, status_ms: int) -> None:
    """n acknowledged messages of other agents, final since status_ms."""
    store.query(
        "INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,"
        " created_ms, expires_ms, props, body, status, status_ms)"
        " SELECT gen_random_uuid(), 'seed', false, 'old-' || mod(g, 100), 'q', 4, %s, 0,"
        " '\\x0000'::bytea, convert_to(repeat('x', 100), 'UTF8'), 20, %s"
        " FROM generate_series(1, %s) g", (status_ms, status_ms, n))


class SyncLoad:
    """n agents syncing in a loop (UPLOAD one message to themselves, FETCH, DELIVER_ACK),
    each on its own connection and thread; records the slowest request and any error."""

    def __init__(self, g, workers, n: int, uid: str) -> None:
        self.g, self.workers, self.n, self.uid = g, workers, n, uid
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []
        self.slowest = 0.0
        self.cycles = 0
        self.threads = [threading.Thread(target=self.agent, args=(i,), daemon=True)
                        for i in range(n)]

    def timed(self, fn, *args):
        t = time.monotonic()
        r = fn(*args)
        took = time.monotonic() - t
        with self.lock:
            self.slowest = max(self.slowest, took)
        return r

    def agent(self, i: int) -> None:
        me = f"load{i}-{self.uid}"
        try:
            with q.Client(HOST, self.g.port(self.workers[i % len(self.workers)])) as c:
                self.timed(c.hello, me)
                while not self.stop.is_set():
                    ack = self.timed(c.upload, [msg(f"{me}\\q", body=b"x" * 100)])
                    assert [r for _, r in ack.results] == [q.R_STORED], ack
                    d = self.timed(c.fetch)
                    if d.msgs:
                        c.deliver_ack([m.seq for m in d.msgs])
                        self.timed(c.ping)
                    with self.lock:
                        self.cycles += 1
                    time.sleep(0.05)
        except Exception as e:  # an ERROR frame (ServerError), a timeout, a closed session
            with self.lock:
                self.errors.append(f"{me}: {e!r}")

    def __enter__(self) -> "SyncLoad":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


def test_retention_purges_final_messages_keeps_pending_and_syncs_do_not_stall(qagw, store, uid):
    keep_s = 10
    g = qagw(workers=("ml1", "ml2"), sections={"store": {"keep_days": f"{keep_s}s"}})
    A, B, P = f"A-{uid}", f"B-{uid}", f"P-{uid}"
    seed_final(store, 20000, status_ms=int(time.time() * 1000) - 86400 * 1000)

    to_b = [msg(f"{B}\\q") for _ in range(50)]
    to_p = [msg(f"{P}\\q") for _ in range(50)]
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(A)
        assert {r for _, r in a.upload(to_b + to_p).results} == {q.R_STORED}
    with q.Client(HOST, g.port("ml2")) as b:
        b.hello(B)
        d = b.fetch()
        assert len(d.msgs) == 50
        b.deliver_ack([m.seq for m in d.msgs])
        b.ping()
    acked_at = time.time()

    with SyncLoad(g, ("ml1", "ml2"), 100, uid) as load:
        # the purge of the 20,000 seeded rows and then of B's 50 runs while they sync
        wait_until(lambda: store.scalar("SELECT count(*) FROM qa_messages WHERE status = 20 "
                                        "AND sender = 'seed'") == 0, 30,
                   what="the seeded final messages purged")
        wait_until(lambda: store.scalar("SELECT count(*) FROM qa_messages WHERE recipient = %s",
                                        (B,)) == 0, keep_s + 20,
                   what=f"B's acknowledged messages purged after keep_days={keep_s}s")
        gone_after = time.time() - acked_at
        time.sleep(1)
    purged = sum(g.admin.metrics().value("qagw_messages_purged_total", worker=w)
                 for w in ("ml1", "ml2"))
    print(f"retention: B's acked messages gone {gone_after:.1f} s after their ack "
          f"(keep {keep_s} s); purged_total {purged:.0f}; {load.cycles} sync cycles by 100 "
          f"agents, slowest request {load.slowest * 1000:.0f} ms, errors {len(load.errors)}")
    assert gone_after >= keep_s, "purged before keep_days"
    assert purged >= 20050, purged
    assert load.errors == [], load.errors[:5]
    assert load.cycles >= 100, load.cycles
    assert load.slowest < 1.0, f"a sync request stalled {load.slowest:.2f} s"
    # pending messages stay, whatever their age
    rows = store.query("SELECT status, count(*) FROM qa_messages WHERE recipient = %s "
                       "GROUP BY status", (P,))
    assert [(int(s), int(n)) for s, n in rows] == [(1, 50)], rows
    for m in to_p[:3]:
        assert message(g, m.id)["status"] == 1


def test_canceled_held_message_is_never_delivered_and_its_sender_gets_40(qagw, agent, uid):
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    a = agent(A, g.stream("ml1"))
    mid = a.send(f"{B}\\q", "cancel me")
    keep = a.send(f"{B}\\q", "keep me")
    assert a.sync().json()["uploaded"]["stored"] == 2

    with q.Client(HOST, g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()  # B's session now holds both, unacknowledged
        held = {str(m.id): m.seq for m in d.msgs}
        assert set(held) == {mid, keep}, d
        ignored0 = g.admin.metrics().value("qagw_ignored_total", worker="ml1", kind="deliver_ack")
        status, body = g.admin.delete(f"/api/messages/{mid}")
        assert status == 200 and body["status"] == 40, (status, body)
        b.deliver_ack(list(held.values()))  # the canceled one's ack is ignored
        b.ping()
        ignored1 = g.admin.metrics().value("qagw_ignored_total", worker="ml1", kind="deliver_ack")
        assert ignored1 == ignored0 + 1, (ignored0, ignored1)
    assert message(g, mid)["status"] == 40
    assert message(g, keep)["status"] == 20
    status, body = g.admin.delete(f"/api/messages/{mid}")
    assert status == 409, (status, body)

    # a new session of B never sees it again
    with q.Client(HOST, g.port("ml1")) as b:
        b.hello(B)
        assert b.fetch().msgs == []

    # the sender is told (system queue) and its client store knows
    assert a.sync().json()["received"] == 1
    notes = a.recv("system")
    assert [n["props"].get("ias_Status") for n in notes] == ["40"], notes
    assert notes[0]["props"]["ias_StatusMessageId"] == uuid.UUID(mid).hex
    r = a.run("status", mid)
    assert r.rc == 0, repr(r)
    st = r.json()
    assert (st["id"], st["state"], st["result"], st["status"], st["status_name"]) == \
        (mid, "stored", "stored", 40, "canceled"), st
    r = a.run("status", uuid.UUID(keep).hex)  # no note for it: pending as far as A knows
    assert r.rc == 0 and r.json()["status"] == 1 and r.json()["status_notes"] == 0, repr(r)


def test_expired_pending_message_reaches_30_without_fetch_and_sender_is_told(qagw, agent, uid):
    # keep 8 s: the lifecycle job runs every 2 s
    g = qagw(workers=("ml1",), sections={"store": {"keep_days": "8s"}})
    A, C = f"A-{uid}", f"C-{uid}"
    a = agent(A, g.stream("ml1"))
    mid = a.send(f"{C}\\q", "short-lived", expires_in=2)
    lasting = a.send(f"{C}\\q", "no expiry")
    assert a.sync().json()["uploaded"]["stored"] == 2
    r = a.run("status", mid)
    assert r.json()["status"] == 1 and r.json()["state"] == "stored", repr(r)

    m = poll(lambda: message(g, mid), lambda m: m["status"] == 30, 15,
             "the job expires the message")
    assert m["delivery_count"] == 0, m  # no FETCH saw it
    assert message(g, lasting)["status"] == 1
    assert g.admin.metrics().value("qagw_messages_expired_total", worker="ml1") >= 1

    assert a.sync().json()["received"] == 1
    notes = a.recv("system")
    assert [(n["props"].get("ias_Status"), n["props"].get("ias_StatusMessageId"))
            for n in notes] == [("30", uuid.UUID(mid).hex)], notes
    st = a.run("status", mid).json()
    assert (st["status"], st["status_name"]) == (30, "expired"), st

    with q.Client(HOST, g.port("ml1")) as c:  # C gets only the lasting one
        c.hello(C)
        assert [str(x.id) for x in c.fetch().msgs] == [lasting]

    # ids this store never sent, and bad ids
    r = a.run("status", str(uuid.uuid4()))
    assert r.rc == 1 and "not sent from this client store" in r.stderr, repr(r)
    r = a.run("status", "not-an-id")
    assert r.rc == 2 and "bad message id" in r.stderr, repr(r)


def test_quota_refuses_beyond_max_pending_others_unaffected_and_admin_lists(qagw, uid):
    g = qagw(workers=("ml1",), sections={"store": {"max_pending": 5}})
    A, R1, R2 = f"A-{uid}", f"R1-{uid}", f"R2-{uid}"
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(A)
        batch = [msg(f"{R1}\\q") for _ in range(7)] + [msg(f"{R2}\\q") for _ in range(2)]
        results = [r for _, r in a.upload(batch).results]
        assert results == [q.R_STORED] * 5 + [q.R_QUOTA] * 2 + [q.R_STORED] * 2, results

        status, body = g.admin.get("/api/agents-near-quota")
        assert status == 200, (status, body)
        assert body["max_pending"] == 5
        assert body["agents"][:2] == [{"agent": R1, "pending": 5, "used": 1.0},
                                      {"agent": R2, "pending": 2, "used": 0.4}], body
        status, body = g.admin.get("/api/agents-near-quota?limit=1")
        assert status == 200 and [x["agent"] for x in body["agents"]] == [R1], body
        for bad in ("0", "x", "1001"):
            status, body = g.admin.get(f"/api/agents-near-quota?limit={bad}")
            assert status == 400 and body.get("field") == "limit", (bad, status, body)

        # R1 takes one: there is room for exactly one more
        with q.Client(HOST, g.port("ml1")) as r1:
            r1.hello(R1)
            d = r1.fetch(max_count=1)
            r1.deliver_ack([d.msgs[0].seq])
            r1.ping()
        results = [r for _, r in a.upload([msg(f"{R1}\\q"), msg(f"{R1}\\q")]).results]
        assert results == [q.R_STORED, q.R_QUOTA], results


def test_due_message_expires_at_the_fetch_that_finds_it(qagw, agent, uid):
    """A FETCH that finds its agent's due messages expires them before it answers (the
    sender told at once), whatever the lifecycle job does: keep 7 days, so the job runs
    every 60 s, its first 5 s after the start, long before the message is due."""
    g = qagw(workers=("ml1",))
    A, C = f"A-{uid}", f"C-{uid}"
    a = agent(A, g.stream("ml1"))
    time.sleep(6)  # past the job's first run
    mid = a.send(f"{C}\\q", "short-lived", expires_in=1)
    lasting = a.send(f"{C}\\q", "no expiry")
    assert a.sync().json()["uploaded"]["stored"] == 2
    time.sleep(1.5)
    assert message(g, mid)["status"] == 1  # due, not expired yet
    with q.Client(HOST, g.port("ml1")) as c:
        c.hello(C)
        d = c.fetch()
        assert [str(x.id) for x in d.msgs] == [lasting] and d.more == 0, d
    m = message(g, mid)
    assert m["status"] == 30 and m["delivery_count"] == 0, m
    assert a.sync().json()["received"] == 1
    notes = a.recv("system")
    assert [(n["props"].get("ias_Status"), n["props"].get("ias_StatusMessageId"))
            for n in notes] == [("30", uuid.UUID(mid).hex)], notes
