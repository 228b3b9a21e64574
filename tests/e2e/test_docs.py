"""Issue 19: the docs cannot drift from the code. Every fenced block of README.md and
docs/*.md preceded by the line `<!-- runnable -->` is run here, against a gateway of this
test (workers ml1, ml2, ml3, its admin port, auth off), in a temp directory:

- a block of `$ COMMAND` lines (a console transcript): each command is run; when the
  transcript shows `HTTP/1.1 CODE` right after it (curl -i), the same code must come back;
- any other block: each line (comments after `#` dropped) is a command, which must exit 0.

The addresses and paths of the docs are mapped to the test's: ports 2439/2440/2441 to the
workers', 8439 to the admin port, `/tmp/` to the temp directory, `build/` to the build
being tested, `/etc/qagw/qagw.conf` to the gateway's configuration. A `\\` at the end of a
line continues the command."""

import re
import subprocess
from pathlib import Path

import pytest

from qagwtest import harness
from qagwtest.harness import REPO

MARK = "<!-- runnable -->"
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))


def runnable_blocks():
    """(file, line number, lines) of every block after MARK."""
    out = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != MARK:
                continue
            assert i + 1 < len(lines) and lines[i + 1].startswith("```"), \
                f"{path}:{i + 1}: {MARK} must be followed by a fenced block"
            body = []
            for j in range(i + 2, len(lines)):
                if lines[j].startswith("```"):
                    break
                body.append(lines[j])
            out.append((path.relative_to(REPO), i + 3, body))
    return out


def commands(body):
    """(command, expected HTTP code or None) of a block."""
    console = any(line.startswith("$ ") for line in body)
    cmds, cur, i = [], None, 0
    while i < len(body):
        line = body[i]
        if console and not line.startswith("$ "):
            i += 1
            continue
        text = line[2:] if console else re.sub(r"\s+#.*$", "", line).strip()
        while text.endswith("\\") and i + 1 < len(body):
            i += 1
            text = text[:-1] + " " + body[i].strip()
        i += 1
        if not text or text.startswith("#"):
            continue
        code = None
        if console and i < len(body):
            m = re.match(r"HTTP/1\.1 (\d{3}) ", body[i])
            code = int(m.group(1)) if m else None
        cmds.append((text, code))
    return cmds


def test_the_docs_mark_runnable_blocks():
    # the check must check something: README's first sync and the admin examples
    files = {str(f) for f, _, _ in runnable_blocks()}
    assert "README.md" in files and "docs/admin.md" in files, files


@pytest.mark.parametrize("where,body", [(f"{f}:{n}", b) for f, n, b in runnable_blocks()],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_runnable_block(qagw, tmp_path, where, body):
    g = qagw(workers=("ml1", "ml2", "ml3"))
    subst = [
        (r"port=2439\b", f"port={g.port('ml1')}"), (r"port=2440\b", f"port={g.port('ml2')}"),
        (r"port=2441\b", f"port={g.port('ml3')}"), (r":8439\b", f":{g.admin_port}"),
        (r"(?<![\w./])/tmp/", f"{tmp_path}/"), (r"(?<![\w./])build/", f"{harness.BUILD}/"),
        (r"/etc/qagw/qagw\.conf", str(g.conf)),
    ]
    for cmd, code in commands(body):
        run = cmd
        for pat, rep in subst:
            run = re.sub(pat, rep, run)
        p = subprocess.run(["bash", "-c", run], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, f"{where}: `{cmd}` exited {p.returncode}:\n{p.stdout}{p.stderr}"
        if code is not None:
            got = re.match(r"HTTP/1\.1 (\d{3}) ", p.stdout)
            assert got and int(got.group(1)) == code, \
                f"{where}: `{cmd}`: the docs show {code}, got:\n{p.stdout[:400]}"
