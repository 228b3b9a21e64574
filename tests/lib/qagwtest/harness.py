"""Processes the black-box tests start and talk to: a private PostgreSQL, qagw gateways,
qaagent runs, and queries of the store. conftest.py turns these into fixtures.

Everything listens on 127.0.0.1 on ports picked free at run time, lives in a per-run
temporary directory, and is killed by pid in teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

# Debian packages, installed by scripts/install-deps.sh
import psutil  # python3-psutil
import redis as redis_py  # python3-redis
from prometheus_client.parser import text_string_to_metric_families  # python3-prometheus-client

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
    twice in one run."""
    low = max(1024, _ephemeral_low() - 20000)
    high = _ephemeral_low() - 1
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


# ------------------------------------------------------------------ PostgreSQL


class PgServer:
    """A private PostgreSQL 15 cluster for one test run.

    The server refuses to run as root, so when we are root the cluster belongs to the
    unprivileged `postgres` user (created by the Debian package) and every server command
    runs through `runuser -u postgres`. initdb uses `-A trust`: acceptable only because
    the server listens on 127.0.0.1 and a private socket directory, for tests.
    """

    def __init__(self, base: Path, port: Optional[int] = None) -> None:
        self.base = Path(base)
        self.port = port or free_port()
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.log = self.base / "postgresql.log"
        self.os_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.databases: List[str] = []

    def _as_pg(self, argv: Sequence[str], check: bool = True, timeout: float = 120):
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--"] + list(argv)
        p = subprocess.run(argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{tail(self.log)}")
        return p

    def init(self) -> "PgServer":
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o700)
        self._as_pg([str(PGBIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                     "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        self._as_pg(["mkdir", "-p", str(self.sock)])
        # Tests need no durability across a machine crash; fsync off keeps them fast.
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 200\n")
        return self

    def start(self) -> None:
        self._as_pg([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                     "-t", "60", "-o",
                     f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_pg([str(PGBIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                     "stop"])

    def running(self) -> bool:
        p = self._as_pg([str(PGBIN / "pg_ctl"), "-D", str(self.data), "status"], check=False)
        return p.returncode == 0

    def shutdown(self) -> None:
        """Teardown: stop if running; never raises."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        except Exception:
            pid_file = self.data / "postmaster.pid"
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
            except Exception:
                pass

    def admin_sql(self, sql: str) -> str:
        p = self._as_pg([str(PGBIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                         str(self.sock), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                         "-tA", "-c", sql])
        return p.stdout.strip()

    def create_database(self, name: str) -> "Store":
        """A fresh database owned by role qagw (created on first use)."""
        if self.admin_sql("select count(*) from pg_roles where rolname='qagw'") != "1":
            self.admin_sql("create role qagw login")
        self.admin_sql(f'create database "{name}" owner qagw')
        self.databases.append(name)
        return Store(self, name)


class Store:
    """One database of a PgServer, as the gateway sees it (user qagw over TCP)."""

    def __init__(self, server: PgServer, dbname: str) -> None:
        self.server = server
        self.dbname = dbname

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.server.port} dbname={self.dbname} user=qagw"

    def query(self, sql: str, params: Sequence = ()) -> List[tuple]:
        """Rows of a query as tuples (values as Python objects with psycopg2, text with psql)."""
        if psycopg2 is not None:
            conn = psycopg2.connect(host="127.0.0.1", port=self.server.port, dbname=self.dbname,
                                    user="qagw", connect_timeout=5)
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(sql, tuple(params))
                    return [tuple(r) for r in cur.fetchall()] if cur.description else []
            finally:
                conn.close()
        # psql fallback: parameters are inlined as quoted literals
        def lit(v) -> str:
            if v is None:
                return "NULL"
            if isinstance(v, (list, tuple)):
                return "ARRAY[" + ",".join(lit(x) for x in v) + "]"
            return "'" + str(v).replace("'", "''") + "'"
        text = sql % tuple(lit(v) for v in params) if params else sql
        p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                            str(self.server.port), "-U", "qagw", "-d", self.dbname, "-tA",
                            "-F", "\x1f", "-c", text], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"psql: {p.stderr}")
        return [tuple(line.split("\x1f")) for line in p.stdout.splitlines() if line != ""]

    def scalar(self, sql: str, params: Sequence = ()):
        rows = self.query(sql, params)
        assert len(rows) == 1, f"{sql!r} returned {len(rows)} rows"
        return rows[0][0]

    def tables(self) -> List[str]:
        return [r[0] for r in self.query(
            "select table_name from information_schema.tables "
            "where table_schema not in ('pg_catalog','information_schema') order by 1")]

    def messages_table(self) -> str:
        """The gateway's messages table: qa_messages by agreement with the store's author;
        otherwise the one table with a uuid column `id`, so a rename fails with a clear message."""
        tables = self.tables()
        if "qa_messages" in tables:
            return "qa_messages"
        cands = [r[0] for r in self.query(
            "select table_name from information_schema.columns where column_name='id' "
            "and data_type='uuid' and table_schema not in ('pg_catalog','information_schema')")]
        assert len(cands) == 1, f"cannot tell the messages table; tables: {tables}, uuid id columns in {cands}"
        return cands[0]

    def rows_per_id(self, ids: Sequence) -> Dict[str, int]:
        """How many rows of the messages table carry each of ids (as canonical UUID text)."""
        t = self.messages_table()
        want = [str(i) for i in ids]
        rows = self.query(f"select id::text, count(*) from {t} where id::text = any(%s) group by id",
                          (want,))
        got = {r[0]: int(r[1]) for r in rows}
        return {i: got.get(i, 0) for i in want}


# ------------------------------------------------------------------ Redis


@contextlib.contextmanager
def _redis(port: int, host: str, timeout: float):
    """A redis-py client on a connection of its own, closed on the way out. Replies come as
    Redis sends them (no response callbacks: "OK" and "PONG" stay strings, HGETALL a flat
    list), bulk strings decoded to str. redis-py's exceptions become what callers catch: an
    error reply RuntimeError, a timeout TimeoutError, anything else on the connection
    ConnectionError."""
    r = redis_py.Redis(host=host, port=port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True,
                       encoding_errors="replace")
    r.response_callbacks.clear()
    try:
        yield r
    except (redis_py.exceptions.ResponseError, redis_py.exceptions.BusyLoadingError) as e:
        raise RuntimeError(f"redis: {e}") from e
    except redis_py.exceptions.TimeoutError as e:
        raise TimeoutError(str(e)) from e
    except (redis_py.exceptions.ConnectionError, redis_py.exceptions.InvalidResponse) as e:
        raise ConnectionError(str(e)) from e
    finally:
        r.connection_pool.disconnect()


def _redis_args(args) -> list:
    return [a if isinstance(a, (bytes, str)) else str(a) for a in args]


def redis_command(port: int, *args, host: str = "127.0.0.1", timeout: float = 2.0):
    """One command to a Redis server, on a connection of its own; the reply as Python values
    (bulk strings as str, errors raised as RuntimeError)."""
    with _redis(port, host, timeout) as r:
        return r.execute_command(*_redis_args(args))


def redis_pipeline(port: int, commands: Sequence[Sequence[object]], host: str = "127.0.0.1",
                   timeout: float = 10.0, chunk: int = 2000) -> list:
    """Replies of many Redis commands sent over one connection, pipelined chunk by chunk
    (replies as redis_command's; the first error reply raised as RuntimeError)."""
    out: list = []
    with _redis(port, host, timeout) as r:
        for i in range(0, len(commands), chunk):
            pipe = r.pipeline(transaction=False)
            for cmd in commands[i:i + chunk]:
                pipe.execute_command(*_redis_args(cmd))
            out += pipe.execute()
    return out


class RedisServer:
    """A private redis-server (Debian's /usr/bin/redis-server) on a free loopback port,
    keeping nothing on disk (`--save "" --appendonly no`). stop() and start() again keep
    the port, so a gateway configured with it sees the same Redis come back, empty."""

    def __init__(self, base: Path, port: Optional[int] = None) -> None:
        self.base = Path(base)
        self.port = port or free_port()
        self.log = self.base / "redis.log"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, timeout: float = 10.0) -> "RedisServer":
        require_binary(REDIS_SERVER)
        assert not self.running(), "redis already running"
        self.base.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv = [str(REDIS_SERVER), "--bind", "127.0.0.1", "--port", str(self.port),
                "--protected-mode", "yes", "--save", "", "--appendonly", "no",
                "--dir", str(self.base), "--logfile", str(self.log), "--daemonize", "no",
                "--databases", "1"]
        self.proc = subprocess.Popen(argv, cwd=self.base, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"redis-server exited with {rc} at start (port {self.port}):\n"
                                     f"{tail(self.log)}")
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, ConnectionError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"redis-server not answering on {self.port} after {timeout}s:\n"
                                     f"{tail(self.log)}")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, *args, timeout: float = 2.0):
        return redis_command(self.port, *args, timeout=timeout)

    def keys(self, pattern: str = "*") -> List[str]:
        return sorted(self.command("KEYS", pattern))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (nothing to save), then SIGKILL; returns once the process is gone."""
        if not self.running():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait(10)

    def shutdown(self) -> None:
        """Teardown: never raises."""
        try:
            self.kill()
        except Exception:
            pass


# ------------------------------------------------------------------ admin port


class AdminClient:
    """The admin port of one node (admin.md): JSON over HTTP/1.1, optional bearer token."""

    def __init__(self, port: int, token: Optional[str] = None, host: str = "127.0.0.1") -> None:
        self.base = f"http://{host}:{port}"
        self.token = token

    def raw(self, method: str, path: str, body=None, token: Optional[str] = "default",
            timeout: float = 5.0, headers: Optional[Dict[str, str]] = None):
        """(status, headers, text). body: dict/list (sent as JSON), str/bytes (sent as is)."""
        tok = self.token if token == "default" else token
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            hdrs.setdefault("Content-Type", "application/json")
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers.items()), r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read().decode(errors="replace")

    def request(self, method: str, path: str, body=None, token: Optional[str] = "default",
                timeout: float = 5.0):
        """(status, parsed JSON body, or the text when it is not JSON)."""
        status, _, text = self.raw(method, path, body, token=token, timeout=timeout)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw)

    def get_ok(self, path: str):
        status, body = self.get(path)
        assert status == 200, f"GET {path}: {status} {body!r}"
        return body

    def metrics(self) -> "Metrics":
        status, _, text = self.raw("GET", "/metrics")
        assert status == 200, f"GET /metrics: {status} {text[:500]!r}"
        return Metrics(text)

    def workers(self) -> Dict[str, dict]:
        """GET /api/workers as {name: entry}."""
        body = self.get_ok("/api/workers")
        assert isinstance(body, list), f"/api/workers is not a list: {body!r}"
        return {w["name"]: w for w in body}


class Metrics:
    """Prometheus text exposition, parsed (prometheus_client's parser): samples (name,
    {labels}, value), by sample name (a counter's name keeps its _total)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: List[tuple] = [(s.name, s.labels, float(s.value))
                                     for fam in text_string_to_metric_families(text)
                                     for s in fam.samples]

    def get(self, name: str, **labels) -> Optional[float]:
        """The sum of every sample of name whose labels include labels; None if there is none."""
        vals = [v for n, lab, v in self.samples
                if n == name and all(lab.get(k) == str(x) for k, x in labels.items())]
        return sum(vals) if vals else None

    def value(self, name: str, **labels) -> float:
        """Like get(), but 0 when no such sample (a counter never incremented may be absent)."""
        v = self.get(name, **labels)
        return 0.0 if v is None else v

    def names(self) -> set:
        return {n for n, _, _ in self.samples}


# ------------------------------------------------------------------ qagw


class Gateway:
    """One qagw process (a node) with its config file and captured stderr."""

    def __init__(self, workdir: Path, node: str, workers: Sequence[str], store: Store,
                 limits: Optional[Dict[str, object]] = None,
                 sections: Optional[Dict[str, Dict[str, object]]] = None,
                 redis: Optional["RedisServer"] = None, redis_prefix: str = "qagw:",
                 admin_token: Optional[str] = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.node = node
        self.store = store
        self.redis = redis
        self.redis_prefix = redis_prefix
        self.admin_token = admin_token
        self.ports = {w: free_port() for w in workers}
        self.admin_port = free_port()
        self.limits = dict(limits or {})
        self.sections = dict(sections or {})
        self.conf = self.dir / f"{node}.conf"
        self.log = self.dir / f"{node}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.write_config()

    def write_config(self) -> None:
        # drain_timeout short: teardown's SIGTERM should not wait the default 10 s
        lines = ["[node]", f"name = {self.node}", "auth = off", "drain_timeout = 2", ""]
        # [worker NAME], [redis] and [admin] are written once, with the caller's keys
        # (e.g. sections={"worker ml1": {"capacity": 2}}) merged in; other sections given
        # by the caller follow as their own blocks (as before)
        extra = {k: dict(v) for k, v in self.sections.items()}
        for w, p in self.ports.items():
            wk = {"listen": f"127.0.0.1:{p}", "advertise": f"127.0.0.1:{p}"}
            wk.update(extra.pop(f"worker {w}", {}))
            lines += [f"[worker {w}]"] + [f"{k} = {v}" for k, v in wk.items()] + [""]
        lines += ["[store]", f"conninfo = {self.store.conninfo}", ""]
        redis = {}
        if self.redis is not None:
            redis = {"host": "127.0.0.1", "port": self.redis.port, "prefix": self.redis_prefix}
        redis.update(extra.pop("redis", {}))
        if redis:
            lines += ["[redis]"] + [f"{k} = {v}" for k, v in redis.items()] + [""]
        admin = {"listen": f"127.0.0.1:{self.admin_port}"}
        if self.admin_token is not None:
            admin["token"] = self.admin_token
        admin.update(extra.pop("admin", {}))
        lines += ["[admin]"] + [f"{k} = {v}" for k, v in admin.items()] + [""]
        if self.limits:
            lines += ["[limits]"] + [f"{k} = {v}" for k, v in self.limits.items()] + [""]
        for sec, kv in extra.items():
            lines += [f"[{sec}]"] + [f"{k} = {v}" for k, v in kv.items()] + [""]
        self.conf.write_text("\n".join(lines))

    def port(self, worker: str) -> int:
        return self.ports[worker]

    def stream(self, worker: str) -> str:
        return f"tcpip(host=127.0.0.1;port={self.ports[worker]})"

    def address(self, worker: str) -> str:
        """HOST:PORT of a worker as an agent with an -x list sends it as HELLO's primary."""
        return f"127.0.0.1:{self.ports[worker]}"

    @property
    def admin(self) -> "AdminClient":
        return AdminClient(self.admin_port, token=self.admin_token or None)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 15.0) -> "Gateway":
        require_binary(QAGW)
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        logf = open(self.log, "ab")
        logf.write(f"\n==== harness: start #{self.starts} of {self.node} ====\n".encode())
        logf.flush()
        self.proc = subprocess.Popen([str(QAGW), "-c", str(self.conf)], cwd=REPO,
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        logf.close()
        deadline = time.monotonic() + timeout
        # the workers' ports, then the admin port (opened after them: a test's first admin
        # request must not race it), unless a test moved the admin port elsewhere
        ports = dict(self.ports)
        if "listen" not in self.sections.get("admin", {}):
            ports["admin port"] = self.admin_port
        pending = set(ports)
        while pending:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"qagw {self.node} exited with {rc} during start-up; log:\n{tail(self.log)}")
            for w in sorted(pending):
                if port_open(ports[w]):
                    pending.discard(w)
            if not pending:
                break
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"qagw {self.node}: {sorted(pending)} not listening after "
                                     f"{timeout}s; log:\n{tail(self.log)}")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.proc.wait(10)

    def stop(self, grace: float = 12.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after grace seconds. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# ------------------------------------------------------------------ qaagent


class AgentResult:
    def __init__(self, argv: List[str], rc: int, stdout: str, stderr: str) -> None:
        self.argv, self.rc, self.stdout, self.stderr = argv, rc, stdout, stderr

    def __repr__(self) -> str:
        return (f"qaagent rc={self.rc}\n argv: {' '.join(self.argv)}\n stdout: {self.stdout[-2000:]}"
                f"\n stderr: {self.stderr[-3000:]}")

    def json_lines(self) -> List[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def json(self) -> dict:
        lines = self.json_lines()
        assert len(lines) == 1, f"expected one JSON line:\n{self!r}"
        return lines[0]


class Agent:
    """`build/qaagent` for one agent id and one client store file."""

    def __init__(self, agent_id: str, db: Path, streams: Sequence[str],
                 extra: Sequence[str] = ()) -> None:
        self.id = agent_id
        self.db = Path(db)
        self.streams = list(streams)
        self.extra = list(extra)

    def run(self, *args: str, timeout: float = 60.0, policy: Optional[str] = "ondemand",
            verbose: bool = False) -> AgentResult:
        require_binary(QAAGENT)
        argv = [str(QAAGENT), "-id", self.id, "-db", str(self.db)]
        for s in self.streams:
            argv += ["-x", s]
        if policy:
            argv += ["-policy", policy]
        if verbose:
            argv.append("-v")
        argv += self.extra + list(args)
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=timeout, cwd=self.db.parent)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"qaagent {' '.join(args)} did not finish in {timeout}s:\n"
                                 f"stdout: {e.stdout}\nstderr: {e.stderr}") from None
        return AgentResult(argv, p.returncode, p.stdout, p.stderr)

    def popen(self, *args: str, policy: Optional[str] = None, verbose: bool = False,
              stderr_path: Optional[Path] = None) -> subprocess.Popen:
        """Starts qaagent with args (e.g. "run", "--count", "1") without waiting: stdout is a
        pipe of text lines, stderr goes to stderr_path (or next to the client store)."""
        require_binary(QAAGENT)
        argv = [str(QAAGENT), "-id", self.id, "-db", str(self.db)]
        for s in self.streams:
            argv += ["-x", s]
        if policy:
            argv += ["-policy", policy]
        if verbose:
            argv.append("-v")
        argv += self.extra + list(args)
        errf = open(stderr_path or self.db.with_suffix(".stderr"), "ab")
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=errf, text=True, cwd=self.db.parent, bufsize=1,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            errf.close()

    def send(self, address: str, body: str, priority: Optional[int] = None,
             expires_in: Optional[int] = None, props: Sequence[str] = ()) -> str:
        args = ["send", address, body]
        if priority is not None:
            args += ["--priority", str(priority)]
        if expires_in is not None:
            args += ["--expires-in", str(expires_in)]
        for kv in props:
            args += ["--prop", kv]
        r = self.run(*args)
        assert r.rc == 0, repr(r)
        out = r.stdout.strip()
        return str(uuid.UUID(out.split()[-1]))  # the message id, canonical

    def sync(self, expect_rc: Optional[int] = 0, timeout: float = 60.0) -> AgentResult:
        r = self.run("sync", timeout=timeout)
        if expect_rc is not None:
            assert r.rc == expect_rc, repr(r)
        return r

    def recv(self, queue: Optional[str] = None, wait: Optional[float] = None) -> List[dict]:
        args = ["recv"] + ([queue] if queue else []) + (["--wait", str(wait)] if wait is not None else [])
        r = self.run(*args)
        assert r.rc == 0, repr(r)
        return r.json_lines()

    def status(self) -> dict:
        r = self.run("status")
        assert r.rc == 0, repr(r)
        return r.json()


def make_tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ messages


def msg(to: str, body: Optional[bytes] = None, priority: int = 4, expires_ms: int = 0,
        props: Sequence = ()):
    """A MSG_OUT with a fresh id (imported lazily so harness stays protocol-agnostic)."""
    from . import qasync
    mid = uuid.uuid4()
    return qasync.MsgOut(id=mid, to=to, body=body if body is not None else f"body {mid}".encode(),
                         priority=priority, expires_ms=expires_ms, props=list(props))


def priority_order_key(m) -> tuple:
    """DELIVER order of protocol.md: most urgent first, then oldest (store position) first."""
    return (-m.priority, m.seq)


# ------------------------------------------------------------------ TLS, auth, config edits


def make_dev_certs(directory: Path) -> Path:
    """The dev CA and the test certificates of conf/make-dev-certs.sh in directory:
    ca.crt, server.crt/.key, expired.crt/.key, wrong-host.crt/.key, other-ca.crt."""
    p = subprocess.run(["bash", str(REPO / "conf" / "make-dev-certs.sh"), str(directory)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert p.returncode == 0, f"conf/make-dev-certs.sh failed:\n{p.stdout}"
    return Path(directory)


class ConfGateway(Gateway):
    """A Gateway whose generated config is edited: extra [node] keys (node_keys, e.g.
    {"auth": "token"}, replacing the harness's auth = off), `tls = on` in the sections of
    tls_workers, and [tls] cert/key. Everything else is the harness's Gateway."""

    def __init__(self, *args, node_keys: Optional[Dict[str, object]] = None,
                 tls_workers: Sequence[str] = (), tls_cert: Optional[Path] = None,
                 tls_key: Optional[Path] = None, **kw) -> None:
        self.node_keys = dict(node_keys or {})
        self.tls_workers = set(tls_workers)
        self.tls_cert, self.tls_key = tls_cert, tls_key
        super().__init__(*args, **kw)

    def write_config(self) -> None:
        super().write_config()
        out, section = [], None
        for line in self.conf.read_text().split("\n"):
            if line.startswith("["):
                section = line
            key = line.split("=", 1)[0].strip() if "=" in line else None
            if section == "[node]" and key in self.node_keys:
                continue  # the harness's own [node] key (auth = off): replaced
            out.append(line)
            if line == "[node]":
                out += [f"{k} = {v}" for k, v in self.node_keys.items()]
            elif line.startswith("[worker ") and line[8:-1] in self.tls_workers:
                out.append("tls = on")
        if self.tls_cert or self.tls_key:
            out += ["", "[tls]"]
            if self.tls_cert:
                out.append(f"cert = {self.tls_cert}")
            if self.tls_key:
                out.append(f"key = {self.tls_key}")
            out.append("")
        self.conf.write_text("\n".join(out))

    def tls_stream(self, worker: str, ca: Path, host: str = "localhost") -> str:
        return f"tls(host={host};port={self.ports[worker]};trusted_certificates={ca})"

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """`qagw -c CONF ARGS...` (e.g. "agent", "add", ID), output captured as text."""
        require_binary(QAGW)
        return subprocess.run([str(QAGW), "-c", str(self.conf)] + list(args), cwd=REPO,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)

    def provision(self, agent_id: str) -> str:
        """A token for agent_id from `qagw agent add` (the only line it prints)."""
        p = self.cli("agent", "add", agent_id)
        assert p.returncode == 0, f"qagw agent add {agent_id}: rc {p.returncode}\n{p.stdout}{p.stderr}"
        return p.stdout.strip()


def proc_fd_count(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def proc_rss_kb(pid: int) -> int:
    """Resident set size of pid in KiB (VmRSS)."""
    return psutil.Process(pid).memory_info().rss // 1024
