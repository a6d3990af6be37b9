"""`TensorSpec`s: the static types of traced arguments, written `f32[64, 10]` or `f32[()]`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError
from ..ir.types import DType, TensorType


@dataclass(frozen=True)
class TensorSpec:
    dtype: DType
    shape: tuple[int, ...]

    @property
    def type(self) -> TensorType:
        return TensorType(self.dtype, self.shape)

    @staticmethod
    def of(x) -> "TensorSpec":
        """The spec of a numpy array or Python scalar (Python floats become f32, ints i32)."""
        if isinstance(x, TensorSpec):
            return x
        if isinstance(x, np.generic):  # before the Python types: np.float64 is a float
            return TensorSpec(DType.from_numpy(x.dtype), ())
        if isinstance(x, bool):
            return TensorSpec(DType.bool, ())
        if isinstance(x, int):
            return TensorSpec(DType.i32, ())
        if isinstance(x, float):
            return TensorSpec(DType.f32, ())
        arr = np.asarray(x)
        return TensorSpec(DType.from_numpy(arr.dtype), tuple(arr.shape))

    def __str__(self) -> str:
        return str(self.type)

    __repr__ = __str__


class DTypeSpecMaker:
    """`f32[64, 10]` makes a TensorSpec; `f32` itself also stands for the dtype."""

    def __init__(self, dtype: DType):
        self.dtype = dtype

    def __getitem__(self, shape) -> TensorSpec:
        if not isinstance(shape, tuple):
            shape = (shape,)
        if shape == ((),):
            shape = ()
        dims = []
        for d in shape:
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
                raise ShapeError(f"{self.dtype}[...] takes non-negative integer sizes, got {shape!r}")
            dims.append(int(d))
        TensorType(self.dtype, tuple(dims))  # refuses sizes no machine addresses
        return TensorSpec(self.dtype, tuple(dims))

    def __repr__(self) -> str:
        return self.dtype.value

    def __eq__(self, other):
        if isinstance(other, DTypeSpecMaker):
            return self.dtype is other.dtype
        return self.dtype is other

    def __hash__(self):
        return hash(self.dtype)


def as_dtype(d) -> DType:
    """Accept DType, a spec maker (`ig.f32`), a numpy dtype or a name."""
    if isinstance(d, DType):
        return d
    if isinstance(d, DTypeSpecMaker):
        return d.dtype
    if isinstance(d, str):
        try:
            return DType(d)
        except ValueError:
            raise ShapeError(f"unknown dtype {d!r} (use f32 f64 i32 i64 bool)") from None
    try:
        return DType.from_numpy(d)
    except TypeError:
        raise ShapeError(f"not a dtype: {d!r} (use f32 f64 i32 i64 bool)") from None


f32 = DTypeSpecMaker(DType.f32)
f64 = DTypeSpecMaker(DType.f64)
i32 = DTypeSpecMaker(DType.i32)
i64 = DTypeSpecMaker(DType.i64)
bool_ = DTypeSpecMaker(DType.bool)
