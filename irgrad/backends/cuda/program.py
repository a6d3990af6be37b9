"""The program-level types of the CUDA backend: what the renderer produces (a translation
unit and a launch plan) and the runtime consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...codegen.kernel_ir import Program
from ...codegen.program import BufferArg
from .cexpr import MT


def c_param(a: BufferArg) -> str:
    """The C type of a pointer argument: const when only read, restrict when no other
    buffer of the kernel overlaps it."""
    q = "const " if a.const else ""
    r = " __restrict__" if a.noalias else ""
    return f"{q}{MT[a.dtype]}*{r}"


@dataclass
class Launch:
    name: str
    grid: tuple
    block: tuple
    args: list  # BufferArg
    origin: str  # the Program kernel it implements
    strategy: str
    shared_bytes: int = 0  # static shared memory (no dynamic shared memory is used)
    sync: bool = False  # uses __syncthreads or warp shuffles

    @property
    def threads(self) -> int:
        return math.prod(self.block)


@dataclass
class CudaProgram:
    name: str
    source: str
    launches: list
    program: Program
    scratch_bytes: int = 0  # runtime-owned device scratch (two-pass reductions)
    options: dict = field(default_factory=dict)

    @property
    def scratch_slot(self) -> int:
        return len(self.program.slots)

    @property
    def num_slots(self) -> int:
        return len(self.program.slots) + 1

    def kernel_names(self) -> list[str]:
        return [ln.name for ln in self.launches]
