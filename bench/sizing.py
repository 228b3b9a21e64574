#!/usr/bin/python3
"""What one sync costs the servers (issue 18, docs/operations.md "Sizing"): a sync as
`qaagent sync` does it on a fresh connection: HELLO, one UPLOAD of one message, FETCH of
what waits (one message), DELIVER_ACK, PING (so the ack is committed), BYE. Threads of
Python clients run syncs against one node of 3 workers (plain TCP; a TLS handshake adds
what scenario 5 of `make bench` measures) for --seconds; qagw's, PostgreSQL's and Redis's
CPU (from /proc, as bench/costs.py reads it) over the window, divided by the syncs done.

    /usr/bin/python3 bench/sizing.py [--seconds 15] [--threads 4] [--agents 2000]

Prints one JSON object. Servers on CPU 0, clients on CPU 1, as in bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import costs  # bench/ modules: run as a script, its directory is first on sys.path
import peers
from qagwtest import harness
from qagwtest import qasync as q
from run import Bench


def one_sync(port: int, me: str, peer: str) -> None:
    with q.Client("127.0.0.1", port, timeout=10) as c:
        c.hello(me)
        c.upload([harness.msg(f"{peer}\\q", body=b"sizing")])
        d = c.fetch()
        if d.msgs:
            c.deliver_ack([m.seq for m in d.msgs])
        c.ping()
        c.bye()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--agents", type=int, default=2000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qagw-sizing-"))
    os.chmod(work, 0o755)
    b = Bench("quick", work)
    if b.client_cpus:
        os.sched_setaffinity(0, b.client_cpus)
    try:
        b.start_store()
        gw = b.gateway("sz", ("s1", "s2", "s3"))
        b.start_gateway(gw)
        ports = list(gw.ports.values())
        ids = [f"sz-{i}" for i in range(args.agents)]
        done, errors = [0], []
        stop = threading.Event()
        lock = threading.Lock()

        def worker(k: int) -> None:
            rng = random.Random(k)
            mine = ids[k::args.threads]  # no two threads sync one agent at once
            while not stop.is_set():
                me, peer = rng.choice(mine), rng.choice(ids)
                try:
                    one_sync(rng.choice(ports), me, peer)
                except Exception as e:  # counted, shown; the run goes on
                    with lock:
                        errors.append(repr(e))
                    continue
                with lock:
                    done[0] += 1

        meter = costs.Meter(b.pg, b.store.dbname, {"qagw": gw.pid, "redis": b.redis.proc.pid})
        threads = [threading.Thread(target=worker, args=(k,), daemon=True)
                   for k in range(args.threads)]
        for t in threads:
            t.start()
        time.sleep(2)  # warm-up
        with lock:
            d0 = done[0]
        a = meter.snap()
        time.sleep(args.seconds)
        z = meter.snap()
        with lock:
            d1 = done[0]
        stop.set()
        for t in threads:
            t.join(15)
        c = costs.cost(a, z, d1 - d0, meter.errors)
        meter.close()
        out = {"syncs": d1 - d0, "seconds": args.seconds,
               "syncs_per_s": round((d1 - d0) / args.seconds, 1),
               "cpu_us_per_sync": c.get("cpu_us_per_msg"),
               "pg_xacts_per_sync": c.get("pg_xacts_per_msg"),
               "pg_write_xacts_per_sync": c.get("pg_write_xacts_per_msg"),
               "errors": len(errors), "first_errors": errors[:3],
               "pinning": b.pinning, "cpus": peers.cpu_count()}
        print(json.dumps(out))
        return 0
    finally:
        b.close()
        harness.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
