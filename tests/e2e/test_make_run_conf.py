"""Issue 19: `make run PG_PORT=... REDIS_PORT=...` on a machine where 5432 or 6379 is
taken. The configuration make run writes (scripts/conf-overlay.py over conf/qagw.conf,
conf/dev.conf and run/ports.conf) names those ports, and qagw --check accepts it."""

import subprocess
import sys

from qagwtest.harness import QAGW, REPO, require_binary

PYTHON_BIN = sys.executable


def test_run_configuration_takes_the_ports(tmp_path):
    require_binary(QAGW)
    ports = tmp_path / "ports.conf"
    ports.write_text("[store]\nconninfo = host=127.0.0.1 port=15432 dbname=qagw user=qagw\n"
                     "[redis]\nport = 16379\n")
    out = subprocess.run([PYTHON_BIN, str(REPO / "scripts" / "conf-overlay.py"),
                          str(REPO / "conf" / "qagw.conf"), str(REPO / "conf" / "dev.conf"),
                          str(ports)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    conf = tmp_path / "qagw.conf"
    conf.write_text(text)
    lines = [l.split(";")[0].strip() for l in text.splitlines()]
    assert "conninfo = host=127.0.0.1 port=15432 dbname=qagw user=qagw" in lines, text
    assert "port = 16379" in lines and "port = 6379" not in lines, text
    assert "auth = off" in lines  # conf/dev.conf still applies
    p = subprocess.run([str(QAGW), "-c", str(conf), "--check"], cwd=REPO, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
