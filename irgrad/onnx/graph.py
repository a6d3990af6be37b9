"""Walking an ONNX graph into the function being traced.

Each ONNX value becomes a `Val`: a traced Tensor, or a numpy constant when it is known at
import (initializers that are not parameters, `Constant` nodes, `Shape` of a static shape,
and every node all of whose inputs are constants: those are evaluated at import by
irgrad's own interpreter, so constant subgraphs never reach the IR). A handler of the op
table (onnx/ops/) sees a `Node`: its attributes, its inputs as tensors or, where the op
needs a value at import (Reshape's shape, Slice's starts), as constants.
"""

from __future__ import annotations

import numpy as np

from ..errors import IrgradError, OnnxError, SourceLoc, UnsupportedOnnxError
from ..frontend.tensor import Tensor, TraceContext, as_tensor, const_tensor, current_context
from ..ir.core import Function as IrFunction
from ..ir.interpreter import run_function
from . import dtypes

_REQUIRED = object()


class NeedsConstant(OnnxError):
    """A graph input or parameter feeds a place whose value must be known at import (a
    shape, an axis list). `ig.onnx.load(..., constants={name: array})` supplies it; the
    conformance backend does so with the values a test passes."""

    def __init__(self, message: str, input_name: str):
        super().__init__(message)
        self.input_name = input_name


class Val:
    """One ONNX value: a traced tensor `t` or a constant `c` (numpy, in the IR dtype), its
    ONNX element type `elem`, and for graph inputs and parameters the name they came from."""

    __slots__ = ("t", "c", "elem", "origin", "deps")

    def __init__(self, t=None, c=None, elem: int | None = None, origin: str | None = None):
        self.t, self.c, self.origin = t, c, origin
        # the graph inputs and parameters a computed value depends on: where a node needs
        # its value at import, those are what must become constants
        self.deps: tuple[str, ...] = (origin,) if origin is not None else ()
        dt = (t.dtype if t is not None else None)
        if c is not None:
            self.c = np.asarray(c)
        self.elem = elem if elem is not None else dtypes.of_dtype(
            dt if dt is not None else _dtype_of_array(self.c))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.t.shape) if self.t is not None else tuple(self.c.shape)

    @property
    def dtype(self):
        return self.t.dtype if self.t is not None else _dtype_of_array(self.c)

    def tensor(self) -> Tensor:
        if self.t is not None:
            return self.t
        c = self.c
        if c.size > 1 and _is_splat(c):  # ConstantOfShape's weights: one number, any size
            return const_tensor(c.flat[0], self.dtype, c.shape)
        return const_tensor(c, self.dtype, c.shape)


def _is_splat(c: np.ndarray) -> bool:
    if all(s == 0 for s in c.strides):
        return True
    first = c.flat[0]
    return bool((c == first).all())


def _dtype_of_array(a: np.ndarray):
    from ..ir.types import DType
    return DType.from_numpy(a.dtype)


def _attr_value(a, node_desc: str):
    import onnx
    t = onnx.AttributeProto
    if a.type == t.FLOAT:
        return float(a.f)
    if a.type == t.INT:
        return int(a.i)
    if a.type == t.STRING:
        return a.s.decode("utf-8", "replace")
    if a.type == t.TENSOR:
        return a.t
    if a.type == t.GRAPH:
        return a.g
    if a.type == t.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == t.INTS:
        return [int(x) for x in a.ints]
    if a.type == t.STRINGS:
        return [x.decode("utf-8", "replace") for x in a.strings]
    if a.type == t.TENSORS:
        return list(a.tensors)
    if a.type == t.GRAPHS:
        return list(a.graphs)
    raise UnsupportedOnnxError(f"{node_desc}: attribute '{a.name}' has a type irgrad does not "
                               f"read ({t.AttributeType.Name(a.type)})")


def tensor_proto_value(tp, where: str) -> tuple[np.ndarray, int]:
    """A TensorProto as (array in its IR dtype, ONNX element type)."""
    from onnx import numpy_helper
    elem = tp.data_type
    dtypes.compute_dtype(elem, f"{where}: ")
    try:
        arr = numpy_helper.to_array(tp)
    except Exception as e:  # noqa: BLE001 - a malformed tensor: protobuf/numpy say why
        raise OnnxError(f"{where}: tensor '{tp.name}' cannot be read ({type(e).__name__}: {e})") from None
    return dtypes.widen(arr, elem), elem


class Node:
    """The view of one ONNX node a handler gets."""

    def __init__(self, scope: "Scope", proto, vals: list, index: int):
        self.scope, self.proto, self.vals, self.index = scope, proto, vals, index
        self.op_type, self.domain = proto.op_type, proto.domain or ""
        self.name = proto.name
        self.opset = scope.opset(self.domain)
        self.n_outputs = len(proto.output)
        self._attrs = {a.name: a for a in proto.attribute}

    # --- description and errors ---------------------------------------------------------
    @property
    def desc(self) -> str:
        nm = f" '{self.name}'" if self.name else ""
        return f"{self.op_type} (node {self.index}{nm}, opset {self.opset})"

    def fail(self, message: str) -> UnsupportedOnnxError:
        """An unsupported op, attribute value or dtype."""
        return UnsupportedOnnxError(f"{self.desc}: {message}")

    def error(self, message: str) -> OnnxError:
        """A node that breaks the op's rules (bad shapes, missing inputs)."""
        return OnnxError(f"{self.desc}: {message}")

    # --- attributes ---------------------------------------------------------------------
    def attr(self, name: str, default=_REQUIRED):
        a = self._attrs.get(name)
        if a is None:
            if default is _REQUIRED:
                raise self.error(f"attribute '{name}' is required")
            return default
        return _attr_value(a, self.desc)

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr_tensor(self, name: str) -> Val:
        tp = self.attr(name)
        c, elem = tensor_proto_value(tp, self.desc)
        return Val(c=c, elem=elem)

    # --- inputs -------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self.vals)

    def has(self, i: int) -> bool:
        return i < len(self.vals) and self.vals[i] is not None

    def val(self, i: int) -> Val:
        if not self.has(i):
            raise self.error(f"input {i} is required")
        return self.vals[i]

    def tensor(self, i: int) -> Tensor:
        return self.val(i).tensor()

    def tensors(self) -> list[Tensor]:
        return [v.tensor() for v in self.vals if v is not None]

    def is_const(self, i: int) -> bool:
        return self.has(i) and self.vals[i].c is not None

    def const(self, i: int, default=_REQUIRED) -> np.ndarray:
        """Input i's value at import (Reshape's shape, Slice's starts, ...)."""
        if not self.has(i):
            if default is _REQUIRED:
                raise self.error(f"input {i} is required")
            return default
        v = self.vals[i]
        if v.c is not None:
            return v.c
        what = f"input {i} ('{self.proto.input[i]}')"
        if v.deps:
            src = v.deps[0]
            how = "is" if v.origin is not None else "is computed from"
            raise NeedsConstant(
                f"{self.desc}: {what} must be known at import, but it {how} the graph input or "
                f"parameter '{src}' (pass its value: ig.onnx.load(..., constants="
                f"{{'{src}': array}}))", src)
        raise self.fail(f"{what} must be known at import (irgrad's shapes are static), but it "
                        f"is computed from graph inputs")

    def ints(self, i: int, default=_REQUIRED) -> list[int] | None:
        c = self.const(i, default)
        return c if c is None or c is default else [int(x) for x in np.asarray(c).reshape(-1)]

    def shape(self, i: int) -> tuple[int, ...]:
        return self.val(i).shape

    def dtype(self, i: int):
        return self.val(i).dtype

    def elem(self, i: int) -> int:
        return self.val(i).elem

    # --- outputs ------------------------------------------------------------------------
    def out(self, value, elem: int | None = None) -> Val:
        """A result with an explicit ONNX element type (Cast, Shape, ...)."""
        return _as_val(value, elem)

    def run_graph(self, graph, args: list) -> list:
        """Import subgraph `graph` (If's branches, Loop's body) with `args` (Vals) for its
        inputs, seeing this scope's values; returns its outputs as Vals."""
        sub = Scope(self.scope.importer, self.scope, self.scope._opsets)
        if len(args) != len(graph.input):
            raise self.error(f"its subgraph takes {len(graph.input)} inputs, got {len(args)}")
        for vi, a in zip(graph.input, args):
            sub.env[vi.name] = a
        sub.add_initializers(graph.initializer)
        sub.run_nodes(graph.node)
        return [sub.lookup(o.name, self) for o in graph.output]


def _as_val(x, elem: int | None = None, like: list | None = None) -> Val:
    if isinstance(x, Val):
        if elem is not None:
            x = Val(x.t, x.c, elem, x.origin)
        return x
    if isinstance(x, Tensor):
        t, c = x, None
    elif isinstance(x, (np.ndarray, np.generic)):
        t, c = None, np.asarray(x)
        if c.dtype == np.float16:
            c = c.astype(np.float32)
    else:
        raise TypeError(f"a handler returned {type(x).__name__}")
    v = Val(t, c, elem)
    if elem is None and like:
        for u in like:  # a result computed in an input's IR dtype keeps its ONNX type
            if u is not None and u.dtype is v.dtype:
                v.elem = u.elem
                break
    return v


class Scope:
    """The values of one graph (or subgraph, or function body), falling back to the
    enclosing scope's, as ONNX's lexical scoping says."""

    def __init__(self, importer, parent: "Scope | None", opsets: dict[str, int]):
        self.importer, self.parent, self._opsets = importer, parent, opsets
        self.env: dict[str, Val | None] = {"": None}

    def opset(self, domain: str) -> int:
        return self._opsets.get(domain if domain != "ai.onnx" else "", 1)

    def lookup(self, name: str, node: Node | None = None) -> Val | None:
        s = self
        while s is not None:
            if name in s.env:
                return s.env[name]
            s = s.parent
        where = f"{node.desc}: " if node is not None else ""
        raise OnnxError(f"{where}value '{name}' is used before any node produces it "
                        f"(nodes must be in topological order)")

    def add_initializers(self, inits):
        for tp in inits:
            c, elem = tensor_proto_value(tp, "initializer")
            self.env[tp.name] = Val(c=c, elem=elem)

    def run_nodes(self, nodes):
        for proto in nodes:
            self.run_node(proto)

    def run_node(self, proto):
        imp = self.importer
        imp.node_count += 1
        index = imp.node_count
        try:
            vals = [self.lookup(n, None) if n else None for n in proto.input]
        except OnnxError as e:
            nm = f" '{proto.name}'" if proto.name else ""
            raise OnnxError(f"{proto.op_type} (node {index}{nm}, opset "
                            f"{self.opset(proto.domain or '')}): {e}") from None
        node = Node(self, proto, vals, index)
        ctx = current_context()
        saved = ctx.loc if ctx is not None else None
        if ctx is not None:
            ctx.loc = SourceLoc(imp.source_name, index)
        try:
            outs = imp.dispatch(node)
        except OnnxError:
            raise
        except IrgradError as e:
            raise OnnxError(f"{node.desc}: {e}") from e
        except RecursionError:
            raise OnnxError(f"{node.desc}: the model nests too deeply") from None
        except Exception as e:  # noqa: BLE001 - say which node, never a bare traceback
            raise OnnxError(f"{node.desc}: cannot import ({type(e).__name__}: {e})") from e
        finally:
            if ctx is not None:
                ctx.loc = saved
        for name, v in zip(proto.output, outs):
            if name:
                self.env[name] = v


def evaluate_constant(handler, node: Node) -> list[Val]:
    """Run `handler` on a node whose inputs are all constants, in a function of its own,
    and evaluate that with the interpreter: constant subgraphs are folded at import."""
    ir = IrFunction("fold", [], [])
    with TraceContext(ir):
        res = normalize_results(handler(node), node)
    # a splat constant stays a zero-stride view (ConstantOfShape of a 100M-element weight
    # costs no memory); everything else is evaluated by the interpreter
    for i, v in enumerate(res):
        if v is not None and v.c is None and _splat_const(v.t) is not None:
            res[i] = Val(c=np.broadcast_to(_splat_const(v.t), v.t.shape), elem=v.elem)
    pending = [v for v in res if v is not None and v.c is None]
    if pending:
        ir.set_outputs([v.t.value for v in pending])
        arrays = iter(run_function(ir, []))
        res = [Val(c=next(arrays), elem=v.elem) if v is not None and v.c is None else v
               for v in res]
    return res


def _splat_const(t: Tensor):
    op = t.value.owner
    if getattr(op, "opname", None) == "const":
        v = np.asarray(op.attrs["value"])
        if v.ndim == 0:
            return v
    return None


def normalize_results(res, node: Node) -> list[Val | None]:
    if not isinstance(res, (list, tuple)):
        res = [res]
    out = [None if r is None else _as_val(r, None, node.vals) for r in res]
    deps = tuple(dict.fromkeys(d for v in node.vals if v is not None for d in v.deps))
    for v in out:
        if v is not None and v.c is None and not v.deps:
            v.deps = deps
    if len(out) < node.n_outputs:
        named = [n for n in node.proto.output[len(out):] if n]
        if named:
            raise node.fail(f"optional output(s) {', '.join(named)} are not supported")
        out += [None] * (node.n_outputs - len(out))
    return out


def as_input_tensor(v: Val) -> Tensor:
    return v.tensor()


__all__ = ["Node", "Scope", "Val", "NeedsConstant", "evaluate_constant", "normalize_results",
           "tensor_proto_value", "as_tensor"]
