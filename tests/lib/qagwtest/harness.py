"""Processes the black-box tests start and talk to: a private PostgreSQL, qagw gateways,
qaagent runs, and queries of the store. conftest.py turns these into fixtures.

Everything listens on 127.0.0.1 on ports picked free at run time, lives in a per-run
temporary directory, and is killed by pid in teardown, also when a test fails.

One module per concern, all re-exported here (`from qagwtest import harness`, then
harness.Gateway, harness.BUILD, ...): procs (paths, processes, ports), stores
(PostgreSQL, Redis), gateway (qagw, its admin port), agent (qaagent, messages), pgaf (a
pg_auto_failover formation: Formation).
"""

from .procs import *  # noqa: F401,F403
from .procs import _die_with_parent, _ephemeral_low  # noqa: F401
from .stores import *  # noqa: F401,F403
from .stores import _redis, _redis_args  # noqa: F401
from .gateway import *  # noqa: F401,F403
from .agent import *  # noqa: F401,F403
from .pgaf import *  # noqa: F401,F403
