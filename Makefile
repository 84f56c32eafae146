# After-sales service platform: the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=

.PHONY: help sync up down status test lint format typecheck unit integration security bench chaos docs check-docs pre-commit clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# Bytecode is compiled at install time (dependencies and the workspace's own sources): the tests start
# ~125 service processes, and where PYTHONDONTWRITEBYTECODE is set (as on the CI machine) each one would
# otherwise compile every module it imports again, ~2 s of CPU per start on 2 cores.
sync: ## install the locked Python dependencies into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.5"
	@$(UV) sync --frozen --quiet --compile-bytecode
	@$(UV) run --no-sync python -m compileall -q -j 0 shared/src services/*/src >/dev/null

up: sync ## provision and start Kafka, the database and every service, seed demo data, show it working
	@bash deploy/local/up.sh

down: ## stop every service and the local infrastructure
	@bash deploy/local/down.sh

status: ## what runs where
	@bash deploy/local/infra.sh status || true
	@bash deploy/local/up.sh --status

test: sync ## everything CI runs: lint, type check, docs check, unit, integration and security tests
	@UV="$(UV)" PYTEST_ARGS="$(PYTEST_ARGS)" bash deploy/local/test-all.sh

unit: sync ## unit tests only (no servers)
	@$(UV) run pytest -q shared/tests services $(PYTEST_ARGS)

integration: sync ## integration tests on the real Kafka broker and MongoDB-wire server
	@bash deploy/local/with-infra.sh $(UV) run pytest -q tests/integration $(PYTEST_ARGS)

security: sync ## the security suite (authorization, personal data, hostile input, Kafka SASL, schemathesis)
	@bash deploy/local/with-infra.sh $(UV) run pytest -q tests/security $(PYTEST_ARGS)

lint: sync ## ruff lint and format check
	@$(UV) run ruff check .
	@$(UV) run ruff format --check --quiet .

format: sync ## apply ruff formatting and safe fixes
	@$(UV) run ruff check --fix --quiet . || true
	@$(UV) run ruff format --quiet .

typecheck: sync ## mypy (strict) over shared and every service
	@$(UV) run mypy shared/src services/*/src

docs: sync ## regenerate the event catalogue, JSON Schemas, AsyncAPI and OpenAPI references in docs/
	@$(UV) run python -m aftersales.shared.docs write

check-docs: sync ## fail when the committed contract docs are stale or a schema changed incompatibly
	@$(UV) run python -m aftersales.shared.docs check

pre-commit: sync ## install the git pre-commit hook (ruff lint + format, mypy; see .pre-commit-config.yaml)
	@$(UV) run pre-commit install

bench: sync ## benchmarks that print figures (needs the local infrastructure)
	@bash deploy/local/with-infra.sh $(UV) run python -m benchmarks

chaos: sync ## the chaos run: 20,000 tickets and IoT storms while services are SIGKILLed, Kafka restarts, the DB freezes
	@bash deploy/local/with-infra.sh $(UV) run python tests/integration/chaos.py $(CHAOS_ARGS)

clean: ## remove caches and test logs (keeps the provisioned servers in the cache dir)
	rm -rf .mypy_cache .ruff_cache .test-logs .bench
