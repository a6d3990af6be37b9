"""Program-level types the renderers produce and the runtimes consume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.plan import ALIGN
from ..ir.types import DType


def aligned_empty(nbytes: int, align: int = ALIGN) -> tuple[np.ndarray, int]:
    """Zeroed host memory of at least `nbytes` (and at least one) bytes starting at a
    multiple of `align`: (the array that owns it, the aligned address)."""
    raw = np.zeros(max(nbytes, 1) + align, dtype=np.uint8)
    addr = raw.ctypes.data
    return raw, addr + (-addr) % align


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
