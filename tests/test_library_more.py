"""The newer DSL library: log1p/expm1/erf/floor/ceil/round, clip, softplus, silu,
leaky_relu, elu, gelu (both forms), logical ops and the &, |, ^, ~ operators, min,
argmax/argmin, cumsum, einsum, and JAX-style dtype promotion of mixed operands.

Every value is checked against numpy / scipy.special computed independently (in float64,
then compared at float32 tolerances where the traced function is float32), on the
reference interpreter ("numpy") and on the native CPU backend ("cpu"). CPU compiles cost
~0.1-0.2 s each, so the CPU checks group many cases into one traced function with many
results; the randomized (hypothesis) checks run on the interpreter only. Derivatives are
checked with `ig.check_grads` (float64 centered finite differences), at inputs away from
kinks.
"""

from __future__ import annotations


import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import irgrad as ig
from irgrad import bool_, f32, f64, i32, i64

BACKENDS = ("numpy", "cpu")
F32_TOL = dict(rtol=1e-5, atol=1e-6)
F64_TOL = dict(rtol=1e-11, atol=1e-12)
FEW = settings(max_examples=25, deadline=None)


def rng(seed=0):
    return np.random.default_rng(seed)


def run_both(fn, *args):
    """Trace `fn` on `args` once; {backend: results} for the interpreter and the CPU backend."""
    traced = ig.trace(fn, *args)
    return {b: ig.compile(traced, b)(*args) for b in BACKENDS}


def assert_close_dict(got: dict, want: dict, dtype, tol):
    assert set(got) == set(want)
    for k in want:
        g, w = np.asarray(got[k]), np.asarray(want[k])
        assert g.dtype == np.dtype(dtype), (k, g.dtype)
        assert g.shape == w.shape, (k, g.shape, w.shape)
        np.testing.assert_allclose(g, w, err_msg=k, **tol)


def shape_error(fn, *specs) -> str:
    with pytest.raises(ig.ShapeError) as info:
        ig.trace(fn, *specs)
    return str(info.value)


# --- references ------------------------------------------------------------------------------

def np_softplus(x, beta=1.0):
    return np.logaddexp(0.0, beta * x) / beta


def np_silu(x):
    return x * sp.expit(x)


def np_leaky(x, s):
    return np.where(x > 0, x, s * x)


def np_elu(x, a):
    return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


def np_gelu_exact(x):
    return 0.5 * x * (1.0 + sp.erf(x / np.sqrt(2.0)))


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def activations(x, p):
    """The unary library on x (any real) and p (> -1, for log1p): traced or not."""
    return {
        "log1p": ig.log1p(p), "expm1": ig.expm1(x), "erf": ig.erf(x),
        "floor": ig.floor(x), "ceil": ig.ceil(x), "round": ig.round(x),
        "clip": ig.clip(x, -1.25, 2.0), "clip_lo": ig.clip(x, min=-0.5),
        "clip_hi": ig.clip(x, max=0.75), "clip_crossed": ig.clip(x, 2.0, 1.0),
        "softplus": ig.softplus(x), "softplus_b2": ig.softplus(x, beta=2.0),
        "softplus_b05": ig.softplus(x, 0.5),
        "silu": ig.silu(x), "leaky": ig.leaky_relu(x, 0.2), "leaky_default": ig.leaky_relu(x),
        "elu": ig.elu(x, 1.5), "elu_default": ig.elu(x),
        "gelu_exact": ig.gelu(x, approximate=False), "gelu_none": ig.gelu(x, approximate="none"),
        "gelu_tanh": ig.gelu(x, approximate=True), "gelu_tanh_s": ig.gelu(x, approximate="tanh"),
    }


def activations_ref(x, p):
    x, p = np.asarray(x, np.float64), np.asarray(p, np.float64)
    return {
        "log1p": np.log1p(p), "expm1": np.expm1(x), "erf": sp.erf(x),
        "floor": np.floor(x), "ceil": np.ceil(x), "round": np.rint(x),
        "clip": np.clip(x, -1.25, 2.0), "clip_lo": np.clip(x, -0.5, None),
        "clip_hi": np.clip(x, None, 0.75), "clip_crossed": np.minimum(np.maximum(x, 2.0), 1.0),
        "softplus": np_softplus(x), "softplus_b2": np_softplus(x, 2.0),
        "softplus_b05": np_softplus(x, 0.5),
        "silu": np_silu(x), "leaky": np_leaky(x, 0.2), "leaky_default": np_leaky(x, 0.01),
        "elu": np_elu(x, 1.5), "elu_default": np_elu(x, 1.0),
        "gelu_exact": np_gelu_exact(x), "gelu_none": np_gelu_exact(x),
        "gelu_tanh": np_gelu_tanh(x), "gelu_tanh_s": np_gelu_tanh(x),
    }


# values that stress rounding (halves: ties to even, -0.4 -> -0.0) and the breakpoints
SPECIAL = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -0.4, 0.4, 0.0, 1.0, -1.0, 2.0, 3.4999,
           -3.5001, 1e-7, -1e-7]


def _x_and_p(dtype):
    x = np.concatenate([np.linspace(-6.0, 6.0, 61), SPECIAL]).astype(dtype)
    p = np.concatenate([np.linspace(-0.95, 8.0, 60), [1e-7, -1e-7, 1e-12, 0.0, 3e-5, 100.0]]).astype(dtype)
    return x, p


# --- unary math and activations --------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(np.float32, F32_TOL), (np.float64, F64_TOL)])
def test_unary_library_matches_numpy_on_both_backends(dtype, tol):
    x, p = _x_and_p(dtype)
    want = activations_ref(x, p)
    for backend, got in run_both(activations, x, p).items():
        assert_close_dict(got, want, dtype, tol)


def test_round_is_half_to_even_and_keeps_signed_zero():
    x = np.array([-2.5, -1.5, -0.5, -0.4, 0.5, 1.5, 2.5, 4.5, -0.0, 2.0 ** 23 - 0.5], np.float32)
    want_round = np.array([-2.0, -2.0, -0.0, -0.0, 0.0, 2.0, 2.0, 4.0, -0.0, 2.0 ** 23], np.float32)
    for got in run_both(lambda t: (ig.round(t), ig.ceil(t), ig.floor(t)), x).values():
        np.testing.assert_array_equal(got[0], want_round)
        np.testing.assert_array_equal(np.signbit(got[0]), np.signbit(want_round))
        np.testing.assert_array_equal(got[1], np.ceil(x))
        np.testing.assert_array_equal(np.signbit(got[1]), np.signbit(np.ceil(x)))  # ceil(-0.4) = -0
        np.testing.assert_array_equal(got[2], np.floor(x))


def test_log1p_and_expm1_are_accurate_for_tiny_arguments():
    # log(1 + x) and exp(x) - 1 would lose every digit here in float32
    x = np.array([1e-10, -1e-10, 3e-8, -3e-8, 1e-6, 1e-30], np.float32)
    want = {"log1p": np.log1p(x.astype(np.float64)), "expm1": np.expm1(x.astype(np.float64))}
    for got in run_both(lambda t: {"log1p": ig.log1p(t), "expm1": ig.expm1(t)}, x).values():
        assert_close_dict(got, want, np.float32, dict(rtol=1e-6, atol=0))


def test_activations_stay_finite_and_accurate_for_huge_inputs():
    x = np.array([-100.0, -80.0, -30.0, -5.0, 0.0, 5.0, 30.0, 80.0, 100.0], np.float32)
    x64 = x.astype(np.float64)
    want = {"softplus": np_softplus(x64), "softplus_b3": np_softplus(x64, 3.0), "silu": np_silu(x64),
            "elu": np_elu(x64, 1.0), "gelu_exact": np_gelu_exact(x64), "gelu_tanh": np_gelu_tanh(x64),
            "leaky": np_leaky(x64, 0.1)}

    def fn(t):
        return {"softplus": ig.softplus(t), "softplus_b3": ig.softplus(t, beta=3.0), "silu": ig.silu(t),
                "elu": ig.elu(t), "gelu_exact": ig.gelu(t, approximate=False),
                "gelu_tanh": ig.gelu(t, approximate=True), "leaky": ig.leaky_relu(t, 0.1)}

    for got in run_both(fn, x).values():
        for k, v in got.items():
            assert np.all(np.isfinite(v)), (k, v)
        assert_close_dict(got, want, np.float32, F32_TOL)


def test_derivatives_stay_finite_for_huge_inputs():
    # elu's expm1 sees only the non-positive branch, softplus/silu use exp(-|x|): the
    # gradients at +-100 must be the exact limits, not NaN from an overflowing side
    x = np.array([-100.0, -60.0, 60.0, 100.0], np.float32)
    want = {
        "elu": np.array([0.0, 0.0, 1.0, 1.0]), "softplus": sp.expit(x.astype(np.float64)),
        "silu": np.array([0.0, 0.0, 1.0, 1.0]),
    }
    for name, fn in [("elu", ig.elu), ("softplus", ig.softplus), ("silu", ig.silu)]:
        g = ig.grad(ig.trace(lambda t, fn=fn: ig.sum(fn(t)), x))
        for backend in BACKENDS:
            got = ig.compile(g, backend)(x)
            assert np.all(np.isfinite(got)), (name, backend, got)
            np.testing.assert_allclose(got, want[name], rtol=1e-6, atol=1e-6, err_msg=f"{name} {backend}")


def test_integer_inputs_become_float32():
    k = np.arange(-3, 4, dtype=np.int32)
    for got in run_both(lambda t: (ig.erf(t), ig.expm1(t), ig.silu(t), ig.softplus(t)), k).values():
        for g, w in zip(got, (sp.erf(k), np.expm1(k), np_silu(k * 1.0), np_softplus(k * 1.0))):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w, **F32_TOL)


def test_clip_bounds_can_be_tensors_and_ints():
    x = rng(1).uniform(-3, 3, (4, 5)).astype(np.float32)
    lo = rng(2).uniform(-2, 0, (5,)).astype(np.float32)
    hi = rng(3).uniform(0, 2, (4, 1)).astype(np.float32)
    k = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)

    def fn(x, lo, hi, k):
        return ig.clip(x, lo, hi), ig.clip(x, None, hi), ig.clip(k, -2, 3), ig.clip(k, min=0)

    want = (np.clip(x, lo, hi), np.minimum(x, hi), np.clip(k, -2, 3), np.clip(k, 0, None))
    for got in run_both(fn, x, lo, hi, k).values():
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


def test_library_argument_errors():
    assert "clip needs min, max or both" in shape_error(lambda x: ig.clip(x), f32[3])
    msg = shape_error(lambda x: ig.gelu(x, approximate="fast"), f32[3])
    assert "approximate" in msg and "'fast'" in msg


# --- derivatives -----------------------------------------------------------------------------

# inputs at least 0.1 away from 0 (the kink of leaky_relu / elu's second derivative) and
# from the clip bounds -1.25 / 2.0, and away from integers and halves for floor/ceil/round
XG = np.array([-2.7, -1.9, -1.1, -0.6, -0.3, 0.2, 0.45, 0.8, 1.3, 1.7, 2.4, 2.9])
PG = np.array([-0.8, -0.35, 0.1, 0.6, 1.4, 3.3])

GRAD_CASES = {
    "log1p": lambda x, p: ig.log1p(p),
    "expm1": lambda x, p: ig.expm1(x),
    "erf": lambda x, p: ig.erf(x),
    "rounding": lambda x, p: (ig.floor(x) + ig.ceil(x) * 2.0 + ig.round(x) * 3.0) * x,
    "clip": lambda x, p: ig.clip(x, -1.25, 2.0) * x,
    "clip_one_side": lambda x, p: ig.clip(x, min=0.0) + ig.clip(x, max=1.0) * x,
    "softplus": lambda x, p: ig.softplus(x) + ig.softplus(x, beta=2.5),
    "silu": lambda x, p: ig.silu(x),
    "leaky_relu": lambda x, p: ig.leaky_relu(x, 0.3) * x,
    "elu": lambda x, p: ig.elu(x, 1.7),
    "gelu_exact": lambda x, p: ig.gelu(x, approximate=False),
    "gelu_tanh": lambda x, p: ig.gelu(x, approximate="tanh"),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_activation_derivatives_to_second_order(name):
    fn = ig.trace(GRAD_CASES[name], XG, PG)
    ig.check_grads(fn, [XG, PG], order=2)


def test_activation_derivatives_match_closed_forms():
    # independent of finite differences: the textbook first derivatives
    x = XG
    want = {
        "silu": sp.expit(x) * (1 + x * (1 - sp.expit(x))),
        "softplus": sp.expit(x),
        "elu": np.where(x > 0, 1.0, 1.7 * np.exp(x)),
        "leaky": np.where(x > 0, 1.0, 0.3),
        "gelu_exact": 0.5 * (1 + sp.erf(x / np.sqrt(2))) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi),
        "erf": 2 / np.sqrt(np.pi) * np.exp(-x * x),
        "expm1": np.exp(x),
        "rounding": np.zeros_like(x),
        "clip": ((x > -1.25) & (x < 2.0)).astype(np.float64),
    }
    fns = {"silu": ig.silu, "softplus": ig.softplus, "elu": lambda t: ig.elu(t, 1.7),
           "leaky": lambda t: ig.leaky_relu(t, 0.3), "gelu_exact": lambda t: ig.gelu(t, approximate=False),
           "erf": ig.erf, "expm1": ig.expm1, "rounding": lambda t: ig.floor(t) + ig.ceil(t) + ig.round(t),
           "clip": lambda t: ig.clip(t, -1.25, 2.0)}
    for name, f in fns.items():
        g = ig.grad(ig.trace(lambda t, f=f: ig.sum(f(t)), x))
        np.testing.assert_allclose(g(x), want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    gl = ig.grad(ig.trace(lambda t: ig.sum(ig.log1p(t)), PG))
    np.testing.assert_allclose(gl(PG), 1 / (1 + PG), rtol=1e-12)


def test_activation_derivatives_on_the_cpu_backend():
    x, p = XG[:6], PG[:4]
    fn = ig.trace(lambda x, p: (ig.gelu(x, approximate=False) + ig.elu(x) + ig.softplus(x, beta=2.0)
                                + ig.silu(x) + ig.erf(x) + ig.expm1(x) * 0.1, ig.log1p(p)), x, p)
    ig.check_grads(fn, [x, p], order=1, modes=("rev",), backend="cpu")


# --- logical ops -----------------------------------------------------------------------------

def test_logical_functions_and_operators():
    a = rng(4).random((3, 4)) < 0.5
    b = rng(5).random((3, 4)) < 0.5
    c = rng(6).random((4,)) < 0.5  # broadcasts against (3, 4)

    def fn(a, b, c):
        return {"and": ig.logical_and(a, b), "or": ig.logical_or(a, b), "not": ig.logical_not(a),
                "xor": ig.logical_xor(a, b), "&": a & b, "|": a | b, "^": a ^ b, "~": ~a,
                "&c": a & c, "c|": c | b, "^c": c ^ a, "and_true": a & True, "true_or": True | a,
                "false_xor": False ^ b, "or_false": ig.logical_or(a, False), "nested": ~(a & ~b) | c}

    want = {"and": a & b, "or": a | b, "not": ~a, "xor": a ^ b, "&": a & b, "|": a | b, "^": a ^ b,
            "~": ~a, "&c": a & c, "c|": c | b, "^c": c ^ a, "and_true": a.copy(), "true_or": np.ones_like(a),
            "false_xor": b.copy(), "or_false": a.copy(), "nested": ~(a & ~b) | c}
    for got in run_both(fn, a, b, c).values():
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == np.bool_, k
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_logical_ops_combine_comparisons():
    x = rng(7).uniform(-2, 2, (5, 6)).astype(np.float32)
    want = ((x > -1) & (x < 1)) | ~(x != x) & (x > 1.5)
    for got in run_both(lambda t: ((t > -1) & (t < 1)) | ~(t != t) & (t > 1.5), x).values():
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fn,what", [
    (lambda x, y: ig.logical_and(x, y), "logical_and"),
    (lambda x, y: ig.logical_or(y, x), "logical_or"),
    (lambda x, y: ig.logical_xor(x, y), "logical_xor"),
    (lambda x, y: ig.logical_not(x), "logical_not"),
    (lambda x, y: x & y, "logical_and"),
    (lambda x, y: y | x, "logical_or"),
    (lambda x, y: x ^ y, "logical_xor"),
    (lambda x, y: ~x, "logical_not"),
    (lambda x, y: y & 1, "logical_and"),
])
@pytest.mark.parametrize("spec", [f32[3], i32[3], f64[3], i64[3]])
def test_logical_ops_refuse_non_bool(fn, what, spec):
    msg = shape_error(fn, spec, bool_[3])
    assert f"{what} needs bool tensors" in msg, msg


# --- min, argmax, argmin ---------------------------------------------------------------------

def test_min_function_and_method():
    x = rng(8).standard_normal((3, 4, 5)).astype(np.float32)
    k = rng(9).integers(-50, 50, (4, 6)).astype(np.int64)

    def fn(x, k):
        return {"all": ig.min(x), "ax1": ig.min(x, axis=1), "ax02k": ig.min(x, axis=(0, 2), keepdims=True),
                "m_neg": x.min(axis=-1), "m_all": x.min(), "m_keep": x.min(1, True),
                "int": ig.min(k, axis=0), "int_m": k.min(), "max_m": x.max(axis=0)}

    want = {"all": x.min(), "ax1": x.min(1), "ax02k": x.min((0, 2), keepdims=True), "m_neg": x.min(-1),
            "m_all": x.min(), "m_keep": x.min(1, keepdims=True), "int": k.min(0), "int_m": k.min(),
            "max_m": x.max(0)}
    for got in run_both(fn, x, k).values():
        for name in want:
            assert got[name].dtype == want[name].dtype, name
            assert got[name].shape == want[name].shape, name
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_min_gradient_goes_to_the_minimum():
    x = rng(10).permutation(12).reshape(3, 4).astype(np.float64) * 0.37
    fn = ig.trace(lambda t: (ig.min(t, axis=1) * 2.0, t.min(axis=0), ig.min(t * t)), x)
    ig.check_grads(fn, [x], order=2)
    g = ig.grad(ig.trace(lambda t: ig.sum(ig.min(t, axis=1)), x))(x)
    want = (x == x.min(1, keepdims=True)).astype(np.float64)
    np.testing.assert_array_equal(g, want)


def _arg_cases(x, fl, bo, sc):
    return {"max": ig.argmax(x), "min": ig.argmin(x), "max0": ig.argmax(x, axis=0),
            "min1": ig.argmin(x, axis=1), "maxm1k": ig.argmax(x, axis=-1, keepdims=True),
            "mmax": x.argmax(axis=2), "mmin": x.argmin(0, True),
            "mmaxall": x.argmax(), "nan_max": ig.argmax(fl, axis=1), "nan_min": fl.argmin(axis=1),
            "nan_all": ig.argmax(fl), "nan_min0": ig.argmin(fl, axis=0), "bool": ig.argmax(bo, axis=1),
            "bool_min": bo.argmin(axis=0), "scalar": ig.argmax(sc)}


def _arg_refs(x, fl, bo, sc):
    return {"max": np.argmax(x), "min": np.argmin(x), "max0": np.argmax(x, 0), "min1": np.argmin(x, 1),
            "maxm1k": np.argmax(x, -1, keepdims=True),
            "mmax": np.argmax(x, 2), "mmin": np.argmin(x, 0, keepdims=True), "mmaxall": np.argmax(x),
            "nan_max": np.argmax(fl, 1), "nan_min": np.argmin(fl, 1), "nan_all": np.argmax(fl),
            "nan_min0": np.argmin(fl, 0), "bool": np.argmax(bo, 1), "bool_min": np.argmin(bo, 0),
            "scalar": np.argmax(sc)}


def test_argmax_argmin_match_numpy_with_ties_nans_and_keepdims():
    # few distinct values, so ties are everywhere: the first index must win
    x = rng(11).integers(0, 3, (3, 4, 5)).astype(np.float32)
    fl = np.array([[1.0, np.nan, 3.0, np.nan], [5.0, 2.0, 5.0, 0.0], [np.inf, 1.0, np.inf, -np.inf],
                   [-np.inf, -np.inf, 0.0, np.nan], [2.0, 2.0, 2.0, 2.0]], np.float32)
    bo = rng(12).random((3, 6)) < 0.5
    bo[0] = False
    sc = np.array(4.0, np.float32)
    want = _arg_refs(x, fl, bo, sc)
    for backend, got in run_both(_arg_cases, x, fl, bo, sc).items():
        for name in want:
            assert got[name].dtype == np.int32, (backend, name, got[name].dtype)
            w = np.asarray(want[name])
            assert got[name].shape == w.shape, (backend, name, got[name].shape, w.shape)
            np.testing.assert_array_equal(got[name], w, err_msg=f"{backend} {name}")


def test_argmax_keepdims_with_axis_none_keeps_every_axis():
    x = np.array([[3.0, 1.0, 4.0, 1.0], [5.0, 9.0, 2.0, 6.0], [5.0, 3.0, 5.0, 8.0]], np.float32)
    got = ig.trace(lambda t: (ig.argmax(t, keepdims=True), t.argmin(keepdims=True), ig.max(t, keepdims=True)), x)(x)
    want = (np.argmax(x, keepdims=True), np.argmin(x, keepdims=True), np.max(x, keepdims=True))
    assert [g.shape for g in got] == [w.shape for w in want] == [(1, 1)] * 3
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_argmax_keepdims_of_a_scalar_is_a_scalar():
    sc = np.array(4.0, np.float32)
    got = ig.trace(lambda t: ig.argmax(t, keepdims=True), sc)(sc)
    assert got.shape == np.argmax(sc, keepdims=True).shape == ()


def test_argmax_of_integers():
    k = rng(13).integers(-3, 3, (4, 7)).astype(np.int64)
    k32 = k.astype(np.int32)
    for got in run_both(lambda a, b: (ig.argmax(a, axis=1), ig.argmin(b, axis=0), a.argmax()), k, k32).values():
        np.testing.assert_array_equal(got[0], np.argmax(k, 1))
        np.testing.assert_array_equal(got[1], np.argmin(k32, 0))
        np.testing.assert_array_equal(got[2], np.argmax(k))


@FEW
@given(st.data())
def test_argmax_argmin_random_shapes(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    vals = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0, np.nan, -np.inf])))
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    keepdims = data.draw(st.booleans())
    fn = ig.trace(lambda t: (ig.argmax(t, axis=axis, keepdims=keepdims), t.argmin(axis, keepdims)), vals)
    got_max, got_min = fn(vals)
    want_max = np.argmax(vals, axis=axis, keepdims=keepdims)
    want_min = np.argmin(vals, axis=axis, keepdims=keepdims)
    for g, w in ((got_max, want_max), (got_min, want_min)):
        w = np.asarray(w)
        assert g.dtype == np.int32
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def test_argmax_does_not_block_gradients_of_other_uses():
    x = np.array([[0.3, 1.9, -0.4, 1.1], [2.2, -1.3, 0.6, 0.1], [-0.7, 0.2, 0.9, 1.4]])
    fn = ig.trace(lambda t: t * ig.argmax(t, axis=1, keepdims=True).astype(ig.f64)
                  + ig.argmin(t).astype(ig.f64), x)
    ig.check_grads(fn, [x], order=2)
    g = ig.grad(ig.trace(lambda t: ig.sum(t * ig.argmax(t, axis=1, keepdims=True).astype(ig.f64)), x))(x)
    np.testing.assert_array_equal(g, np.broadcast_to(np.argmax(x, 1)[:, None], x.shape).astype(np.float64))


def test_argmax_bad_axis():
    assert "out of range" in shape_error(lambda x: ig.argmax(x, axis=2), f32[3, 4])
    assert "out of range" in shape_error(lambda x: x.argmin(axis=-3), f32[3, 4])


# --- cumsum ----------------------------------------------------------------------------------

def test_cumsum_dtypes_axes_and_lengths_on_both_backends():
    r = rng(14)
    x = r.uniform(0.0, 1.0, (3, 9, 5)).astype(np.float32)  # non-negative: no cancellation
    d = r.standard_normal((17,))
    k = r.integers(-100, 100, (6, 8)).astype(np.int32)
    big = r.integers(-2**40, 2**40, (4, 3)).astype(np.int64)
    bo = r.random((5, 7)) < 0.5
    one = r.standard_normal((4, 1)).astype(np.float32)

    def fn(x, d, k, big, bo, one):
        return {"x0": ig.cumsum(x, 0), "x1": ig.cumsum(x, axis=1), "xlast": ig.cumsum(x), "xm2": ig.cumsum(x, -2),
                "d": ig.cumsum(d, 0), "k0": ig.cumsum(k, 0), "k1": ig.cumsum(k, 1), "big": ig.cumsum(big, 0),
                "bo": ig.cumsum(bo, 1), "bo0": ig.cumsum(bo, axis=0), "one": ig.cumsum(one, 1)}

    want = {"x0": np.cumsum(x, 0, dtype=np.float64), "x1": np.cumsum(x, 1, dtype=np.float64),
            "xlast": np.cumsum(x, -1, dtype=np.float64), "xm2": np.cumsum(x, -2, dtype=np.float64),
            "d": np.cumsum(d), "k0": np.cumsum(k, 0), "k1": np.cumsum(k, 1), "big": np.cumsum(big, 0),
            "bo": np.cumsum(bo, 1), "bo0": np.cumsum(bo, 0), "one": one}
    dtypes = {"x0": np.float32, "x1": np.float32, "xlast": np.float32, "xm2": np.float32, "d": np.float64,
              "k0": np.int32, "k1": np.int32, "big": np.int64, "bo": np.int32, "bo0": np.int32,
              "one": np.float32}
    for backend, got in run_both(fn, x, d, k, big, bo, one).items():
        assert set(got) == set(want)
        for name, w in want.items():
            g = got[name]
            assert g.dtype == dtypes[name], (backend, name, g.dtype)
            assert g.shape == w.shape, (backend, name)
            if dtypes[name] == np.float32:
                np.testing.assert_allclose(g, w, err_msg=f"{backend} {name}", **F32_TOL)
            elif dtypes[name] == np.float64:
                np.testing.assert_allclose(g, w, err_msg=f"{backend} {name}", **F64_TOL)
            else:
                np.testing.assert_array_equal(g, w, err_msg=f"{backend} {name}")


@FEW
@given(st.data())
def test_cumsum_random_shapes_axes_and_dtypes(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=11))
    dtype = data.draw(st.sampled_from([np.float64, np.int32, np.int64, np.bool_]))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    if dtype == np.bool_:
        x = data.draw(hnp.arrays(np.bool_, shape))
    elif dtype == np.float64:
        x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-100, 100)))
    else:
        x = data.draw(hnp.arrays(dtype, shape, elements=st.integers(-1000, 1000)))
    got = ig.trace(lambda t: ig.cumsum(t, axis), x)(x)
    want = np.cumsum(x, axis=axis)
    assert got.shape == want.shape
    assert got.dtype == (np.int32 if dtype == np.bool_ else dtype)
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
    else:
        np.testing.assert_array_equal(got, want)


def test_cumsum_gradient():
    x = rng(15).standard_normal((3, 7))
    fn = ig.trace(lambda t: (ig.cumsum(t, 1) * t, ig.cumsum(t * t, axis=0)), x)
    ig.check_grads(fn, [x], order=2)
    # d/dx_j sum_i cumsum(x)_i = number of prefixes containing j = n - j
    g = ig.grad(ig.trace(lambda t: ig.sum(ig.cumsum(t, 1)), x))(x)
    np.testing.assert_array_equal(g, np.broadcast_to(np.arange(7, 0, -1.0), x.shape))


def test_cumsum_bad_axis():
    assert "out of range" in shape_error(lambda x: ig.cumsum(x, 2), f32[3, 4])


# --- einsum ----------------------------------------------------------------------------------

EINSUM_CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ("ij->", [(3, 4)]),
    ("ij->j", [(3, 4)]),
    ("ij->ji", [(3, 4)]),
    ("ijk->kij", [(2, 3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,i->", [(5,)] * 2),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("ba,ca", [(3, 4), (5, 4)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("ij,ij", [(3, 4), (3, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("...ij,jk", [(2, 3, 4), (4, 5)]),
    ("...i->i...", [(2, 3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ij,jk,ki->", [(2, 3), (3, 4), (4, 2)]),
    ("ab,bc,ad->cd", [(2, 3), (3, 4), (2, 5)]),
    ("ij,jk->ik", [(3, 1), (4, 5)]),   # size-1 broadcast of the contracted index
    ("bij,bjk->bik", [(1, 3, 4), (2, 4, 5)]),  # size-1 broadcast of the batch index
    ("ij , jk -> ik", [(2, 3), (3, 2)]),  # spaces
    ("Ab,ab", [(2, 3), (4, 3)]),
    ("i,->i", [(3,), ()]),
    (",->", [(), ()]),
    ("ij,jk->ik", [(2, 0), (0, 3)]),  # an empty contraction gives zeros
    ("i...,i...->...", [(3, 2, 2), (3, 1, 2)]),
    ("...,...->...", [(2, 3), (3,)]),
    ("ab,ab->", [(1, 3), (2, 1)]),
    ("a,b,c->abc", [(2,), (3,), (1,)]),
]


def test_einsum_matches_numpy_on_both_backends():
    r = rng(16)
    arrays = [[r.standard_normal(s).astype(np.float32) for s in shapes] for _, shapes in EINSUM_CASES]
    flat = [a for group in arrays for a in group]

    def fn(*xs):
        out, i = [], 0
        for spec, shapes in EINSUM_CASES:
            out.append(ig.einsum(spec, *xs[i:i + len(shapes)]))
            i += len(shapes)
        return tuple(out)

    want = [np.einsum(spec, *[a.astype(np.float64) for a in group])
            for (spec, _), group in zip(EINSUM_CASES, arrays)]
    for backend, got in run_both(fn, *flat).items():
        for (spec, shapes), g, w in zip(EINSUM_CASES, got, want):
            msg = f"{backend} {spec} {shapes}"
            assert g.dtype == np.float32, msg
            assert g.shape == w.shape, (msg, g.shape, w.shape)
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=msg)


def test_einsum_of_integers_and_mixed_dtypes():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.arange(20, dtype=np.int32).reshape(4, 5) - 7
    c = rng(17).standard_normal((4, 5)).astype(np.float32)
    for got in run_both(lambda a, b, c: (ig.einsum("ij,jk->ik", a, b), ig.einsum("ij,jk->ki", a, c)),
                        a, b, c).values():
        assert got[0].dtype == np.int32
        np.testing.assert_array_equal(got[0], a @ b)
        assert got[1].dtype == np.float32
        np.testing.assert_allclose(got[1], (a @ c.astype(np.float64)).T, rtol=1e-5, atol=1e-5)


@st.composite
def einsum_problems(draw):
    """A random einsum: 1-3 operands over letters of random sizes (some axes size 1, to
    broadcast), explicit or implicit output; operands in float64."""
    letters = draw(st.lists(st.sampled_from("abcdeXY"), min_size=1, max_size=5, unique=True))
    sizes = {c: draw(st.integers(1, 4)) for c in letters}
    n = draw(st.integers(1, 3))
    terms = [draw(st.lists(st.sampled_from(letters), max_size=4, unique=True)) for _ in range(n)]
    shapes = [tuple(1 if draw(st.integers(0, 5)) == 0 else sizes[c] for c in t) for t in terms]
    spec = ",".join("".join(t) for t in terms)
    if draw(st.booleans()):
        used = sorted(set("".join(spec.split(","))))
        out = draw(st.permutations(used))
        out = out[:draw(st.integers(0, len(out)))]
        spec += "->" + "".join(out)
    seed = draw(st.integers(0, 2**16))
    r = np.random.default_rng(seed)
    return spec, [r.standard_normal(s) for s in shapes]


@FEW
@given(einsum_problems())
def test_einsum_random_specs_match_numpy(problem):
    spec, xs = problem
    want = np.einsum(spec, *xs)
    got = ig.trace(lambda *t: ig.einsum(spec, *t), *xs)(*xs)
    assert got.shape == np.shape(want), (spec, [x.shape for x in xs])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=spec)


@FEW
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
def test_einsum_ellipsis_batch_matmul_random_shapes(batch, m, k, n):
    sa, sb = batch.input_shapes
    r = rng(18)
    a, b = r.standard_normal(sa + (m, k)), r.standard_normal(sb + (k, n))
    got = ig.trace(lambda x, y: ig.einsum("...ij,...jk->...ik", x, y), a, b)(a, b)
    want = np.einsum("...ij,...jk->...ik", a, b)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_einsum_gradients():
    r = rng(19)
    q, k, v = r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 3))
    fn = ig.trace(lambda q, k, v: (ig.einsum("bqd,bkd->bqk", q, k),
                                   ig.einsum("bqd,bkd,bke->bqe", q, k, v),
                                   ig.einsum("bqd->", q) * ig.einsum("bkd,bke->de", k, v)), q, k, v)
    ig.check_grads(fn, [q, k, v], order=2)
    # d/dA sum(A @ B) = 1 B^T: every row is B's row sums
    a, b = r.standard_normal((3, 4)), r.standard_normal((4, 5))
    ga, gb = ig.grad(ig.trace(lambda a, b: ig.sum(ig.einsum("ij,jk->ik", a, b)), a, b), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga, np.broadcast_to(b.sum(1), (3, 4)), rtol=1e-12)
    np.testing.assert_allclose(gb, np.broadcast_to(a.sum(0)[:, None], (4, 5)), rtol=1e-12)


@pytest.mark.parametrize("spec,specs,words", [
    ("ijk,jk->ik", [f32[3, 4], f32[4, 5]], ["ijk", "does not fit", "[3, 4]"]),
    ("ij,j->i", [f32[3, 4], f32[4, 5]], ["'j'", "does not fit", "[4, 5]"]),
    ("ii->i", [f32[3, 3]], ["'ii'", "repeats an index"]),
    ("ij,jj->i", [f32[3, 4], f32[4, 4]], ["'jj'", "repeats an index"]),
    ("ij,jk->iz", [f32[3, 4], f32[4, 5]], ["'z'", "appears in no operand"]),
    ("ij,jk->ii", [f32[3, 4], f32[4, 5]], ["'ii'", "distinct letters"]),
    ("ij,jk->ik", [f32[3, 4]], ["names 2 operands but got 1"]),
    ("ij->ij", [f32[3, 4], f32[4, 5]], ["names 1 operands but got 2"]),
    ("ij,jk->ik", [f32[3, 4], f32[5, 6]], ["index 'j'", "sizes 4 and 5"]),
    ("i1,jk->ik", [f32[3, 4], f32[4, 5]], ["letters only"]),
    ("...ijk->k", [f32[3, 4]], ["more indices than operand"]),
])
def test_einsum_errors_name_the_problem(spec, specs, words):
    msg = shape_error(lambda *xs: ig.einsum(spec, *xs), *specs)
    for w in words:
        assert w in msg, (w, msg)


def test_einsum_needs_an_operand():
    with pytest.raises(ig.ShapeError, match="at least one operand"):
        ig.trace(lambda x: ig.einsum("->"), f32[3])


# --- dtype promotion -------------------------------------------------------------------------

def test_binary_promotion_of_mixed_operands():
    r = rng(20)
    a32 = r.integers(-20, 20, (3, 4)).astype(np.int32)
    a64 = r.integers(-20, 20, (4,)).astype(np.int64)
    x32 = r.standard_normal((3, 4)).astype(np.float32)
    x64 = r.standard_normal((3, 1))
    bo = r.random((3, 4)) < 0.5

    def fn(a32, a64, x32, x64, bo):
        return {"i32*f32": a32 * x32, "f32*i32": x32 * a32, "i32+i64": a32 + a64, "i64-i32": a64 - a32,
                "f32+f64": x32 + x64, "f64*f32": x64 * x32, "bool+i32": bo + a32, "i32*bool": a32 * bo,
                "bool*f32": bo * x32, "bool+i64": bo + a64, "i64*f32": a64 * x32, "i32/f64": a32 / x64,
                "max_i32_f32": ig.maximum(a32, x32), "min_f32_f64": ig.minimum(x32, x64),
                "lt_i32_f32": a32 < x32, "eq_i32_i64": a32 == a64}

    f = np.float64
    want = {"i32*f32": (a32 * x32.astype(f), np.float32), "f32*i32": (x32.astype(f) * a32, np.float32),
            "i32+i64": (a32.astype(np.int64) + a64, np.int64), "i64-i32": (a64 - a32.astype(np.int64), np.int64),
            "f32+f64": (x32.astype(f) + x64, np.float64), "f64*f32": (x64 * x32.astype(f), np.float64),
            "bool+i32": (bo.astype(np.int32) + a32, np.int32), "i32*bool": (a32 * bo, np.int32),
            "bool*f32": (bo * x32.astype(f), np.float32), "bool+i64": (bo + a64, np.int64),
            "i64*f32": (a64 * x32.astype(f), np.float32), "i32/f64": (a32 / x64, np.float64),
            "max_i32_f32": (np.maximum(a32, x32.astype(f)), np.float32),
            "min_f32_f64": (np.minimum(x32.astype(f), x64), np.float64),
            "lt_i32_f32": (a32 < x32, np.bool_), "eq_i32_i64": (a32 == a64, np.bool_)}
    for backend, got in run_both(fn, a32, a64, x32, x64, bo).items():
        assert set(got) == set(want)
        for name, (w, dt) in want.items():
            g = got[name]
            assert g.dtype == dt, (backend, name, g.dtype)
            assert g.shape == w.shape, (backend, name)
            tol = F32_TOL if dt == np.float32 else dict(rtol=1e-12, atol=0)
            np.testing.assert_allclose(g, w, err_msg=f"{backend} {name}", **tol)


def test_where_promotes_its_branches():
    r = rng(21)
    c = r.random((3, 4)) < 0.5
    a32 = r.integers(-9, 9, (3, 4)).astype(np.int32)
    a64 = r.integers(-9, 9, (4,)).astype(np.int64)
    x32 = r.standard_normal((3, 4)).astype(np.float32)
    x64 = r.standard_normal((3, 1))
    bo = r.random((3, 4)) < 0.5

    def fn(c, a32, a64, x32, x64, bo):
        return {"i32|f32": ig.where(c, a32, x32), "f32|i32": ig.where(c, x32, a32),
                "i32|i64": ig.where(c, a32, a64), "f32|f64": ig.where(c, x32, x64),
                "bool|i32": ig.where(c, bo, a32), "i64|bool": ig.where(c, a64, bo),
                "i32|0.5": ig.where(c, a32, 0.5), "2|f64": ig.where(c, 2, x64)}

    want = {"i32|f32": (np.where(c, a32, x32.astype(np.float64)), np.float32),
            "f32|i32": (np.where(c, x32.astype(np.float64), a32), np.float32),
            "i32|i64": (np.where(c, a32, a64), np.int64), "f32|f64": (np.where(c, x32, x64), np.float64),
            "bool|i32": (np.where(c, bo.astype(np.int32), a32), np.int32),
            "i64|bool": (np.where(c, a64, bo.astype(np.int64)), np.int64),
            "i32|0.5": (np.where(c, a32, 0.5), np.float32), "2|f64": (np.where(c, 2.0, x64), np.float64)}
    for backend, got in run_both(fn, c, a32, a64, x32, x64, bo).items():
        for name, (w, dt) in want.items():
            g = got[name]
            assert g.dtype == dt, (backend, name, g.dtype)
            assert g.shape == w.shape, (backend, name)
            tol = F32_TOL if dt == np.float32 else dict(rtol=1e-12, atol=0)
            np.testing.assert_allclose(g, w, err_msg=f"{backend} {name}", **tol)


def test_promotion_is_differentiable_in_the_float_operand():
    k = np.array([[1, -2, 3], [0, 4, -1]], np.int32)
    x = np.array([[0.5, -1.2, 0.3], [2.0, -0.7, 1.1]])
    fn = ig.trace(lambda x, k: ig.where(k > 0, x * k, k) + x * x * k.astype(ig.i64), x.astype(np.float32), k)
    ig.check_grads(fn, [x.astype(np.float32), k], order=2)
    g = ig.grad(ig.trace(lambda x, k: ig.sum(x * k), x.astype(np.float32), k))(x.astype(np.float32), k)
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, k.astype(np.float32))
