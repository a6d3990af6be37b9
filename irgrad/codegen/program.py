"""Program-level types the renderers produce and the runtimes consume."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.types import DType


@dataclass
class BufferArg:
    """A pointer argument of a rendered kernel: the address of pointer-table slot `slot`
    plus `offset` bytes, holding `size` elements of `dtype`. `noalias` when no other buffer
    of the kernel overlaps it (codegen/renderer.py's one aliasing policy)."""

    name: str
    slot: int
    offset: int
    dtype: DType
    size: int
    written: bool
    noalias: bool

    @property
    def const(self) -> bool:  # only read
        return not self.written
