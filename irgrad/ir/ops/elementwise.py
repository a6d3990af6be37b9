"""Elementwise primitives: unary math, binary arithmetic, comparisons, select, cast.

An elementwise op's Jacobian is diagonal, hence its own transpose: one linear map per
operand, `lin(b, operands, result, t) = (d result / d operand) * t`, serves both the VJP
(t = cotangent) and the JVP (t = tangent). Each entry states that derivative in a comment.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..registry import AttrSpec, OpDef, register, require_dtype, require_same
from ..rewrite import defining, is_number, splat_value
from ..scalar import Cast, Select
from ..types import DType

EXPENSIVE = 4  # the recompute cost of a transcendental or a division (fusion)


def _is_numeric(d: DType) -> bool:
    return d is not DType.bool


def _elementwise_vjp(lins):
    def vjp(b, op, cts, wanted):
        g = cts[0]
        if g is None:
            return [None] * len(op.operands)
        return [lin(b, op.operands, op.result, g) if (want and lin is not None) else None
                for lin, want in zip(lins, wanted)]
    return vjp


def _elementwise_jvp(lins):
    def jvp(b, op, tangents):
        total = None
        for lin, t in zip(lins, tangents):
            if t is not None and lin is not None:
                total = b.add_maybe(total, lin(b, op.operands, op.result, t))
        return [total]
    return jvp


def _float_unary_infer(name):
    def infer(types, attrs, declared):
        require_dtype(name, types[0], lambda d: d.is_float, "floating-point")
        return [types[0]]
    return infer


def _numeric_unary_infer(name):
    def infer(types, attrs, declared):
        require_dtype(name, types[0], _is_numeric, "numeric (not bool)")
        return [types[0]]
    return infer


def unary(name, ref, lin, *, numeric_ok=False, cost=1, rules=(), doc=""):
    """Register a unary elementwise op with derivative map `lin` (None: zero derivative);
    it lowers to the scalar instruction of its name."""
    register(OpDef(
        name=name,
        infer=_numeric_unary_infer(name) if numeric_ok else _float_unary_infer(name),
        reference=lambda xs, op: [ref(xs[0])],
        vjp=_elementwise_vjp([lin]) if lin else None,
        jvp=_elementwise_jvp([lin]) if lin else None,
        num_operands=1, elementwise=True, differentiable=lin is not None, doc=doc,
        instruction=True, cost=cost, linear=(-1.0,) if name == "neg" else None, rules=rules))


# Simplification rules (the `simplify` pass; see passes/simplify.py for the contract):
# each rule(rw, op) returns a value equal to op's result bit for bit, or None.

def _neg_rules(rw, op):
    # -(-x) -> x
    x = op.operands[0]
    if (n := defining(x, "neg")) is not None:
        return n.operands[0]
    s = defining(x, "select")
    if s is not None and rw.single_use(x):
        # -select(c, a, 0) -> select(c, -a, -0): the zero branch is negated too (0.0 ->
        # -0.0), so the rule stays bit-exact
        c, a, bb = s.operands
        if is_number(bb, 0) and bb.dtype.is_float:
            return rw.b.select(c, rw.b.neg(a), rw.b.full(bb.type, -splat_value(bb)))
        if is_number(a, 0) and a.dtype.is_float:
            return rw.b.select(c, rw.b.full(a.type, -splat_value(a)), rw.b.neg(bb))
    return None


# d/dx (-x) = -1
unary("neg", np.negative, lambda b, x, y, t: b.neg(t), numeric_ok=True, rules=(_neg_rules,))
# d/dx exp x = exp x
unary("exp", np.exp, lambda b, x, y, t: b.mul(t, y), cost=EXPENSIVE)
# d/dx log x = 1 / x
unary("log", np.log, lambda b, x, y, t: b.div(t, x[0]), cost=EXPENSIVE)
# d/dx sin x = cos x
unary("sin", np.sin, lambda b, x, y, t: b.mul(t, b.cos(x[0])), cost=EXPENSIVE)
# d/dx cos x = -sin x
unary("cos", np.cos, lambda b, x, y, t: b.neg(b.mul(t, b.sin(x[0]))), cost=EXPENSIVE)
# d/dx tanh x = 1 - tanh(x)^2
unary("tanh", np.tanh, lambda b, x, y, t: b.mul(t, b.sub(b.ones_like(y), b.mul(y, y))), cost=EXPENSIVE)
# d/dx sqrt x = 1 / (2 sqrt x)
unary("sqrt", np.sqrt, lambda b, x, y, t: b.div(b.scale(t, 0.5), y), cost=EXPENSIVE)
# d/dx |x| = sign x   (0 at x = 0)
unary("abs", np.abs, lambda b, x, y, t: b.mul(t, b.sign(x[0])), numeric_ok=True)
# d/dx sign x = 0 almost everywhere
unary("sign", np.sign, None, numeric_ok=True)
# d/dx log1p x = 1 / (1 + x)   (log(1 + x), exact for tiny x)
unary("log1p", np.log1p, lambda b, x, y, t: b.div(t, b.add(b.ones_like(x[0]), x[0])), cost=EXPENSIVE)
# d/dx expm1 x = exp x = expm1(x) + 1   (exp(x) - 1, exact for tiny x)
unary("expm1", np.expm1, lambda b, x, y, t: b.mul(t, b.add(y, b.ones_like(y))), cost=EXPENSIVE)
def _erf(x):
    from scipy.special import erf  # imported on first use: scipy.special costs 150 ms
    return erf(x).astype(x.dtype)


# d/dx erf x = 2/sqrt(pi) exp(-x^2)
unary("erf", _erf,
      lambda b, x, y, t: b.mul(t, b.scale(b.exp(b.neg(b.mul(x[0], x[0]))), 2 / math.sqrt(math.pi))),
      cost=EXPENSIVE)
# d/dx atan x = 1 / (1 + x^2)
unary("atan", np.arctan,
      lambda b, x, y, t: b.div(t, b.add(b.ones_like(x[0]), b.mul(x[0], x[0]))), cost=EXPENSIVE)
# floor, ceil and round (half to even, as numpy) are piecewise constant: derivative 0
unary("floor", np.floor, None)
unary("ceil", np.ceil, None)
unary("round", np.rint, None)


def _binary_infer(name, pred, words, result_bool=False):
    def infer(types, attrs, declared):
        t = require_same(name, types)
        require_dtype(name, t, pred, words)
        return [t.with_dtype(DType.bool) if result_bool else t]
    return infer


def binary(name, ref, lin_a, lin_b, *, pred=_is_numeric, words="numeric (not bool)", doc="",
           cost=1, linear=None, scales=False, rules=()):
    register(OpDef(
        name=name,
        infer=_binary_infer(name, pred, words),
        reference=lambda xs, op: [ref(xs[0], xs[1])],
        vjp=_elementwise_vjp([lin_a, lin_b]),
        jvp=_elementwise_jvp([lin_a, lin_b]),
        num_operands=2, elementwise=True, doc=doc, instruction=True, cost=cost,
        linear=linear, scales=scales, rules=rules))


def _float(d: DType) -> bool:
    return d.is_float


def _add_rules(rw, op):
    # x + 0, 0 + x -> x (the sign of a zero result may change: see passes/simplify.py);
    # x + (-y) -> x - y;  (-x) + y -> y - x
    x, y = op.operands
    if is_number(y, 0):
        return x
    if is_number(x, 0):
        return y
    if (n := defining(y, "neg")) is not None:
        return rw.b.sub(x, n.operands[0])
    if (n := defining(x, "neg")) is not None:
        return rw.b.sub(y, n.operands[0])
    return _adjacent_pads(rw, x, y)


def _adjacent_pads(rw, x, y):
    """pad(a) + pad(b) with windows side by side on one axis -> pad(concat(a, b)).

    This is how the gradient of several slices of one tensor arrives (attention's q, k, v
    cut from one projection): as padded pieces added together. A concat is a layout the
    matmuls producing the pieces can write into directly."""
    px, py = defining(x, "pad"), defining(y, "pad")
    if px is None or py is None:
        return None
    a, b = px.operands[0], py.operands[0]
    axes = [d for d in range(len(x.shape)) if a.shape[d] != x.shape[d] or b.shape[d] != x.shape[d]]
    if len(axes) != 1:
        return None
    ax = axes[0]
    (la, lb), n_a, n_b = (px.attrs["low"][ax], py.attrs["low"][ax]), a.shape[ax], b.shape[ax]
    if la + n_a == lb:
        first, second, low = a, b, la
    elif lb + n_b == la:
        first, second, low = b, a, lb
    else:
        return None
    cat = rw.b.concat([first, second], ax)
    lows = [0] * len(x.shape)
    highs = [0] * len(x.shape)
    lows[ax], highs[ax] = low, x.shape[ax] - low - n_a - n_b
    return cat if lows[ax] == 0 and highs[ax] == 0 else rw.b.pad(cat, lows, highs)


def _sub_rules(rw, op):
    # x - 0 -> x;  0 - x -> -x;  x - (-y) -> x + y
    x, y = op.operands
    if is_number(y, 0):
        return x
    if is_number(x, 0):
        return rw.b.neg(y)
    if (n := defining(y, "neg")) is not None:
        return rw.b.add(x, n.operands[0])
    return None


def _mul_rules(rw, op):
    # x * 1 -> x;  x * -1 -> -x;  x * 0 -> 0 for integers only (inf * 0 is NaN);
    # (-x) * (-y) -> x * y
    x, y = op.operands
    for a, c in ((x, y), (y, x)):
        if is_number(c, 1):
            return a
        if is_number(c, -1):
            return rw.b.neg(a)
        if not a.dtype.is_float and is_number(c, 0):
            return c
    nx, ny = defining(x, "neg"), defining(y, "neg")
    if nx is not None and ny is not None:
        return rw.b.mul(nx.operands[0], ny.operands[0])
    return None


def _div_rules(rw, op):
    # x / 1 -> x;  x / -1 -> -x;  x / c -> x * (1/c) for c a power of two (1/c is exact)
    x, y = op.operands
    if is_number(y, 1):
        return x
    if is_number(y, -1):
        return rw.b.neg(x)
    r = _power_of_two_reciprocal(y)
    if r is not None:
        return rw.b.mul(x, rw.b.scalar_like(x, r))
    return None


def _power_of_two_reciprocal(v):
    s = splat_value(v)
    if s is None or isinstance(s, bool) or not v.dtype.is_float or s == 0 or not math.isfinite(s):
        return None
    m, _ = math.frexp(abs(s))
    if m != 0.5:
        return None
    r = 1.0 / s
    info = np.finfo(v.dtype.np)
    return r if info.tiny <= abs(r) <= info.max else None


def _same_operands(rw, op):
    # max(x, x), min(x, x) -> x
    x, y = op.operands
    return x if x is y else None


# d(a+b) = da + db
binary("add", np.add, lambda b, x, y, t: t, lambda b, x, y, t: t, linear=(1.0, 1.0),
       rules=(_add_rules,))
# d(a-b) = da - db
binary("sub", np.subtract, lambda b, x, y, t: t, lambda b, x, y, t: b.neg(t), linear=(1.0, -1.0),
       rules=(_sub_rules,))
# d(a*b) = b da + a db
binary("mul", np.multiply, lambda b, x, y, t: b.mul(t, x[1]), lambda b, x, y, t: b.mul(x[0], t),
       scales=True, rules=(_mul_rules,))
# d(a/b) = da / b - (a/b^2) db = da / b - (y/b) db
binary("div", np.divide, lambda b, x, y, t: b.div(t, x[1]),
       lambda b, x, y, t: b.neg(b.mul(t, b.div(y, x[1]))), pred=_float, words="floating-point",
       cost=EXPENSIVE, rules=(_div_rules,))


# Integer division and remainder are C's: the quotient is truncated toward zero and the
# remainder has the dividend's sign (a = idiv(a, b) b + rem(a, b)). A divisor of 0 gives 0
# (numpy's // and % give 0 there too), so native code never traps; MIN / -1 wraps to MIN.
def _int(d: DType) -> bool:
    return d.is_int


def _guarded_divisor(b):
    return np.where((b == 0) | (b == -1), np.ones_like(b), b)


def _idiv_reference(a, b):
    with np.errstate(all="ignore"):
        d = _guarded_divisor(b)
        q = a // d + ((a % d != 0) & ((a < 0) != (d < 0)))  # floor -> toward zero
        return np.where(b == 0, 0, np.where(b == -1, -a, q)).astype(a.dtype)


def _rem_reference(a, b):
    with np.errstate(all="ignore"):
        if a.dtype.kind == "f":
            return np.fmod(a, b)  # C's fmod: NaN for b = 0 or an infinite a
        return np.where((b == 0) | (b == -1), 0, np.fmod(a, _guarded_divisor(b))).astype(a.dtype)


register(OpDef(
    name="idiv", infer=_binary_infer("idiv", _int, "integer"),
    reference=lambda xs, op: [_idiv_reference(xs[0], xs[1])],
    num_operands=2, elementwise=True, differentiable=False, instruction=True, cost=EXPENSIVE,
    doc="Integer division truncated toward zero (C's a / b); a / 0 = 0."))
# d rem(a, b) = da - trunc(a/b) db, where trunc(a/b) = (a - rem(a, b)) / b exactly
binary("rem", _rem_reference, lambda b, x, y, t: t,
       lambda b, x, y, t: b.neg(b.mul(t, b.div(b.sub(x[0], y), x[1]))), cost=EXPENSIVE,
       doc="Remainder of truncated division, with the dividend's sign (C's % and fmod); "
           "integers: rem(a, 0) = 0.")


# d(a^b) = b a^(b-1) da + log(a) a^b db, with the conventions of JAX and PyTorch where the
# formula is 0 * inf: d/da a^0 = 0 also at a = 0 (the base a^(b-1) is taken at 1 where
# a = b = 0, so derivatives stay exact wherever a != 0), and d/db a^b = 0 at a = 0
def _pow_base(b, x):
    zero = b.zeros_like(x[0])
    return b.select(b.eq(x[0], zero), b.select(b.eq(x[1], zero), b.ones_like(x[0]), x[0]), x[0])


binary("pow", np.power,
       lambda b, x, y, t: b.mul(t, b.mul(x[1], b.pow(_pow_base(b, x), b.sub(x[1], b.ones_like(x[1]))))),
       lambda b, x, y, t: b.select(b.eq(x[0], b.zeros_like(x[0])), b.zeros_like(t),
                                   b.mul(t, b.mul(b.log(x[0]), y))),
       pred=_float, words="floating-point", cost=EXPENSIVE)
# d max(a,b) = da where a > b, db where a <= b (ties go to b, so relu'(0) = 0 as in PyTorch).
# The mask reads the result: max(a,b) > b exactly when a > b, so relu's backward needs only
# relu's output (which the next layer keeps anyway), not its input.
binary("max", np.maximum,
       lambda b, x, y, t: b.select(b.gt(y, x[1]), t, b.zeros_like(t)),
       lambda b, x, y, t: b.select(b.gt(y, x[1]), b.zeros_like(t), t), rules=(_same_operands,))
# d min(a,b) = da where a < b, db where a >= b   (min(a,b) < b exactly when a < b)
binary("min", np.minimum,
       lambda b, x, y, t: b.select(b.lt(y, x[1]), t, b.zeros_like(t)),
       lambda b, x, y, t: b.select(b.lt(y, x[1]), b.zeros_like(t), t), rules=(_same_operands,))


def compare(name, ref):
    # Comparisons produce booleans: no derivative flows through them.
    eq_like = name in ("eq", "ne")
    register(OpDef(
        name=name,
        infer=_binary_infer(name, (lambda d: True) if eq_like else _is_numeric,
                            "any" if eq_like else "numeric (not bool)", result_bool=True),
        reference=lambda xs, op: [ref(xs[0], xs[1])],
        num_operands=2, elementwise=True, differentiable=False, instruction=True))


for _n, _f in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
               ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)):
    compare(_n, _f)


# The identity in value; its derivative is zero by definition (nothing flows through it).
# Used where a value must not be differentiated, e.g. the max subtracted in log_softmax.
register(OpDef(
    name="stop_gradient", infer=lambda types, attrs, declared: [types[0]],
    reference=lambda xs, op: [xs[0]], num_operands=1, elementwise=True, differentiable=False,
    alias=True, cost=0, operand_index=lambda op, idx: tuple(idx),
    result_index=lambda op, idx, operand=0: tuple(idx),
    # stop_gradient(stop_gradient(x)) -> stop_gradient(x)
    rules=(lambda rw, op: op.operands[0] if defining(op.operands[0], "stop_gradient") else None,),
    doc="Identity whose derivative is zero."))


def _select_infer(types, attrs, declared):
    c, a, b = types
    if c.dtype is not DType.bool:
        raise ShapeError(f"'select' condition must be bool, got {c}")
    if a != b or c.shape != a.shape:
        raise ShapeError(f"'select' needs a condition and two values of one shape and type, "
                         f"got {c}, {a}, {b}")
    return [a]


def _select_rules(rw, op):
    # select(true, a, b) -> a;  select(false, a, b) -> b;  select(c, a, a) -> a
    c, a, b = op.operands
    s = splat_value(c)
    if s is not None:
        return a if s else b
    return a if a is b else None


# d select(c, a, b) = select(c, da, 0) + select(c, 0, db)
register(OpDef(
    name="select",
    infer=_select_infer,
    reference=lambda xs, op: [np.where(xs[0], xs[1], xs[2])],
    vjp=_elementwise_vjp([
        None,
        lambda b, x, y, t: b.select(x[0], t, b.zeros_like(t)),
        lambda b, x, y, t: b.select(x[0], b.zeros_like(t), t)]),
    jvp=lambda b, op, ts: [None if ts[1] is None and ts[2] is None else b.select(
        op.operands[0],
        ts[1] if ts[1] is not None else b.zeros_like(op.result),
        ts[2] if ts[2] is not None else b.zeros_like(op.result))],
    build=lambda ev, op, idx, kids: Select(op.results[0].dtype, *kids),
    rules=(_select_rules,), num_operands=3, elementwise=True))


def _cast_infer(types, attrs, declared):
    return [types[0].with_dtype(attrs["dtype"])]


def _cast_vjp(b, op, cts, wanted):
    g, x = cts[0], op.operands[0]
    if g is None or not wanted[0] or not (x.dtype.is_float and op.result.dtype.is_float):
        return [None]
    return [b.cast(g, x.dtype)]  # d cast(x) = cast(dx), between float types


def _cast_jvp(b, op, tangents):
    t, y = tangents[0], op.result
    if t is None or not (op.operands[0].dtype.is_float and y.dtype.is_float):
        return [None]
    return [b.cast(t, y.dtype)]


def _cast_rules(rw, op):
    # a cast to the same dtype -> x;  cast(cast(x: f32) to f64) to f32 -> x (exact)
    x = op.operands[0]
    if op.attrs["dtype"] is x.dtype:
        return x
    inner = defining(x, "cast")
    if (inner is not None and inner.operands[0].dtype is op.attrs["dtype"] is DType.f32
            and x.dtype is DType.f64):
        return inner.operands[0]
    return None


register(OpDef(
    name="cast",
    infer=_cast_infer,
    reference=lambda xs, op: [xs[0].astype(op.attrs["dtype"].np)],
    vjp=_cast_vjp, jvp=_cast_jvp,
    build=lambda ev, op, idx, kids: (kids[0] if op.operands[0].dtype is op.results[0].dtype
                                     else Cast(op.results[0].dtype, kids[0])),
    attrs={"dtype": AttrSpec("dtype")}, rules=(_cast_rules,),
    num_operands=1, elementwise=True))
