"""Service integration of the qagw program (docs/service.md): --version, the exit codes,
sd_notify (READY only once every worker accepts, RELOADING/READY on SIGHUP, STOPPING on
SIGTERM), [node] log_file and its reopen on SIGHUP, the `workers` and `agents ID`
subcommands, and the systemd unit conf/qagw.service."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.harness import QAGW, REPO, free_port, port_open, require_binary, tail, wait_until
from qagwtest.pool import HOST, persist

VERSION = (REPO / "VERSION").read_text().strip()
UNIT_TEMPLATE = REPO / "conf" / "qagw.service.in"


def unit_text(prefix: str = "/usr/local") -> str:
    """The unit as `make install PREFIX=prefix` writes it (issue 19: from a template)."""
    return UNIT_TEMPLATE.read_text().replace("@PREFIX@", prefix)


def run(*args, timeout: float = 60.0, env=None) -> subprocess.CompletedProcess:
    require_binary(QAGW)
    return subprocess.run([str(QAGW), *map(str, args)], cwd=REPO, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=env)


def start_plain(gw, env=None) -> subprocess.Popen:
    """Starts gw like Gateway.start (stderr into gw.log, stopped by the fixture's teardown)
    but with env and without waiting for the ports."""
    require_binary(QAGW)
    gw.starts += 1
    with open(gw.log, "ab") as logf:
        gw.proc = subprocess.Popen([str(QAGW), "-c", str(gw.conf)], cwd=REPO,
                                   stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                   start_new_session=True, env=env,
                                   preexec_fn=harness._die_with_parent)
    return gw.proc


# ------------------------------------------------------------------ --version, usage


def test_version_matches_version_file():
    for flag in ("--version", "-V"):
        p = run(flag)
        assert p.returncode == 0, (flag, p.returncode, p.stderr)
        assert p.stdout == f"qagw {VERSION}\n", (flag, p.stdout)


def test_help_lists_every_form():
    p = run("--help")
    assert p.returncode == 0, p.stderr
    for form in ("--check", "agent add ID", "agent remove ID", "agent list", "workers",
                 "agents ID", "--json", "--version"):
        assert form in p.stdout, (form, p.stdout)


@pytest.mark.parametrize("argv", [["--bogus"], ["-c"], [], ["-c", "x.conf", "frobnicate"],
                                  ["-c", "x.conf", "agents"]])
def test_usage_errors_exit_2(argv):
    p = run(*argv)
    assert p.returncode == 2, (argv, p.returncode, p.stdout, p.stderr)
    assert "usage:" in p.stderr, p.stderr


# ------------------------------------------------------------------ exit codes


def test_invalid_configuration_exits_2(qagw):
    gw = qagw(workers=("ml1",), start=False)
    gw.conf.write_text(gw.conf.read_text() + "\n[node]\ncolour = blue\n")
    for extra in ((), ("--check",)):
        p = run("-c", gw.conf, *extra)
        assert p.returncode == 2, (extra, p.returncode, p.stderr)
        assert "colour" in p.stderr, p.stderr
    missing = run("-c", gw.conf.with_name("nosuch.conf"))
    assert missing.returncode == 2, (missing.returncode, missing.stderr)


def test_unbindable_listener_exits_1(qagw):
    gw = qagw(workers=("ml1",), start=False)
    with socket.socket() as taken:
        taken.bind((HOST, gw.port("ml1")))
        taken.listen(1)
        proc = start_plain(gw)
        rc = proc.wait(40)
    assert rc == 1, (rc, tail(gw.log))
    assert "cannot listen" in gw.log_text(), tail(gw.log)


def test_unreadable_tls_files_exit_1(qagw, tmp_path):
    gw = qagw(workers=("ml1",), start=False,
              sections={"worker ml1": {"tls": "on"},
                        "tls": {"cert": tmp_path / "nosuch.crt", "key": tmp_path / "nosuch.key"}})
    rc = start_plain(gw).wait(40)
    assert rc == 1, (rc, tail(gw.log))


# ------------------------------------------------------------------ sd_notify


class NotifySocket:
    """The service manager's side of sd_notify: a unix datagram socket."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="qn")  # short: sun_path has 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen = []

    def next(self, timeout: float) -> dict:
        """The next datagram as {key: value}; AssertionError on timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise AssertionError(f"no notification within {timeout}s; seen {self.seen}") from None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.seen.append(msg)
        return msg

    def until(self, key: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            m = self.next(max(0.05, deadline - time.monotonic()))
            if key in m:
                return m

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


def test_sd_notify_ready_reload_stopping(qagw, notify, uid):
    workers = ("ml1", "ml2", "ml3")
    gw = qagw(workers=workers, start=False)
    proc = start_plain(gw, env=dict(os.environ, NOTIFY_SOCKET=notify.path))

    # READY=1 comes only once every worker accepts: at that moment each worker has
    # already logged "accepting" and the admin port answers, with no waiting.
    ready = notify.until("READY", 30)
    log_at_ready = gw.log_text()
    assert ready["READY"] == "1", ready
    assert not any("READY" in m or "STOPPING" in m for m in notify.seen[:-1]), notify.seen
    for w in workers:
        assert f"worker {w}: accepting on" in log_at_ready, (w, log_at_ready)
    assert "serving" in ready.get("STATUS", ""), ready
    assert all(w in ready["STATUS"] for w in workers), ready
    assert port_open(gw.admin_port, timeout=1.0), "admin port closed at READY"
    for w in workers:
        with q.Client(HOST, gw.port(w), timeout=3) as c:
            assert c.hello(f"ready-{w}-{uid}").server == w

    # SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again
    proc.send_signal(signal.SIGHUP)
    m = notify.until("RELOADING", 10)
    assert m["RELOADING"] == "1" and m.get("MONOTONIC_USEC", "").isdigit(), m
    m = notify.until("READY", 10)
    assert m["READY"] == "1" and "serving" in m.get("STATUS", ""), m
    assert proc.poll() is None, tail(gw.log)

    # SIGTERM: STOPPING=1 when the drain begins, exit 0 when it is over
    proc.send_signal(signal.SIGTERM)
    m = notify.until("STOPPING", 10)
    assert m["STOPPING"] == "1", m
    assert proc.wait(20) == 0, tail(gw.log)
    assert f"node {gw.node}: stopped" in gw.log_text(), tail(gw.log)


def test_no_ready_while_the_store_is_unreachable(qagw, notify, tmp_path):
    """A node whose store does not answer never says READY=1 (and exits 1 after its wait,
    which is too long to wait for here: we check for 3 s that it stays silent)."""
    gw = qagw(workers=("ml1",), start=False)
    dead = free_port()
    gw.conf.write_text(re.sub(r"conninfo = .*", f"conninfo = host=127.0.0.1 port={dead} "
                              "dbname=qagw user=qagw connect_timeout=1", gw.conf.read_text()))
    proc = start_plain(gw, env=dict(os.environ, NOTIFY_SOCKET=notify.path))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            m = notify.next(max(0.05, deadline - time.monotonic()))
        except AssertionError:
            break
        assert "READY" not in m, (m, tail(gw.log))
    assert proc.poll() is None, tail(gw.log)


# ------------------------------------------------------------------ log_file


def test_log_file_and_reopen_on_sighup(qagw, tmp_path):
    logfile = tmp_path / "logs" / "qagw.log"
    logfile.parent.mkdir()
    gw = qagw(workers=("ml1",), sections={"node": {"log_file": logfile}})
    wait_until(lambda: "accepting on" in logfile.read_text(), 10, what="the accepting line")
    text = logfile.read_text()
    assert f"qagw {VERSION}" in text, text  # the start-up line names the version
    assert "accepting on" not in gw.log_text(), "log lines still go to stderr"

    rotated = logfile.with_name("qagw.log.1")
    logfile.rename(rotated)
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: logfile.exists() and "configuration reloaded" in logfile.read_text(),
               10, what="the reopened log file")
    assert "log reopened" in logfile.read_text(), logfile.read_text()
    old = rotated.read_text()
    assert "configuration reloaded" not in old, old

    # the following lines all go to the new file; the rotated one stops growing
    size_new = logfile.stat().st_size
    for _ in range(2):
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: logfile.stat().st_size > size_new, 10, what="more lines")
        size_new = logfile.stat().st_size
        time.sleep(0.2)
    assert gw.stop() == 0, tail(logfile)
    assert "stopped" in logfile.read_text(), logfile.read_text()
    assert rotated.read_text() == old, "the rotated file still grows"


@pytest.mark.parametrize("is_journal", [True, False])
def test_journal_stream_lines_carry_priority_not_time(qagw, is_journal):
    """stderr being the journal (JOURNAL_STREAM names it): "<6>info  ..." lines, no
    timestamp; a JOURNAL_STREAM inherited but naming another file: the usual lines."""
    gw = qagw(workers=("ml1",), start=False)
    gw.log.touch()
    st = os.stat(gw.log if is_journal else gw.conf)
    start_plain(gw, env=dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"))
    wait_until(lambda: "worker ml1: accepting on" in gw.log_text(), 15, what="accepting")
    line = next(ln for ln in gw.log_text().splitlines() if "worker ml1: accepting on" in ln)
    if is_journal:
        assert line.startswith("<6>info  worker ml1: accepting on"), line
    else:
        assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z info  worker ml1: accepting", line), line


def test_log_file_unwritable_exits_1(qagw, tmp_path):
    gw = qagw(workers=("ml1",), start=False,
              sections={"node": {"log_file": tmp_path / "nosuch-dir" / "qagw.log"}})
    rc = start_plain(gw).wait(40)
    assert rc == 1, (rc, tail(gw.log))
    assert "log_file" in gw.log_text(), tail(gw.log)


# ------------------------------------------------------------------ workers, agents ID


def serving(gw, names):
    def ok():
        ws = gw.admin.workers()
        return all(ws.get(n, {}).get("state") == "serving" for n in names)
    wait_until(ok, 10, what=f"{names} serving")


def test_workers_and_agents_subcommands(qagw, uid):
    token = f"adm-{uid}"
    gw = qagw(workers=("ml1", "ml2"), node="n1", admin_token=token)
    serving(gw, ("ml1", "ml2"))

    p = run("-c", gw.conf, "workers")
    assert p.returncode == 0, (p.returncode, p.stderr)
    lines = p.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "NODE", "STATE", "SESSIONS", "PRIMARIES"], p.stdout
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert set(rows) == {"ml1", "ml2"}, p.stdout
    for w in ("ml1", "ml2"):
        assert rows[w][1] == "n1" and rows[w][2] == "serving", p.stdout

    p = run("-c", gw.conf, "workers", "--json")
    assert p.returncode == 0, p.stderr
    assert sorted(w["name"] for w in json.loads(p.stdout)) == ["ml1", "ml2"], p.stdout

    agent = f"cli-{uid}"
    c = persist(gw, "ml2", agent)
    try:
        wait_until(lambda: (gw.admin.get(f"/api/agents/{agent}")[1] or {}).get("session"), 10,
                   what="the session in the pool")
        p = run("-c", gw.conf, "agents", agent)
        assert p.returncode == 0, (p.returncode, p.stderr)
        kv = {k.strip(): v.strip() for k, v in
              (ln.split(":", 1) for ln in p.stdout.splitlines())}
        assert kv["agent"] == agent, p.stdout
        assert kv["session worker"] == "ml2", p.stdout
        assert kv["session on primary"] in ("yes", "no"), p.stdout
        assert kv["pending"] == "0", p.stdout
        assert kv["primary"] in ("ml1", "ml2"), p.stdout
        assert re.match(r"\d{4}-\d\d-\d\dT", kv["last sync"]), p.stdout
        for k in ("pinned", "push sent", "push acked", "push no_session"):
            assert k in kv, (k, p.stdout)

        p = run("-c", gw.conf, "agents", agent, "--json")
        assert p.returncode == 0, p.stderr
        j = json.loads(p.stdout)
        assert j["agent"] == agent and j["session"]["worker"] == "ml2", j
    finally:
        c.close()

    p = run("-c", gw.conf, "agents", f"never-{uid}")
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "404" in p.stderr and f"never-{uid}" in p.stderr, p.stderr
    assert p.stdout == "", p.stdout

    # a wrong admin token: refused (401), exit 3
    wrong = gw.conf.with_name("wrong-token.conf")
    wrong.write_text(gw.conf.read_text().replace(f"token = {token}", "token = nope"))
    p = run("-c", wrong, "workers")
    assert p.returncode == 3 and "401" in p.stderr, (p.returncode, p.stderr)


def test_subcommands_with_the_admin_port_down(qagw):
    gw = qagw(workers=("ml1",), start=False)  # never started: nothing listens
    assert not port_open(gw.admin_port)
    for args in (("workers",), ("agents", "someone"), ("workers", "--json")):
        p = run("-c", gw.conf, *args)
        assert p.returncode == 4, (args, p.returncode, p.stderr)
        assert "admin port" in p.stderr, p.stderr
        assert p.stdout == "", p.stdout


# ------------------------------------------------------------------ the systemd unit


def unit_directives(text: str) -> dict:
    d = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            d.setdefault(k.strip(), []).append(v.strip())
    return d


def test_unit_file_directives():
    d = unit_directives(unit_text())
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify", one
    assert one["ExecStart"].split()[:3] == ["/usr/local/bin/qagw", "-c", "/etc/qagw/qagw.conf"]
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID", one
    assert one["KillSignal"] == "SIGTERM", one
    assert one["Restart"] == "on-failure", one
    assert "2" in one["RestartPreventExitStatus"].split(), one
    assert int(one["TimeoutStopSec"]) > 10, "TimeoutStopSec must exceed drain_timeout (10 s)"
    assert int(one["LimitNOFILE"]) >= 65536, one
    assert one["User"] not in ("", "root"), one
    for k, v in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")):
        assert one.get(k) == v, (k, one.get(k))
    assert one.get("LogsDirectory") == "qagw", "the log dir must be writable (ProtectSystem)"


def verify(unit: Path) -> subprocess.CompletedProcess:
    # --man=no: the unit's Documentation= names the man page, installed with the binary
    # (make install), not on this test machine
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)


def test_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (package systemd): cannot verify "
                    "conf/qagw.service")
    require_binary(QAGW)
    # verify wants ExecStart's binary to exist: a copy of the unit runs the built one
    text = unit_text().replace("/usr/local/bin/qagw", str(QAGW))
    unit = tmp_path / "qagw.service"
    unit.write_text(text)
    p = verify(unit)
    assert p.returncode == 0 and p.stdout.strip() == "", p.stdout

    # the check can fail: a bad value is reported (verify itself still exits 0 for
    # that, which is why the output must be empty above)
    bad = tmp_path / "qagw-bad.service"
    bad.write_text(text.replace("Type=notify", "Type=notfy"))
    p = verify(bad)
    assert "notfy" in p.stdout, p.stdout


def test_make_install_stages_the_tree_and_keeps_an_existing_config(tmp_path):
    """`make install DESTDIR=...`: programs, man pages, docs, unit and (only when absent)
    the configuration land where docs/service.md says; a second install keeps an edited
    configuration."""
    stage = tmp_path / "stage"
    argv = ["make", "-s", "--no-print-directory", "install", f"DESTDIR={stage}",
            f"BUILD={harness.BUILD}"]
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    usr = stage / "usr" / "local"
    for rel, mode in (("bin/qagw", 0o755), ("bin/qaagent", 0o755),
                      ("share/man/man8/qagw.8", 0o644), ("share/man/man1/qaagent.1", 0o644),
                      ("share/doc/qagw/service.md", 0o644),
                      ("share/doc/qagw/qagw.conf.sample", 0o644)):
        f = usr / rel
        assert f.is_file() and f.stat().st_mode & 0o777 == mode, (rel, oct(f.stat().st_mode))
    assert (stage / "etc/systemd/system/qagw.service").read_text() == unit_text("/usr/local")
    conf = stage / "etc/qagw/qagw.conf"
    assert conf.stat().st_mode & 0o777 == 0o640
    v = subprocess.run([str(usr / "bin/qagw"), "--version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.strip() == f"qagw {VERSION}", v
    conf.write_text(conf.read_text() + "\n; edited by the operator\n")
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "exists: kept" in r.stdout, r.stdout + r.stderr
    assert conf.read_text().endswith("; edited by the operator\n")


def test_make_install_with_prefix_usr_writes_a_unit_for_usr(tmp_path):
    """Issue 19 (4): `make install PREFIX=/usr` installed a unit whose ExecStart and
    Documentation still said /usr/local. The unit is written from conf/qagw.service.in
    with the PREFIX."""
    stage = tmp_path / "stage"
    r = subprocess.run(["make", "-s", "--no-print-directory", "install", f"DESTDIR={stage}",
                        "PREFIX=/usr", f"BUILD={harness.BUILD}"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (stage / "usr/bin/qagw").is_file()
    unit = (stage / "etc/systemd/system/qagw.service").read_text()
    assert "/usr/local" not in unit, [l for l in unit.splitlines() if "/usr/local" in l]
    assert "@PREFIX@" not in unit
    d = unit_directives(unit)
    assert d["ExecStart"][-1].split()[0] == "/usr/bin/qagw", d["ExecStart"]
    assert "file:///usr/share/doc/qagw/service.md" in d["Documentation"][-1], d["Documentation"]
    assert (stage / "usr/share/doc/qagw/service.md").is_file()


def test_agents_subcommand_with_redis_down_says_unknown_session(qagw, private_redis, uid):
    """Issue 19: with Redis down the node cannot tell whether an agent has a live session:
    `qagw agents ID` prints `session: -` (docs/service.md), not `session: none`."""
    gw = qagw(workers=("ml1",), redis=private_redis)
    agent = f"cli-{uid}"
    c = persist(gw, "ml1", agent)
    try:
        wait_until(lambda: (gw.admin.get(f"/api/agents/{agent}")[1] or {}).get("session"), 10,
                   what="the session in the pool")
        private_redis.stop()
        wait_until(lambda: gw.admin.metrics().get("qagw_redis_up") == 0, 10, what="redis down")
        p = run("-c", gw.conf, "agents", agent)
        assert p.returncode == 0, (p.returncode, p.stderr)
        kv = {k.strip(): v.strip() for k, v in
              (ln.split(":", 1) for ln in p.stdout.splitlines())}
        assert kv["source"] == "store" and kv["session"] == "-", p.stdout
    finally:
        c.close()
