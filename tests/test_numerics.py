"""Numerics at the extremes: every backend equals the interpreter on special values.

Every elementwise primitive of the registry (the list is read from it, so a new op is
swept too) runs on 0, -0, subnormals, +-1e30, +-inf, nan and values around the points
where float functions saturate, in float32 and float64 (integer ops on their extremes),
on the CPU backend and the CUDA emulation, against the reference interpreter:
non-finite results and the sign of zero must match exactly, finite ones to a few ulps,
and a value the interpreter gives as exactly 0, +-1 or an exact integer must come out
exactly (saturation). Derivatives at the extremes (sigmoid at +-100, tanh at 20) are
exactly 0, the pow conventions of JAX and PyTorch hold, and zero-size tensors work.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import irgrad as ig
from irgrad import f32, f64, i32
from irgrad.errors import BackendUnavailable
from irgrad.ir.builder import Builder
from irgrad.ir.core import Function
from irgrad.ir.registry import all_ops
from irgrad.ir.types import DType, TensorType

try:
    from irgrad.backends.cuda.emulate import compiler as _emu_compiler
    _emu_compiler()
    BACKENDS = ["cpu", "cuda"]
except BackendUnavailable:  # no g++: the CUDA emulation cannot run here
    BACKENDS = ["cpu"]

FLOAT_SPECIALS = [0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, 1.2e-38, 1e-30, -1e-30, 1e-8, 0.5, -0.5,
                  1.0, -1.0, 2.0, -3.0, 3.14159, 9.0, 9.02, 10.0, 20.0, -20.0, 88.5, 89.0, -100.0,
                  100.0, -104.0, 700.0, -750.0, 1e10, -1e10, 1e30, -1e30, 3.4e38, -3.4e38,
                  np.inf, -np.inf, np.nan]
BINARY_SPECIALS = [0.0, -0.0, 1e-45, -1e-30, 0.5, 1.0, -1.0, 2.0, -3.0, 20.0, 1e30, -1e30,
                   np.inf, -np.inf, np.nan]


def elementwise(arity: int):
    return sorted(name for name, d in all_ops().items()
                  if d.elementwise and d.num_operands == arity and not d.attrs
                  and name not in ("stop_gradient",))


def compile_on(f, backend):
    kw = {"device": "emulate"} if backend == "cuda" else {}
    return ig.compile(f, backend=backend, **kw)


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place (of a's dtype), for finite a and b."""
    spacing = np.abs(np.spacing(a)).astype(np.float64)
    return np.abs(a.astype(np.float64) - b.astype(np.float64)) / spacing


def assert_special_equal(got, want, x_desc, what, max_ulps=8):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if want.dtype.kind != "f":
        bad = np.nonzero(got != want)[0]
        assert not len(bad), f"{what}: at {x_desc(bad[0])} got {got[bad[0]]}, want {want[bad[0]]}"
        return
    for i in range(want.size):
        w, g = want[i], got[i]
        where = f"{what} at {x_desc(i)}: got {g!r}, interpreter {w!r}"
        if np.isnan(w) or not np.isfinite(w):
            assert (np.isnan(g) and np.isnan(w)) or g == w, where
        elif w == 0:
            assert g == 0 and np.signbit(g) == np.signbit(w), where
        elif w in (1.0, -1.0) or (abs(w) > 1 and w == np.round(w) and abs(w) < 2 ** 23):
            assert g == w or ulps(np.array([w]), np.array([g]))[0] <= 1, where  # saturation
        else:
            fw = np.float32 if want.dtype == np.float32 else np.float64
            tiny = np.finfo(fw).tiny
            if abs(w) < tiny:  # subnormal: the absolute error of one subnormal step counts
                assert np.isfinite(g) and abs(float(g) - float(w)) <= 2 * np.finfo(fw).smallest_subnormal * max_ulps, where
            else:
                assert np.isfinite(g) and ulps(np.array([w]), np.array([g]))[0] <= max_ulps, where


def _one_op_function(name: str, dt: DType, n: int, arity: int) -> Function:
    f = Function(name, [TensorType(dt, (n,))] * arity, [f"x{i}" for i in range(arity)])
    f.set_outputs([Builder(f.body).emit(name, *f.params)])
    return f


def _accepts(name, dt, arity) -> bool:
    try:
        _one_op_function(name, dt, 1, arity)
        return True
    except ig.ShapeError:
        return False


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dt", [DType.f32, DType.f64], ids=str)
@pytest.mark.parametrize("name", elementwise(1))
def test_unary_special_values_match_the_interpreter(name, dt, backend):
    if not _accepts(name, dt, 1):
        pytest.skip(f"{name} does not take {dt}")
    x = np.array(FLOAT_SPECIALS, dt.np)
    f = _one_op_function(name, dt, len(x), 1)
    want = ig.compile(f, backend="numpy")(x)
    got = compile_on(f, backend)(x)
    assert_special_equal(got, want, lambda i: f"x = {x[i]!r}", f"{name}:{dt} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dt", [DType.f32, DType.f64], ids=str)
@pytest.mark.parametrize("name", elementwise(2))
def test_binary_special_values_match_the_interpreter(name, dt, backend):
    if not _accepts(name, dt, 2):
        pytest.skip(f"{name} does not take {dt}")
    pairs = list(itertools.product(BINARY_SPECIALS, BINARY_SPECIALS))
    a = np.array([p[0] for p in pairs], dt.np)
    b = np.array([p[1] for p in pairs], dt.np)
    f = _one_op_function(name, dt, len(a), 2)
    want = ig.compile(f, backend="numpy")(a, b)
    got = compile_on(f, backend)(a, b)
    assert_special_equal(got, want, lambda i: f"({a[i]!r}, {b[i]!r})", f"{name}:{dt} on {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dt", [DType.i32, DType.i64], ids=str)
@pytest.mark.parametrize("name", elementwise(1) + elementwise(2))
def test_integer_extremes_match_the_interpreter(name, dt, backend):
    arity = all_ops()[name].num_operands
    if not _accepts(name, dt, arity):
        pytest.skip(f"{name} does not take {dt}")
    info = np.iinfo(dt.np)
    values = [0, 1, -1, 2, -7, 7, 1000, info.max, info.min, info.max - 1, info.min + 1]
    if arity == 1:
        args = [np.array(values, dt.np)]
    else:
        pairs = list(itertools.product(values, values))
        args = [np.array([p[0] for p in pairs], dt.np), np.array([p[1] for p in pairs], dt.np)]
    f = _one_op_function(name, dt, len(args[0]), arity)
    with np.errstate(all="ignore"):
        want = ig.compile(f, backend="numpy")(*args)
    got = compile_on(f, backend)(*args)
    assert_special_equal(got, want, lambda i: str([a[i] for a in args]), f"{name}:{dt} on {backend}")


# --- the functions users call, at the extremes ---------------------------------------------------

EXTREMES = np.array([-np.inf, -1e30, -1e10, -100.0, -20.0, -9.5, -0.0, 0.0, 9.5, 20.0, 100.0,
                     1e10, 1e30, np.inf, np.nan], np.float32)


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("fn", ["gelu", "sigmoid", "tanh", "relu", "softmax", "log_softmax"])
def test_library_functions_saturate_like_numpy(fn, backend):
    f = ig.trace(lambda x: getattr(ig, fn)(x), f32[len(EXTREMES)])
    want = f(EXTREMES)
    got = compile_on(f, backend)(EXTREMES) if backend != "numpy" else want
    assert_special_equal(got, want, lambda i: f"x = {EXTREMES[i]!r}", f"{fn} on {backend}")
    if fn == "gelu":  # numpy's own: x/2 (1 + tanh(...)) gives -0.0 at -1e10 and nan at -inf
        with np.errstate(all="ignore"):
            x = EXTREMES
            ref = x * np.float32(0.5) * (np.tanh((x + x * x * x * np.float32(0.044715))
                                                 * np.float32(np.sqrt(2 / np.pi))) + np.float32(1))
        assert_special_equal(got, ref.astype(np.float32), lambda i: f"x = {EXTREMES[i]!r}",
                             f"gelu on {backend} against numpy")


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
def test_derivatives_vanish_where_functions_saturate(backend):
    """sigmoid'(+-100) = e^-100 (a float32 subnormal) and tanh'(20) = 0 exactly, on every
    backend (the native tanh once stopped at 0.99999976, leaving 1e-7)."""
    x = np.array([-100.0, 100.0, 20.0, -20.0, 50.0, 0.0], np.float32)
    for fn, exact in ((ig.sigmoid, np.exp(-np.abs(x.astype(np.float64))) / (1 + np.exp(-np.abs(x.astype(np.float64)))) ** 2),
                      (ig.tanh, 1 - np.tanh(x.astype(np.float64)) ** 2)):
        g = ig.grad(ig.trace(lambda v: ig.sum(fn(v)), f32[6]))
        want = g(x)
        got = want if backend == "numpy" else compile_on(g, backend)(x)
        assert_special_equal(got, want, lambda i: f"x = {x[i]}", f"{fn.__name__}' on {backend}")
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-40)


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
def test_pow_derivative_conventions(backend):
    """d/dx x**0 = 0 (also at x = 0) and d/dy x**y = 0 at x = 0, as in JAX and PyTorch."""
    f = ig.trace(lambda x, y: ig.sum(x ** y), f64[4], f64[4])
    g = ig.grad(f, argnums=(0, 1))
    x = np.array([0.0, 0.0, 2.0, 0.0])
    y = np.array([0.0, 2.0, 0.0, 0.5])
    dx, dy = g(x, y) if backend == "numpy" else compile_on(g, backend)(x, y)
    np.testing.assert_array_equal(dx, [0.0, 0.0, 0.0, np.inf])  # 0.5 * 0**-0.5 = inf stays
    np.testing.assert_array_equal(dy, [0.0, 0.0, np.log(2.0), 0.0])
    # and the derivatives stay exact away from x = 0 (order 2, y = 0 included)
    ig.check_grads(f, [np.array([0.5, 1.5, 2.0, 3.0]), np.array([0.0, 2.0, -1.0, 0.5])], order=2)


# --- zero-size tensors --------------------------------------------------------------------------

ZERO_CASES = {
    "elementwise": (lambda x: ig.exp(x) * 2.0 + x, [f32[0, 5]]),
    "sum_axis0": (lambda x: ig.sum(x, axis=0), [f32[0, 5]]),
    "sum_all": (lambda x: ig.sum(x), [f32[0, 5]]),
    "mean_axis1": (lambda x: ig.mean(x, axis=1), [f32[0, 5]]),
    "max_of_nothing": (lambda x: ig.max(x, axis=0), [f32[0, 5]]),
    "softmax": (lambda x: ig.softmax(x, axis=0), [f32[0, 5]]),
    "matmul_k0": (lambda a, b: a @ b, [f32[3, 0], f32[0, 4]]),
    "matmul_k0_epilogue": (lambda a, b: ig.tanh(a @ b + 1.0), [f32[3, 0], f32[0, 4]]),
    "matmul_m0": (lambda a, b: a @ b, [f32[0, 3], f32[3, 4]]),
    "batched_k0": (lambda a, b: a @ b, [f32[2, 3, 0], f32[2, 0, 4]]),
    "concat": (lambda a, b: ig.concatenate([a, b], axis=0), [f32[0, 5], f32[2, 5]]),
    "take_none": (lambda a, i: ig.take(a, i, axis=0), [f32[3, 2], i32[0]]),
    "transpose": (lambda x: x.T * 3.0, [f32[0, 5]]),
}


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("case", sorted(ZERO_CASES))
@pytest.mark.parametrize("pipeline", ["O0", "O2"])
def test_zero_size_tensors(case, backend, pipeline):
    fn, specs = ZERO_CASES[case]
    f = ig.trace(fn, *specs)
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s.shape).astype(s.dtype.np) if s.dtype.is_float
            else np.zeros(s.shape, s.dtype.np) for s in specs]
    want = f(*args)
    kw = {"device": "emulate"} if backend == "cuda" else {}
    got = ig.compile(f, backend=backend, pipeline=pipeline, **kw)(*args)
    assert np.asarray(got).shape == np.asarray(want).shape
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_zero_size_gradient_and_step():
    g = ig.grad(ig.trace(lambda x: ig.sum(ig.exp(x)), f32[0, 5]))
    x = np.zeros((0, 5), np.float32)
    for backend in ["numpy"] + BACKENDS:
        assert compile_on(g, backend)(x).shape == (0, 5)


@pytest.mark.parametrize("backend", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("pipeline", ["O0", "O2"])
def test_indices_outside_the_axis_are_clamped_on_every_backend(backend, pipeline):
    loss = ig.trace(lambda a, i, u: ig.sum(ig.take(a, i, axis=0) * u), f32[4, 3], i32[6], f32[6, 3])
    grad = ig.grad(loss)  # a scatter_add of the cotangents
    f = ig.trace(lambda a, i, u: (ig.take(a, i, axis=0) * 2.0, grad(a, i, u)), f32[4, 3], i32[6], f32[6, 3])
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    idx = np.array([0, 4, -1, -5, 100, -100], np.int32)
    u = np.ones((6, 3), np.float32)
    want = f(a, idx, u)
    kw = {"device": "emulate"} if backend == "cuda" else {}
    got = ig.compile(f, backend=backend, pipeline=pipeline, **kw)(a, idx, u)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(want[0], a[[0, 3, 3, 0, 3, 0]] * 2)
