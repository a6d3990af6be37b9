"""Every primitive of the op registry: shape/dtype inference, numpy reference, and the
ShapeErrors that inference raises on bad operands and attributes.

Each op is checked end to end: a one-op IR function is built with `ir.Builder`,
verified, run on the reference interpreter, and compared with numpy computing the same
thing directly. The op's `reference` is also called directly, to check that it returns
exactly the inferred dtype and shape (the interpreter would silently cast a wrong dtype).
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.special as scipy_special
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import irgrad as ig
from irgrad.ir import Builder, Function, TensorType, run_function, verify_function
from irgrad.ir.core import Block
from irgrad.ir.registry import all_ops, get_op
from irgrad.ir.types import DType

F32, F64, I32, I64, BOOL = DType.f32, DType.f64, DType.i32, DType.i64, DType.bool
FLOATS, INTS, NUMERIC, ALL = (F32, F64), (I32, I64), (F32, F64, I32, I64), tuple(DType)
SHAPES = [(), (5,), (2, 3), (2, 1, 4), (0, 3)]

COVERED: set[str] = set()


def covers(*names):
    """Record that the decorated test exercises these ops (see test_every_op_is_tested)."""
    for n in names:
        get_op(n)  # a typo here should fail loudly, not silently cover nothing
    COVERED.update(names)
    return lambda fn: fn


def arr(shape, dtype: DType, rng=None, low=-3.0, high=3.0):
    rng = rng or np.random.default_rng(0)
    if dtype is BOOL:
        return rng.random(shape) < 0.5
    if dtype.is_int:
        return rng.integers(int(low), int(high) + 1, shape).astype(dtype.np)
    return rng.uniform(low, high, shape).astype(dtype.np)


def tt(dtype, shape):
    return TensorType(dtype, tuple(shape))


def run_op(opname, inputs, result_type=None, **attrs):
    """Build `%r = opname(inputs...) {attrs}`, verify, run; return the single result."""
    inputs = [np.asarray(x) for x in inputs]
    f = Function("t", [tt(DType.from_numpy(x.dtype), x.shape) for x in inputs])
    b = Builder(f.body)
    r = b.emit_op(opname, f.params, attrs,
                  [result_type] if result_type is not None else None).result
    f.set_outputs([r])
    verify_function(f)
    # The reference itself must produce the inferred type exactly.
    op = f.ops[0]
    with np.errstate(all="ignore"):
        ref = np.asarray(get_op(opname).reference([x.copy() for x in inputs], op)[0])
    assert ref.dtype == r.dtype.np, f"{opname} reference gave {ref.dtype}, inferred {r.type}"
    assert ref.shape == r.shape, f"{opname} reference gave {ref.shape}, inferred {r.type}"
    (out,) = run_function(f, inputs)
    assert out.dtype == r.dtype.np and out.shape == r.shape
    return out


def infer_error(opname, operand_types, result_type=None, **attrs) -> str:
    """The ShapeError message for emitting this op (fails the test if none is raised)."""
    f = Function("t", list(operand_types))
    b = Builder(f.body)
    with pytest.raises(ig.ShapeError) as info:
        b.emit_op(opname, f.params, attrs, [result_type] if result_type is not None else None)
    msg = str(info.value)
    assert opname in msg, f"message does not name the op: {msg}"
    return msg


def same(got, want, dtype=None):
    want = np.asarray(want)
    if dtype is not None:
        want = want.astype(dtype.np)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.dtype.kind == "f":
        tol = 1e-6 if got.dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


# --- unary -----------------------------------------------------------------------------------

UNARY_NP = {"neg": np.negative, "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos,
            "tanh": np.tanh, "sqrt": np.sqrt, "abs": np.abs, "sign": np.sign,
            "log1p": np.log1p, "expm1": np.expm1, "floor": np.floor, "ceil": np.ceil,
            "round": np.round, "erf": lambda x: scipy_special.erf(x).astype(x.dtype)}


@covers(*UNARY_NP)
@pytest.mark.parametrize("op,dtype", [(op, d) for op in sorted(UNARY_NP) for d in NUMERIC
                                      if d.is_float or op in ("neg", "abs", "sign")])
@pytest.mark.parametrize("shape", SHAPES)
def test_unary(op, dtype, shape):
    # negative inputs included on purpose: log/sqrt give nan, as numpy does
    x = arr(shape, dtype)
    with np.errstate(all="ignore"):
        same(run_op(op, [x]), UNARY_NP[op](x))


@covers("stop_gradient")
@pytest.mark.parametrize("dtype", ALL)
def test_stop_gradient_is_identity(dtype):
    x = arr((2, 3), dtype)
    same(run_op("stop_gradient", [x]), x)


def test_unary_takes_one_operand():
    msg = infer_error("exp", [tt(F32, (2,)), tt(F32, (2,))])
    assert "1 operand" in msg and "got 2" in msg


# --- binary ------------------------------------------------------------------------------------

BINARY_NP = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
             "pow": np.power, "max": np.maximum, "min": np.minimum}


@covers(*BINARY_NP)
@pytest.mark.parametrize("op,dtype", [(op, d) for op in sorted(BINARY_NP) for d in NUMERIC
                                      if d.is_float or op not in ("div", "pow")])
@pytest.mark.parametrize("shape", [(), (4,), (2, 3, 2), (0,)])
def test_binary(op, dtype, shape):
    rng = np.random.default_rng(1)
    a, b = arr(shape, dtype, rng), arr(shape, dtype, rng)
    if op == "pow":
        a = np.abs(a) + dtype.np.type(0.5)  # keep the power real
    with np.errstate(all="ignore"):
        same(run_op(op, [a, b]), BINARY_NP[op](a, b))


def test_div_follows_ieee():
    a = np.array([1.0, -1.0, 0.0], np.float32)
    b = np.zeros(3, np.float32)
    out = run_op("div", [a, b])
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])


@pytest.mark.parametrize("op", sorted(BINARY_NP))
def test_binary_rejects_mismatched_operands(op):
    # elementwise ops take equal types: the frontend inserts broadcasts and casts
    msg = infer_error(op, [tt(F32, (2, 3)), tt(F32, (3,))])
    assert "f32[2,3]" in msg and "f32[3]" in msg
    msg = infer_error(op, [tt(F32, (3,)), tt(F64, (3,))])
    assert "f32[3]" in msg and "f64[3]" in msg


# --- comparisons and select ------------------------------------------------------------------------

COMPARE_NP = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
              "gt": np.greater, "ge": np.greater_equal}


@covers(*COMPARE_NP)
@pytest.mark.parametrize("op", sorted(COMPARE_NP))
@pytest.mark.parametrize("dtype", NUMERIC)
def test_compare(op, dtype):
    rng = np.random.default_rng(2)
    a = arr((3, 4), dtype, rng, -2, 2)
    b = a.copy()
    b[0] = arr((4,), dtype, rng, -2, 2)  # some equal, some not: all orderings show up
    same(run_op(op, [a, b]), COMPARE_NP[op](a, b))


@pytest.mark.parametrize("op", ["eq", "ne"])
def test_eq_ne_accept_bool(op):
    a, b = np.array([True, True, False]), np.array([True, False, False])
    same(run_op(op, [a, b]), COMPARE_NP[op](a, b))


@covers("select")
@pytest.mark.parametrize("dtype", ALL)
def test_select(dtype):
    rng = np.random.default_rng(3)
    c, a, b = arr((4, 5), BOOL, rng), arr((4, 5), dtype, rng), arr((4, 5), dtype, rng)
    same(run_op("select", [c, a, b]), np.where(c, a, b))


def test_select_errors():
    assert "bool" in infer_error("select", [tt(F32, (3,))] * 3)
    msg = infer_error("select", [tt(BOOL, (3,)), tt(F32, (3,)), tt(F64, (3,))])
    assert "f32[3]" in msg and "f64[3]" in msg
    assert "bool[2]" in infer_error("select", [tt(BOOL, (2,)), tt(F32, (3,)), tt(F32, (3,))])
    assert "3 operands" in infer_error("select", [tt(BOOL, (3,)), tt(F32, (3,))])


# Operand dtypes an op does not take: (op, operand dtype, number of operands, words).
DTYPE_ERRORS = (
    [(op, d, 1, "floating-point") for op in ("exp", "log", "sin", "cos", "tanh", "sqrt", "log1p",
                                             "expm1", "erf", "floor", "ceil", "round")
     for d in (I32, I64, BOOL)]
    + [(op, BOOL, 1, "numeric") for op in ("neg", "abs", "sign")]
    + [(op, d, 2, "floating-point") for op in ("div", "pow") for d in (I32, I64, BOOL)]
    + [(op, BOOL, 2, "numeric") for op in ("add", "sub", "mul", "max", "min", "lt", "le", "gt", "ge")]
)


@pytest.mark.parametrize("op,dtype,n,words", DTYPE_ERRORS)
def test_operand_dtype_errors(op, dtype, n, words):
    msg = infer_error(op, [tt(dtype, (3,))] * n)
    assert words in msg and f"{dtype}[3]" in msg


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max", "reduce_min"])
def test_reduce_rejects_bool(op):
    assert "bool[3]" in infer_error(op, [tt(BOOL, (3,))], axes=(0,))


@pytest.mark.parametrize("dt", [F32, F64, I32, I64])
def test_reduce_max_of_nothing_is_the_identity(dt):
    """The max over an empty axis is -inf (the integer minimum), as in JAX (numpy refuses);
    the min, +inf (the integer maximum)."""
    for op, want in (("reduce_max", -np.inf if dt.is_float else np.iinfo(dt.np).min),
                     ("reduce_min", np.inf if dt.is_float else np.iinfo(dt.np).max)):
        f = Function("f", [tt(dt, (0, 3))])
        f.set_outputs([Builder(f.body).emit(op, f.params[0], axes=(0,))])
        (got,) = run_function(f, [np.zeros((0, 3), dt.np)])
        np.testing.assert_array_equal(got, np.full(3, want, dt.np))


# --- cast --------------------------------------------------------------------------------------

@covers("cast")
@pytest.mark.parametrize("src,dst", list(itertools.product(ALL, ALL)))
def test_cast(src, dst):
    # values in [-50, 50] fit every type, so the conversion is well defined everywhere
    x = arr((3, 4), src, np.random.default_rng(4), -50, 50)
    out = run_op("cast", [x], dtype=dst)
    same(out, x.astype(dst.np))


def test_cast_attribute_errors():
    msg = infer_error("cast", [tt(F32, (2,))], dtype="f16")
    assert "dtype" in msg and "f16" in msg
    assert "needs attribute 'dtype'" in infer_error("cast", [tt(F32, (2,))])


# --- const and iota ------------------------------------------------------------------------------

@covers("const")
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (0, 2)])
def test_const_splat_and_dense(dtype, shape):
    splat = run_op("const", [], result_type=tt(dtype, shape), value=np.array(1, dtype.np))
    same(splat, np.ones(shape, dtype.np))
    dense = arr(shape, dtype, np.random.default_rng(5))
    same(run_op("const", [], result_type=tt(dtype, shape), value=dense), dense)


def test_const_errors():
    msg = infer_error("const", [], tt(F32, (2,)), value=np.zeros(2, np.float64))
    assert "float64" in msg and "f32[2]" in msg
    msg = infer_error("const", [], tt(F32, (2, 3)), value=np.zeros(3, np.float32))
    assert "[3]" in msg and "f32[2,3]" in msg
    assert "result type" in infer_error("const", [], value=np.zeros((), np.float32))
    assert "needs attribute 'value'" in infer_error("const", [], tt(F32, (2,)))


@covers("iota")
@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("shape,axis", [((5,), 0), ((2, 3), 0), ((2, 3), 1), ((2, 3, 4), 2)])
def test_iota(dtype, shape, axis):
    want = np.indices(shape, dtype=np.int64)[axis].astype(dtype.np)
    same(run_op("iota", [], result_type=tt(dtype, shape), axis=axis), want)


def test_iota_errors():
    assert "numeric" in infer_error("iota", [], tt(BOOL, (3,)), axis=0)
    msg = infer_error("iota", [], tt(I32, (3,)), axis=1)
    assert "axis 1" in msg and "i32[3]" in msg
    infer_error("iota", [], tt(I32, (3,)), axis=-1)
    infer_error("iota", [], tt(I32, ()), axis=0)


# --- broadcast, reshape, transpose -----------------------------------------------------------------

@covers("broadcast")
@pytest.mark.parametrize("shape,out,dims", [
    ((), (2, 3), ()),
    ((3,), (2, 3), (1,)),
    ((2,), (2, 3), (0,)),
    ((1,), (4,), (0,)),            # a size-1 axis stretches
    ((2, 1), (5, 2, 3), (1, 2)),
    ((2, 3), (2, 3), (0, 1)),      # the identity
    ((3, 1), (3, 4, 2), (0, 2)),
])
@pytest.mark.parametrize("dtype", [F32, I64, BOOL])
def test_broadcast(shape, out, dims, dtype):
    x = arr(shape, dtype, np.random.default_rng(6))
    # numpy oracle: put operand axis i at result axis dims[i], size 1 elsewhere
    view = [1] * len(out)
    for i, d in enumerate(dims):
        view[d] = shape[i]
    want = np.broadcast_to(x.reshape(view), out)
    same(run_op("broadcast", [x], result_type=tt(dtype, out), dims=dims), want)


@pytest.mark.parametrize("shape,out,dims,words", [
    ((3,), (2, 3), (), "one entry in dims per operand axis"),
    ((3,), (2, 3), (0, 1), "one entry in dims per operand axis"),
    ((2, 3), (2, 3, 4), (1, 0), "must increase"),
    ((2, 2), (2, 2), (0, 0), "must increase"),
    ((3,), (3,), (1,), "must increase and lie in"),
    ((3,), (3,), (-1,), "must increase and lie in"),
    ((3,), (2, 4), (1,), "cannot stretch axis 0"),
])
def test_broadcast_errors(shape, out, dims, words):
    assert words in infer_error("broadcast", [tt(F32, shape)], tt(F32, out), dims=dims)


def test_broadcast_cannot_change_dtype():
    msg = infer_error("broadcast", [tt(F32, (3,))], tt(F64, (2, 3)), dims=(1,))
    assert "f32[3]" in msg and "f64[2,3]" in msg


@covers("reshape")
@pytest.mark.parametrize("shape,out", [((6,), (2, 3)), ((2, 3), (3, 2)), ((2, 3, 4), (4, 6)),
                                       ((1,), ()), ((), (1, 1)), ((0, 3), (3, 0))])
@pytest.mark.parametrize("dtype", [F64, I32, BOOL])
def test_reshape(shape, out, dtype):
    x = arr(shape, dtype, np.random.default_rng(7))
    same(run_op("reshape", [x], result_type=tt(dtype, out)), x.reshape(out))


def test_reshape_errors():
    msg = infer_error("reshape", [tt(F32, (2, 3))], tt(F32, (4,)))
    assert "f32[2,3]" in msg and "f32[4]" in msg
    infer_error("reshape", [tt(F32, (2, 3))], tt(I32, (6,)))


@covers("transpose")
@pytest.mark.parametrize("shape,perm", [((2, 3), (1, 0)), ((2, 3), (0, 1)),
                                        ((2, 3, 4), (2, 0, 1)), ((2, 3, 4, 5), (3, 1, 0, 2)),
                                        ((), ())])
@pytest.mark.parametrize("dtype", [F32, I64])
def test_transpose(shape, perm, dtype):
    x = arr(shape, dtype, np.random.default_rng(8))
    same(run_op("transpose", [x], perm=perm), np.transpose(x, perm))


@pytest.mark.parametrize("perm", [(0,), (0, 0), (0, 2), (1, 0, 2), (-1, 0)])
def test_transpose_bad_perm(perm):
    msg = infer_error("transpose", [tt(F32, (2, 3))], perm=perm)
    assert "not a permutation" in msg and "f32[2,3]" in msg


def test_transpose_perm_must_be_ints():
    msg = infer_error("transpose", [tt(F32, (2, 3))], perm=(1.0, 0.0))
    assert "'perm'" in msg and "list of integers" in msg


# --- slice, pad, concat ------------------------------------------------------------------------

@covers("slice")
@pytest.mark.parametrize("shape,start,limit", [
    ((5,), (1,), (4,)), ((5,), (0,), (5,)), ((5,), (2,), (2,)),
    ((4, 6), (1, 2), (3, 5)), ((2, 3, 4), (0, 1, 0), (2, 3, 1)), ((), (), ())])
@pytest.mark.parametrize("dtype", [F32, I32, BOOL])
def test_slice(shape, start, limit, dtype):
    x = arr(shape, dtype, np.random.default_rng(9))
    want = x[tuple(slice(s, l) for s, l in zip(start, limit))]
    same(run_op("slice", [x], start=start, limit=limit), want)


@pytest.mark.parametrize("start,limit,words", [
    ((0,), (2,), "one entry per axis"),
    ((0, 0), (2, 3, 1), "one entry per axis"),
    ((1, 0), (0, 3), "do not fit"),       # start > limit
    ((0, 0), (2, 4), "do not fit"),       # limit past the end
    ((-1, 0), (2, 3), "do not fit"),      # negative start
])
def test_slice_bad_bounds(start, limit, words):
    msg = infer_error("slice", [tt(F32, (2, 3))], start=start, limit=limit)
    assert words in msg and "f32[2,3]" in msg


@covers("pad")
@pytest.mark.parametrize("shape,low,high", [((3,), (1,), (2,)), ((2, 3), (0, 1), (1, 0)),
                                            ((2, 3), (0, 0), (0, 0)), ((0, 2), (1, 0), (1, 1))])
@pytest.mark.parametrize("dtype", [F64, I64, BOOL])
def test_pad(shape, low, high, dtype):
    x = arr(shape, dtype, np.random.default_rng(10))
    same(run_op("pad", [x], low=low, high=high), np.pad(x, list(zip(low, high))))


@pytest.mark.parametrize("low,high", [((1,), (1, 1)), ((-1, 0), (0, 0)), ((0, 0), (0, -2))])
def test_pad_errors(low, high):
    assert "non-negative" in infer_error("pad", [tt(F32, (2, 3))], low=low, high=high)


@covers("concat")
@pytest.mark.parametrize("shapes,axis", [([(2,)], 0), ([(2,), (3,)], 0),
                                         ([(2, 3), (1, 3), (4, 3)], 0),
                                         ([(2, 3), (2, 1)], 1), ([(2, 0), (2, 2)], 1)])
@pytest.mark.parametrize("dtype", [F32, I32, BOOL])
def test_concat(shapes, axis, dtype):
    rng = np.random.default_rng(11)
    xs = [arr(s, dtype, rng) for s in shapes]
    same(run_op("concat", xs, axis=axis), np.concatenate(xs, axis=axis))


def test_concat_errors():
    assert "out of range" in infer_error("concat", [tt(F32, (2,))] * 2, axis=1)
    infer_error("concat", [tt(F32, (2,))] * 2, axis=-1)
    msg = infer_error("concat", [tt(F32, (2, 3)), tt(F32, (2, 4))], axis=0)
    assert "f32[2,3]" in msg and "f32[2,4]" in msg
    infer_error("concat", [tt(F32, (2,)), tt(F64, (2,))], axis=0)
    infer_error("concat", [tt(F32, (2,)), tt(F32, (2, 1))], axis=0)
    assert "at least one operand" in infer_error("concat", [], axis=0)


# --- reductions --------------------------------------------------------------------------------

AXES_OF_3 = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2), ()]


@covers("reduce_sum")
@pytest.mark.parametrize("axes", AXES_OF_3)
@pytest.mark.parametrize("dtype", NUMERIC)
def test_reduce_sum(axes, dtype):
    x = arr((2, 3, 4), dtype, np.random.default_rng(12))
    # the result keeps the operand's dtype (numpy would widen ints to int64)
    same(run_op("reduce_sum", [x], axes=axes), np.sum(x, axis=axes, dtype=dtype.np))


@covers("reduce_max", "reduce_min")
@pytest.mark.parametrize("axes", AXES_OF_3)
@pytest.mark.parametrize("dtype", NUMERIC)
def test_reduce_max_and_min(axes, dtype):
    x = arr((2, 3, 4), dtype, np.random.default_rng(13))
    same(run_op("reduce_max", [x], axes=axes), np.max(x, axis=axes))
    same(run_op("reduce_min", [x], axes=axes), np.min(x, axis=axes))


def test_reduce_sum_of_empty_axis_is_zero():
    same(run_op("reduce_sum", [np.zeros((0, 3), np.float32)], axes=(0,)), np.zeros(3, np.float32))


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max", "reduce_min"])
@pytest.mark.parametrize("axes", [(3,), (-1,), (1, 0), (1, 1)])
def test_reduce_bad_axes(op, axes):
    msg = infer_error(op, [tt(F32, (2, 3, 4))], axes=axes)
    assert "must increase and lie in the axes of f32[2,3,4]" in msg


# --- matmul --------------------------------------------------------------------------------------

@covers("matmul")
@pytest.mark.parametrize("sa,sb", [((2, 3), (3, 4)), ((1, 1), (1, 1)), ((5, 0), (0, 2)),
                                   ((4, 2, 3), (4, 3, 5)), ((2, 3, 1, 4), (2, 3, 4, 2))])
@pytest.mark.parametrize("dtype", NUMERIC)
def test_matmul(sa, sb, dtype):
    rng = np.random.default_rng(14)
    a, b = arr(sa, dtype, rng), arr(sb, dtype, rng)
    same(run_op("matmul", [a, b]), np.matmul(a, b))


@pytest.mark.parametrize("ta,tb,words", [
    (tt(F32, (2, 3)), tt(F32, (4, 5)), "shapes do not fit"),
    (tt(F32, (2, 2, 3)), tt(F32, (3, 3, 4)), "equal batch dims"),
    (tt(F32, (3,)), tt(F32, (3, 2)), "2-D operands"),
    (tt(F32, (2, 2, 3)), tt(F32, (3, 4)), "equal rank"),
    (tt(F32, (2, 3)), tt(F64, (3, 4)), "one dtype"),
    (tt(BOOL, (2, 3)), tt(BOOL, (3, 4)), "numeric"),
])
def test_matmul_errors(ta, tb, words):
    msg = infer_error("matmul", [ta, tb])
    assert words in msg and str(ta) in msg and str(tb) in msg


# --- gather and scatter_add ------------------------------------------------------------------------

@covers("gather")
@pytest.mark.parametrize("shape,axis", [((5,), 0), ((5, 3), 0), ((4, 5), 1), ((2, 3, 4), 2)])
@pytest.mark.parametrize("idx_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("idx_dtype", INTS)
def test_gather(shape, axis, idx_shape, idx_dtype):
    rng = np.random.default_rng(15)
    a = arr(shape, F32, rng)
    n = shape[axis]
    idx = rng.integers(-n, n, idx_shape).astype(idx_dtype.np)  # negatives count from the end
    same(run_op("gather", [a, idx], axis=axis), np.take(a, idx, axis=axis))


def test_gather_errors():
    msg = infer_error("gather", [tt(F32, (4, 3)), tt(F32, (2,))], axis=0)
    assert "indices must be integers" in msg and "f32[2]" in msg
    assert "out of range" in infer_error("gather", [tt(F32, (4, 3)), tt(I32, (2,))], axis=2)


def test_gather_and_scatter_clamp_indices_outside_the_axis():
    """Negative indices count from the end (numpy); indices outside the axis are clamped to
    its nearest end (JAX): the same on every backend, never a read outside the tensor."""
    a = np.arange(8, dtype=np.float32).reshape(4, 2)
    idx = np.array([0, 4, -1, -5, 100, -100], np.int32)
    same(run_op("gather", [a, idx], axis=0), a[[0, 3, 3, 0, 3, 0]])
    upd = np.ones((6, 2), np.float32)
    want = a.copy()
    np.add.at(want, [0, 3, 3, 0, 3, 0], upd)
    same(run_op("scatter_add", [a, idx, upd], axis=0), want)
    assert "empty axis" in infer_error("gather", [tt(F32, (0, 2)), tt(I32, (3,))], axis=0)


@covers("scatter_add")
@pytest.mark.parametrize("shape,axis,idx", [((5,), 0, [0, 2, 2, 4]), ((4, 3), 0, [[1, 1], [3, 0]]),
                                            ((3, 4), 1, [3, 3, 3]), ((2, 3, 4), 1, [-1, 0])])
@pytest.mark.parametrize("dtype", [F32, F64, I32])
def test_scatter_add_accumulates_repeats(shape, axis, idx, dtype):
    rng = np.random.default_rng(16)
    a, idx = arr(shape, dtype, rng), np.array(idx, np.int64)
    upd_shape = shape[:axis] + idx.shape + shape[axis + 1:]
    upd = arr(upd_shape, dtype, rng)
    want = a.copy()
    # the oracle: add update[..., j..., :] into a[..., idx[j...], :] one element at a time
    for pos in np.ndindex(*upd_shape):
        k = len(idx.shape)
        target = pos[:axis] + (idx[pos[axis:axis + k]],) + pos[axis + k:]
        want[target] += upd[pos]
    same(run_op("scatter_add", [a, idx, upd], axis=axis), want)


def test_scatter_add_errors():
    msg = infer_error("scatter_add", [tt(F32, (4,)), tt(F32, (2,)), tt(F32, (2,))], axis=0)
    assert "integers" in msg
    msg = infer_error("scatter_add", [tt(F32, (4, 3)), tt(I32, (2,)), tt(F32, (3, 3))], axis=0)
    assert "f32[2,3]" in msg
    infer_error("scatter_add", [tt(F32, (4,)), tt(I32, (2,)), tt(F64, (2,))], axis=0)
    infer_error("scatter_add", [tt(F32, (4,)), tt(I32, (2,)), tt(F32, (2,))], axis=1)


# --- fused (an op with a region) -------------------------------------------------------------------

def fused_function(with_kind=True):
    """f(x, b) = tanh(x + broadcast(b)) * 2 as one fused op; also returns the region block."""
    f = Function("f", [tt(F32, (2, 3)), tt(F32, (3,))], ["x", "b"])
    region = Block([tt(F32, (2, 3)), tt(F32, (3,))])
    rb = Builder(region)
    y = rb.tanh(rb.add(region.args[0], rb.broadcast(region.args[1], (2, 3), (1,))))
    region.outputs = [rb.scale(y, 2.0), y]
    attrs = {"kind": "loop"} if with_kind else {}
    op = Builder(f.body).emit_op("fused", f.params, attrs, regions=[region])
    f.set_outputs(op.results)
    return f


@covers("fused")
def test_fused_runs_its_region():
    f = fused_function()
    verify_function(f)
    rng = np.random.default_rng(17)
    x, b = arr((2, 3), F32, rng), arr((3,), F32, rng)
    y2, y = run_function(f, [x, b])
    same(y, np.tanh(x + b))
    same(y2, 2 * np.tanh(x + b))


def test_fused_errors():
    f = Function("f", [tt(F32, (3,))])
    b = Builder(f.body)
    region = Block([tt(F64, (3,))])
    region.outputs = [region.args[0]]
    with pytest.raises(ig.ShapeError, match="region arguments"):
        b.emit_op("fused", f.params, {"kind": "loop"}, regions=[region])
    good = Block([tt(F32, (3,))])
    good.outputs = [good.args[0]]
    with pytest.raises(ig.ShapeError, match="must match the values its region yields"):
        b.emit_op("fused", f.params, {"kind": "loop"}, [tt(F32, (4,))], regions=[good])
    empty = Block([tt(F32, (3,))])
    with pytest.raises(ig.ShapeError, match="at least one value"):
        b.emit_op("fused", f.params, {"kind": "loop"}, regions=[empty])
    with pytest.raises(ig.ShapeError, match="'kind'"):
        b.emit_op("fused", f.params, {"kind": 3}, regions=[good])
    with pytest.raises(ig.ShapeError, match="needs attribute 'kind'"):
        b.emit_op("fused", f.params, {}, regions=[good])
    with pytest.raises(ig.ShapeError, match="must be one of 'loop', 'reduce', 'matmul'"):
        b.emit_op("fused", f.params, {"kind": "lop"}, regions=[good])


def _region(build, *types):
    region = Block(list(types))
    region.outputs = build(Builder(region), *region.args)
    return region


@pytest.mark.parametrize("kind,build,words", [
    ("reduce", lambda b, x: [b.exp(x)], "holds 0 reductions"),
    ("loop", lambda b, x: [b.reduce_sum(x, (0,))], "cannot hold a reduction"),
    ("matmul", lambda b, x: [b.exp(x)], "needs matmuls"),
    ("loop", lambda b, x: [b.exp(x), b.reduce_sum(b.exp(x), (0,))], "cannot hold a reduction"),
    ("reduce", lambda b, x: [b.reduce_sum(b.reduce_sum(x, (0,)), (0,))], "holds 2 reductions"),
])
def test_fused_kind_must_match_its_region(kind, build, words):
    """Native code generation relies on `kind`: the verifier holds the region to it."""
    f = Function("f", [tt(F32, (3, 2))])
    with pytest.raises(ig.ShapeError, match=words):
        Builder(f.body).emit_op("fused", f.params, {"kind": kind}, regions=[_region(build, tt(F32, (3, 2)))])


def test_fused_region_results_have_the_kernels_sizes():
    f = Function("f", [tt(F32, (3, 2))])
    with pytest.raises(ig.ShapeError, match="same number of elements"):
        Builder(f.body).emit_op("fused", f.params, {"kind": "loop"}, regions=[
            _region(lambda b, x: [b.exp(x), b.slice(x, (0, 0), (1, 2))], tt(F32, (3, 2)))])
    with pytest.raises(ig.ShapeError, match="cannot hold 'scatter_add'"):
        Builder(f.body).emit_op("fused", f.params, {"kind": "loop"}, regions=[_region(
            lambda b, x: [b.emit("scatter_add", x, b.const(np.zeros(2, np.int32), tt(I32, (2,))),
                                 b.slice(x, (0, 0), (2, 2)), axis=0)],
            tt(F32, (3, 2)))])


# --- attributes in general ---------------------------------------------------------------------------

def test_unknown_attribute():
    msg = infer_error("add", [tt(F32, (2,))] * 2, axis=0)
    assert "no attribute 'axis'" in msg and "known: none" in msg
    msg = infer_error("transpose", [tt(F32, (2, 3))], perm=(1, 0), axes=(0,))
    assert "no attribute 'axes'" in msg and "perm" in msg


@pytest.mark.parametrize("opname,attrs", [("reduce_sum", {"axes": 1}), ("gather", {"axis": 1.5}),
                                          ("gather", {"axis": True}), ("slice", {"start": "0", "limit": (1,)}),
                                          ("reduce_max", {"axes": (0, False)})])
def test_attribute_of_the_wrong_kind(opname, attrs):
    types = [tt(F32, (4,)), tt(I32, (2,))] if opname == "gather" else [tt(F32, (4,))]
    msg = infer_error(opname, types, **attrs)
    assert "must be" in msg


@given(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4), st.data())
def test_random_broadcasts_match_numpy(shape, data):
    """numpy-style broadcasting, spelled with explicit dims, agrees with np.broadcast_to."""
    # a target shape for which `shape` is a numpy-broadcastable suffix
    extra = data.draw(st.lists(st.integers(1, 3), max_size=2))
    target = tuple(extra) + tuple(d if d != 1 else data.draw(st.integers(1, 3)) for d in shape)
    x = arr(shape, F32, np.random.default_rng(len(target)))
    dims = tuple(range(len(extra), len(target)))
    same(run_op("broadcast", [x], result_type=tt(F32, target), dims=dims),
         np.broadcast_to(x, target))


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=4),
                  elements=st.floats(-1e6, 1e6)), st.data())
def test_random_reductions_match_numpy(x, data):
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, x.ndim - 1)) if x.ndim else st.just(set()))))
    same(run_op("reduce_sum", [x], axes=axes), np.sum(x, axis=axes))
    same(run_op("reduce_max", [x], axes=axes), np.max(x, axis=axes))


def test_every_op_is_tested():
    """A new primitive must come with tests: add a `@covers("name")` test above."""
    missing = sorted(set(all_ops()) - COVERED)
    assert not missing, f"ops without tests in test_ops.py: {missing}"


def test_registry_entries_are_consistent():
    for name, od in all_ops().items():
        assert od.name == name
        assert callable(od.infer) and callable(od.reference)
        # an op with a derivative needs both rules (reverse and forward), or neither
        assert (od.vjp is None) == (od.jvp is None), name
        if not od.differentiable:
            continue
        assert od.vjp is not None or od.has_region, f"differentiable op {name} has no VJP"


# --- convolution, windows, flips ----------------------------------------------------------------

def _conv_loops(x, w, stride, dilation, lo, hi, groups):
    """conv by its definition, one output element at a time (independent of the entry's
    reference): y[n, o, j] = sum_{c, k} x[n, g(o) C/G + c, j s + k d - lo] w[o, c, k]."""
    N, C = x.shape[:2]
    O, cg = w.shape[:2]
    K = w.shape[2:]
    S = x.shape[2:]
    J = [(s_ + l + h - (k - 1) * d - 1) // st + 1 for s_, k, st, d, l, h in zip(S, K, stride, dilation, lo, hi)]
    y = np.zeros([N, O] + J)
    for n, o in itertools.product(range(N), range(O)):
        g = o // (O // groups)
        for j in itertools.product(*(range(a) for a in J)):
            acc = 0.0
            for c in range(cg):
                for k in itertools.product(*(range(a) for a in K)):
                    pos = [jj * st + kk * d - l for jj, kk, st, d, l in zip(j, k, stride, dilation, lo)]
                    if all(0 <= p < s_ for p, s_ in zip(pos, S)):
                        acc += x[(n, g * cg + c) + tuple(pos)] * w[(o, c) + k]
            y[(n, o) + j] = acc
    return y


CONV_CASES = [  # x shape, w shape, stride, dilation, pad_low, pad_high, groups
    ((2, 3, 6, 5), (4, 3, 3, 2), (1, 1), (1, 1), (1, 0), (1, 1), 1),
    ((1, 4, 7, 7), (6, 2, 3, 3), (2, 3), (2, 1), (0, 2), (1, 0), 2),
    ((2, 2, 9), (2, 1, 2), (3,), (2,), (1,), (-1,), 2),
    ((1, 2, 3, 4, 4), (2, 2, 2, 1, 3), (1, 2, 1), (1, 1, 1), (0, 1, 1), (1, 0, 1), 1),
    ((3, 1, 5, 5), (2, 1, 5, 5), (1, 1), (1, 1), (0, 0), (0, 0), 1),
]


@covers("conv")
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv(case):
    xs, ws, s, d, lo, hi, g = case
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    got = run_op("conv", [x, w], stride=s, dilation=d, pad_low=lo, pad_high=hi, groups=g)
    np.testing.assert_allclose(got, _conv_loops(x, w, s, d, lo, hi, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("types,attrs,words", [
    ([tt(F32, (1, 3, 5, 5)), tt(F32, (2, 2, 3, 3))], dict(groups=1), "input channels per group"),
    ([tt(F32, (1, 4, 5, 5)), tt(F32, (3, 2, 3, 3))], dict(groups=2), "must divide"),
    ([tt(F32, (1, 2, 3, 3)), tt(F32, (2, 2, 5, 5))], dict(groups=1), "larger than the padded input"),
    ([tt(F32, (1, 2, 3, 3)), tt(F32, (2, 2, 3))], dict(groups=1), "spatial axes"),
    ([tt(I32, (1, 2, 3, 3)), tt(I32, (2, 2, 3, 3))], dict(groups=1), "floating-point"),
    ([tt(F32, (1, 2, 5, 5)), tt(F32, (2, 2, 3, 3))], dict(groups=1, stride=(0, 1)), "stride and dilation"),
])
def test_conv_errors(types, attrs, words):
    full = dict(stride=(1, 1), dilation=(1, 1), pad_low=(0, 0), pad_high=(0, 0)) | attrs
    assert words in infer_error("conv", types, **full)


@covers("conv_weight_grad")
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_weight_grad(case):
    # dw[o, c, k] = sum over n, j of g[n, o, j] x[n, g(o) C/G + c, j s + k d - lo]: checked as
    # the adjoint of conv in w, <conv_weight_grad(x, g), t> = <g, conv(x, t)>, for random t
    xs, ws, s, d, lo, hi, g = case
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    y = _conv_loops(x, w, s, d, lo, hi, g)
    ct = rng.standard_normal(y.shape)
    dw = run_op("conv_weight_grad", [x, ct], kernel=ws[2:], stride=s, dilation=d, pad_low=lo,
                pad_high=hi, groups=g)
    assert dw.shape == ws
    for _ in range(3):
        t = rng.standard_normal(ws)
        np.testing.assert_allclose(np.sum(dw * t), np.sum(ct * _conv_loops(x, t, s, d, lo, hi, g)),
                                   rtol=1e-10)


@covers("conv_input_grad")
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_input_grad(case):
    # the adjoint of conv in x: <conv_input_grad(g, w), t> = <g, conv(t, w)>, for random t
    xs, ws, s, d, lo, hi, g = case
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    ct = rng.standard_normal(_conv_loops(x, w, s, d, lo, hi, g).shape)
    dx = run_op("conv_input_grad", [ct, w], size=xs[2:], stride=s, dilation=d, pad_low=lo,
                pad_high=hi, groups=g)
    assert dx.shape == xs
    for _ in range(3):
        t = rng.standard_normal(xs)
        np.testing.assert_allclose(np.sum(dx * t), np.sum(ct * _conv_loops(t, w, s, d, lo, hi, g)),
                                   rtol=1e-10)


def _window_loops(x, k, s, d, lo, hi, fill):
    lead = x.ndim - len(k)
    S = x.shape[lead:]
    J = [(a + l + h - (kk - 1) * dd - 1) // ss + 1 for a, kk, ss, dd, l, h in zip(S, k, s, d, lo, hi)]
    out = np.full(x.shape[:lead] + tuple(k) + tuple(J), fill, dtype=x.dtype)
    for kk in itertools.product(*(range(a) for a in k)):
        for j in itertools.product(*(range(a) for a in J)):
            pos = [jj * ss + a * dd - l for jj, a, ss, dd, l in zip(j, kk, s, d, lo)]
            if all(0 <= p < n for p, n in zip(pos, S)):
                out[(Ellipsis,) + kk + j] = x[(Ellipsis,) + tuple(pos)]
    return out


@covers("window")
@pytest.mark.parametrize("shape,k,s,d,lo,hi,fill", [
    ((2, 3, 6, 7), (2, 2), (2, 2), (1, 1), (0, 0), (0, 1), 0.0),
    ((3, 8), (3,), (1,), (2,), (2,), (1,), -np.inf),
    ((2, 5, 5), (3, 3), (2, 1), (1, 2), (1, 2), (-1, 2), 1.5),
])
def test_window(shape, k, s, d, lo, hi, fill):
    x = arr(shape, F64, np.random.default_rng(4))
    got = run_op("window", [x], kernel=k, stride=s, dilation=d, pad_low=lo, pad_high=hi, fill=fill)
    same(got, _window_loops(x, k, s, d, lo, hi, fill))


@covers("window_transpose")
@pytest.mark.parametrize("shape,k,s,d,lo,hi", [
    ((2, 3, 6, 7), (2, 2), (2, 2), (1, 1), (0, 0), (0, 1)),
    ((3, 8), (3,), (2,), (2,), (2,), (1,)),
    ((2, 5, 5), (3, 3), (2, 1), (1, 2), (1, 2), (-1, 2)),
])
def test_window_transpose(shape, k, s, d, lo, hi):
    # the adjoint of window: <window_transpose(c), t> = <c, window(t)>
    rng = np.random.default_rng(9)
    wshape = _window_loops(np.zeros(shape), k, s, d, lo, hi, 0.0).shape
    c = rng.standard_normal(wshape)
    got = run_op("window_transpose", [c], kernel=k, stride=s, dilation=d, pad_low=lo, pad_high=hi,
                 size=shape[len(shape) - len(k):])
    assert got.shape == shape
    for _ in range(3):
        t = rng.standard_normal(shape)
        np.testing.assert_allclose(np.sum(got * t), np.sum(c * _window_loops(t, k, s, d, lo, hi, 0.0)),
                                   rtol=1e-10)


def test_window_errors():
    assert "larger than the padded input" in infer_error(
        "window", [tt(F32, (2, 3))], kernel=(4,), stride=(1,), dilation=(1,), pad_low=(0,), pad_high=(0,))
    assert "one per spatial axis" in infer_error(
        "window", [tt(F32, (2, 3))], kernel=(2,), stride=(1, 1), dilation=(1,), pad_low=(0,), pad_high=(0,))


@covers("reverse")
@pytest.mark.parametrize("axes", [(0,), (1, 2), (), (2, 0)])
def test_reverse(axes):
    x = arr((2, 3, 4), F32, np.random.default_rng(5))
    same(run_op("reverse", [x], axes=axes), np.flip(x, axes) if axes else x)


# --- bits and random numbers --------------------------------------------------------------------

@covers("bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right_logical")
@pytest.mark.parametrize("dtype", [I32, I64])
def test_bit_operations(dtype):
    rng = np.random.default_rng(6)
    info = np.iinfo(dtype.np)
    a = rng.integers(info.min, info.max, (50,), dtype=dtype.np)
    b = rng.integers(info.min, info.max, (50,), dtype=dtype.np)
    sh = rng.integers(-70, 70, (50,)).astype(dtype.np)
    bits = dtype.itemsize * 8
    u = np.uint32 if dtype is I32 else np.uint64
    same(run_op("bitwise_and", [a, b]), a & b)
    same(run_op("bitwise_or", [a, b]), a | b)
    same(run_op("bitwise_xor", [a, b]), a ^ b)
    # shift amounts are taken mod the width, on the bit pattern (Python ints as the oracle)
    want_l = [((int(x) % (1 << bits)) << (int(s) % bits)) % (1 << bits) for x, s in zip(a, sh)]
    want_r = [(int(x) % (1 << bits)) >> (int(s) % bits) for x, s in zip(a, sh)]
    same(run_op("shift_left", [a, sh]), np.array(want_l, dtype=u).view(dtype.np))
    same(run_op("shift_right_logical", [a, sh]), np.array(want_r, dtype=u).view(dtype.np))
    assert "integer" in infer_error("bitwise_xor", [tt(F32, (2,)), tt(F32, (2,))])


@covers("idiv", "rem")
@pytest.mark.parametrize("dtype", [I32, I64])
def test_integer_division_is_c_division(dtype):
    # truncated toward zero, the remainder with the dividend's sign; a divisor of 0 gives
    # 0 and MIN / -1 wraps (Python's integers as the oracle)
    info = np.iinfo(dtype.np)
    e = np.array([info.min, info.min + 1, -7, -1, 0, 1, 3, info.max], dtype.np)
    a, b = (v.ravel() for v in np.meshgrid(e, e))
    q = [0 if y == 0 else abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
         for x, y in zip(a.tolist(), b.tolist())]
    r = [0 if y == 0 else x - qq * y for x, y, qq in zip(a.tolist(), b.tolist(), q)]
    bits = dtype.itemsize * 8
    wrap = lambda v: (v + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))  # noqa: E731
    same(run_op("idiv", [a, b]), np.array([wrap(v) for v in q], dtype.np))
    same(run_op("rem", [a, b]), np.array([wrap(v) for v in r], dtype.np))
    assert "integer" in infer_error("idiv", [tt(F32, (2,)), tt(F32, (2,))])


@covers("atan")
@pytest.mark.parametrize("dtype", FLOATS)
def test_atan_and_float_rem(dtype):
    x = arr((3, 4), dtype, low=-20.0, high=20.0)
    y = arr((3, 4), dtype, np.random.default_rng(3))
    same(run_op("atan", [x]), np.arctan(x))
    same(run_op("rem", [x, y]), np.fmod(x, y))  # C's fmod: the sign of x


@covers("random_bits")
def test_random_bits_known_answers():
    # Random123's known-answer vectors for threefry2x32_20 (kat_vectors): key (k0, k1),
    # counter (0, i); word 0 of the output
    from irgrad.ir.ops.random import threefry2x32
    assert [int(v) for v in threefry2x32(0, 0, 0, 0)] == [0x6B200159, 0x99BA4EFE]
    assert [int(v) for v in threefry2x32(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)] == \
        [0x1CB996FC, 0xBB002BE7]
    assert [int(v) for v in threefry2x32(0x13198A2E, 0x03707344, 0x243F6A88, 0x85A308D3)] == \
        [0xC4923A9C, 0x483DF7A0]
    key = np.array([0x13198A2E, 0x03707344], np.uint32).view(np.int32)
    got = run_op("random_bits", [key], result_type=tt(I32, (2, 3)))
    want = [int(threefry2x32(0x13198A2E, 0x03707344, 0, i)[0]) for i in range(6)]
    same(got, np.array(want, np.uint32).view(np.int32).reshape(2, 3))
    assert "key i32[2]" in infer_error("random_bits", [tt(I32, (3,))], result_type=tt(I32, (2,)))
