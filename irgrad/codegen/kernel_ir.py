"""The backend-neutral kernel form that both renderers (LLVM for the CPU, CUDA C) consume.

Two expression languages, both hash-consed (structurally equal nodes are one object, so a
renderer memoizes them, common subexpressions are computed once, and no walk over them
recurses, whatever their depth: ir/hashcons.py):

- `Ix`, integer index arithmetic (ir/indexing.py), plus `Clamp`, a data-dependent index
  (gather's) kept inside its buffer;
- `Sx`, typed scalar expressions: loads, constants, arithmetic, comparisons, select,
  casts, and references to a reduction's accumulator.

A lowered kernel is one of `LoopKernel`, `ReduceKernel`, `GemmKernel`, `ScatterKernel`,
`CopyKernel`: what is computed, over which iteration space. How loops are ordered,
vectorized, split over threads or mapped to a GPU grid is each renderer's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.hashcons import Node
from ..ir.indexing import (Clip, FloorDiv, Ix, Mod, Var, atom_bounds, atom_vars, clip,  # noqa: F401
                           delinearize, floordiv, linearize, mod, substitute_atom)
from ..ir.types import DType


# --- index expressions (the algebra lives in ir/indexing.py) ------------------------------

class Clamp(Node):
    """A data-dependent index (an integer scalar expression) wrapped like numpy's negative
    indices and clamped into [0, n) so that no load can leave its buffer."""

    FIELDS = __slots__ = ("value", "n")

    def vars(self) -> set:
        return sx_vars(self.value)

    def bounds(self) -> tuple[int, int]:
        return 0, self.n - 1

    def substitute(self, mapping) -> "Clamp":
        return Clamp(sx_substitute(self.value, mapping), self.n)

    def __repr__(self):
        return f"Clamp({self.value!r}, {self.n})"


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


class Sx(Node):
    """A typed scalar expression (hash-consed: see ir/hashcons.py)."""

    __slots__ = ("dtype",)
    FIELDS = ("dtype",)


class Load(Sx):
    __slots__ = ("buf", "index")
    FIELDS = ("dtype", "buf", "index")
    DEFAULTS = {"buf": None, "index": None}


class Const(Sx):
    __slots__ = ("value",)
    FIELDS = ("dtype", "value")
    DEFAULTS = {"value": 0}


class IndexValue(Sx):
    __slots__ = ("index",)
    FIELDS = ("dtype", "index")
    DEFAULTS = {"index": None}


class Unary(Sx):
    __slots__ = ("op", "x")
    FIELDS = ("dtype", "op", "x")
    DEFAULTS = {"op": "", "x": None}


class Binary(Sx):
    __slots__ = ("op", "a", "b")
    FIELDS = ("dtype", "op", "a", "b")
    DEFAULTS = {"op": "", "a": None, "b": None}


class Compare(Sx):
    __slots__ = ("op", "a", "b")
    FIELDS = ("dtype", "op", "a", "b")
    DEFAULTS = {"op": "", "a": None, "b": None}


class Select(Sx):
    __slots__ = ("cond", "a", "b")
    FIELDS = ("dtype", "cond", "a", "b")
    DEFAULTS = {"cond": None, "a": None, "b": None}


class Cast(Sx):
    __slots__ = ("x",)
    FIELDS = ("dtype", "x")
    DEFAULTS = {"x": None}


class InRange(Sx):
    """index in [lo, hi) as a bool (pad's and concat's masks)."""

    __slots__ = ("index", "lo", "hi")
    FIELDS = ("dtype", "index", "lo", "hi")
    DEFAULTS = {"index": None, "lo": 0, "hi": 0}


class AccRef(Sx):
    """The value of the kernel's reduction accumulator (in a reduction's epilogue)."""

    __slots__ = ("name",)
    FIELDS = ("dtype", "name")
    DEFAULTS = {"name": "acc"}


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


def ix_exprs(ix: Ix) -> list[Sx]:
    """The scalar expressions inside an index (the data-dependent indices of gathers)."""
    out, stack = [], [ix]
    while stack:
        i = stack.pop()
        for a, _ in i.terms:
            if isinstance(a, Clamp):
                out.append(a.value)
            elif isinstance(a, (FloorDiv, Mod, Clip)):
                stack.append(a.x)
    return out


def walk_exprs(exprs):
    """Every expression node reachable from `exprs`, each once, indices' insides included."""
    stack, seen = list(exprs), set()
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        yield e
        for ix in sx_indices(e):
            stack.extend(ix_exprs(ix))
        stack.extend(sx_children(e))


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
    blocked: bool = False  # row layout: the last inner variable is one block of a blocked sum


@dataclass(frozen=True)
class MatrixView:
    """One matrix per batch inside a buffer: element (i, j) of batch b is at element
    `offsets[b] + i * ld + j`, or `offsets[b] + j * ld + i` when `trans` (stored
    transposed). BLAS reads such views in place, so a matmul absorbs transposes, reshapes
    and slices of its operands."""

    buf: Buf
    offsets: tuple
    ld: int
    trans: bool = False


@dataclass
class GemmKernel:
    """C[b] = alpha * A[b] @ B[b] + beta * C[b] for every batch b (A: m x k, B: k x n,
    C: m x n, each a `MatrixView`), then the `epilogue` loop kernel (which reads C)."""

    name: str
    dtype: DType
    batch: int
    m: int
    n: int
    k: int
    a: MatrixView
    b: MatrixView
    c: MatrixView
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
