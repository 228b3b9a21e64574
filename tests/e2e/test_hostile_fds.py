"""Issue 16, items 1 and 7 (hostile clients).

Item 1: descriptor exhaustion. A node started under a low RLIMIT_NOFILE and flooded with
connections that never say HELLO pauses its listener (re-enabled from a timer) instead
of spinning on accept: few log lines, little CPU, a gauge that says so, and a new agent
served within a second of the flood ending. A configuration whose caps cannot fit in
the descriptor limit is refused (exit 2) by --check and by a start, naming the key.

Item 7: before HELLO, a frame longer than the largest HELLO (proto/qs_codec.h
QS_HELLO_MAX_LEN) is too_large on its length prefix alone; a maximal HELLO is served."""

from __future__ import annotations

import re
import resource
import socket
import struct
import subprocess
import time

import psutil
import pytest

from qagwtest import harness, procs
from qagwtest import qasync as q

# protocol.md HELLO: type, u16 version, str agent_id (<= 120), str token, str primary
# (each <= 65535), u8 flags, u64 now_ms
HELLO_MAX_LEN = 1 + 2 + (2 + 120) + 2 * (2 + 65535) + 1 + 8


def error_code(frame) -> int:
    assert frame is not None, "connection closed without a frame"
    assert frame[0] == q.ERROR, f"expected ERROR, got {q.FRAME_NAMES.get(frame[0], frame[0])}"
    return q.Reader(frame[1]).u16()


def hello_serves(port: int, agent_id: str, timeout: float) -> bool:
    """A raw HELLO on a fresh connection is answered WELCOME within timeout."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(q.encode(q.Hello(agent_id=agent_id, now_ms=q.now_ms())))
            f = q.read_raw_frame(s, timeout)
            return f is not None and f[0] == q.WELCOME
    except (OSError, TimeoutError):
        return False


# ------------------------------------------------------------------ item 7


def test_pre_hello_length_over_largest_hello_is_too_large_at_once(qagw):
    g = qagw()
    with socket.create_connection(("127.0.0.1", g.port("ml1")), timeout=5) as s:
        s.sendall(struct.pack(">I", HELLO_MAX_LEN + 1))  # the prefix alone, no payload
        t0 = time.monotonic()
        f = q.read_raw_frame(s, 2.0)
        assert error_code(f) == q.E_TOO_LARGE, f
        assert time.monotonic() - t0 < 1.0
        assert q.read_raw_frame(s, 2.0) is None  # then closed


def test_maximal_hello_still_gets_welcome(qagw, uid):
    g = qagw()
    agent_id = (f"mx-{uid}-" + "a" * 120)[:120]
    hello = q.encode(q.Hello(agent_id=agent_id, token="t" * 65535, primary="p" * 65535,
                             now_ms=q.now_ms()))
    assert len(hello) == 4 + HELLO_MAX_LEN
    with socket.create_connection(("127.0.0.1", g.port("ml1")), timeout=5) as s:
        s.sendall(hello)
        f = q.read_raw_frame(s, 5.0)
        assert f is not None and f[0] == q.WELCOME, f


# ------------------------------------------------------------------ item 1

NOFILE = 256
# Caps that fit in NOFILE by the budget in gateway/fd_budget.h:
# 1 worker x (32 + 1 store connection + 8) + 128 = 169 <= 256
FITS = {"max_pending_hello": 32, "max_pending_hello_per_ip": 32, "hello_timeout": 30}
STORE_1 = {"store": {"connections": 1}}
# Connections that say nothing, left in the backlog while accept is paused: fewer than
# max_pending_hello, so that once they are accepted (and seen closed) they do not make
# the first HELLO after the flood overloaded.
SILENT = 20


_die_with_parent = harness._die_with_parent


def limited(nofile):
    """A preexec_fn: the harness's, then RLIMIT_NOFILE = nofile (soft, hard)."""
    def pre() -> None:
        _die_with_parent()
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
    return pre


def run_limited(argv, nofile, timeout=30.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=harness.REPO, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, preexec_fn=limited(nofile))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid (all its threads; utime + stime), in seconds."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def metrics(conn) -> str:
    """GET /metrics over an admin connection kept open (keep-alive)."""
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read().decode()
    assert r.status == 200, body
    return body


def paused_gauge(conn) -> int:
    """qagw_listeners_paused from /metrics."""
    m = re.search(r"^qagw_listeners_paused (\d+)$", metrics(conn), re.M)
    assert m, "no qagw_listeners_paused in /metrics"
    return int(m.group(1))


def test_caps_over_the_descriptor_limit_are_refused(qagw):
    too_many = qagw(limits={"max_pending_hello": 1000}, sections=STORE_1, start=False)
    for argv in ([harness.QAGW, "-c", too_many.conf, "--check"],
                 [harness.QAGW, "-c", too_many.conf]):
        p = run_limited(argv, (NOFILE, NOFILE))
        assert p.returncode == 2, (argv, p.returncode, p.stdout, p.stderr)
        assert "max_pending_hello" in p.stderr and "RLIMIT_NOFILE" in p.stderr, p.stderr
    # the soft limit is raised to the hard one before the budget is checked
    fits = qagw(limits=FITS, sections=STORE_1, start=False)
    p = run_limited([harness.QAGW, "-c", fits.conf, "--check"], (64, NOFILE))
    assert p.returncode == 0, (p.stdout, p.stderr)
    p = run_limited([harness.QAGW, "-c", fits.conf, "--check"], (64, 64))
    assert p.returncode == 2 and "max_pending_hello" in p.stderr, (p.stdout, p.stderr)


def test_descriptor_exhaustion_pauses_accept_without_spinning(qagw, uid, monkeypatch):
    import http.client

    monkeypatch.setattr(procs, "_die_with_parent", limited((NOFILE, NOFILE)))  # every Popen of the harness calls it
    g = qagw(limits=FITS, sections=STORE_1)
    monkeypatch.undo()
    port, pid = g.port("ml1"), g.pid
    assert hello_serves(port, f"first-{uid}", 5.0)
    admin = http.client.HTTPConnection("127.0.0.1", g.admin_port, timeout=5)
    metrics(admin)  # opens the connection the gauge is read through while flooded

    # The flood: sessions (each a HELLO answered WELCOME) until the descriptors run out
    # and the next HELLO is not answered; then connections that say nothing, which wait in
    # the listen backlog while accept fails.
    flood = []
    exhausted = False
    try:
        for i in range(NOFILE + 50):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            flood.append(s)
            s.sendall(q.encode(q.Hello(agent_id=f"fl{i}-{uid}", now_ms=q.now_ms())))
            try:
                f = q.read_raw_frame(s, 1.0)
            except TimeoutError:
                exhausted = True
                break
            assert f is not None and f[0] == q.WELCOME, (i, f)
        assert exhausted, "the flood never ran the node out of descriptors"
        for _ in range(SILENT):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)

        lines0 = len(g.log_text().splitlines())
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(3.0)
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        log = g.log_text().splitlines()
        about = [l for l in log if "accept" in l]
        print(f"flooded: {len(flood)} connections, cpu {cpu:.3f} of a core over 3 s, "
              f"{len(log) - lines0} log lines in those 3 s, {len(about)} about accept")
        assert cpu < 0.10, f"{cpu:.2f} of a core while flooded"
        assert len(about) < 100, about[:5]
        assert paused_gauge(admin) == 1
    finally:
        t_end = time.monotonic()
        for s in flood:
            s.close()

    # served within 1 s of the flood's end
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(q.encode(q.Hello(agent_id=f"after-{uid}", now_ms=q.now_ms())))
        f = q.read_raw_frame(s, 2.0)
        served = time.monotonic() - t_end
    print(f"served {served:.3f} s after the flood ended")
    assert f is not None and f[0] == q.WELCOME, f
    assert served < 1.0, f"WELCOME {served:.2f} s after the flood ended"
    deadline = time.monotonic() + 5
    while paused_gauge(admin) != 0:
        assert time.monotonic() < deadline, "qagw_listeners_paused stayed 1"
        time.sleep(0.1)
    admin.close()
    assert "accepting again after" in g.log_text()
    assert g.alive()
