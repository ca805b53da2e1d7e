# Every target sets itself up: a fresh machine needs only python3 and make.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: demo up test unit lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/disburse demo

up: $(VENV)/.installed
	$(BIN)/disburse up

# Four pytest-xdist processes, each with its own PostgreSQL and Redis on free ports (the
# integration tests mostly wait on timers, so four beat three on two cores).
# Work stealing: the chaos test (collected first) holds one process for its minutes of
# timers while the others run the unit tests, then take the integration tests from its
# queue. One run, so one closing "N passed" line and one exit status for everything.
test: lint
	$(BIN)/pytest -n 4 --dist worksteal --durations=20

unit: $(VENV)/.installed
	$(BIN)/pytest -m "not integration and not chaos" -n 2

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
