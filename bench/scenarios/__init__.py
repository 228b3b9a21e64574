"""The scenarios of a benchmark run (issues 7 and 15; docs/benchmarks.md), each with its
same-run baseline. Each takes the run (bench/run.py's Bench: the services, the profile, the
qabench runner) and returns its section of the results: what it measures, a table of
figure, baseline, ratio, target and verdict, and the raw figures of every qabench run.
A figure that could not be measured is {"not_run": REASON} and shows as such.

Push latencies are open-loop, from each message's due time on the sender's schedule (issue
15); a run whose sender achieved under 99 % of the offered rate is `missed`. The qagw runs of
scenarios 1, 2, 8 and 9 carry what each message cost (bench/costs.py): PostgreSQL
transactions, and CPU time of PostgreSQL, qagw and Redis, over the measured window.

One module per kind of figure: scenarios.common (cells, verdicts, costs), ingest (1, 3,
8), push (2, 9, 11), sessions (4, 5), failover (6), purge (7), coverage (10).
"""

from __future__ import annotations

from scenarios.common import *  # noqa: F401,F403
from scenarios.coverage import scenario_coverage
from scenarios.failover import scenario_failover
from scenarios.ingest import scenario_backlog, scenario_ingest, scenario_nats
from scenarios.purge import scenario_purge  # noqa: F401
from scenarios.push import scenario_capacity, scenario_pipeline, scenario_push
from scenarios.sessions import scenario_handshakes, scenario_idle



# (number, needs the plain and TLS nodes, function), in the issues' order; 7 is the purge
# (bench/purge.py, not part of make bench)
SCENARIOS = [
    (1, True, scenario_ingest),
    (2, True, scenario_push),
    (3, False, scenario_nats),
    (4, True, scenario_idle),
    (5, True, scenario_handshakes),
    (6, False, scenario_failover),
    (8, False, scenario_backlog),
    (9, True, scenario_capacity),
    (10, False, scenario_coverage),
    (11, True, scenario_pipeline),
]
