"""`ig.random`: counter-based random numbers (Threefry-2x32), pure and deterministic.

A key is an i32[2] array (numpy outside a trace, a tensor inside). Every function is a
pure function of its key: the same key gives the same numbers on the interpreter, the
CPU and the CUDA backend (the bits come from the `random_bits` op, whose kernels compute
each element from its index, so they fuse into whatever uses them). As in JAX, a key is
used once: `split` it for more. Outside a traced function the functions return numpy
arrays (computed by the interpreter), inside they return tensors.

    key = ig.random.key(0)
    k1, k2 = ig.random.split(key)           # numpy keys unpack; traced ones: keys[0], keys[1]
    w = ig.random.normal(k1, (784, 10)) * 0.01
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.interpreter import run_function
from ..ir.ops.random import random_bits_reference
from ..ir.types import DType, TensorType
from . import library as L
from .specs import as_dtype
from .tensor import Tensor, as_tensor, current_context, emit, fail

_I32 = np.int32


def key(seed: int) -> np.ndarray:
    """A key from an integer seed: the words (seed >> 32, seed mod 2^32), as JAX's."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise fail(f"ig.random.key needs an integer seed, got {seed!r}")
    seed = int(seed)
    if not -(1 << 63) <= seed < (1 << 64):
        raise fail(f"ig.random.key needs a seed that fits in 64 bits, got {seed}")
    seed &= (1 << 64) - 1
    return np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32).view(_I32)


def _check_key(k):
    if isinstance(k, Tensor):
        if k.dtype is not DType.i32 or k.shape != (2,):
            raise fail(f"a random key is an i32[2] (from ig.random.key or split), got {k.type}")
        return k
    arr = np.asarray(k)
    if arr.shape != (2,) or arr.dtype.kind not in "iu":
        raise fail(f"a random key is an i32[2] array (from ig.random.key or split), got "
                   f"{arr.dtype}{list(arr.shape)}")
    return arr.astype(np.int64).astype(np.uint32).view(_I32)


def _shape(shape):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise fail(f"a random shape is an int or a tuple of ints, got {shape!r}") from None
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) for d in dims):
        raise fail(f"a random shape is an int or a tuple of ints, got {shape!r}")
    dims = tuple(int(d) for d in dims)
    if any(d < 0 for d in dims):
        raise fail(f"a random shape needs sizes >= 0, got {list(dims)}")
    return dims


def bits(k, shape=()) -> Tensor | np.ndarray:
    """Uniformly distributed i32 words of `shape` (all 32 bits random)."""
    k, shape = _check_key(k), _shape(shape)
    if not isinstance(k, Tensor):
        return random_bits_reference(k, shape)
    return emit("random_bits", k.value, result_type=TensorType(DType.i32, shape))


def split(k, num: int = 2):
    """`num` new keys, an i32[num, 2]."""
    if int(num) < 1:
        raise fail(f"ig.random.split needs num >= 1, got {num}")
    return bits(k, (int(num), 2))


def _eager(fn, k, *args):
    """Outside a trace: run `fn` on the interpreter (the same ops a traced call emits)."""
    from .function import trace
    f = trace(lambda kk: fn(kk, *args), np.asarray(k))
    return run_function(f.ir, [np.asarray(k)])[0]


def _traced(k) -> bool:
    return isinstance(k, Tensor) or current_context() is not None


def _unit(k, shape, dtype):
    """[0, 1) with 24 random bits (f32) or 53 (f64): exact integer -> float conversions
    scaled by a power of two, hence the same value on every backend."""
    if dtype is DType.f64:
        w = bits(k, shape + (2,))
        hi = L.astype(_lshr(w[..., 0], 6), DType.f64)
        lo = L.astype(_lshr(w[..., 1], 5), DType.f64)
        return (hi * float(1 << 27) + lo) * (1.0 / float(1 << 53))
    w = bits(k, shape)
    return L.astype(_lshr(w, 8), dtype) * (1.0 / float(1 << 24))


def _lshr(w: Tensor, n: int) -> Tensor:
    return emit("shift_right_logical", w.value, as_tensor(n, w, w.shape).value)


def _float_draw(what, k, shape, dtype):
    """The checked key, shape and float dtype of a draw."""
    k, shape, dtype = _check_key(k), _shape(shape), as_dtype(dtype)
    if not dtype.is_float:
        raise fail(f"ig.random.{what} needs a float dtype, got {dtype}")
    return k, shape, dtype


def uniform(k, shape=(), dtype="f32", minval=0.0, maxval=1.0):
    """Uniform in [minval, maxval)."""
    k, shape, dtype = _float_draw("uniform", k, shape, dtype)
    if not _traced(k):
        return _eager(lambda kk: uniform(kk, shape, dtype, minval, maxval), k)
    u = _unit(as_tensor(k), shape, dtype)
    if (minval, maxval) == (0.0, 1.0):
        return u
    lo, hi = float(minval), float(maxval)
    if not hi > lo:
        raise fail(f"ig.random.uniform needs minval < maxval, got {minval} and {maxval}")
    # (u + lo/r) r rather than u r + lo: an add then a multiply, which no backend contracts
    # into a fused multiply-add, so every backend rounds alike; clamped below maxval
    r = hi - lo
    top = float(np.nextafter(dtype.np.type(hi), dtype.np.type(-np.inf)))
    return L.clip((u + lo / r) * r, lo, top)


def normal(k, shape=(), dtype="f32", mean=0.0, std=1.0):
    """Normally distributed (Box-Muller on two uniform draws per element)."""
    k, shape, dtype = _float_draw("normal", k, shape, dtype)
    if not _traced(k):
        return _eager(lambda kk: normal(kk, shape, dtype, mean, std), k)
    keys = split(as_tensor(k), 2)
    u1 = 1.0 - _unit(keys[0], shape, dtype)  # (0, 1]: log stays finite
    u2 = _unit(keys[1], shape, dtype)
    z = L.sqrt(L.log(u1) * -2.0) * L.cos(u2 * (2.0 * math.pi))
    return z * float(std) + float(mean) if (mean, std) != (0.0, 1.0) else z


def bernoulli(k, p=0.5, shape=()):
    """bool tensor, True with probability p (a number or a float tensor broadcast to shape)."""
    k, shape = _check_key(k), _shape(shape)
    if not _traced(k):
        return _eager(lambda kk: bernoulli(kk, p, shape), k)
    if isinstance(p, (np.ndarray, list, tuple)):
        p = as_tensor(np.asarray(p, dtype=np.float32))
    if not isinstance(p, Tensor) and not 0.0 <= float(p) <= 1.0:
        raise fail(f"ig.random.bernoulli needs 0 <= p <= 1, got {p}")
    return _unit(as_tensor(k), shape, DType.f32) < p


__all__ = ["key", "split", "bits", "uniform", "normal", "bernoulli"]
