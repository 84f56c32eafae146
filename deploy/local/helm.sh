#!/usr/bin/env bash
# Print the path of a helm binary, building the pinned version with Go into the cache dir on first use
# (no prebuilt download is possible here; the Go module proxy is).
set -euo pipefail
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
HELM_VERSION="${HELM_VERSION:-v3.17.3}"
BIN="$CACHE/helm-$HELM_VERSION/helm"
if [[ ! -x "$BIN" ]]; then
  command -v go >/dev/null || { echo "go is required to build helm $HELM_VERSION" >&2; exit 1; }
  mkdir -p "$CACHE/logs" "$(dirname "$BIN")"
  echo "[helm] building helm $HELM_VERSION with Go into $BIN (first run only)" >&2
  GOFLAGS=-mod=mod GOBIN="$(dirname "$BIN")" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    >"$CACHE/logs/helm-build.log" 2>&1 || { tail -20 "$CACHE/logs/helm-build.log" >&2; exit 1; }
fi
echo "$BIN"
