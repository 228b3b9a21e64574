"""Issue 16, items 1 and 7 (hostile clients).

Item 1: descriptor exhaustion. A node started under a low RLIMIT_NOFILE and flooded with
connections that never say HELLO pauses its listener (re-enabled from a timer) instead
of spinning on accept: few log lines, little CPU, a gauge that says so, and a new agent
served within a second of the flood ending. A configuration whose caps cannot fit in
the descriptor limit is refused (exit 2) by --check and by a start, naming the key.

Item 7: before HELLO, a frame longer than the largest HELLO (proto/qs_codec.h
QS_HELLO_MAX_LEN) is too_large on its length prefix alone; a maximal HELLO is served."""

from __future__ import annotations

import os
import re
import resource
import socket
import struct
import subprocess
import time

import pytest

import harness
import qasync as q

# protocol.md HELLO: type, u16 version, str agent_id (<= 120), str token, str primary
# (each <= 65535), u8 flags, u64 now_ms
HELLO_MAX_LEN = 1 + 2 + (2 + 120) + 2 * (2 + 65535) + 1 + 8


def read_frame(sock: socket.socket, timeout: float):
    """One frame from a raw socket (type, payload), or None at EOF/reset."""
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        if len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            if len(buf) >= 4 + n:
                return buf[4], buf[5:4 + n]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no frame within {timeout}s ({len(buf)} bytes)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk


def error_code(frame) -> int:
    assert frame is not None, "connection closed without a frame"
    assert frame[0] == q.ERROR, f"expected ERROR, got {q.FRAME_NAMES.get(frame[0], frame[0])}"
    return q.Reader(frame[1]).u16()


def hello_serves(port: int, agent_id: str, timeout: float) -> bool:
    """A raw HELLO on a fresh connection is answered WELCOME within timeout."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(q.encode(q.Hello(agent_id=agent_id, now_ms=q.now_ms())))
            f = read_frame(s, timeout)
            return f is not None and f[0] == q.WELCOME
    except (OSError, TimeoutError):
        return False


# ------------------------------------------------------------------ item 7


def test_pre_hello_length_over_largest_hello_is_too_large_at_once(qagw):
    g = qagw()
    with socket.create_connection(("127.0.0.1", g.port("ml1")), timeout=5) as s:
        s.sendall(struct.pack(">I", HELLO_MAX_LEN + 1))  # the prefix alone, no payload
        t0 = time.monotonic()
        f = read_frame(s, 2.0)
        assert error_code(f) == q.E_TOO_LARGE, f
        assert time.monotonic() - t0 < 1.0
        assert read_frame(s, 2.0) is None  # then closed


def test_maximal_hello_still_gets_welcome(qagw, uid):
    g = qagw()
    agent_id = (f"mx-{uid}-" + "a" * 120)[:120]
    hello = q.encode(q.Hello(agent_id=agent_id, token="t" * 65535, primary="p" * 65535,
                             now_ms=q.now_ms()))
    assert len(hello) == 4 + HELLO_MAX_LEN
    with socket.create_connection(("127.0.0.1", g.port("ml1")), timeout=5) as s:
        s.sendall(hello)
        f = read_frame(s, 5.0)
        assert f is not None and f[0] == q.WELCOME, f
