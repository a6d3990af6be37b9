"""The ONNX op table: one handler per ONNX op type, in the modules of this package.

A handler takes a `Node` (onnx/graph.py) and returns its results: Tensors traced with the
DSL, numpy constants, or `node.out(value, elem)` where the ONNX element type is not the
one irgrad would infer. `@onnx_op("Relu")` registers one; `since` splits an op whose
semantics changed at an opset version into handlers per range (the newest one whose
`since` is at most the model's opset wins). Ops without a handler but with an ONNX
function body (Celu, Mish, LayerNormalization at old opsets, ...) are imported through
that body (importer.py), so a handler is only needed where a direct lowering is better.
`fold=False` marks ops that must not be evaluated at import even with constant inputs
(random numbers, control flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class OnnxOp:
    op_type: str
    domain: str
    since: int
    fn: Callable
    fold: bool = True


_TABLE: dict[tuple[str, str], list[OnnxOp]] = {}


def onnx_op(*op_types: str, domain: str = "", since: int = 1, fold: bool = True):
    def deco(fn):
        for t in op_types:
            entries = _TABLE.setdefault((domain, t), [])
            entries.append(OnnxOp(t, domain, since, fn, fold))
            entries.sort(key=lambda e: e.since)
        return fn
    return deco


def lookup(op_type: str, domain: str, opset: int) -> OnnxOp | None:
    _load()
    entries = _TABLE.get((domain if domain != "ai.onnx" else "", op_type))
    if not entries:
        return None
    best = None
    for e in entries:
        if e.since <= opset:
            best = e
    return best


def supported_ops() -> list[str]:
    _load()
    return sorted(t for (d, t) in _TABLE if d == "")


_loaded = False


def _load():
    global _loaded
    if not _loaded:
        _loaded = True
        import importlib
        import pkgutil
        for m in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{m.name}")
