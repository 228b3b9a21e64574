"""conf/qagw.conf: `qagw -c FILE --check` validates and exits; an unknown
section or key, or a bad value, is an error naming file, line and key."""

import re
import socket
import subprocess

import pytest

from qagwtest.harness import QAGW, free_port, require_binary


def check(conf):
    require_binary(QAGW)
    p = subprocess.run([str(QAGW), "-c", str(conf), "--check"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def good_lines(store):
    return [
        "; written by tests/e2e/test_config.py",
        "[node]",
        "name = n1",
        "auth = off",
        "[worker ml1]",
        f"listen = 127.0.0.1:{free_port()}",
        "[worker ml2]",
        f"listen = 127.0.0.1:{free_port()}",
        f"advertise = 127.0.0.1:{free_port()}",
        "[store]",
        f"conninfo = {store.conninfo}",
        "[limits]",
        "max_batch = 64",
        "hello_timeout = 5",
    ]


def write(tmp_path, lines):
    conf = tmp_path / "qagw.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def names_file_line_key(out, conf, line, key):
    return (str(conf) in out or conf.name in out) and key in out and \
        re.search(rf"(:{line}\b|line {line}\b)", out) is not None


def test_check_accepts_good_file(tmp_path, store):
    conf = write(tmp_path, good_lines(store))
    rc, out = check(conf)
    assert rc == 0, out


@pytest.mark.parametrize("what,after,line_text,key", [
    ("unknown key", "name = n1", "colour = blue", "colour"),
    ("unknown section", "hello_timeout = 5", "[frobnicator]", "frobnicator"),
    ("bad value", "max_batch = 64", "max_frame = lots", "max_frame"),
    ("bad number in worker", "[worker ml1]", "capacity = -x", "capacity"),
])
def test_check_names_file_line_and_key(tmp_path, store, what, after, line_text, key):
    lines = good_lines(store)
    lines.insert(lines.index(after) + 1, line_text)
    if line_text.startswith("[frob"):
        lines.insert(lines.index(line_text) + 1, "x = 1")
    lineno = lines.index(line_text) + 1
    conf = write(tmp_path, lines)
    rc, out = check(conf)
    assert rc == 2, f"{what}: rc {rc} (2: invalid configuration):\n{out}"
    assert names_file_line_key(out, conf, lineno, key), \
        f"{what}: the error should name {conf}, line {lineno} and '{key}':\n{out}"


def test_check_refuses_auth_off_on_non_loopback(tmp_path, store):
    lines = good_lines(store)
    i = next(k for k, v in enumerate(lines) if v.startswith("listen = 127.0.0.1") )
    lines[i] = f"listen = 0.0.0.0:{free_port()}"
    rc, out = check(write(tmp_path, lines))
    assert rc == 2, f"auth = off with a non-loopback listener: rc {rc} (2 expected):\n{out}"
    assert "auth" in out.lower(), out


# Issue 19 (3): --check opens what the node will open, and names the key that is wrong.

def test_check_refuses_a_certificate_the_start_cannot_load(tmp_path, store):
    lines = good_lines(store)
    lines.insert(lines.index("[worker ml2]"), "tls = on")
    lines += ["[tls]", "cert = relative/does-not-exist.crt", "key = relative/does-not-exist.key"]
    rc, out = check(write(tmp_path, lines))
    assert rc == 2, f"a certificate that does not load: rc {rc} (2 expected):\n{out}"
    assert "[tls]" in out and "cert" in out and "does-not-exist.crt" in out, out


def test_check_refuses_a_log_file_in_a_missing_directory(tmp_path, store):
    lines = good_lines(store)
    lines.insert(lines.index("auth = off") + 1, f"log_file = {tmp_path}/no-such-dir/qagw.log")
    rc, out = check(write(tmp_path, lines))
    assert rc == 2, f"a log_file that cannot be created: rc {rc} (2 expected):\n{out}"
    assert "log_file" in out and "no-such-dir" in out, out
    # positive control: the directory exists
    lines[lines.index(f"log_file = {tmp_path}/no-such-dir/qagw.log")] = \
        f"log_file = {tmp_path}/qagw.log"
    rc, out = check(write(tmp_path, lines))
    assert rc == 0, out
    assert not (tmp_path / "qagw.log").exists(), "--check must not create the log file"


def test_check_refuses_a_store_host_that_does_not_resolve(tmp_path, store):
    lines = good_lines(store)
    i = next(k for k, v in enumerate(lines) if v.startswith("conninfo = "))
    lines[i] = "conninfo = host=qagw-no-such-host.invalid dbname=x user=qagw"
    rc, out = check(write(tmp_path, lines))
    assert rc == 2, f"a store host name that does not resolve: rc {rc} (2 expected):\n{out}"
    assert "conninfo" in out and "qagw-no-such-host.invalid" in out, out
    lines[i] = f"conninfo = host=localhost port={store.server.port} dbname=x user=qagw"
    rc, out = check(write(tmp_path, lines))
    assert rc == 0 and "is a name" not in out, out  # loopback's own name: no DNS
    name = socket.gethostname()  # a name that resolves here (/etc/hosts): warned about
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        return
    lines[i] = f"conninfo = host={name} port={store.server.port} dbname=x user=qagw"
    rc, out = check(write(tmp_path, lines))
    assert rc == 0, out
    assert f"{name} is a name" in out, out


def test_check_refuses_redis_and_sentinel_hosts_that_do_not_resolve(tmp_path, store):
    """Issue 18: --check resolves [redis] host, or each of [redis] sentinels, as it does
    the store's hosts (hiredis resolves a name with a blocking call at every connect)."""
    lines = good_lines(store) + ["[redis]", "host = qagw-no-such-redis.invalid"]
    rc, out = check(write(tmp_path, lines))
    assert rc == 2, f"a redis host that does not resolve: rc {rc} (2 expected):\n{out}"
    assert '[redis] key "host"' in out and "qagw-no-such-redis.invalid" in out, out
    lines[-1] = "sentinels = 127.0.0.1:26379,qagw-no-such-sentinel.invalid:26379"
    rc, out = check(write(tmp_path, lines))
    assert rc == 2, f"a sentinel that does not resolve: rc {rc} (2 expected):\n{out}"
    assert '[redis] key "sentinels"' in out and "qagw-no-such-sentinel.invalid" in out, out
    lines[-1] = "sentinels = 127.0.0.1:26379,localhost:26380,[::1]:26381"
    rc, out = check(write(tmp_path, lines))
    assert rc == 0 and "is a name" not in out, out
    lines[-1] = "sentinels = 127.0.0.1:26379,h:"
    rc, out = check(write(tmp_path, lines))
    assert rc == 2 and '[redis] key "sentinels"' in out and "HOST:PORT" in out, out
