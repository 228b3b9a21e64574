"""Issue 16, item 6, the gateway's side: a configuration that would hand agents' tokens or
the pool's routing to whoever watches the network.

- `[node] auth = token` on a worker that listens off loopback with `tls = off` is refused
  (exit 2, naming the worker section and `allow_plaintext_tokens`) unless
  `[node] allow_plaintext_tokens = on`; `tls = on` is fine.
- `[redis] host` off loopback with an empty password, and `[store] conninfo` reaching a
  host off loopback with neither a password (nor passfile) nor sslmode=require/verify-*,
  are warned about: by `--check` and in the log at start.

Network traffic stays on loopback: `--check` never connects (checked with strace when it
is installed), and the one start-up test runs qagw in a network namespace of its own with
no usable interface, where a connect to 10.255.255.1 fails at once without a packet.
"""

import os
import shutil
import subprocess
import time

import pytest

from qagwtest.harness import QAGW, free_port, require_binary

OFF_LOOPBACK = "10.255.255.1"  # never reached: --check does not connect
WARNING = "qagw: warning: "    # how --check prints one (the test's paths may say "warning")


def conf_text(listen="127.0.0.1", node=(), worker=(), conninfo=None, redis=(), tls=()):
    conninfo = conninfo or "host=127.0.0.1 port=5432 dbname=qagw user=qagw"
    return "\n".join(
        ["; written by tests/e2e/test_hostile_config.py", "[node]", "name = n1", *node,
         "[worker ml1]", f"listen = {listen}:{free_port()}", *worker,
         "[worker ml2]", f"listen = 127.0.0.1:{free_port()}",
         "[store]", f"conninfo = {conninfo}",
         "[redis]", *redis, *(["[tls]", *tls] if tls else []), ""])


def check(tmp_path, text, argv_prefix=()):
    require_binary(QAGW)
    conf = tmp_path / "qagw.conf"
    conf.write_text(text)
    env = dict(os.environ)
    if argv_prefix:  # under ptrace (strace) LeakSanitizer cannot run: make test-asan
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    t0 = time.monotonic()
    p = subprocess.run([*argv_prefix, str(QAGW), "-c", str(conf), "--check"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=30, env=env)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


# ------------------------------------------------------------------ tokens in clear


@pytest.mark.parametrize("listen", ["0.0.0.0", OFF_LOOPBACK, "[::]"])
def test_token_on_a_cleartext_listener_off_loopback_is_refused(tmp_path, listen):
    rc, out, _ = check(tmp_path, conf_text(listen=listen))
    assert rc == 2, f"auth = token, tls = off on {listen}: rc {rc} (2: invalid configuration):\n{out}"
    assert "[worker ml1]" in out and "allow_plaintext_tokens" in out and "tls" in out, out
    assert "ml2" not in out, out  # the loopback worker is not the one named


def test_allow_plaintext_tokens_accepts_it(tmp_path):
    rc, out, _ = check(tmp_path, conf_text(listen="0.0.0.0", node=["allow_plaintext_tokens = on"]))
    assert rc == 0, out
    assert "configuration ok" in out, out


def test_tls_on_accepts_it(tmp_path, dev_certs):
    # --check loads the certificate and key (issue 19): real ones
    rc, out, _ = check(tmp_path, conf_text(listen="0.0.0.0", worker=["tls = on"],
                                           tls=[f"cert = {dev_certs / 'server.crt'}",
                                                f"key = {dev_certs / 'server.key'}"]))
    assert rc == 0, out


def test_loopback_cleartext_and_auth_off_unchanged(tmp_path):
    rc, out, _ = check(tmp_path, conf_text(listen="127.0.0.1"))
    assert rc == 0, out
    assert WARNING not in out, out  # the defaults are all on loopback
    # auth = off keeps its own rule (loopback only), which names "auth"
    rc, out, _ = check(tmp_path, conf_text(listen="0.0.0.0", node=["auth = off",
                                                                    "allow_plaintext_tokens = on"]))
    assert rc == 2 and '"auth"' in out, out


# ------------------------------------------------------------------ store and Redis off loopback


def test_check_warns_about_redis_and_store_off_loopback(tmp_path):
    rc, out, took = check(tmp_path, conf_text(
        conninfo=f"host={OFF_LOOPBACK} port=5432 dbname=qagw user=qagw",
        redis=[f"host = {OFF_LOOPBACK}"]))
    assert rc == 0, out  # warnings, not errors
    assert took < 5, f"--check took {took:.1f}s: did it try to connect?"
    lines = [x for x in out.splitlines() if x.startswith(WARNING)]
    assert any("[redis]" in x and OFF_LOOPBACK in x and "password" in x for x in lines), out
    assert any("[store]" in x and "conninfo" in x and OFF_LOOPBACK in x and "password" in x
               and "sslmode" in x and "unless a password file provides one" in x
               for x in lines), out


@pytest.mark.parametrize("conninfo", [
    f"host={OFF_LOOPBACK} dbname=qagw user=qagw sslmode=verify-full",
    f"host={OFF_LOOPBACK} dbname=qagw user=qagw sslmode=require",
    f"host={OFF_LOOPBACK} dbname=qagw user=qagw password=secret",
    f"host={OFF_LOOPBACK} dbname=qagw user=qagw passfile=/etc/qagw/pgpass",
    f"postgresql://qagw:secret@{OFF_LOOPBACK}/qagw",
    "host=/var/run/postgresql dbname=qagw",
    "host=localhost,::1,127.0.0.2 dbname=qagw",
    "host=db.example.com hostaddr=127.0.0.1 dbname=qagw",
])
def test_no_store_warning_when_protected_or_local(tmp_path, conninfo):
    rc, out, _ = check(tmp_path, conf_text(conninfo=conninfo,
                                           redis=[f"host = {OFF_LOOPBACK}", "password = s3cret"]))
    assert rc == 0, out
    assert WARNING not in out, f"{conninfo}:\n{out}"


@pytest.mark.parametrize("conninfo", [
    f"postgresql://qagw@{OFF_LOOPBACK}/qagw?sslmode=prefer",
    f"host=127.0.0.1,{OFF_LOOPBACK} dbname=qagw",  # the second host of a multi-host list
    # (a host name that does not resolve is refused by --check: test_config.py)
])
def test_store_warning_forms(tmp_path, conninfo):
    rc, out, _ = check(tmp_path, conf_text(conninfo=conninfo))
    assert rc == 0, out
    assert f"{WARNING}" in out and "[store]" in out, f"{conninfo}:\n{out}"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_check_does_not_connect(tmp_path):
    trace = tmp_path / "connect.trace"
    rc, out, _ = check(tmp_path, conf_text(
        conninfo=f"host={OFF_LOOPBACK} dbname=qagw", redis=[f"host = {OFF_LOOPBACK}"]),
        argv_prefix=("strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace)))
    assert rc == 0, out
    calls = [x for x in trace.read_text().splitlines() if "connect(" in x]
    assert not [x for x in calls if "AF_INET" in x], "\n".join(calls)


def test_start_logs_the_warnings(tmp_path):
    """At start the same warnings go to the log, before the store is reached. qagw runs in
    a network namespace of its own (lo down, no route): its connect to 10.255.255.1 fails
    at once, nothing leaves it. Stopped as soon as the warnings are seen."""
    require_binary(QAGW)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace")
    conf = tmp_path / "qagw.conf"
    conf.write_text(conf_text(conninfo=f"host={OFF_LOOPBACK} dbname=qagw connect_timeout=2",
                              redis=[f"host = {OFF_LOOPBACK}"]))
    log = tmp_path / "qagw.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(["unshare", "-n", str(QAGW), "-c", str(conf)],
                             stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = log.read_text()
            if "[redis]" in text and "[store]" in text:
                break
            if p.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
    text = log.read_text()
    warn = [x for x in text.splitlines() if "WARN" in x.upper()]
    assert any("[redis]" in x and OFF_LOOPBACK in x for x in warn), text
    assert any("[store]" in x and OFF_LOOPBACK in x for x in warn), text
