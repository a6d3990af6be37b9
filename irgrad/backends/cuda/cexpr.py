"""CUDA C for the scalar (`Sx`) and index (`Ix`) expressions of the kernel form.

Expressions become `const` temporaries in nested C blocks. A `Scope` binds loop variables
to C expressions and memoizes rendered nodes; every node is rendered in (and hoisted to)
the innermost scope that binds one of the variables it depends on, so loop-invariant
loads and arithmetic leave inner loops, and a value shared by several stores or lanes is
computed once.

Semantics follow backends/cpu/llvm_renderer.py exactly: bool stored as a byte, max/min
NaN-propagating (`irg_max`), wrapping integer arithmetic, `Clamp` wraps a negative index
then clamps, floats compare ordered except `!=`, float -> int truncates.
"""

from __future__ import annotations

import math
import struct

from ...ir.types import DType
from ...ir.indexing import Clip, FloorDiv, Ix, Mod, Var
from ...ir.scalar import AccRef, Binary, Buf, Cast, Clamp, Compare, Const, InRange, IndexValue, Load, Select, Sx, Unary, sx_children, sx_indices

CT = {DType.f32: "float", DType.f64: "double", DType.i32: "int", DType.i64: "long long",
      DType.bool: "bool"}
MT = {DType.f32: "float", DType.f64: "double", DType.i32: "int", DType.i64: "long long",
      DType.bool: "unsigned char"}
INT32_LIMIT = 2**31 - 1
ACC_VAR = Var("__acc", 1)  # what an accumulator reference depends on (bound in epilogues)
LANE_BASE = Var("__lane_base", 1)  # what a lane-invariant index depends on (the group scope)


def literal(value, dtype: DType) -> str:
    """A C literal of exactly `value` in `dtype`."""
    if dtype is DType.f32:
        v = struct.unpack("<f", struct.pack("<f", float(value)))[0]
        if math.isnan(v) or math.isinf(v):
            bits = struct.unpack("<I", struct.pack("<f", v))[0]
            return f"__int_as_float(0x{bits:08x})"
        return f"{v.hex()}f" if v != int(v) or abs(v) >= 2**24 else f"{v:.1f}f"
    if dtype is DType.f64:
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            bits = struct.unpack("<Q", struct.pack("<d", v))[0]
            return f"__longlong_as_double(0x{bits:016x}LL)"
        return v.hex() if v != int(v) or abs(v) >= 2**53 else f"{v:.1f}"
    if dtype is DType.bool:
        return "true" if value else "false"
    v = int(value)
    if dtype is DType.i32:
        return f"({v + 1} - 1)" if v == -2**31 else (f"({v})" if v < 0 else str(v))
    return f"({v + 1}LL - 1LL)" if v == -2**63 else (f"({v}LL)" if v < 0 else f"{v}LL")


def ix_magnitude(ix: Ix) -> int:
    """An upper bound of |partial sums| while evaluating `ix` term by term."""
    m = abs(ix.const)
    for a, c in ix.terms:
        lo, hi = _atom_range(a)
        m += abs(c) * max(abs(lo), abs(hi))
    return m


def _atom_range(a):
    if isinstance(a, Var):
        return 0, a.extent - 1
    return a.bounds() if isinstance(a, Clamp) else Ix.of(a).bounds()


class Block:
    """A C block: statements (str) and nested blocks, with an insertion point for hoisted
    statements in front of the currently open child block."""

    def __init__(self, head: str | None = None, indent: int = 1):
        self.head = head
        self.indent = indent
        self.lines: list = []
        self.hoist_at: int | None = None

    def emit(self, stmt: str) -> None:
        if self.hoist_at is None:
            self.lines.append(stmt)
        else:
            self.lines.insert(self.hoist_at, stmt)
            self.hoist_at += 1

    def open(self, head: str) -> "Block":
        child = Block(head, self.indent + (1 if self.head is not None or self.indent else 0))
        self.lines.append(child)
        self.hoist_at = len(self.lines) - 1
        return child

    def close_child(self) -> None:
        self.hoist_at = None

    def render(self, indent: int = 1) -> list[str]:
        pad = "  " * indent
        out = []
        inner = indent
        if self.head is not None:
            out.append(pad + self.head + " {")
            inner = indent + 1
        for x in self.lines:
            if isinstance(x, Block):
                out.extend(x.render(inner))
            else:
                out.append("  " * inner + x)
        if self.head is not None:
            out.append(pad + "}")
        return out


class Scope:
    """Variable bindings and memoized values; `block` is where its statements go."""

    def __init__(self, parent: "Scope | None", block: Block | None = None, binds=None):
        self.parent = parent
        self.block = block if block is not None else parent.block
        self.binds: dict[Var, str] = dict(binds or {})
        self.memo: dict = {}

    def lookup(self, key):
        s = self
        while s is not None:
            if key in s.memo:
                return s.memo[key]
            s = s.parent
        return None

    def var(self, v: Var) -> str:
        s = self
        while s is not None:
            if v in s.binds:
                return s.binds[v]
            s = s.parent
        raise AssertionError(f"loop variable {v} is not bound")

    def home(self, deps) -> "Scope":
        """The innermost scope (from self outwards) that binds one of `deps`."""
        s = self
        root = self
        while s is not None:
            if deps and any(v in s.binds for v in deps):
                return s
            root = s
            s = s.parent
        return root


class ExprRenderer:
    """Renders expressions of one kernel. `ptr_of(buf)` names the C pointer of a buffer;
    `vector_load(load, scope)` may return a lane value for a vectorized load (or None)."""

    def __init__(self, ptr_of, vector_load=None):
        self.ptr_of = ptr_of
        self.vector_load = vector_load
        self.lane_index = None  # vectorized loops: an index of lane j from lane 0's
        self.lane_var = None  # vectorized loops: the lane variable ...
        self.lane_invariant = None  # ... and which indices do not change across lanes
        self.n = 0
        self._deps: dict = {}

    def tmp(self, hint: str = "t") -> str:
        self.n += 1
        return f"{hint}{self.n}"

    # -- dependencies -------------------------------------------------------------------------
    def deps(self, x) -> frozenset:
        """The loop variables (and accumulator) an index or expression depends on
        (memoized; iterative, as expressions can be as deep as the program)."""
        memo = self._deps
        stack = [(x, False)]
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            if isinstance(node, Ix):
                out = frozenset(node.vars())
                if self.lane_var in out and self.lane_invariant(node):
                    out = (out - {self.lane_var}) | {LANE_BASE}
            elif isinstance(node, AccRef):
                out = frozenset({ACC_VAR})
            else:
                kids = list(sx_indices(node)) + list(sx_children(node))
                if not ready and any(k not in memo for k in kids):
                    stack.append((node, True))
                    stack.extend((k, False) for k in kids if k not in memo)
                    continue
                out = frozenset().union(*(memo[k] for k in kids))
            memo[node] = out
        return memo[x]

    def define(self, scope: Scope, key, ctype: str, rhs: str, hint: str = "t") -> str:
        name = self.tmp(hint)
        scope.block.emit(f"const {ctype} {name} = {rhs};")
        scope.memo[key] = name
        return name

    # -- indices --------------------------------------------------------------------------------
    def index(self, ix: Ix, scope: Scope) -> str:
        """C expression (int or long long) of an index."""
        if not ix.terms:
            return str(ix.const) if abs(ix.const) <= INT32_LIMIT else f"{ix.const}LL"
        if len(ix.terms) == 1 and ix.const == 0 and ix.terms[0][1] == 1 and isinstance(ix.terms[0][0], Var):
            return scope.var(ix.terms[0][0])
        key = ("ix", ix)
        home = scope.home(self.deps(ix))
        got = home.lookup(key)
        if got is not None:
            return got
        if self.lane_index is not None:
            alt = self.lane_index(ix, scope)
            if alt is not None:
                home.memo[key] = alt
                return alt
        wide = ix_magnitude(ix) > INT32_LIMIT
        ty = "long long" if wide else "int"
        parts = []
        for a, c in ix.terms:
            s = self.atom(a, home, wide)
            parts.append(s if c == 1 else f"{s} * {c}" if c > 0 else f"{s} * ({c})")
        rhs = " + ".join(parts)
        if ix.const:
            rhs += f" + {ix.const}" if ix.const > 0 else f" - {-ix.const}"
        return self.define(home, key, ty, rhs, "ix")

    def atom(self, a, scope: Scope, wide: bool) -> str:
        cast = "(long long)" if wide else ""
        if isinstance(a, Var):
            return cast + scope.var(a)
        if isinstance(a, (FloorDiv, Mod)):
            x = self.index(a.x, scope)
            lo, _ = a.x.bounds()
            xw = ix_magnitude(a.x) > INT32_LIMIT
            if lo >= 0:
                ut = "unsigned long long" if xw else "unsigned"
                st = "long long" if xw else "int"
                op = "/" if isinstance(a, FloorDiv) else "%"
                return f"{cast}({st})(({ut})({x}) {op} {a.d}u)"
            fn = "irg_floordiv" if isinstance(a, FloorDiv) else "irg_mod"
            d = f"{a.d}LL" if xw else str(a.d)
            return f"{cast}{fn}({x}, {d})"
        if isinstance(a, Clip):
            x = self.index(a.x, scope)
            if ix_magnitude(a.x) > INT32_LIMIT:
                return f"{cast}irg_clip({x}, {a.lo}LL, {a.hi}LL)"
            return f"{cast}irg_clip({x}, {a.lo}, {a.hi})"
        if isinstance(a, Clamp):
            v = self.expr(a.value, scope)
            c = f"irg_clamp_index((long long)({v}), {a.n}LL)"
            return c if wide else f"(int){c}"
        raise AssertionError(a)

    # -- scalar expressions ------------------------------------------------------------------------
    def expr(self, e: Sx, scope: Scope) -> str:
        """Render an expression DAG iteratively (post-order), memoized per scope."""
        stack = [(e, False)]
        while stack:
            x, ready = stack.pop()
            if self._known(x, scope) is not None:
                continue
            kids = sx_children(x)
            if not ready and any(self._known(k, scope) is None for k in kids):
                stack.append((x, True))
                stack.extend((k, False) for k in kids if self._known(k, scope) is None)
                continue
            home = scope.home(self.deps(x))
            if isinstance(x, Load) and self.vector_load is not None:
                lane = self.vector_load(x, scope)
                if lane is not None:
                    scope.memo[x] = lane
                    continue
            rhs = self._node(x, [self._known(k, scope) for k in kids], home)
            if isinstance(x, (Const, AccRef)) or _is_atomic(rhs):
                home.memo[x] = rhs
            else:
                self.define(home, x, CT[x.dtype], rhs, "ld" if isinstance(x, Load) else "t")
        return self._known(e, scope)

    def _known(self, x, scope: Scope):
        if isinstance(x, Const):
            return literal(x.value, x.dtype)
        return scope.lookup(x)

    def _node(self, x: Sx, kids, scope: Scope) -> str:
        dt = x.dtype
        if isinstance(x, Const):
            return literal(x.value, dt)
        if isinstance(x, AccRef):
            got = scope.lookup(x)
            if got is None:
                raise AssertionError("accumulator used outside a reduction epilogue")
            return got
        if isinstance(x, Load):
            ref = f"{self.ptr_of(x.buf)}[{self.index(x.index, scope)}]"
            return f"({ref} != 0)" if dt is DType.bool else ref
        if isinstance(x, IndexValue):
            i = self.index(x.index, scope)
            return f"({CT[dt]})({i})"
        if isinstance(x, InRange):
            i = self.index(x.index, scope)
            return f"({i} >= {x.lo} && {i} < {x.hi})"
        if isinstance(x, Unary):
            return unary(x.op, dt, kids[0])
        if isinstance(x, Binary):
            return binary(x.op, dt, kids[0], kids[1])
        if isinstance(x, Compare):
            return compare(x.op, x.a.dtype, kids[0], kids[1])
        if isinstance(x, Select):
            return f"({kids[0]} ? {kids[1]} : {kids[2]})"
        if isinstance(x, Cast):
            return cast(x.x.dtype, dt, kids[0])
        raise AssertionError(type(x))

    # -- stores --------------------------------------------------------------------------------------
    def store_stmt(self, buf: Buf, index: str, value: str) -> str:
        if buf.dtype is DType.bool:
            value = f"(unsigned char)({value})"
        return f"{self.ptr_of(buf)}[{index}] = {value};"


def _is_atomic(s: str) -> bool:
    return s.isidentifier()


FLOAT_FN = {"exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tanh": "tanh",
            "sqrt": "sqrt"}


def unary(op: str, dt: DType, a: str) -> str:
    if dt.is_float:
        f = "f" if dt is DType.f32 else ""
        if op == "neg":
            return f"(-{a})"
        if op == "abs":
            return f"fabs{f}({a})"
        if op == "sign":
            one, zero = literal(1, dt), literal(0, dt)
            # numpy: sign(+-0) = +0, sign(nan) = nan
            return (f"({a} > {zero} ? {one} : ({a} < {zero} ? {literal(-1, dt)} : "
                    f"({a} != {a} ? {a} : {zero})))")
        if op in FLOAT_FN:
            return f"{FLOAT_FN[op]}{f}({a})"
    else:
        if op == "neg":
            return f"irg_neg({a})"
        if op == "abs":
            return f"irg_abs({a})"
        if op == "sign":
            return f"({CT[dt]})(({a} > 0) - ({a} < 0))"
    raise AssertionError(f"{op} on {dt}")


def binary(op: str, dt: DType, a: str, b: str) -> str:
    if dt.is_float:
        if op in ("add", "sub", "mul", "div"):
            return f"({a} {'+-*/'['add sub mul div'.split().index(op)]} {b})"
        if op in ("max", "min"):
            return f"irg_{op}({a}, {b})"
        if op == "pow":
            return f"pow{'f' if dt is DType.f32 else ''}({a}, {b})"
    elif dt is not DType.bool:
        if op in ("add", "sub", "mul", "max", "min"):
            return f"irg_{op}({a}, {b})"
    raise AssertionError(f"{op} on {dt}")


CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def compare(op: str, dt: DType, a: str, b: str) -> str:
    if dt is DType.bool:
        return f"((int)({a}) {CMP[op]} (int)({b}))"
    return f"({a} {CMP[op]} {b})"


def cast(src: DType, dst: DType, a: str) -> str:
    if src is dst:
        return a
    if dst is DType.bool:
        return f"({a} != {literal(0, src)})"
    if src is DType.bool:
        return f"({a} ? {literal(1, dst)} : {literal(0, dst)})"
    return f"({CT[dst]})({a})"
