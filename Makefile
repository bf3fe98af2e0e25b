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

.PHONY: install proto chart helm lint test test-faults fuzz run bench bench-documents bench-orders bench-events bench-gateway bench-envoy-alone bench-routing bench-carrier bench-tracking clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# A lenient editable install maps the top-level packages that exist now: the generated
	# `cartage` package (make proto) gets its directory first, so it is mapped too.
	mkdir -p cartage && touch cartage/__init__.py
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=lenient -e '.[dev]'
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
	$(BIN)/hadolint deploy/Containerfile

# The Helm chart's generated files (deploy/k8s/files: Envoy's config from the contracts and the
# descriptor set it reads), then helm (from PyPI, cached in .tools/helm) lints the chart.
chart: proto
	$(BIN)/python -m deploy.chart check-values
	$(BIN)/python -m deploy.chart build
	$$($(BIN)/python -m deploy.helm) lint --strict deploy/k8s
	$$($(BIN)/python -m deploy.helm) lint --strict deploy/k8s -f deploy/k8s/values-prod.yaml

helm: $(STAMP)
	$(BIN)/python -m deploy.helm

test: lint chart
	$(BIN)/pytest $(PYTEST_ARGS)

# The fault tests alone (make test runs them too): kill -9 of every process, NATS and Postgres
# crashes (for the order service's and routing's consumers), under load. FAULT_ROUNDS=N kills
# each process N times (default 5).
test-faults: proto
	$(BIN)/pytest tests/integration/test_faults_kill.py tests/integration/test_faults_nats.py \
		tests/integration/test_faults_postgres.py tests/integration/test_faults_routing.py \
		tests/integration/test_durability.py

# The fuzzers with a longer budget than make test's: schemathesis against the gateway's
# /openapi.json (FUZZ_EXAMPLES per operation) and random and mutated protobuf bytes on every
# gRPC method (FUZZ_CASES per method). CARTAGE_FUZZ_SEED=N for other cases.
FUZZ_EXAMPLES ?= 200
FUZZ_CASES ?= 400
fuzz: proto
	CARTAGE_SCHEMATHESIS_EXAMPLES=$(FUZZ_EXAMPLES) CARTAGE_FUZZ_CASES=$(FUZZ_CASES) $(BIN)/pytest \
		tests/e2e/test_gateway_schemathesis.py tests/integration/test_fuzz_grpc.py

run: proto
	$(BIN)/python -m services.stack

bench: bench-orders bench-events bench-gateway bench-envoy-alone bench-routing bench-carrier bench-tracking bench-documents

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

# Positions/s over 100 client streams and batch REST through Envoy with 10,000 geofences, and
# the p99 from a position to its geofence event (~1 minute).
bench-tracking: proto
	$(BIN)/python -m bench.tracking

INSTANCES ?=
TIME_LIMIT ?= 10
bench-routing: proto
	$(BIN)/python -m bench.routing_bench $(if $(INSTANCES),--instances $(INSTANCES) --time-limit $(TIME_LIMIT))

# QuoteRates over gRPC, 200 carriers x 25 lanes, 32 callers, beside one raw asyncpg query.
bench-carrier: proto
	$(BIN)/python -m bench.carrier

clean:
	rm -rf $(VENV) .tools build cartage
