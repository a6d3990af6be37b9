"""Integer bit operations and counter-based random numbers.

`random_bits(key)` is Threefry-2x32 (20 rounds; Salmon et al., "Parallel random numbers:
as easy as 1, 2, 3", SC 2011; the generator JAX uses) applied to the counter (0, i) for
every element i of the result (row-major): a pure function of the key and the index, so
the interpreter, the CPU and the CUDA backend produce the same bits, and each kernel that
uses them computes its own (they fuse like any elementwise op: nothing is stored).
The key is an i32[2] (the two 32-bit key words). Integer words are i32 whose arithmetic
wraps; the shifts here are logical on the bit pattern.
"""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..indexing import linearize
from ..registry import OpDef, register
from ..scalar import Const, IndexValue, instruction
from ..types import DType
from .elementwise import _binary_infer

# --- bit operations on integers (no derivative) ---------------------------------------------------


def _int(d: DType) -> bool:
    return d.is_int


def _shift_amount(a, b):
    return (np.asarray(b) & (a.dtype.itemsize * 8 - 1)).astype(a.dtype)


def _lshr(a, b):
    u = np.uint32 if a.dtype == np.int32 else np.uint64
    return (np.asarray(a).view(u) >> _shift_amount(a, b).astype(u)).view(a.dtype)


_BITWISE = {
    "bitwise_and": (np.bitwise_and, "a & b"),
    "bitwise_or": (np.bitwise_or, "a | b"),
    "bitwise_xor": (np.bitwise_xor, "a ^ b"),
    "shift_left": (lambda a, b: np.left_shift(a, _shift_amount(a, b)), "a << (b mod bits)"),
    "shift_right_logical": (_lshr, "a >>> (b mod bits), zeros shifted in"),
}

for _name, (_ref, _doc) in _BITWISE.items():
    register(OpDef(
        name=_name, infer=_binary_infer(_name, _int, "integer"),
        reference=lambda xs, op, ref=_ref: [np.asarray(ref(xs[0], xs[1]), dtype=xs[0].dtype)],
        num_operands=2, elementwise=True, differentiable=False, instruction=True,
        doc=f"Bitwise on integers: {_doc}."))


# --- Threefry-2x32 -----------------------------------------------------------------------------------

ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
PARITY = 0x1BD11BDA


def threefry2x32(k0, k1, c0, c1):
    """numpy reference on uint32 arrays: the two output words for counters (c0, c1)."""
    with np.errstate(over="ignore"):  # the words wrap, by definition
        return _threefry(*(np.asarray(v, dtype=np.uint32) for v in (k0, k1, c0, c1)))


def _threefry(k0, k1, c0, c1):
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(PARITY))
    x0, x1 = c0 + ks[0], c1 + ks[1]
    for group in range(5):
        for r in ROTATIONS[4 * (group % 2):4 * (group % 2) + 4]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(group + 1) % 3]
        x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def random_bits_reference(key: np.ndarray, shape) -> np.ndarray:
    """The i32 array random_bits(key) of `shape` computes."""
    key = np.asarray(key).astype(np.int64).astype(np.uint32)
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.uint64).astype(np.uint32)
    x0, _ = threefry2x32(key[0], key[1], np.zeros_like(i), i)
    return x0.view(np.int32).reshape(shape)


def _i32(v: int) -> Const:
    v &= 0xFFFFFFFF
    return Const(DType.i32, v - (1 << 32) if v >= 1 << 31 else v)


def _random_bits_build(ev, op, idx, kids):
    i32 = DType.i32

    def add(a, b):
        return instruction("add", i32, [a, b])

    def rotl(x, r):
        return instruction("bitwise_or", i32, [instruction("shift_left", i32, [x, _i32(r)]),
                                               instruction("shift_right_logical", i32, [x, _i32(32 - r)])])

    k0, k1 = kids
    ks = (k0, k1, instruction("bitwise_xor", i32, [instruction("bitwise_xor", i32, [k0, k1]), _i32(PARITY)]))
    counter = IndexValue(i32, linearize(idx, op.result.shape))
    x0, x1 = ks[0], add(counter, ks[1])  # c0 = 0
    for group in range(5):
        for r in ROTATIONS[4 * (group % 2):4 * (group % 2) + 4]:
            x0 = add(x0, x1)
            x1 = instruction("bitwise_xor", i32, [rotl(x1, r), x0])
        x0 = add(x0, ks[(group + 1) % 3])
        x1 = add(add(x1, ks[(group + 2) % 3]), _i32(group + 1))
    return x0


def _random_bits_infer(types, attrs, declared):
    key = types[0]
    if key.dtype is not DType.i32 or key.shape != (2,):
        raise ShapeError(f"'random_bits' needs a key i32[2], got {key}")
    if not declared or declared[0].dtype is not DType.i32:
        raise ShapeError("'random_bits' needs its result type written out, an i32 tensor")
    return [declared[0]]


register(OpDef(
    name="random_bits", infer=_random_bits_infer,
    reference=lambda xs, op: [random_bits_reference(xs[0], op.result.shape)],
    num_operands=1, declared_type=True, differentiable=False, cost=64,
    reads=lambda op, idx: [(0, (0,)), (0, (1,))], build=_random_bits_build,
    doc="Threefry-2x32 of counter (0, i) under the key, word 0, for each element i (row-major)."))
