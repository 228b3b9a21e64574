#!/usr/bin/env bash
# Installs the Debian 12 packages qagw needs to build, run and test, but only those
# that are missing (checked with dpkg-query), so a machine that has them all is left
# untouched and nothing is fetched. Works as root without a tty (CI), or through sudo.
set -euo pipefail

PKGS=(
  build-essential pkg-config clang clang-format libclang-rt-14-dev
  libevent-dev libssl-dev libhiredis-dev libpq-dev libsqlite3-dev
  libjansson-dev libinih-dev uuid-dev libcmocka-dev uthash-dev libcurl4-openssl-dev
  postgresql-15 redis-server sqlite3
  python3 python3-pytest python3-pytest-xdist python3-psycopg2 python3-redis python3-prometheus-client python3-psutil
  libmosquitto-dev libnats-dev mosquitto nats-server gnuplot-nox
  libsystemd-dev man-db systemd
  strace iproute2
  postgresql-15-auto-failover pg-auto-failover-cli
)
# Wanted but not required: the dashboard's browser test (tests/e2e/test_dashboard.py)
# drives Debian's Chromium through playwright-core (npm, tests/browser/); where either
# cannot be installed the test is skipped and says why.
OPTIONAL_PKGS=(chromium)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${PKGS[@]}"; do
  installed "$p" || missing+=("$p")
done
optional=()
for p in "${OPTIONAL_PKGS[@]}"; do
  installed "$p" || optional+=("$p")
done
# npm installs playwright-core for the browser test; Debian's nodejs/npm if the machine
# has no Node.js of its own.
command -v npm >/dev/null 2>&1 || optional+=(nodejs npm)

if [ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi

echo "install-deps: installing ${missing[*]} ${optional[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql and redis-server packages start their services from maintainer
# scripts; we run our own instances on our own ports, so keep invoke-rc.d from starting
# anything during this install (policy-rc.d exit 101 = "action forbidden").
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  own_policy=1
fi
cleanup() { [ "$own_policy" -eq 0 ] || "${SUDO[@]}" rm -f "$policy"; }
trap cleanup EXIT

"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef \
  -o Dpkg::Options::=--force-confold "${missing[@]}"
for p in "${optional[@]}"; do
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "$p" ||
    echo "install-deps: optional package $p could not be installed (its test will be skipped)" >&2
done

still=()
for p in "${missing[@]}"; do installed "$p" || still+=("$p"); done
if [ ${#still[@]} -ne 0 ]; then
  echo "install-deps: still missing after install: ${still[*]}" >&2
  exit 1
fi

# If a package's service got started anyway (a machine without policy-rc.d support),
# stop it: it would hold the default ports 5432/6379 that `make run` uses. Best effort:
# `service` may be absent and there may be no init system at all.
if command -v service >/dev/null 2>&1; then
  for s in postgresql redis-server; do
    "${SUDO[@]}" service "$s" stop >/dev/null 2>&1 || true
  done
fi
echo "install-deps: done"
