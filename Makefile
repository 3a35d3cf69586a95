# Every target creates and fills .venv when needed, so a fresh clone with a Python 3.12 or 3.13 works.
# The environment is installed exactly from uv.lock (uv itself is bootstrapped into .venv with pip);
# `make lock` refreshes the lock after a change to pyproject.toml.
VENV := .venv
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
# uv must use the interpreter of .venv, never download one.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: test demo lint typecheck docs lock check-lock clean-venv

DEMO_DIR ?= runs/demo

# .venv with uv in it; a .venv of another Python (an older checkout's 3.11) is replaced.
$(UV):
	@$(VENV)/bin/python -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null \
		|| { rm -rf $(VENV); py=$$(tools/find_python.sh) && echo "creating $(VENV) with $$py" && "$$py" -m venv $(VENV); }
	$(VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# Quiet: the list of installed packages is uv.lock; a failure still prints uv's error. Bytecode is
# compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on the development machines), every Python
# process would otherwise compile jax, flax, orbax... from source again, seconds per process. The recipe
# is in this file, so an existing .venv is synced again (with bytecode) when it changes.
$(STAMP): $(UV) pyproject.toml uv.lock Makefile
	@echo "installing the locked environment (uv.lock) into $(VENV)"
	@$(UV) sync --quiet --locked --inexact --extra dev --compile-bytecode --python $(VENV)/bin/python
	@touch $(STAMP)

# Two worker processes, one test file each at a time (a file's fixtures are built once): XLA compiles on
# one thread, so two processes use both cores of a small machine (three measured no faster: 725 s against
# 728 s from a fresh clone on 2026-12-06). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The paper's experiments on the bundled synthetic corpus (generated on first use), tiny networks, 5 seeds.
demo: $(STAMP)
	$(VENV)/bin/python -m pkd_jax.experiments.paper --config=configs/demo.py --workdir=$(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy pkd_jax

# The documentation site (mkdocs.yml) into site/; --strict turns broken links and stale API names into errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Re-resolve uv.lock from pyproject.toml (newest versions within its bounds), then install it.
lock: $(UV)
	$(UV) lock --python $(VENV)/bin/python
	$(UV) sync --locked --inexact --extra dev --python $(VENV)/bin/python
	touch $(STAMP)

# Fails when pyproject.toml and uv.lock disagree.
check-lock: $(UV)
	$(UV) lock --check --python $(VENV)/bin/python

clean-venv:
	rm -rf $(VENV)
