"""The reference interpreter: runs IR on numpy arrays through each op's reference rule.

This defines what every program means; backends and passes are checked against it.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError
from .core import Block, Function
from .registry import get_op
from .types import DType, TensorType


def run_block(block: Block, inputs) -> list[np.ndarray]:
    """Run a block's ops on `inputs` (one array per block argument)."""
    env = dict(zip(block.args, inputs))
    last_use = _last_uses(block)
    with np.errstate(all="ignore"):  # IEEE semantics: 1/0 = inf, log(-1) = nan, no warnings
        for i, op in enumerate(block.ops):
            opdef = get_op(op.opname)
            args = [env[v] for v in op.operands]
            outs = opdef.reference(args, op)
            for r, val in zip(op.results, outs):
                env[r] = _as_typed(val, r.type, op.opname)
            for v in last_use.get(i, ()):
                env.pop(v, None)
        return [env[v] for v in block.outputs]


def _last_uses(block: Block) -> dict[int, list]:
    """op index -> values whose last use is that op (so big intermediates are freed early)."""
    last: dict = {}
    for i, op in enumerate(block.ops):
        for v in op.operands:
            last[v] = i
    keep = set(block.outputs)
    by_op: dict[int, list] = {}
    for v, i in last.items():
        if v not in keep:
            by_op.setdefault(i, []).append(v)
    return by_op


def _as_typed(val, t: TensorType, opname: str) -> np.ndarray:
    arr = np.asarray(val)
    if arr.dtype != t.dtype.np:
        arr = arr.astype(t.dtype.np)
    if arr.shape != t.shape:
        raise AssertionError(f"reference of '{opname}' gave shape {arr.shape}, type says {t}")
    return arr


def run_function(f: Function, args, check: bool = True) -> list[np.ndarray]:
    """Run `f` on flat arguments; returns a list of fresh (writable, owned) arrays."""
    if check:
        args = check_arguments([p.type for p in f.params], [p.name for p in f.params], args,
                               f.name)
    outs = run_block(f.body, args)
    return [np.array(o, copy=True) for o in outs]


def check_arguments(types, names, args, fname: str = "function", native: bool = False):
    """Validate call arguments against parameter types; returns them as numpy arrays.

    Count, shape and dtype must match exactly (no silent casting); Python scalars are
    accepted for scalar parameters of a kind they fit; native callers also require
    C-contiguous arrays. Raises ArgumentError naming the argument.
    """
    if len(args) != len(types):
        raise ArgumentError(f"{fname}() takes {len(types)} argument{'s' * (len(types) != 1)} "
                            f"({', '.join(_pname(n, i) for i, n in enumerate(names))}), "
                            f"got {len(args)}")
    out = []
    for i, (t, name, a) in enumerate(zip(types, names, args)):
        out.append(check_argument(t, _pname(name, i), a, fname, native))
    return out


def _pname(name, i):
    return f"%{name}" if name else f"argument {i}"


def check_argument(t: TensorType, label: str, a, fname: str, native: bool = False) -> np.ndarray:
    if isinstance(a, (bool, int, float)) and not isinstance(a, np.generic):
        if t.shape != ():
            raise ArgumentError(f"{fname}(): {label} expects {t}, got a Python scalar {a!r}")
        ok = (t.dtype is DType.bool) == isinstance(a, bool) and (
            t.dtype.is_float or not isinstance(a, float))
        if not ok:
            raise ArgumentError(f"{fname}(): {label} expects {t}, got {type(a).__name__} {a!r}")
        if t.dtype.is_int and not np.iinfo(t.dtype.np).min <= a <= np.iinfo(t.dtype.np).max:
            raise ArgumentError(f"{fname}(): {label} expects {t}; {a} does not fit in {t.dtype}")
        return np.asarray(a, dtype=t.dtype.np)
    if not isinstance(a, (np.ndarray, np.generic)):
        if hasattr(a, "__array__"):
            a = np.asarray(a)
        else:
            raise ArgumentError(f"{fname}(): {label} expects a numpy array of {t}, "
                                f"got {type(a).__name__}")
    a = np.asarray(a) if isinstance(a, np.generic) else a
    if a.dtype != t.dtype.np:
        raise ArgumentError(f"{fname}(): {label} expects dtype {t.dtype} ({t}), got {a.dtype} "
                            f"with shape {list(a.shape)}")
    if a.shape != t.shape:
        raise ArgumentError(f"{fname}(): {label} expects shape {list(t.shape)} ({t}), "
                            f"got {list(a.shape)}")
    if native and not (a.flags.c_contiguous and a.flags.aligned):
        raise ArgumentError(f"{fname}(): {label} must be C-contiguous and aligned "
                            f"(use np.ascontiguousarray)")
    return a
