"""The backend-neutral kernel form that both renderers (LLVM for the CPU, CUDA C) consume.

Two expression languages, both hash-consed (structurally equal nodes are equal, so a
renderer memoizes them and common subexpressions are computed once):

- `Ix`, integer index arithmetic: a linear form `sum(coeff * atom) + const` whose atoms
  are loop variables or opaque terms (floor division, modulo, clamped data-dependent
  indices). `floordiv` and `mod` simplify with the ranges of the loop variables, so the
  index maps of reshapes fold back into affine forms wherever the layout allows;
- `Sx`, typed scalar expressions: loads, constants, arithmetic, comparisons, select,
  casts, and references to a reduction's accumulator.

A lowered kernel is one of `LoopKernel`, `ReduceKernel`, `GemmKernel`, `ScatterKernel`,
`CopyKernel`: what is computed, over which iteration space. How loops are ordered,
vectorized, split over threads or mapped to a GPU grid is each renderer's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.types import DType


# --- index expressions -----------------------------------------------------------------------

@dataclass(frozen=True)
class Var:
    name: str
    extent: int

    def __repr__(self):
        return self.name


@dataclass(frozen=True)
class FloorDiv:
    x: "Ix"
    d: int


@dataclass(frozen=True)
class Mod:
    x: "Ix"
    d: int


@dataclass(frozen=True)
class Clamp:
    """A data-dependent index (an integer scalar expression) wrapped like numpy's negative
    indices and clamped into [0, n) so that no load can leave its buffer."""

    value: "Sx"
    n: int


@dataclass(frozen=True)
class Clip:
    """min(max(x, lo), hi): keeps an index of a padded or concatenated operand in bounds."""

    x: "Ix"
    lo: int
    hi: int


@dataclass(frozen=True)
class Ix:
    terms: tuple = ()  # ((atom, coeff), ...) sorted by repr(atom), coeffs nonzero
    const: int = 0

    # construction ------------------------------------------------------------------------
    @staticmethod
    def of(x) -> "Ix":
        if isinstance(x, Ix):
            return x
        if isinstance(x, int):
            return Ix((), x)
        return Ix(((x, 1),), 0)

    def _combine(self, other: "Ix", sign: int) -> "Ix":
        acc = dict(self.terms)
        for a, c in other.terms:
            acc[a] = acc.get(a, 0) + sign * c
        return _make(acc, self.const + sign * other.const)

    def __add__(self, o):
        return self._combine(Ix.of(o), 1)

    __radd__ = __add__

    def __sub__(self, o):
        return self._combine(Ix.of(o), -1)

    def __mul__(self, k: int):
        if not isinstance(k, int):
            raise TypeError("an index can only be scaled by an integer")
        return _make({a: c * k for a, c in self.terms}, self.const * k)

    __rmul__ = __mul__

    # facts ---------------------------------------------------------------------------------
    def coeff(self, atom) -> int:
        for a, c in self.terms:
            if a == atom:
                return c
        return 0

    def vars(self) -> set:
        out = set()
        for a, _ in self.terms:
            out |= atom_vars(a)
        return out

    def is_affine(self) -> bool:
        return all(isinstance(a, Var) for a, _ in self.terms)

    def bounds(self) -> tuple[int, int]:
        lo = hi = self.const
        for a, c in self.terms:
            alo, ahi = atom_bounds(a)
            if c >= 0:
                lo, hi = lo + c * alo, hi + c * ahi
            else:
                lo, hi = lo + c * ahi, hi + c * alo
        return lo, hi

    def substitute(self, mapping: dict) -> "Ix":
        """Replace variables by index expressions (through opaque atoms too)."""
        out = Ix((), self.const)
        for a, c in self.terms:
            out = out + substitute_atom(a, mapping) * c
        return out

    def __repr__(self):
        parts = [f"{c}*{a!r}" if c != 1 else repr(a) for a, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts)


def _make(acc: dict, const: int) -> Ix:
    terms = tuple(sorted(((a, c) for a, c in acc.items() if c), key=lambda t: repr(t[0])))
    return Ix(terms, const)


def atom_vars(a) -> set:
    if isinstance(a, Var):
        return {a}
    if isinstance(a, (FloorDiv, Mod, Clip)):
        return a.x.vars()
    if isinstance(a, Clamp):
        return sx_vars(a.value)
    return set()


def atom_bounds(a) -> tuple[int, int]:
    if isinstance(a, Var):
        return 0, a.extent - 1
    if isinstance(a, FloorDiv):
        lo, hi = a.x.bounds()
        return lo // a.d, hi // a.d
    if isinstance(a, Mod):
        lo, hi = a.x.bounds()
        if lo >= 0 and hi < a.d:
            return lo, hi
        return 0, a.d - 1
    if isinstance(a, Clamp):
        return 0, a.n - 1
    if isinstance(a, Clip):
        lo, hi = a.x.bounds()
        return max(lo, a.lo), min(hi, a.hi)
    raise TypeError(a)


def substitute_atom(a, mapping) -> Ix:
    if isinstance(a, Var):
        return Ix.of(mapping.get(a, a))
    if isinstance(a, FloorDiv):
        return floordiv(a.x.substitute(mapping), a.d)
    if isinstance(a, Mod):
        return mod(a.x.substitute(mapping), a.d)
    if isinstance(a, Clamp):
        return Ix.of(Clamp(sx_substitute(a.value, mapping), a.n))
    if isinstance(a, Clip):
        return clip(a.x.substitute(mapping), a.lo, a.hi)
    raise TypeError(a)


def _split(x: Ix, d: int):
    """(quotient terms, remainder Ix) where quotient holds the terms divisible by d."""
    q, r = {}, {}
    for a, c in x.terms:
        if c % d == 0:
            q[a] = c // d
        else:
            r[a] = c
    qc, rc = divmod(x.const, d)
    return _make(q, qc), _make(r, rc)


def floordiv(x: Ix, d: int) -> Ix:
    x = Ix.of(x)
    if d == 1:
        return x
    q, r = _split(x, d)
    lo, hi = r.bounds()
    if lo >= 0 and hi < d:
        return q  # the remainder never carries into the quotient
    lo, hi = x.bounds()
    if lo // d == hi // d:
        return Ix.of(lo // d)
    return Ix.of(FloorDiv(x, d))


def mod(x: Ix, d: int) -> Ix:
    x = Ix.of(x)
    if d == 1:
        return Ix.of(0)
    q, r = _split(x, d)
    lo, hi = r.bounds()
    if lo >= 0 and hi < d:
        return r
    lo, hi = x.bounds()
    if lo >= 0 and hi < d:
        return x
    return Ix.of(Mod(x, d))


def clip(x: Ix, lo: int, hi: int) -> Ix:
    x = Ix.of(x)
    xlo, xhi = x.bounds()
    if xlo >= lo and xhi <= hi:
        return x
    if xhi <= lo:
        return Ix.of(lo)
    if xlo >= hi:
        return Ix.of(hi)
    return Ix.of(Clip(x, lo, hi))


def linearize(idx, shape) -> Ix:
    """Row-major offset of a multi-index."""
    out, stride = Ix.of(0), 1
    for i, n in zip(reversed(idx), reversed(shape)):
        out = out + Ix.of(i) * stride
        stride *= n
    return out


def delinearize(flat: Ix, shape) -> list[Ix]:
    out, stride = [], 1
    strides = []
    for n in reversed(shape):
        strides.append(stride)
        stride *= n
    strides.reverse()
    for s, n in zip(strides, shape):
        out.append(mod(floordiv(flat, s), n) if n != 1 else Ix.of(0))
    return out


# --- scalar expressions --------------------------------------------------------------------

@dataclass(frozen=True)
class Buf:
    """A buffer a kernel reads or writes: a slot of the runtime pointer table plus a byte
    offset (an arena buffer, a parameter, a constant), with its element type and size."""

    name: str
    slot: int
    offset: int
    dtype: DType
    size: int  # elements


@dataclass(frozen=True)
class Sx:
    dtype: DType


@dataclass(frozen=True)
class Load(Sx):
    buf: Buf = None
    index: Ix = None


@dataclass(frozen=True)
class Const(Sx):
    value: float | int | bool = 0


@dataclass(frozen=True)
class IndexValue(Sx):
    index: Ix = None


@dataclass(frozen=True)
class Unary(Sx):
    op: str = ""
    x: Sx = None


@dataclass(frozen=True)
class Binary(Sx):
    op: str = ""
    a: Sx = None
    b: Sx = None


@dataclass(frozen=True)
class Compare(Sx):
    op: str = ""
    a: Sx = None
    b: Sx = None


@dataclass(frozen=True)
class Select(Sx):
    cond: Sx = None
    a: Sx = None
    b: Sx = None


@dataclass(frozen=True)
class Cast(Sx):
    x: Sx = None


@dataclass(frozen=True)
class InRange(Sx):
    """index in [lo, hi) as a bool (pad's and concat's masks)."""

    index: Ix = None
    lo: int = 0
    hi: int = 0


@dataclass(frozen=True)
class AccRef(Sx):
    """The value of the kernel's reduction accumulator (in a reduction's epilogue)."""

    name: str = "acc"


def sx_children(e: Sx) -> tuple:
    if isinstance(e, (Unary, Cast)):
        return (e.x,)
    if isinstance(e, (Binary, Compare)):
        return (e.a, e.b)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    return ()


def sx_indices(e: Sx) -> tuple:
    if isinstance(e, (Load, IndexValue, InRange)):
        return (e.index,)
    return ()


def sx_vars(e: Sx) -> set:
    out, stack, seen = set(), [e], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        for ix in sx_indices(x):
            out |= ix.vars()
        stack.extend(sx_children(x))
    return out


def sx_substitute(e: Sx, mapping: dict) -> Sx:
    """Rewrite every index in `e` with `mapping` (variables -> Ix), iteratively."""
    memo: dict = {}
    stack = [(e, False)]
    while stack:
        x, ready = stack.pop()
        if x in memo:
            continue
        kids = sx_children(x)
        if not ready and any(k not in memo for k in kids):
            stack.append((x, True))
            stack.extend((k, False) for k in kids if k not in memo)
            continue
        memo[x] = _rebuild(x, [memo[k] for k in kids], mapping)
    return memo[e]


def _rebuild(x: Sx, kids, mapping) -> Sx:
    if isinstance(x, Load):
        return Load(x.dtype, x.buf, x.index.substitute(mapping))
    if isinstance(x, IndexValue):
        return IndexValue(x.dtype, x.index.substitute(mapping))
    if isinstance(x, InRange):
        return InRange(x.dtype, x.index.substitute(mapping), x.lo, x.hi)
    if isinstance(x, Unary):
        return Unary(x.dtype, x.op, kids[0])
    if isinstance(x, Cast):
        return Cast(x.dtype, kids[0])
    if isinstance(x, Binary):
        return Binary(x.dtype, x.op, kids[0], kids[1])
    if isinstance(x, Compare):
        return Compare(x.dtype, x.op, kids[0], kids[1])
    if isinstance(x, Select):
        return Select(x.dtype, kids[0], kids[1], kids[2])
    return x


def sx_loads(e: Sx) -> list[Load]:
    out, stack, seen = [], [e], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if isinstance(x, Load):
            out.append(x)
        for ix in sx_indices(x):
            for a, _ in ix.terms:
                if isinstance(a, Clamp):
                    stack.append(a.value)
        stack.extend(sx_children(x))
    return out


# --- kernels ----------------------------------------------------------------------------------

@dataclass
class Store:
    buf: Buf
    index: Ix
    value: Sx


@dataclass
class LoopKernel:
    """For every point of `loops` (outermost first): do every store."""

    name: str
    loops: list[Var]
    stores: list[Store]
    parallel: bool = False


@dataclass
class ReduceKernel:
    """For every point of `outer` (the kept axes): accumulate `operand` over `inner` (the
    reduced axes) with `combine` ('add' or 'max') starting from `init`; `prologue` stores
    run at every inner point, `epilogue` stores after the reduction (AccRef = result).

    `layout` is 'row' (reduced axes include the innermost one: accumulate in registers) or
    'column' (accumulate a vector of partial sums in `acc_buf`, or on the stack when None).
    """

    name: str
    outer: list[Var]
    inner: list[Var]
    combine: str
    init: float
    dtype: DType
    operand: Sx
    prologue: list[Store]
    epilogue: list[Store]
    layout: str = "row"
    acc_buf: Buf | None = None  # column layout: where the partial sums live
    acc_index: Ix | None = None  # column layout: accumulator element of an outer point
    acc_size: int = 0
    parallel: bool = False


@dataclass
class GemmKernel:
    """C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] for every batch b (row-major), then
    the `epilogue` loop kernel (which reads C)."""

    name: str
    dtype: DType
    batch: int
    m: int
    n: int
    k: int
    a: Buf
    b: Buf
    c: Buf
    trans_a: bool
    trans_b: bool
    alpha: float = 1.0
    beta: float = 0.0
    epilogue: LoopKernel | None = None


@dataclass
class ScatterKernel:
    """out = a (unless in place), then out[J(i)] += updates[i] for every update, in order."""

    name: str
    copy: LoopKernel | None
    loops: list[Var]
    target: Buf
    index: Ix
    value: Sx


@dataclass
class Program:
    """A whole function: kernels in schedule order and the buffers they use."""

    name: str
    kernels: list
    slots: list = field(default_factory=list)  # description of each pointer-table slot
    arena_bytes: int = 0
    constants: dict = field(default_factory=dict)  # slot -> numpy array
