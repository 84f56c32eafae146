#!/usr/bin/env bash
# Print the path of crdcheck (deploy/local/crdcheck: strict offline validation of ServiceMonitor and
# PrometheusRule against the Prometheus Operator's Go types), building it with Go into the cache dir when
# its sources change (the Go module proxy provides the operator's API module).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/crdcheck"
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)"
BIN="$CACHE/crdcheck-$HASH/crdcheck"
if [[ ! -x "$BIN" ]]; then
  command -v go >/dev/null || { echo "go is required to build crdcheck" >&2; exit 1; }
  mkdir -p "$CACHE/logs" "$(dirname "$BIN")"
  echo "[crdcheck] building with Go into $BIN (first run only)" >&2
  (cd "$SRC" && go build -trimpath -o "$BIN.tmp" .) >"$CACHE/logs/crdcheck-build.log" 2>&1 \
    || { tail -20 "$CACHE/logs/crdcheck-build.log" >&2; exit 1; }
  mv "$BIN.tmp" "$BIN"
fi
echo "$BIN"
