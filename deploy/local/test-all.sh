#!/usr/bin/env bash
# `make test`: every check and every test. The server tests (tests/integration, tests/security: real Kafka
# and the MongoDB-wire server, started on a scratch data dir by with-infra.sh) mostly wait on timers and
# I/O, so the CPU-bound parts run beside them on the second core: the static checks (ruff, mypy strict,
# the contract docs check) and the unit and service-level tests (shared/tests, services). Their output
# is printed after the server tests; any failure fails the whole.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
UV="${UV:-uv}"
LOGS=".test-logs"
mkdir -p "$LOGS"
# shellcheck disable=SC2086  # UV and PYTEST_ARGS are lists of words
(
  set -e
  $UV run ruff check .
  $UV run ruff format --check --quiet .
  $UV run mypy shared/src services/*/src
  $UV run python -m aftersales.shared.docs check
  $UV run pytest -q -p no:cacheprovider shared/tests services ${PYTEST_ARGS:-}
) >"$LOGS/checks-and-unit.log" 2>&1 &
side=$!
trap 'kill "$side" 2>/dev/null' EXIT
# shellcheck disable=SC2086
bash deploy/local/with-infra.sh $UV run pytest -q tests/integration tests/security ${PYTEST_ARGS:-}
servers=$?
wait "$side"
checks=$?
trap - EXIT
echo "---- static checks, unit and service-level tests ($LOGS/checks-and-unit.log)"
cat "$LOGS/checks-and-unit.log"
if ((checks != 0)); then echo "[test] static checks or unit tests FAILED (exit $checks)"; fi
if ((servers != 0)); then echo "[test] server tests FAILED (exit $servers)"; fi
exit $((checks != 0 || servers != 0))
