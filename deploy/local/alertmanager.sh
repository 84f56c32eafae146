#!/usr/bin/env bash
# Local Alertmanager without Docker: Debian's `prometheus-alertmanager` package (with amtool) installed with
# apt-get when missing, a server on 127.0.0.1 run by PID with its data in the cache dir. The local
# Prometheus (deploy/prometheus/prometheus.yml) sends its alerts here.
#
#   deploy/local/alertmanager.sh install|start|stop|status|amtool|config
#
#   start     start (or reuse) a server on 127.0.0.1:$ALERTMANAGER_PORT (default 9094: 9093 is Kafka's
#             controller locally) with $ALERTMANAGER_CONFIG (default deploy/alertmanager/alertmanager.yml);
#             gossip clustering is off, so nothing listens beyond loopback
#   stop      stop the server this script started (by its PID file)
#   amtool    print the path of amtool (installing it first if needed)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
RUN="$CACHE/run"
LOGS="$CACHE/logs"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9094}"
ALERTMANAGER_CONFIG="${ALERTMANAGER_CONFIG:-$ROOT/deploy/alertmanager/alertmanager.yml}"
ALERTMANAGER_DATA="${ALERTMANAGER_DATA:-$CACHE/alertmanager-data-$ALERTMANAGER_PORT}"
PIDFILE="$RUN/alertmanager-$ALERTMANAGER_PORT.pid"
START_TIMEOUT_S="${ALERTMANAGER_START_TIMEOUT_S:-60}"

mkdir -p "$RUN" "$LOGS"

say() { printf '[alertmanager] %s\n' "$*" >&2; }
die() { printf '[alertmanager] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

find_bin() { # find_bin <name>: PATH first, then where Debian puts it
  command -v "$1" 2>/dev/null && return 0
  [[ -x "/usr/bin/$1" ]] && { echo "/usr/bin/$1"; return 0; }
  return 1
}

install() {
  if find_bin prometheus-alertmanager >/dev/null && find_bin amtool >/dev/null; then return 0; fi
  command -v apt-get >/dev/null || die "alertmanager is missing and apt-get is not available; install Alertmanager"
  local as_root=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "installing the prometheus-alertmanager package needs root (or sudo)"
    as_root=(sudo -n)
  fi
  say "installing Debian's prometheus-alertmanager package (first run only; log $LOGS/alertmanager-install.log)"
  {
    "${as_root[@]}" apt-get update -q
    # The package's own service must not start: we run our own server on loopback.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
      apt-get install -y -q --no-install-recommends prometheus-alertmanager
  } >"$LOGS/alertmanager-install.log" 2>&1 \
    || { tail -20 "$LOGS/alertmanager-install.log" >&2; die "apt-get install prometheus-alertmanager failed"; }
  find_bin amtool >/dev/null || die "the prometheus-alertmanager package did not provide amtool"
}

ready() { curl -fsS "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" >/dev/null 2>&1; }

start() {
  if pid_alive; then
    say "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$ALERTMANAGER_PORT"
    return 0
  fi
  if port_open "$ALERTMANAGER_PORT"; then
    die "something else listens on 127.0.0.1:$ALERTMANAGER_PORT; set ALERTMANAGER_PORT"
  fi
  install
  [[ -f "$ALERTMANAGER_CONFIG" ]] || die "no configuration at $ALERTMANAGER_CONFIG"
  "$(find_bin amtool)" check-config "$ALERTMANAGER_CONFIG" >"$LOGS/alertmanager-check.log" 2>&1 \
    || { cat "$LOGS/alertmanager-check.log" >&2; die "invalid configuration $ALERTMANAGER_CONFIG"; }
  mkdir -p "$ALERTMANAGER_DATA"
  nohup "$(find_bin prometheus-alertmanager)" \
    --config.file="$ALERTMANAGER_CONFIG" \
    --storage.path="$ALERTMANAGER_DATA" \
    --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
    --cluster.listen-address= \
    >"$LOGS/alertmanager-$ALERTMANAGER_PORT.log" 2>&1 &
  echo $! >"$PIDFILE"
  say "starting Alertmanager (pid $(cat "$PIDFILE"), config $ALERTMANAGER_CONFIG, log $LOGS/alertmanager-$ALERTMANAGER_PORT.log)"
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until ready; do
    if ! pid_alive; then tail -20 "$LOGS/alertmanager-$ALERTMANAGER_PORT.log" >&2; die "Alertmanager exited"; fi
    if ((SECONDS >= deadline)); then die "Alertmanager not ready within ${START_TIMEOUT_S}s"; fi
    sleep 0.3
  done
  say "Alertmanager is ready on http://127.0.0.1:$ALERTMANAGER_PORT"
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
  if pid_alive && ready; then echo "alertmanager up http://127.0.0.1:$ALERTMANAGER_PORT (pid $(cat "$PIDFILE"))"
  else echo "alertmanager down"; return 1; fi
}

case "${1:-status}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  amtool) install; find_bin amtool ;;
  config) echo "$ALERTMANAGER_CONFIG" ;;
  *) die "usage: $0 install|start|stop|status|amtool|config" ;;
esac
