"""The ONNX graph `ig.onnx.export` builds (export.py): its nodes, and for every IR value
its ONNX name, or the small tensor that broadcasts to it, or how to build it on first use."""

from __future__ import annotations

import numpy as np

from ..errors import OnnxError
from . import dtypes


class Graph:
    """The ONNX graph being built: nodes, and the ONNX name of every IR value.

    A value is *bound* (`names`: an ONNX name of its full tensor), or *small* (`small`:
    the name and shape of a tensor that numpy-broadcasts to it) and then built in full
    on first use, or *lazy* (`lazy`: a function building it, called on first use)."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list = []
        self.names, self.small, self.lazy = {}, {}, {}
        self.used: set[str] = set()
        self.consts: dict = {}  # (dtype, shape, bytes) -> name: one Constant per distinct value
        self.loc = None  # the op being emitted (its loc becomes the nodes' doc_string)
        self.counter = 0

    def fresh(self) -> str:
        while f"v{self.counter}" in self.used:
            self.counter += 1
        self.used.add(name := f"v{self.counter}")
        return name

    def reserve(self, name: str) -> str:
        base, k = name, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def node(self, op_type: str, inputs, **attrs) -> str:
        """Append a node; returns its output's name."""
        from onnx import helper
        out = self.fresh()
        node = helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{len(self.nodes)}", **attrs)
        if self.loc is not None:
            node.doc_string = str(self.loc)
        self.nodes.append(node)
        return out

    def const(self, value, dtype=None) -> str:
        """A Constant node holding `value` (shared by equal constants)."""
        from onnx import numpy_helper
        a = np.array(value, dtype=dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
        key = (a.dtype.str, a.shape, a.tobytes())
        name = self.consts.get(key)
        if name is None:
            name = self.consts[key] = self.node("Constant", [], value=numpy_helper.from_array(a))
        return name

    def ints(self, values) -> str:
        """A 1-D int64 constant: shapes, axes, pads."""
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1))

    def value(self, v) -> str:
        """The ONNX name of v's full tensor (built now if v was small or lazy)."""
        name = self.names.get(v)
        if name is not None:
            return name
        if v in self.lazy:
            name = self.lazy.pop(v)()
        elif v in self.small:
            s, shape = self.small[v]
            name = s if tuple(shape) == tuple(v.shape) else self.node("Expand", [s, self.ints(v.shape)])
        else:
            raise OnnxError(f"export: {v} is used before it is defined")
        self.names[v] = name
        return name

    def small_form(self, v) -> tuple[str, tuple]:
        """(name, shape) of a tensor that numpy-broadcasts to v: its small form if it has
        one, else v itself."""
        if v in self.small and v not in self.names:
            return self.small[v]
        return self.value(v), tuple(v.shape)

    def bind(self, v, result) -> None:
        """Record an emitter's result: a name (the full tensor), a (name, shape) pair (a
        small form; full when shape is v's), or a function (lazy)."""
        if callable(result):
            self.lazy[v] = result
        elif isinstance(result, tuple):
            name, shape = result
            if tuple(shape) == tuple(v.shape):
                self.names[v] = name
            else:
                self.small[v] = (name, tuple(shape))
        else:
            self.names[v] = result


def unsupported(op, why: str) -> OnnxError:
    return OnnxError(f"cannot export IR op '{op.opname}' to ONNX: {why}")


elem = dtypes.of_dtype  # IR dtype -> ONNX element type
