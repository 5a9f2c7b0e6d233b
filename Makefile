# Two commands do all the set-up on a fresh machine:
#   make demo   trains a small CNN on Fashion-MNIST, attacks it, writes report/
#   make test   runs the test suite
# Both create .venv and install what they need. torch is pinned to the CPU wheel first:
# any looser requirement would make pip download a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.advlab-installed
TORCH ?= torch==2.13.0
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-long data bench clean reproduce

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist where apt is available; otherwise the demo
# says so and falls back to scikit-learn's digits.
data:
	@if [ -d $(FMNIST_DIR) ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
	  echo "note: could not install dataset-fashion-mnist; the demo will use the digits set"; \
	else echo "note: no apt-get here; the demo will use the digits set"; fi

demo: $(STAMP) data
	$(BIN)/advlab demo --out report

# ADVLAB_REQUIRE_PEERS: the parity tests against torchattacks fail, not skip, if it is missing
test: $(STAMP)
	ADVLAB_REQUIRE_PEERS=1 $(BIN)/python -m pytest -q

# the seeds' claims on Fashion-MNIST, each judged from the store (see README "Reproducing the seeds");
# resumable: the same command again reuses every cell already in reproduce.db. On 2 cores or more,
# two worker processes of one torch thread each share the cells out (REPRODUCE_WORKERS=1: one process)
REPRODUCE_WORKERS ?=
reproduce: $(STAMP) data
	$(BIN)/advlab reproduce --quick $(if $(REPRODUCE_WORKERS),--workers $(REPRODUCE_WORKERS)) --store reproduce.db --out reproduce

# ten times the property-test cases of `make test` (about 100,000 over the registry; an hour or so)
# and five random kills per command instead of one
test-long: $(STAMP)
	ADVLAB_REQUIRE_PEERS=1 HYPOTHESIS_PROFILE=long ADVLAB_FAULT_ROUNDS=5 $(BIN)/python -m pytest -q tests/attacks \
	  tests/test_fault_injection.py

# --- benchmarks ---------------------------------------------------------------------------------
# `make bench`: builds .venv-bench once (torch==2.13.0 CPU first, then advlab editable, ART,
# Foolbox + EagerPy, torchattacks --no-deps; see bench/setup.sh), then times L∞ PGD against the
# peers and writes bench/results/pgd.md and pgd.json. About 10-15 minutes on 2 cores the first
# time (setup ~1 min, training the cached model 2-4 min, timing ~8 min), ~9 minutes after.
# BENCH_ARGS passes options through, e.g. `make bench BENCH_ARGS="--budget 120"`.
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=

.PHONY: bench-venv
bench: bench-venv
	$(BENCH_VENV)/bin/python bench/bench_pgd.py $(BENCH_ARGS)

bench-venv:
	VENV_BENCH=$(CURDIR)/$(BENCH_VENV) bash bench/setup.sh

clean:
	rm -rf $(VENV) $(BENCH_VENV) report runs reproduce reproduce.db reproduce.db.files .pytest_cache .hypothesis
