"""qaagent runs (Agent, AgentResult) and the messages tests send (msg)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import List, Optional, Sequence

from . import procs
from .procs import QAAGENT, require_binary

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

    def argv(self, args: Sequence[str], policy: Optional[str], verbose: bool) -> List[str]:
        """qaagent's command line: this agent's -id, -db, -x list and extra options, then
        -policy and -v if given, then args."""
        require_binary(QAAGENT)
        argv = [str(QAAGENT), "-id", self.id, "-db", str(self.db)]
        for s in self.streams:
            argv += ["-x", s]
        if policy:
            argv += ["-policy", policy]
        if verbose:
            argv.append("-v")
        return argv + self.extra + list(args)

    def run(self, *args: str, timeout: float = 60.0, policy: Optional[str] = "ondemand",
            verbose: bool = False) -> AgentResult:
        argv = self.argv(args, policy, verbose)
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
        argv = self.argv(args, policy, verbose)
        errf = open(stderr_path or self.db.with_suffix(".stderr"), "ab")
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=errf, text=True, cwd=self.db.parent, bufsize=1,
                                    start_new_session=True, preexec_fn=lambda: procs._die_with_parent())
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
