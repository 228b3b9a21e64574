"""Issue 2, must-show 4: hostile byte streams each get the ERROR code protocol.md names,
then a close; meanwhile other sessions on the same worker sync unharmed, and afterwards
the process still serves new sessions."""

import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from qagwtest import qasync as q
from qagwtest.harness import msg

MAX_FRAME = 65536
MAX_BATCH = 8
HELLO_TIMEOUT = 2
LIMITS = {"hello_timeout": HELLO_TIMEOUT, "max_batch": MAX_BATCH, "max_frame": MAX_FRAME}


def hello_bytes(agent_id, **kw) -> bytes:
    return q.encode(q.Hello(agent_id=agent_id, now_ms=q.now_ms(), **kw))


def make_cases(uid):
    """name -> (expected ERROR code, what the hostile client does after connecting).
    Each case that needs a session says HELLO with its own agent id first."""
    n = iter(range(1000))

    def welcomed(c):
        c.hello(f"h{next(n)}-{uid}")

    def truncated(c):
        c.send_raw(struct.pack(">IB", 40, q.PING) + b"\0\0\0")  # promises 39 payload bytes, sends 3
        c.half_close()

    def truncated_after_hello(c):
        welcomed(c)
        c.send_raw(struct.pack(">IB", 9, q.PING) + b"\0\0")
        c.half_close()

    def over_max_frame_after_hello(c):
        welcomed(c)
        c.send_raw(struct.pack(">I", 1 << 30))  # header only: must be refused unread

    def upload(c, count, put):
        welcomed(c)
        msgs = [msg(f"B-{uid}\\q") for _ in range(put)]
        w = q.Writer().u32(1).u16(count)
        for m in msgs:
            m.encode(w)
        c.upload_ids = [m.id for m in msgs]
        c.send_frame(q.UPLOAD, w.bytes())

    def hello_trailing(c):
        c.send_raw(q.frame(q.HELLO, q.Hello(agent_id=f"t-{uid}", now_ms=1).payload() + b"\0"))

    def status_bad_value(c):
        welcomed(c)
        c.send_frame(q.STATUS, q.Writer().u16(1).raw(bytes(16)).u8(61).bytes())

    def welcome_from_agent(c):
        welcomed(c)
        c.send(q.Welcome(1, "ml1", "", 0, [], MAX_FRAME, MAX_BATCH, 30))

    return {
        "truncated frame, then half-close": (q.E_BAD_FRAME, truncated),
        "truncated frame after HELLO, then half-close": (q.E_BAD_FRAME, truncated_after_hello),
        "length 0": (q.E_BAD_FRAME, lambda c: c.send_raw(b"\0\0\0\0")),
        "length over max_frame (header only)": (q.E_TOO_LARGE, lambda c: c.send_raw(struct.pack(">I", MAX_FRAME + 1))),
        "length over max_frame after HELLO": (q.E_TOO_LARGE, over_max_frame_after_hello),
        "unknown type 0x7F before HELLO": (q.E_BAD_FRAME, lambda c: c.send_frame(0x7F, b"")),
        "unknown type 0x7F after HELLO": (q.E_BAD_FRAME, lambda c: (welcomed(c), c.send_frame(0x7F, b"abc"))),
        "bad UTF-8 in HELLO agent id": (q.E_BAD_FRAME, lambda c: c.send_raw(hello_bytes(b"ab\xc3\x28"))),
        "bad UTF-8 in HELLO token": (q.E_BAD_FRAME, lambda c: c.send_raw(hello_bytes(f"u-{uid}", token=b"\xff\xfe"))),
        "bad agent id in HELLO": (q.E_BAD_FRAME, lambda c: c.send_raw(hello_bytes("a b/c"))),
        "unknown HELLO flag bits": (q.E_BAD_FRAME, lambda c: c.send_raw(hello_bytes(f"f-{uid}", flags=0x04))),
        "HELLO with a trailing byte": (q.E_BAD_FRAME, hello_trailing),
        "HELLO version 2": (q.E_VERSION, lambda c: c.send_raw(hello_bytes(f"v-{uid}", version=2))),
        "FETCH before HELLO": (q.E_SEQUENCE, lambda c: c.send(q.Fetch(10, 1000))),
        "PING before HELLO": (q.E_SEQUENCE, lambda c: c.send(q.Ping(1))),
        "second HELLO": (q.E_SEQUENCE, lambda c: (welcomed(c), c.send_raw(hello_bytes(f"s-{uid}")))),
        "WELCOME from an agent": (q.E_SEQUENCE, welcome_from_agent),
        "UPLOAD count over max_batch": (q.E_TOO_LARGE, lambda c: upload(c, MAX_BATCH + 1, MAX_BATCH + 1)),
        "UPLOAD count 0": (q.E_BAD_FRAME, lambda c: upload(c, 0, 0)),
        "UPLOAD count 2 carrying 1 message": (q.E_BAD_FRAME, lambda c: upload(c, 2, 1)),
        "STATUS value 61": (q.E_BAD_FRAME, status_bad_value),
        "silent past hello_timeout": (q.E_TIMEOUT, lambda c: None),
    }


def test_hostile_streams_while_others_sync(qagw, store, agent, uid):
    g = qagw(workers=("ml1",), limits=LIMITS)
    port = g.port("ml1")
    GA, GB = f"goodA-{uid}", f"goodB-{uid}"

    # Two well-behaved sessions, open before the hostile ones and kept open throughout.
    ga = q.Client("127.0.0.1", port)
    gb = q.Client("127.0.0.1", port)
    wa = ga.hello(GA)
    gb.hello(GB)
    assert wa.max_frame == MAX_FRAME and wa.max_batch == MAX_BATCH, wa

    cases = make_cases(uid)
    done = threading.Event()

    def run_case(name):
        expected, act = cases[name]
        t0 = time.monotonic()
        c = q.Client("127.0.0.1", port)
        try:
            act(c)
            err = c.expect_error_and_close(timeout=HELLO_TIMEOUT + 8)
            return name, expected, err, time.monotonic() - t0, getattr(c, "upload_ids", []), None
        except Exception as e:  # reported with the others below
            return name, expected, None, time.monotonic() - t0, getattr(c, "upload_ids", []), e
        finally:
            c.close()

    def good_traffic():
        """Upload a batch from GA, fetch and ack it as GB, until the hostile ones are done."""
        rounds = 0
        while rounds < 3 or not done.is_set():
            batch = [msg(f"{GB}\\q", body=f"good {rounds} {i}".encode()) for i in range(MAX_BATCH)]
            ack = ga.upload(batch)
            assert [r for _, r in ack.results] == [q.R_STORED] * MAX_BATCH, ack
            got = []
            for _ in range(20):
                d = gb.fetch(max_count=MAX_BATCH)
                got += d.msgs
                if len(got) >= MAX_BATCH:
                    break
            assert sorted(m.id for m in got) == sorted(m.id for m in batch)
            gb.deliver_ack([m.seq for m in got])
            gb.ping()
            rounds += 1
            time.sleep(0.1)
        return rounds

    def agent_sync():
        a = agent(f"goodQ-{uid}", g.stream("ml1"))
        ids = [a.send(f"goodR-{uid}\\q2", f"qa {i}") for i in range(3)]
        r = a.sync()
        return ids, r.json()

    with ThreadPoolExecutor(max_workers=len(cases) + 2) as ex:
        good = ex.submit(good_traffic)
        qa = ex.submit(agent_sync)
        results = list(ex.map(run_case, list(cases)))
        done.set()
        rounds = good.result(timeout=60)
        qa_ids, qa_sync = qa.result(timeout=60)

    failures = []
    hostile_ids = []
    for name, expected, err, elapsed, ids, exc in results:
        hostile_ids += ids
        if exc is not None:
            failures.append(f"{name}: expected ERROR {q.ERROR_NAMES[expected]} then close; got {type(exc).__name__}: {exc}")
            continue
        if err.code != expected:
            failures.append(f"{name}: ERROR {err.code} {err.name} ({err.text!r}), expected {expected} {q.ERROR_NAMES[expected]}")
        elif err.retryable != (1 if expected in q.RETRYABLE else 0):
            failures.append(f"{name}: retryable={err.retryable} for {err.name}")
        if expected == q.E_TIMEOUT and not (HELLO_TIMEOUT - 0.5 <= elapsed <= HELLO_TIMEOUT + 4):
            failures.append(f"{name}: timed out after {elapsed:.1f}s, hello_timeout is {HELLO_TIMEOUT}s")
    assert not failures, "\n".join(failures)

    # nothing a bad frame carried was stored
    if hostile_ids:
        assert set(store.rows_per_id(hostile_ids).values()) == {0}

    # the good sessions are unharmed, and did real work meanwhile
    assert rounds >= 3
    assert qa_sync["uploaded"]["stored"] == 3 and qa_sync["server"] == "ml1", qa_sync
    ga.ping()
    gb.ping()
    ga.bye()
    gb.bye()
    ga.close()
    gb.close()

    # and the process still serves a new session
    assert g.alive()
    with q.Client("127.0.0.1", port) as c:
        w = c.hello(f"goodR-{uid}")
        assert w.server == "ml1"
        c.ping()
        d = c.fetch()
        assert sorted(str(m.id) for m in d.msgs) == sorted(qa_ids) and d.more == 0


def test_owed_responses_before_error_and_nothing_after(qagw, store, uid):
    """protocol.md: before the ERROR the server writes the responses it owes for requests
    already read; requests after the bad frame are not processed."""
    g = qagw(workers=("ml1",), limits=LIMITS)
    A, B = f"A-{uid}", f"B-{uid}"
    before = msg(f"{B}\\q", body=b"before the bad frame")
    after = msg(f"{B}\\q", body=b"after the bad frame")
    with q.Client("127.0.0.1", g.port("ml1")) as c:
        c.hello(A)
        c.send_raw(q.encode(q.Ping(7)) + q.encode(q.Upload(1, [before])) + q.frame(0x7F, b"x")
                   + q.encode(q.Upload(2, [after])) + q.encode(q.Ping(8)))
        assert c.expect(q.Pong).nonce == 7
        ack = c.expect(q.UploadAck)
        assert (ack.batch, ack.results) == (1, [(before.id, q.R_STORED)])
        err = c.expect_error_and_close()
        assert err.code == q.E_BAD_FRAME, err
    rows = store.rows_per_id([before.id, after.id])
    assert rows == {str(before.id): 1, str(after.id): 0}, rows
