"""Element types and static-shaped tensor types of the IR."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError

# The most bytes a tensor may hold: index and offset arithmetic in generated code is
# 64-bit, with room for an arena of several such tensors.
MAX_TENSOR_BYTES = 1 << 60


class DType(enum.Enum):
    f32 = "f32"
    f64 = "f64"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    @property
    def np(self) -> np.dtype:
        return _NUMPY[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f64)

    @property
    def is_int(self) -> bool:
        return self in (DType.i32, DType.i64)

    @property
    def itemsize(self) -> int:
        return _NUMPY[self].itemsize

    @staticmethod
    def from_numpy(dt) -> "DType":
        dt = np.dtype(dt)
        for k, v in _NUMPY.items():
            if v == dt:
                return k
        raise ShapeError(f"numpy dtype {dt} has no irgrad dtype (use f32 f64 i32 i64 bool)")

    @staticmethod
    def parse(name: str) -> "DType":
        try:
            return DType(name)
        except ValueError:
            raise KeyError(name) from None

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return self.value


_NUMPY = {
    DType.f32: np.dtype(np.float32),
    DType.f64: np.dtype(np.float64),
    DType.i32: np.dtype(np.int32),
    DType.i64: np.dtype(np.int64),
    DType.bool: np.dtype(np.bool_),
}


@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor of static shape; `shape == ()` is a scalar, printed `f32[]`."""

    dtype: DType
    shape: tuple[int, ...]

    def __post_init__(self):
        if not isinstance(self.dtype, DType):
            raise TypeError(f"dtype must be a DType, got {self.dtype!r}")
        if not isinstance(self.shape, tuple) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 0
                for d in self.shape):
            raise ShapeError(f"a shape is a tuple of non-negative integers, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if math.prod(self.shape) * self.dtype.itemsize > MAX_TENSOR_BYTES:
            raise ShapeError(f"{self} would hold {math.prod(self.shape) * self.dtype.itemsize} bytes, "
                             f"more than irgrad addresses (2**60)")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    __repr__ = __str__


f32, f64, i32, i64, boolean = DType.f32, DType.f64, DType.i32, DType.i64, DType.bool
