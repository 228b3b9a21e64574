"""Paths of the build under test, and process, port and file helpers every part of the
harness uses."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

# Debian packages, installed by scripts/install-deps.sh
import psutil  # python3-psutil


REPO = Path(__file__).resolve().parents[3]
# QAGW_BUILD (e.g. build-asan, set by `make test-asan`) wins over BUILD; default build/.
BUILD = Path(os.environ.get("QAGW_BUILD") or os.environ.get("BUILD", REPO / "build"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
QAGW = BUILD / "qagw"
QAAGENT = BUILD / "qaagent"
PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = Path(os.environ.get("REDIS_SERVER", "/usr/bin/redis-server"))

try:
    import psycopg2  # python3-psycopg2, installed by scripts/install-deps.sh
except ImportError:  # fall back to psql through a subprocess
    psycopg2 = None


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the test runner dies (PR_SET_PDEATHSIG), so a
    killed pytest leaves no gateway behind holding ports."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def children(pid: int) -> List[int]:
    """The pids whose parent is pid now (not their children); [] when pid is gone."""
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def drain_events(lines: Dict[str, "queue.Queue"], events: Dict[str, list],
                 stamp: Optional[float] = None) -> None:
    """Moves what each agent's reader thread queued (its `qaagent run` JSON events; None
    for a line that was not JSON) into events[agent], without waiting; stamps each event's
    "_t" with stamp when given."""
    for aid, q in list(lines.items()):
        while True:
            try:
                ev = q.get_nowait()
            except Exception:  # queue.Empty
                break
            if ev is not None:
                if stamp is not None:
                    ev["_t"] = stamp
                events[aid].append(ev)


_ports_given: Set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to right now, below the kernel's ephemeral range: a port
    from that range could be taken as the local port of some outgoing connection while
    its node is down, and the node's restart would fail to bind it. Never the same port
    twice in one run. Under pytest-xdist (`make test` runs the e2e tests in parallel
    processes) each process takes its own slice of that range, so that two never pick
    the same port."""
    low = max(1024, _ephemeral_low() - 20000)
    high = _ephemeral_low() - 1
    slices = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    m = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    if slices > 1 and m:
        width = (high - low + 1) // slices
        low += int(m.group(1)) % slices * width
        high = low + width - 1
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise AssertionError(f"no free port in {low}..{high}")


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, n: int = 40) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(lines[-n:])


def require_binary(path: Path) -> None:
    # A missing binary is a failure, not a skip: these tests exist to show the feature.
    assert path.is_file() and os.access(path, os.X_OK), \
        f"{path} is not built (run `make {path.relative_to(REPO)}`)"


def wait_until(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def make_tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def proc_fd_count(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def proc_rss_kb(pid: int) -> int:
    """Resident set size of pid in KiB (VmRSS)."""
    return psutil.Process(pid).memory_info().rss // 1024
