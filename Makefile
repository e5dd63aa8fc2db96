# Two commands on a fresh machine:  `make demo`  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: venv demo test bench clean

$(BIN)/pelletsim: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(BIN)/pelletsim

venv: $(BIN)/pelletsim

demo: venv
	$(BIN)/pelletsim run scenarios/quickstart.toml -o out/quickstart --overwrite

test: venv
	$(BIN)/python -m pytest -q tests

bench: venv
	$(BIN)/python benchmarks/bench_fva.py --quick
	$(BIN)/python benchmarks/bench_dem.py --quick

clean:
	rm -rf $(VENV) out .pytest_cache
