"""The scalar expressions that kernels compute, element by element: the language the op
entries lower to (their `reads`/`build` hooks) and every renderer spells.

Two expression languages, both hash-consed (structurally equal nodes are one object, so a
renderer memoizes them, common subexpressions are computed once, and no walk over them
recurses, whatever their depth: ir/hashcons.py):

- `Ix`, integer index arithmetic (ir/indexing.py), plus `Clamp`, a data-dependent index
  (gather's) kept inside its buffer;
- `Sx`, typed scalar expressions: loads from buffers, constants, the scalar instructions
  (`Unary`, `Binary`, `Compare`: one per op entry with `instruction=True`, named after
  it), select, casts, index values and ranges, and references to a reduction's
  accumulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hashcons import Node
from .indexing import FloorDiv, Ix, Mod, Clip
from .registry import all_ops
from .types import DType


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


def instruction(name: str, dtype: DType, args, operand_dtype: DType | None = None) -> Sx:
    """The scalar instruction `name` (an op entry with `instruction=True`) on `args`: a
    `Compare` when it yields a bool from other values, a `Unary` or `Binary` otherwise."""
    if len(args) == 1:
        return Unary(dtype, name, args[0])
    if dtype is DType.bool and operand_dtype is not None:
        return Compare(dtype, name, args[0], args[1])
    return Binary(dtype, name, args[0], args[1])


def instruction_names() -> dict[str, int]:
    """Every scalar instruction, with its arity: what a renderer must spell."""
    return {name: d.num_operands for name, d in all_ops().items() if d.instruction}
