"""Automatic differentiation: the reverse-ad and forward-ad passes, the transforms built on
them (grad, value_and_grad, vjp, jvp, hvp) and `check_grads`.

Oracles, all independent of the AD code under test:
- centered finite differences in float64 (through `ig.check_grads` and written out here);
- closed forms for derivatives of scalar functions, Hessians and small models;
- the adjoint identity <J v, u> = <v, J^T u> between forward and reverse mode;
- the reference interpreter running the printed-and-parsed IR of every transform.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import irgrad as ig
from irgrad import f32, f64, i32, i64, bool_
from irgrad.ir import Builder, Function as IrFunction, TensorType, verify_function
from irgrad.ir.registry import all_ops, get_op
from irgrad.ir.types import DType

F64, F32, I32, I64, BOOL = DType.f64, DType.f32, DType.i32, DType.i64, DType.bool


def tt(dtype, *shape):
    return TensorType(dtype, tuple(shape))


def rng(seed=0):
    return np.random.default_rng(seed)


def prim(name, types, build):
    """A Function around IR built by hand: `build(b, *params)` returns the result(s)."""
    f = IrFunction(name, list(types), [f"a{i}" for i in range(len(types))])
    b = Builder(f.body)
    out = build(b, *f.params)
    f.set_outputs(list(out) if isinstance(out, (list, tuple)) else [out])
    verify_function(f)
    return ig.Function(f)


def flat(tree):
    from irgrad.pytree import flatten
    return flatten(tree)[0]


def assert_tree_close(got, want, rtol=1e-10, atol=1e-12):
    g, w = flat(got), flat(want)
    assert len(g) == len(w)
    for a, b in zip(g, w):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# =============================================================================================
# 1. Every differentiable primitive, checked to second order in both modes
# =============================================================================================

R = rng(1)
NRM = lambda *s: R.standard_normal(s)  # noqa: E731
POS = lambda *s: R.uniform(0.5, 2.0, s)  # noqa: E731
AWAY = np.array([[0.5, -0.7, 1.2], [-1.5, 0.3, -0.4]])  # |entries| >= 0.3: no kinks, no ties


def _sq(b, x):
    """x*x, so that linear ops have a nonzero second derivative to check."""
    return b.mul(x, x)


def _unary_case(name, x):
    return prim(name, [tt(F64, *x.shape)], lambda b, a: b.emit(name, a)), [x]


def _binary_case(name, x, y):
    return prim(name, [tt(F64, *x.shape), tt(F64, *y.shape)],
                lambda b, a, c: b.emit(name, a, c)), [x, y]


PRIMITIVE_CASES = {
    "neg": [_unary_case("neg", NRM(2, 3))],
    "exp": [_unary_case("exp", NRM(2, 3))],
    "log": [_unary_case("log", POS(2, 3))],
    "sin": [_unary_case("sin", NRM(2, 3))],
    "cos": [_unary_case("cos", NRM(2, 3))],
    "tanh": [_unary_case("tanh", NRM(2, 3))],
    "sqrt": [_unary_case("sqrt", POS(2, 3))],
    "log1p": [_unary_case("log1p", POS(2, 3) - 0.9)],
    "expm1": [_unary_case("expm1", NRM(2, 3))],
    "erf": [_unary_case("erf", NRM(2, 3))],
    "atan": [_unary_case("atan", 3 * NRM(2, 3))],
    "abs": [_unary_case("abs", AWAY.copy()),
            # abs composed with a smooth op, so the second derivative is not trivially zero
            (prim("abs", [tt(F64, 2, 3)], lambda b, a: b.mul(b.abs(a), b.sin(a))), [AWAY.copy()])],
    "add": [_binary_case("add", NRM(2, 3), NRM(2, 3))],
    "sub": [_binary_case("sub", NRM(2, 3), NRM(2, 3))],
    "mul": [_binary_case("mul", NRM(2, 3), NRM(2, 3)),
            # the same value on both sides: contributions of two uses must add up
            (prim("mul", [tt(F64, 4)], lambda b, a: b.mul(a, a)), [NRM(4)])],
    # rem(a, b) = a - trunc(a/b) b: away from the jumps where a/b is an integer
    "rem": [_binary_case("rem", 3 * AWAY + 0.15, np.full((2, 3), 0.7))],
    "div": [_binary_case("div", NRM(2, 3), POS(2, 3)),
            _binary_case("div", NRM(2, 3), -POS(2, 3))],
    "pow": [_binary_case("pow", POS(2, 3), NRM(2, 3)),
            # a constant exponent, as `x ** 2.5` traces
            (prim("pow", [tt(F64, 5)], lambda b, a: b.pow(a, b.full(a.type, 2.5))), [POS(5)])],
    "max": [_binary_case("max", (x := NRM(2, 3)), x + AWAY),
            (prim("max", [tt(F64, 2, 3)], lambda b, a: b.mul(b.max(a, b.zeros_like(a)), a)),
             [AWAY.copy()])],
    "min": [_binary_case("min", (x := NRM(2, 3)), x + AWAY),
            (prim("min", [tt(F64, 2, 3)], lambda b, a: b.mul(b.min(a, b.zeros_like(a)), a)),
             [AWAY.copy()])],
    "select": [(prim("select", [tt(BOOL, 2, 3), tt(F64, 2, 3), tt(F64, 2, 3)],
                     lambda b, c, x, y: b.select(c, _sq(b, x), _sq(b, y))),
                [AWAY > 0, NRM(2, 3), NRM(2, 3)])],
    "cast": [(prim("cast", [tt(F64, 2, 3)], lambda b, a: b.cast(_sq(b, a), F32)), [NRM(2, 3)]),
             (prim("cast", [tt(F32, 2, 3)], lambda b, a: b.cast(_sq(b, a), F64)),
              [NRM(2, 3).astype(np.float32)])],
    "broadcast": [(prim("broadcast", [tt(F64, 3, 1)],
                        lambda b, a: b.broadcast(_sq(b, a), (2, 3, 4), (1, 2))), [NRM(3, 1)]),
                  (prim("broadcast", [tt(F64)],
                        lambda b, a: b.broadcast(_sq(b, a), (2, 2), ())), [np.array(0.7)])],
    "reshape": [(prim("reshape", [tt(F64, 2, 3)], lambda b, a: b.reshape(_sq(b, a), (3, 1, 2))),
                 [NRM(2, 3)])],
    "transpose": [(prim("transpose", [tt(F64, 2, 3, 4)],
                        lambda b, a: b.transpose(_sq(b, a), (2, 0, 1))), [NRM(2, 3, 4)])],
    "slice": [(prim("slice", [tt(F64, 4, 5)], lambda b, a: b.slice(_sq(b, a), (1, 2), (3, 5))),
               [NRM(4, 5)])],
    "pad": [(prim("pad", [tt(F64, 2, 3)], lambda b, a: b.pad(_sq(b, a), (1, 0), (2, 1))),
             [NRM(2, 3)])],
    "concat": [(prim("concat", [tt(F64, 2, 3), tt(F64, 2, 1), tt(F64, 2, 2)],
                     lambda b, x, y, z: b.concat([_sq(b, x), y, b.mul(z, z)], 1)),
                [NRM(2, 3), NRM(2, 1), NRM(2, 2)])],
    "reduce_sum": [(prim("reduce_sum", [tt(F64, 2, 3, 4)],
                         lambda b, a: b.reduce_sum(_sq(b, a), (0, 2))), [NRM(2, 3, 4)])],
    "reduce_min": [(prim("reduce_min", [tt(F64, 3, 4)],
                         lambda b, a: b.emit("reduce_min", b.sin(a), axes=(0,))), [NRM(3, 4)])],
    "reduce_max": [(prim("reduce_max", [tt(F64, 3, 4)],
                         lambda b, a: b.reduce_max(_sq(b, a), (1,))), [NRM(3, 4)]),
                   (prim("reduce_max", [tt(F64, 2, 3, 2)],
                         lambda b, a: b.reduce_max(b.sin(a), (0, 2))), [NRM(2, 3, 2)])],
    "matmul": [_binary_case("matmul", NRM(2, 3), NRM(3, 4)),
               _binary_case("matmul", NRM(2, 2, 3), NRM(2, 3, 4)),
               (prim("matmul", [tt(F64, 3, 3)], lambda b, a: b.matmul(a, a)), [NRM(3, 3)])],
    "gather": [(prim("gather", [tt(F64, 4, 3), tt(I32, 2, 3)],
                     lambda b, a, i: b.gather(_sq(b, a), i, 0)),
                [NRM(4, 3), np.array([[0, 1, 3], [3, 3, -1]], np.int32)]),
               (prim("gather", [tt(F64, 4, 3), tt(I64, 5)],
                     lambda b, a, i: b.gather(_sq(b, a), i, 1)),
                [NRM(4, 3), np.array([0, 2, 2, 1, -3], np.int64)])],
    "reverse": [(prim("reverse", [tt(F64, 2, 3, 4)],
                      lambda b, a: b.emit("reverse", _sq(b, a), axes=(0, 2))), [NRM(2, 3, 4)])],
    "window": [(prim("window", [tt(F64, 2, 5, 6)],
                     lambda b, a: b.emit("window", _sq(b, a), kernel=(2, 3), stride=(2, 1),
                                         dilation=(1, 2), pad_low=(1, 0), pad_high=(0, 2))),
                [NRM(2, 5, 6)]),
               (prim("window", [tt(F64, 2, 7)],  # negative padding crops
                     lambda b, a: b.emit("window", b.sin(a), kernel=(2,), stride=(2,),
                                         dilation=(1,), pad_low=(-1,), pad_high=(0,))), [NRM(2, 7)])],
    "conv": [(prim("conv", [tt(F64, 2, 4, 5, 6), tt(F64, 6, 2, 3, 2)],
                   lambda b, x, w: b.emit("conv", _sq(b, x), b.sin(w), stride=(2, 1), dilation=(1, 2),
                                          pad_low=(1, 0), pad_high=(1, 2), groups=2)),
              [NRM(2, 4, 5, 6), NRM(6, 2, 3, 2)]),
             (prim("conv", [tt(F64, 2, 3, 8), tt(F64, 4, 3, 3)],
                   lambda b, x, w: b.emit("conv", x, w, stride=(3,), dilation=(1,), pad_low=(2,),
                                          pad_high=(-1,), groups=1)), [NRM(2, 3, 8), NRM(4, 3, 3)])],
    "conv_weight_grad": [(prim("conv_weight_grad", [tt(F64, 2, 4, 5, 6), tt(F64, 2, 6, 3, 6)],
                               lambda b, x, g: b.emit("conv_weight_grad", _sq(b, x), b.sin(g),
                                                      kernel=(3, 2), stride=(2, 1), dilation=(1, 2),
                                                      pad_low=(1, 0), pad_high=(1, 2), groups=2)),
                          [NRM(2, 4, 5, 6), NRM(2, 6, 3, 6)])],
    "conv_input_grad": [(prim("conv_input_grad", [tt(F64, 2, 6, 3, 6), tt(F64, 6, 2, 3, 2)],
                              lambda b, g, w: b.emit("conv_input_grad", _sq(b, g), b.sin(w),
                                                     size=(5, 6), stride=(2, 1), dilation=(1, 2),
                                                     pad_low=(1, 0), pad_high=(1, 2), groups=2)),
                         [NRM(2, 6, 3, 6), NRM(6, 2, 3, 2)])],
    "window_transpose": [(prim("window_transpose", [tt(F64, 2, 2, 3, 3, 4)],
                               lambda b, c: b.emit("window_transpose", _sq(b, c), kernel=(2, 3),
                                                   stride=(2, 1), dilation=(1, 2), pad_low=(1, 0),
                                                   pad_high=(0, 2), size=(5, 6))),
                          [NRM(2, 2, 3, 3, 4)])],
    "scatter_add": [(prim("scatter_add", [tt(F64, 4, 3), tt(I32, 3), tt(F64, 3, 3)],
                          lambda b, a, i, u: b.scatter_add(_sq(b, a), i, b.mul(u, u), 0)),
                     [NRM(4, 3), np.array([1, 1, 3], np.int32), NRM(3, 3)])],
}

PRIMITIVE_PARAMS = [pytest.param(name, fn, args, id=f"{name}-{k}")
                    for name, cases in PRIMITIVE_CASES.items()
                    for k, (fn, args) in enumerate(cases)]


def test_every_differentiable_primitive_has_a_gradient_test():
    """A new primitive with derivative rules must come with a case above."""
    missing = [name for name, opdef in all_ops().items()
               if opdef.differentiable and not opdef.has_region and name not in PRIMITIVE_CASES]
    assert not missing, f"differentiable ops without a gradient test: {missing}"
    for name in PRIMITIVE_CASES:
        assert get_op(name).differentiable, name


def test_every_differentiable_primitive_has_both_rules():
    for name, opdef in all_ops().items():
        if opdef.differentiable and not opdef.has_region:
            assert opdef.vjp is not None and opdef.jvp is not None, name


@pytest.mark.parametrize("name, fn, args", PRIMITIVE_PARAMS)
def test_primitive_gradients_second_order(name, fn, args):
    assert any(op.opname == name for op in fn.ir.ops), "the case must exercise the op"
    ig.check_grads(fn, args, order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("name, fn, args", [p for p in PRIMITIVE_PARAMS
                                            if p.values[0] in ("tanh", "pow", "matmul", "div")])
def test_some_primitives_third_order(name, fn, args):
    ig.check_grads(fn, args, order=3, modes=("fwd", "rev"))


def test_derivative_conventions_at_kinks_and_ties():
    """Where the derivative does not exist, the rules pick documented values, the same in
    both modes: max/min ties go to the second operand (relu'(0) = 0, as in PyTorch),
    |x|'(0) = 0, and reduce_max splits the derivative evenly among tied maxima."""
    x = np.array([[1.0, 3.0, 3.0], [2.0, -1.0, 2.0]])
    fmax = ig.trace(lambda x: ig.sum(ig.max(x, axis=1)), f64[2, 3])
    want = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5]])
    np.testing.assert_array_equal(ig.grad(fmax)(x), want)
    v = NRM(2, 3)
    np.testing.assert_allclose(ig.jvp(fmax)(x, v)[1], np.sum(want * v), rtol=1e-14)
    fall = ig.trace(lambda x: ig.max(x), f64[2, 3])  # max over everything: 3 ties
    np.testing.assert_allclose(ig.grad(fall)(np.ones((2, 3))), np.full((2, 3), 1 / 6))

    zero = np.array([0.0, 1.0, -1.0])
    relu = ig.trace(lambda x: ig.sum(ig.relu(x)), f64[3])
    np.testing.assert_array_equal(ig.grad(relu)(zero), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(ig.jvp(relu)(zero, np.ones(3))[1], 1.0)
    absf = ig.trace(lambda x: ig.sum(ig.abs(x)), f64[3])
    np.testing.assert_array_equal(ig.grad(absf)(zero), [0.0, 1.0, -1.0])
    a = np.array([1.0, 2.0, 3.0])
    for fn in (ig.maximum, ig.minimum):
        f2 = ig.trace(lambda p, q, fn=fn: ig.sum(fn(p, q)), f64[3], f64[3])
        da, db = ig.grad(f2, argnums=(0, 1))(a, a.copy())
        np.testing.assert_array_equal(da, 0.0)
        np.testing.assert_array_equal(db, 1.0)
        _, t = ig.jvp(f2, argnums=(0, 1))(a, a.copy(), (np.full(3, 10.0), np.ones(3)))
        assert t == 3.0


# Ops with no derivative (zero wherever it exists): nothing may flow through them.
# name -> (build V(x, y), V in numpy); the function checked is sum(V(x, y) * y).
ZERO_CASES = {
    "sign": (lambda b, x, y: b.sign(x), lambda x, y: np.sign(x)),
    "floor": (lambda b, x, y: b.floor(b.scale(x, 3.0)), lambda x, y: np.floor(3 * x)),
    "ceil": (lambda b, x, y: b.ceil(b.scale(x, 3.0)), lambda x, y: np.ceil(3 * x)),
    "round": (lambda b, x, y: b.round(b.scale(x, 3.0)), lambda x, y: np.round(3 * x)),
    "stop_gradient": (lambda b, x, y: b.emit("stop_gradient", b.sin(x)),
                      lambda x, y: np.sin(x)),
    **{name: ((lambda name: lambda b, x, y: b.cast(b.emit(name, b.cast(b.scale(x, 100.0), I32),
                                                          b.cast(b.scale(y, 3.0), I32)), F64))(name),
              (lambda fn: lambda x, y: fn((100 * x).astype(np.int32), (3 * y).astype(np.int32)).astype(np.float64))(fn))
       for name, fn in (("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or),
                        ("bitwise_xor", np.bitwise_xor),
                        ("idiv", lambda a, c: np.where(c == 0, 0,
                                                       np.trunc(a / np.where(c == 0, 1, c)))),
                        ("shift_left", lambda a, c: np.left_shift(a, c & 31)),
                        ("shift_right_logical",
                         lambda a, c: (a.view(np.uint32) >> (c & 31).astype(np.uint32)).view(np.int32)))},
    # random bits of a key made from x: a function of x with zero derivative
    "random_bits": (lambda b, x, y: b.cast(b.emit("random_bits", b.reshape(b.cast(b.slice(
                        b.reshape(b.scale(x, 1000.0), (6,)), (0,), (2,)), I32), (2,)),
                        result_type=TensorType(I32, (2, 3))), F64),
                    lambda x, y: _random_bits_np((1000 * x).reshape(6)[:2].astype(np.int32), (2, 3))),
    **{c: ((lambda c: lambda b, x, y: b.cast(b.emit(c, x, y), F64))(c),
           (lambda fn: lambda x, y: fn(x, y).astype(np.float64))(fn))
       for c, fn in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                     ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal))},
}


def _random_bits_np(key, shape):
    from irgrad.ir.ops.random import threefry2x32
    i = np.arange(int(np.prod(shape)), dtype=np.uint32)
    x0, _ = threefry2x32(key[0].astype(np.int64).astype(np.uint32), key[1].astype(np.int64).astype(np.uint32),
                         np.zeros_like(i), i)
    return x0.view(np.int32).reshape(shape).astype(np.float64)


def test_every_non_differentiable_op_with_operands_is_covered():
    missing = [name for name, opdef in all_ops().items()
               if not opdef.differentiable and opdef.num_operands != 0 and name not in ZERO_CASES]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(ZERO_CASES))
def test_non_differentiable_ops_pass_no_derivative(name):
    build, value = ZERO_CASES[name]
    x, y = AWAY.copy(), NRM(2, 3)
    y[0, 0] = x[0, 0]  # one tie, so eq/ne/le/ge see both outcomes
    fn = prim(name, [tt(F64, 2, 3), tt(F64, 2, 3)],
              lambda b, a, c: b.reduce_sum(b.mul(build(b, a, c), c), (0, 1)))
    dx, dy = ig.grad(fn, argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(dx, np.zeros_like(x))  # x only reaches the op
    np.testing.assert_array_equal(dy, value(x, y))  # the op's value, treated as a constant
    for argnums, tangent in ((0, NRM(2, 3)), (1, NRM(2, 3))):
        _, tan = ig.jvp(fn, argnums=argnums)(x, y, tangent)
        want = 0.0 if argnums == 0 else np.sum(value(x, y) * tangent)
        np.testing.assert_allclose(tan, want, rtol=1e-12, atol=0)
    if name == "sign":  # no ties between x and 0, so finite differences apply
        ig.check_grads(fn, [x, y], order=2)


# =============================================================================================
# 2. Every differentiable library function, in float64, at points away from kinks
# =============================================================================================

def _lib(fn, *specs):
    return ig.trace(fn, *specs)


LABELS = np.array([2, 0, 3], np.int32)
LIB_CASES = {
    "exp": (_lib(lambda x: ig.exp(x), f64[2, 3]), [NRM(2, 3)]),
    "log": (_lib(lambda x: ig.log(x), f64[2, 3]), [POS(2, 3)]),
    "sin": (_lib(lambda x: ig.sin(x), f64[2, 3]), [NRM(2, 3)]),
    "cos": (_lib(lambda x: ig.cos(x), f64[2, 3]), [NRM(2, 3)]),
    "tanh": (_lib(lambda x: ig.tanh(x), f64[2, 3]), [NRM(2, 3)]),
    "sqrt": (_lib(lambda x: ig.sqrt(x), f64[2, 3]), [POS(2, 3)]),
    "abs": (_lib(lambda x: ig.abs(x) * x, f64[2, 3]), [AWAY.copy()]),
    "relu": (_lib(lambda x: ig.relu(x) * ig.sin(x), f64[2, 3]), [AWAY.copy()]),
    "sigmoid": (_lib(lambda x: ig.sigmoid(x), f64[2, 3]), [3 * NRM(2, 3)]),
    "gelu": (_lib(lambda x: ig.gelu(x), f64[2, 3]), [2 * NRM(2, 3)]),
    "softmax": (_lib(lambda x: ig.softmax(x, axis=-1), f64[2, 4]), [NRM(2, 4)]),
    "softmax_axis0": (_lib(lambda x: ig.softmax(x, axis=0), f64[3, 2]), [NRM(3, 2)]),
    "log_softmax": (_lib(lambda x: ig.log_softmax(x, axis=1), f64[2, 4]), [NRM(2, 4)]),
    "logsumexp": (_lib(lambda x: ig.logsumexp(x, axis=-1), f64[3, 4]), [NRM(3, 4)]),
    "logsumexp_keepdims": (_lib(lambda x: ig.logsumexp(x, axis=(0, 1), keepdims=True),
                                f64[2, 3]), [NRM(2, 3)]),
    "where": (_lib(lambda x, y: ig.where(np.array([True, False, True]), x * x, ig.sin(y)),
                   f64[2, 3], f64[3]), [NRM(2, 3), NRM(3)]),
    "where_data": (_lib(lambda x, y: ig.where(x > y, x * y, y), f64[2, 3], f64[2, 3]),
                   [(x := NRM(2, 3)), x + AWAY]),
    "maximum": (_lib(lambda x, y: ig.maximum(x, y) * x, f64[2, 3], f64[2, 3]),
                [(x := NRM(2, 3)), x + AWAY]),
    "minimum": (_lib(lambda x, y: ig.minimum(x, 0.25) * y, f64[2, 3], f64[2, 3]),
                [AWAY.copy(), NRM(2, 3)]),
    "sum": (_lib(lambda x: ig.sum(x * x, axis=1) + x.sum(), f64[2, 3]), [NRM(2, 3)]),
    "mean": (_lib(lambda x: ig.mean(ig.sin(x), axis=(0, 2)) * x.mean(), f64[2, 3, 2]),
             [NRM(2, 3, 2)]),
    "max": (_lib(lambda x: ig.max(x * x, axis=0) + x.max(), f64[3, 4]), [NRM(3, 4)]),
    "max_keepdims": (_lib(lambda x: x - ig.max(x, axis=1, keepdims=True), f64[3, 4]),
                     [NRM(3, 4)]),
    "reshape": (_lib(lambda x: ig.reshape(x * x, (3, 2)) + x.reshape(-1, 2), f64[2, 3]),
                [NRM(2, 3)]),
    "transpose": (_lib(lambda x: ig.transpose(x * x, (1, 0, 2)) + x.transpose(1, 0, 2),
                       f64[2, 3, 2]), [NRM(2, 3, 2)]),
    "T": (_lib(lambda x: x.T @ x, f64[3, 2]), [NRM(3, 2)]),
    "matmul": (_lib(lambda a, c: ig.matmul(a, c) * 2.0 + a @ c, f64[2, 3], f64[3, 4]),
               [NRM(2, 3), NRM(3, 4)]),
    "matmul_vector": (_lib(lambda a, v: ig.sum(a @ v) + v @ (a.T @ a), f64[3, 4], f64[4]),
                      [NRM(3, 4), NRM(4)]),
    "matmul_batched_broadcast": (_lib(lambda a, c: a @ c, f64[2, 3, 4], f64[4, 2]),
                                 [NRM(2, 3, 4), NRM(4, 2)]),
    "take": (_lib(lambda a: ig.take(a * a, np.array([[2, 0], [2, 1]], np.int32), axis=0),
                  f64[3, 4]), [NRM(3, 4)]),
    "take_axis1": (_lib(lambda a, i: ig.take(a, i, axis=1) * ig.take(a, i, axis=1), f64[3, 4],
                        i32[5]), [NRM(3, 4), np.array([3, 3, 0, -1, 1], np.int32)]),
    "layer_norm": (_lib(lambda x, g, c: ig.layer_norm(x, g, c), f64[3, 5], f64[5], f64[5]),
                   [NRM(3, 5), NRM(5), NRM(5)]),
    "layer_norm_plain": (_lib(lambda x: ig.layer_norm(x, eps=1e-3), f64[2, 2, 4]),
                         [NRM(2, 2, 4)]),
    "cross_entropy": (_lib(lambda z, y: ig.cross_entropy(z, y), f64[3, 4], i32[3]),
                      [NRM(3, 4), LABELS]),
    "mse_loss": (_lib(lambda p, t: ig.mse_loss(p, t), f64[3, 4], f64[3, 4]),
                 [NRM(3, 4), NRM(3, 4)]),
    "indexing": (_lib(lambda x: x[0] * x[1, 1:3].sum() + x[..., :2].sum() + x[:, 2:5].sum(),
                      f64[3, 5]), [NRM(3, 5)]),
    "indexing_negative": (_lib(lambda x: x[-1, None, :] * x[1:-1], f64[4, 3]), [NRM(4, 3)]),
    "concatenate": (_lib(lambda x, y: ig.concatenate([x * x, y, ig.sin(x)], axis=1),
                         f64[2, 3], f64[2, 2]), [NRM(2, 3), NRM(2, 2)]),
    "stack": (_lib(lambda x, y: ig.stack([x * y, y], axis=1), f64[2, 3], f64[2, 3]),
              [NRM(2, 3), NRM(2, 3)]),
    "pad": (_lib(lambda x: ig.pad(x * x, ((1, 0), (0, 2))), f64[2, 3]), [NRM(2, 3)]),
    "var": (_lib(lambda x: ig.var(x, axis=0), f64[4, 3]), [NRM(4, 3)]),
    "square": (_lib(lambda x: ig.square(x), f64[2, 3]), [NRM(2, 3)]),
    "operators": (_lib(lambda x, y: (x + 1.0) * (2.0 - y) / (y * y + 1.0) - -x + 3.0 / (x * x + 1.0),
                       f64[2, 3], f64[2, 3]), [NRM(2, 3), NRM(2, 3)]),
    "broadcasting": (_lib(lambda x, r, c: x * r + c / (r * r + 1.0), f64[2, 3], f64[3],
                          f64[2, 1]), [NRM(2, 3), NRM(3), NRM(2, 1)]),
    "pow_operator": (_lib(lambda x, y: x ** 2.5 + x ** y + 2.0 ** y + x ** 3, f64[2, 3],
                          f64[2, 3]), [POS(2, 3), NRM(2, 3)]),
    "sqrt_operator": (_lib(lambda x: x ** 0.5, f64[4]), [POS(4)]),
    "astype": (_lib(lambda x: (x * x).astype(ig.f32).astype(ig.f64), f64[3]), [NRM(3)]),
    "multiple_results": (_lib(lambda x, y: (ig.sum(ig.tanh(x @ y)), ig.exp(y)), f64[2, 3],
                              f64[3, 2]), [NRM(2, 3), NRM(3, 2)]),
}

LIBRARY_NAMES = ("exp log sin cos tanh sqrt abs relu sigmoid gelu softmax log_softmax logsumexp "
                 "where maximum minimum sum mean max reshape transpose matmul take layer_norm "
                 "cross_entropy mse_loss indexing concatenate pad").split()


def test_every_library_function_has_a_gradient_test():
    assert set(LIBRARY_NAMES) <= set(LIB_CASES)
    for name in LIBRARY_NAMES:
        if name != "indexing":
            assert hasattr(ig, name), name


@pytest.mark.parametrize("name", sorted(LIB_CASES))
def test_library_gradients_second_order(name):
    fn, args = LIB_CASES[name]
    ig.check_grads(fn, args, order=2, modes=("fwd", "rev"))


def test_check_grads_accepts_float32_functions():
    """check_grads promotes to float64 itself, so f32 models are checked tightly."""
    fn = ig.trace(lambda w, x, y: ig.cross_entropy(ig.tanh(x @ w), y), f32[4, 3], f32[5, 4],
                  i32[5])
    ig.check_grads(fn, [NRM(4, 3).astype(np.float32), NRM(5, 4).astype(np.float32),
                        np.array([0, 1, 2, 1, 0], np.int32)], order=2)


def test_gradients_keep_the_argument_dtype():
    fn = ig.trace(lambda w, x: ig.sum(ig.tanh(x @ w)), f32[4, 3], f32[5, 4])
    dw, dx = ig.grad(fn, argnums=(0, 1))(NRM(4, 3).astype(np.float32),
                                       NRM(5, 4).astype(np.float32))
    assert dw.dtype == np.float32 and dw.shape == (4, 3)
    assert dx.dtype == np.float32 and dx.shape == (5, 4)


# =============================================================================================
# 3. Higher order: grad of grad, hvp and jvp of grad against closed forms and finite differences
# =============================================================================================

A3 = rng(7).standard_normal((4, 4))


def quartic(x):
    """f(x) = x.Ax/2 + sum sin x + (x.x)^2/4, with a Hessian in closed form."""
    return 0.5 * ig.sum(x * (A3 @ x)) + ig.sum(ig.sin(x)) + ig.square(ig.sum(x * x)) * 0.25


def quartic_grad(x):
    s = (A3 + A3.T) / 2
    return s @ x + np.cos(x) + (x @ x) * x


def quartic_hessian(x):
    s = (A3 + A3.T) / 2
    return s - np.diag(np.sin(x)) + (x @ x) * np.eye(len(x)) + 2 * np.outer(x, x)


QUARTIC = ig.trace(quartic, f64[4])
X4 = rng(8).standard_normal(4)
V4 = rng(9).standard_normal(4)


def fd_jacobian(fn, x, eps=1e-6):
    """Columns (g(x + eps e_j) - g(x - eps e_j)) / 2 eps, g = fn, in float64."""
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e.flat[j] = eps
        cols.append(((np.asarray(fn(x + e)) - np.asarray(fn(x - e))) / (2 * eps)).ravel())
    return np.stack(cols, axis=1)


def test_grad_against_closed_form():
    np.testing.assert_allclose(ig.grad(QUARTIC)(X4), quartic_grad(X4), rtol=1e-12, atol=1e-12)


def test_hvp_against_closed_form_and_finite_differences_of_the_gradient():
    g = ig.grad(QUARTIC)
    hv = ig.hvp(QUARTIC)(X4, V4)
    np.testing.assert_allclose(hv, quartic_hessian(X4) @ V4, rtol=1e-12, atol=1e-12)
    h_fd = fd_jacobian(g, X4)
    np.testing.assert_allclose(hv, h_fd @ V4, rtol=1e-6, atol=1e-8)


def test_grad_of_grad_gives_the_hessian():
    g = ig.grad(QUARTIC)
    hess = np.zeros((4, 4))
    for i in range(4):  # row i of H = grad of (grad f)_i
        u = np.eye(4)[i]
        gi = ig.trace(lambda x, u=u: ig.sum(g(x) * u), f64[4])
        hess[i] = ig.grad(gi)(X4)
    np.testing.assert_allclose(hess, quartic_hessian(X4), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hess, fd_jacobian(g, X4), rtol=1e-6, atol=1e-8)


def test_jvp_of_grad_is_the_hessian_vector_product():
    out, tangent = ig.jvp(ig.grad(QUARTIC))(X4, V4)
    np.testing.assert_allclose(out, quartic_grad(X4), rtol=1e-12)
    np.testing.assert_allclose(tangent, quartic_hessian(X4) @ V4, rtol=1e-12, atol=1e-12)


def test_hvp_of_a_matrix_argument_against_finite_differences():
    X = rng(3).standard_normal((5, 3))
    fn = ig.trace(lambda w: ig.sum(ig.tanh(X @ w)) + ig.logsumexp(ig.reshape(w, (-1,)), axis=0),
                  f64[3, 2])
    w, v = rng(4).standard_normal((3, 2)), rng(5).standard_normal((3, 2))
    hv = ig.hvp(fn)(w, v)
    assert hv.shape == (3, 2)
    g = ig.grad(fn)
    eps = 1e-6
    want = (g(w + eps * v) - g(w - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv, want, rtol=1e-6, atol=1e-8)
    # symmetry of the Hessian: <u, H v> = <v, H u>
    u = rng(6).standard_normal((3, 2))
    np.testing.assert_allclose(np.sum(u * hv), np.sum(v * ig.hvp(fn)(w, u)), rtol=1e-10)


def _sig(x):
    return 1 / (1 + np.exp(-x))


# (f, f''' in closed form, point)
THIRD_DERIVATIVES = {
    "x2sinx": (lambda x: ig.sin(x) * x * x,
               lambda x: 6 * np.cos(x) - 6 * x * np.sin(x) - x * x * np.cos(x), 0.3),
    "exp2x": (lambda x: ig.exp(2.0 * x), lambda x: 8 * np.exp(2 * x), 0.4),
    "log": (lambda x: ig.log(x), lambda x: 2 / x ** 3, 1.7),
    "pow2.5": (lambda x: x ** 2.5, lambda x: 2.5 * 1.5 * 0.5 * x ** -0.5, 1.3),
    "pow_base": (lambda x: 3.0 ** x, lambda x: np.log(3.0) ** 3 * 3.0 ** x, 0.6),
    "tanh": (lambda x: ig.tanh(x),
             lambda x: (1 - np.tanh(x) ** 2) * (6 * np.tanh(x) ** 2 - 2), 0.8),
    "reciprocal": (lambda x: 1.0 / x, lambda x: -6 / x ** 4, 0.9),
    "sqrt": (lambda x: ig.sqrt(x), lambda x: 3 / 8 * x ** -2.5, 2.2),
    "sigmoid": (lambda x: ig.sigmoid(x),
                lambda x: _sig(x) * (1 - _sig(x)) * (1 - 6 * _sig(x) + 6 * _sig(x) ** 2), -0.7),
    "cos_cubed": (lambda x: x * x * x * ig.cos(x),
                  lambda x: (6 - 9 * x * x) * np.cos(x) + (x ** 3 - 18 * x) * np.sin(x), 1.1),
    "relu_branch": (lambda x: ig.relu(x) * x * x * x, lambda x: 24 * x, 0.8),
}


@pytest.mark.parametrize("name", sorted(THIRD_DERIVATIVES))
def test_grad_grad_grad_against_closed_forms(name):
    f, d3, x = THIRD_DERIVATIVES[name]
    fn = ig.trace(f, f64[()])
    g3 = ig.grad(ig.grad(ig.grad(fn)))
    assert g3.ir.result_types == [TensorType(F64, ())]
    np.testing.assert_allclose(g3(x), d3(x), rtol=1e-12)


def test_fourth_derivative_and_jvp_of_second_derivative():
    fn = ig.trace(lambda x: ig.exp(2.0 * x) * ig.sin(x), f64[()])
    x = 0.45
    # d^n/dx^n e^{2x} sin x = 5^{n/2} e^{2x} sin(x + n atan(1/2))
    closed = lambda n: 5 ** (n / 2) * np.exp(2 * x) * np.sin(x + n * np.arctan(0.5))  # noqa: E731
    g = fn
    for n in range(1, 5):
        g = ig.grad(g)
        np.testing.assert_allclose(g(x), closed(n), rtol=1e-12)
    g2 = ig.grad(ig.grad(fn))
    val, tan = ig.jvp(g2)(x, 2.0)
    np.testing.assert_allclose(val, closed(2), rtol=1e-12)
    np.testing.assert_allclose(tan, 2.0 * closed(3), rtol=1e-12)


def test_reverse_over_forward_and_forward_over_forward():
    """jvp is itself differentiable: grad of a directional derivative, jvp of a jvp."""
    fn = ig.trace(lambda x: ig.sin(x) * x * x, f64[()])
    x, v = 0.3, 1.5
    d1 = lambda x: 2 * x * np.sin(x) + x * x * np.cos(x)  # noqa: E731
    d2 = lambda x: 2 * np.sin(x) + 4 * x * np.cos(x) - x * x * np.sin(x)  # noqa: E731
    j = ig.jvp(fn)  # (x, t) -> (f, f' t)
    dd = ig.trace(lambda x, t: j(x, t)[1], f64[()], f64[()])
    np.testing.assert_allclose(dd(x, v), d1(x) * v, rtol=1e-12)
    dx, dt = ig.grad(dd, argnums=(0, 1))(x, v)
    np.testing.assert_allclose(dx, d2(x) * v, rtol=1e-12)
    np.testing.assert_allclose(dt, d1(x), rtol=1e-12)
    val, t2 = ig.jvp(dd, argnums=0)(x, v, 1.0)
    np.testing.assert_allclose(val, d1(x) * v, rtol=1e-12)
    np.testing.assert_allclose(t2, d2(x) * v, rtol=1e-12)


# =============================================================================================
# 4. Pytrees and argnums through every transform
# =============================================================================================

N, D_IN, D_OUT = 5, 3, 2
XB = rng(11).standard_normal((N, D_IN))
TB = rng(12).standard_normal((N, D_OUT))
PARAMS = {"W": rng(13).standard_normal((D_IN, D_OUT)), "b": rng(14).standard_normal(D_OUT)}
P_SPECS = {"W": f64[D_IN, D_OUT], "b": f64[D_OUT]}


def linreg(params, x, t):
    return ig.mse_loss(x @ params["W"] + params["b"], t)


LINREG = ig.trace(linreg, P_SPECS, f64[N, D_IN], f64[N, D_OUT])


def linreg_np(p, x, t):
    r = x @ p["W"] + p["b"] - t
    scale = 2.0 / r.size
    return np.mean(r * r), {"W": scale * x.T @ r, "b": scale * r.sum(0)}, scale * r @ p["W"].T


def test_grad_of_a_dict_argument_with_int_argnums():
    g = ig.grad(LINREG, argnums=0)(PARAMS, XB, TB)
    _, want, _ = linreg_np(PARAMS, XB, TB)
    assert isinstance(g, dict) and set(g) == {"W", "b"}
    assert_tree_close(g, want)


def test_grad_with_tuple_argnums():
    _, gp, gx = linreg_np(PARAMS, XB, TB)
    dp, dx = ig.grad(LINREG, argnums=(0, 1))(PARAMS, XB, TB)
    assert_tree_close(dp, gp)
    np.testing.assert_allclose(dx, gx, rtol=1e-10)
    (dp1,) = ig.grad(LINREG, argnums=(0,))(PARAMS, XB, TB)
    assert_tree_close(dp1, gp)
    dt = ig.grad(LINREG, argnums=2)(PARAMS, XB, TB)
    r = XB @ PARAMS["W"] + PARAMS["b"] - TB
    np.testing.assert_allclose(dt, -2.0 * r / r.size, rtol=1e-10)


def test_value_and_grad_pytrees():
    loss, gp, gx = linreg_np(PARAMS, XB, TB)
    v, g = ig.value_and_grad(LINREG, argnums=0)(PARAMS, XB, TB)
    np.testing.assert_allclose(v, loss, rtol=1e-12)
    assert_tree_close(g, gp)
    v2, (g0, g1) = ig.value_and_grad(LINREG, argnums=(0, 1))(PARAMS, XB, TB)
    np.testing.assert_allclose(v2, loss, rtol=1e-12)
    assert_tree_close(g0, gp)
    np.testing.assert_allclose(g1, gx, rtol=1e-10)


def two_outputs(params, x):
    return {"out": x @ params["W"] + params["b"], "sq": ig.sum(params["W"] * params["W"])}


TWO = ig.trace(two_outputs, P_SPECS, f64[N, D_IN])


def test_vjp_with_pytree_arguments_and_results():
    u = {"out": rng(20).standard_normal((N, D_OUT)), "sq": np.array(0.7)}
    ct = ig.vjp(TWO, argnums=0)(PARAMS, XB, u)
    want = {"W": XB.T @ u["out"] + 2 * 0.7 * PARAMS["W"], "b": u["out"].sum(0)}
    assert_tree_close(ct, want)
    ct_p, ct_x = ig.vjp(TWO, argnums=(0, 1))(PARAMS, XB, u)
    assert_tree_close(ct_p, want)
    np.testing.assert_allclose(ct_x, u["out"] @ PARAMS["W"].T, rtol=1e-10)


def test_jvp_with_pytree_arguments_and_results():
    v = {"W": rng(21).standard_normal((D_IN, D_OUT)), "b": rng(22).standard_normal(D_OUT)}
    out, tan = ig.jvp(TWO, argnums=0)(PARAMS, XB, v)
    assert_tree_close(out, two_outputs_np(PARAMS, XB))
    want = {"out": XB @ v["W"] + v["b"], "sq": np.array(2 * np.sum(PARAMS["W"] * v["W"]))}
    assert_tree_close(tan, want)
    vx = rng(23).standard_normal((N, D_IN))
    out2, tan2 = ig.jvp(TWO, argnums=(0, 1))(PARAMS, XB, (v, vx))
    want2 = {"out": XB @ v["W"] + v["b"] + vx @ PARAMS["W"], "sq": want["sq"]}
    assert_tree_close(tan2, want2)


def two_outputs_np(p, x):
    return {"out": x @ p["W"] + p["b"], "sq": np.sum(p["W"] ** 2)}


def test_hvp_with_pytrees():
    v = {"W": rng(24).standard_normal((D_IN, D_OUT)), "b": rng(25).standard_normal(D_OUT)}
    hv = ig.hvp(LINREG, argnums=0)(PARAMS, XB, TB, v)
    dr = XB @ v["W"] + v["b"]
    scale = 2.0 / (N * D_OUT)
    assert_tree_close(hv, {"W": scale * XB.T @ dr, "b": scale * dr.sum(0)})
    # tuple argnums: (params, x) together, the tangent a matching tuple
    vx = rng(26).standard_normal((N, D_IN))
    hv_p, hv_x = ig.hvp(LINREG, argnums=(0, 1))(PARAMS, XB, TB, (v, vx))
    g = ig.grad(LINREG, argnums=(0, 1))
    eps = 1e-6
    plus = g({k: PARAMS[k] + eps * v[k] for k in PARAMS}, XB + eps * vx, TB)
    minus = g({k: PARAMS[k] - eps * v[k] for k in PARAMS}, XB - eps * vx, TB)
    fd = [(a - b) / (2 * eps) for a, b in zip(flat(plus), flat(minus))]
    assert_tree_close((hv_p, hv_x), fd, rtol=1e-6, atol=1e-8)


def test_nested_list_and_tuple_pytrees():
    fn = ig.trace(lambda ps, x: ig.sum(ig.tanh(x @ ps[0][0]) * ps[1]), ([f64[3, 2]], f64[2]),
                  f64[4, 3])
    w, c, x = NRM(3, 2), NRM(2), NRM(4, 3)
    g = ig.grad(fn)(([w], c), x)
    assert isinstance(g, tuple) and isinstance(g[0], list)
    h = np.tanh(x @ w)
    np.testing.assert_allclose(g[0][0], x.T @ ((1 - h * h) * c), rtol=1e-10)
    np.testing.assert_allclose(g[1], h.sum(0), rtol=1e-10)


def test_unused_argument_gets_zero_gradient():
    fn = ig.trace(lambda x, y: ig.sum(ig.sin(x)), f64[3], f64[2, 2])
    dx, dy = ig.grad(fn, argnums=(0, 1))(NRM(3), NRM(2, 2))
    np.testing.assert_array_equal(dy, np.zeros((2, 2)))
    assert dy.dtype == np.float64


def test_identity_and_repeated_results():
    ident = ig.trace(lambda x: x, f64[()])
    assert ig.grad(ident)(2.5) == 1.0
    twice = ig.trace(lambda x: (x, x * 2.0, x), f64[3])
    u = (NRM(3), NRM(3), NRM(3))
    np.testing.assert_allclose(ig.vjp(twice)(NRM(3), u), u[0] + 2 * u[1] + u[2], rtol=1e-12)
    v = NRM(3)
    _, tans = ig.jvp(twice)(NRM(3), v)
    assert_tree_close(tans, (v, 2 * v, v))


def test_transforms_do_not_change_their_input():
    before = str(LINREG.ir)
    for t in (ig.grad, ig.value_and_grad, ig.vjp, ig.jvp, ig.hvp):
        t(LINREG, argnums=(0, 1))
    assert str(LINREG.ir) == before


def test_transforms_accept_ir_functions_and_modules():
    m = ig.parse(str(QUARTIC.ir))
    name = QUARTIC.ir.name
    np.testing.assert_allclose(ig.grad(m.functions[name])(X4), quartic_grad(X4), rtol=1e-12)
    np.testing.assert_allclose(ig.grad(m)(X4), quartic_grad(X4), rtol=1e-12)


# =============================================================================================
# 5. Forward and reverse mode agree: <J v, u> = <v, J^T u> on random programs
# =============================================================================================

try:
    from strategies import programs as _programs
except ImportError:  # pragma: no cover - strategies.py is written by another helper
    _programs = None


def _random_vec(types, seed):
    r = rng(seed)
    return [r.standard_normal(t.shape) for t in types]


@pytest.mark.skipif(_programs is None, reason="tests/strategies.py not available")
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_jvp_vjp_adjoint_identity_on_random_programs(data):
    prog = data.draw(_programs(max_ops=8, dtypes=(F64,)))
    seed = data.draw(st.integers(0, 2**16))
    xs = prog.make_inputs(seed)
    params = prog.function.params
    n_out = len(prog.function.result_types)
    argnums = tuple(range(len(params)))
    v = _random_vec([p.type for p in params], seed + 1)
    u = _random_vec(prog.function.result_types, seed + 2)
    jvp_fn = ig.jvp(prog.function, argnums=argnums)
    vjp_fn = ig.vjp(prog.function, argnums=argnums)
    for t in (jvp_fn, vjp_fn):  # transforms of arbitrary programs print and parse back
        text = str(t.ir)
        assert str(ig.parse(text)) == text
    outs, tans = jvp_fn(*xs, tuple(v))
    if n_out == 1:
        outs, tans, u_tree = (outs,), (tans,), u[0]
    else:
        u_tree = tuple(u)
    cts = vjp_fn(*xs, u_tree)
    # the primal results of jvp are the function's results
    for o, want in zip(outs, prog.run(xs)):
        np.testing.assert_allclose(o, want, rtol=1e-12, atol=1e-12)
    lhs = sum(float(np.sum(t * uu)) for t, uu in zip(tans, u))
    rhs = sum(float(np.sum(a * c)) for a, c in zip(v, cts))
    scale = (sum(float(np.sum(np.abs(t * uu))) for t, uu in zip(tans, u))
             + sum(float(np.sum(np.abs(a * c))) for a, c in zip(v, cts)))
    # casts through f32 inside the program round each side at ~1e-7 of the tangents and
    # cotangents that pass through them (x - f64(f32(x)) leaves only that rounding)
    size = (sum(float(np.sum(np.abs(a))) for a in v) * sum(float(np.sum(np.abs(c))) for c in u))
    assert abs(lhs - rhs) <= 1e-6 * (scale + size) + 1e-9, (lhs, rhs, prog)


@pytest.mark.skipif(_programs is None, reason="tests/strategies.py not available")
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_random_smooth_programs_against_finite_differences(data):
    prog = data.draw(_programs(
        max_ops=6, dtypes=(F64,),
        kinds=("unary", "binary", "const", "broadcast", "reshape", "transpose", "matmul",
               "slice", "pad", "concat"),
        unary_ops=("neg", "tanh", "sin", "cos", "exp", "log", "sqrt"),
        binary_ops=("add", "sub", "mul", "div", "pow")))
    xs = prog.make_inputs(data.draw(st.integers(0, 2**16)))
    fn = prog.function
    v = _random_vec([p.type for p in fn.params], 5)
    outs, tans = ig.jvp(fn, argnums=tuple(range(len(fn.params))))(*xs, tuple(v))
    tans = tans if isinstance(tans, tuple) else (tans,)
    eps = 1e-6
    plus = ig.Function(fn)(*[x + eps * d for x, d in zip(xs, v)])
    minus = ig.Function(fn)(*[x - eps * d for x, d in zip(xs, v)])
    plus = plus if isinstance(plus, tuple) else (plus,)
    minus = minus if isinstance(minus, tuple) else (minus,)
    for t, p, m in zip(tans, plus, minus):
        fd = (p - m) / (2 * eps)
        tol = 1e-5 * (np.abs(fd) + np.abs(t)) + 1e-6 * (1 + np.abs(p))
        assert np.all(np.abs(t - fd) <= tol), (t, fd, prog)


@pytest.mark.skipif(_programs is None, reason="tests/strategies.py not available")
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_smooth_programs_second_order(data):
    """grad-of-grad, jvp-of-vjp and jvp-of-jvp of random programs, by check_grads."""
    prog = data.draw(_programs(
        max_ops=5, dtypes=(F64,),
        kinds=("unary", "binary", "const", "broadcast", "reshape", "transpose", "matmul",
               "slice", "pad", "concat"),
        unary_ops=("neg", "tanh", "sin", "cos", "exp", "log", "sqrt"),
        binary_ops=("add", "sub", "mul", "div", "pow")))
    xs = prog.make_inputs(data.draw(st.integers(0, 2**16)))
    ig.check_grads(prog.function, xs, order=2, modes=("fwd", "rev"), rtol=1e-4, atol=1e-5)


# =============================================================================================
# 6. Every transform gives IR that prints, parses back identically, verifies and runs
# =============================================================================================

SCALAR = ig.trace(lambda x: ig.sin(x) * ig.exp(x), f64[()])
TRANSFORMS = {
    "grad": (lambda: ig.grad(LINREG), (PARAMS, XB, TB)),
    "grad_tuple": (lambda: ig.grad(LINREG, argnums=(0, 2)), (PARAMS, XB, TB)),
    "value_and_grad": (lambda: ig.value_and_grad(LINREG, argnums=(0, 1)), (PARAMS, XB, TB)),
    "vjp": (lambda: ig.vjp(TWO, argnums=(0, 1)),
            (PARAMS, XB, {"out": NRM(N, D_OUT), "sq": np.array(0.3)})),
    "jvp": (lambda: ig.jvp(TWO), (PARAMS, XB, {"W": NRM(D_IN, D_OUT), "b": NRM(D_OUT)})),
    "hvp": (lambda: ig.hvp(LINREG), (PARAMS, XB, TB, {"W": NRM(D_IN, D_OUT), "b": NRM(D_OUT)})),
    "jvp_of_grad": (lambda: ig.jvp(ig.grad(QUARTIC)), (X4, V4)),
    "grad_grad_grad": (lambda: ig.grad(ig.grad(ig.grad(SCALAR))), (0.7,)),
    "vjp_of_jvp": (lambda: ig.vjp(ig.jvp(QUARTIC)), (X4, V4, (1.5, 0.5))),
    "cross_entropy_grad": (lambda: ig.grad(LIB_CASES["cross_entropy"][0], argnums=0),
                           tuple(LIB_CASES["cross_entropy"][1])),
    "training_step": (lambda: ig.training_step(LINREG, ig.optim.Adam(0.01)),
                      (PARAMS, {"step": np.array(0.0),
                                "m": {"W": np.zeros((D_IN, D_OUT)), "b": np.zeros(D_OUT)},
                                "v": {"W": np.zeros((D_IN, D_OUT)), "b": np.zeros(D_OUT)}},
                       XB, TB)),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_ir_round_trips_and_runs(name):
    make, args = TRANSFORMS[name]
    fn = make()
    assert isinstance(fn, ig.Function)
    text = str(fn.ir)
    m = ig.parse(text)
    assert str(m) == text
    ig.verify(m)
    parsed = m.functions[fn.ir.name]
    assert str(ig.parse(str(parsed))) == text  # and again: a fixed point
    want = fn(*args)
    # the parsed IR, with the transform's pytree structure ...
    got = ig.Function(parsed, fn.in_tree, fn.out_tree)(*args)
    for a, b in zip(flat(got), flat(want)):
        np.testing.assert_array_equal(a, b)
    # ... and compiled from the bare ir.Function with flat arguments
    compiled = ig.compile(parsed, backend="numpy", pipeline="O0")
    got2 = compiled(*flat(args))
    got2 = got2 if isinstance(got2, tuple) else (got2,)
    for a, b in zip(got2, flat(want)):
        np.testing.assert_array_equal(a, b)


def test_reverse_and_forward_ad_as_pipeline_passes():
    """The passes run from pipeline text give the same functions as the transforms."""
    f = QUARTIC.ir
    g = ig.run_pipeline(f, "reverse-ad")
    np.testing.assert_allclose(ig.Function(g)(X4), quartic_grad(X4), rtol=1e-12)
    j = ig.run_pipeline(f, "forward-ad")
    val, tan = ig.Function(j)(X4, V4)
    np.testing.assert_allclose(tan, quartic_grad(X4) @ V4, rtol=1e-12)
    h = ig.run_pipeline(f, "reverse-ad,forward-ad")
    val, hv = ig.Function(h)(X4, V4)
    np.testing.assert_allclose(hv, quartic_hessian(X4) @ V4, rtol=1e-12)
    m = ig.parse(str(LINREG.ir))
    vg = ig.run_pipeline(m, "reverse-ad{wrt=[0,1], return-value=true}")
    (fn,) = list(vg)
    assert len(fn.result_types) == 3


# =============================================================================================
# 7. Errors
# =============================================================================================

INT_ARGS = ig.trace(lambda x, n, m, flag: ig.sum(x * n.astype(ig.f64)) * m.astype(ig.f64).sum()
                    + ig.where(flag, x, 0.0).sum(), f64[3], i32[3], i64[()], bool_[3])


@pytest.mark.parametrize("transform", [ig.grad, ig.value_and_grad, ig.vjp, ig.jvp, ig.hvp])
@pytest.mark.parametrize("argnums", [1, 2, 3, (0, 1), (3, 0)])
def test_gradient_of_integer_or_bool_argument_raises_when_built(transform, argnums):
    with pytest.raises(ig.IrgradError) as info:
        transform(INT_ARGS, argnums=argnums)
    msg = str(info.value)
    assert "integer and boolean" in msg or "gradient" in msg
    assert re.search(r"%(n|m|flag)\b", msg), msg


def test_gradient_of_a_pytree_with_an_integer_leaf_raises():
    fn = ig.trace(lambda p: ig.sum(p["w"] * p["k"].astype(ig.f32)), {"w": f32[2], "k": i32[2]})
    with pytest.raises(ig.IrgradError, match="k"):
        ig.grad(fn)


def test_integer_inputs_are_fine_when_not_differentiated():
    g = ig.grad(INT_ARGS, argnums=0)
    x, n, flag = NRM(3), np.array([1, 2, 3], np.int32), np.array([True, False, True])
    got = g(x, n, np.int64(2), flag)
    np.testing.assert_allclose(got, 2 * n + flag, rtol=1e-12)


@pytest.mark.parametrize("fn", [
    ig.trace(lambda x: ig.sin(x), f64[3], name="vector_fn"),
    ig.trace(lambda x: (ig.sum(x), ig.sum(x * x)), f64[3], name="two_scalars_fn"),
    ig.trace(lambda x: ig.sum(x).astype(ig.i32), f64[3], name="int_fn"),
], ids=["vector", "two-scalars", "integer-scalar"])
def test_grad_of_a_non_scalar_function_raises(fn):
    for t in (ig.grad, ig.value_and_grad, ig.hvp):
        with pytest.raises(ig.IrgradError) as info:
            t(fn)
        msg = str(info.value)
        assert "scalar" in msg and fn.ir.name in msg and "vjp" in msg, msg


def test_bad_argnums_raise():
    for bad in (5, -5, (), (0, 7)):
        with pytest.raises(ig.IrgradError, match="argnums"):
            ig.grad(LINREG, argnums=bad)


def test_argnums_selecting_only_empty_pytrees_raises():
    fn = ig.trace(lambda x, e: ig.sum(x * x), f64[3], {})
    for t in (ig.grad, ig.value_and_grad, ig.vjp, ig.jvp, ig.hvp):
        with pytest.raises(ig.IrgradError, match="no tensors"):
            t(fn, argnums=1)
    # an empty pytree next to a real argument is fine
    dx, de = ig.grad(fn, argnums=(0, 1))(np.ones(3), {})
    np.testing.assert_array_equal(dx, 2.0)
    assert de == {}


def test_repeated_and_negative_argnums_are_refused():
    fn = ig.trace(lambda x, y: ig.sum(ig.sin(x) * y), f64[3], f64[3])
    for t in (ig.grad, ig.value_and_grad, ig.vjp, ig.jvp, ig.hvp):
        with pytest.raises(ig.IrgradError, match="twice"):
            t(fn, argnums=(0, 0))
        for bad in (-1, (0, -1), 2, True, 1.0, "0"):
            with pytest.raises(ig.IrgradError, match="argnums"):
                t(fn, argnums=bad)


def test_ad_refuses_fused_ops():
    inner = [tt(F64, 3)]
    f = IrFunction("fz", inner, ["x"])
    from irgrad.ir.core import Block
    body = Block(inner)
    bb = Builder(body)
    body.outputs = [bb.sin(body.args[0])]
    op = Builder(f.body).emit_op("fused", [f.params[0]], {"kind": "loop"}, None, [body])
    f.set_outputs([Builder(f.body).reduce_sum(op.result, (0,))])
    verify_function(f)
    with pytest.raises(ig.IrgradError, match="fuse"):
        ig.grad(f)
    with pytest.raises(ig.IrgradError, match="fuse"):
        ig.jvp(f)


def _wrong_sin_vjp(b, op, cts, wanted):
    """cos x times the cotangent, but doubled at element 2."""
    x = op.operands[0]
    mask = np.ones(x.shape)
    mask[2] = 2.0
    return [b.mul(b.mul(cts[0], b.cos(x)), b.const(mask, x.type))]


def _parse_check_error(msg):
    m = re.search(r"AD gives (\S+), finite differences give (\S+) \(relative error (\S+);", msg)
    assert m, msg
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def test_check_grads_reports_a_wrong_vjp(monkeypatch):
    fn = ig.trace(lambda a, x: ig.sum(a * a) + ig.sum(ig.sin(x)), f64[3], f64[4])
    args = [NRM(3), np.array([0.1, 0.4, -0.8, 1.3])]
    ig.check_grads(fn, args, order=2)  # correct rules pass
    monkeypatch.setattr(get_op("sin"), "vjp", _wrong_sin_vjp)
    with pytest.raises(ig.GradientCheckError) as info:
        ig.check_grads(fn, args, modes=("rev",))
    msg = str(info.value)
    assert "argument 1" in msg and "argument 0" not in msg
    assert "element [2]" in msg
    assert "reverse-mode" in msg
    ad, fd, rel = _parse_check_error(msg)
    assert ad == pytest.approx(2 * fd, rel=1e-6)  # AD doubled the true derivative
    assert rel == pytest.approx(abs(ad - fd) / abs(fd), rel=1e-2)
    assert rel == pytest.approx(1.0, rel=1e-2)
    # forward mode uses the (correct) JVP rule and passes
    ig.check_grads(fn, args, modes=("fwd",))


def test_check_grads_reports_a_wrong_jvp(monkeypatch):
    fn = ig.trace(lambda x: ig.exp(x), f64[3])
    monkeypatch.setattr(get_op("exp"), "jvp",
                        lambda b, op, ts: [b.mul(b.scale(ts[0], 1.01), op.result)])
    with pytest.raises(ig.GradientCheckError) as info:
        ig.check_grads(fn, [NRM(3)], modes=("fwd",))
    msg = str(info.value)
    assert "forward-mode" in msg and "argument 0" in msg
    ad, fd, rel = _parse_check_error(msg)
    assert ad == pytest.approx(1.01 * fd, rel=1e-6)
    assert rel == pytest.approx(0.01, rel=1e-2)
    ig.check_grads(fn, [NRM(3)], modes=("rev",))


def test_check_grads_names_pytree_leaves(monkeypatch):
    fn = ig.trace(lambda p, x: ig.sum(ig.sin(p["W"]) * x) + ig.sum(p["b"]),
                  {"W": f64[2, 3], "b": f64[3]}, f64[2, 3])
    args = [{"W": AWAY.copy(), "b": NRM(3)}, NRM(2, 3)]
    ig.check_grads(fn, args)
    monkeypatch.setattr(get_op("sin"), "vjp", lambda b, op, cts, w: [b.mul(cts[0], b.sin(op.operands[0]))])
    with pytest.raises(ig.GradientCheckError, match=r"argument 0\.W"):
        ig.check_grads(fn, args, modes=("rev",))


def test_check_grads_order_two_catches_a_wrong_second_derivative(monkeypatch):
    """A VJP whose value is right but which hides its dependence on x from the next
    derivative (stop_gradient) passes at order 1 and fails at order 2."""
    fn = ig.trace(lambda x: ig.tanh(x), f64[3])
    args = [NRM(3)]

    def detached(b, op, cts, wanted):
        y = b.emit("stop_gradient", op.result)
        return [b.mul(cts[0], b.sub(b.ones_like(y), b.mul(y, y)))]

    monkeypatch.setattr(get_op("tanh"), "vjp", detached)
    ig.check_grads(fn, args, order=1, modes=("rev",))
    with pytest.raises(ig.GradientCheckError):
        ig.check_grads(fn, args, order=2, modes=("rev",))


def test_check_grads_on_large_arguments_uses_random_directions(monkeypatch):
    fn = ig.trace(lambda x: ig.sum(ig.sin(x) * ig.sin(x)), f64[10, 10])
    x = NRM(10, 10)
    ig.check_grads(fn, [x], order=2)
    monkeypatch.setattr(get_op("sin"), "vjp",
                        lambda b, op, cts, w: [b.mul(b.scale(cts[0], 1.001), b.cos(op.operands[0]))])
    with pytest.raises(ig.GradientCheckError, match="random direction"):
        ig.check_grads(fn, [x], modes=("rev",))


def test_check_grads_rejects_bad_modes_and_integer_only_functions():
    with pytest.raises(ig.IrgradError):
        ig.check_grads(QUARTIC, [X4], modes=("sideways",))
    fn = ig.trace(lambda n: (n * 2).astype(ig.f32).sum(), i32[3])
    with pytest.raises(ig.IrgradError):
        ig.check_grads(fn, [np.arange(3, dtype=np.int32)])


# =============================================================================================
# 8. Efficiency: the gradient grows linearly and reuses forward values; deep chains
# =============================================================================================

def tanh_chain(n, shape=(8,)):
    def f(x):
        for _ in range(n):
            x = ig.tanh(x)
        return ig.sum(x)
    return ig.trace(f, f64[shape])


def _count(fn, name):
    return sum(1 for op in fn.ir.walk() if op.opname == name)


def test_gradient_size_is_linear_in_the_forward_size():
    ratios, sizes = {}, {}
    for n in (10, 100, 1000):
        f = tanh_chain(n)
        g = ig.grad(f)
        sizes[n] = (f.ir.num_ops(), g.ir.num_ops())
        ratios[n] = g.ir.num_ops() / f.ir.num_ops()
        assert ratios[n] <= 6.0, ratios
        # the backward reads the forward values: no tanh is recomputed
        assert _count(g, "tanh") == _count(f, "tanh") == n
        h = ig.hvp(f)
        assert h.ir.num_ops() <= 20 * f.ir.num_ops()
        assert _count(h, "tanh") == n
    # each forward op adds the same number of gradient ops, however long the chain
    slope_small = (sizes[100][1] - sizes[10][1]) / (sizes[100][0] - sizes[10][0])
    slope_large = (sizes[1000][1] - sizes[100][1]) / (sizes[1000][0] - sizes[100][0])
    assert slope_large == pytest.approx(slope_small, rel=0.01)


def test_gradient_of_an_mlp_differentiates_only_what_is_needed():
    fn = ig.trace(lambda p, x, y: ig.cross_entropy(
        ig.tanh(x @ p["W0"] + p["b0"]) @ p["W1"] + p["b1"], y),
        {"W0": f32[6, 5], "b0": f32[5], "W1": f32[5, 3], "b1": f32[3]}, f32[4, 6], i32[4])
    g = ig.grad(fn)
    fwd = Counter(op.opname for op in fn.ir.ops)
    bwd = Counter(op.opname for op in g.ir.ops)
    # two forward matmuls, dW0, dW1 and dh; no gradient for the input batch x
    assert fwd["matmul"] == 2 and bwd["matmul"] == 5
    assert bwd["tanh"] == fwd["tanh"] == 1
    assert bwd["exp"] == fwd["exp"]
    assert g.ir.num_ops() <= 5 * fn.ir.num_ops()


def test_deep_chain_of_5000_ops_differentiates_without_recursion():
    n = 5000
    limit = sys.getrecursionlimit()
    assert limit < 2 * n  # a recursive walk over the chain would overflow
    fn = ig.trace(lambda x: ig.sum(_sin_chain(x, n)), f64[3])
    assert fn.ir.num_ops() > n
    x = np.array([0.5, 1.0, -1.2])
    g = ig.grad(fn)(x)
    ys, d = x.copy(), np.ones(3)
    for _ in range(n):
        d *= np.cos(ys)
        ys = np.sin(ys)
    np.testing.assert_allclose(g, d, rtol=1e-9)
    v = np.array([1.0, -2.0, 0.5])
    val, tan = ig.jvp(fn)(x, v)
    np.testing.assert_allclose(val, ys.sum(), rtol=1e-12)
    np.testing.assert_allclose(tan, d @ v, rtol=1e-9)
    np.testing.assert_allclose(ig.vjp(fn)(x, 2.0), 2 * d, rtol=1e-9)


def _sin_chain(x, n):
    for _ in range(n):
        x = ig.sin(x)
    return x
