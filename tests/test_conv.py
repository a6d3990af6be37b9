"""Convolutions, pooling and random numbers, against oracles that share no code with irgrad.

- conv1d / conv2d / conv_transpose2d / max_pool2d / avg_pool2d against direct numpy loops
  written here (gather for conv, scatter for the transposed conv, explicit windows for
  pooling), over hypothesis-drawn shapes, strides, paddings (int, pair, "same", "valid"),
  dilations, groups and biases: on the interpreter in float64 and the CPU backend in
  float32; and against torch.nn.functional when torch is installed (only those tests
  skip without it);
- the `expand` pass's algorithms (every `conv=` option) and the O0/O2 pipelines agree;
- derivatives to order 2 against finite differences (check_grads), and a small conv
  net's gradients against torch autograd;
- interpreter = CPU = CUDA emulation, and NVRTC compiles of a conv net's training step;
- bad arguments are ShapeErrors at trace time naming the problem and this file's line;
- ig.random: a Threefry-2x32 written here (checked on Random123's known answers) against
  random_bits, the same numbers on every backend and outside a trace, and the
  distributions (scipy.stats: moments and Kolmogorov-Smirnov);
- IR text round trips of conv, window (fill=-inf), reverse and random_bits, and what
  `expand` turns a conv into.

Three bugs these tests found are fixed; the tests that caught them stay as regression
tests, and the strings WINDOW_JVP_BUG (max_pool2d's forward-mode derivative was NaN with
padding), VEC4_BUG (the CUDA renderer's float4 loop kernels handed lane 0's index to all
four lanes: wrong conv weight gradients on CUDA) and CPU_FMA_BUG (uniform with
minval/maxval differed in the last bit on the CPU backend: a contracted multiply-add)
say what each one guards.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy import stats

import irgrad as ig
from irgrad.backends.cuda import runtime
from irgrad.backends.cuda.emulate import run_emulated
from irgrad.backends.cuda.renderer import render_cuda_program
from irgrad.codegen.lowering import lower_function, plan_for_codegen
from irgrad.frontend.function import trace
from irgrad.ir.ops.random import threefry2x32
from irgrad.passes.expand import ALGORITHMS as EXPAND_ALGORITHMS
from irgrad.pytree import flatten
from irgrad.transforms.training import _spec_tree, training_step

from cli_runner import run_cli

from cuda_markers import ARCHS, HAVE_CXX, HAVE_NVRTC, SMEM_LIMIT, needs_cxx, needs_nvrtc  # noqa: E402,F401

THIS_FILE = os.path.basename(__file__)


def hyp(n: int):
    """Few, derandomized examples (every compile costs ~0.3 s)."""
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


pytestmark = pytest.mark.usefixtures("private_cache")  # (conftest.py: a fresh compile cache)


def close(got, want, dtype, scale=None):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    if dtype == np.float64:
        tol = 1e-10
    else:
        tol = 2e-5 * max(1.0, float(np.abs(want).max()) if want.size else 1.0)
        if scale is not None:
            tol = max(tol, 2e-5 * scale)
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=tol)


# --- independent numpy references -----------------------------------------------------------

def _per_axis(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def resolve_padding(padding, k, d, n):
    """(low, high) per axis, PyTorch's meaning of int / tuple / "valid" / "same"."""
    if padding == "valid":
        return (0,) * n, (0,) * n
    if padding == "same":
        total = [dd * (kk - 1) for kk, dd in zip(k, d)]
        return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
    p = _per_axis(padding, n)
    return p, p


def ref_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Direct cross-correlation: y[n, o, j] = sum_{c, k} x[n, c, j s + k d - lo] w[o, c, k]
    (positions outside x contribute nothing), grouped, in float64."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n = x.ndim - 2
    s, d = _per_axis(stride, n), _per_axis(dilation, n)
    K, S = w.shape[2:], x.shape[2:]
    lo, hi = resolve_padding(padding, K, d, n)
    N, C = x.shape[:2]
    O, cg = w.shape[:2]
    og = O // groups
    J = tuple((S[i] + lo[i] + hi[i] - d[i] * (K[i] - 1) - 1) // s[i] + 1 for i in range(n))
    y = np.zeros((N, O) + J)
    for j in itertools.product(*map(range, J)):
        for k in itertools.product(*map(range, K)):
            pos = tuple(j[i] * s[i] + k[i] * d[i] - lo[i] for i in range(n))
            if not all(0 <= p < S[i] for i, p in enumerate(pos)):
                continue
            xv = x[(slice(None), slice(None)) + pos]  # [N, C]
            for g in range(groups):
                wk = w[(slice(g * og, (g + 1) * og), slice(None)) + k]  # [og, cg]
                y[(slice(None), slice(g * og, (g + 1) * og)) + j] += xv[:, g * cg:(g + 1) * cg] @ wk.T
    if b is not None:
        y += np.asarray(b, np.float64).reshape((1, O) + (1,) * n)
    return y


def ref_conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The transposed conv as a scatter: every input pixel (i, j) adds x[i, j] w[:, :, a, c]
    to the output at (i s + a d - p, j s + c d - p); the output is
    (H - 1) s - 2 p + d (k - 1) + output_padding + 1 long."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    s, p = _per_axis(stride, 2), _per_axis(padding, 2)
    op, d = _per_axis(output_padding, 2), _per_axis(dilation, 2)
    N, C, H, W = x.shape
    _, og, kh, kw = w.shape
    cg = C // groups
    out = [(sz - 1) * ss - 2 * pp + dd * (kk - 1) + oo + 1
           for sz, ss, pp, dd, kk, oo in zip((H, W), s, p, d, (kh, kw), op)]
    y = np.zeros((N, og * groups, out[0], out[1]))
    for i, j, a, c in itertools.product(range(H), range(W), range(kh), range(kw)):
        r, q = i * s[0] + a * d[0] - p[0], j * s[1] + c * d[1] - p[1]
        if not (0 <= r < out[0] and 0 <= q < out[1]):
            continue
        for g in range(groups):
            y[:, g * og:(g + 1) * og, r, q] += x[:, g * cg:(g + 1) * cg, i, j] @ w[g * cg:(g + 1) * cg, :, a, c]
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y


def ref_pool(x, kernel, stride, padding, kind):
    """max (padding never wins) or average (padding counts as 0, divide by kH kW) pooling."""
    x = np.asarray(x, np.float64)
    k = _per_axis(kernel, 2)
    s = k if stride is None else _per_axis(stride, 2)
    p = _per_axis(padding, 2)
    N, C, H, W = x.shape
    Ho, Wo = [(a + 2 * pp - kk) // ss + 1 for a, pp, kk, ss in zip((H, W), p, k, s)]
    y = np.zeros((N, C, Ho, Wo))
    for i, j in itertools.product(range(Ho), range(Wo)):
        r0, c0 = i * s[0] - p[0], j * s[1] - p[1]
        win = x[:, :, max(r0, 0):min(r0 + k[0], H), max(c0, 0):min(c0 + k[1], W)]
        if kind == "max":
            y[:, :, i, j] = win.max(axis=(2, 3))
        else:
            y[:, :, i, j] = win.sum(axis=(2, 3)) / (k[0] * k[1])
    return y


def test_references_on_hand_computed_values():
    """The oracles themselves, on cases small enough to do by hand."""
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)  # [1 2 3 4 5]
    np.testing.assert_array_equal(ref_conv(x, np.array([[[1.0, -1.0]]])), [[[-1, -1, -1, -1]]])
    np.testing.assert_array_equal(ref_conv(x, np.array([[[1.0, 1.0]]]), padding=1, stride=2),
                                  [[[1, 5, 9]]])
    np.testing.assert_array_equal(ref_conv(x, np.array([[[1.0, 10.0]]]), dilation=2), [[[31, 42, 53]]])
    np.testing.assert_array_equal(ref_conv(x, np.array([[[1.0, 2.0, 3.0]]]), padding="same"),
                                  [[[8, 14, 20, 26, 14]]])
    t = ref_conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)
    np.testing.assert_array_equal(t, np.ones((1, 1, 4, 4)))
    t = ref_conv_transpose2d(np.ones((1, 1, 2, 1)), np.ones((1, 1, 2, 1)))
    np.testing.assert_array_equal(t[0, 0, :, 0], [1, 2, 1])
    img = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(ref_pool(img, 2, None, 0, "max"), [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(ref_pool(img, 2, 2, 1, "avg")[0, 0, 0], [0, 3 / 4, 3 / 4])
    # grouped conv = the groups' convs side by side
    rng = np.random.default_rng(0)
    xg, wg = rng.standard_normal((2, 4, 5, 5)), rng.standard_normal((6, 2, 3, 3))
    y = ref_conv(xg, wg, groups=2)
    np.testing.assert_allclose(y[:, :3], ref_conv(xg[:, :2], wg[:3]))
    np.testing.assert_allclose(y[:, 3:], ref_conv(xg[:, 2:], wg[3:]))


# --- hypothesis cases --------------------------------------------------------------------------

@st.composite
def conv_cases(draw, n):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    K = tuple(draw(st.integers(1, 3)) for _ in range(n))
    d = tuple(draw(st.integers(1, 2)) for _ in range(n))
    mode = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    if mode == "same":
        s = (1,) * n
        padding = "same"
    else:
        s = tuple(draw(st.integers(1, 3)) for _ in range(n))
        if mode == "int":
            padding = draw(st.integers(0, 2))
        elif mode == "tuple":
            padding = tuple(draw(st.integers(0, 2)) for _ in range(n))
        else:
            padding = "valid"
    lo, hi = resolve_padding(padding, K, d, n)
    S = []
    for i in range(n):
        least = max(1, d[i] * (K[i] - 1) + 1 - lo[i] - hi[i])
        S.append(draw(st.integers(least, least + 5)))
    N = draw(st.integers(1, 2))
    stride = s[0] if len(set(s)) == 1 and draw(st.booleans()) else s
    dilation = d[0] if len(set(d)) == 1 and draw(st.booleans()) else d
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, groups * cg) + tuple(S))
    w = rng.standard_normal((groups * og, cg) + K)
    b = rng.standard_normal(groups * og) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w, b, kw


@st.composite
def transpose_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    K = tuple(draw(st.integers(1, 3)) for _ in range(2))
    s = tuple(draw(st.integers(1, 3)) for _ in range(2))
    d = tuple(draw(st.integers(1, 2)) for _ in range(2))
    S = tuple(draw(st.integers(1, 4)) for _ in range(2))
    op = tuple(draw(st.integers(0, max(ss, dd) - 1)) for ss, dd in zip(s, d))
    # padding up to the size that still leaves one output row (PyTorch's limit), so the
    # internal conv's padding (d (k-1) - p) is sometimes negative: a crop
    p = []
    for sz, ss, dd, kk, oo in zip(S, s, d, K, op):
        full = (sz - 1) * ss + dd * (kk - 1) + oo + 1
        p.append(draw(st.integers(0, min(3, (full - 1) // 2))))
    N = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, groups * cg) + S)
    w = rng.standard_normal((groups * cg, og) + K)
    b = rng.standard_normal(groups * og) if draw(st.booleans()) else None
    kw = dict(stride=s, padding=tuple(p), output_padding=op, groups=groups, dilation=d)
    return x, w, b, kw


@st.composite
def pool_cases(draw):
    k = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    p = tuple(draw(st.integers(0, kk // 2)) for kk in k)
    S = tuple(draw(st.integers(max(1, kk - 2 * pp), max(1, kk - 2 * pp) + 5)) for kk, pp in zip(k, p))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2 ** 16))
    x = np.random.default_rng(seed).standard_normal((N, C) + S)
    kernel = k[0] if k[0] == k[1] and draw(st.booleans()) else k
    padding = p[0] if p[0] == p[1] and draw(st.booleans()) else p
    return x, kernel, stride, padding


def _conv_fn(n, kw, with_bias):
    op = ig.conv1d if n == 1 else ig.conv2d
    if with_bias:
        return lambda x, w, b: op(x, w, b, **kw)
    return lambda x, w: op(x, w, **kw)


def _run_everywhere(fn, args64, want, cpu=True):
    """fn traced on float64 args on the interpreter (O0 and O2), and on float32 on the CPU."""
    f64 = ig.trace(fn, *args64)
    for pipeline in ("O0", "O2"):
        close(ig.compile(f64, "numpy", pipeline=pipeline)(*args64), want, np.float64)
    if cpu:
        args32 = [a.astype(np.float32) for a in args64]
        f32 = ig.trace(fn, *args32)
        got = ig.compile(f32, "cpu")(*args32)
        assert got.dtype == np.float32
        close(got, want, np.float32)


@pytest.mark.parametrize("n", [1, 2])
@hyp(10)
@given(data=st.data())
def test_conv_matches_numpy_reference(n, data):
    x, w, b, kw = data.draw(conv_cases(n))
    want = ref_conv(x, w, b, **kw)
    if kw["padding"] == "same":
        assert want.shape[2:] == x.shape[2:]
    args = [x, w] + ([b] if b is not None else [])
    _run_everywhere(_conv_fn(n, kw, b is not None), args, want)


@hyp(10)
@given(case=transpose_cases())
def test_conv_transpose2d_matches_scatter_reference(case):
    x, w, b, kw = case
    want = ref_conv_transpose2d(x, w, b, **kw)
    args = [x, w] + ([b] if b is not None else [])
    fn = ((lambda x, w, b: ig.conv_transpose2d(x, w, b, **kw)) if b is not None
          else (lambda x, w: ig.conv_transpose2d(x, w, **kw)))
    _run_everywhere(fn, args, want)


@hyp(8)
@given(case=pool_cases())
def test_pooling_matches_numpy_reference(case):
    x, kernel, stride, padding = case

    def fn(x):
        return (ig.max_pool2d(x, kernel, stride, padding), ig.avg_pool2d(x, kernel, stride, padding))

    want = [ref_pool(x, kernel, stride, padding, "max"), ref_pool(x, kernel, stride, padding, "avg")]
    f64 = ig.trace(fn, x)
    for pipeline in ("O0", "O2"):
        for g, wv in zip(ig.compile(f64, "numpy", pipeline=pipeline)(x), want):
            close(g, wv, np.float64)
    x32 = x.astype(np.float32)
    for g, wv in zip(ig.compile(ig.trace(fn, x32), "cpu")(x32), want):
        close(g, wv, np.float32)


def test_conv_float32_on_the_interpreter_stays_float32():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 5, 5)).astype(np.float32), rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    f = ig.trace(lambda x, w: ig.conv2d(x, w, padding=1), x, w)
    y = ig.compile(f, "numpy")(x, w)
    assert y.dtype == np.float32 and str(f.ir.result_types[0]) == "f32[1,3,5,5]"
    close(y, ref_conv(x, w, padding=1), np.float32)


# --- against PyTorch ---------------------------------------------------------------------------

def _t(a):
    torch = pytest.importorskip("torch")
    return None if a is None else torch.tensor(np.asarray(a, np.float64))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("n", [1, 2])
@hyp(12)
@given(data=st.data())
def test_conv_matches_torch(n, data):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, kw = data.draw(conv_cases(n))
    tfn = F.conv1d if n == 1 else F.conv2d
    want = tfn(_t(x), _t(w), _t(b), **kw).numpy()
    args = [x, w] + ([b] if b is not None else [])
    got = ig.compile(ig.trace(_conv_fn(n, kw, b is not None), *args), "numpy")(*args)
    close(got, want, np.float64)


@hyp(15)
@given(case=transpose_cases())
def test_conv_transpose2d_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b, kw = case
    want = torch.nn.functional.conv_transpose2d(_t(x), _t(w), _t(b), **kw).numpy()
    args = [x, w] + ([b] if b is not None else [])
    fn = ((lambda x, w, b: ig.conv_transpose2d(x, w, b, **kw)) if b is not None
          else (lambda x, w: ig.conv_transpose2d(x, w, **kw)))
    got = ig.compile(ig.trace(fn, *args), "numpy")(*args)
    close(got, want, np.float64)


@hyp(15)
@given(case=pool_cases())
def test_pooling_matches_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, kernel, stride, padding = case
    f = ig.trace(lambda x: (ig.max_pool2d(x, kernel, stride, padding),
                            ig.avg_pool2d(x, kernel, stride, padding)), x)
    mx, av = ig.compile(f, "numpy")(x)
    close(mx, F.max_pool2d(_t(x), kernel, stride, padding).numpy(), np.float64)
    close(av, F.avg_pool2d(_t(x), kernel, stride, padding, count_include_pad=True).numpy(), np.float64)


# --- the expand pass: algorithms and pipelines agree -------------------------------------------

# every algorithm the pass offers (another may be added: each is checked the same way)
ALGORITHMS = [a for a in EXPAND_ALGORITHMS if a != "auto"]
PIPELINES = ["O0", "O2"] + [f"expand{{conv={a}}},O2" for a in ALGORITHMS]
EXPAND_CASES = {
    # name: (x shape, w shape, conv kwargs, conv1d?)
    "1x1": ((2, 6, 5, 4), (4, 6, 1, 1), {}, False),  # gemm needs no window: x is the matrix
    "grouped_strided": ((2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2), False),
    "wide_reduction": ((1, 8, 6, 6), (5, 8, 3, 3), dict(padding="same"), False),
    "conv1d": ((3, 3, 11), (6, 1, 3), dict(stride=2, padding=1, groups=3), True),
}


@pytest.mark.parametrize("name", sorted(EXPAND_CASES))
def test_expand_algorithms_agree(name):
    xs, ws, kw, one_d = EXPAND_CASES[name]
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    op = ig.conv1d if one_d else ig.conv2d
    f = ig.trace(lambda x, w: op(x, w, **kw), x, w)
    want = ref_conv(x, w, **kw)
    close(ig.compile(f, "numpy", pipeline="O0")(x, w), want, np.float32)
    for pipeline in PIPELINES:
        close(ig.compile(f, "cpu", pipeline=pipeline)(x, w), want, np.float32)
    # the option really picks the algorithm, and "auto" is one of them
    texts = {a: str(ig.run_pipeline(f.ir, f"expand{{conv={a}}}")) for a in ALGORITHMS}
    auto = str(ig.run_pipeline(f.ir, "expand"))
    for text in [auto, *texts.values()]:
        assert "= conv " not in text, text
    assert auto in texts.values()
    assert "= matmul " in texts["gemm"] and "= matmul " not in texts["direct"]
    assert "= window " in texts["direct"]
    assert ("= window " in texts["gemm"]) == (name != "1x1")
    assert all(texts[a] != texts["direct"] for a in ALGORITHMS if a != "direct")  # honoured
    for text in texts.values():  # and the interpreter agrees on each expanded program
        got = ig.compile(ig.parse(text).functions[f.ir.name], "numpy", pipeline="O0")(x, w)
        close(got, want, np.float32)


def test_expand_rejects_unknown_algorithm():
    f = ig.trace(lambda x, w: ig.conv2d(x, w), np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)))
    with pytest.raises(ig.PipelineError, match="option 'conv'.*gemm.*direct.*'fft'"):
        ig.run_pipeline(f.ir, "expand{conv=fft}")


# --- derivatives -----------------------------------------------------------------------------

def _distinct(rng, shape, spacing=0.1):
    """Values at least `spacing` apart (max-pooling without ties)."""
    n = math.prod(shape)
    return (rng.permutation(n) * spacing - n * spacing / 2).reshape(shape)


WINDOW_JVP_BUG = (
    "window's JVP re-emits `window` on the tangent with the primal's attrs, fill included, so "
    "max_pool2d's padding (fill=-inf) puts -inf into the tangent windows and the JVP of "
    "reduce_max (tangent * one-hot mask) gives -inf * 0 = NaN at every padded window")

GRAD_CASES = {
    # name: (fn, argument shapes, check_grads modes)
    "conv2d": (lambda x, w: ig.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
               [(1, 4, 5, 5), (4, 2, 2, 2)], ("fwd", "rev")),
    "conv2d_bias_same": (lambda x, w, b: ig.conv2d(x, w, b, padding="same", dilation=2),
                         [(2, 1, 4, 3), (2, 1, 2, 2), (2,)], ("fwd", "rev")),
    "conv1d": (lambda x, w: ig.conv1d(x, w, stride=2, padding=2, dilation=2, groups=1),
               [(2, 2, 7), (3, 2, 3)], ("fwd", "rev")),
    "conv_transpose2d": (lambda x, w: ig.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1,
                                                          groups=2, dilation=(1, 2)),
                         [(1, 4, 2, 3), (4, 1, 2, 2)], ("fwd", "rev")),
    "conv_transpose2d_crop": (lambda x, w: ig.conv_transpose2d(x, w, stride=(1, 2), padding=(2, 1)),
                              [(1, 2, 4, 3), (2, 3, 2, 2)], ("fwd", "rev")),
    "max_pool2d": (lambda x: ig.max_pool2d(x, (2, 3), stride=(2, 1)), [(1, 2, 5, 4)], ("fwd", "rev")),
    "max_pool2d_padded_rev": (lambda x: ig.max_pool2d(x, 3, stride=2, padding=1), [(1, 2, 5, 4)], ("rev",)),
    "max_pool2d_padded": (lambda x: ig.max_pool2d(x, 3, stride=2, padding=1), [(1, 2, 5, 4)], ("fwd", "rev")),
    "avg_pool2d": (lambda x: ig.avg_pool2d(x, (2, 3), stride=(1, 2), padding=(1, 1)), [(2, 1, 4, 5)],
                   ("fwd", "rev")),
}
GRAD_PARAMS = sorted(GRAD_CASES)


@pytest.mark.parametrize("name", GRAD_PARAMS)
def test_check_grads_order_2(name):
    fn, shapes, modes = GRAD_CASES[name]
    rng = np.random.default_rng(3)
    if name.startswith("max_pool2d"):
        args = [_distinct(rng, shapes[0])]
    else:
        args = [rng.standard_normal(s) for s in shapes]
    f = ig.trace(fn, *args)
    ig.check_grads(f, args, order=2, modes=modes)


def test_max_pool2d_jvp_with_padding_is_finite():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    f = ig.trace(lambda x: ig.max_pool2d(x, 2, stride=2, padding=1), x)
    y, t = ig.compile(ig.jvp(f), "numpy")(x, np.ones_like(x))
    np.testing.assert_array_equal(y, ref_pool(x, 2, 2, 1, "max"))
    np.testing.assert_array_equal(t, np.ones((1, 1, 3, 3)))  # the max moves with x + e t


def test_check_grads_catches_a_wrong_conv_gradient():
    """The check above can fail: a conv of a stop_gradient'd weight has AD gradient 0 with
    respect to w, its finite differences do not."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((1, 1, 2, 2))
    f = ig.trace(lambda x, w: ig.conv2d(x, ig.stop_gradient(w)), x, w)
    with pytest.raises(ig.GradientCheckError):
        ig.check_grads(f, [x, w], order=1, modes=("rev",))


def _net_params(rng):
    return {
        "c1": rng.standard_normal((4, 2, 3, 3)) * 0.4, "b1": rng.standard_normal(4) * 0.1,
        "c2": rng.standard_normal((6, 2, 2, 2)) * 0.4,  # groups=2
        "t": rng.standard_normal((6, 2, 3, 3)) * 0.4,   # transposed, groups=2 -> 4 channels
        "l": rng.standard_normal((3, 4, 3)) * 0.4,      # conv1d over the flattened rows
    }


def _ig_net(p, x):
    h = ig.tanh(ig.conv2d(x, p["c1"], p["b1"], stride=1, padding=1))        # [N, 4, 8, 8]
    h = ig.max_pool2d(h, 2)                                                  # [N, 4, 4, 4]
    h = ig.tanh(ig.conv2d(h, p["c2"], stride=2, padding=1, dilation=1, groups=2))  # [N, 6, 3, 3]
    h = ig.conv_transpose2d(h, p["t"], stride=2, padding=1, output_padding=1, groups=2)  # [N, 4, 6, 6]
    h = ig.avg_pool2d(h, 3, stride=1, padding=1)                             # [N, 4, 6, 6]
    h = ig.reshape(h, (h.shape[0], 4, 36))
    h = ig.conv1d(h, p["l"], stride=3, dilation=2)                           # [N, 3, 11]
    return ig.sum(h * h) * 0.5


def _torch_net(p, x):
    import torch
    F = torch.nn.functional
    h = torch.tanh(F.conv2d(x, p["c1"], p["b1"], stride=1, padding=1))
    h = F.max_pool2d(h, 2)
    h = torch.tanh(F.conv2d(h, p["c2"], stride=2, padding=1, dilation=1, groups=2))
    h = F.conv_transpose2d(h, p["t"], stride=2, padding=1, output_padding=1, groups=2)
    h = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=True)
    h = h.reshape(h.shape[0], 4, 36)
    h = F.conv1d(h, p["l"], stride=3, dilation=2)
    return (h * h).sum() * 0.5


def test_conv_net_gradients_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    p = _net_params(rng)
    x = rng.standard_normal((2, 2, 8, 8))
    vg = ig.value_and_grad(ig.trace(_ig_net, p, x), argnums=(0, 1))
    val, (gp, gx) = ig.compile(vg, "numpy")(p, x)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tx = torch.tensor(x, requires_grad=True)
    loss = _torch_net(tp, tx)
    loss.backward()
    np.testing.assert_allclose(val, loss.item(), rtol=1e-10)
    for k in p:
        np.testing.assert_allclose(gp[k], tp[k].grad.numpy(), rtol=1e-9, atol=1e-10, err_msg=k)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    # and the CPU backend's float32 gradients are close
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    x32 = x.astype(np.float32)
    vg32 = ig.value_and_grad(ig.trace(_ig_net, p32, x32), argnums=(0, 1))
    val32, (gp32, gx32) = ig.compile(vg32, "cpu")(p32, x32)
    np.testing.assert_allclose(val32, loss.item(), rtol=1e-4)
    for k in p:
        close(gp32[k], tp[k].grad.numpy(), np.float32, scale=10)
    close(gx32, tx.grad.numpy(), np.float32, scale=10)


# --- interpreter = CPU = CUDA emulation; NVRTC -----------------------------------------------

def _layers(x, w, wt):
    y = ig.conv2d(x, w, stride=2, padding=1, groups=2)
    return (y, ig.conv1d(ig.reshape(x, (2, 4, 49)), ig.reshape(w[:, :, 0, :], (6, 2, 3)), padding="same", groups=2),
            ig.conv_transpose2d(y, wt, stride=2, padding=1, output_padding=1, groups=2),
            ig.max_pool2d(x, 3, stride=2, padding=1), ig.avg_pool2d(x, 2, stride=1, padding=1))


def _net_loss(p, x):
    h = ig.relu(ig.conv2d(x, p["w1"], p["b1"], padding=1))
    h = ig.max_pool2d(h, 2)
    h = ig.conv2d(h, p["w2"], stride=2, padding=1, groups=2)
    return ig.mean(ig.square(ig.avg_pool2d(h, 2)))


def _net_init(rng):
    return {"w1": (rng.standard_normal((4, 2, 3, 3)) * 0.3).astype(np.float32),
            "b1": (rng.standard_normal(4) * 0.1).astype(np.float32),
            "w2": (rng.standard_normal((6, 2, 3, 3)) * 0.3).astype(np.float32)}


VEC4_BUG = (
    "CUDA renderer, vectorized ('loop vec4') kernels: a load index like (i*64 + x) % 8 + "
    "((i*64 + x) // 8) % 8 * 8 (a reshape splitting the innermost axis, f32[2,8,8] -> [2,64]) "
    "is not affine across lanes, so each lane renders it, but the lane-invariant floor "
    "division renders its argument i*64 + x in the group scope (x = lane 0) and memoizes it "
    "there; lanes 1-3 find that memo through Scope.lookup's walk to the parent and read lane "
    "0's element: the four lanes store one value ([0,0,0,0,4,4,4,4,...]). A conv's weight "
    "gradient (window of x times the transposed cotangent) hits it")


@needs_cxx
def test_interpreter_cpu_and_cuda_emulation_agree_on_layers():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    wt = rng.standard_normal((6, 2, 2, 2)).astype(np.float32)
    f = ig.trace(_layers, x, w, wt)
    want = ig.compile(f, "numpy", pipeline="O0")(x, w, wt)
    for backend, opts in (("cpu", {}), ("cuda", {"device": "emulate"})):
        for pipeline in ("O0", "O2"):
            got = ig.compile(f, backend, pipeline=pipeline, **opts)(x, w, wt)
            for a, b in zip(got, want):
                close(a, b, np.float32)
    # the layers' values themselves, against the numpy oracles
    y = ref_conv(x, w, stride=2, padding=1, groups=2)
    close(want[0], y, np.float32)
    close(want[1], ref_conv(x.reshape(2, 4, 49), w[:, :, 0, :], padding="same", groups=2), np.float32)
    close(want[2], ref_conv_transpose2d(y, wt, stride=2, padding=1, output_padding=1, groups=2),
          np.float32, scale=10)
    close(want[3], ref_pool(x, 3, 2, 1, "max"), np.float32)
    close(want[4], ref_pool(x, 2, 1, 1, "avg"), np.float32)


@needs_cxx
@pytest.mark.parametrize("vectorize", [False, True])
def test_conv_backward_on_cuda_emulation_agrees(vectorize):
    """value_and_grad of a conv net loss: interpreter = CPU = the emulated CUDA kernels (with
    and without the float4 loop kernels)."""
    rng = np.random.default_rng(6)
    p = _net_init(rng)
    xb = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    g = ig.value_and_grad(ig.trace(_net_loss, p, xb))
    leaves = flatten(p)[0] + [xb]
    want = flatten(ig.compile(g, "numpy", pipeline="O0")(p, xb))[0]
    for a, b in zip(flatten(ig.compile(g, "cpu")(p, xb))[0], want):
        close(a, b, np.float32)
    got = run_emulated(plan_for_codegen(g.ir, "O2"), leaves, vectorize=vectorize)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        close(a, np.asarray(b), np.float32)


@needs_cxx
def test_cuda_vec4_loop_through_reshape_and_broadcast():
    """The smallest program showing the bug above (no conv in it)."""
    f = next(iter(ig.parse("""
func @f(%y: f32[2,8,8]) -> f32[1,2,64] {
  %0 = reshape %y : f32[2,64]
  %1 = broadcast %0 {dims=[1, 2]} : f32[1,2,64]
  return %1
}""")))
    y = np.arange(128, dtype=np.float32).reshape(2, 8, 8)
    got = ig.compile(f, "cuda", device="emulate")(y)
    np.testing.assert_array_equal(got, y.reshape(1, 2, 64))


@needs_cxx
def test_conv_training_step_on_emulated_device_matches_numpy_and_cpu():
    rng = np.random.default_rng(7)
    params = _net_init(rng)
    batches = [(rng.standard_normal((3, 2, 8, 8)).astype(np.float32),) for _ in range(3)]
    specs = (ig.f32[3, 2, 8, 8],)
    steps = [ig.compile_step(_net_loss, params, ig.optim.SGD(0.5), specs, backend=be, **opts)
             for be, opts in (("numpy", {}), ("cpu", {}), ("cuda", {"device": "emulate"}))]
    losses = [[s(*b) for b in batches] for s in steps]
    for other in losses[1:]:
        np.testing.assert_allclose(other, losses[0], rtol=1e-5)
    assert losses[0][2] < losses[0][0]  # it learns
    for s in steps[1:]:
        for k in params:
            close(s.params[k], steps[0].params[k], np.float32)


def test_conv_training_step_numpy_and_cpu_agree_and_learn():
    rng = np.random.default_rng(7)
    params = _net_init(rng)
    batches = [(rng.standard_normal((3, 2, 8, 8)).astype(np.float32),) for _ in range(3)]
    specs = (ig.f32[3, 2, 8, 8],)
    steps = [ig.compile_step(_net_loss, params, ig.optim.SGD(0.5), specs, backend=be)
             for be in ("numpy", "cpu")]
    losses = [[s(*b) for b in batches] for s in steps]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    # the first loss is the plain forward pass, on the oracles
    x = batches[0][0].astype(np.float64)
    h = np.maximum(ref_conv(x, params["w1"], params["b1"], padding=1), 0)
    h = ref_pool(h, 2, None, 0, "max")
    h = ref_conv(h, params["w2"], stride=2, padding=1, groups=2)
    np.testing.assert_allclose(losses[0][0], np.mean(ref_pool(h, 2, None, 0, "avg") ** 2), rtol=1e-5)
    assert losses[0][2] < losses[0][0]  # it learns
    for k in params:
        close(steps[1].params[k], steps[0].params[k], np.float32)


def _check_resources(log: str, cp, where: str):
    res = runtime.parse_resources(log)
    for ln in cp.launches:
        assert ln.name in res, f"{where}: no ptxas report for {ln.name}"
    for name, r in res.items():
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, f"{where}: {name} spills: {r}"
        assert r["smem"] <= SMEM_LIMIT, f"{where}: {name} uses {r['smem']} bytes of shared memory"
        assert r["registers"] <= 255


@needs_nvrtc
def test_nvrtc_compiles_conv_net_training_step():
    params = _net_init(np.random.default_rng(8))
    loss = trace(_net_loss, _spec_tree(params), ig.f32[16, 2, 8, 8])
    fn = training_step(loss, ig.optim.SGD(0.1))
    cp = render_cuda_program(lower_function(plan_for_codegen(fn.ir, "O2")))
    assert len(cp.launches) >= 4
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda a: runtime.nvrtc_compile(cp.source, a), ARCHS))
    for arch, (cubin, log) in zip(ARCHS, results):
        assert cubin[:4] == b"\x7fELF"
        _check_resources(log, cp, f"conv step {arch}")


# --- bad arguments: ShapeErrors at trace time naming the problem and this file ------------

S = ig.f32
BAD = [
    # (id, fn, specs, message regex)
    ("kernel_too_big", lambda x, w: ig.conv2d(x, w, padding=1), [S[1, 1, 3, 3], S[1, 1, 6, 5]],
     r"conv2d: the kernel .*larger than the padded input \[5, 5\]"),
    ("dilated_kernel_too_big", lambda x, w: ig.conv1d(x, w, dilation=3), [S[1, 1, 6], S[1, 1, 3]],
     r"conv1d: the kernel .*dilated extent \[7\].*larger than the padded input \[6\]"),
    ("groups_do_not_divide", lambda x, w: ig.conv2d(x, w, groups=2), [S[1, 3, 5, 5], S[4, 1, 3, 3]],
     r"groups=2 must divide the input channels \(3"),
    ("groups_do_not_divide_out", lambda x, w: ig.conv2d(x, w, groups=2), [S[1, 4, 5, 5], S[3, 2, 3, 3]],
     r"groups=2 must divide .*output channels \(3"),
    ("weight_channels", lambda x, w: ig.conv2d(x, w), [S[1, 4, 5, 5], S[2, 3, 3, 3]],
     r"weight \[2, 3, 3, 3\] expects 3 input channels .*x \[1, 4, 5, 5\] has 4"),
    ("negative_padding", lambda x, w: ig.conv2d(x, w, padding=(1, -1)), [S[1, 1, 5, 5], S[1, 1, 3, 3]],
     r"padding must be >= 0"),
    ("stride_zero", lambda x, w: ig.conv2d(x, w, stride=0), [S[1, 1, 5, 5], S[1, 1, 3, 3]],
     r"stride must be >= 1"),
    ("dilation_zero", lambda x, w: ig.conv1d(x, w, dilation=0), [S[1, 1, 5], S[1, 1, 3]],
     r"dilation must be >= 1"),
    ("same_with_stride_2", lambda x, w: ig.conv2d(x, w, stride=2, padding="same"), [S[1, 1, 5, 5], S[1, 1, 3, 3]],
     r"padding='same' needs stride 1"),
    ("bad_padding_word", lambda x, w: ig.conv2d(x, w, padding="full"), [S[1, 1, 5, 5], S[1, 1, 3, 3]],
     r"padding must be an int, 2 ints, 'same' or 'valid'"),
    ("stride_wrong_length", lambda x, w: ig.conv2d(x, w, stride=(1, 1, 1)), [S[1, 1, 5, 5], S[1, 1, 3, 3]],
     r"stride must be an int or 2 ints"),
    ("x_rank", lambda x, w: ig.conv2d(x, w), [S[1, 5, 5], S[1, 1, 3, 3]], r"conv2d needs x in NCHW"),
    ("w_rank", lambda x, w: ig.conv1d(x, w), [S[1, 1, 5], S[1, 3]], r"conv1d needs x in NCL.*OIL"),
    ("mixed_dtypes", lambda x, w: ig.conv2d(x, w), [S[1, 1, 5, 5], ig.f64[1, 1, 3, 3]],
     r"one dtype"),
    ("integer_input", lambda x, w: ig.conv2d(x, w), [ig.i32[1, 1, 5, 5], ig.i32[1, 1, 3, 3]],
     r"floating-point"),
    ("bias_shape", lambda x, w, b: ig.conv2d(x, w, b), [S[1, 2, 5, 5], S[3, 2, 3, 3], S[2]],
     r"bias must have shape \[3\].*got \[2\]"),
    ("bias_rank", lambda x, w, b: ig.conv1d(x, w, b), [S[1, 2, 5], S[3, 2, 3], S[1, 3]],
     r"bias must have shape \[3\].*got \[1, 3\]"),
    ("transpose_channels", lambda x, w: ig.conv_transpose2d(x, w), [S[1, 4, 3, 3], S[3, 2, 2, 2]],
     r"conv_transpose2d: weight \[3, 2, 2, 2\] needs 4 input channels"),
    ("transpose_output_padding", lambda x, w: ig.conv_transpose2d(x, w, stride=2, output_padding=2),
     [S[1, 1, 3, 3], S[1, 1, 2, 2]], r"output_padding \[2, 2\] must be smaller than stride"),
    ("transpose_empty_output", lambda x, w: ig.conv_transpose2d(x, w, padding=2),
     [S[1, 1, 1, 1], S[1, 1, 2, 2]], r"the output would be"),
    ("pool_padding_over_half", lambda x: ig.max_pool2d(x, 3, padding=2), [S[1, 1, 6, 6]],
     r"max_pool2d: padding must be >= 0 and at most half the kernel.*padding=\[2, 2\]"),
    ("avg_pool_padding_over_half", lambda x: ig.avg_pool2d(x, (2, 4), padding=(1, 3)), [S[1, 1, 6, 6]],
     r"avg_pool2d: padding must be >= 0 and at most half"),
    ("pool_kernel_too_big", lambda x: ig.avg_pool2d(x, 4), [S[1, 1, 3, 6]],
     r"avg_pool2d: the kernel \(kernel_size \[4, 4\].*larger than the padded input \[3, 6\]"),
    ("pool_rank", lambda x: ig.max_pool2d(x, 2), [S[4, 4]], r"max_pool2d needs x in NCHW"),
    ("pool_stride_zero", lambda x: ig.max_pool2d(x, 2, stride=0), [S[1, 1, 4, 4]], r"stride must be >= 1"),
]


@pytest.mark.parametrize("name,fn,specs,message", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_shape_error_at_trace_time(name, fn, specs, message):
    with pytest.raises(ig.ShapeError) as info:
        ig.trace(fn, *specs)
    msg = str(info.value)
    assert re.search(message, msg), msg
    # the user's line: this file, the line the lambda is written on
    line = fn.__code__.co_firstlineno
    assert info.value.loc is not None and os.path.basename(info.value.loc.file) == THIS_FILE, msg
    assert info.value.loc.line == line, msg
    assert msg.startswith(f"{info.value.loc.file}:{line}: "), msg


# --- random numbers --------------------------------------------------------------------------

M32 = 0xFFFFFFFF


def my_threefry(k0: int, k1: int, c0: int, c1: int) -> tuple[int, int]:
    """Threefry-2x32, 20 rounds, in Python integers (Salmon et al. 2011, Random123)."""
    rot = [13, 15, 26, 6, 17, 29, 16, 24]
    ks = [k0, k1, k0 ^ k1 ^ 0x1BD11BDA]
    x = [(c0 + ks[0]) & M32, (c1 + ks[1]) & M32]
    for r in range(20):
        x[0] = (x[0] + x[1]) & M32
        rr = rot[r % 8]
        x[1] = ((x[1] << rr) | (x[1] >> (32 - rr))) & M32
        x[1] ^= x[0]
        if r % 4 == 3:
            i = r // 4 + 1
            x[0] = (x[0] + ks[i % 3]) & M32
            x[1] = (x[1] + ks[(i + 1) % 3] + i) & M32
    return x[0], x[1]


def test_threefry_known_answers():
    """Random123's known-answer vectors (the ones JAX tests against)."""
    kat = [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
           ((M32, M32), (M32, M32), (0x1CB996FC, 0xBB002BE7)),
           ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]
    for (k0, k1), (c0, c1), want in kat:
        assert my_threefry(k0, k1, c0, c1) == want
        got = threefry2x32(np.uint32(k0), np.uint32(k1), np.uint32(c0), np.uint32(c1))
        assert (int(got[0]), int(got[1])) == want
    # random_bits(key)[i] is word 0 of Threefry at counter (0, i)
    assert int(ig.random.bits(np.array([0, 0], np.int32), (1,))[0]) & M32 == 0x6B200159


@pytest.mark.parametrize("seed", [0, 42, 2 ** 40 + 7, -1])
def test_random_bits_match_an_independent_threefry(seed):
    key = ig.random.key(seed)
    s = seed & ((1 << 64) - 1)
    assert key.dtype == np.int32 and key.shape == (2,)
    k0, k1 = s >> 32, s & M32
    assert [int(v) & M32 for v in key] == [k0, k1]
    shape = (3, 5, 7)
    got = ig.random.bits(key, shape)
    assert got.dtype == np.int32 and got.shape == shape
    want = np.array([my_threefry(k0, k1, 0, i)[0] for i in range(105)], np.uint64).astype(np.uint32)
    np.testing.assert_array_equal(got.reshape(-1).view(np.uint32), want)
    # traced, on the interpreter
    f = ig.trace(lambda k: ig.random.bits(k, shape), key)
    np.testing.assert_array_equal(ig.compile(f, "numpy")(key), got)


def _random_draws(key):
    """The same draws traced (key a tensor) or eager (key a numpy array)."""
    keys = ig.random.split(key, 8)
    return (ig.random.bits(keys[0], (5, 67)),
            ig.random.uniform(keys[1], (1000,)),
            ig.random.uniform(keys[2], (33, 7), "f64"),
            ig.random.normal(keys[3], (1000,)),
            ig.random.normal(keys[4], (9, 11), "f64", mean=1.0, std=2.0),
            ig.random.bernoulli(keys[5], 0.3, (500,)),
            ig.random.uniform(keys[6], (1000,), minval=-2.0, maxval=3.0),
            ig.random.uniform(keys[7], (33, 7), "f64", minval=-2.0, maxval=3.0))


def _assert_random_same(got, want, where, scaled_exact=False):
    bits, u32, u64, n32, n64, bern, s32, s64 = got
    assert bits.dtype == np.int32 and u32.dtype == np.float32 and u64.dtype == np.float64
    assert n32.dtype == np.float32 and n64.dtype == np.float64 and bern.dtype == np.bool_
    assert s32.dtype == np.float32 and s64.dtype == np.float64
    np.testing.assert_array_equal(bits, want[0], err_msg=where)
    np.testing.assert_array_equal(u32, want[1], err_msg=where)  # [0, 1): bit-identical
    np.testing.assert_array_equal(u64, want[2], err_msg=where)
    np.testing.assert_allclose(n32, want[3], rtol=0, atol=1e-6, err_msg=where)
    np.testing.assert_allclose(n64, want[4], rtol=0, atol=1e-6, err_msg=where)
    np.testing.assert_array_equal(bern, want[5], err_msg=where)
    if scaled_exact:
        np.testing.assert_array_equal(s32, want[6], err_msg=where)
        np.testing.assert_array_equal(s64, want[7], err_msg=where)
    else:  # u (max - min) + min: one rounding apart at most (an FMA)
        np.testing.assert_allclose(s32, want[6], rtol=0, atol=5 * 2.0 ** -23, err_msg=where)
        np.testing.assert_allclose(s64, want[7], rtol=0, atol=5 * 2.0 ** -52, err_msg=where)


def test_random_eager_equals_traced_interpreter_and_cpu():
    key = ig.random.key(1234)
    f = ig.trace(_random_draws, key)
    want = ig.compile(f, "numpy", pipeline="O0")(key)
    _assert_random_same(_random_draws(key), want, "eager", scaled_exact=True)
    _assert_random_same(ig.compile(f, "numpy")(key), want, "numpy O2", scaled_exact=True)
    _assert_random_same(ig.compile(f, "cpu")(key), want, "cpu")
    # the bits are the independent Threefry's
    a, b = (int(v) & M32 for v in ig.random.split(key, 8)[0])
    np.testing.assert_array_equal(want[0].reshape(-1)[:20].view(np.uint32),
                                  [my_threefry(a, b, 0, i)[0] for i in range(20)])
    # and the unit uniforms are those bits scaled: the top 24 of word i (f32)
    a, b = (int(v) & M32 for v in ig.random.split(key, 8)[1])
    np.testing.assert_array_equal(want[1][:20], [(my_threefry(a, b, 0, i)[0] >> 8) / 2.0 ** 24
                                                 for i in range(20)])


CPU_FMA_BUG = (
    "ig.random.uniform(..., minval, maxval) computes u * (max - min) + min; the CPU backend "
    "marks elementwise float ops `contract` (llvm_text.ELEMENT_FLAGS), so LLVM fuses it into "
    "one FMA and the result differs from the interpreter's (and the CUDA emulation's) in the "
    "last bit, against ig.random's 'the same numbers on the interpreter, the CPU and the CUDA "
    "backend'")


def test_scaled_uniform_bit_identical_on_cpu():
    key = ig.random.key(1234)
    f = ig.trace(lambda k: (ig.random.uniform(k, (1000,), minval=-2.0, maxval=3.0),
                            ig.random.uniform(k, (1000,), "f64", minval=-2.0, maxval=3.0)), key)
    want = ig.compile(f, "numpy", pipeline="O0")(key)
    got = ig.compile(f, "cpu")(key)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@needs_cxx
def test_random_on_cuda_emulation_equals_interpreter():
    key = ig.random.key(99)
    f = ig.trace(_random_draws, key)
    want = ig.compile(f, "numpy", pipeline="O0")(key)
    _assert_random_same(ig.compile(f, "cuda", device="emulate")(key), want, "cuda emulate")
    _assert_random_same(ig.compile(f, "cuda", device="emulate", pipeline="O0")(key), want, "cuda O0")


def test_random_keys_and_splits():
    k = ig.random.key(0)
    ks = ig.random.split(k, 5)
    assert ks.shape == (5, 2) and ks.dtype == np.int32
    assert ig.random.split(k).shape == (2, 2)
    assert ig.random.split(k, 1).shape == (1, 2)
    assert len({tuple(r) for r in ks.tolist()} | {tuple(k.tolist())}) == 6
    draws = [ig.random.uniform(kk, (64,)) for kk in [k, *ks, ig.random.key(1)]]
    for a, b in itertools.combinations(draws, 2):
        assert np.mean(a == b) < 0.05
    np.testing.assert_array_equal(ig.random.uniform(k, (64,)), draws[0])  # pure: same key, same numbers
    assert not np.array_equal(ig.random.bits(ig.random.key(2 ** 32), (8,)), ig.random.bits(ig.random.key(1), (8,)))
    # split traced = split eager, and keys unpack
    f = ig.trace(lambda kk: ig.random.split(kk, 5), k)
    np.testing.assert_array_equal(ig.compile(f, "numpy")(k), ks)
    k1, k2 = ig.random.split(k)
    assert k1.shape == (2,) and not np.array_equal(k1, k2)
    # the first elements of a longer draw are not the shorter draw's (a different counter use
    # would be fine too): bits of one key are one stream, indexed by position
    np.testing.assert_array_equal(ig.random.bits(k, (10,)), ig.random.bits(k, (20,))[:10])


def test_random_key_accepts_uint32_and_int64_words():
    k = ig.random.key(7)
    a = ig.random.uniform(k, (8,))
    np.testing.assert_array_equal(ig.random.uniform(k.view(np.uint32), (8,)), a)
    np.testing.assert_array_equal(ig.random.uniform(k.astype(np.int64), (8,)), a)


N_STAT = 200_000


def _moments_ok(x, mean, var, mu4):
    n = x.size
    m, v = float(np.mean(x)), float(np.var(x))
    assert abs(m - mean) < 5 * math.sqrt(var / n), (m, mean)
    assert abs(v - var) < 5 * math.sqrt((mu4 - var ** 2) / n), (v, var)


@pytest.mark.parametrize("dtype,lo,hi", [("f32", 0.0, 1.0), ("f64", 0.0, 1.0), ("f32", -3.0, 5.0),
                                         ("f64", 10.0, 10.5)])
def test_uniform_distribution(dtype, lo, hi):
    u = ig.random.uniform(ig.random.key(11), (N_STAT,), dtype, minval=lo, maxval=hi)
    assert u.dtype == (np.float32 if dtype == "f32" else np.float64) and u.shape == (N_STAT,)
    assert u.min() >= lo and u.max() < hi
    w = hi - lo
    _moments_ok(u.astype(np.float64), (lo + hi) / 2, w * w / 12, w ** 4 / 80)
    assert stats.kstest(u.astype(np.float64), "uniform", args=(lo, w)).pvalue > 1e-3
    if (lo, hi) == (0.0, 1.0):
        # the resolution: 24 random bits in f32, 53 in f64 (not just 24 widened)
        fine = u.astype(np.float64) * 2.0 ** 24
        if dtype == "f32":
            assert np.all(fine == np.floor(fine))
        else:
            assert np.mean(fine != np.floor(fine)) > 0.99
            assert np.all(u * 2.0 ** 53 == np.floor(u * 2.0 ** 53))
        assert len(np.unique(u)) > 0.99 * N_STAT


@pytest.mark.parametrize("dtype,mean,std", [("f32", 0.0, 1.0), ("f64", 0.0, 1.0), ("f32", -1.0, 0.5),
                                            ("f64", 3.0, 2.0)])
def test_normal_distribution(dtype, mean, std):
    z = ig.random.normal(ig.random.key(12), (N_STAT,), dtype, mean=mean, std=std)
    assert z.dtype == (np.float32 if dtype == "f32" else np.float64)
    assert np.all(np.isfinite(z))
    z = z.astype(np.float64)
    _moments_ok(z, mean, std ** 2, 3 * std ** 4)
    assert stats.kstest(z, "norm", args=(mean, std)).pvalue > 1e-3
    tail = np.mean(np.abs(z - mean) > 3 * std)
    assert abs(tail - 0.0027) < 5 * math.sqrt(0.0027 / N_STAT)
    skew, kurt = stats.skew(z), stats.kurtosis(z)
    assert abs(skew) < 5 * math.sqrt(6 / N_STAT) and abs(kurt) < 5 * math.sqrt(24 / N_STAT)


def test_bits_are_uniform_per_bit_and_across_words():
    b = ig.random.bits(ig.random.key(13), (N_STAT,)).view(np.uint32)
    per_bit = [(b >> np.uint32(i)) & np.uint32(1) for i in range(32)]
    for i, v in enumerate(per_bit):
        assert abs(v.mean() - 0.5) < 5 * math.sqrt(0.25 / N_STAT), i
    # neighbouring words are uncorrelated
    x = b.astype(np.float64)
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5 / math.sqrt(N_STAT)
    # the top byte is uniform over 256 values (chi-square)
    counts = np.bincount((b >> np.uint32(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.93, 1.0])
def test_bernoulli_frequency(p):
    x = ig.random.bernoulli(ig.random.key(14), p, (N_STAT,))
    assert x.dtype == np.bool_ and x.shape == (N_STAT,)
    if p in (0.0, 1.0):
        assert np.all(x == bool(p))
        return
    assert abs(x.mean() - p) < 5 * math.sqrt(p * (1 - p) / N_STAT)


def test_bernoulli_with_a_tensor_probability():
    k = ig.random.key(15)
    probs = np.array([0.2, 0.8], np.float32)
    f = ig.trace(lambda k, p: ig.random.bernoulli(k, ig.reshape(p, (2, 1)), (2, 20000)), k, probs)
    x = ig.compile(f, "numpy")(k, probs)
    assert x.shape == (2, 20000) and x.dtype == np.bool_
    for row, p in zip(x, probs):
        assert abs(row.mean() - p) < 5 * math.sqrt(p * (1 - p) / row.size)


RANDOM_ERRORS = [
    ("key_len_3", lambda: ig.random.uniform(np.array([1, 2, 3], np.int32), (4,)), r"i32\[2\]"),
    ("key_2d", lambda: ig.random.bits(np.zeros((2, 2), np.int32), (4,)), r"i32\[2\]"),
    ("float_key", lambda: ig.random.normal(np.array([1.0, 2.0]), (4,)), r"float64\[2\]"),
    ("p_above_1", lambda: ig.random.bernoulli(ig.random.key(0), 1.5, (4,)), r"0 <= p <= 1, got 1.5"),
    ("p_below_0", lambda: ig.random.bernoulli(ig.random.key(0), -0.1, (4,)), r"0 <= p <= 1"),
    ("negative_shape", lambda: ig.random.uniform(ig.random.key(0), (3, -1)), r"sizes >= 0"),
    ("int_dtype", lambda: ig.random.uniform(ig.random.key(0), (3,), "i32"), r"float dtype"),
    ("split_0", lambda: ig.random.split(ig.random.key(0), 0), r"num >= 1"),
    ("seed_too_big", lambda: ig.random.key(2 ** 64), r"64 bits"),
]


@pytest.mark.parametrize("name,fn,message", RANDOM_ERRORS, ids=[r[0] for r in RANDOM_ERRORS])
def test_random_errors(name, fn, message):
    with pytest.raises(ig.ShapeError, match=message) as info:
        fn()
    assert THIS_FILE in str(info.value)


def test_random_errors_in_a_trace():
    with pytest.raises(ig.ShapeError, match=r"i32\[2\].*f32\[2\]") as info:
        ig.trace(lambda k: ig.random.uniform(k, (3,)), ig.f32[2])
    assert THIS_FILE in str(info.value)
    with pytest.raises(ig.ShapeError, match="0 <= p <= 1"):
        ig.trace(lambda k: ig.random.bernoulli(k, 2.0, (3,)), ig.i32[2])
    with pytest.raises(ig.ShapeError, match=r"i32\[2\]"):
        ig.trace(lambda k: ig.random.bits(k, (3,)), ig.i32[3])


# --- IR text ---------------------------------------------------------------------------------

def _everything(x, w, wt, k):
    y = ig.conv2d(x, w, padding=1, groups=2)
    m = ig.max_pool2d(y, 2, padding=1)                 # window fill=-inf
    t = ig.conv_transpose2d(m, wt, stride=2)           # reverse
    noise = ig.random.uniform(k, t.shape)              # random_bits
    return t + noise, m


def test_ir_text_round_trip_of_conv_window_reverse_random_bits():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    wt = rng.standard_normal((4, 2, 2, 2)).astype(np.float32)
    k = ig.random.key(3)
    f = ig.trace(_everything, x, w, wt, k)
    text = str(f.ir)
    for needle in ("= conv ", "= window ", "fill=-inf", "= reverse ", "= random_bits "):
        assert needle in text, needle
    m = ig.parse(text)
    assert str(m) == text
    g = m.functions[f.ir.name]
    args = (x, w, wt, k)
    want = ig.compile(f, "numpy", pipeline="O0")(*args)
    got = ig.compile(g, "numpy", pipeline="O0")(*args)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(want[1]).all()  # the -inf padding never wins a window
    # after expand: window and matmul (gemm), no conv; the text round trips too
    for pipeline, present in (("expand{conv=gemm}", ("window", "matmul")), ("expand{conv=direct}", ("window",))):
        expanded = str(ig.run_pipeline(f.ir, pipeline))
        for needle in present:
            assert f"= {needle} " in expanded, (pipeline, needle)
        assert "= conv " not in expanded
        assert str(ig.parse(expanded)) == expanded
        got = ig.compile(ig.parse(expanded).functions[f.ir.name], "numpy", pipeline="O0")(*args)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


CLI_MODEL = '''\
import irgrad as ig
from irgrad import f32


@ig.function
def net(x: f32[2, 4, 8, 8], w: f32[6, 2, 3, 3]):
    y = ig.conv2d(x, w, stride=2, padding=1, groups=2)
    return ig.max_pool2d(y, 2).sum()
'''


def test_irgrad_dump_after_expand_shows_window_and_matmul(tmp_path):
    (tmp_path / "model.py").write_text(CLI_MODEL)
    r = run_cli(tmp_path, "dump", "model.py:net", "-p", "expand{conv=gemm}")
    out = r.stdout
    assert str(ig.parse(out)) == out
    assert "= window " in out and "= matmul " in out and "= conv " not in out
    assert "fill=-inf" in out
    r = run_cli(tmp_path, "dump", "model.py:net", "-p", "O0")
    assert "= conv " in r.stdout and "= matmul " not in r.stdout
