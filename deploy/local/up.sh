#!/usr/bin/env bash
# `make up`: start Kafka and the database (deploy/local/infra.sh), then every service that exists as a real
# process on its default port, seed the demo data and show it working. Idempotent: running services are kept.
#   deploy/local/up.sh            start everything and run the demo
#   deploy/local/up.sh --status   print what runs where
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
RUN="$CACHE/run"; LOGS="$CACHE/logs"
PY="$ROOT/.venv/bin/python"   # `make up` ran `uv sync --frozen` first
declare -A PORTS=([intake]=8001 [routing]=8002 [followup]=8003 [feedback]=8004 [metrics]=8005 [notify]=8006 [fieldwork]=8007)
ORDER=(intake routing followup feedback metrics notify fieldwork)
SMTP_SINK_PORT="${SMTP_SINK_PORT:-1025}"; MAILDIR="$CACHE/mail"   # notify's mails land here (a Maildir)
mkdir -p "$RUN" "$LOGS"
cd "$ROOT"

available() { [[ -f "$ROOT/services/$1/src/aftersales/$1/app.py" ]]; }
alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

status() {
  printf '%-10s %-8s %-28s %s\n' SERVICE STATE URL LOG
  for s in "${ORDER[@]}"; do
    available "$s" || continue
    local port="${PORTS[$s]}" state=down
    alive "$s" && state=up
    printf '%-10s %-8s %-28s %s\n' "$s" "$state" "http://127.0.0.1:$port" "$LOGS/$s.log"
  done
}

if [[ "${1:-}" == "--status" ]]; then status; exit 0; fi

bash "$HERE/infra.sh" start
eval "$(bash "$HERE/infra.sh" env | sed 's/^/export /')"
# A local SMTP sink (aiosmtpd, a dev dependency) for notify: every mail it sends is kept in $MAILDIR.
if ! alive smtp-sink; then
  mkdir -p "$MAILDIR/new" "$MAILDIR/cur" "$MAILDIR/tmp"   # a Maildir: aiosmtpd creates its subfolders only with the folder
  nohup "$PY" -m aiosmtpd -n -l "127.0.0.1:$SMTP_SINK_PORT" -c aiosmtpd.handlers.Mailbox "$MAILDIR" \
    >>"$LOGS/smtp-sink.log" 2>&1 </dev/null &
  echo $! >"$RUN/smtp-sink.pid"
  echo "[up] started the SMTP sink on 127.0.0.1:$SMTP_SINK_PORT (pid $(cat "$RUN/smtp-sink.pid"), mails in $MAILDIR/new)"
fi
for s in "${ORDER[@]}"; do
  available "$s" || continue
  if alive "$s"; then echo "[up] $s already running (pid $(cat "$RUN/$s.pid"))"; continue; fi
  # a simple command in the background, so $! is the service's own PID (make down stops it by that)
  HTTP_PORT="${PORTS[$s]}" ENVIRONMENT="${ENVIRONMENT:-development}" \
    SMTP_HOST="${SMTP_HOST:-127.0.0.1}" SMTP_PORT="${SMTP_PORT:-$SMTP_SINK_PORT}" \
    nohup "$PY" -m "aftersales.$s" >>"$LOGS/$s.log" 2>&1 </dev/null &
  echo $! >"$RUN/$s.pid"
  echo "[up] started $s on http://127.0.0.1:${PORTS[$s]} (pid $(cat "$RUN/$s.pid"), log $LOGS/$s.log)"
done
(cd "$ROOT" && "$PY" "$HERE/demo.py")
if bash "$HERE/alertmanager.sh" start >/dev/null 2>"$LOGS/alertmanager-start.err"; then
  ALERTS="http://127.0.0.1:${ALERTMANAGER_PORT:-9094} (receives the alerts of Prometheus)"
else
  ALERTS="not started: $(tail -1 "$LOGS/alertmanager-start.err")"
fi
if bash "$HERE/prometheus.sh" start >/dev/null 2>"$LOGS/prometheus-start.err"; then
  PROM="http://127.0.0.1:${PROMETHEUS_PORT:-9090} (scraping 8001-8007, alert rules loaded)"
else
  PROM="not started: $(tail -1 "$LOGS/prometheus-start.err")"
fi
echo
status
cat <<EOT

Kafka:   127.0.0.1:9092      MongoDB wire: ${MONGODB_URI}
Prometheus: ${PROM}
Alertmanager: ${ALERTS}
OpenAPI: http://127.0.0.1:8001/docs (and 8002..8007)     Dev token: Authorization: Bearer dev-admin-token
Dev tokens by role: dev-supervisor-token (reassign, 改派), dev-technician-token (tech-demo: GET /v1/pool, claim, 抢单)
Mails sent by notify (SMTP sink 127.0.0.1:${SMTP_SINK_PORT}): ${MAILDIR}/new (one file per mail)
Stop everything with: make down
EOT
