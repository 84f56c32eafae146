#!/usr/bin/env bash
# `make test`: every check and every test, on a 2-core machine, in lanes that mostly wait on timers and
# I/O rather than on the CPU:
#   - beside everything: the static checks (ruff, mypy strict, the contract docs check) and the unit and
#     service-level tests (shared/tests, services);
#   - on the real servers (Kafka and the MongoDB-wire server, started on a scratch data dir by
#     with-infra.sh): tests/integration and, at the same time, tests/security (each test has its own
#     topic prefix, databases and ports);
#   - then, alone, the tests that disturb the shared servers themselves (the chaos run restarts Kafka
#     and freezes the database; test_foundation freezes the database).
# The side lanes' output is printed after the main one; any failure fails the whole.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
UV="${UV:-uv}"
LOGS=".test-logs"
mkdir -p "$LOGS"
ALONE=(tests/integration/test_chaos.py tests/integration/test_foundation.py)
# shellcheck disable=SC2086  # UV and PYTEST_ARGS are lists of words
(
  set -e
  $UV run ruff check .
  $UV run ruff format --check --quiet .
  $UV run mypy shared/src services/*/src
  $UV run python -m aftersales.shared.docs check
  $UV run pytest -q -p no:cacheprovider shared/tests services ${PYTEST_ARGS:-} || (($? == 5))
) >"$LOGS/checks-and-unit.log" 2>&1 &
side=$!
trap 'kill "$side" 2>/dev/null' EXIT
export UV PYTEST_ARGS="${PYTEST_ARGS:-}" LOGS
# shellcheck disable=SC2016  # expanded by the inner shell
bash deploy/local/with-infra.sh bash -c '
  $UV run pytest -q -p no:cacheprovider tests/security $PYTEST_ARGS >"$LOGS/security.log" 2>&1 &
  security=$!
  ok() { (($1 == 0 || $1 == 5)); }  # 5: PYTEST_ARGS selected nothing in this lane
  $UV run pytest -q -p no:cacheprovider tests/integration '"${ALONE[*]/#/--ignore=}"' $PYTEST_ARGS
  ok $? && integration=0 || integration=1
  wait $security; ok $? && security=0 || security=1
  echo "---- tests/security (beside tests/integration; $LOGS/security.log)"
  cat "$LOGS/security.log"
  echo "---- the tests that disturb the shared servers, alone"
  $UV run pytest -q -p no:cacheprovider '"${ALONE[*]}"' $PYTEST_ARGS
  ok $? && alone=0 || alone=1
  ((integration != 0)) && echo "[test] tests/integration FAILED"
  ((security != 0)) && echo "[test] tests/security FAILED"
  ((alone != 0)) && echo "[test] the chaos and foundation tests FAILED"
  exit $((integration != 0 || security != 0 || alone != 0))
'
servers=$?
wait "$side"
checks=$?
trap - EXIT
echo "---- static checks, unit and service-level tests ($LOGS/checks-and-unit.log)"
cat "$LOGS/checks-and-unit.log"
if ((checks != 0)); then echo "[test] static checks or unit tests FAILED (exit $checks)"; fi
if ((servers != 0)); then echo "[test] server tests FAILED (exit $servers)"; fi
exit $((checks != 0 || servers != 0))
