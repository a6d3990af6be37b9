"""ONNX element types and the irgrad dtypes that compute them.

irgrad's IR has five dtypes (f32 f64 i32 i64 bool). An ONNX tensor of another type is
*widened* at the model's boundary and computed in the nearest IR dtype that holds every
value exactly: float16 and bfloat16 in f32, 8- and 16-bit integers in i32, uint32 and
uint64 in i64 (uint64 values above 2**63 wrap, as their bits). Each value keeps its ONNX
type beside its IR type, so outputs are narrowed back to it (numpy's casts) and `Cast`
to a narrow type rounds or wraps as ONNX does.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOnnxError
from ..ir.types import DType

# ONNX TensorProto.DataType numbers (stable across onnx releases)
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL = 1, 2, 3, 4, 5, 6, 7, 8, 9
FLOAT16, DOUBLE, UINT32, UINT64, BFLOAT16 = 10, 11, 12, 13, 16

_COMPUTE = {FLOAT: DType.f32, DOUBLE: DType.f64, INT32: DType.i32, INT64: DType.i64,
            BOOL: DType.bool, FLOAT16: DType.f32, BFLOAT16: DType.f32, UINT8: DType.i32,
            INT8: DType.i32, UINT16: DType.i32, INT16: DType.i32, UINT32: DType.i64,
            UINT64: DType.i64}
_OF_DTYPE = {DType.f32: FLOAT, DType.f64: DOUBLE, DType.i32: INT32, DType.i64: INT64,
             DType.bool: BOOL}
# bits of the narrow integer types, and whether they are signed (Cast wraps to them)
INT_BITS = {UINT8: (8, False), INT8: (8, True), UINT16: (16, False), INT16: (16, True),
            UINT32: (32, False), UINT64: (64, False)}


def name(elem_type: int) -> str:
    try:
        import onnx
        return onnx.TensorProto.DataType.Name(elem_type)
    except (ImportError, ValueError):
        return f"type {elem_type}"


def compute_dtype(elem_type: int, where: str = "") -> DType:
    """The IR dtype an ONNX element type is computed in."""
    try:
        return _COMPUTE[elem_type]
    except KeyError:
        raise UnsupportedOnnxError(f"{where}ONNX element type {name(elem_type)} is not supported "
                                   f"(irgrad imports float, double, float16, bfloat16, bool and "
                                   f"8- to 64-bit integers)") from None


def of_dtype(dtype: DType) -> int:
    return _OF_DTYPE[dtype]


def storage_np(elem_type: int) -> np.dtype:
    """The numpy dtype ONNX stores this element type in (bfloat16 as ml_dtypes')."""
    import onnx.helper
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def widen(arr, elem_type: int) -> np.ndarray:
    """An ONNX array as its IR dtype's numpy array."""
    dt = compute_dtype(elem_type).np
    a = np.asarray(arr)
    if elem_type == UINT64 and a.dtype == np.uint64:
        a = a.view(np.int64)
    a = a.astype(dt, copy=False)
    # (np.ascontiguousarray would make a 0-d array 1-d)
    return a if a.flags.c_contiguous else np.array(a, order="C")


def narrow(arr: np.ndarray, elem_type: int) -> np.ndarray:
    """An IR result as the ONNX element type's numpy array."""
    dt = storage_np(elem_type)
    a = np.asarray(arr)
    if a.dtype == dt:
        return a
    if elem_type == UINT64 and a.dtype == np.int64:
        return a.view(np.uint64)
    with np.errstate(all="ignore"):
        return a.astype(dt)


def is_float(elem_type: int) -> bool:
    return elem_type in (FLOAT, DOUBLE, FLOAT16, BFLOAT16)
