"""`ig.onnx.load`: an ONNX model as an irgrad Function `fn(params, *inputs)`.

The initializers of floating type become the parameters (a dict, so the model can be
fine-tuned); integer initializers, and any initializer whose value a node needs at
import (a Reshape's shape, a Resize's scales), are constants. The graph is traced like
DSL code: each node's handler (onnx/ops/) calls the DSL, so shape inference, promotion
and errors are irgrad's own, and each op's `loc` is the node number in the model.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import IrgradError, OnnxError, UnsupportedOnnxError
from ..frontend.function import Function, trace
from ..frontend.specs import TensorSpec
from ..frontend.tensor import as_tensor
from . import dtypes
from .graph import NeedsConstant, Node, Scope, Val, evaluate_constant, normalize_results, tensor_proto_value
from .ops import lookup

MIN_OPSET = 7


def require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise IrgradError("ONNX support needs the onnx package: pip install 'irgrad[onnx]'") from None
    return onnx


def read_model(model):
    """A ModelProto from a path, bytes or a ModelProto; a clear error for anything else."""
    onnx = require_onnx()
    if isinstance(model, onnx.ModelProto):
        return model, (model.graph.name or "<model>") if model.HasField("graph") else "<model>"
    if isinstance(model, (bytes, bytearray)):
        data, name = bytes(model), "<bytes>"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        name = os.path.basename(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise OnnxError(f"cannot read {path}: {e.strerror}") from None
    else:
        raise OnnxError(f"expected a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise OnnxError(f"{name}: not an ONNX model (the protobuf does not parse: {e})") from None
    if not proto.HasField("graph"):
        raise OnnxError(f"{name}: not an ONNX model (it has no graph)")
    if isinstance(model, (str, os.PathLike)) and _has_external_data(proto):
        try:
            from onnx.external_data_helper import load_external_data_for_model
            load_external_data_for_model(proto, os.path.dirname(os.fspath(model)) or ".")
        except Exception as e:  # noqa: BLE001
            raise OnnxError(f"{name}: cannot load its external data: {e}") from None
    return proto, name


def _has_external_data(proto) -> bool:
    return any(t.data_location == 1 for t in proto.graph.initializer)


def check_model(proto, name: str):
    onnx = require_onnx()
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - ValidationError, or a C++ error on odd input
        msg = str(e).strip().splitlines()
        raise OnnxError(f"{name}: not a valid ONNX model: {msg[0] if msg else type(e).__name__}") from None


class Importer:
    def __init__(self, proto, source_name: str, frozen: set[str], constants: dict):
        self.proto, self.source_name = proto, source_name
        self.frozen, self.constants = frozen, constants
        self.node_count = 0
        self.functions = {(f.domain, f.name): f for f in proto.functions}

    def dispatch(self, node: Node) -> list[Val | None]:
        entry = lookup(node.op_type, node.domain, node.opset)
        if entry is None:
            return self.expand(node)
        if entry.fold and all(v is None or v.c is not None for v in node.vals):
            return evaluate_constant(entry.fn, node)
        return normalize_results(entry.fn(node), node)

    def expand(self, node: Node) -> list[Val | None]:
        """Import a node through its function body: a model-local function, or the ONNX
        schema's (context-dependent) function."""
        f = self.functions.get((node.domain, node.op_type))
        if f is None:
            f = _schema_function(node)
        if f is None:
            raise node.fail("this op is not supported" if node.domain in ("", "ai.onnx")
                            else f"domain '{node.domain}' is not supported")
        opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in f.opset_import}
        opsets = {**node.scope._opsets, **opsets}
        sub = Scope(self, None, opsets)
        sub.parent = None
        for i, formal in enumerate(f.input):
            sub.env[formal] = node.vals[i] if i < len(node.vals) else None
        body = [_bind_attrs(n, node, f) for n in f.node] if f.attribute or f.attribute_proto else list(f.node)
        try:
            sub.run_nodes(body)
        except UnsupportedOnnxError as e:
            raise UnsupportedOnnxError(f"{node.desc}: in its function body: {e}") from e
        except OnnxError as e:
            if isinstance(e, NeedsConstant):
                raise
            raise OnnxError(f"{node.desc}: in its function body: {e}") from e
        return [sub.lookup(o, node) if o else None for o in f.output][:node.n_outputs]


def _bind_attrs(n, node: Node, f):
    """A function body's node with `ref_attr_name` attributes replaced by the caller's."""
    if not any(a.ref_attr_name for a in n.attribute):
        return n
    import onnx
    m = onnx.NodeProto()
    m.CopyFrom(n)
    del m.attribute[:]
    defaults = {a.name: a for a in f.attribute_proto}
    for a in n.attribute:
        if a.ref_attr_name:
            src = node._attrs.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
            if src is None:
                continue
            b = m.attribute.add()
            b.CopyFrom(src)
            b.name = a.name
        else:
            m.attribute.add().CopyFrom(a)
    return m


def _schema_function(node: Node):
    import onnx
    import onnx.defs
    try:
        schema = onnx.defs.get_schema(node.op_type, node.opset, node.domain)
    except Exception:  # noqa: BLE001 - no such op in this domain/opset
        return None
    if schema.has_context_dependent_function:
        types = []
        for v in node.vals:
            tp = onnx.TypeProto()
            if v is not None:
                tp.tensor_type.elem_type = v.elem
                for d in v.shape:
                    tp.tensor_type.shape.dim.add().dim_value = d
            types.append(tp.SerializeToString())
        try:
            raw = schema.get_context_dependent_function(node.proto.SerializeToString(), types)
        except Exception:  # noqa: BLE001
            raw = None
        if raw:
            f = onnx.FunctionProto()
            f.ParseFromString(raw)
            return f
    if schema.has_function:
        return schema.function_body
    return None


def _known_ops(proto, name):
    """An op ONNX itself does not know (before the checker says so without the node)."""
    import onnx.defs
    local = {(f.domain, f.name) for f in proto.functions}
    opset = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in proto.opset_import}
    for i, n in enumerate(proto.graph.node, 1):
        dom = n.domain if n.domain != "ai.onnx" else ""
        if dom == "" and (dom, n.op_type) not in local and not onnx.defs.has(n.op_type):
            nm = f" '{n.name}'" if n.name else ""
            raise UnsupportedOnnxError(f"{n.op_type} (node {i}{nm}, opset {opset.get('', '?')}): "
                                       f"no ONNX op of this name (of {name})")


def _input_specs(graph, init_names, input_shapes, constants, name):
    """The graph inputs that are not initializers: names, specs and ONNX element types."""
    inputs = [vi for vi in graph.input if vi.name not in init_names]
    if isinstance(input_shapes, (list, tuple)):
        if len(input_shapes) != len(inputs):
            raise OnnxError(f"{name}: input_shapes has {len(input_shapes)} entries for "
                            f"{len(inputs)} inputs ({', '.join(v.name for v in inputs)})")
        input_shapes = {v.name: s for v, s in zip(inputs, input_shapes)}
    input_shapes = dict(input_shapes or {})
    unknown = set(input_shapes) - {v.name for v in inputs}
    if unknown:
        raise OnnxError(f"{name}: input_shapes names {', '.join(sorted(unknown))}, which the "
                        f"model has no input called (inputs: {', '.join(v.name for v in inputs)})")
    out, unfixed = [], []
    for vi in inputs:
        typ = vi.type
        if typ.HasField("optional_type") and typ.optional_type.elem_type.HasField("tensor_type"):
            typ = typ.optional_type.elem_type  # an optional tensor that is given: a tensor
        if not typ.HasField("tensor_type"):
            kind = vi.type.WhichOneof("value") or "no type"
            raise UnsupportedOnnxError(f"{name}: input '{vi.name}' is a {kind}; irgrad imports "
                                       f"tensor inputs only")
        tt = typ.tensor_type
        elem = tt.elem_type
        dtypes.compute_dtype(elem, f"{name}: input '{vi.name}': ")
        if vi.name in constants:
            out.append((vi.name, None, elem))
            continue
        if vi.name in input_shapes:
            shape = tuple(int(d) for d in input_shapes[vi.name])
            if tt.HasField("shape"):  # the model's fixed dimensions must agree
                dims = tt.shape.dim
                if len(dims) != len(shape):
                    raise OnnxError(f"{name}: input_shapes gives '{vi.name}' rank {len(shape)} "
                                    f"({list(shape)}), the model rank {len(dims)}")
                for k, (d, s) in enumerate(zip(dims, shape)):
                    if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != s:
                        raise OnnxError(f"{name}: input_shapes gives '{vi.name}' dimension {k} "
                                        f"size {s}, but the model fixes it at {d.dim_value}")
        else:
            shape = []
            if not tt.HasField("shape"):
                unfixed.append(f"'{vi.name}' (no shape at all)")
                continue
            for k, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value >= 0:
                    shape.append(int(d.dim_value))
                else:
                    label = f" '{d.dim_param}'" if d.dim_param else ""
                    unfixed.append(f"'{vi.name}' dimension {k}{label}")
                    shape.append(-1)
            shape = tuple(shape)
        out.append((vi.name, TensorSpec(dtypes.compute_dtype(elem), shape) if -1 not in shape else None, elem))
    if unfixed:
        raise OnnxError(f"{name}: symbolic dimensions must be fixed by input_shapes="
                        f"{{name: shape}}: {', '.join(unfixed)}")
    return out


def import_model(proto, name, input_shapes=None, constants=None, check: bool = True):
    """The parts of an OnnxModel: (Function, params, param elems, inputs, output elems, opset)."""
    _known_ops(proto, name)
    if check:
        check_model(proto, name)
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in proto.opset_import}
    import onnx.defs
    newest = onnx.defs.onnx_opset_version()
    op = opsets.get("", None)
    if op is None and not any((n.domain or "") in ("", "ai.onnx") for n in proto.graph.node):
        op = opsets[""] = newest  # only other domains (ai.onnx.preview.training): any opset
    if op is None or not MIN_OPSET <= op <= newest:
        raise UnsupportedOnnxError(f"{name}: opset {op} of the default domain is not supported "
                                   f"(irgrad imports opsets {MIN_OPSET} to {newest})")
    graph = proto.graph
    constants = {k: None if v is None else np.asarray(v) for k, v in (constants or {}).items()}
    init_names = {t.name for t in graph.initializer}
    inputs = _input_specs(graph, init_names, input_shapes, constants, name)
    frozen: set[str] = set()
    for _ in range(len(graph.initializer) + len(inputs) + 1):
        try:
            return _trace_once(proto, name, opsets, inputs, constants, frozen) + (op,)
        except NeedsConstant as e:
            if e.input_name in init_names and e.input_name not in frozen:
                frozen.add(e.input_name)  # a parameter whose value a node needs: a constant
                continue
            raise
    raise OnnxError(f"{name}: cannot decide which initializers are constants")


def _trace_once(proto, name, opsets, inputs, constants, frozen):
    graph = proto.graph
    params, consts = {}, {}
    for tp in graph.initializer:
        c, elem = tensor_proto_value(tp, f"{name}: initializer")
        if dtypes.is_float(elem) and tp.name not in frozen:
            params[tp.name] = (c, elem)
        else:
            consts[tp.name] = Val(c=c, elem=elem)
    imp = Importer(proto, name, frozen, constants)
    out_elems: list[int] = []

    def run_graph(p, *args):
        scope = Scope(imp, None, opsets)
        scope.env.update(consts)
        for k, (c, elem) in params.items():
            scope.env[k] = Val(t=p[k], elem=elem, origin=k)
        it = iter(args)
        for nm, spec, elem in inputs:
            if spec is None:  # given as a constant; an empty optional input is absent
                c = constants[nm]
                scope.env[nm] = None if c is None else Val(c=dtypes.widen(c, elem), elem=elem)
            else:
                scope.env[nm] = Val(t=next(it), elem=elem, origin=nm)
        scope.run_nodes(graph.node)
        outs = []
        for o in graph.output:
            v = scope.lookup(o.name)
            if v is None:
                raise OnnxError(f"{name}: graph output '{o.name}' is not produced")
            out_elems.append(v.elem)
            outs.append(as_tensor(v.tensor()) if v.t is not None else v.tensor())
        return outs[0] if len(outs) == 1 else tuple(outs)

    param_specs = {k: TensorSpec(_dt(c), c.shape) for k, (c, _) in params.items()}
    specs = [s for _, s, _ in inputs if s is not None]
    fn = trace(run_graph, param_specs, *specs, name=_fn_name(graph.name or "model"))
    _name_inputs(fn, [nm for nm, s, _ in inputs if s is not None])
    return fn, {k: c for k, (c, _) in params.items()}, {k: e for k, (_, e) in params.items()}, \
        [(nm, e) for nm, s, e in inputs if s is not None], out_elems


def _dt(c: np.ndarray):
    from ..ir.types import DType
    return DType.from_numpy(c.dtype)


def _fn_name(s: str) -> str:
    import re
    s = re.sub(r"[^A-Za-z0-9_]", "_", s).strip("_") or "model"
    return s if not s[0].isdigit() else f"m_{s}"


def _name_inputs(fn: Function, names: list[str]):
    """IR parameter names after the graph's input names (not run_graph's *args)."""
    import re
    n_params = len(fn.ir.params) - len(names)
    for p, nm in zip(fn.ir.params[n_params:], names):
        p.name = re.sub(r"[^A-Za-z0-9_.]", "_", nm) or p.name
