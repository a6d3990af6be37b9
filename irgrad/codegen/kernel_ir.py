"""The backend-neutral kernel form that every renderer (LLVM for the CPU, CUDA C) consumes.

A lowered kernel is one of `LoopKernel`, `ReduceKernel`, `GemmKernel`, `ScatterKernel`:
what is computed, over which iteration space, with elements written as the scalar
expressions of ir/scalar.py. How loops are ordered, vectorized, split over threads or
mapped to a GPU grid is each renderer's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.indexing import Ix, Var
from ..ir.scalar import Buf, Sx
from ..ir.types import DType


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
    reduced axes) with `combine` (the instruction: 'add', 'max' or 'min') starting from `init`; `prologue` stores
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
