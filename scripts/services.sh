#!/usr/bin/env bash
# Starts, stops and reports the local PostgreSQL 15 and Redis that `make run` uses,
# everything kept under one directory (data, sockets, logs, pid files):
#
#   bash scripts/services.sh start|stop|status DIR [--pg-port N] [--redis-port N]
#
# Defaults: PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379 (conf/qagw.conf).
# PostgreSQL runs as the unprivileged `postgres` user when we are root (the server
# refuses to run as root), with `initdb -A trust`: acceptable only because it listens
# on loopback and a private socket directory. It gets a role `qagw` and a database
# `qagw` owned by it. Redis listens on loopback, keeps nothing on disk.
# `start` is idempotent: services already running from DIR are left as they are.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_PORT=5432
REDIS_PORT=6379

usage() {
  echo "usage: $0 start|stop|status DIR [--pg-port N] [--redis-port N]" >&2
  exit 2
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
while [ $# -gt 0 ]; do
  case $1 in
    --pg-port) [ $# -ge 2 ] || usage; PG_PORT=$2; shift 2 ;;
    --redis-port) [ $# -ge 2 ] || usage; REDIS_PORT=$2; shift 2 ;;
    *) usage ;;
  esac
done
for p in "$PG_PORT" "$REDIS_PORT"; do
  [[ $p =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || { echo "services: bad port '$p'" >&2; exit 2; }
done
case $cmd in start | stop | status) ;; *) usage ;; esac

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
RDIR=$dir/redis
RPID=$RDIR/redis.pid

# --- who runs PostgreSQL, and where its files live ----------------------------------
PGUSER_OS=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
  PGUSER_OS=postgres
  id postgres >/dev/null 2>&1 || { echo "services: no 'postgres' user (install postgresql-15)" >&2; exit 1; }
fi
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# The postgres user must be able to reach DIR/pg. When DIR sits under a directory it
# cannot traverse (a checkout in /root, say), the cluster lives under /var/tmp and
# DIR/pg is a symlink to it.
pg_home() {
  if [ -L "$dir/pg" ] || [ -d "$dir/pg" ]; then
    echo "$dir/pg"
    return
  fi
  [ "$cmd" = start ] || { echo "$dir/pg"; return; }
  if [ "$(id -u)" -eq 0 ] && ! as_pg test -x "$dir"; then
    local alt
    alt=/var/tmp/qagw-pg-$(printf '%s' "$dir" | md5sum | cut -c1-12)
    mkdir -p "$alt"
    ln -s "$alt" "$dir/pg"
    echo "services: $dir is not reachable by user postgres; cluster kept in $alt" >&2
  else
    mkdir -p "$dir/pg"
  fi
  echo "$dir/pg"
}
PGH=$(pg_home)
PGH=$(readlink -f "$PGH")
PGDATA=$PGH/data
PGSOCK=$PGH/sock
PGLOG=$PGH/postgresql.log

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_running() {
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}
pg_port_of_running() { sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null; }

redis_running() {
  [ -f "$RPID" ] && kill -0 "$(cat "$RPID")" 2>/dev/null
}

psql_pg() {
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$1" -U postgres -d postgres "${@:2}"
}

start_pg() {
  if pg_running; then
    echo "postgresql: already running (port $(pg_port_of_running), data $PGDATA)"
    return
  fi
  if port_taken "$PG_PORT"; then
    echo "services: port $PG_PORT is taken by another program; PostgreSQL not started (use --pg-port N)" >&2
    return 1
  fi
  mkdir -p "$PGH"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PGH"; fi
  chmod 700 "$PGH"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$PGH/initdb.log" 2>&1 ||
      { cat "$PGH/initdb.log" >&2; echo "services: initdb failed" >&2; return 1; }
  fi
  as_pg mkdir -p "$PGSOCK"
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 \
    -o "-p $PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1" start >/dev/null ||
    { tail -20 "$PGLOG" >&2; echo "services: PostgreSQL did not start" >&2; return 1; }
  if [ "$(psql_pg "$PG_PORT" -tA -c "select 1 from pg_roles where rolname='qagw'")" != 1 ]; then
    psql_pg "$PG_PORT" -c "create role qagw login"
  fi
  if [ "$(psql_pg "$PG_PORT" -tA -c "select 1 from pg_database where datname='qagw'")" != 1 ]; then
    psql_pg "$PG_PORT" -c "create database qagw owner qagw"
  fi
  echo "postgresql: running on 127.0.0.1:$PG_PORT (data $PGDATA, log $PGLOG)"
}

stop_pg() {
  if pg_running; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
    echo "postgresql: stopped"
  else
    echo "postgresql: not running"
  fi
}

start_redis() {
  if redis_running; then
    echo "redis: already running (pid $(cat "$RPID"))"
    return
  fi
  if port_taken "$REDIS_PORT"; then
    echo "services: port $REDIS_PORT is taken by another program; Redis not started (use --redis-port N)" >&2
    return 1
  fi
  mkdir -p "$RDIR"
  rm -f "$RPID"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --dir "$RDIR" --save '' --appendonly no \
    --daemonize yes --pidfile "$RPID" --logfile "$RDIR/redis.log"
  local i
  for i in $(seq 1 100); do
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
      echo "redis: running on 127.0.0.1:$REDIS_PORT (log $RDIR/redis.log)"
      return
    fi
    sleep 0.1
  done
  tail -20 "$RDIR/redis.log" >&2 || true
  echo "services: Redis did not start" >&2
  return 1
}

stop_redis() {
  if redis_running; then
    local pid i
    pid=$(cat "$RPID")
    kill "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$RPID"
    echo "redis: stopped"
  else
    echo "redis: not running"
  fi
}

case $cmd in
  start)
    start_pg
    start_redis
    ;;
  stop)
    rc=0
    stop_redis || rc=1
    stop_pg || rc=1
    exit $rc
    ;;
  status)
    rc=0
    if pg_running; then echo "postgresql: running (port $(pg_port_of_running), data $PGDATA)"; else echo "postgresql: stopped"; rc=3; fi
    if redis_running; then echo "redis: running (pid $(cat "$RPID"))"; else echo "redis: stopped"; rc=3; fi
    exit $rc
    ;;
esac
