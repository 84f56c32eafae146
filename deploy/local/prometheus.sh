#!/usr/bin/env bash
# Local Prometheus without Docker: Debian's `prometheus` package (it ships promtool) installed with
# apt-get when missing, a server on 127.0.0.1 run by PID with its data in the cache dir.
#
#   deploy/local/prometheus.sh install|start|stop|status|reload|promtool|config
#
#   install   apt-get install prometheus when prometheus/promtool are missing (apt-get update first)
#   start     start (or reuse) a server on 127.0.0.1:$PROMETHEUS_PORT (default 9090) with
#             $PROMETHEUS_CONFIG (default deploy/prometheus/prometheus.yml); the Debian service is not used
#   stop      stop the server this script started (by its PID file)
#   status    say whether it runs
#   reload    ask the running server to re-read its configuration (SIGHUP)
#   promtool  print the path of promtool (installing it first if needed)
#   config    print the configuration file in use
#
# Every command is idempotent: start on a running server says so and returns 0.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
RUN="$CACHE/run"
LOGS="$CACHE/logs"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
PROMETHEUS_CONFIG="${PROMETHEUS_CONFIG:-$ROOT/deploy/prometheus/prometheus.yml}"
PROMETHEUS_DATA="${PROMETHEUS_DATA:-$CACHE/prometheus-data-$PROMETHEUS_PORT}"
PIDFILE="$RUN/prometheus-$PROMETHEUS_PORT.pid"
START_TIMEOUT_S="${PROMETHEUS_START_TIMEOUT_S:-60}"

mkdir -p "$RUN" "$LOGS"

say() { printf '[prometheus] %s\n' "$*" >&2; }
die() { printf '[prometheus] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

find_bin() { # find_bin <name>: PATH first, then where Debian puts it
  command -v "$1" 2>/dev/null && return 0
  [[ -x "/usr/bin/$1" ]] && { echo "/usr/bin/$1"; return 0; }
  return 1
}

install() {
  if find_bin prometheus >/dev/null && find_bin promtool >/dev/null; then return 0; fi
  command -v apt-get >/dev/null || die "prometheus/promtool are missing and apt-get is not available; install Prometheus 2.x"
  local as_root=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "installing the prometheus package needs root (or sudo)"
    as_root=(sudo -n)
  fi
  say "installing Debian's prometheus package (first run only; log $LOGS/prometheus-install.log)"
  {
    "${as_root[@]}" apt-get update -q
    # The package's own service must not start: we run our own server on loopback.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
      apt-get install -y -q --no-install-recommends prometheus
  } >"$LOGS/prometheus-install.log" 2>&1 \
    || { tail -20 "$LOGS/prometheus-install.log" >&2; die "apt-get install prometheus failed"; }
  find_bin promtool >/dev/null || die "the prometheus package did not provide promtool"
}

ready() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1; }

start() {
  if pid_alive; then
    say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PROMETHEUS_PORT"
    return 0
  fi
  if port_open "$PROMETHEUS_PORT"; then
    die "something else listens on 127.0.0.1:$PROMETHEUS_PORT; set PROMETHEUS_PORT"
  fi
  install
  [[ -f "$PROMETHEUS_CONFIG" ]] || die "no configuration at $PROMETHEUS_CONFIG"
  "$(find_bin promtool)" check config "$PROMETHEUS_CONFIG" >"$LOGS/prometheus-check.log" 2>&1 \
    || { cat "$LOGS/prometheus-check.log" >&2; die "invalid configuration $PROMETHEUS_CONFIG"; }
  mkdir -p "$PROMETHEUS_DATA"
  nohup "$(find_bin prometheus)" \
    --config.file="$PROMETHEUS_CONFIG" \
    --storage.tsdb.path="$PROMETHEUS_DATA" \
    --storage.tsdb.retention.time=7d \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    --web.enable-lifecycle \
    >"$LOGS/prometheus-$PROMETHEUS_PORT.log" 2>&1 &
  echo $! >"$PIDFILE"
  say "starting Prometheus (pid $(cat "$PIDFILE"), config $PROMETHEUS_CONFIG, log $LOGS/prometheus-$PROMETHEUS_PORT.log)"
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until ready; do
    if ! pid_alive; then tail -20 "$LOGS/prometheus-$PROMETHEUS_PORT.log" >&2; die "Prometheus exited"; fi
    if ((SECONDS >= deadline)); then die "Prometheus not ready within ${START_TIMEOUT_S}s"; fi
    sleep 0.3
  done
  say "Prometheus is ready on http://127.0.0.1:$PROMETHEUS_PORT"
}

stop() {
  if ! pid_alive; then rm -f "$PIDFILE"; say "not running"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then say "did not stop in 30 s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.3
  done
  rm -f "$PIDFILE"
  say "stopped (pid $pid)"
}

status() {
  if pid_alive && ready; then echo "prometheus up    http://127.0.0.1:$PROMETHEUS_PORT (pid $(cat "$PIDFILE"))"
  else echo "prometheus down"; return 1; fi
}

case "${1:-status}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  reload) pid_alive || die "not running"; kill -HUP "$(cat "$PIDFILE")"; say "reloaded" ;;
  promtool) install; find_bin promtool ;;
  config) echo "$PROMETHEUS_CONFIG" ;;
  *) die "usage: $0 install|start|stop|status|reload|promtool|config" ;;
esac
