"""The store and Redis of a test run: a private PostgreSQL cluster (PgServer, Store) and
Redis (RedisServer, redis_command, redis_pipeline), on loopback."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

# Debian packages, installed by scripts/install-deps.sh
import redis as redis_py  # python3-redis

from . import procs
from .procs import PGBIN, REDIS_SERVER, free_port, psycopg2, require_binary, tail

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

    def admin_conn(self):
        """A psycopg2 connection of its own to the database postgres as postgres,
        autocommit (for monitoring: its queries are not transactions of the databases
        under test)."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, dbname="postgres",
                                user="postgres", connect_timeout=5)
        conn.autocommit = True
        return conn

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

    def __init__(self, base: Path, port: Optional[int] = None, extra: Sequence[str] = ()) -> None:
        self.base = Path(base)
        self.port = port or free_port()
        self.extra = list(extra)  # more redis-server options (a replica's --replicaof)
        self.log = self.base / "redis.log"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, timeout: float = 10.0) -> "RedisServer":
        require_binary(REDIS_SERVER)
        argv = [str(REDIS_SERVER), "--bind", "127.0.0.1", "--port", str(self.port),
                "--protected-mode", "yes", "--save", "", "--appendonly", "no",
                "--dir", str(self.base), "--logfile", str(self.log), "--daemonize", "no",
                "--databases", "1"] + self.extra
        return self._start_argv(argv, timeout)

    def _start_argv(self, argv: List[str], timeout: float) -> "RedisServer":
        """Starts argv and returns once it answers PING (a sentinel does too)."""
        assert not self.running(), "redis already running"
        self.base.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.proc = subprocess.Popen(argv, cwd=self.base, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=lambda: procs._die_with_parent())
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
