#!/usr/bin/env bash
# Run a command with the local Kafka broker and MongoDB-wire server up. Servers this script started are
# stopped again afterwards (by PID); servers that were already running are left running.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
started=()
if ! bash "$HERE/infra.sh" status kafka >/dev/null 2>&1; then started+=(kafka); fi
if ! bash "$HERE/infra.sh" status db >/dev/null 2>&1; then started+=(db); fi
cleanup() {
  for component in "${started[@]}"; do bash "$HERE/infra.sh" stop "$component" || true; done
}
trap cleanup EXIT
bash "$HERE/infra.sh" start || exit 1
"$@"
