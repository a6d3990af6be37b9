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

from ...codegen.renderer import Renderer, Scope
from ...ir.indexing import Clip, FloorDiv, Ix, Mod, Var
from ...ir.scalar import AccRef, Buf, Clamp, Const, InRange, IndexValue, Load, sx_children, sx_indices
from ...ir.types import DType

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


class ExprRenderer(Renderer):
    """Renders the expressions of one kernel whose buffers are `bufs` (a KernelBuffers);
    `vector_load(load, scope)` may return a lane value for a vectorized load (or None).
    Values are hoisted to the innermost scope that binds a variable they depend on."""

    backend = "cuda"

    def __init__(self, bufs, vector_load=None):
        self.bufs = bufs
        self.vector_load = vector_load
        self.lane_index = None  # vectorized loops: an index of lane j from lane 0's
        self.lane_var = None  # vectorized loops: the lane variable ...
        self.lane_invariant = None  # ... and which indices do not change across lanes
        self.n = 0
        self._deps: dict = {}

    def ptr(self, buf: Buf) -> str:
        """The C pointer argument of a buffer."""
        return self.bufs.arg(buf).name

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
        deps = self.deps(ix)
        home = scope.home(deps)
        # an index that varies across the lanes of a vectorized loop is looked up in its own
        # scope only: the group scope binds the lane variable too (to lane 0's value, when
        # it renders a lane-invariant floor division of it), and its entries would hand
        # lane 0's index to every lane
        got = home.memo.get(key) if self.lane_var is not None and self.lane_var in deps \
            else home.lookup(key)
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

    # -- expression hooks (the walk and the dispatch are codegen/renderer.py's) ---------------
    def literal(self, value, dtype: DType) -> str:
        return literal(value, dtype)

    def known(self, x, scope: Scope):
        if isinstance(x, Const):
            return literal(x.value, x.dtype)
        return scope.lookup(x)

    def leaf(self, x, scope: Scope):
        if isinstance(x, Load) and self.vector_load is not None:
            return self.vector_load(x, scope)
        return None

    def place(self, x, scope: Scope) -> Scope:
        return scope.home(self.deps(x))

    def bind(self, x, value: str, scope: Scope) -> str:
        if isinstance(x, (Const, AccRef)) or _is_atomic(value):
            scope.memo[x] = value
            return value
        return self.define(scope, x, CT[x.dtype], value, "ld" if isinstance(x, Load) else "t")

    def load(self, x: Load, scope: Scope) -> str:
        ref = f"{self.ptr(x.buf)}[{self.index(x.index, scope)}]"
        return f"({ref} != 0)" if x.dtype is DType.bool else ref

    def index_value(self, x: IndexValue, scope: Scope) -> str:
        return f"({CT[x.dtype]})({self.index(x.index, scope)})"

    def in_range(self, x: InRange, scope: Scope) -> str:
        i = self.index(x.index, scope)
        return f"({i} >= {x.lo} && {i} < {x.hi})"

    def select(self, dtype: DType, c: str, a: str, b: str) -> str:
        return f"({c} ? {a} : {b})"

    def cast(self, src: DType, dst: DType, a: str) -> str:
        return cast(src, dst, a)

    # -- stores --------------------------------------------------------------------------------------
    def store_stmt(self, buf: Buf, index: str, value: str) -> str:
        if buf.dtype is DType.bool:
            value = f"(unsigned char)({value})"
        return f"{self.ptr(buf)}[{index}] = {value};"


def _is_atomic(s: str) -> bool:
    return s.isidentifier()


# --- per-op spellings (the scalar instructions of the registry) ---------------------------------

def _fsuffix(dt: DType) -> str:
    return "f" if dt is DType.f32 else ""


def _neg(r, dt, args, odt):
    return f"(-{args[0]})" if dt.is_float else f"irg_neg({args[0]})"


def _abs(r, dt, args, odt):
    return f"fabs{_fsuffix(dt)}({args[0]})" if dt.is_float else f"irg_abs({args[0]})"


def _sign(r, dt, args, odt):
    a = args[0]
    if dt.is_float:  # numpy: sign(+-0) = +0, sign(nan) = nan
        one, zero = literal(1, dt), literal(0, dt)
        return (f"({a} > {zero} ? {one} : ({a} < {zero} ? {literal(-1, dt)} : "
                f"({a} != {a} ? {a} : {zero})))")
    return f"({CT[dt]})(({a} > 0) - ({a} < 0))"


def _math(name):
    """CUDA's math library (expf, logf, ... for float32; a few ulp, full range)."""
    return lambda r, dt, args, odt: f"{name}{_fsuffix(dt)}({args[0]})"


def _arith(sym, name):
    def spell(r, dt, args, odt):
        if dt.is_float:
            return f"({args[0]} {sym} {args[1]})"
        return f"irg_{name}({args[0]}, {args[1]})"  # integers wrap (two's complement)
    return spell


def _pow(r, dt, args, odt):
    return f"pow{_fsuffix(dt)}({args[0]}, {args[1]})"


def _idiv(r, dt, args, odt):
    # C's a / b; a / 0 = 0 and a / -1 = -a (MIN / -1 wraps), as the IR defines them
    a, b = args
    return f"(({b}) == 0 ? ({CT[dt]})0 : ({b}) == -1 ? irg_neg({a}) : ({a}) / ({b}))"


def _rem(r, dt, args, odt):
    # C's fmod and %; an integer a % 0 = 0 (and a % -1 = 0: MIN % -1 traps on a CPU)
    a, b = args
    if dt.is_float:
        return f"fmod{_fsuffix(dt)}({a}, {b})"
    return f"((({b}) == 0 || ({b}) == -1) ? ({CT[dt]})0 : ({a}) % ({b}))"


def _extremum(name):
    return lambda r, dt, args, odt: f"irg_{name}({args[0]}, {args[1]})"


def _bits(sym):
    """&, |, ^ on integers; shifts on the unsigned bit pattern, the amount mod the width."""
    def spell(r, dt, args, odt):
        a, b = args
        if sym in ("&", "|", "^"):
            return f"({a} {sym} {b})"
        ut, bits = ("unsigned long long", 64) if dt is DType.i64 else ("unsigned", 32)
        return f"(({CT[dt]})(({ut})({a}) {sym} (({b}) & {bits - 1})))"
    return spell


CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _compare(name):
    def spell(r, dt, args, odt):
        a, b = args
        if odt is DType.bool:
            return f"((int)({a}) {CMP[name]} (int)({b}))"
        return f"({a} {CMP[name]} {b})"
    return spell


ExprRenderer.code_for_op = {
    "neg": _neg, "abs": _abs, "sign": _sign,
    **{name: _math(name) for name in ("exp", "log", "sin", "cos", "atan", "tanh", "sqrt",
                                      "log1p", "expm1", "erf", "floor", "ceil")},
    "round": lambda r, dt, args, odt: f"rint{_fsuffix(dt)}({args[0]})",  # half to even
    "add": _arith("+", "add"), "sub": _arith("-", "sub"), "mul": _arith("*", "mul"),
    "div": _arith("/", "div"), "idiv": _idiv, "rem": _rem, "pow": _pow,
    "max": _extremum("max"), "min": _extremum("min"),
    "bitwise_and": _bits("&"), "bitwise_or": _bits("|"), "bitwise_xor": _bits("^"),
    "shift_left": _bits("<<"), "shift_right_logical": _bits(">>"),
    **{name: _compare(name) for name in CMP},
}


def cast(src: DType, dst: DType, a: str) -> str:
    if src is dst:
        return a
    if dst is DType.bool:
        return f"({a} != {literal(0, src)})"
    if src is DType.bool:
        return f"({a} ? {literal(1, dst)} : {literal(0, dst)})"
    return f"({CT[dst]})({a})"
