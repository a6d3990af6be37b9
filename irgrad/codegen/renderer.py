"""The base of every renderer of the kernel form (backends/cpu: LLVM IR; backends/cuda: C).

What the renderers share lives here, once:

- the buffer analysis of a kernel (`KernelBuffers`): which buffers it reads and writes,
  in a fixed order, and the one aliasing policy: a buffer argument is marked `noalias`
  (`__restrict__`) exactly when no other buffer of the kernel overlaps its bytes in the
  same pointer-table slot. The memory plan's checker has proved that buffers live at the
  same time do not overlap unless they share an offset, so this is exact: a result
  written in place over an operand of another dtype gets two pointers, neither restrict.
- the walk over a scalar expression DAG (`Renderer.expr`): iterative, post-order,
  memoized per `Scope`, so shared subexpressions are computed once and depth costs no
  stack; the dispatch on node kinds; constants through the renderer's `literal`.
- the per-op spellings as a table, `code_for_op` (tinygrad's renderers are the model):
  scalar instruction name -> `fn(renderer, dtype, args, operand_dtype) -> value`. Every
  op entry with `instruction=True` must have a spelling in every renderer
  (`missing_instructions`; a registry-driven test checks it).

A renderer supplies the spellings, `literal`, loads, index arithmetic and its loop and
launch structure; where it puts a value (`place`) and how it binds one (`bind`) are
hooks (LLVM emits instructions at the current point; C hoists a value to the innermost
scope that binds a variable it depends on).
"""

from __future__ import annotations

from typing import Callable, ClassVar

from ..errors import IrgradError
from ..ir.indexing import Ix, Var
from ..ir.registry import get_op
from ..ir.scalar import (AccRef, Binary, Buf, Cast, Compare, Const, IndexValue, InRange, Load,
                         Select, Sx, Unary, instruction_names, ix_exprs, sx_children, walk_exprs)
from ..ir.types import DType
from .kernel_ir import LoopKernel, ReduceKernel, ScatterKernel
from .program import BufferArg


class KernelBuffers:
    """The buffers of one kernel, keyed by (slot, byte offset, dtype), in first-use order."""

    def __init__(self):
        self.bufs: dict = {}
        self.written: set = set()
        self._args: dict | None = None
        self._list: list | None = None

    @staticmethod
    def key(b: Buf):
        return (b.slot, b.offset, b.dtype)

    def add(self, b: Buf, write: bool = False) -> None:
        k = self.key(b)
        old = self.bufs.get(k)
        if old is None or b.size > old.size:
            self.bufs[k] = b
            self._args = self._list = None
        if write and k not in self.written:
            self.written.add(k)
            self._args = self._list = None

    def add_exprs(self, exprs, indices=()) -> None:
        extra = [e for ix in indices for e in ix_exprs(ix)]
        for e in walk_exprs(list(exprs) + extra):
            if isinstance(e, Load):
                self.add(e.buf)

    def add_stores(self, stores) -> None:
        for s in stores:
            self.add(s.buf, write=True)
        self.add_exprs([s.value for s in stores], [s.index for s in stores])

    def add_kernel(self, k) -> "KernelBuffers":
        """Everything a loop, reduction or scatter kernel (with its copy) touches."""
        parts = ([k.copy] if isinstance(k, ScatterKernel) and k.copy else []) + [k]
        for part in parts:
            if isinstance(part, LoopKernel):
                self.add_stores(part.stores)
            elif isinstance(part, ReduceKernel):
                self.add_stores(part.prologue + part.epilogue)
                self.add_exprs([part.operand])
                if part.acc_buf is not None:
                    self.add(part.acc_buf, write=True)
            elif isinstance(part, ScatterKernel):
                self.add(part.target, write=True)
                self.add_exprs([part.value], [part.index])
        return self

    def args(self) -> list[BufferArg]:
        """One argument per buffer; `noalias` where no other buffer overlaps it."""
        if self._list is not None:
            return self._list
        keys = list(self.bufs)
        spans = [(b.slot, b.offset, b.offset + b.size * b.dtype.itemsize)
                 for b in self.bufs.values()]
        out = []
        for i, (k, (slot, lo, hi)) in enumerate(zip(keys, spans)):
            overlaps = any(j != i and s == slot and lo2 < hi and lo < hi2
                           for j, (s, lo2, hi2) in enumerate(spans))
            b = self.bufs[k]
            out.append(BufferArg(f"b{i}", b.slot, b.offset, b.dtype, b.size, k in self.written,
                                 not overlaps))
        self._args = dict(zip(keys, out))
        self._list = out
        return out

    def arg(self, b: Buf) -> BufferArg:
        if self._args is None:
            self.args()
        return self._args[self.key(b)]


class Scope:
    """Loop-variable bindings and memoized values of one nesting level. `block` is where
    the renderer puts a level's code (C renders nested blocks; LLVM has one stream)."""

    def __init__(self, parent: "Scope | None" = None, block=None, binds=None):
        self.parent = parent
        self.block = block if block is not None or parent is None else parent.block
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
        s, root = self, self
        while s is not None:
            if deps and any(v in s.binds for v in deps):
                return s
            root = s
            s = s.parent
        return root


class NotRenderable(IrgradError):
    """A backend has no spelling for a scalar instruction (or kernel) of a program."""


class Renderer:
    """Shared expression machinery (see the module docstring)."""

    backend: ClassVar[str] = ""
    code_for_op: ClassVar[dict[str, Callable]] = {}
    reductions: ClassVar[tuple[str, ...]] = ("add", "max", "min")  # combines it renders

    @classmethod
    def missing_instructions(cls) -> list[str]:
        """Scalar instructions of the registry this renderer cannot spell."""
        return sorted(n for n in instruction_names() if n not in cls.code_for_op)

    @classmethod
    def unsupported(cls, f) -> str | None:
        """Why this renderer cannot compile `f` (an IR function), naming the first op it
        cannot: one without a lowering, or a scalar instruction it cannot spell; or None."""
        for op in f.walk():
            d = get_op(op.opname)
            if d.kernel == "loop" and d.build is None:
                return f"'{op.opname}' has no lowering to the kernel form (its entry has no build hook)"
            if d.kernel == "reduce" and d.reduction not in cls.reductions:
                return (f"'{op.opname}' reduces with {d.reduction!r}, which the {cls.backend} "
                        f"renderer does not combine")
            if d.instruction and op.opname not in cls.code_for_op:
                return (f"'{op.opname}' is a scalar instruction the {cls.backend} renderer does "
                        f"not spell")
        return None

    @classmethod
    def check_support(cls, f) -> None:
        """Refuse `f`, before any code exists, if this renderer cannot compile it."""
        why = cls.unsupported(f)
        if why:
            raise IrgradError(f"the {cls.backend} backend cannot compile @{f.name}: {why}")

    # -- hooks ---------------------------------------------------------------------------------
    def literal(self, value, dtype: DType) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, x: Load, scope: Scope) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def index(self, ix: Ix, scope: Scope) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def index_value(self, x: IndexValue, scope: Scope) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def in_range(self, x: InRange, scope: Scope) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self, dtype: DType, c: str, a: str, b: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def cast(self, src: DType, dst: DType, a: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def place(self, x: Sx, scope: Scope) -> Scope:
        """The scope whose code computes x (default: where it is asked for)."""
        return scope

    def bind(self, x: Sx, value: str, scope: Scope) -> str:
        """Record x's rendered value in `scope` (a renderer may name it first)."""
        scope.memo[x] = value
        return value

    def known(self, x: Sx, scope: Scope):
        """x's value if it needs no code here (a memoized value), else None."""
        return scope.lookup(x)

    def leaf(self, x: Sx, scope: Scope):
        """A renderer's own value for a node before the generic dispatch (e.g. one lane of
        a vector load), or None."""
        return None

    # -- the walk ------------------------------------------------------------------------------
    def expr(self, e: Sx, scope: Scope) -> str:
        """Render an expression DAG iteratively (post-order), memoized per scope."""
        known, stack = self.known, [(e, False)]
        while stack:
            x, ready = stack.pop()
            if known(x, scope) is not None:
                continue
            kids = sx_children(x)
            vals = [known(k, scope) for k in kids]
            if not ready and None in vals:
                stack.append((x, True))
                stack.extend((k, False) for k, v in zip(kids, vals) if v is None)
                continue
            own = self.leaf(x, scope)
            if own is not None:
                scope.memo[x] = own
                continue
            home = self.place(x, scope)
            self.bind(x, self.node(x, vals, home), home)
        return known(e, scope)

    def node(self, x: Sx, kids, scope: Scope) -> str:
        dt = x.dtype
        if isinstance(x, Const):
            return self.literal(x.value, dt)
        if isinstance(x, AccRef):
            got = scope.lookup(x)
            if got is None:
                raise AssertionError("accumulator used outside a reduction epilogue")
            return got
        if isinstance(x, Load):
            return self.load(x, scope)
        if isinstance(x, IndexValue):
            return self.index_value(x, scope)
        if isinstance(x, InRange):
            return self.in_range(x, scope)
        if isinstance(x, (Unary, Binary, Compare)):
            return self.instruction(x.op, dt, kids, (x.a.dtype if isinstance(x, Compare) else dt))
        if isinstance(x, Select):
            return self.select(dt, *kids)
        if isinstance(x, Cast):
            return self.cast(x.x.dtype, dt, kids[0])
        raise AssertionError(type(x))

    def instruction(self, op: str, dtype: DType, args, operand_dtype: DType) -> str:
        fn = self.code_for_op.get(op)
        if fn is None:
            raise NotRenderable(f"the {self.backend} backend has no spelling for the scalar "
                                f"instruction '{op}'")
        return fn(self, dtype, args, operand_dtype)
