"""Issue 3, must-show 7: 1,000 agents with PERSIST sessions on their primaries across both
nodes (ml1, ml2 on n1; ml3 on n2), each sent one message by one sender in batches: every
push arrives and is acknowledged, every message is delivered, and the admin figures add up
(routed = sent = acked = 1000; nothing coalesced, suppressed, without session or failed).

The 1,000 agents are non-blocking sockets on one selector in this one process; their
source addresses are spread over 127.0.0.2.. so that no per-address limit gets in the way.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time

from qagwtest import qasync as q
from qagwtest.harness import msg
from qagwtest.pool import HOST, PUSH_FIELDS, poll, push_json, sum_metric, two_nodes

N_AGENTS = 1000
WAVE = 100          # connections opened before waiting for their WELCOMEs
BATCH = 250         # messages per UPLOAD (max_batch is 256)
WORKERS = ("ml1", "ml2", "ml3")


class MiniAgent:
    """One agent's PERSIST session as a small state machine on a non-blocking socket:
    HELLO -> WELCOME; PUSH -> PUSH_ACK + FETCH; DELIVER -> DELIVER_ACK + PING; PONG -> done."""

    def __init__(self, agent_id: str, worker: str, port: int, primary: str, src: str):
        self.id, self.worker, self.primary = agent_id, worker, primary
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((src, 0))
        self.sock.connect((HOST, port))  # loopback: completes at once (kernel backlog)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.welcome = None
        self.pushes = []
        self.delivered = []
        self.done = False
        self.problems = []
        self.closed = False
        self.queue(q.Hello(agent_id=agent_id, primary=primary, flags=q.FLAG_PERSIST,
                           now_ms=q.now_ms()))

    def queue(self, obj) -> None:
        self.outbuf += q.encode(obj)

    def flush(self) -> None:
        while self.outbuf:
            try:
                n = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            except OSError as e:
                self.fail(f"send: {e}")
                return
            del self.outbuf[:n]

    def fail(self, why: str) -> None:
        self.problems.append(why)
        self.closed = True

    def on_readable(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail(f"recv: {e}")
            return
        if not chunk:
            self.fail("closed by the server")
            return
        self.inbuf += chunk
        while len(self.inbuf) >= 4:
            (length,) = struct.unpack(">I", self.inbuf[:4])
            if len(self.inbuf) < 4 + length:
                break
            ftype, payload = self.inbuf[4], bytes(self.inbuf[5:4 + length])
            del self.inbuf[:4 + length]
            try:
                self.on_frame(q.decode(ftype, payload))
            except q.DecodeError as e:
                self.fail(f"undecodable frame 0x{ftype:02x}: {e}")
                return

    def on_frame(self, f) -> None:
        if isinstance(f, q.Ping):
            self.queue(q.Pong(f.nonce))
        elif isinstance(f, q.Welcome) and self.welcome is None:
            self.welcome = f
            if (f.server, f.primary, f.on_primary) != (self.worker, self.worker, 1):
                self.problems.append(f"WELCOME {f.server}/{f.primary}/{f.on_primary}")
        elif isinstance(f, q.Push):
            self.pushes.append(f)
            if len(self.pushes) > 1:
                self.problems.append(f"PUSH #{len(self.pushes)}")
            if f.pending < 1:
                self.problems.append(f"PUSH pending {f.pending}")
            self.queue(q.PushAck(f.push_id))
            self.queue(q.Fetch(max_count=16, max_bytes=1 << 20))
        elif isinstance(f, q.Deliver):
            self.delivered += f.msgs
            if not f.msgs:
                self.problems.append("empty DELIVER after PUSH")
            self.queue(q.DeliverAck([m.seq for m in f.msgs]))
            self.queue(q.Ping(1))
        elif isinstance(f, q.Pong):
            self.done = True
        elif isinstance(f, q.Error):
            self.fail(f"ERROR {f.code} {f.name}: {f.text}")
        else:
            self.problems.append(f"unexpected {f!r}")


def step(sel: selectors.BaseSelector, agents, wait: float) -> None:
    """One round of the event loop: read what arrived, write what is queued."""
    for key, ev in sel.select(timeout=wait):
        a = key.data
        if ev & selectors.EVENT_READ:
            a.on_readable()
        if ev & selectors.EVENT_WRITE:
            a.flush()
    for a in agents:
        if a.closed:
            continue
        a.flush()
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if a.outbuf else 0)
        if sel.get_key(a.sock).events != want:
            sel.modify(a.sock, want, a)
    broken = [a for a in agents if a.closed]
    if broken:
        raise AssertionError(f"{len(broken)} sessions ended: "
                             f"{[(a.id, a.worker, a.problems) for a in broken[:10]]}")


def run_until(sel: selectors.BaseSelector, agents, pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        left = deadline - time.monotonic()
        if left <= 0:
            bad = [a for a in agents if a.problems or not a.done]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"{len(bad)} agents not there, e.g. "
                                 f"{[(a.id, a.worker, bool(a.welcome), len(a.pushes), len(a.delivered), a.problems) for a in bad[:10]]}")
        step(sel, agents, min(left, 0.2))


def pump(sel: selectors.BaseSelector, agents, seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        step(sel, agents, max(0.0, min(0.05, end - time.monotonic())))
        if time.monotonic() >= end:
            return


def test_thousand_persist_agents_every_push_acked_and_figures_add_up(qagw, uid):
    n1, n2 = two_nodes(qagw)
    gw_of = {"ml1": n1, "ml2": n1, "ml3": n2}
    sel = selectors.DefaultSelector()
    agents = []
    t0 = time.monotonic()
    try:
        for start in range(0, N_AGENTS, WAVE):
            wave = []
            for i in range(start, min(start + WAVE, N_AGENTS)):
                w = WORKERS[i % 3]
                a = MiniAgent(f"P{i:04d}-{uid}", w, gw_of[w].port(w), gw_of[w].address(w),
                              f"127.0.0.{2 + i % 64}")
                sel.register(a.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, a)
                wave.append(a)
            agents += wave
            run_until(sel, agents, lambda: all(a.welcome for a in wave), 30,
                      f"WELCOME for agents {start}..{start + len(wave) - 1}")
        t_conn = time.monotonic() - t0
        bad = [(a.id, a.problems) for a in agents if a.problems]
        assert not bad, bad[:10]
        per_worker = {w: sum(1 for a in agents if a.worker == w) for w in WORKERS}

        # the pool sees every session, on its primary
        poll(lambda: n1.admin.workers(),
             lambda ws: {w: ws[w]["sessions"] for w in WORKERS} == per_worker ==
             {w: ws[w]["primaries"] for w in WORKERS}, 3,
             f"/api/workers sessions == primaries == {per_worker}")
        poll(lambda: sum_metric([n1, n2], "qagw_sessions_on_primary"), lambda v: v == N_AGENTS, 2,
             "qagw_sessions_on_primary summed over both nodes == 1000")

        # one sender, batches of BATCH, through ml1
        want = {}
        with q.Client(HOST, n1.port("ml1"), timeout=30) as sender:
            sender.hello(f"S-{uid}")
            for start in range(0, N_AGENTS, BATCH):
                batch = [msg(f"{a.id}\\q", body=f"to {a.id}".encode())
                         for a in agents[start:start + BATCH]]
                ack = sender.upload(batch)
                assert [r for _, r in ack.results] == [q.R_STORED] * len(batch), ack
                for a, m in zip(agents[start:start + BATCH], batch):
                    want[a.id] = m.id
                pump(sel, agents, 0.05)  # keep the agents' sockets drained meanwhile
        t_up = time.monotonic() - t0

        run_until(sel, agents, lambda: all(a.done for a in agents), 60,
                  "every PUSH acked and every message fetched and acknowledged")
        t_done = time.monotonic() - t0
        problems = [(a.id, a.problems) for a in agents if a.problems]
        assert not problems, problems[:10]
        assert all(len(a.pushes) == 1 for a in agents)
        wrong = [(a.id, [m.id for m in a.delivered]) for a in agents
                 if [m.id for m in a.delivered] != [want[a.id]]]
        assert not wrong, wrong[:10]

        # the figures add up, pool-wide (snapshots every 1 s)
        def added_up(j):
            t = j["totals"]
            return t.get("routed") == t.get("sent") == t.get("acked") == N_AGENTS
        pj = poll(lambda: push_json(n2), added_up, 3, "routed == sent == acked == 1000 on /api/push")
        t = pj["totals"]
        for k in ("coalesced", "suppressed_off_primary", "no_session", "failed"):
            assert t[k] == 0, (k, t)
        for k in PUSH_FIELDS:
            assert sum(pj["workers"].get(w, {}).get(k, 0) for w in pj["workers"]) == t[k], (k, pj["workers"])
        for w in WORKERS:
            ww = pj["workers"][w]
            assert ww["sent"] == ww["acked"] == per_worker[w], (w, ww)
        lat = t["latency_ms"]
        assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
        assert len(pj["events"]) == 100, len(pj["events"])
        for ev in pj["events"][:5]:
            assert {"ts_ms", "agent", "worker", "result"} <= set(ev), ev
        assert push_json(n1)["totals"] == t  # the same figures from the other node

        # and /metrics of the two nodes agree
        for res, n in (("routed", N_AGENTS), ("sent", N_AGENTS), ("acked", N_AGENTS),
                       ("failed", 0), ("no_session", 0), ("suppressed_off_primary", 0)):
            assert sum_metric([n1, n2], "qagw_push_total", result=res) == n, res
        assert sum_metric([n1, n2], "qagw_push_latency_seconds_count") == N_AGENTS
        print(f"\n1000 agents: connected {t_conn:.1f}s, uploaded {t_up:.1f}s, all acked {t_done:.1f}s")
    finally:
        for a in agents:
            try:
                a.sock.close()
            except OSError:
                pass
        sel.close()
