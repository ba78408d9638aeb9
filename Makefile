# make demo  — install what is missing, then record on simulated hardware with a live view
# make test  — install what is missing, lint, then run the whole suite
# make test-loaded — the same suite beside a CPU and disk load
# make bench — performance figures against ffmpeg/openssl baselines (docs/PERFORMANCE.md)
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.liuhen-installed
DEMO_DATA ?= build/demo-data
DEMO_SECONDS ?=
PYTEST_ARGS ?=

.PHONY: demo test test-loaded lint deps bench clean docs

deps: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh
	touch $@

DEMO_KEYS := build/demo-keys

$(DEMO_KEYS)/device.pem: | deps
	@mkdir -p $(DEMO_KEYS)
	[ -d $(DEMO_KEYS)/ca ] || $(BIN)/liuhen keys dev-ca $(DEMO_KEYS)/ca
	[ -f $(DEMO_KEYS)/device.key ] || $(BIN)/liuhen keys init --config examples/sim.toml
	$(BIN)/liuhen keys cert --config examples/sim.toml --ca $(DEMO_KEYS)/ca

$(DEMO_KEYS)/agency.pub.pem: | deps
	$(BIN)/liuhen keys agency-key $(DEMO_KEYS)

demo: deps $(DEMO_KEYS)/device.pem $(DEMO_KEYS)/agency.pub.pem
	@echo "Recording on simulated hardware into $(DEMO_DATA). Ctrl-C seals the segment and stops."
	@echo "In another terminal: $(BIN)/liuhen ctl --data $(DEMO_DATA) status | record stop | record start"
	$(if $(DEMO_SECONDS),timeout -s INT $(DEMO_SECONDS)) $(BIN)/liuhen run --config examples/sim.toml --data $(DEMO_DATA) --live \
		|| [ $$? -eq 124 ]

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

# The suite beside a CPU hog per core and a disk hog that writes and fsyncs: tests must
# wait on events, not on an idle machine's timing (docs/PERFORMANCE.md).
test-loaded: lint
	$(BIN)/python -m bench.load -- $(BIN)/python -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

bench: deps
	$(BIN)/python -m pip install -q -e ".[bench]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m bench $(BENCH_ARGS)

docs: deps
	$(BIN)/liuhen config doc > docs/CONFIG.md

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
