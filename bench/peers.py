"""The processes of a benchmark run besides the ones tests/lib/qagwtest/harness.py starts
(PostgreSQL, Redis, qagw): the peers Mosquitto, nats-server and `openssl s_server`, the
load generator build/qabench, CPU pinning, RSS readings and the child-process set-up every
start shares. Used by bench/run.py and bench/scenarios/.

Every process is started in its own session with PR_SET_PDEATHSIG (a killed run.py leaves
nothing behind), listens on 127.0.0.1 on a port picked free at run time, logs into the
run's directory, and is stopped by pid.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set

import psutil  # python3-psutil

from qagwtest import harness  # tests/lib/qagwtest (bench/qagwtest links to it)

MOSQUITTO = Path(os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto"))
NATS_SERVER = Path(os.environ.get("NATS_SERVER", "/usr/sbin/nats-server"))
OPENSSL = Path(os.environ.get("OPENSSL", "/usr/bin/openssl"))
QABENCH = harness.BUILD / "qabench"


# ------------------------------------------------------------------ file descriptors


def raise_nofile(want: int) -> int:
    """Raises this process's RLIMIT_NOFILE (soft, and hard when we may) towards want, so
    that every child inherits it (qagw and the peers hold one descriptor per session).
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        nr_open = hard
    target = min(want, nr_open)
    if target > hard:
        try:  # root (CAP_SYS_RESOURCE) may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            target = hard
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def child_setup() -> None:
    """preexec_fn of every child: die with run.py; the soft descriptor limit at the hard one."""
    harness._die_with_parent()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------ CPU pinning


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def tree(pid: int) -> List[int]:
    """pid and its descendants alive now (a server started by someone else: pg_ctl's
    postmaster and its backends, harness.Gateway), parents before children."""
    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return [pid]


def pin_tree(pid: int, cpus: Set[int]) -> None:
    """Pins every thread of pid and of its descendants to cpus (what `taskset -a -p` does,
    over the whole tree), whose threads and children exist already. Threads and children
    made later inherit."""
    for p in tree(pid):
        try:
            tids = [t.id for t in psutil.Process(p).threads()]
        except psutil.NoSuchProcess:
            continue  # a process that just ended
        for t in tids:
            try:
                os.sched_setaffinity(t, cpus)
            except OSError:
                pass  # a thread that just ended


def cpus_allowed(pid: int) -> str:
    """The cpus pid may run on, in the kernel's list format (Cpus_allowed_list: "0-1,3"; what
    the results state)."""
    spans: List[List[int]] = []
    for c in sorted(psutil.Process(pid).cpu_affinity()):
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ",".join(f"{a}-{z}" if z > a else f"{a}" for a, z in spans) or "?"


def taskset(cpus: Optional[Set[int]]) -> List[str]:
    """The `taskset -c LIST` prefix of a command line (empty when pinning is off)."""
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cpus))] if cpus else []


def rss_kib(pid: int) -> int:
    return harness.proc_rss_kb(pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid, all its threads (utime and stime)."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of pid's whole process tree, including the children that have ended: for
    every process of the tree alive now, utime + stime + cutime + cstime (psutil's
    cpu_times; cutime and cstime hold the children it has reaped, so a PostgreSQL backend
    that exits between two readings still counts, through the postmaster)."""
    total = 0.0
    for p in tree(pid):
        try:
            t = psutil.Process(p).cpu_times()
        except psutil.NoSuchProcess:
            continue  # ended just now: its time is in its parent's cutime from now on
        total += t.user + t.system + t.children_user + t.children_system
    return total


# ------------------------------------------------------------------ a peer process


class Service:
    """One process started from an argv, pinned with taskset, stdout and stderr into a
    log file, ready when its port accepts TCP connections."""

    name = "service"

    def __init__(self, base: Path, cpus: Optional[Set[int]] = None,
                 port: Optional[int] = None) -> None:
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.port = port or harness.free_port()
        self.log = self.base / f"{self.name}.log"
        self.proc: Optional[subprocess.Popen] = None

    def argv(self) -> List[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Writes what the process needs before it starts (config files)."""

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None  # taskset execs: the same pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> "Service":
        self.prepare()
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(taskset(self.cpus) + self.argv(), cwd=self.base,
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         start_new_session=True, preexec_fn=child_setup)
        deadline = time.monotonic() + timeout
        while not harness.port_open(self.port):
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(f"{self.name} exited with {rc} at start:\n{harness.tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not listening on {self.port} after {timeout}s:\n"
                                   f"{harness.tail(self.log)}")
            time.sleep(0.05)
        return self

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after grace seconds; never raises."""
        if not self.alive():
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        except Exception:
            pass

    def restart(self) -> "Service":
        self.stop()
        return self.start()


class Mosquitto(Service):
    """Debian's mosquitto, persistence off (the issue's baseline). TCP_NODELAY on, as qagw
    sets it: otherwise Nagle's algorithm, not the broker, would set the QoS 1 latency."""

    name = "mosquitto"

    def prepare(self) -> None:
        self.conf = self.base / "mosquitto.conf"
        self.conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "allow_anonymous true",
            "max_connections -1",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "",
        ]))

    def argv(self) -> List[str]:
        return [str(MOSQUITTO), "-c", str(self.conf)]


class NatsServer(Service):
    """Debian's nats-server with JetStream on file storage in the run's directory."""

    name = "nats-server"

    def argv(self) -> List[str]:
        return [str(NATS_SERVER), "-js", "-sd", str(self.base / "jetstream"), "-a", "127.0.0.1",
                "-p", str(self.port)]


class SServer(Service):
    """`openssl s_server` with qagw's certificate and key, answering HTTP (-www) so that it
    never waits on its stdin; one connection at a time, like one qagw worker thread."""

    name = "s_server"

    def __init__(self, base: Path, cert: Path, key: Path, **kw) -> None:
        self.cert, self.key = cert, key
        super().__init__(base, **kw)

    def argv(self) -> List[str]:
        return [str(OPENSSL), "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert",
                str(self.cert), "-key", str(self.key), "-www", "-quiet"]


# ------------------------------------------------------------------ versions


def version_line(argv: Sequence[str]) -> str:
    """The first non-empty output line of a version command ('?' when it fails)."""
    try:
        p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    for line in p.stdout.splitlines():
        if line.strip():
            return line.strip()
    return "?"


def versions() -> Dict[str, str]:
    return {
        "postgresql": version_line([str(harness.PGBIN / "postgres"), "--version"]),
        "redis": version_line([str(harness.REDIS_SERVER), "--version"]),
        "mosquitto": version_line([str(MOSQUITTO), "-h"]),
        "nats-server": version_line([str(NATS_SERVER), "--version"]),
        "openssl": version_line([str(OPENSSL), "version"]),
        "gnuplot": version_line(["gnuplot", "--version"]),
    }


def stop_all(services: Iterable[Service]) -> None:
    for s in services:
        s.stop()


# ------------------------------------------------------------------ qabench


class NotRun(Exception):
    """A figure that could not be measured; the message is the reason the results show."""




class Qabench:
    """build/qabench, pinned to the client CPUs, stderr of each run into its own log."""

    def __init__(self, logdir: Path, cpus: Optional[Set[int]]) -> None:
        self.logdir = logdir
        self.cpus = cpus
        self.count = 0

    def argv(self, mode: str, opts: Dict[str, object]) -> List[str]:
        argv = taskset(self.cpus) + [str(QABENCH), mode]
        for k, v in opts.items():
            if v is True:
                argv.append(f"--{k}")
            elif v is not None and v is not False:
                argv += [f"--{k}", str(v)]
        return argv

    def _log(self, mode: str) -> Path:
        self.count += 1
        return self.logdir / f"qabench-{self.count:02d}-{mode}.log"

    @staticmethod
    def _reason(mode: str, rc: int, log: Path) -> str:
        lines = [ln.strip() for ln in harness.tail(log, 20).splitlines() if ln.strip()]
        if any("mode not built yet" in ln for ln in lines):
            return f"qabench {mode}: mode not built yet"
        last = lines[-1] if lines else "no output on stderr"
        return f"qabench {mode} exited {rc}: {last[:300]}"

    @staticmethod
    def _json(mode: str, text: str) -> dict:
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    break
        raise NotRun(f"qabench {mode}: no JSON object on stdout ({text[-200:]!r})")

    def run(self, mode: str, opts: Dict[str, object], timeout: float,
            on_mark: Optional[Callable[[dict], None]] = None) -> dict:
        """One bounded run; its JSON object (with the command line under "cmd"), or NotRun.
        With on_mark, the run gets --marks and on_mark is called with each {"mark": ...}
        line the moment qabench prints it (the window and step boundaries)."""
        if on_mark is not None:
            return self._run_marked(mode, {**opts, "marks": True}, timeout, on_mark)
        if not QABENCH.is_file():
            raise NotRun(f"{QABENCH} is not built")
        argv = self.argv(mode, opts)
        log = self._log(mode)
        with open(log, "wb") as errf:
            try:
                p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=errf, text=True, timeout=timeout,
                                   preexec_fn=child_setup)
            except subprocess.TimeoutExpired:
                raise NotRun(f"qabench {mode}: no result within {timeout:.0f} s (killed)") from None
        if p.returncode != 0:
            raise NotRun(self._reason(mode, p.returncode, log))
        out = self._json(mode, p.stdout)
        out["cmd"] = " ".join(argv[len(taskset(self.cpus)):])
        return out

    def _run_marked(self, mode: str, opts: Dict[str, object], timeout: float,
                    on_mark: Callable[[dict], None]) -> dict:
        if not QABENCH.is_file():
            raise NotRun(f"{QABENCH} is not built")
        argv = self.argv(mode, opts)
        log = self._log(mode)
        deadline = time.monotonic() + timeout
        lines: List[str] = []
        buf = b""
        with open(log, "wb") as errf:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=errf, preexec_fn=child_setup)
            try:
                fd = p.stdout.fileno()
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NotRun(f"qabench {mode}: no result within {timeout:.0f} s (killed)")
                    r, _, _ = select.select([fd], [], [], min(left, 0.5))
                    if not r:
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        raw, buf = buf.split(b"\n", 1)
                        line = raw.decode(errors="replace").strip()
                        if line.startswith('{"mark"'):
                            try:
                                on_mark(json.loads(line))
                            except Exception as e:  # a reading that failed: said below
                                errf.write(f"bench: mark {line}: {e}\n".encode())
                            continue
                        lines.append(line)
                p.wait(max(1.0, deadline - time.monotonic()))
            except (NotRun, subprocess.TimeoutExpired):
                p.kill()
                p.wait(10)
                raise NotRun(f"qabench {mode}: no result within {timeout:.0f} s (killed)") from None
            finally:
                p.stdout.close()
        if p.returncode != 0:
            raise NotRun(self._reason(mode, p.returncode, log))
        out = self._json(mode, "\n".join(lines + [buf.decode(errors="replace")]))
        out["cmd"] = " ".join(argv[len(taskset(self.cpus)):])
        return out

    def start(self, mode: str, opts: Dict[str, object]) -> "tuple[subprocess.Popen, Path]":
        """A run in the background (stdout a pipe); with hold() or as load."""
        if not QABENCH.is_file():
            raise NotRun(f"{QABENCH} is not built")
        log = self._log(mode)
        with open(log, "wb") as errf:
            p = subprocess.Popen(self.argv(mode, opts), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=errf, start_new_session=True,
                                 preexec_fn=child_setup)
        return p, log

    def ready(self, mode: str, p: subprocess.Popen, log: Path, timeout: float) -> dict:
        """Waits for the {"ready":true,...} object of an idle mode; NotRun when it exits
        first or the time is up (the caller stops the process)."""
        deadline = time.monotonic() + timeout
        buf = b""
        fd = p.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotRun(f"qabench {mode}: not ready within {timeout:.0f} s "
                             f"(last stderr: {harness.tail(log, 1)[:200]})")
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    p.wait(5)
                    raise NotRun(self._reason(mode, p.returncode, log))
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.strip().startswith("{"):
                        try:
                            obj = json.loads(line)
                        except ValueError:
                            continue
                        if obj.get("ready") is True:
                            return obj
                        if obj.get("ready") is False:
                            raise NotRun(f"qabench {mode}: not ready: {line[:300]}")
            elif p.poll() is not None:
                raise NotRun(self._reason(mode, p.returncode, log))


def stop_proc(p: Optional[subprocess.Popen], grace: float = 10.0) -> Optional[int]:
    """SIGTERM, then SIGKILL; the exit status. Never raises."""
    if p is None:
        return None
    try:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    except Exception:
        pass
    return p.returncode
