#!/usr/bin/env bash
# `make down`: stop every service started by `make up` (SIGTERM by PID: graceful shutdown), then the infrastructure.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
RUN="$CACHE/run"
for s in fieldwork notify metrics feedback followup routing intake smtp-sink; do
  pidfile="$RUN/$s.pid"
  [[ -f "$pidfile" ]] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    echo "[down] stopped $s (pid $pid)"
  fi
  rm -f "$pidfile"
done
bash "$HERE/prometheus.sh" stop || true
bash "$HERE/alertmanager.sh" stop || true
bash "$HERE/infra.sh" stop
