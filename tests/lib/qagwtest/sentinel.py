"""Redis Sentinel on loopback for the HA tests (issue 18): a master, a replica and three
sentinels, each a Debian `redis-server` (a sentinel is `redis-server FILE --sentinel`).

The layout and settings are those of docs/operations.md "High availability: Redis
Sentinel", shortened for a test: a sentinel thinks the master down after 1 s without an
answer (`down-after-milliseconds 1000`, production 5000 or more), quorum 2 of 3, and a
failover may be retried after 3 s (`failover-timeout 3000`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Tuple

from .procs import REDIS_SERVER, require_binary, tail
from .stores import RedisServer, redis_command

MASTER_NAME = "qagwha"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def sentinel_conf(port: int, base: Path, master_port: int, name: str = MASTER_NAME) -> str:
    """A sentinel's configuration file (the sentinel rewrites it as it learns)."""
    return (f"port {port}\nbind 127.0.0.1\ndir {base}\n"
            f"sentinel monitor {name} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {name} 1\n")


class Sentinel(RedisServer):
    """One sentinel process: RedisServer's start/stop/kill, with a sentinel's argv."""

    def __init__(self, base: Path, master_port: int) -> None:
        super().__init__(base)
        self.master_port = master_port

    def start(self, timeout: float = 10.0) -> "Sentinel":
        require_binary(REDIS_SERVER)
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "sentinel.conf"
        conf.write_text(sentinel_conf(self.port, self.base, self.master_port))
        return self._start_argv([str(REDIS_SERVER), str(conf), "--sentinel",
                                 "--logfile", str(self.log)], timeout)

    def master(self, name: str = MASTER_NAME) -> Optional[Tuple[str, int]]:
        try:
            r = self.command("SENTINEL", "get-master-addr-by-name", name)
        except (OSError, ConnectionError, RuntimeError, TimeoutError):
            return None
        return (r[0], int(r[1])) if r else None


class SentinelSet:
    """Master + replica + 3 sentinels, started in base; `sentinels` is the value of qagw's
    `[redis] sentinels`."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.master = RedisServer(self.base / "master")
        self.replica = RedisServer(self.base / "replica",
                                   extra=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels: List[Sentinel] = [Sentinel(self.base / f"sentinel{i}", self.master.port)
                                          for i in range(3)]

    @property
    def conf(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self, timeout: float = 30.0) -> "SentinelSet":
        self.master.start()
        self.replica.start()
        for s in self.sentinels:
            s.start()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise AssertionError("sentinels not ready after %ss:\n%s" %
                                     (timeout, tail(self.sentinels[0].log)))
            time.sleep(0.1)
        return self

    def ready(self) -> bool:
        """The replica is in sync and every sentinel knows it and the two others."""
        try:
            info = self.replica.command("INFO", "replication")
            if "master_link_status:up" not in info:
                return False
            for s in self.sentinels:
                if len(s.command("SENTINEL", "replicas", MASTER_NAME)) != 1:
                    return False
                if len(s.command("SENTINEL", "sentinels", MASTER_NAME)) != 2:
                    return False
            return True
        except (OSError, ConnectionError, RuntimeError, TimeoutError):
            return False

    def server_at(self, port: int) -> RedisServer:
        return self.master if self.master.port == port else self.replica

    def current_master(self) -> Optional[Tuple[str, int]]:
        """The master most sentinels name now."""
        votes: dict = {}
        for s in self.sentinels:
            if s.running():
                m = s.master()
                if m:
                    votes[m] = votes.get(m, 0) + 1
        return max(votes, key=votes.get) if votes else None

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> float:
        """Polls every 50 ms until the sentinels name another master and it says ROLE
        master; returns time.monotonic() then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.current_master()
            if m and m[1] != old_port:
                try:
                    if redis_command(m[1], "ROLE")[0] == "master":
                        return time.monotonic()
                except (OSError, ConnectionError, RuntimeError, TimeoutError):
                    pass
            time.sleep(0.05)
        raise AssertionError(f"no promotion within {timeout}s:\n{tail(self.sentinels[0].log)}")

    def shutdown(self) -> None:
        for s in self.sentinels + [self.replica, self.master]:
            s.shutdown()

