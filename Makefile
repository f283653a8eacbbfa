# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.splitsde-installed

.PHONY: demo test test-fast lint docs bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,docs,all]"
	touch $(STAMP)

demo: venv
	$(VENV)/bin/splitsde demo

test: venv
	$(VENV)/bin/ruff check .
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup -q
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .site

test-fast: venv
	$(PY) -m pytest -n 2 -q -m "not slow"

lint: venv
	$(VENV)/bin/ruff check .

docs: venv
	$(VENV)/bin/mkdocs build --strict --site-dir .site

bench: venv
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) .site .pytest_cache .ruff_cache
