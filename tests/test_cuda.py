"""The CUDA backend without a GPU: rendering, NVRTC compiles with resource checks, the CPU
emulation of the generated kernels against the interpreter, the device-resident function
and step on the emulated device, and the loader's refusal on a GPU-less machine.

(GPU runs are in test_cuda_gpu.py, marked `gpu`.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import irgrad as ig
import workloads
from irgrad.codegen.lowering import plan_for_codegen
from irgrad.backends.cuda import runtime
from irgrad.backends.cuda.emulate import run_emulated
from irgrad.backends.cuda.renderer import render_cuda_program
from irgrad.codegen.lowering import lower_function
from irgrad.errors import ArgumentError, BackendUnavailable
from irgrad.pytree import flatten
from irgrad.ir.interpreter import run_function

from strategies import programs, random_inputs

from cuda_markers import ARCHS, HAVE_CXX, HAVE_NVRTC, SMEM_LIMIT, needs_cxx, needs_nvrtc  # noqa: E402,F401


pytestmark = pytest.mark.usefixtures("private_cache")  # (conftest.py: a fresh compile cache)


# --- programs for every kernel kind (name -> IR text, expected launch strategies, markers) ---

PROGRAMS = {
    "loop_vec": ("""
func @f(%x: f32[8,64], %y: f32[8,64]) -> f32[8,64] {
  %0 = mul %x, %y : f32[8,64]
  %1 = tanh %0 : f32[8,64]
  %2 = add %1, %x : f32[8,64]
  return %2
}""", {"loop vec4"}, ["float4", "tanhf"]),
    "loop_tail_bool": ("""
func @f(%x: f32[37], %y: f32[37]) -> (f32[37], bool[37]) {
  %0 = sub %x, %y : f32[37]
  %1 = exp %0 : f32[37]
  %2 = gt %x, %y : bool[37]
  return %1, %2
}""", {"loop vec4"}, ["uchar4", "expf"]),
    "loop_ints_f64": ("""
func @f(%a: i32[5,3], %b: i32[5,3], %c: i64[5,3]) -> (i32[5,3], i64[5,3], f64[5,3]) {
  %0 = mul %a, %b : i32[5,3]
  %1 = max %0, %a : i32[5,3]
  %2 = cast %1 {dtype=i64} : i64[5,3]
  %3 = sub %2, %c : i64[5,3]
  %4 = abs %3 : i64[5,3]
  %5 = cast %4 {dtype=f64} : f64[5,3]
  %6 = sqrt %5 : f64[5,3]
  return %1, %4, %6
}""", {"loop vec4"}, ["irg_mul", "long long", "longlong2"]),
    "pad_concat_transpose": ("""
func @f(%x: f32[3,5], %y: f32[2,5]) -> (f32[5,7], f32[5,5]) {
  %0 = pad %x {low=[1, 0], high=[1, 2]} : f32[5,7]
  %1 = concat %x, %y {axis=0} : f32[5,5]
  %2 = transpose %1 {perm=[1, 0]} : f32[5,5]
  %3 = neg %2 : f32[5,5]
  return %0, %3
}""", {"loop"}, ["irg_clip"]),
    "loop_lane_invariant": ("""
func @f(%x: f32[16], %y: f32[4,2,16]) -> (f32[66], f32[4,32,4]) {
  %0 = broadcast %x {dims=[0]} : f32[16,4]
  %1 = reshape %0 : f32[64]
  %2 = exp %1 : f32[64]
  %3 = pad %2 {low=[0], high=[2]} : f32[66]
  %4 = reshape %y : f32[4,32]
  %5 = broadcast %4 {dims=[0, 1]} : f32[4,32,4]
  return %3, %5
}""", {"loop vec4"}, ["float4"]),
    "gather": ("""
func @f(%t: f32[10,8], %i: i32[3,4]) -> f32[3,4,8] {
  %0 = gather %t, %i {axis=0} : f32[3,4,8]
  return %0
}""", {"loop vec4"}, ["irg_clamp_index"]),
    "reduce_warp": ("""
func @f(%x: f32[64,100]) -> (f32[64], f32[64,100]) {
  %0 = reduce_max %x {axes=[1]} : f32[64]
  %1 = broadcast %0 {dims=[0]} : f32[64,100]
  %2 = sub %x, %1 : f32[64,100]
  %3 = exp %2 : f32[64,100]
  return %0, %3
}""", {"reduce row warp"}, ["irg_warp_reduce", "IrgMax"]),
    "reduce_block_f64": ("""
func @f(%x: f64[3,1500]) -> f64[3] {
  %0 = mul %x, %x : f64[3,1500]
  %1 = reduce_sum %0 {axes=[1]} : f64[3]
  %2 = sqrt %1 : f64[3]
  return %2
}""", {"reduce row block"}, ["irg_block_reduce<256>", "double"]),
    "reduce_split": ("""
func @f(%x: f32[2,20000]) -> f32[2] {
  %0 = abs %x : f32[2,20000]
  %1 = reduce_sum %0 {axes=[1]} : f32[2]
  return %1
}""", {"reduce row split", "reduce row warp"}, ["irg_block_reduce", "_final("]),
    "reduce_column": ("""
func @f(%x: f32[64,40], %y: f32[6,40]) -> (f32[40], f32[40]) {
  %0 = reduce_sum %x {axes=[0]} : f32[40]
  %1 = reduce_max %y {axes=[0]} : f32[40]
  return %0, %1
}""", {"reduce column", "reduce row thread"}, ["part[ty][tx]"]),
    "reduce_min": ("""
func @f(%x: f32[64,100], %y: f32[64,40], %z: f32[2,20000]) -> (f32[64], f32[40], f32[2]) {
  %0 = reduce_min %x {axes=[1]} : f32[64]
  %1 = reduce_min %y {axes=[0]} : f32[40]
  %2 = reduce_min %z {axes=[1]} : f32[2]
  return %0, %1, %2
}""", {"reduce row warp", "reduce column", "reduce row split"}, ["IrgMin", "irg_min"]),
    "reduce_ints": ("""
func @f(%x: i32[7,9]) -> (i32[7], i64[9], i32[9]) {
  %0 = reduce_sum %x {axes=[1]} : i32[7]
  %1 = cast %x {dtype=i64} : i64[7,9]
  %2 = reduce_max %1 {axes=[0]} : i64[9]
  %3 = reduce_min %x {axes=[0]} : i32[9]
  return %0, %2, %3
}""", set(), ["irg_add"]),
    "gemm_batched_trans": ("""
func @f(%a: f32[3,5,7], %b: f32[3,6,7], %bias: f32[6]) -> f32[3,5,6] {
  %0 = transpose %b {perm=[0, 2, 1]} : f32[3,7,6]
  %1 = matmul %a, %0 : f32[3,5,6]
  %2 = broadcast %bias {dims=[2]} : f32[3,5,6]
  %3 = add %1, %2 : f32[3,5,6]
  return %3
}""", set(), ["irg_gemm<float", "blockIdx.z"]),
    "gemm_f64": ("""
func @f(%a: f64[40,33], %b: f64[33,70]) -> f64[40,70] {
  %0 = matmul %a, %b : f64[40,70]
  return %0
}""", set(), ["irg_gemm<double"]),
    "scatter": ("""
func @f(%a: f32[10,4], %i: i32[6], %u: f32[6,4]) -> f32[10,4] {
  %0 = scatter_add %a, %i, %u {axis=0} : f32[10,4]
  return %0
}""", {"scatter atomicAdd"}, ["atomicAdd"]),
}


def _ir(name: str):
    return next(iter(ig.parse(PROGRAMS[name][0])))


def _tol(a: np.ndarray) -> dict:
    if a.dtype == np.float32:
        return {"rtol": 2e-5, "atol": 2e-5}
    if a.dtype == np.float64:
        return {"rtol": 1e-11, "atol": 1e-11}
    return {"rtol": 0, "atol": 0}


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, **_tol(w))


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_renderer_kernel_kinds(name):
    """Every kernel kind renders to the expected GPU strategy and source constructs."""
    f = _ir(name)
    cp = render_cuda_program(lower_function(plan_for_codegen(f, "O2")))
    _, strategies, markers = PROGRAMS[name]
    got = {ln.strategy for ln in cp.launches}
    assert strategies <= got, (strategies, got)
    for m in markers:
        assert m in cp.source, m
    assert cp.source.count('extern "C" __global__') == len({ln.name for ln in cp.launches})
    for ln in cp.launches:
        assert ln.threads % 32 == 0 and ln.threads <= 1024 and all(g >= 1 for g in ln.grid)
        assert f"void __launch_bounds__({ln.threads}) {ln.name}(" in cp.source


def test_renderer_gemm_tile_and_epilogue():
    f = _ir("gemm_batched_trans")
    cp = render_cuda_program(lower_function(plan_for_codegen(f, "O2")))
    gemm = [ln for ln in cp.launches if ln.strategy.startswith("gemm")]
    assert len(gemm) == 1 and gemm[0].grid[2] == 3  # the batch on blockIdx.z
    assert "true" in cp.source.split("irg_gemm<float")[-1].split(">")[0]  # B read transposed
    assert any(ln.origin == gemm[0].origin and ln.strategy.startswith("loop") for ln in cp.launches)


@needs_cxx
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_emulated_kernel_kinds_match_interpreter(name):
    f = _ir(name)
    args = random_inputs(f.params, seed=3)
    if name == "scatter":  # indices may repeat: atomics must accumulate
        args[1] = np.array([1, 3, 1, 9, 0, 1], np.int32)
    want = run_function(f, args)
    for pipeline in ("O2", "O0"):
        _assert_same(run_emulated(plan_for_codegen(f, pipeline), args), want)


@needs_cxx
def test_emulated_nan_propagation_and_edge_shapes():
    """max/min and max-reductions propagate NaN (as the CPU backend); scalars, results that
    are parameters or constants, rows of one element."""
    f = next(iter(ig.parse("""
func @f(%a: f32[64,40], %b: f32[64,40], %s: f32[]) -> (f32[64], f32[40], f32[64,40], f32[64,40], f32[], f32[64,40], f32[2]) {
  %0 = reduce_max %a {axes=[1]} : f32[64]
  %1 = reduce_max %a {axes=[0]} : f32[40]
  %2 = max %a, %b : f32[64,40]
  %3 = min %a, %b : f32[64,40]
  %4 = mul %s, %s : f32[]
  %5 = const {value=1.5} : f32[2]
  return %0, %1, %2, %3, %4, %b, %5
}""")))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 64, 40)).astype(np.float32)
    a[3, 5] = a[10, 0] = b[7, 7] = np.nan
    args = [a, b, np.float32(3.0)]
    want = ig.compile(f, backend="numpy")(*args)
    got = ig.compile(f, backend="cuda", device="emulate")(*args)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w)


@needs_cxx
def test_emulated_tf32_gemm_is_close():
    """The TF32 WMMA path (emulated fragments, TF32 rounding) computes the right product."""
    f = next(iter(ig.parse("""
func @f(%a: f32[70,40], %b: f32[40,50]) -> f32[70,50] {
  %0 = matmul %a, %b : f32[70,50]
  return %0
}""")))
    args = random_inputs(f.params, seed=1)
    got = run_emulated(plan_for_codegen(f, "O2"), args, tf32=True)[0]
    want = args[0].astype(np.float64) @ args[1]
    err = np.abs(got - want).max() / np.abs(want).max()
    assert 1e-7 < err < 5e-3  # rounded to TF32 (not exact), but close


@needs_cxx
@settings(max_examples=5, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(programs(max_ops=8), st.integers(0, 1000))
def test_emulated_random_programs_match_interpreter(prog, seed):
    args = prog.make_inputs(seed)
    want = prog.run(args)
    got = run_emulated(plan_for_codegen(prog.function, "O2"), args)
    for g, w in zip(got, want):
        tol = 1e-4 if w.dtype == np.float32 else 1e-9
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def _step_ir(name: str):
    w = workloads.get(name)
    fn = w.step_function()
    leaves = fn.flatten_args(w.step_state() + w.batches(1)[0])
    return fn, leaves


@needs_cxx
def test_emulated_w1_training_step_matches_interpreter():
    fn, leaves = _step_ir("W1")
    want = run_function(fn.ir, leaves)
    got = run_emulated(plan_for_codegen(fn.ir, "O2"), leaves)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@needs_cxx
def test_cuda_step_on_emulated_device_w1():
    """CudaStep's whole flow (device-resident state, staging, copy-backs, loss download,
    graph capture and replay) on the emulated device, against the numpy step."""
    w = workloads.get("W1")
    batches = w.batches(3)
    ref = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend="numpy")
    step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs,
                           backend="cuda", device="emulate")
    for b in batches:
        want, got = ref(*b), step(*b)
        assert isinstance(got, float)
        assert abs(got - want) <= 1e-5 * abs(want)
    assert step._graph is not None and step.graph_error is None  # steps 2-3 replayed a graph
    for r, g in zip(flatten(ref.params)[0], flatten(step.params)[0]):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    with pytest.raises(ArgumentError):
        step(batches[0][0])
    with pytest.raises(ArgumentError):
        step(batches[0][0].astype(np.float64), batches[0][1])


@needs_cxx
def test_cuda_function_on_emulated_device():
    @ig.function
    def f(w: ig.f32[16, 8], x: ig.f32[4, 16]):
        h = ig.tanh(x @ w)
        return h.sum(axis=1), h

    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    cf = ig.compile(f, backend="cuda", device="emulate")
    for g, r in zip(cf(w, x), f(w, x)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    with pytest.raises(ArgumentError):
        cf(w, x.T)  # wrong shape, before any launch
    with pytest.raises(ArgumentError):
        cf(w, np.asfortranarray(np.zeros((4, 16), np.float32)))  # not C-contiguous


# --- NVRTC: every kernel compiles for sm_80 and sm_90, with resource checks ------------------

def _check_resources(log: str, cp, where: str):
    res = runtime.parse_resources(log)
    for ln in cp.launches:
        assert ln.name in res, f"{where}: no ptxas report for {ln.name}"
    for name, r in res.items():
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"{where}: {name} spills: {r}"
        assert r["smem"] <= SMEM_LIMIT, f"{where}: {name} uses {r['smem']} bytes of shared memory"
        assert r["registers"] <= 255
    return res


@needs_nvrtc
def test_nvrtc_compiles_test_programs():
    srcs = [render_cuda_program(lower_function(plan_for_codegen(_ir(n), "O2"))) for n in sorted(PROGRAMS)]
    srcs.append(render_cuda_program(lower_function(plan_for_codegen(_ir("gemm_batched_trans"), "O2")),
                                    tf32=True))
    jobs = [(cp, arch) for cp in srcs for arch in ARCHS]
    with ThreadPoolExecutor(2) as ex:
        logs = list(ex.map(lambda j: runtime.nvrtc_compile(j[0].source, j[1])[1], jobs))
    for (cp, arch), log in zip(jobs, logs):
        _check_resources(log, cp, f"{cp.name} {arch}")


@needs_nvrtc
@pytest.mark.parametrize("name", workloads.ALL)
def test_nvrtc_compiles_workload_steps(name):
    fn, _ = _step_ir(name)
    cp = render_cuda_program(lower_function(plan_for_codegen(fn.ir, "O2")))
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda a: runtime.nvrtc_compile(cp.source, a), ARCHS))
    for arch, (cubin, log) in zip(ARCHS, results):
        assert cubin[:4] == b"\x7fELF"
        _check_resources(log, cp, f"{name} {arch}")


@needs_nvrtc
def test_cubin_cache_hits_and_rebuilds_corrupt_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("IRGRAD_CACHE_DIR", str(tmp_path))
    src = render_cuda_program(lower_function(plan_for_codegen(_ir("loop_vec"), "O2"))).source
    calls = []
    real = runtime.nvrtc_compile
    monkeypatch.setattr(runtime, "nvrtc_compile", lambda *a, **k: calls.append(a) or real(*a, **k))
    c1 = runtime.compile_cubin(src, "sm_90")
    c2 = runtime.compile_cubin(src, "sm_90")
    assert c1 == c2 and len(calls) == 1
    runtime.compile_cubin(src, "sm_80")
    assert len(calls) == 2  # the arch is part of the key
    entries = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".cubin")]
    assert len(entries) == 2
    for e in entries:
        with open(e, "r+b") as fh:
            fh.seek(40)
            fh.write(b"garbage")
    assert runtime.compile_cubin(src, "sm_90") == c1 and len(calls) == 3
    monkeypatch.setattr(runtime, "compiler_id", lambda: None)  # no compiler: prebuilt cubins
    assert runtime.compile_cubin(src, "sm_90") == c1 and len(calls) == 3
    with pytest.raises(BackendUnavailable):
        runtime.compile_cubin(src + "// changed", "sm_90")
    monkeypatch.setattr(runtime, "compiler_id", lambda: "nvrtc test")
    monkeypatch.setenv("IRGRAD_CACHE", "0")
    runtime.compile_cubin(src, "sm_90")
    assert len(calls) == 4


# --- no GPU here: the loader says why, quickly --------------------------------------------------

def _gpu_present() -> bool:
    try:
        runtime.get_device()
        return True
    except BackendUnavailable:
        return False


def test_loader_raises_backend_unavailable_quickly():
    if _gpu_present():
        pytest.skip("a GPU is present")
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailable) as e:
        runtime.get_device()
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "pycuda" in msg and "cuda-python" in msg
    assert any(w in msg for w in ("not installed", "not usable", "driver", "GPU"))
    with pytest.raises(BackendUnavailable):
        runtime.get_device("nonsense")


def test_compile_backend_cuda_raises_here():
    if _gpu_present():
        pytest.skip("a GPU is present")

    @ig.function
    def f(x: ig.f32[4]):
        return ig.exp(x)

    with pytest.raises(BackendUnavailable):
        ig.compile(f, backend="cuda")


def test_dump_emit_cuda(tmp_path):
    src = tmp_path / "model.py"
    src.write_text(textwrap.dedent("""
        import irgrad as ig

        @ig.function
        def loss(w: ig.f32[8, 4], x: ig.f32[16, 8]):
            return ig.tanh(x @ w).sum()
    """))
    r = subprocess.run([sys.executable, "-m", "irgrad", "dump", f"{src}:loss", "--grad", "--emit", "cuda"],
                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr
    assert 'extern "C" __global__' in r.stdout and "irg_gemm<" in r.stdout


# --- the pycuda device's wiring, against a fake pycuda.driver (no GPU needed) ---------------

class _FakeDrv:
    """Just enough of pycuda.driver to drive PycudaDevice: records copies and launches."""

    class Error(Exception):
        pass

    def __init__(self):
        self.log = []
        self.next = 1 << 20
        drv = self

        class Alloc(int):
            def free(self):
                drv.log.append(("free", int(self)))

        class Fn:
            def __init__(self, name):
                self.name = name

            def prepare(self, fmt):
                self.fmt = fmt

            def prepared_async_call(self, grid, block, stream, *args):
                assert len(args) == len(self.fmt)
                drv.log.append(("launch", self.name, grid, block, args))

        class Module:
            def get_function(self, name):
                return Fn(name)

        class Ctx:
            def push(self):
                pass

            def pop(self):
                pass

        class Device:
            @staticmethod
            def count():
                return 1

            def __init__(self, i):
                pass

            def compute_capability(self):
                return (9, 0)

            def name(self):
                return "Fake H100"

            def retain_primary_context(self):
                return Ctx()

        class Stream:
            handle = 0

            def synchronize(self):
                pass

        self.Alloc, self.Module, self.Device, self.Stream = Alloc, Module, Device, Stream

    def init(self):
        pass

    def mem_alloc(self, n):
        self.next += (n + 255) // 256 * 256
        return self.Alloc(self.next)

    def pagelocked_empty(self, shape, dtype):
        return np.zeros(shape, dtype)

    def module_from_buffer(self, cubin):
        assert cubin[:4] == b"\x7fELF"
        return self.Module()

    def _copy(self, *a):
        self.log.append(("copy",) + tuple(type(x).__name__ for x in a))

    memcpy_htod = memcpy_dtoh = memcpy_htod_async = memcpy_dtoh_async = memcpy_dtod_async = _copy


@needs_nvrtc
def test_pycuda_device_wiring_with_a_fake_driver(monkeypatch):
    import types
    fake = _FakeDrv()
    pkg = types.ModuleType("pycuda")
    pkg.driver = fake
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", fake)
    monkeypatch.setattr(runtime, "_libcuda", lambda: None)
    dev = runtime.PycudaDevice()
    assert dev.arch == "sm_90" and not dev.supports_graphs
    f = _ir("gemm_batched_trans")
    cf = ig.compile(f, backend="cuda", device=dev)
    args = random_inputs(f.params, seed=0)
    cf(*args)
    launches = [e for e in fake.log if e[0] == "launch"]
    plan = cf.native.cuda.launches
    assert [e[1] for e in launches] == [ln.name for ln in plan]
    for e, ln in zip(launches, plan):
        assert e[2] == ln.grid and e[3] == ln.block
        assert list(e[4]) == [cf.native.addrs[a.slot] + a.offset for a in ln.args]
