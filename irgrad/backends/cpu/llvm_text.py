"""LLVM IR text: type names, literals and a writer of one function's instructions, shared
by the kernel renderer and the matmul renderers."""

from __future__ import annotations

from ...ir.types import DType
from .llvm_math import f32_hex, f64_hex

LL = {DType.f32: "float", DType.f64: "double", DType.i32: "i32", DType.i64: "i64",
      DType.bool: "i1"}  # register types
MEM = {DType.f32: "float", DType.f64: "double", DType.i32: "i32", DType.i64: "i64",
       DType.bool: "i8"}  # in-memory types (a bool is a byte)
# Fast-math flags: elementwise arithmetic may only fuse multiply-adds (results stay within
# about 1e-6 of the interpreter in float32); reductions may also reassociate, so that
# they vectorize.
ELEMENT_FLAGS = "contract"
REDUCE_FLAGS = "reassoc nsz contract"


def const_literal(value, dtype: DType) -> str:
    if dtype is DType.f32:
        return f32_hex(float(value))
    if dtype is DType.f64:
        return f64_hex(float(value))
    if dtype is DType.bool:
        return "true" if value else "false"
    return str(int(value))


class FunctionWriter:
    """Emits the instructions of one LLVM function with fresh SSA names."""

    def __init__(self):
        self.lines: list[str] = []
        self.n = 0
        self.entry_allocas: list[str] = []

    def tmp(self, hint: str = "t") -> str:
        self.n += 1
        return f"%{hint}{self.n}"

    def emit(self, text: str) -> None:
        self.lines.append("  " + text)

    def label(self, name: str) -> None:
        self.lines.append(f"{name[1:]}:")

    def assign(self, rhs: str, hint: str = "t") -> str:
        r = self.tmp(hint)
        self.emit(f"{r} = {rhs}")
        return r
