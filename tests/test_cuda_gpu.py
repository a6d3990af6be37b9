"""The CUDA backend on a real GPU (`make gpu-check` runs these with `pytest -m gpu`).

Skipped, quickly, wherever no GPU is usable (the loader says why). What they check:
- W1-W4 training steps on the GPU agree with the CPU backend within 1e-4 relative, loss
  by loss, over 10 steps, and so do the parameters after them;
- the step is replayed as a CUDA graph where the driver offers graphs;
- every kernel kind of test_cuda.py's programs gives the interpreter's results;
- the cuda-python device (the fallback loader) runs a step too, when installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import irgrad as ig
import workloads
from irgrad.backends.cuda import runtime
from irgrad.errors import BackendUnavailable
from irgrad.pytree import flatten
from irgrad.ir.interpreter import run_function

from strategies import random_inputs


def _device_or_reason():
    try:
        return runtime.get_device(), None
    except BackendUnavailable as e:
        return None, str(e)


DEVICE, WHY = _device_or_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE is None, reason=f"no GPU: {WHY}")]
STEPS = 10
RTOL = 1e-4


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("name", workloads.ALL)
def test_workload_steps_agree_with_cpu_backend(name):
    w = workloads.get(name)
    batches = w.batches(STEPS)
    cpu = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend="cpu",
                          **w.step_options())
    gpu = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend="cuda",
                          **w.step_options())
    for i, b in enumerate(batches):
        lc, lg = cpu(*b), gpu(*b)
        assert abs(lg - lc) <= RTOL * abs(lc), f"{name} step {i}: cuda {lg} cpu {lc}"
    for pc, pg in zip(flatten(cpu.params)[0], flatten(gpu.params)[0]):
        assert _rel(pg, pc) <= RTOL, f"{name}: parameters differ by {_rel(pg, pc):.2e}"
    if DEVICE.supports_graphs:
        assert gpu._graph is not None, gpu.graph_error


def test_kernel_kinds_on_gpu():
    from test_cuda import PROGRAMS
    for name, (text, _, _) in PROGRAMS.items():
        f = next(iter(ig.parse(text)))
        args = random_inputs(f.params, seed=3)
        want = run_function(f, args)
        got = ig.compile(f, backend="cuda")(*args)
        got = got if isinstance(got, (list, tuple)) else [got]
        for g, r in zip(got, want):
            tol = 1e-5 if r.dtype == np.float32 else (1e-11 if r.dtype == np.float64 else 0)
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=name)


def test_tf32_gemm_on_gpu():
    f = next(iter(ig.parse("""
func @f(%a: f32[300,200], %b: f32[200,100]) -> f32[300,100] {
  %0 = matmul %a, %b : f32[300,100]
  return %0
}""")))
    args = random_inputs(f.params, seed=1)
    got = ig.compile(f, backend="cuda", tf32=True)(*args)
    want = args[0].astype(np.float64) @ args[1]
    assert _rel(got, want) < 5e-3


def test_cuda_python_device_runs_a_step():
    try:
        dev = runtime.get_device("cuda-python")
    except BackendUnavailable as e:
        pytest.skip(str(e))
    w = workloads.get("W1")
    b = w.batches(2)
    ref = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend="numpy")
    step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs,
                           backend="cuda", device=dev)
    for x in b:
        want, got = ref(*x), step(*x)
        assert abs(got - want) <= RTOL * abs(want)
