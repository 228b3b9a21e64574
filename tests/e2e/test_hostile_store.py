"""Issue 16, items 4 and 5: what one agent, or one message, can do to the store and Redis.

- A per-sender pending quota ([store] max_pending_per_sender, result 5 quota; protocol.md
  UPLOAD_ACK): one sender uploading to many distinct recipients is refused past it, in one
  batch and across batches, has room again when a recipient acknowledges, and does not
  touch other senders; server-side sends are neither counted nor refused.
- No permanent Redis state for an agent that has never connected: its `agentpush:` hash
  expires, while a connected agent's push counters stay (GET /api/agents/{id}).
- A message that could never be delivered is refused on every way in: POST /api/messages
  answers 413 (nothing stored), `qa_send` raises, and `qa_props_encode` refuses what the
  props layout cannot carry instead of cutting it to 16 bits.
- A stored message whose DELIVER cannot fit max_frame becomes unreceivable (status 50) at
  FETCH, its sender is told through its system queue, and the messages behind it are
  delivered.
"""

from __future__ import annotations

import pytest

from qagwtest import qasync as q
from qagwtest.harness import msg
from qagwtest.pool import HOST, agent_json, expect_push, persist, poll, send_one

COUNTERS_S = 3.0


def results(ack):
    return [r for _, r in ack.results]


def sender_pending(store, sender: str) -> int:
    return int(store.scalar(
        "SELECT coalesce((SELECT n FROM qa_sender_in WHERE sender = %s), 0)"
        " - coalesce((SELECT n FROM qa_sender_out WHERE sender = %s), 0)", (sender, sender)))


def test_per_sender_quota_across_distinct_recipients(qagw, store, uid):
    g = qagw(workers=("ml1",), sections={"store": {"max_pending_per_sender": 5}})
    A, B = f"A-{uid}", f"B-{uid}"
    R = [f"R{i}-{uid}" for i in range(9)]
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(A)
        # four in one batch, then two more: the sixth distinct recipient is refused
        assert results(a.upload([msg(f"{r}\\q") for r in R[:4]])) == [q.R_STORED] * 4
        assert results(a.upload([msg(f"{R[4]}\\q"), msg(f"{R[5]}\\q")])) == [q.R_STORED,
                                                                            q.R_QUOTA]
        # full: a whole batch is refused
        again = msg(f"{R[0]}\\q")
        assert results(a.upload([again, msg(f"{R[6]}\\q")])) == [q.R_QUOTA, q.R_QUOTA]
        assert sender_pending(store, A) == 5
        # another sender is not affected
        with q.Client(HOST, g.port("ml1")) as b:
            b.hello(B)
            assert results(b.upload([msg(f"{R[6]}\\q")])) == [q.R_STORED]
        # a server-side send in A's name is neither counted nor refused
        status, body = g.admin.post("/api/messages", {"to": f"{R[7]}\\q", "body": "x",
                                                      "from": A})
        assert status == 201, (status, body)
        assert sender_pending(store, A) == 5
        # R0 acknowledges A's message: room for exactly one more
        with q.Client(HOST, g.port("ml1")) as r0:
            r0.hello(R[0])
            d = r0.fetch()
            assert len(d.msgs) == 1
            r0.deliver_ack([d.msgs[0].seq])
            r0.ping()
        assert sender_pending(store, A) == 4
        assert results(a.upload([msg(f"{R[7]}\\q"), msg(f"{R[8]}\\q")])) == [q.R_STORED,
                                                                            q.R_QUOTA]
    n = store.scalar("SELECT count(*) FROM qa_messages WHERE sender = %s AND sender_is_agent"
                     " AND status = 1", (A,))
    assert int(n) == 5 == sender_pending(store, A)


def test_never_connected_agent_push_state_expires(qagw, redis_server, redis_prefix, uid):
    g = qagw(workers=("ml1",))
    A, C, D = f"A-{uid}", f"C-{uid}", f"D-{uid}"
    ckey, dkey = f"{redis_prefix}agentpush:{C}", f"{redis_prefix}agentpush:{D}"
    send_one(g, "ml1", A, f"{C}\\q")  # C has never connected: no_session
    poll(lambda: redis_server.command("EXISTS", ckey), lambda n: n == 1, COUNTERS_S,
         "C's agentpush hash")
    ttl = redis_server.command("TTL", ckey)
    assert 0 < ttl <= 86400, f"agentpush of a never-connected agent has TTL {ttl}"
    # a connected agent's push accounting is permanent and still counts
    d = persist(g, "ml1", D, primary=g.address("ml1"))
    try:
        send_one(g, "ml1", A, f"{D}\\q")
        p = expect_push(d, 5)
        d.send(q.PushAck(p.push_id))
        d.ping()
        j = poll(lambda: agent_json(g, D), lambda j: j["push"]["acked"] == 1, COUNTERS_S,
                 "D's push acked")
        assert j["push"]["sent"] == 1, j
        assert redis_server.command("TTL", dkey) == -1
    finally:
        d.close()
    # C connects: its counters become permanent, the count from before kept
    c = persist(g, "ml1", C, primary=g.address("ml1"))
    try:
        p = expect_push(c, 5)  # right after WELCOME: its message waits
        c.send(q.PushAck(p.push_id))
        c.ping()
        j = poll(lambda: agent_json(g, C), lambda j: j["push"]["acked"] == 1, COUNTERS_S,
                 "C's push acked")
        assert (j["push"]["no_session"], j["push"]["sent"]) == (1, 1), j
        assert redis_server.command("TTL", ckey) == -1
    finally:
        c.close()


def test_post_message_too_large_is_413_and_nothing_stored(qagw, store, uid):
    g = qagw(workers=("ml1",), limits={"max_frame": 65536})
    B = f"B-{uid}"
    status, body = g.admin.post("/api/messages", {"to": f"{B}\\q", "body": "x" * 70000})
    assert status == 413, (status, body)
    assert body.get("error") == "too_large", body
    # props over what the props layout carries: refused (4xx), never truncated
    status, body = g.admin.post("/api/messages", {"to": f"{B}\\q", "body": "x",
                                                  "props": {"k": "v" * 70000}})
    assert 400 <= status < 500, (status, body)
    assert int(store.scalar("SELECT count(*) FROM qa_messages")) == 0
    # qa_send itself refuses what could not be delivered within the max_frame given
    with pytest.raises(Exception) as e:
        store.query("SELECT * FROM qa_send(%s, repeat('x', 70000), 'server', 4, 0, '{}'::jsonb,"
                    " 65536)", (f"{B}\\q",))
    assert "too_large" in str(e.value)
    with pytest.raises(Exception):  # and, without one, the default max_frame (1 MiB)
        store.query("SELECT * FROM qa_send(%s, repeat('x', 1100000))", (f"{B}\\q",))
    assert int(store.scalar("SELECT count(*) FROM qa_messages")) == 0
    # a message that fits is still taken
    status, body = g.admin.post("/api/messages", {"to": f"{B}\\q", "body": "x" * 1000})
    assert status == 201, (status, body)


def test_props_encode_refuses_instead_of_truncating(qagw, store):
    qagw(workers=("ml1",))  # the schema
    for sql in ("SELECT qa_props_encode(ARRAY['k'], ARRAY[repeat('v', 70000)])",
                "SELECT qa_props_encode(ARRAY[repeat('k', 65536)], ARRAY['v'])",
                "SELECT qa_props_encode(array_fill('k'::text, ARRAY[65536]),"
                " array_fill('v'::text, ARRAY[65536]))"):
        with pytest.raises(Exception) as e:
            store.query(sql)
        assert "qa_props_encode" in str(e.value), (sql, e.value)
    # what fits is encoded as before: u16 n, then u16-length strings
    assert store.scalar("SELECT encode(qa_props_encode(ARRAY['k'], ARRAY['vv']), 'hex')") \
        == "0001" + "0001" + "6b" + "0002" + "7676"


def test_stored_oversized_message_becomes_unreceivable(qagw, store, uid):
    g = qagw(workers=("ml1",))
    A, B = f"A-{uid}", f"B-{uid}"
    big, m2, m3 = msg(f"{B}\\q"), msg(f"{B}\\q"), msg(f"{B}\\q", priority=3)
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(A)
        assert results(a.upload([big, m2, m3])) == [0, 0, 0]
    # stored before max_frame was lowered, say: its DELIVER alone is ~2 MB, max_frame 1 MiB
    store.query("UPDATE qa_messages SET body = convert_to(repeat('x', 2000000), 'UTF8')"
                " WHERE id = %s", (str(big.id),))
    with q.Client(HOST, g.port("ml1")) as b:
        b.hello(B)
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m2.id, m3.id] and d.more == 0, d
        b.deliver_ack([x.seq for x in d.msgs])
        b.ping()
        assert b.fetch().msgs == []
    status, body = g.admin.get(f"/api/messages/{big.id}")
    assert status == 200 and body["status"] == 50 and body["delivery_count"] == 0, body
    assert int(store.scalar("SELECT qa_pending(%s)", (B,))) == 0
    assert sender_pending(store, A) == 0
    # the sender is told through its system queue
    with q.Client(HOST, g.port("ml1")) as a:
        a.hello(A)
        d = a.fetch()
        notes = [x for x in d.msgs if x.queue == "system"]
        assert len(notes) == 1, d
        p = notes[0].propdict
        assert (p["ias_MessageType"], p["ias_Status"], p["ias_StatusMessageId"]) == (
            "status", "50", big.id.hex), p


def test_concurrent_groups_of_one_sender_never_exceed_its_quota(qagw, store, uid):
    """The per-sender bound under concurrency, as test_faults_group's for recipients: two
    groups of one sender both read "room for 3" (each INSERT held 1 s by a test trigger
    between its quota read and its counter upsert); the second then finds the sender past
    max_pending_per_sender and answers its newest row quota. qa_upload_group is called
    directly: one agent has one session at a time, but its retries on a new session, or
    two nodes, can have two groups in flight."""
    import threading
    import time
    import uuid

    qagw(workers=("ml1",))  # the schema
    S = f"S-{uid}"
    store.query("CREATE FUNCTION qa_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF EXISTS (SELECT 1 FROM nt WHERE sender = '{S}') THEN "
                "PERFORM pg_sleep(1.0); END IF; RETURN NULL; END $$")
    store.query("CREATE TRIGGER qa_test_slow AFTER INSERT ON qa_messages REFERENCING NEW "
                "TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION qa_test_slow()")
    results = {}

    def group(name, delay, rcpts):
        time.sleep(delay)
        ids = [str(uuid.uuid4()) for _ in rcpts]
        rows = store.query(
            "SELECT ord, result FROM qa_upload_group((extract(epoch FROM now()) * 1000)::bigint,"
            " 100000, 3, ARRAY[%s, %s]::text[], ARRAY[%s, %s]::uuid[], ARRAY[%s, %s]::text[],"
            " ARRAY['q', 'q'], ARRAY[4, 4]::smallint[], ARRAY[0, 0]::bigint[],"
            " ARRAY[0, 0]::smallint[], ARRAY['\\x0000', '\\x0000']::bytea[],"
            " ARRAY['\\x', '\\x']::bytea[]) ORDER BY ord", (S, S, *ids, *rcpts))
        results[name] = [int(r[1]) for r in rows]

    threads = [threading.Thread(target=group, args=("first", 0.0, [f"R1-{uid}", f"R2-{uid}"])),
               threading.Thread(target=group, args=("second", 0.3, [f"R3-{uid}", f"R4-{uid}"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {"first": [0, 0], "second": [0, 5]}, results
    rows = int(store.scalar("SELECT count(*) FROM qa_messages WHERE sender = %s AND status = 1",
                            (S,)))
    assert rows == 3 == sender_pending(store, S), (rows, sender_pending(store, S))
    # and the recipients' counters agree with their rows
    assert int(store.scalar("SELECT count(*) FROM qa_messages m WHERE m.status = 1 AND"
                            " qa_pending(m.recipient) <> 1")) == 0


def test_pending_counters_follow_every_kind_of_insert(qagw, store, uid):
    """The pending counters (migrations 8 and 9) count every writer once: an upload
    (qa_upload_group counts its own rows, the insert trigger passes them), a server-side
    send and an operator's own multi-row INSERT (the trigger; sender counters only for
    agents' messages); every counter equals the status-1 rows it stands for."""
    g = qagw(workers=("ml1",))
    A, R = f"A-{uid}", f"R-{uid}"
    with q.Client("127.0.0.1", g.port("ml1")) as a:
        a.hello(A)
        assert [r for _, r in a.upload([msg(f"{R}\\q") for _ in range(3)]).results] == [0] * 3
    assert int(store.scalar("SELECT qa_pending(%s)", (R,))) == 3
    status, _ = g.admin.post("/api/messages", {"to": f"{R}\\q", "body": "from the server"})
    assert status == 201
    assert int(store.scalar("SELECT qa_pending(%s)", (R,))) == 4
    store.query(
        "INSERT INTO qa_messages (id, sender, sender_is_agent, recipient, queue, priority,"
        " created_ms, expires_ms, props, body, status_ms)"
        " SELECT gen_random_uuid(), %s, true, %s, 'q', 4, 0, 0, '\\x0000', 'x', 0"
        " FROM generate_series(1, 5)", (A, R))
    assert int(store.scalar("SELECT qa_pending(%s)", (R,))) == 9
    rows = int(store.scalar("SELECT count(*) FROM qa_messages WHERE recipient = %s AND status = 1",
                            (R,)))
    assert rows == 9
    sender = int(store.scalar(
        "SELECT coalesce((SELECT n FROM qa_sender_in WHERE sender = %s), 0)"
        " - coalesce((SELECT n FROM qa_sender_out WHERE sender = %s), 0)", (A, A)))
    assert sender == 8  # 3 uploaded + 5 inserted as A's; the server's send is not an agent's
