# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration test-e2e bench lint venv clean

venv: $(STAMP)

# Reinstall when the pinned set changes; uv is pinned in constraints.txt like everything else.
# Bytecode is compiled once here: every Airflow task, `airflow dags test` and sandbox is a fresh
# interpreter, and where PYTHONDONTWRITEBYTECODE is set each would otherwise recompile Airflow and
# pandas on import (seconds per process). An optimisation only, hence the `|| true`.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$$(sed -n 's/^uv==//p' constraints.txt)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt -c constraints.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib >/dev/null || true
	touch $(STAMP)

demo: venv
	$(BIN)/gradesync demo

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/python -m pytest

test-unit: venv
	$(BIN)/python -m pytest tests/unit

test-integration: venv
	$(BIN)/python -m pytest tests/integration

test-e2e: venv
	$(BIN)/python -m pytest tests/e2e

bench: venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf var .pytest_cache .ruff_cache
