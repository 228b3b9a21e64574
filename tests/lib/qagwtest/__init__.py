"""The test code the end-to-end tests (tests/e2e) and the benchmark (bench/) share:
harness (PostgreSQL, Redis, qagw and qaagent processes on loopback), qasync (a QASync v1
client), pool (helpers over a pool of gateways) and history (the fault suite's history
checker). tests/e2e/qagwtest and bench/qagwtest are symbolic links to this directory, so
that `from qagwtest import harness` works from either without touching sys.path."""
