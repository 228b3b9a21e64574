"""Issue 16 item 7, after HELLO: until WELCOME is written, a connection buffers at most a
HELLO's worth of input (what it pipelines behind the HELLO waits in the kernel), and
reading resumes at WELCOME, so a pipelined UPLOAD larger than that is still served."""

from __future__ import annotations

import socket
import struct
import threading
import time

import psycopg2

from qagwtest import qasync as q
from qagwtest.harness import msg, proc_rss_kb

TOKEN = {"auth": "token"}
N_CONNS = 24
PAYLOAD = 1_000_000  # of a 1 MiB UPLOAD frame, sent behind each HELLO


def locked_credentials(g):
    lock = psycopg2.connect(host="127.0.0.1", port=g.store.server.port, dbname=g.store.dbname,
                            user="qagw", connect_timeout=5)
    with lock.cursor() as cur:  # the credentials lookup (WELCOMING) now waits
        cur.execute("LOCK TABLE qa_credentials IN ACCESS EXCLUSIVE MODE")
    return lock


def push_bytes(c: q.Client, data: bytes, seconds: float) -> None:
    """Sends what the peer will take within seconds (it may stop reading)."""
    c.sock.settimeout(seconds)
    try:
        c.sock.sendall(data)
    except (socket.timeout, TimeoutError):
        pass
    finally:
        c.sock.settimeout(10)


def test_welcoming_connections_buffer_at_most_a_hello(qagw_conf, uid):
    g = qagw_conf(node_keys=TOKEN, limits={"hello_timeout": 30, "max_frame": 1 << 20})
    port = g.port("ml1")
    tok = g.provision(f"ok-{uid}")
    with q.Client("127.0.0.1", port) as c:  # warm: the worker's first session
        c.hello(f"ok-{uid}", token=tok)
    time.sleep(0.5)
    rss0 = proc_rss_kb(g.proc.pid)
    lock = locked_credentials(g)
    conns = []
    try:
        for i in range(N_CONNS):
            c = q.Client("127.0.0.1", port, source=f"127.0.1.{i + 1}")
            conns.append(c)
            hello = q.encode(q.Hello(agent_id=f"nobody-{i}-{uid}", token="0" * 64,
                                     now_ms=q.now_ms()))
            partial = struct.pack(">IB", 1 << 20, q.UPLOAD) + bytes(PAYLOAD)
            push_bytes(c, hello + partial, 0.5)
        time.sleep(1.0)
        grown_kb = proc_rss_kb(g.proc.pid) - rss0
        print(f"RSS growth {grown_kb} KiB for {N_CONNS} connections")
        # at most a HELLO (128 KiB) + read-ahead each, not the 1 MiB frame each
        assert grown_kb < N_CONNS * 400, \
            f"RSS grew {grown_kb} KiB for {N_CONNS} connections held in WELCOMING"
    finally:
        lock.rollback()
        lock.close()
        for c in conns:
            c.close()


def test_upload_pipelined_behind_a_held_hello_is_served(qagw_conf, uid):
    g = qagw_conf(node_keys=TOKEN, limits={"hello_timeout": 30, "max_frame": 1 << 20})
    port = g.port("ml1")
    tok = g.provision(f"pipe-{uid}")
    m = msg(f"peer-{uid}\\q", body=bytes(900_000))  # far larger than the pre-WELCOME buffer
    data = q.encode(q.Hello(agent_id=f"pipe-{uid}", token=tok, now_ms=q.now_ms())) + \
        q.encode(q.Upload(batch=1, msgs=[m]))
    lock = locked_credentials(g)
    with q.Client("127.0.0.1", port) as c:
        sender = threading.Thread(target=c.sock.sendall, args=(data,), daemon=True)
        try:
            sender.start()  # blocks once the worker stops reading, until WELCOME
            time.sleep(1.0)
        finally:
            lock.rollback()
            lock.close()
        c.expect(q.Welcome, timeout=10)
        ack = c.expect(q.UploadAck, timeout=10)
        assert ack.by_id[m.id] == q.R_STORED, ack
        sender.join(5)
        assert not sender.is_alive()
