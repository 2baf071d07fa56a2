# The two README commands: `make demo` and `make test`. Both create .venv when missing.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= build/demo
# pytest workers are not used: the suite is sized for 2 cores in one process.
PYTEST ?= $(BIN)/python -m pytest

.PHONY: install demo test test-slow test-container lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dask]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recsys datasets split --dataset ml-100k --method temporal --test-frac 0.2 --out $(DEMO)/data
	$(BIN)/recsys train --interactions $(DEMO)/data/train.parquet --items $(DEMO)/data/items.parquet \
		--users $(DEMO)/data/users.parquet --item-relations $(DEMO)/data/item_relations.parquet \
		--out $(DEMO)/artifact
	$(BIN)/recsys evaluate --artifact $(DEMO)/artifact --test $(DEMO)/data/test.parquet \
		--k 10,20 --json $(DEMO)/metrics.json
	$(BIN)/recsys recommend --artifact $(DEMO)/artifact --all-users --k 10 \
		--out $(DEMO)/recommendations.parquet

lint: $(STAMP)
	$(BIN)/ruff check recsys tests benchmarks
	$(BIN)/ruff format --check recsys tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format recsys tests benchmarks
	$(BIN)/ruff check --fix recsys tests benchmarks

test: $(STAMP) lint
	$(PYTEST) -m "not slow and not gpu and not container" tests

test-slow: $(STAMP)
	$(PYTEST) -m "slow or gpu" tests

# Builds the Dockerfile with podman on a Debian base made by mmdebstrap (no registry needed) and
# runs the image; installs podman, runc and mmdebstrap with apt-get when missing. Image size and
# time-to-ready go to build/container-test.json.
test-container: $(STAMP)
	$(PYTEST) -m container -s tests/container

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
