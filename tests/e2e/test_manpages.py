"""The man pages (docs/qagw.8, docs/qaagent.1; issue 9): they render without a warning,
qagw(8) documents every key of conf/qagw.conf, qaagent(1) every option and command that
`qaagent` prints in its usage, and the committed pages are what scripts/mkman.py builds
from their sources (a stale committed page fails).

No PostgreSQL or Redis needed. `man` missing: the rendering tests are skipped, saying so.
The checks are plain functions of a text or a path, so each can be tried on a broken copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from qagwtest import harness

REPO = harness.REPO
DOCS = REPO / "docs"
CONF = REPO / "conf" / "qagw.conf"
MKMAN = REPO / "scripts" / "mkman.py"
PAGES = ["qagw.8", "qaagent.1"]

needs_man = pytest.mark.skipif(shutil.which("man") is None,
                               reason="`man` (man-db) is not installed: the man pages' "
                                      "rendering is not checked (apt-get install man-db groff-base)")


# ---- helpers (each check is a function of its input, so it can be fed a broken copy) ----

def render(page: Path) -> tuple[int, str, str]:
    """`man --warnings -l PAGE` at 80 columns, plain text: (rc, stdout, stderr)."""
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat")
    env.pop("MAN_KEEP_FORMATTING", None)
    env.setdefault("LANG", "C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True,
                       text=True, env=env, timeout=60)
    return r.returncode, plain(r.stdout), r.stderr


def plain(text: str) -> str:
    """Overstrikes removed, typographic hyphens and minus signs as ASCII '-'."""
    text = re.sub(r".\x08", "", text)
    for ch in "\u2010\u2011\u2012\u2013\u2212":
        text = text.replace(ch, "-")
    return text


def conf_keys(conf: Path) -> list[tuple[str, str]]:
    """Every (section, key) of an INI file; the [worker NAME] sections as one."""
    keys, section = [], None
    for raw in conf.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        m = re.fullmatch(r"\[\s*(.+?)\s*\]", line)
        if m:
            section = "worker NAME" if m.group(1).split()[0] == "worker" else m.group(1)
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)\s*=", line)
        assert m and section, f"{conf}: cannot read line: {raw!r}"
        if (section, m.group(1)) not in keys:
            keys.append((section, m.group(1)))
    return keys


def config_blocks(rendered: str) -> dict[str, str]:
    """The rendered CONFIGURATION section split by its [section] subheadings."""
    m = re.search(r"^CONFIGURATION\n(.*?)(?=^\S)", rendered, re.S | re.M)
    assert m, "no CONFIGURATION section in the rendered page"
    blocks, name = {}, None
    for line in m.group(1).splitlines():
        h = re.fullmatch(r" {1,4}\[(.+)\]\s*", line)  # .SS headings are indented 3
        if h:
            name = h.group(1)
            blocks[name] = ""
        elif name is not None:
            blocks[name] += line + "\n"
    return blocks


def missing_conf_keys(rendered: str, keys: list[tuple[str, str]]) -> list[str]:
    """`[section] key` pairs that have no entry (a line `key = ...`) under their heading."""
    blocks = config_blocks(rendered)
    missing = []
    for section, key in keys:
        block = blocks.get(section, "")
        if not re.search(rf"^\s+{re.escape(key)} =", block, re.M):
            missing.append(f"[{section}] {key}")
    return missing


def usage_words(usage: str) -> list[str]:
    """The options (-x, --wait), commands (first word of each line under "commands:")
    and stream schemes (tcpip(...)) of qaagent's usage text."""
    words = []
    for w in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", usage):
        words.append(w)
    in_commands = False
    for line in usage.splitlines():
        if line.strip() == "commands:":
            in_commands = True
        elif in_commands and line.startswith(" "):
            words.append(line.split()[0])
        else:
            in_commands = False
    words += [s + "(" for s in re.findall(r"\b([a-z]+)\(", usage)]
    return list(dict.fromkeys(words))


def missing_words(rendered: str, words: list[str]) -> list[str]:
    out = []
    for w in words:
        if not re.search(r"(?<![\w-])" + re.escape(w) + (r"(?![\w-])" if w[-1] != "(" else ""),
                         rendered):
            out.append(w)
    return out


def mkman(src: Path, conf: Path, version: Path, script: Path = MKMAN) -> str:
    r = subprocess.run([sys.executable, str(script), str(src), str(conf), str(version)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"mkman.py {src} failed: {r.stderr}"
    return r.stdout


def qaagent_usage() -> str:
    exe = harness.BUILD / "qaagent"
    if not exe.exists():
        pytest.fail(f"{exe} is not built (make BUILD={harness.BUILD.name} all)")
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, f"qaagent without arguments: exit {r.returncode}, want 2"
    assert "usage:" in r.stderr, f"qaagent printed no usage on stderr: {r.stderr!r}"
    return r.stderr


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=60)


# ---- tests ----

@needs_man
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page):
    rc, out, err = render(DOCS / page)
    assert rc == 0, f"man -l docs/{page}: exit {rc}\n{err}"
    assert err == "", f"man --warnings -l docs/{page} wrote to stderr:\n{err}"
    assert "NAME" in out and "SYNOPSIS" in out, out[:500]
    assert "@VERSION@" not in out and "@CONFIG_KEYS@" not in out


@needs_man
def test_qagw_page_has_every_configuration_key():
    keys = conf_keys(CONF)
    assert len(keys) > 20, keys  # the parser read the sample
    _, out, _ = render(DOCS / "qagw.8")
    missing = missing_conf_keys(out, keys)
    assert not missing, (f"keys of conf/qagw.conf missing from docs/qagw.8 (run make, "
                         f"commit docs/qagw.8): {missing}")


@needs_man
def test_qaagent_page_has_every_option_and_command_of_the_usage():
    words = usage_words(qaagent_usage())
    for w in ("-id", "-x", "-token-file", "--wait", "send", "run", "tcpip("):
        assert w in words, (w, words)  # the usage parser works
    _, out, _ = render(DOCS / "qaagent.1")
    missing = missing_words(out, words)
    assert not missing, f"in qaagent's usage but not in docs/qaagent.1: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_built_page_is_current(page):
    """docs/PAGE is what scripts/mkman.py makes of docs/PAGE.in and conf/qagw.conf now."""
    want = mkman(DOCS / f"{page}.in", CONF, REPO / "VERSION")
    have = (DOCS / page).read_text(encoding="utf-8")
    assert have == want, f"docs/{page} is stale: run make (it rebuilds it) and commit it"


@pytest.mark.parametrize("page", PAGES)
def test_committed_page_is_current(page):
    """In the last commit, docs/PAGE is what mkman.py makes of that commit's sources: a
    change to the .in, conf/qagw.conf, VERSION or mkman.py committed without the rebuilt
    page fails (independent of uncommitted edits in the working tree)."""
    if shutil.which("git") is None or git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: only the working tree's page is checked")
    paths = [f"docs/{page}", f"docs/{page}.in", "conf/qagw.conf", "VERSION",
             "scripts/mkman.py"]
    with tempfile.TemporaryDirectory(prefix="qagw-man-") as tmp:
        files = {}
        for p in paths:
            r = git("show", f"HEAD:{p}")
            if r.returncode != 0:
                pytest.skip(f"{p} is not committed yet")
            files[p] = Path(tmp) / p.replace("/", "_")
            files[p].write_bytes(r.stdout)
        want = mkman(files[f"docs/{page}.in"], files["conf/qagw.conf"], files["VERSION"],
                     files["scripts/mkman.py"])
        have = files[f"docs/{page}"].read_text(encoding="utf-8")
    assert have == want, (f"the committed docs/{page} is stale: run make and commit "
                          f"docs/{page}")
