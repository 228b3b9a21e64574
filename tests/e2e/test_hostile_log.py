"""Issue 16, item 8: a string a peer sends is logged on one line, control characters
written as \\xNN, so it can neither forge a log line nor reach a terminal as an escape."""

from qagwtest import qasync as q
from qagwtest.harness import wait_until

FORGED = "2026-01-01T00:00:00.000Z error FORGED by the peer"


def test_hello_primary_cannot_forge_a_log_line(qagw, uid):
    g = qagw(workers=("ml1",))
    primary = f"ml1\n{FORGED}\x1b[2J\r"
    with q.Client("127.0.0.1", g.ports["ml1"]) as c:
        c.hello(f"inj-{uid}", primary=primary)
        c.ping()
    wait_until(lambda: f"inj-{uid}" in g.log.read_text(errors="replace"), 5,
               what="the HELLO logged")
    text = g.log.read_text(errors="replace")
    lines = text.splitlines()
    assert not any(line.startswith("2026-01-01T00:00:00.000Z") for line in lines), text[-2000:]
    hello = [line for line in lines if f"inj-{uid}" in line and "HELLO: primary" in line]
    assert hello, text[-2000:]
    assert "ml1\\x0a" + FORGED + "\\x1b[2J\\x0d" in hello[0]
    assert "\x1b" not in text and "\r" not in text
