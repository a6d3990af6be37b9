# Two commands on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in $(VENV) and install what they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.irgrad-installed

.PHONY: test demo bench install clean gpu-check onnx-conformance

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,examples,viz,nvrtc]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(PY) examples/digits_mlp.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

bench: $(STAMP)
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/onnx_bench.py

# Every "node" case of onnx's backend test suite through irgrad.onnx.backend; writes the
# score and the per-op table to docs/onnx.md (about ten minutes on two cores).
onnx-conformance: $(STAMP)
	$(PY) -m irgrad.onnx.conformance --md docs/onnx.md --json bench-results/onnx-conformance.json

# On a GPU machine (no network; python3 with torch): pycuda and missing test deps from the
# carried .gpu-wheels, cubins from .gpu-cache (both made here by
# `$(PY) benchmarks/gpu_check.py --prepare`), then `pytest -m gpu` and the W1-W4 benchmark
# against PyTorch; results (gpu-tests.txt, cuda-bench.md/.json) go to $$OUT or gpu-results/.
# Without a GPU it stops at once and says why.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out "$(if $(OUT),$(OUT),gpu-results)"
