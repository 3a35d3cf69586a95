# Every target creates and fills .venv when needed, so a fresh clone with only Python 3.11+ works.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test demo lint format clean-venv

DEMO_DIR ?= runs/demo

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Two worker processes, one test file each at a time (a file's fixtures are built once): XLA compiles on
# one thread, so two processes use both cores of a small machine. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The paper's experiments on the bundled synthetic corpus (generated on first use), tiny networks, 5 seeds.
demo: $(STAMP)
	$(VENV)/bin/python -m pkd_jax.experiments.paper --config=configs/demo.py --workdir=$(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
