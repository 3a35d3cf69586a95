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

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# The paper's experiments on the bundled synthetic corpus (generated on first use), tiny networks, 3 seeds.
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
