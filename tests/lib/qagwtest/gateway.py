"""qagw processes of a test (Gateway, ConfGateway), their admin port (AdminClient,
Metrics) and the dev certificates."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence

# Debian packages, installed by scripts/install-deps.sh
from prometheus_client.parser import text_string_to_metric_families  # python3-prometheus-client

from . import procs
from .procs import QAGW, REPO, free_port, port_open, require_binary, tail
from .stores import RedisServer, Store

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
                                     start_new_session=True, preexec_fn=lambda: procs._die_with_parent())
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
