"""qagw's life cycle: SIGTERM drains (owed responses, then ERROR draining, new connects
refused, clean exit), SIGHUP reloads the log level (a broken file keeps the old
configuration), and a peer that never reads is closed without hurting others."""

from __future__ import annotations

import signal
import socket
import time
import uuid

import pytest

from qagwtest import harness
from qagwtest import qasync
from qagwtest.qasync import Client, MsgOut, Ping, frame


def test_sigterm_drains_sessions_and_exits(qagw, uid):
    gw = qagw(workers=("ml1",))
    port = gw.port("ml1")
    ready = Client("127.0.0.1", port)
    ready.hello(f"drainA-{uid}")
    ack = ready.upload([MsgOut(id=uuid.uuid4(), to=f"drainB-{uid}\\q", body=b"before")])
    assert [r for _, r in ack.results] == [0]
    waiting = Client("127.0.0.1", port)  # connected, no HELLO yet
    time.sleep(0.2)

    gw.proc.send_signal(signal.SIGTERM)
    for c in (ready, waiting):
        err = c.expect_error_and_close(timeout=5)
        assert err.code == 8 and err.retryable == 1, err  # draining
    rc = gw.proc.wait(10)
    assert rc == 0, harness.tail(gw.log)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert "draining" in gw.log_text()


def test_sighup_reloads_log_level_and_keeps_config_on_error(qagw, uid):
    gw = qagw(workers=("ml1",), sections={"node": {"log_level": "info"}})
    # [node] appears twice in the generated file; keep one by rewriting it
    text = gw.conf.read_text().replace("\n[node]\nlog_level = info\n", "\n")
    text = text.replace("drain_timeout = 2", "drain_timeout = 2\nlog_level = info")
    gw.conf.write_text(text)
    gw.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: "configuration reloaded (log_level info)" in gw.log_text(), 5,
                       what="first reload")

    with Client("127.0.0.1", gw.port("ml1")) as c:
        c.hello(f"hup1-{uid}")
        c.ping()
    assert "<- PING" not in gw.log_text()  # debug lines are off at info

    gw.conf.write_text(text.replace("log_level = info", "log_level = debug"))
    gw.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: "configuration reloaded (log_level debug)" in gw.log_text(), 5,
                       what="reload to debug")
    with Client("127.0.0.1", gw.port("ml1")) as c:
        c.hello(f"hup2-{uid}")
        c.ping()
    harness.wait_until(lambda: "<- PING" in gw.log_text(), 5, what="debug line after reload")

    gw.conf.write_text(text + "\n[nosuch]\nx = 1\n")
    gw.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: "configuration not reloaded" in gw.log_text(), 5, what="refused reload")
    assert gw.alive()
    with Client("127.0.0.1", gw.port("ml1")) as c:  # still serving, still at debug
        c.hello(f"hup3-{uid}")
        assert isinstance(c.ping(), qasync.Pong)


def test_peer_that_never_reads_is_closed_others_unharmed(qagw, uid):
    gw = qagw(workers=("ml1",), limits={"heartbeat": 1, "max_output": 65536})
    port = gw.port("ml1")
    hog_id = f"hog-{uid}"
    # 24 messages of 900 KB wait for the hog: ~21 MB of DELIVERs, far more than the
    # kernel's socket buffers and max_output can absorb.
    with Client("127.0.0.1", port) as up:
        up.hello(f"feeder-{uid}")
        for _ in range(24):
            ack = up.upload([MsgOut(id=uuid.uuid4(), to=f"{hog_id}\\q", body=b"x" * 900_000)])
            assert [r for _, r in ack.results] == [0]
    hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect(("127.0.0.1", port))
    hog.sendall(frame(0x01, qasync.Hello(agent_id=hog_id).payload()))
    fetch = frame(0x05, (1).to_bytes(2, "big") + (1 << 20).to_bytes(4, "big"))
    hog.sendall(fetch * 30)  # and never read
    # Meanwhile another agent is served normally.
    with Client("127.0.0.1", port) as c:
        c.hello(f"ok-{uid}")
        assert isinstance(c.ping(), qasync.Pong)
    # The hog is closed once nothing could be written to it for 3 x heartbeat.
    harness.wait_until(lambda: "does not read" in gw.log_text(), 15, what="slow reader closed")
    hog.close()
    with Client("127.0.0.1", port) as c:
        c.hello(f"ok2-{uid}")
        assert isinstance(c.ping(), qasync.Pong)
