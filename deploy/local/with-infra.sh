#!/usr/bin/env bash
# Run a command with the local Kafka broker and MongoDB-wire server up. Servers this script started are
# stopped again afterwards (by PID); servers that were already running are left running.
#
# Servers it starts keep their data in a scratch dir that is removed afterwards (INFRA_KEEP_DATA=1 keeps
# the cache's data dirs instead): a test run creates thousands of topics and databases, and a broker that
# replays every earlier run's topics at start-up runs out of heap.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
started=()
if ! bash "$HERE/infra.sh" status kafka >/dev/null 2>&1; then started+=(kafka); fi
if ! bash "$HERE/infra.sh" status db >/dev/null 2>&1; then started+=(db); fi
scratch=""
if ((${#started[@]} > 0)) && [[ -z "${INFRA_KEEP_DATA:-}" && -z "${AFTERSALES_DATA_DIR:-}" ]]; then
  mkdir -p "$CACHE"
  if ((${#started[@]} == 2)); then # no server runs, so none uses a scratch dir a killed run left
    for old in "$CACHE"/scratch-*; do
      [[ -d "$old" ]] && ! kill -0 "${old##*-}" 2>/dev/null && rm -rf "$old"
    done
  fi
  scratch="$CACHE/scratch-$$"
  export AFTERSALES_DATA_DIR="$scratch"
fi
cleanup() {
  for component in "${started[@]}"; do bash "$HERE/infra.sh" stop "$component" || true; done
  if [[ -n "$scratch" ]]; then rm -rf "$scratch"; fi
}
trap cleanup EXIT
bash "$HERE/infra.sh" start || exit 1
"$@"
