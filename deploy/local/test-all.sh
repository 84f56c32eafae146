#!/usr/bin/env bash
# `make test`: every check and every test, on a 2-core machine, in two phases so that CPU goes where the
# long lane needs it:
#   1. side by side: the static checks (ruff, mypy strict, the contract docs check) with the unit and
#      service-level tests (shared/tests, services; two pytest processes), and, on the real servers
#      (Kafka and the MongoDB-wire server, started on a scratch data dir by with-infra.sh), the tests
#      that disturb the servers themselves and so run with no other server test (the chaos run
#      restarts Kafka and freezes the database; test_database_frozen freezes the database); those
#      mostly wait (for restarts, for SLA timers), which leaves the CPU to the unit tests;
#   2. then tests/integration and tests/security, spread over TEST_WORKERS pytest processes (pytest-
#      xdist, a whole file per worker, the longest first: tests/conftest.py; module-scoped stacks stay
#      whole; each test has its own topic prefix, databases and ports, so they do not meet), with the
#      machine to themselves (before, the unit tests ran beside them and the run took ~125 s longer).
# The side lane's output is printed after the server tests; any failure fails the whole.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
UV="${UV:-uv}"
LOGS=".test-logs"
mkdir -p "$LOGS"
ALONE=(tests/integration/test_chaos.py tests/integration/test_database_frozen.py)
# shellcheck disable=SC2086  # UV and PYTEST_ARGS are lists of words
(
  set -e
  $UV run ruff check .
  $UV run ruff format --check --quiet .
  $UV run mypy shared/src services/*/src
  $UV run python -m aftersales.shared.docs check
  $UV run pytest -q -p no:cacheprovider -n 2 shared/tests services ${PYTEST_ARGS:-} || (($? == 5))
) >"$LOGS/checks-and-unit.log" 2>&1 &
side=$!
trap 'kill "$side" 2>/dev/null' EXIT
export UV PYTEST_ARGS="${PYTEST_ARGS:-}" TEST_WORKERS="${TEST_WORKERS:-3}"
# shellcheck disable=SC2016  # expanded by the inner shell
bash deploy/local/with-infra.sh bash -c '
  ok() { (($1 == 0 || $1 == 5)); }  # 5: PYTEST_ARGS selected nothing
  echo "---- the tests that disturb the shared servers, alone (beside the static checks and unit tests)"
  $UV run pytest -q -p no:cacheprovider '"${ALONE[*]}"' $PYTEST_ARGS
  ok $? && alone=0 || alone=1
  echo "---- tests/integration and tests/security"
  $UV run pytest -q -p no:cacheprovider -n "$TEST_WORKERS" --dist loadfile --no-loadscope-reorder tests/integration tests/security \
    '"${ALONE[*]/#/--ignore=}"' $PYTEST_ARGS
  ok $? && shared=0 || shared=1
  ((shared != 0)) && echo "[test] tests/integration or tests/security FAILED"
  ((alone != 0)) && echo "[test] the chaos and frozen-database tests FAILED"
  exit $((shared != 0 || alone != 0))
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
