# qagw: the gateway (qagw), the agent (qaagent, libqaagent) and their tests.
# `make run` and `make test` are the two commands README.md shows.

CC      ?= cc
CLANG   ?= clang
PYTHON  ?= /usr/bin/python3
BUILD   ?= build

# Debian packages behind each pkg-config name (scripts/install-deps.sh installs them):
#   libevent libevent_pthreads libevent_openssl -> libevent-dev
#   openssl -> libssl-dev   hiredis -> libhiredis-dev   libpq -> libpq-dev
#   sqlite3 -> libsqlite3-dev   jansson -> libjansson-dev   inih -> libinih-dev
#   uuid -> uuid-dev   cmocka -> libcmocka-dev   libsystemd -> libsystemd-dev (sd_notify)
#   libcurl -> libcurl4-openssl-dev (the admin-port client of `qagw workers` / `qagw agents`)
PKGS_GW    = libevent libevent_pthreads libevent_openssl openssl hiredis libpq jansson inih libsystemd \
             uuid libcurl
PKGS_AGENT = sqlite3 uuid jansson openssl
PKGS_TEST  = cmocka
# qabench (bench/): libmosquitto-dev, libnats-dev besides the above.
PKGS_BENCH = libevent libevent_openssl openssl libpq libmosquitto libnats

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS_GW) $(PKGS_AGENT) 2>/dev/null)
LIBS_GW    := $(shell pkg-config --libs $(PKGS_GW) 2>/dev/null) -lpthread -lm
LIBS_AGENT := $(shell pkg-config --libs $(PKGS_AGENT) 2>/dev/null)
LIBS_TEST  := $(shell pkg-config --libs $(PKGS_TEST) 2>/dev/null)
BENCH_CFLAGS := $(shell pkg-config --cflags $(PKGS_BENCH) 2>/dev/null)
LIBS_BENCH := $(shell pkg-config --libs $(PKGS_BENCH) 2>/dev/null) -lpthread -lm

WARN    = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter \
          -Wmissing-prototypes -Wvla -Wformat=2 -Wnull-dereference
# hardening (Debian's own flags): _FORTIFY_SOURCE only without a sanitizer, which has
# checks of its own and does not mix with it
HARDEN    = -fstack-protector-strong -fPIE $(if $(findstring sanitize,$(CFLAGS)),,-D_FORTIFY_SOURCE=2)
HARDEN_LD = -pie -Wl,-z,relro,-z,now
CFLAGS ?= -O2 -g
VERSION   := $(shell cat VERSION)
ALL_CFLAGS = -std=c17 -D_GNU_SOURCE $(WARN) $(HARDEN) $(CFLAGS) -I. $(PKG_CFLAGS) -MMD -MP \
             -DQAGW_VERSION='"$(VERSION)"'
LDFLAGS ?=

# common/: logging and the clocks, the bottom layer every program links.
COMMON_SRC = $(wildcard common/*.c)
PROTO_SRC = $(wildcard proto/*.c)
STORE_SRC = $(wildcard store/*.c) $(STORE_GEN)
# store/sql/ (migrations and functions) embedded as C strings (store/sql.h)
STORE_GEN = $(BUILD)/gen/store_sql.c
STORE_SQL = $(sort $(wildcard store/sql/migrations/*.sql store/sql/functions/*.sql))
ADMIN_SRC = $(wildcard admin/*.c) $(ADMIN_GEN)
# admin/dashboard.html (the dashboard's page) embedded as a C string (admin/dashboard.h)
ADMIN_GEN = $(BUILD)/gen/admin_html.c
ADMIN_HTML = admin/dashboard.html
GW_SRC    = $(filter-out gateway/main.c,$(wildcard gateway/*.c))
ROUTER_SRC = $(wildcard router/*.c) $(ROUTER_GEN)
# router/lua/*.lua (the router's Redis scripts) embedded as C strings (router/rt_scripts.h);
# lib.lua is not a script: the others include it
ROUTER_GEN = $(BUILD)/gen/router_lua.c
ROUTER_LUA = $(sort $(wildcard router/lua/*.lua))
AGENT_SRC = $(filter-out agent/qaagent.c,$(wildcard agent/*.c))
UNIT_SRC  = $(wildcard tests/unit/test_*.c)
BENCH_SRC = $(wildcard bench/*.c)

# keep the objects pattern rules make as intermediates (unit tests' objects)
.SECONDARY:

# objects: $(BUILD)/obj/PATH.o for sources in the tree; a source generated under
# $(BUILD) (gen/) is compiled beside itself, so that an absolute BUILD (the tests'
# `make install BUILD=/abs/build`) names the same object as a relative one
obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out $(BUILD)/%,$(1))) \
      $(patsubst %.c,%.o,$(filter $(BUILD)/%,$(1)))

LIBCOMMON = $(BUILD)/libqacommon.a
LIBPROTO  = $(BUILD)/libqsproto.a
LIBGW     = $(BUILD)/libqagw.a
LIBAGENT  = $(BUILD)/libqaagent.a
QAGW      = $(BUILD)/qagw
QAAGENT   = $(BUILD)/qaagent
QABENCH   = $(BUILD)/qabench
UNIT_BINS = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

FUZZ_SRC  = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS = $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 60

.PHONY: all deps browser-deps certs run services stop-services bench bench-quick test test-unit test-fuzz test-e2e test-long test-asan test-tsan fuzz clean format format-check

MANPAGES  = docs/qagw.8 docs/qaagent.1

# the gateway, the agent, their tests and man pages; not qabench, whose peers (libnats,
# libmosquitto) only the benchmark needs (`make bench` builds it)
all: $(QAGW) $(QAAGENT) $(UNIT_BINS) $(MANPAGES)

# The man pages: docs/NAME.in is the hand-written page; scripts/mkman.py fills in the
# version and (for qagw.8) every key of conf/qagw.conf with its default and comment.
# The built pages are committed, so `man ./docs/qagw.8` works in a fresh clone.
docs/%: docs/%.in scripts/mkman.py conf/qagw.conf VERSION
	$(PYTHON) scripts/mkman.py $< conf/qagw.conf VERSION > $@.tmp && mv $@.tmp $@

$(STORE_GEN): $(STORE_SQL) scripts/embed-sql.sh
	@mkdir -p $(dir $@)
	sh scripts/embed-sql.sh $@

$(ROUTER_GEN): $(ROUTER_LUA) router/rt_scripts.h scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh $@ router/rt_scripts.h rt_lua_ $(filter-out router/lua/lib.lua,$(ROUTER_LUA))

$(ADMIN_GEN): $(ADMIN_HTML) admin/dashboard.h scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh $@ admin/dashboard.h adm_page_ $(ADMIN_HTML)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# the programs that print the version (--version) are rebuilt when it changes
$(BUILD)/obj/gateway/main.o $(BUILD)/obj/agent/qaagent.o: VERSION

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBPROTO): $(call obj,$(PROTO_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBGW): $(call obj,$(GW_SRC) $(ROUTER_SRC) $(STORE_SRC) $(ADMIN_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBAGENT): $(call obj,$(AGENT_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(QAGW): $(call obj,gateway/main.c) $(LIBGW) $(LIBPROTO) $(LIBCOMMON)
	$(CC) $(HARDEN_LD) $(LDFLAGS) -o $@ $^ $(LIBS_GW)

$(QAAGENT): $(call obj,agent/qaagent.c) $(LIBAGENT) $(LIBPROTO) $(LIBCOMMON)
	$(CC) $(HARDEN_LD) $(LDFLAGS) -o $@ $^ $(LIBS_AGENT)

$(BUILD)/obj/bench/%.o: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(BENCH_CFLAGS) -c $< -o $@

$(QABENCH): $(call obj,$(BENCH_SRC)) $(LIBPROTO) $(LIBCOMMON)
	$(CC) $(HARDEN_LD) $(LDFLAGS) -o $@ $^ $(LIBS_BENCH)

# Unit tests link only the module they test: test_proto_* the codec,
# test_agent_* libqaagent, test_gw_* the gateway library (gateway, store, admin);
# all but the codec's also link common/ (logging, the clocks).
$(BUILD)/tests/test_proto_%: $(call obj,tests/unit/test_proto_%.c) $(LIBPROTO)
	@mkdir -p $(dir $@)
	$(CC) $(HARDEN_LD) $(LDFLAGS) -o $@ $^ $(LIBS_TEST)

# (the agent tests' fake servers share tests/unit/fake_qs.c: frame I/O, the listener)
$(BUILD)/tests/test_agent_%: $(call obj,tests/unit/test_agent_%.c tests/unit/fake_qs.c) $(LIBAGENT) $(LIBPROTO) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(HARDEN_LD) $(LDFLAGS) -o $@ $^ $(LIBS_AGENT) $(LIBS_TEST)

$(BUILD)/tests/test_gw_%: $(call obj,tests/unit/test_gw_%.c) $(LIBGW) $(LIBPROTO) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(HARDEN_LD) $(LDFLAGS) -o $@ $^ $(LIBS_GW) $(LIBS_TEST)

# libFuzzer targets, built with clang; each links the sources it exercises.
# fuzz_frame: the codec; fuzz_stream: the agent's -x parser; fuzz_config: qagw's config;
# fuzz_session: a worker's session state machine fed arbitrary frame sequences.
# UBSan checks stay recoverable (more coverage); halting at run time makes any report a finding.
FUZZ_ENV = UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# a fuzz target compiles its sources itself: it is rebuilt when any header changes too
FUZZ_HDRS = $(wildcard common/*.h proto/*.h gateway/*.h store/*.h router/*.h admin/*.h agent/*.h)
$(FUZZ_BINS): $(FUZZ_HDRS)
FUZZ_CFLAGS = -std=c17 -D_GNU_SOURCE -g -O1 -I. $(PKG_CFLAGS) -DQAGW_VERSION='"$(VERSION)"' \
              -fsanitize=fuzzer,address,undefined
$(BUILD)/fuzz/fuzz_frame: tests/fuzz/fuzz_frame.c $(PROTO_SRC)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^)
$(BUILD)/fuzz/fuzz_stream: tests/fuzz/fuzz_stream.c $(COMMON_SRC) $(PROTO_SRC) $(AGENT_SRC)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^) $(LIBS_AGENT)
$(BUILD)/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(COMMON_SRC) $(PROTO_SRC) $(GW_SRC) $(ROUTER_SRC) $(STORE_SRC) $(ADMIN_SRC)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^) $(LIBS_GW)
$(BUILD)/fuzz/fuzz_webguard: tests/fuzz/fuzz_webguard.c admin/webguard.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^)
# fuzz_session answers the store's statements itself (see the file): st_submit is wrapped.
$(BUILD)/fuzz/fuzz_session: tests/fuzz/fuzz_session.c $(COMMON_SRC) $(PROTO_SRC) $(GW_SRC) $(ROUTER_SRC) $(STORE_SRC) $(ADMIN_SRC)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -Wl,--wrap=st_submit,--wrap=st_op_cancel -o $@ $(filter %.c,$^) $(LIBS_GW)

deps:
	@bash scripts/install-deps.sh
	@$(MAKE) --no-print-directory browser-deps

# playwright-core for the dashboard's browser test (tests/browser/package-lock.json). Not
# fatal: without npm or the registry, tests/e2e/test_dashboard.py is skipped and says why.
browser-deps:
	@if [ -f tests/browser/package-lock.json ]; then \
	  if [ tests/browser/node_modules/.package-lock.json -nt tests/browser/package-lock.json ]; then :; \
	  elif command -v npm >/dev/null && (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error); then \
	    echo "browser-deps: playwright-core installed in tests/browser/node_modules"; \
	  else echo "browser-deps: could not install playwright-core (npm ci failed): the browser test will be skipped" >&2; fi; \
	fi

# Dev CA and server certificate for TLS workers (conf/qagw.conf's [tls] cert and key);
# made once, kept out of git. conf/make-dev-certs.sh --force DIR remakes them.
certs:
	@bash conf/make-dev-certs.sh conf/dev

# The main job: packages, build, PostgreSQL + Redis under run/, a 3-worker gateway.
# Its configuration, run/qagw.conf, is the sample (every key at its default) with the
# development overrides of conf/dev.conf (auth = off) and the ports below applied,
# written at every make run. Where 5432 or 6379 is taken:
# make run PG_PORT=15432 REDIS_PORT=16379
RUN_CONF = run/qagw.conf
PG_PORT ?= 5432
REDIS_PORT ?= 6379
run: deps certs
	$(MAKE) all
	@mkdir -p run
	@printf '[store]\nconninfo = host=127.0.0.1 port=%s dbname=qagw user=qagw\n[redis]\nport = %s\n' \
	  '$(PG_PORT)' '$(REDIS_PORT)' > run/ports.conf
	$(PYTHON) scripts/conf-overlay.py conf/qagw.conf conf/dev.conf run/ports.conf > $(RUN_CONF).tmp
	mv $(RUN_CONF).tmp $(RUN_CONF)
	bash scripts/services.sh start run --pg-port '$(PG_PORT)' --redis-port '$(REDIS_PORT)'
	$(QAGW) -c $(RUN_CONF)

stop-services:
	bash scripts/services.sh stop run

# Benchmarks (issue 7, docs/benchmarks.md): bench/run.py starts PostgreSQL, Redis, qagw and
# the peers (Mosquitto, nats-server, openssl s_server) on loopback, runs every scenario and
# writes bench/results/LATEST.json, LATEST.md and latency.png. bench: <= 12 min; bench-quick:
# <= 3 min (shorter phases, fewer agents and sessions).
bench: deps certs
	$(MAKE) all $(QABENCH)
	$(PYTHON) bench/run.py --profile full

bench-quick: deps certs
	$(MAKE) all $(QABENCH)
	$(PYTHON) bench/run.py --profile quick

# What one sync costs the servers (issue 18, docs/operations.md "Sizing"; < 1 min): prints
# qagw's, PostgreSQL's and Redis's CPU per sync and PostgreSQL transactions per sync.
.PHONY: bench-sizing
bench-sizing: deps certs
	$(MAKE) all
	$(PYTHON) bench/sizing.py

# Issue 10's purge under ingest (bench/purge.py, <= 10 min): 1,000,000 stored messages,
# ingest with and without the purge of 500,000 of them; writes bench/results/PURGE.{json,md}.
.PHONY: bench-purge
bench-purge: deps certs
	$(MAKE) all $(QABENCH)
	QAGW_BUILD=$(BUILD) $(PYTHON) bench/purge.py

# The build goes on every core (JOBS): serial, it took ~2.5 of make test's 15 minutes on 2
# cores (the fuzz targets compile their sources with ASan and UBSan themselves).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps certs
	$(MAKE) format-check
	$(MAKE) -j$(JOBS) all $(FUZZ_BINS)
	$(MAKE) test-unit test-fuzz test-e2e

# test_gw_pool_redis starts its own redis-server (killed with it; skipped, saying so,
# without /usr/bin/redis-server or the one REDIS_SERVER names).
test-unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# Every fuzz target replays its checked-in corpus once (no new inputs).
test-fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); n=$${n#fuzz_}; \
	  echo "== $$f corpus tests/fuzz/corpus/$$n"; \
	  $(FUZZ_ENV) $$f -runs=0 tests/fuzz/corpus/$$n >/dev/null 2>$(BUILD)/fuzz/$$n.log || { tail -30 $(BUILD)/fuzz/$$n.log; exit 1; }; \
	  tail -1 $(BUILD)/fuzz/$$n.log; done

# The end-to-end tests run in E2E_JOBS processes (pytest-xdist), a test file to a process:
# one at a time they took ~13.5 of make test's 15 minutes on 2 cores, most of it waiting
# (timeouts, restarts, fault schedules), not computing. Each process has its own
# PostgreSQL, Redis and slice of ports (tests/lib/qagwtest/procs.py). E2E_JOBS=0: one
# process, as before.
E2E_JOBS ?= 2
test-e2e: $(QAGW) $(QAAGENT)
	$(PYTHON) -m pytest -q -rs -m "not long" $(if $(filter 0,$(E2E_JOBS)),,-n $(E2E_JOBS) --dist loadfile) tests/e2e

# The long fault scenarios (marked `long`; make test runs a shorter variant of each fault).
test-long: $(QAGW) $(QAAGENT)
	$(PYTHON) -m pytest -q -s -m long tests/e2e

# The mixed fault scenario of tests/e2e/soak.py (issue 8) for SOAK_SECONDS (whole seconds,
# default 600): node SIGKILL and SIGTERM, both nodes killed, PostgreSQL crashed, under the
# traffic of 20 qaagent runs; prints the history checker's figures. Bounded: the faults stop
# at SOAK_SECONDS, the drain takes at most ~45 s, and `timeout` ends it 300 s after that.
SOAK_SECONDS ?= 600
.PHONY: soak
soak: $(QAGW) $(QAAGENT)
	SOAK_SECONDS=$(SOAK_SECONDS) timeout $$(( $(SOAK_SECONDS) + 300 )) $(PYTHON) -m pytest -q -s tests/e2e/soak.py
	$(MAKE) test-long

# The unit and e2e suites against an ASan+UBSan build in build-asan/ (slow: not part of
# `make test`). Sanitizer reports of every process (qagw, qaagent, unit tests) go to
# build-asan/sanitizer/; any report, or a test failure, fails the run.
ASAN_BUILD  = build-asan
ASAN_FLAGS  = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
ASAN_REPORT = $(CURDIR)/$(ASAN_BUILD)/sanitizer
# GCC's UBSan ignores log_path when linked with ASan: its reports go to each process's
# stderr, so the unit and pytest output and every file under the pytest base directory
# (the qagw logs) are searched for reports too.
ASAN_ENV    = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$(ASAN_REPORT)/asan \
	      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$(ASAN_REPORT)/ubsan \
	      QAGW_BUILD=$(ASAN_BUILD)
ASAN_GREP   = runtime error:|ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|SUMMARY: [A-Za-z]*Sanitizer
test-asan: deps certs
	$(MAKE) BUILD=$(ASAN_BUILD) CFLAGS="$(ASAN_FLAGS)" LDFLAGS="$(ASAN_FLAGS)" all
	@rm -rf $(ASAN_REPORT) $(ASAN_BUILD)/pytest $(ASAN_BUILD)/*.log && mkdir -p $(ASAN_REPORT)
	@rc=0; \
	  { $(ASAN_ENV) $(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) CFLAGS="$(ASAN_FLAGS)" \
	    LDFLAGS="$(ASAN_FLAGS)" test-unit || echo "== test-unit failed" >$(ASAN_BUILD)/failed.log; } \
	    2>&1 | tee $(ASAN_BUILD)/unit.log; \
	  { $(ASAN_ENV) $(PYTHON) -m pytest -q -m "not long" --basetemp=$(ASAN_BUILD)/pytest tests/e2e || \
	    echo "== test-e2e failed" >>$(ASAN_BUILD)/failed.log; } 2>&1 | tee $(ASAN_BUILD)/e2e.log; \
	  if [ -s $(ASAN_BUILD)/failed.log ]; then cat $(ASAN_BUILD)/failed.log; rc=1; fi; \
	  found=$$(grep -rlE '$(ASAN_GREP)' $(ASAN_REPORT) $(ASAN_BUILD)/pytest $(ASAN_BUILD)/unit.log \
	    $(ASAN_BUILD)/e2e.log 2>/dev/null); \
	  if [ -n "$$found" ]; then \
	    echo "== sanitizer reports:"; \
	    for f in $$found; do echo "-- $$f"; grep -E -A30 '$(ASAN_GREP)' $$f | head -60; done; rc=1; \
	  else echo "== no sanitizer reports"; fi; \
	  exit $$rc

# The unit suite and part of the e2e suite against a ThreadSanitizer build in build-tsan/
# (slow: not part of `make test`): the workers, the main thread's admin port and their
# shared atomics. The whole e2e suite takes ~14 min under TSan on a 2-core machine (and
# test_hostile_buffers' RSS bound cannot hold with TSan's shadow memory), so TSAN_E2E
# runs the files that drive the threads (~2-3 min): multi-worker nodes and push
# across workers and nodes (test_push, test_router, test_status), drain and resume from the
# admin port, which reads every worker's state from the main thread (test_admin), SIGTERM
# drain and SIGHUP reload (test_lifecycle; test_tls reloads the certificate), Redis and
# store reconnects (test_redis_hang, test_store_down). `make test-tsan TSAN_E2E=tests/e2e`
# runs all of it. Every process keeps running after a report (halt_on_error=0) and exits
# with its own status (exitcode=0: e2e tests check qagw's exit status, and every unit test
# runs); reports go to build-tsan/sanitizer/ and any report, or a test failure, fails the
# run. libevent,
# OpenSSL, hiredis and libpq are not instrumented: tests/tsan.supp says which of their
# reports are not ours, one entry each and why. -fPIE/-pie (HARDEN) are what TSan needs
# anyway; _FORTIFY_SOURCE stays off (CFLAGS has "sanitize").
TSAN_BUILD  = build-tsan
TSAN_FLAGS  = -O1 -g -fsanitize=thread
TSAN_REPORT = $(CURDIR)/$(TSAN_BUILD)/sanitizer
TSAN_ENV    = TSAN_OPTIONS=halt_on_error=0:exitcode=0:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp:log_path=$(TSAN_REPORT)/tsan \
	      QAGW_BUILD=$(TSAN_BUILD)
TSAN_GREP   = (WARNING|ERROR|FATAL): ThreadSanitizer
TSAN_E2E    = $(addprefix tests/e2e/,test_push.py test_router.py test_status.py test_admin.py \
	        test_lifecycle.py test_tls.py test_redis_hang.py test_store_down.py)
test-tsan: deps certs
	$(MAKE) BUILD=$(TSAN_BUILD) CFLAGS="$(TSAN_FLAGS)" LDFLAGS="$(TSAN_FLAGS)" all
	@rm -rf $(TSAN_REPORT) $(TSAN_BUILD)/pytest $(TSAN_BUILD)/*.log && mkdir -p $(TSAN_REPORT)
	@rc=0; \
	  { $(TSAN_ENV) $(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) CFLAGS="$(TSAN_FLAGS)" \
	    LDFLAGS="$(TSAN_FLAGS)" test-unit || echo "== test-unit failed" >$(TSAN_BUILD)/failed.log; } \
	    2>&1 | tee $(TSAN_BUILD)/unit.log; \
	  { $(TSAN_ENV) $(PYTHON) -m pytest -q -m "not long" --basetemp=$(TSAN_BUILD)/pytest $(TSAN_E2E) || \
	    echo "== test-e2e failed" >>$(TSAN_BUILD)/failed.log; } 2>&1 | tee $(TSAN_BUILD)/e2e.log; \
	  if [ -s $(TSAN_BUILD)/failed.log ]; then cat $(TSAN_BUILD)/failed.log; rc=1; fi; \
	  found=$$(grep -rlE '$(TSAN_GREP)' $(TSAN_REPORT) $(TSAN_BUILD)/pytest $(TSAN_BUILD)/unit.log \
	    $(TSAN_BUILD)/e2e.log 2>/dev/null); \
	  if [ -n "$$found" ]; then \
	    echo "== sanitizer reports:"; \
	    for f in $$found; do echo "-- $$f"; grep -E -A40 '$(TSAN_GREP)' $$f | head -80; done; rc=1; \
	  else echo "== no sanitizer reports"; fi; \
	  exit $$rc

# Bounded fuzzing of every target (FUZZ_SECONDS each); new finds go to build/fuzz/new-*.
fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); n=$${n#fuzz_}; \
	  mkdir -p $(BUILD)/fuzz/new-$$n; echo "== fuzzing $$n for $(FUZZ_SECONDS)s"; \
	  $(FUZZ_ENV) $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 $(BUILD)/fuzz/new-$$n tests/fuzz/corpus/$$n; done

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

# part of make test (clang-format 14, Debian 12's): every C file as `make format` leaves it
format-check:
	@clang-format --dry-run --Werror $(shell git ls-files '*.c' '*.h') && \
	  echo "format-check: $(words $(shell git ls-files '*.c' '*.h')) files formatted"

# Installs the programs, man pages, docs, the unit and (only if absent) the configuration:
# `make install` as root, or `make install DESTDIR=/tmp/stage` to stage a package.
# docs/service.md has the rest (the qagw user, systemctl).
PREFIX  ?= /usr/local
DESTDIR ?=
.PHONY: install
install: $(QAGW) $(QAAGENT) $(MANPAGES)
	install -D -m 0755 $(QAGW) $(DESTDIR)$(PREFIX)/bin/qagw
	install -D -m 0755 $(QAAGENT) $(DESTDIR)$(PREFIX)/bin/qaagent
	install -D -m 0644 docs/qagw.8 $(DESTDIR)$(PREFIX)/share/man/man8/qagw.8
	install -D -m 0644 docs/qaagent.1 $(DESTDIR)$(PREFIX)/share/man/man1/qaagent.1
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/doc/qagw
	install -m 0644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/qagw/
	install -m 0644 conf/qagw.conf $(DESTDIR)$(PREFIX)/share/doc/qagw/qagw.conf.sample
	install -d -m 0755 $(DESTDIR)/etc/systemd/system
	sed 's|@PREFIX@|$(PREFIX)|g' conf/qagw.service.in > $(DESTDIR)/etc/systemd/system/qagw.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/qagw.service
	@if [ -e $(DESTDIR)/etc/qagw/qagw.conf ]; then \
	  echo "install: $(DESTDIR)/etc/qagw/qagw.conf exists: kept (the sample is in $(PREFIX)/share/doc/qagw)"; \
	else install -D -m 0640 conf/qagw.conf $(DESTDIR)/etc/qagw/qagw.conf && \
	  echo "install: $(DESTDIR)/etc/qagw/qagw.conf from the sample: edit it (absolute paths for [tls] and log_file)"; fi

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj $(BUILD)/gen -name '*.d' 2>/dev/null)
