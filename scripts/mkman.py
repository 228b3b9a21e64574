#!/usr/bin/env python3
"""Build a man page from its hand-written source.

    mkman.py docs/NAME.in conf/qagw.conf VERSION > docs/NAME

In the source, @VERSION@ becomes the contents of VERSION and @CONFIG_KEYS@ (alone on a
line) becomes one man(7) entry per key of the sample configuration, grouped by section,
with the value the sample gives it and its comment (continuation lines included).

How the sample configuration is read (conf/qagw.conf, INI as gateway/config.c reads it):
- `[NAME]` opens a section; every `[worker NAME]` section is one section, `[worker NAME]`,
  whose keys are listed once (the first section that has a key gives its value and
  comment).
- `key = value ; comment`: an inline comment needs whitespace before the ';'.
- An indented comment line right after a key line continues that key's comment.
- Comment lines at the start of a line form a block: before a section header it describes
  the section; before a key line it is that key's comment (put before its inline comment).
  The block at the top of the file, before the first section, is not used.

The output is deterministic (no dates), so the built page can be committed and checked.
"""
import re
import sys

SECTION_RE = re.compile(r"^\[\s*([^\]]+?)\s*\]\s*$")
KEY_RE = re.compile(r"^([A-Za-z0-9_.-]+)\s*=(.*)$")


class Section:
    def __init__(self, title):
        self.title = title  # "node", "worker NAME", ...
        self.comment = []  # lines describing the section
        self.keys = []  # [Key]


class Key:
    def __init__(self, name, value, comment):
        self.name = name
        self.value = value
        self.comment = comment  # lines


def split_value(rest):
    """'  n1   ; a comment' -> ('n1', 'a comment' or None)."""
    m = re.search(r"\s;", rest)
    if m is None:
        return rest.strip(), None
    return rest[: m.start()].strip(), rest[m.end():].strip()


def parse_conf(path):
    """Returns the sections in file order, worker sections merged into one."""
    sections = []
    by_title = {}
    current = None
    last_key = None  # the key an indented comment line would continue
    pending = []  # a block of column-0 comment lines
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\n").rstrip()
            stripped = line.strip()
            if not stripped:
                last_key = None
                pending_break = bool(pending)
                if pending_break and current is None:
                    pending = []  # the file's opening comment
                continue
            if stripped.startswith(";") or stripped.startswith("#"):
                text = stripped[1:].strip()
                if line[0].isspace() and last_key is not None:
                    last_key.comment.append(text)
                else:
                    last_key = None
                    pending.append(text)
                continue
            m = SECTION_RE.match(stripped)
            if m:
                title = " ".join(m.group(1).split())
                if title.startswith("worker "):
                    title = "worker NAME"
                last_key = None
                if title in by_title:
                    current = by_title[title]
                    if title == "worker NAME":
                        pending = []  # the worker sections' comment is given once
                else:
                    current = Section(title)
                    by_title[title] = current
                    sections.append(current)
                if current is not None and pending:
                    current.comment.extend(pending)
                pending = []
                continue
            m = KEY_RE.match(stripped)
            if m is None or current is None:
                sys.exit(f"mkman.py: {path}:{lineno}: not a section, key or comment: {line}")
            name = m.group(1)
            value, comment = split_value(m.group(2))
            lines = pending + ([comment] if comment else [])
            pending = []
            existing = next((k for k in current.keys if k.name == name), None)
            if existing is None:
                last_key = Key(name, value, lines)
                current.keys.append(last_key)
            else:
                # a later [worker NAME] section: the first one's value and comment count;
                # a comment only this one has is kept
                if not existing.comment and lines:
                    existing.comment = lines
                    last_key = existing
                else:
                    last_key = Key(name, value, [])  # continuation lines dropped
    return sections


def roff_text(text):
    """Plain text to a roff text line: escapes, `code` in bold."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"`([^`]+)`", lambda m: "\\fB" + m.group(1) + "\\fR", text)
    if text.startswith(".") or text.startswith("'"):
        text = "\\&" + text
    return text


def roff_word(text):
    """A value or key inside a macro argument line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return text


def config_entries(sections):
    out = []
    for s in sections:
        out.append(f".SS [{s.title}]")
        if s.comment:
            out.append(roff_text(" ".join(s.comment)))
        for k in s.keys:
            out.append(".TP")
            if k.value:
                out.append(f"\\fB{roff_word(k.name)}\\fR = \\fI{roff_word(k.value)}\\fR")
            else:
                out.append(f"\\fB{roff_word(k.name)}\\fR = (empty)")
            if k.comment:
                out.append(roff_text(" ".join(k.comment)))
    return "\n".join(out)


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: mkman.py PAGE.in CONF VERSION")
    src, conf, version_file = argv[1:4]
    with open(version_file, encoding="utf-8") as f:
        version = f.read().strip()
    with open(src, encoding="utf-8") as f:
        text = f.read()
    text = text.replace("@VERSION@", version)
    if "@CONFIG_KEYS@" in text:
        text = text.replace("@CONFIG_KEYS@", config_entries(parse_conf(conf)))
    sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
