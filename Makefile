# Cartage: `make run` starts the whole suite, `make test` runs every test. Both install what they
# need first (a virtualenv in .venv, the buf CLI in .tools), so a fresh clone needs only Python
# 3.11 and npm.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
PYTEST_ARGS ?=

.PHONY: install proto lint test test-faults run bench bench-documents bench-orders bench-events bench-gateway bench-envoy-alone bench-routing clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[dev]'
	touch $(STAMP)

$(BUF):
	npm install --silent --prefix .tools --no-audit --no-fund @bufbuild/buf@$(BUF_VERSION)

install: $(STAMP) $(BUF)

# Generated code (cartage/) and the descriptor set (build/) are rebuilt from proto/ every time,
# so they can never drift from the contracts.
proto: $(STAMP)
	$(BIN)/python proto/generate.py

lint: proto $(BUF)
	$(BUF) lint build/cartage.binpb --config proto/buf.yaml
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The fault tests alone (make test runs them too): kill -9 of every process, NATS and Postgres
# crashes, under load. FAULT_ROUNDS=N kills each process N times (default 5).
test-faults: proto
	$(BIN)/pytest tests/integration/test_faults_kill.py tests/integration/test_faults_nats.py \
		tests/integration/test_faults_postgres.py tests/integration/test_durability.py

run: proto
	$(BIN)/python -m services.stack

bench: bench-orders bench-events bench-gateway bench-envoy-alone bench-routing

bench-orders: proto
	$(BIN)/python -m bench.orders

# Document service: BOLs/s, labels/s in a 500-label operation, POD capture p99 (~1 minute).
bench-documents: proto
	$(BIN)/python -m bench.documents

# Outbox relay, consumers and the lag under batch ingestion against bare JetStream (~3 minutes).
bench-events: proto
	$(BIN)/python -m bench.events

# The REST phases use wrk, from Debian's package of that name.
bench-gateway: proto
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.gateway

# Envoy alone on the generated config, in front of a stand-in backend (wrk too).
bench-envoy-alone: proto
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.envoy_alone

INSTANCES ?=
TIME_LIMIT ?= 10
bench-routing: proto
	$(BIN)/python -m bench.routing_bench $(if $(INSTANCES),--instances $(INSTANCES) --time-limit $(TIME_LIMIT))

clean:
	rm -rf $(VENV) .tools build cartage
