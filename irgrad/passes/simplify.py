"""`simplify`: algebraic identities that hold exactly in IEEE arithmetic.

Every rule keeps results bit-identical, with one documented exception: rules that drop an
addition of +0.0 or turn `0 - x` into `-x` may change the sign of a zero result (x + 0.0
is +0.0 for x = -0.0). NaN and infinity behave exactly as before: `x * 0` is not folded
for floats (inf * 0 is NaN) and no rule reassociates arithmetic.

Rules (x, y values; c a splat constant):
  x + 0, 0 + x, x - 0, x * 1, x / 1           -> x
  x * -1, x / -1, 0 - x                       -> -x
  x / c (c a power of two)                    -> x * (1/c)     (1/c is exact)
  x + (-y) -> x - y;  (-x) + y -> y - x;  x - (-y) -> x + y;  (-x) * (-y) -> x * y
  -(-x) -> x;  max(x, x), min(x, x) -> x;  x * 0 -> 0 for integers
  select(true, a, b) -> a;  select(false, a, b) -> b;  select(c, a, a) -> a
  -select(c, a, 0) -> select(c, -a, -0);  -select(c, 0, b) -> select(c, -0, -b)  (one use)
  cast to the same dtype -> x;  cast(cast(x: f32) to f64) to f32 -> x
  transpose(transpose(x)) -> one transpose (or x);  identity transpose -> x
  reshape(reshape(x)) -> one reshape;  reshape to the same shape -> x
  broadcast(broadcast(x)) -> one broadcast;  identity broadcast -> x
  broadcast(c) -> a larger splat constant
  reduce over no axes -> x;  reduce over size-1 axes only -> reshape
  slice of everything, pad by nothing, concat of one value -> x
  pad(a) + pad(b) side by side on one axis -> pad(concat(a, b));  nested concats flatten
  stop_gradient(stop_gradient(x)) -> stop_gradient(x)
The pass runs its rules to a fixpoint (bounded), then removes what became dead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir.builder import Builder
from ..ir.core import Block, Function, Operation, Value, compute_uses
from ..ir.rewrite import remove_dead_ops, replace_all_uses
from ..ir.types import DType
from .fold import splat_value
from .manager import Pass, register_pass


def _is(v: Value, number) -> bool:
    s = splat_value(v)
    return s is not None and not isinstance(s, bool) and s == number


def _is_neg_zero_or_zero(v: Value) -> bool:
    s = splat_value(v)
    return s is not None and not isinstance(s, bool) and s == 0


def _defining(v: Value, opname: str) -> Operation | None:
    op = v.op
    return op if op is not None and op.opname == opname else None


def _power_of_two_reciprocal(v: Value):
    s = splat_value(v)
    if s is None or isinstance(s, bool) or not v.dtype.is_float or s == 0 or not math.isfinite(s):
        return None
    m, _ = math.frexp(abs(s))
    if m != 0.5:
        return None
    r = 1.0 / s
    info = np.finfo(v.dtype.np)
    return r if info.tiny <= abs(r) <= info.max else None


def _compose_perm(inner, outer):
    # result axis i = mid axis outer[i] = operand axis inner[outer[i]]
    return tuple(inner[o] for o in outer)


class _Rules:
    def __init__(self, b: Builder, uses):
        self.b = b
        self.uses = uses

    def single_use(self, v: Value) -> bool:
        return len(self.uses.get(v, ())) == 1

    def apply(self, op: Operation) -> Value | None:
        rule = getattr(self, "r_" + op.opname, None)
        return rule(op, *op.operands) if rule is not None else None

    # -- arithmetic --------------------------------------------------------------------------------
    def r_add(self, op, x, y):
        if _is_neg_zero_or_zero(y):
            return x
        if _is_neg_zero_or_zero(x):
            return y
        if (n := _defining(y, "neg")) is not None:
            return self.b.sub(x, n.operands[0])
        if (n := _defining(x, "neg")) is not None:
            return self.b.sub(y, n.operands[0])
        return self._adjacent_pads(x, y)

    def _adjacent_pads(self, x, y):
        """pad(a) + pad(b) with windows side by side on one axis -> pad(concat(a, b)).

        This is how the gradient of several slices of one tensor arrives (attention's
        q, k, v cut from one projection): as padded pieces added together. A concat is a
        layout the matmuls producing the pieces can write into directly."""
        px, py = _defining(x, "pad"), _defining(y, "pad")
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
        cat = self.b.concat([first, second], ax)
        lows = [0] * len(x.shape)
        highs = [0] * len(x.shape)
        lows[ax], highs[ax] = low, x.shape[ax] - low - n_a - n_b
        return cat if lows[ax] == 0 and highs[ax] == 0 else self.b.pad(cat, lows, highs)

    def r_concat(self, op, *xs):
        if len(xs) == 1:
            return xs[0]
        # concat(concat(a, b), c) -> concat(a, b, c) along the same axis
        ax = op.attrs["axis"]
        flat, changed = [], False
        for x in xs:
            inner = _defining(x, "concat")
            if inner is not None and inner.attrs["axis"] == ax:
                flat.extend(inner.operands)
                changed = True
            else:
                flat.append(x)
        return self.b.concat(flat, ax) if changed else None

    def r_sub(self, op, x, y):
        if _is_neg_zero_or_zero(y):
            return x
        if _is_neg_zero_or_zero(x):
            return self.b.neg(y)
        if (n := _defining(y, "neg")) is not None:
            return self.b.add(x, n.operands[0])
        return None

    def r_mul(self, op, x, y):
        for a, c in ((x, y), (y, x)):
            if _is(c, 1):
                return a
            if _is(c, -1):
                return self.b.neg(a)
            if not a.dtype.is_float and _is(c, 0):
                return c
        nx, ny = _defining(x, "neg"), _defining(y, "neg")
        if nx is not None and ny is not None:
            return self.b.mul(nx.operands[0], ny.operands[0])
        return None

    def r_div(self, op, x, y):
        if _is(y, 1):
            return x
        if _is(y, -1):
            return self.b.neg(x)
        r = _power_of_two_reciprocal(y)
        if r is not None:
            return self.b.mul(x, self.b.scalar_like(x, r))
        return None

    def r_neg(self, op, x):
        if (n := _defining(x, "neg")) is not None:
            return n.operands[0]
        s = _defining(x, "select")
        if s is not None and self.single_use(x):
            # the zero branch is negated too (0.0 -> -0.0), so the rule stays bit-exact
            c, a, bb = s.operands
            if _is(bb, 0) and bb.dtype.is_float:
                return self.b.select(c, self.b.neg(a), self.b.full(bb.type, -splat_value(bb)))
            if _is(a, 0) and a.dtype.is_float:
                return self.b.select(c, self.b.full(a.type, -splat_value(a)), self.b.neg(bb))
        return None

    def r_max(self, op, x, y):
        return x if x is y else None

    r_min = r_max

    def r_select(self, op, c, a, bb):
        s = splat_value(c)
        if s is not None:
            return a if s else bb
        if a is bb:
            return a
        return None

    def r_cast(self, op, x):
        if op.attrs["dtype"] is x.dtype:
            return x
        inner = _defining(x, "cast")
        if (inner is not None and inner.operands[0].dtype is op.attrs["dtype"] is DType.f32
                and x.dtype is DType.f64):
            return inner.operands[0]
        return None

    def r_stop_gradient(self, op, x):
        return x if _defining(x, "stop_gradient") is not None else None

    # -- data movement -------------------------------------------------------------------------------
    def r_transpose(self, op, x):
        perm = op.attrs["perm"]
        inner = _defining(x, "transpose")
        if inner is not None:
            perm = _compose_perm(inner.attrs["perm"], perm)
            x = inner.operands[0]
            if perm == tuple(range(len(perm))):
                return x
            return self.b.transpose(x, perm)
        if perm == tuple(range(len(perm))):
            return x
        return None

    def r_reshape(self, op, x):
        shape = op.result.shape
        if x.shape == shape:
            return x
        inner = _defining(x, "reshape")
        if inner is not None:
            src = inner.operands[0]
            return src if src.shape == shape else self.b.reshape(src, shape)
        return None

    def r_broadcast(self, op, x):
        dims, shape = op.attrs["dims"], op.result.shape
        if x.shape == shape and dims == tuple(range(len(shape))):
            return x
        s = splat_value(x)
        if s is not None:
            return self.b.full(op.result.type, s)
        inner = _defining(x, "broadcast")
        if inner is not None:
            src = inner.operands[0]
            return self.b.broadcast(src, shape, tuple(dims[d] for d in inner.attrs["dims"]))
        return None

    def _reduce(self, op, x):
        axes = op.attrs["axes"]
        if not axes:
            return x
        if all(x.shape[a] == 1 for a in axes):
            return self.b.reshape(x, op.result.shape)
        return None

    r_reduce_sum = _reduce
    r_reduce_max = _reduce

    def r_slice(self, op, x):
        return x if op.result.shape == x.shape else None

    def r_pad(self, op, x):
        return x if op.result.shape == x.shape else None



def simplify_block(block: Block, max_rounds: int = 8) -> int:
    total = 0
    for _ in range(max_rounds):
        changed = 0
        uses = compute_uses(block)
        replace: dict[Value, Value] = {}
        new_ops: list[Operation] = []
        tmp = Block()
        b = Builder(tmp)
        rules = _Rules(b, uses)
        for op in block.ops:
            op.operands = [replace.get(v, v) for v in op.operands]
            b.loc = op.loc
            out = rules.apply(op) if len(op.results) == 1 and not op.regions else None
            for new in tmp.ops:
                new.parent = block
            new_ops.extend(tmp.ops)
            tmp.ops.clear()
            if out is None or out is op.result:
                new_ops.append(op)
                continue
            replace[op.result] = out
            changed += 1
        block.ops[:] = new_ops
        replace_all_uses(block, replace)
        remove_dead_ops(block)
        total += changed
        if not changed:
            break
    return total


@register_pass
@dataclass(frozen=True)
class SimplifyPass(Pass):
    """Exact algebraic simplifications (see the module docstring for the rule list)."""

    name: ClassVar[str] = "simplify"

    def run(self, f: Function) -> Function:
        simplify_block(f.body)
        return f
