# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: FORCE install demo broker test test-kafka41 lint unit proto bench chaos chaos-cluster clean

# The editable install is "strict": a tree of links under build/ that type-checkers read as the
# `kes` package. A file added or removed under the package folders needs a new link tree, so the
# install also depends on the list of those files (rewritten only when it changes).
PACKAGE_FILES := $(shell find streams topology stores schemas examples -type f \
	-not -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort)
FILE_LIST := $(VENV)/.package-files

$(FILE_LIST): FORCE
	@mkdir -p $(VENV)
	@echo "$(PACKAGE_FILES)" | cmp -s - $@ || echo "$(PACKAGE_FILES)" > $@

$(STAMP): pyproject.toml setup.py $(FILE_LIST)
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]" --config-settings editable_mode=strict
	touch $(STAMP)

FORCE:

install: $(STAMP)

## Run the demo: a local broker, the bank example's topics, a worker and a stream of commands.
demo: install
	$(BIN)/kes demo

## A local Kafka broker in the foreground (Ctrl-C stops it).
broker: install
	$(BIN)/kes dev broker

## Lint, type-check, then every test (unit, property, integration against a real broker).
test: install lint
	$(BIN)/pytest -q -m "not long"

## Every test against local Kafka 4.1.2 brokers (Kafka 4 removed old protocol versions; the
## worker's KES_GROUP_PROTOCOL=consumer needs 4.0+), never against KAFKA_BOOTSTRAP_SERVERS.
test-kafka41: install
	env -u KAFKA_BOOTSTRAP_SERVERS -u KES_CLUSTER_BOOTSTRAP_SERVERS KES_BROKER_VERSION=4.1.2 \
		$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Fast tests only: no broker.
unit: install
	$(BIN)/pytest -q tests/unit tests/property

## Benchmarks (~15 min, own broker): kes against the ceiling loop, Quix Streams, eventsourcing and
## Kafka's producer perf tool; rewrites BENCHMARKS.md. Not part of `make test`.
bench: install
	$(BIN)/python -m bench.run

## Faults under load (~5 min, own broker): 100k commands, 20 SIGKILLs, 3 rebalances, a broker
## restart, then every invariant checked; then 10,000 fuzzed commands and 10,000 commands each
## retried once across a worker SIGKILL; then the PostgreSQL balances table through 20,000
## commands, 6 projection SIGKILLs and a PostgreSQL restart; then 5,000 commands with a pause to
## migrate to 24 partitions (`kes topics migrate`) and go on; then every test marked `long`
## (scenarios of a minute or more that `make test` leaves out). Not part of `make test`.
## `make chaos SNAPSHOT_EVERY=10` runs every worker of it with KES_SNAPSHOT_EVERY=10.
SNAPSHOT_EVERY ?= 1
chaos: install
	$(BIN)/python -m bench.chaos --snapshot-every $(SNAPSHOT_EVERY) --report chaos-report.json
	KES_SNAPSHOT_EVERY=$(SNAPSHOT_EVERY) KES_FUZZ_COMMANDS=10000 KES_RETRY_COMMANDS=10000 \
		$(BIN)/pytest -q \
		tests/integration/test_hostile_input.py tests/integration/test_retries.py
	KES_TRANSFERS=2000 KES_TRANSFER_ACCOUNTS=200 $(BIN)/pytest -q \
		tests/integration/test_processes.py::test_transfers_end_exactly_once_through_sigkills
	KES_PG_PROJECTION_COMMANDS=20000 KES_PG_PROJECTION_KILLS=6 KES_MIGRATE_COMMANDS=5000 \
		$(BIN)/pytest -q tests/integration/test_postgres_projection.py \
		tests/integration/test_migrate.py
	$(BIN)/pytest -q -m long

## Broker faults under load (~15 min, its own three local brokers, topics with 3 replicas and
## min.insync.replicas 2): 100k commands while the broker leading the most command partitions and
## a worker's transaction coordinator are SIGKILLed, all three restart one at a time and two are
## stopped for 20 s; each fault's recovery time, then every invariant of `make chaos`.
## Not part of `make test`.
chaos-cluster: install
	KES_CLUSTER_CHAOS=1 $(BIN)/pytest -q tests/integration/test_cluster_chaos.py
	$(BIN)/python -m bench.chaos --cluster --report chaos-cluster-report.json

## Regenerate the protobuf code in schemas/ from the .proto files.
proto: install
	$(BIN)/python -m kes.schemas.generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
