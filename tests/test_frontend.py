"""The tracing DSL: `ig.function`, `ig.trace`, pytrees, numpy semantics of operators,
indexing, reductions and matmul, the library functions, errors that point at the user's
line, argument checking, and `ig.compile(..., backend="numpy")`.

numpy (and scipy) are the oracles; most checks trace in float64 so tolerances are tight.
"""

import inspect
import os

import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import irgrad as ig
from irgrad import bool_, f32, f64, i32, i64

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float64, low=-2.0, high=2.0):
    return RNG.uniform(low, high, shape).astype(dtype)


def check(fn, *args, rtol=1e-12, atol=1e-12, want=None):
    """Trace `fn` on the arrays `args`, run it, compare with `want` (default: fn on numpy)."""
    traced = ig.trace(fn, *args)
    got = traced(*args)
    want = fn(*args) if want is None else want
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert np.shape(got) == np.shape(want)
    return traced, got


def shape_error(fn, *specs) -> str:
    with pytest.raises(ig.ShapeError) as info:
        ig.trace(fn, *specs)
    return str(info.value)


def assert_points_here(msg: str, line: int):
    """The message starts with `file:line` naming this test file and `line`."""
    path, lineno = msg.split(": ", 1)[0].rsplit(":", 1)
    assert os.path.samefile(path, __file__), msg
    assert int(lineno) == line, msg


# --- ig.function and ig.trace --------------------------------------------------------------------

@ig.function
def affine(w: f32[4, 3], b: f32[3], x: f32[2, 4]):
    return ig.relu(x @ w + b)


def test_function_traces_from_annotations():
    ir = affine.ir
    assert ir.name == "affine"
    assert [(p.name, str(p.type)) for p in ir.params] == [("w", "f32[4,3]"), ("b", "f32[3]"),
                                                          ("x", "f32[2,4]")]
    assert [str(t) for t in ir.result_types] == ["f32[2,3]"]
    assert [op.opname for op in ir.ops] == ["matmul", "broadcast", "add", "const", "max"]
    w, b, x = rand(4, 3, dtype=np.float32), rand(3, dtype=np.float32), rand(2, 4, dtype=np.float32)
    out = affine(w, b, x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.maximum(x @ w + b, 0), rtol=1e-6)


def test_function_with_name_and_scalar_spec():
    @ig.function(name="scaled")
    def g(x: f64[3], s: f64[()]):
        return x * s

    assert g.name == "scaled" and str(g.ir.params[1].type) == "f64[]"
    # Python and numpy scalars are accepted for [()] specs
    np.testing.assert_array_equal(g(np.arange(3.0), 2.0), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(g(np.arange(3.0), np.float64(3)), [0.0, 3.0, 6.0])


def test_function_needs_annotations():
    with pytest.raises(ig.IrgradError, match="parameter 'y' of h needs a TensorSpec"):
        @ig.function
        def h(x: f32[3], y):
            return x


def test_trace_with_specs_and_arrays_gives_same_ir():
    def f(a, b):
        return ig.tanh(a) * b

    t1 = ig.trace(f, f32[2, 3], f32[3])
    t2 = ig.trace(f, np.zeros((2, 3), np.float32), np.zeros(3, np.float32))
    assert str(t1.ir) == str(t2.ir)


def test_pytrees_in_arguments_and_results():
    def f(params, xs, pair):
        h = xs[0] @ params["w"] + params["b"]
        return {"out": h, "extra": [xs[1] * 2.0, (pair[0] - pair[1],)]}

    params = {"w": rand(3, 2), "b": rand(2)}
    xs = [rand(4, 3), rand(5)]
    pair = (rand(2), rand(2))
    fn = ig.trace(f, params, xs, pair)
    # leaves are named after their paths; dict keys in sorted order
    assert [p.name for p in fn.ir.params] == ["params.b", "params.w", "xs.0", "xs.1",
                                              "pair.0", "pair.1"]
    out = fn(params, xs, pair)
    assert set(out) == {"out", "extra"} and isinstance(out["extra"], list)
    assert isinstance(out["extra"][1], tuple) and len(out["extra"][1]) == 1
    np.testing.assert_allclose(out["out"], xs[0] @ params["w"] + params["b"], rtol=1e-12)
    np.testing.assert_allclose(out["extra"][0], xs[1] * 2.0)
    np.testing.assert_allclose(out["extra"][1][0], pair[0] - pair[1])
    assert fn.arg_specs[0] == {"w": f64[3, 2], "b": f64[2]}
    # the names survive printing and parsing
    assert str(ig.parse(str(fn.ir))) == str(fn.ir)


def test_numpy_scalars_as_specs_keep_their_dtype():
    # np.float64 is a subclass of Python float: it must still trace as f64, not f32
    fn = ig.trace(lambda a, b, c: (a, b, c), np.float64(1.0), np.int64(2), 1.0)
    assert [str(p.type) for p in fn.ir.params] == ["f64[]", "i64[]", "f32[]"]


def test_numpy_constants_inside_traced_code_become_const_ops():
    mask = np.array([1.0, 0.0, 1.0])

    fn, _ = check(lambda x: x * mask, rand(2, 3))
    consts = [op for op in fn.ir.ops if op.opname == "const"]
    assert len(consts) == 1 and consts[0].attrs["value"].tolist() == [1.0, 0.0, 1.0]


def test_calling_a_function_inside_a_trace_inlines_it():
    inner = ig.trace(lambda x: ig.exp(x) + 1.0, f64[3])
    outer = ig.trace(lambda x: inner(x) * inner(-x), f64[3])
    assert outer.ir.num_ops() >= 2 * inner.ir.num_ops()
    x = rand(3)
    np.testing.assert_allclose(outer(x), (np.exp(x) + 1) * (np.exp(-x) + 1), rtol=1e-12)


# --- operators: numpy broadcasting, scalars, comparisons -------------------------------------------

BINOPS = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
          "maximum": np.maximum, "minimum": np.minimum}
DSL_BINOPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
              "/": lambda a, b: a / b, "maximum": ig.maximum, "minimum": ig.minimum}


@given(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4),
       st.sampled_from(sorted(BINOPS)))
def test_broadcasting_matches_numpy(shapes, op):
    a, b = (rand(*s) for s in shapes.input_shapes)
    b = b + np.sign(b) * 0.5  # keep divisors away from zero
    fn = ig.trace(DSL_BINOPS[op], a, b)
    got = fn(a, b)
    want = BINOPS[op](a, b)
    assert got.shape == want.shape == shapes.result_shape
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # broadcasting is explicit in the IR: every elementwise op sees equal shapes
    for o in fn.ir.ops:
        if o.opname in ("add", "sub", "mul", "div", "max", "min"):
            assert all(v.shape == o.results[0].shape for v in o.operands)


@pytest.mark.parametrize("expr", [
    lambda x: 2.0 - x, lambda x: x - 2.0, lambda x: 3 * x, lambda x: x * 3,
    lambda x: x / 4, lambda x: 4 / x, lambda x: 1.5 + x, lambda x: -x, lambda x: +x,
    lambda x: x ** 2, lambda x: x ** 3, lambda x: abs(x) ** 0.5, lambda x: abs(x) ** 1.7,
    lambda x: 2.0 ** x, lambda x: abs(x) ** -1.5, lambda x: np.float64(2.0) * x,
    lambda x: np.ones(3) + x, lambda x: x @ np.eye(3), lambda x: np.eye(2) @ x,
])
def test_python_and_numpy_scalars_on_either_side(expr):
    check(expr, rand(2, 3, low=1.0, high=3.0))  # away from 0: divisors and powers stay tame


def test_scalar_operands_are_weakly_typed():
    fn = ig.trace(lambda x: (x * 2.5, x + 1, 1 - x), f32[3])
    assert [str(t) for t in fn.ir.result_types] == ["f32[3]"] * 3
    # an int tensor meets a Python float: the result is floating point
    fn = ig.trace(lambda n: n * 0.5, i32[3])
    assert str(fn.ir.result_types[0]) == "f32[3]"
    np.testing.assert_array_equal(fn(np.array([1, 2, 3], np.int32)), [0.5, 1.0, 1.5])
    # true division of ints gives floats, as in numpy
    fn = ig.trace(lambda n: n / 2, i32[2])
    np.testing.assert_array_equal(fn(np.array([1, 4], np.int32)), [0.5, 2.0])


@pytest.mark.parametrize("name,op", [("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                                     ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)])
def test_comparisons_give_bool(name, op):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([[2.0], [1.0]])
    dsl = {"lt": lambda x, y: x < y, "le": lambda x, y: x <= y, "gt": lambda x, y: x > y,
           "ge": lambda x, y: x >= y, "eq": lambda x, y: x == y, "ne": lambda x, y: x != y}[name]
    fn = ig.trace(dsl, a, b)
    assert fn.ir.result_types[0].dtype is ig.DType.bool
    np.testing.assert_array_equal(fn(a, b), op(a, b))
    np.testing.assert_array_equal(ig.trace(lambda x: dsl(x, 2.0), a)(a), op(a, 2.0))


def test_traced_tensors_have_static_facts_but_no_truth_value():
    def f(x):
        assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
        with pytest.raises(TypeError):
            bool(x > 0)
        with pytest.raises(TypeError):
            iter(x)
        return x

    ig.trace(f, f32[2, 3])


# --- reductions, reshape, transpose -------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (2, 0), ()])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions(name, axis, keepdims):
    x = rand(2, 3, 4)
    check(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), x,
          want=getattr(np, name)(x, axis=axis, keepdims=keepdims))
    check(lambda t: getattr(ig, name)(t, axis=axis, keepdims=keepdims), x,
          want=getattr(np, name)(x, axis=axis, keepdims=keepdims))


def test_reduction_errors():
    msg = shape_error(lambda x: x.sum(axis=3), f32[2, 3])
    assert "axis 3 is out of range" in msg
    assert "repeated axis" in shape_error(lambda x: x.sum(axis=(0, -2)), f32[2, 3])


@pytest.mark.parametrize("shape", [(6, 4), (2, -1), (-1,), (3, 2, -1), (24,), [4, 6]])
def test_reshape(shape):
    x = rand(2, 3, 4)
    want = x.reshape(shape)
    check(lambda t: t.reshape(shape), x, want=want)
    check(lambda t: t.reshape(*shape), x, want=want)
    check(lambda t: ig.reshape(t, shape), x, want=want)


def test_reshape_errors():
    assert "[2, 3]" in shape_error(lambda x: x.reshape(4, -1), f32[2, 3])
    assert "at most one" in shape_error(lambda x: x.reshape(-1, -1), f32[2, 3])
    assert "[2, 3]" in shape_error(lambda x: x.reshape(7), f32[2, 3])


@pytest.mark.parametrize("axes", [(), (1, 0, 2), (2, 0, 1), (-1, 0, 1)])
def test_transpose(axes):
    x = rand(2, 3, 4)
    check(lambda t: t.transpose(*axes), x, want=x.transpose(*axes))
    check(lambda t: ig.transpose(t, axes), x, want=x.transpose(*axes))
    check(lambda t: t.T, x, want=x.T)


@pytest.mark.parametrize("axes", [(0, 0, 1), (0, 1), (3, 1, 0), (0, 1, -4)])
def test_transpose_rejects_bad_axes(axes):
    assert "not a permutation" in shape_error(lambda x: x.transpose(axes), f32[2, 3, 4])


# --- indexing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [
    0, -1, (1, 2), (slice(None), slice(2, 5)), (Ellipsis, slice(None, 64)),
    (Ellipsis, slice(1, 3)), None, (slice(None), None), (None, Ellipsis, None), (0, Ellipsis),
    (slice(1, None), 0, slice(None, -1)), (slice(3, 1),), (slice(-100, 100),), (Ellipsis,),
    (1, 2, 3), (Ellipsis, 0, None),
])
def test_basic_indexing(index):
    x = rand(3, 6, 5)
    check(lambda t: t[index], x, want=x[index])


def test_index_with_int_array_takes_rows():
    x, idx = rand(5, 3), np.array([4, 0, 0, -1])
    check(lambda t: t[idx], x, want=x[idx])


@pytest.mark.parametrize("index,words", [
    ((slice(None, None, 2),), "step"), ((0, 0, 0), "too many indices"),
    (7, "out of range for axis 0 of size 3"), ((0, -7), "out of range"),
    ((Ellipsis, Ellipsis), "only one"), (True, "boolean"), ("a", "unsupported index"),
])
def test_bad_indexing(index, words):
    assert words in shape_error(lambda t: t[index], f32[3, 6])


# --- matmul -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [
    ((2, 3), (3, 4)), ((5, 2, 3), (5, 3, 4)), ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)),
    ((2, 1, 2, 3), (4, 3, 2)), ((3,), (3, 4)), ((2, 3), (3,)), ((3,), (3,)), ((3,), (2, 3, 4)),
    ((2, 4, 3), (3,)), ((1, 1), (1, 1)),
])
def test_matmul_matches_numpy(sa, sb):
    a, b = rand(*sa), rand(*sb)
    check(lambda x, y: x @ y, a, b, want=a @ b)
    check(ig.matmul, a, b, want=np.matmul(a, b))


@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 2, 3), (3, 3, 4))])
def test_matmul_shape_errors_name_both_shapes(sa, sb):
    msg = shape_error(lambda x, y: x @ y, f32[sa], f32[sb])
    assert f"{list(sa)} @ {list(sb)}" in msg and "matmul" in msg


def test_matmul_of_scalars_is_rejected():
    assert "at least 1-D" in shape_error(lambda x, y: x @ y, f32[()], f32[3])


# --- library functions ---------------------------------------------------------------------------

def np_layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


X = rand(4, 5)
POS = rand(4, 5, low=0.1, high=3.0)
LIBRARY = {
    "exp": (lambda x: ig.exp(x), lambda x: np.exp(x), X),
    "log": (lambda x: ig.log(x), lambda x: np.log(x), POS),
    "sin": (lambda x: ig.sin(x), np.sin, X),
    "cos": (lambda x: ig.cos(x), np.cos, X),
    "tanh": (lambda x: ig.tanh(x), np.tanh, X),
    "sqrt": (lambda x: ig.sqrt(x), np.sqrt, POS),
    "abs": (lambda x: ig.abs(x), np.abs, X),
    "sign": (lambda x: ig.sign(x), np.sign, X),
    "square": (lambda x: ig.square(x), np.square, X),
    "relu": (lambda x: ig.relu(x), lambda x: np.maximum(x, 0), X),
    "sigmoid": (lambda x: ig.sigmoid(x), sp.expit, X * 10),
    "gelu": (lambda x: ig.gelu(x), np_gelu, X * 3),
    "softmax": (lambda x: ig.softmax(x), lambda x: sp.softmax(x, axis=-1), X),
    "softmax0": (lambda x: ig.softmax(x, axis=0), lambda x: sp.softmax(x, axis=0), X),
    "log_softmax": (lambda x: ig.log_softmax(x), lambda x: sp.log_softmax(x, axis=-1), X),
    "log_softmax0": (lambda x: ig.log_softmax(x, axis=0), lambda x: sp.log_softmax(x, axis=0), X),
    "logsumexp": (lambda x: ig.logsumexp(x), lambda x: sp.logsumexp(x, axis=-1), X),
    "logsumexp_k": (lambda x: ig.logsumexp(x, axis=(0, 1), keepdims=True),
                    lambda x: sp.logsumexp(x, axis=(0, 1), keepdims=True), X),
    "where": (lambda x: ig.where(x > 0, x, 0.5 * x), lambda x: np.where(x > 0, x, 0.5 * x), X),
    "where_scalars": (lambda x: ig.where(x > 0, 1.0, -1.0), lambda x: np.where(x > 0, 1.0, -1.0), X),
    "maximum": (lambda x: ig.maximum(x, x[0]), lambda x: np.maximum(x, x[0]), X),
    "minimum": (lambda x: ig.minimum(0.3, x), lambda x: np.minimum(0.3, x), X),
    "sum": (lambda x: ig.sum(x, axis=1), lambda x: x.sum(1), X),
    "mean": (lambda x: ig.mean(x), np.mean, X),
    "max": (lambda x: ig.max(x, axis=0, keepdims=True), lambda x: x.max(0, keepdims=True), X),
    "var": (lambda x: ig.var(x, axis=1), lambda x: x.var(1), X),
    "take": (lambda x: ig.take(x, np.array([[3, 0], [-1, 1]]), axis=1),
             lambda x: np.take(x, [[3, 0], [-1, 1]], axis=1), X),
    "layer_norm": (lambda x: ig.layer_norm(x, np.arange(5.0), np.ones(5)),
                   lambda x: np_layer_norm(x, np.arange(5.0), np.ones(5)), X),
    "layer_norm_plain": (lambda x: ig.layer_norm(x), lambda x: np_layer_norm(x, 1, 0), X),
    "mse_loss": (lambda x: ig.mse_loss(x, x * 0.5),
                 lambda x: np.mean((x - x * 0.5) ** 2), X),
    "concatenate": (lambda x: ig.concatenate([x, x[:2], x * 2], axis=0),
                    lambda x: np.concatenate([x, x[:2], x * 2], axis=0), X),
    "concatenate1": (lambda x: ig.concatenate([x, x[:, :1]], axis=-1),
                     lambda x: np.concatenate([x, x[:, :1]], axis=-1), X),
    "stack": (lambda x: ig.stack([x, -x, x]), lambda x: np.stack([x, -x, x]), X),
    "stack2": (lambda x: ig.stack([x, -x], axis=2), lambda x: np.stack([x, -x], axis=2), X),
    "stack_last": (lambda x: ig.stack([x, -x], axis=-1), lambda x: np.stack([x, -x], axis=-1), X),
    "one_hot": (lambda x: ig.one_hot(ig.astype(x > 0, ig.i32) + 1, 3),
                lambda x: np.eye(3)[(x > 0).astype(int) + 1], X),
}


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_matches_numpy(name):
    fn, ref, x = LIBRARY[name]
    traced = ig.trace(fn, x)
    got = traced(x)
    want = ref(x)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_cross_entropy_matches_numpy():
    logits, labels = rand(6, 4), np.array([0, 3, 1, 1, 2, 0], np.int32)
    want = -sp.log_softmax(logits, axis=1)[np.arange(6), labels].mean()
    check(ig.cross_entropy, logits, labels, want=want)


def test_library_in_float32_stays_float32():
    x = rand(3, 4, dtype=np.float32)
    fn = ig.trace(lambda t: (ig.softmax(t), ig.gelu(t), ig.layer_norm(t), ig.mean(t)), x)
    for got, want in zip(fn(x), (sp.softmax(x, axis=-1), np_gelu(x), np_layer_norm(x, 1, 0), x.mean())):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_stable_for_huge_logits():
    # naive exp(1e4) overflows even in float64: the library must subtract the max
    logits = np.array([[1e4, -1e4, 0.0], [2e4, 2e4 - 3, 1.9e4]])
    labels = np.array([1, 2], np.int32)
    for dtype in (np.float32, np.float64):
        x = logits.astype(dtype)
        fn = ig.trace(lambda t, y: (ig.log_softmax(t), ig.logsumexp(t), ig.cross_entropy(t, y),
                                    ig.softmax(t)), x, labels)
        lsm, lse, ce, sm = fn(x, labels)
        for v in (lsm, lse, ce, sm):
            assert np.all(np.isfinite(v)), v
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12)
        np.testing.assert_allclose(lsm, sp.log_softmax(logits, axis=-1), **tol)
        np.testing.assert_allclose(lse, sp.logsumexp(logits, axis=-1), **tol)
        np.testing.assert_allclose(ce, -sp.log_softmax(logits, axis=-1)[[0, 1], labels].mean(), **tol)


def test_library_shape_errors():
    assert "integer labels" in shape_error(ig.cross_entropy, f32[4, 3], f32[4])
    assert "f32[4,3]" in shape_error(ig.cross_entropy, f32[4, 3], i32[5])
    assert "bool condition" in shape_error(lambda x: ig.where(x, x, x), f32[3])
    assert "integer indices" in shape_error(lambda x: ig.take(x, x), f32[3])
    assert "at least one" in shape_error(lambda x: ig.stack([]), f32[3])
    assert "at least one" in shape_error(lambda x: ig.concatenate([]), f32[3])
    assert "matching shapes" in shape_error(lambda x: ig.concatenate([x, x[0]]), f32[3, 2])


# --- errors point at the user's line -------------------------------------------------------------

def test_shape_error_names_file_line_and_both_shapes():
    def f(x, y):
        return x + y  # the failing line

    msg = shape_error(f, f32[3, 4], f32[5])
    assert_points_here(msg, f.__code__.co_firstlineno + 1)
    assert "[3, 4]" in msg and "[5]" in msg and "do not broadcast" in msg


def test_matmul_error_names_the_line():
    def f(x, y):
        h = x * 2.0
        return h @ y  # the failing line

    msg = shape_error(f, f32[3, 4], f32[5, 6])
    assert_points_here(msg, f.__code__.co_firstlineno + 2)
    assert "[3, 4]" in msg and "[5, 6]" in msg


def test_registry_errors_also_name_the_line():
    def f(x):
        return -x  # neg of a bool tensor: caught by the op registry, located by the tracer

    msg = shape_error(f, bool_[3])
    assert_points_here(msg, f.__code__.co_firstlineno + 1)
    assert "bool[3]" in msg


def test_error_inside_a_library_call_names_the_callers_line():
    def f(logits, labels):
        return ig.cross_entropy(logits, labels)  # the failing line (not irgrad's)

    msg = shape_error(f, f32[4, 3], i32[5])
    assert_points_here(msg, f.__code__.co_firstlineno + 1)


def test_every_traced_op_has_a_source_location():
    line0 = inspect.currentframe().f_lineno

    def model(p, x, y):
        h = ig.gelu(ig.layer_norm(x @ p["w"] + p["b"]))
        z = ig.concatenate([h[:, :2], ig.softmax(h)[..., 2:]], axis=1)
        return ig.cross_entropy(z, y) + ig.mse_loss(z, 0.0) + ig.logsumexp(z).mean()

    fn = ig.trace(model, {"w": f32[3, 4], "b": f32[4]}, f32[2, 3], i32[2])
    lines = set()
    for op in fn.ir.walk():
        assert op.loc is not None, op
        assert os.path.samefile(op.loc.file, __file__), op.loc
        lines.add(op.loc.line)
    assert lines == {line0 + 3, line0 + 4, line0 + 5}
    assert all(f'loc("{fn.ir.ops[0].loc.file}":' in ln for ln in str(fn.ir).splitlines()[1:-2])


# --- calling: arguments are checked ----------------------------------------------------------------

def test_wrong_argument_count():
    with pytest.raises(ig.ArgumentError) as info:
        affine(np.zeros((4, 3), np.float32))
    msg = str(info.value)
    assert "affine() takes 3 arguments (w, b, x), got 1" in msg


@pytest.mark.parametrize("x,words", [
    (np.zeros((2, 5), np.float32), "shape [2, 4]"),
    (np.zeros((2, 4), np.float64), "dtype f32"),
    (np.zeros((2, 4), np.int32), "dtype f32"),
    ([[0.0] * 4] * 2, "structure"),
    (1.0, "Python scalar"),
])
def test_wrong_argument_shape_or_dtype_names_the_argument(x, words):
    w, b = np.zeros((4, 3), np.float32), np.zeros(3, np.float32)
    with pytest.raises(ig.ArgumentError) as info:
        affine(w, b, x)
    msg = str(info.value)
    assert ("%x" in msg or "argument x " in msg) and words in msg, msg
    assert isinstance(info.value, TypeError)  # also a TypeError, as Python users expect


def test_scalar_arguments_are_checked_too():
    fn = ig.trace(lambda n, s: n.astype(f32) * s, i32[()], f32[()])
    assert fn(3, 2.0) == 6.0
    assert fn(np.int32(3), np.float32(2)) == 6.0
    with pytest.raises(ig.ArgumentError, match="%n"):
        fn(3.5, 2.0)  # no silent float -> int
    with pytest.raises(ig.ArgumentError, match="%s"):
        fn(3, np.float64(2.0))  # no silent f64 -> f32
    with pytest.raises(ig.ArgumentError, match="%n"):
        fn(True, 2.0)


def test_pytree_structure_mismatch():
    fn = ig.trace(lambda p: p["a"] + p["b"], {"a": f32[2], "b": f32[2]})
    with pytest.raises(ig.ArgumentError, match=r"argument p has structure \{'a': \*\}"):
        fn({"a": np.zeros(2, np.float32)})
    with pytest.raises(ig.ArgumentError, match="%p.b"):
        fn({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)})


# --- big programs and compile ---------------------------------------------------------------------

def test_20000_op_chain_traces_prints_parses_and_runs():
    def chain(x):
        for i in range(20000):
            x = ig.sin(x) if i % 2 else -x
        return x

    fn = ig.trace(chain, f32[4])
    assert fn.ir.num_ops() == 20000
    text = str(fn.ir)
    m = ig.parse(text)
    assert str(m) == text
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    want = x.copy()
    for i in range(20000):
        want = np.sin(want) if i % 2 else -want
    got = ig.compile(m.functions["chain"], backend="numpy", pipeline="O0")(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fn(x), got)


def test_compile_numpy_backend_for_traced_functions():
    def f(p, x):
        return {"y": ig.tanh(x @ p["w"]), "n": (x * x).sum()}

    fn = ig.trace(f, {"w": f64[3, 2]}, f64[4, 3])
    compiled = ig.compile(fn, backend="numpy", pipeline="O0")
    p, x = {"w": rand(3, 2)}, rand(4, 3)
    out = compiled(p, x)
    np.testing.assert_allclose(out["y"], np.tanh(x @ p["w"]), rtol=1e-12)
    np.testing.assert_allclose(out["n"], (x * x).sum(), rtol=1e-12)
    with pytest.raises(ig.ArgumentError):
        compiled(p, x.astype(np.float32))


def test_compile_numpy_backend_for_parsed_functions():
    text = str(affine.ir)
    irf = ig.parse(text).functions["affine"]
    compiled = ig.compile(irf, backend="numpy", pipeline="O0")
    w, b, x = rand(4, 3, dtype=np.float32), rand(3, dtype=np.float32), rand(2, 4, dtype=np.float32)
    np.testing.assert_array_equal(compiled(w, b, x), affine(w, b, x))
    with pytest.raises(ig.ArgumentError, match="%b"):
        compiled(w, w, x)


def test_compile_rejects_unknown_backend_and_pipeline():
    with pytest.raises(ig.IrgradError, match="unknown backend"):
        ig.compile(affine, backend="tpu", pipeline="O0")
    with pytest.raises(ig.IrgradError, match="unknown pass"):
        ig.compile(affine, backend="numpy", pipeline="no-such-pass")


def test_results_are_fresh_arrays():
    fn = ig.trace(lambda x: (x, x), f64[3])
    x = np.arange(3.0)
    a, b = fn(x)
    a[0] = 99.0
    assert x[0] == 0.0 and b[0] == 0.0  # outputs never alias inputs or each other


@given(st.sampled_from([f32, f64, i32, i64]), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
def test_specs_round_trip_through_traced_ir(maker, shape):
    spec = maker[shape]
    fn = ig.trace(lambda x: x, spec)
    assert fn.specs == [spec] and str(fn.ir.params[0].type) == str(spec)
