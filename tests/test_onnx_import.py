"""`ig.onnx.load` from the user's side: round trips, clean errors, a mutation fuzzer, the CLI.

- Round trips: a model imports to IR whose printed text parses back to the same function
  (print -> parse -> print is the identity), and that function, interpreted or compiled
  on the cpu backend, computes what onnx's ReferenceEvaluator computes.
- Errors: a malformed or unsupported model raises an OnnxError (UnsupportedOnnxError for
  what irgrad does not import) whose message names the place: the node (op type, name,
  opset), the input and dimension, the element type.
- Fuzz: small valid models with one to three fields edited (op types, attributes, dims,
  names, element types, opsets, nodes removed or reordered), each loaded and run in a
  worker subprocess (so a crash is caught and named): only IrgradErrors, or results that
  match onnx's ReferenceEvaluator wherever it runs the edited model too.
  IRGRAD_ONNX_FUZZ_CASES sets the number of cases (default 150), IRGRAD_ONNX_FUZZ_SEED the seed.
- CLI: `irgrad dump/run/bench/viz MODEL.onnx`, every error one message and exit status 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import sys
import traceback

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T, helper as h, numpy_helper as nh  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import irgrad as ig  # noqa: E402
from irgrad.onnx import dtypes  # noqa: E402
from case_workers import run_case_workers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
vi = h.make_tensor_value_info


# --- small models -------------------------------------------------------------------------------

def make(nodes, inputs, outputs, inits=(), opset=17, name="g", domains=()):
    graph = h.make_graph(nodes, name, inputs, outputs, list(inits))
    opsets = [h.make_opsetid("", opset)] + [h.make_opsetid(d, 1) for d in domains]
    return h.make_model(graph, opset_imports=opsets)


def init(name, shape, seed=0, dtype=np.float32):
    return nh.from_array(np.random.default_rng(seed).standard_normal(shape).astype(dtype), name)


def ints(name, values):
    return nh.from_array(np.asarray(values, np.int64), name)


def mlp_model():
    """x[3,4] -> MatMul -> Add -> Relu -> Gemm -> Softmax."""
    return make([h.make_node("MatMul", ["x", "w1"], ["a"], "mm"),
                 h.make_node("Add", ["a", "b1"], ["z"], "add"),
                 h.make_node("Relu", ["z"], ["r"], "relu"),
                 h.make_node("Gemm", ["r", "w2", "b2"], ["l"], "fc", transB=1, alpha=0.5),
                 h.make_node("Softmax", ["l"], ["y"], "softmax", axis=-1)],
                [vi("x", T.FLOAT, [3, 4])], [vi("y", T.FLOAT, [3, 2])],
                [init("w1", (4, 5), 1), init("b1", (5,), 2), init("w2", (2, 5), 3), init("b2", (2,), 4)],
                name="mlp")


def cnn_model():
    """x[N,1,6,6] -> Conv -> Relu -> MaxPool -> Flatten -> Gemm, the batch symbolic."""
    return make([h.make_node("Conv", ["x", "w", "b"], ["c"], "conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                 h.make_node("Relu", ["c"], ["r"], "relu"),
                 h.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
                 h.make_node("Flatten", ["p"], ["f"], "flatten", axis=1),
                 h.make_node("Gemm", ["f", "fw", "fb"], ["y"], "fc", transB=1)],
                [vi("x", T.FLOAT, ["N", 1, 6, 6])], [vi("y", T.FLOAT, ["N", 3])],
                [init("w", (2, 1, 3, 3), 5), init("b", (2,), 6), init("fw", (3, 18), 7),
                 init("fb", (3,), 8)], name="cnn")


def shapes_model():
    """Integer constants that shape things: Transpose, Reshape, Slice, Gather, Concat,
    Cast to double, ReduceSum with axes as an input (opset 13), two outputs."""
    return make([h.make_node("Transpose", ["x"], ["t"], "tr", perm=[0, 2, 1]),
                 h.make_node("Reshape", ["t", "shape"], ["r"], "reshape"),
                 h.make_node("Slice", ["r", "starts", "ends", "axes"], ["s"], "slice"),
                 h.make_node("Gather", ["x", "idx"], ["g"], "gather", axis=2),
                 h.make_node("Reshape", ["g", "shape"], ["g2"], "reshape2"),
                 h.make_node("Concat", ["s", "g2"], ["c"], "concat", axis=1),
                 h.make_node("Cast", ["c"], ["d"], "cast", to=T.DOUBLE),
                 h.make_node("ReduceSum", ["d", "raxes"], ["y"], "sum", keepdims=0),
                 h.make_node("Shape", ["c"], ["shp"], "shape")],
                [vi("x", T.FLOAT, [2, 3, 4])],
                [vi("y", T.DOUBLE, [2]), vi("shp", T.INT64, [2])],
                [ints("shape", [0, -1]), ints("starts", [1]), ints("ends", [9]), ints("axes", [1]),
                 ints("idx", [3, 0]), ints("raxes", [1])], opset=13, name="shapes")


MODELS = {"mlp": (mlp_model, None), "cnn": (cnn_model, {"x": (2, 1, 6, 6)}),
          "shapes": (shapes_model, None)}


def random_inputs(m, seed=0):
    """One array per model input, in the ONNX storage dtype (what onnx's evaluator takes)."""
    rng = np.random.default_rng(seed)
    specs = m.fn.specs[len(m.fn.specs) - len(m.input_names):]
    out = []
    for s, e in zip(specs, m.input_elems):
        a = rng.uniform(-2, 2, s.shape) if s.dtype.is_float else rng.integers(0, 3, s.shape)
        out.append(np.asarray(a).astype(dtypes.storage_np(e)))
    return out


def assert_close(got, want, rtol=1e-5, atol=1e-6):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# --- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_import_print_parse_compile_round_trip(name):
    build, shapes = MODELS[name]
    proto = build()
    m = ig.onnx.load(proto, input_shapes=shapes)
    text = str(m.fn.ir)
    parsed = ig.parse(text, f"{name}.ir").functions[m.fn.ir.name]
    assert str(parsed) == text  # print -> parse -> print is the identity
    again = ig.Function(parsed, m.fn.in_tree, m.fn.out_tree)
    xs = random_inputs(m, seed=1)
    want = ReferenceEvaluator(proto).run(None, dict(zip(m.input_names, xs)))
    assert_close(m(*xs), want)  # the imported function on the interpreter
    outs = again(m.params, *[dtypes.widen(x, e) for x, e in zip(xs, m.input_elems)])
    assert_close(m.narrow_outputs(outs), want)  # the parsed one
    if name != "shapes":  # a native compile per model costs a second: two models suffice
        native = ig.compile(again, backend="cpu", pipeline="O2")
        assert_close(m.narrow_outputs(native(m.params, *xs)), want, rtol=1e-4, atol=1e-5)


def test_parameters_are_the_float_initializers_and_can_be_replaced():
    proto = mlp_model()
    m = ig.onnx.load(proto)
    assert sorted(m.params) == ["b1", "b2", "w1", "w2"]
    x = random_inputs(m)[0]
    zero = {k: np.zeros_like(v) for k, v in m.params.items()}
    (y,) = m(x, params=zero)  # all-zero logits: a uniform softmax
    np.testing.assert_allclose(y, np.full((3, 2), 0.5, np.float32))
    shapes = ig.onnx.load(shapes_model())
    assert shapes.params == {}  # int64 initializers are constants, folded into the IR
    assert [p.name for p in shapes.fn.ir.params] == ["x"]


def test_symbolic_batch_imports_at_each_requested_size():
    for batch in (1, 5):
        m = ig.onnx.load(cnn_model(), input_shapes={"x": (batch, 1, 6, 6)})
        (y,) = m(*random_inputs(m))
        assert y.shape == (batch, 3)
    m = ig.onnx.load(cnn_model(), input_shapes=[(4, 1, 6, 6)])  # a list, in input order
    assert m.fn.specs[-1].shape == (4, 1, 6, 6)


# --- clean errors -------------------------------------------------------------------------------

def identity_model(elem=T.FLOAT, dims=(2,), opset=17, **kw):
    return make([h.make_node("Identity", ["x"], ["y"], "id")], [vi("x", elem, list(dims))],
                [vi("y", elem, list(dims))], opset=opset, **kw)


def test_not_a_protobuf_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not an ONNX model\n")
    with pytest.raises(ig.OnnxError, match=r"junk\.onnx: not an ONNX model"):
        ig.onnx.load(str(path))
    with pytest.raises(ig.OnnxError, match="cannot read"):
        ig.onnx.load(str(tmp_path / "missing.onnx"))
    with pytest.raises(ig.OnnxError, match="expected a path, bytes or an onnx.ModelProto"):
        ig.onnx.load(42)


def test_truncated_bytes():
    data = mlp_model().SerializeToString()
    with pytest.raises(ig.OnnxError, match="not an ONNX model"):
        ig.onnx.load(data[:len(data) // 2])
    for cut in range(1, len(data), max(1, len(data) // 40)):  # every cut: an error or a model
        try:
            ig.onnx.load(data[:cut])
        except ig.IrgradError:
            pass


def test_missing_input():
    bad = make([h.make_node("Relu", ["nowhere"], ["y"], "relu")], [vi("x", T.FLOAT, [2])],
               [vi("y", T.FLOAT, [2])])
    with pytest.raises(ig.OnnxError, match="nowhere"):
        ig.onnx.load(bad)
    with pytest.raises(ig.OnnxError, match="'nowhere' is used before any node produces it"):
        ig.onnx.load(bad, check=False)  # the importer's own check, past onnx's checker
    no_output = make([h.make_node("Relu", ["x"], ["r"], "relu")], [vi("x", T.FLOAT, [2])],
                     [vi("y", T.FLOAT, [2])])
    with pytest.raises(ig.OnnxError, match="'y'"):
        ig.onnx.load(no_output, check=False)


def _unsupported_op():
    """A real ONNX op with numeric inputs and no handler or function body in irgrad."""
    from irgrad.onnx.ops import supported_ops
    have = set(supported_ops())
    for op in ("TfIdfVectorizer", "NonMaxSuppression", "RoiAlign", "Unique"):
        if op not in have:
            return op
    pytest.fail("every candidate op is supported now: pick another unsupported one")


def test_unsupported_op_names_op_type_node_and_opset():
    op = _unsupported_op()
    nodes = {"TfIdfVectorizer": h.make_node(op, ["x"], ["y"], "vectorize", mode="TF", min_gram_length=1,
                                            max_gram_length=1, max_skip_count=0,
                                            ngram_counts=[0], ngram_indexes=[0], pool_int64s=[1]),
             "NonMaxSuppression": h.make_node(op, ["x", "x"], ["y"], "vectorize"),
             "RoiAlign": h.make_node(op, ["x", "x", "x"], ["y"], "vectorize"),
             "Unique": h.make_node(op, ["x"], ["y"], "vectorize")}
    m = make([nodes[op]], [vi("x", T.INT64, [4])], [vi("y", T.FLOAT, [1])])
    with pytest.raises(ig.UnsupportedOnnxError) as e:
        ig.onnx.load(m, check=False)
    assert f"{op} (node 1 'vectorize', opset 17)" in str(e.value)
    custom = make([h.make_node("Frobnicate", ["x"], ["y"], "frob", domain="com.example")],
                  [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])], domains=["com.example"])
    with pytest.raises(ig.UnsupportedOnnxError, match=r"Frobnicate \(node 1 'frob', opset 1\): "
                       r"domain 'com.example' is not supported"):
        ig.onnx.load(custom)


def test_unknown_op_fails_cleanly_through_the_checker():
    m = make([h.make_node("FooBar", ["x"], ["y"], "foo")], [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])])
    with pytest.raises(ig.OnnxError, match="FooBar"):
        ig.onnx.load(m)
    with pytest.raises(ig.UnsupportedOnnxError, match=r"FooBar \(node 1 'foo', opset 17\)"):
        ig.onnx.load(m, check=False)


def test_unknown_op_with_the_checker_is_unsupported_and_names_the_node():
    m = make([h.make_node("FooBar", ["x"], ["y"], "foo")], [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])])
    with pytest.raises(ig.UnsupportedOnnxError, match=r"FooBar \(node 1 'foo', opset 17\)"):
        ig.onnx.load(m)


@pytest.mark.parametrize("elem", [T.FLOAT8E4M3FN, T.STRING, T.INT4])
def test_unsupported_dtype(elem):
    label = T.DataType.Name(elem)
    with pytest.raises(ig.UnsupportedOnnxError, match=f"input 'x': ONNX element type {label} is not supported"):
        ig.onnx.load(identity_model(elem))
    w = make([h.make_node("Identity", ["w"], ["y"], "id")], [], [vi("y", elem, [2])],
             [h.make_tensor("w", elem, [2], [b"a", b"b"] if elem == T.STRING else [1, 2])])
    with pytest.raises(ig.UnsupportedOnnxError, match=f"initializer.*{label} is not supported"):
        ig.onnx.load(w)


def test_supported_narrow_dtypes_round_trip_through_widening():
    for elem in (T.FLOAT16, T.INT8, T.UINT8, T.UINT16, T.UINT64, T.BOOL):
        m = ig.onnx.load(identity_model(elem, dims=(3,)))
        x = random_inputs(m, seed=elem)[0]
        (y,) = m(x)
        assert y.dtype == x.dtype and np.array_equal(y, x)


@pytest.mark.parametrize("opset", [1, 6, onnx.defs.onnx_opset_version() + 1])
def test_opset_too_old_or_too_new(opset):
    with pytest.raises(ig.UnsupportedOnnxError, match=f"opset {opset} of the default domain is not "
                       r"supported \(irgrad imports opsets 7 to \d+\)"):
        ig.onnx.load(identity_model(opset=opset), check=False)
    with pytest.raises(ig.OnnxError, match="opset"):
        ig.onnx.load(identity_model(opset=opset))


def test_unfixed_symbolic_dimension_names_the_input_and_dimension():
    m = identity_model(dims=(2, "batch", 3))
    with pytest.raises(ig.OnnxError, match=r"'x' dimension 1 'batch'"):
        ig.onnx.load(m)
    unnamed = identity_model(dims=(2, None))  # neither a value nor a name
    with pytest.raises(ig.OnnxError, match=r"'x' dimension 1"):
        ig.onnx.load(unnamed)
    with pytest.raises(ig.OnnxError, match="no input called"):
        ig.onnx.load(m, input_shapes={"X": (2, 4, 3)})
    with pytest.raises(ig.OnnxError, match="1 entries for 0 inputs|entries"):
        ig.onnx.load(make([h.make_node("Constant", [], ["y"], value_float=1.0)], [],
                          [vi("y", T.FLOAT, [])]), input_shapes=[(1,)])
    assert ig.onnx.load(m, input_shapes={"x": (2, 7, 3)}).fn.specs[0].shape == (2, 7, 3)


def test_input_shapes_cannot_contradict_a_fixed_dimension():
    with pytest.raises(ig.OnnxError, match=r"'x' dimension 0"):
        ig.onnx.load(identity_model(dims=(2, "n")), input_shapes={"x": (5, 3)})


@pytest.mark.parametrize("elem", [T.UINT32, T.UINT64])
def test_shape_of_an_unsigned_tensor_is_int64(elem):
    m = make([h.make_node("Shape", ["x"], ["s"], "shape"), h.make_node("Size", ["x"], ["n"], "size")],
             [vi("x", elem, [2, 3])], [vi("s", T.INT64, [2]), vi("n", T.INT64, [])])
    s, n = ig.onnx.load(m)(np.zeros((2, 3), dtypes.storage_np(elem)))
    assert s.dtype == n.dtype == np.int64 and s.tolist() == [2, 3] and n == 6


def test_shape_errors_inside_the_graph_name_the_node():
    bad = make([h.make_node("MatMul", ["x", "w"], ["y"], "mm")], [vi("x", T.FLOAT, [3, 4])],
               [vi("y", T.FLOAT, [3, 5])], [init("w", (6, 5))])
    with pytest.raises(ig.OnnxError, match=r"MatMul \(node 1 'mm', opset 17\)"):
        ig.onnx.load(bad, check=False)


# --- fuzz ---------------------------------------------------------------------------------------

FUZZ_OPS = ["Relu", "Add", "MatMul", "Gemm", "Conv", "MaxPool", "Reshape", "Transpose", "Softmax",
            "Concat", "Slice", "Gather", "Cast", "Identity", "Flatten", "ReduceSum", "Sigmoid", "Mul",
            "Where", "Shape", "Expand", "Squeeze", "Unsqueeze", "If", "Loop", "Tile", "Pad", "NoSuchOp"]
ATTR_NAMES = ["axis", "axes", "perm", "pads", "kernel_shape", "strides", "to", "keepdims", "transA",
              "dilations", "group", "alpha", "mode", "auto_pad"]


def _names(model):
    g = model.graph
    out = [v.name for v in g.input] + [t.name for t in g.initializer]
    return out + [o for n in g.node for o in n.output]


def mutate(model, rng: random.Random):
    """A copy of `model` with one to three fields edited."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["op", "attr", "attr", "new_attr", "dims", "input_dims", "name", "name",
                           "dtype", "input_dtype", "remove", "swap", "opset"])
        nodes = list(g.node)
        node = rng.choice(nodes) if nodes else None
        if kind == "op" and node is not None:
            node.op_type = rng.choice(FUZZ_OPS)
        elif kind == "attr" and node is not None and node.attribute:
            a = rng.choice(list(node.attribute))
            r = rng.random()
            if r < 0.15:
                node.attribute.remove(a)
            elif a.type == onnx.AttributeProto.INT:
                a.i = rng.choice([-2, -1, 0, 1, 2, 3, 7])
            elif a.type == onnx.AttributeProto.INTS and a.ints:
                k = rng.randrange(len(a.ints))
                if r < 0.5:
                    a.ints[k] = rng.choice([-2, -1, 0, 1, 2, 3, 5])
                elif r < 0.75:
                    a.ints.append(rng.choice([0, 1, 2]))
                else:
                    del a.ints[k]
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = rng.choice([0.0, -1.0, 1e30, float("nan")])
            else:
                a.type = rng.choice([onnx.AttributeProto.INT, onnx.AttributeProto.STRING,
                                     onnx.AttributeProto.FLOATS])
        elif kind == "new_attr" and node is not None:
            name = rng.choice(ATTR_NAMES)
            value = rng.choice([rng.randint(-2, 4), [rng.randint(-1, 3) for _ in range(rng.randint(0, 4))],
                                0.5, "NOTSET", "SAME_UPPER"])
            kept = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            kind = onnx.AttributeProto.INTS if value == [] else None  # an empty list has no type
            node.attribute.extend(kept + [h.make_attribute(name, value, attr_type=kind)])
        elif kind == "dims" and g.initializer:
            t = rng.choice(list(g.initializer))
            if t.dims and rng.random() < 0.6:
                t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 2, 3, 5])
            elif t.dims and rng.random() < 0.5:
                del t.dims[-1]
            else:
                t.dims.append(rng.choice([1, 2]))
        elif kind == "input_dims" and g.input:
            shape = rng.choice(list(g.input)).type.tensor_type.shape
            if shape.dim:
                d = rng.choice(list(shape.dim))
                if rng.random() < 0.7:
                    d.dim_value = rng.choice([0, 1, 2, 3, 7])
                else:
                    d.dim_param = "sym"
        elif kind == "name" and node is not None:
            pool = _names(m) + ["nope", ""]
            if node.input and rng.random() < 0.7:
                node.input[rng.randrange(len(node.input))] = rng.choice(pool)
            elif node.output:
                node.output[rng.randrange(len(node.output))] = rng.choice(pool)
        elif kind == "dtype" and g.initializer:
            rng.choice(list(g.initializer)).data_type = rng.randrange(0, 24)
        elif kind == "input_dtype":
            v = rng.choice(list(g.input) + list(g.output))
            v.type.tensor_type.elem_type = rng.randrange(0, 24)
        elif kind == "remove" and nodes:
            del g.node[rng.randrange(len(nodes))]
        elif kind == "swap" and len(nodes) > 1:
            i, j = rng.sample(range(len(nodes)), 2)
            a, b = onnx.NodeProto(), onnx.NodeProto()
            a.CopyFrom(g.node[i])
            b.CopyFrom(g.node[j])
            g.node[i].CopyFrom(b)
            g.node[j].CopyFrom(a)
        elif kind == "opset":
            m.opset_import[0].version = rng.choice([1, 6, 7, 9, 11, 13, 17, 21, 28, 29, 100])
    return m


def fuzz_cases(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    bases = [(build(), shapes) for build, shapes in MODELS.values()]
    cases = [{"data": b.SerializeToString(), "shapes": s, "check": True, "base": True} for b, s in bases]
    for _ in range(n):
        base, shapes = rng.choice(bases)
        cases.append({"data": mutate(base, rng).SerializeToString(), "shapes": shapes,
                      "check": rng.random() < 0.3, "base": False})
    return cases


def run_case(case: dict) -> tuple[str, str]:
    """("ok" | "rejected" | "FAIL", detail): load, then run on the interpreter; a model that
    runs must compute what onnx's ReferenceEvaluator does (where that runs it at all)."""
    try:
        m = ig.onnx.load(case["data"], input_shapes=case["shapes"], check=case["check"])
        xs = random_inputs(m)
        got = m(*xs)
    except ig.OnnxError as e:
        return "rejected", f"{type(e).__name__}: {str(e)[:200]}"
    except ig.IrgradError as e:  # past import: running it (an argument check, say)
        return "rejected", f"{type(e).__name__}: {str(e)[:200]}"
    except Exception as e:  # noqa: BLE001 - what the test is looking for
        tb = traceback.extract_tb(e.__traceback__)[-3:]
        where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in tb)
        return "FAIL", f"{type(e).__name__}: {str(e)[:200]} (at {where})"
    proto = onnx.ModelProto()
    proto.ParseFromString(case["data"])
    if proto.opset_import[0].version < 13:  # the reference has only opset 13's Softmax, ReduceSum
        return "ok", "not compared (an old opset)"
    try:
        want = ReferenceEvaluator(proto).run(None, dict(zip(m.input_names, xs)))
    except Exception:  # noqa: BLE001 - onnx's evaluator refuses more edited models than irgrad
        return "ok", "the reference refused it"
    # float16 and bfloat16 are computed in f32 and rounded once, at the output (onnx/dtypes.py);
    # the reference rounds after every op
    low = {np.dtype(np.float16): 2e-3}
    low[dtypes.storage_np(T.BFLOAT16)] = 2e-2
    tol = max([low.get(np.asarray(w).dtype, 1e-4) for w in want], default=1e-4)
    try:
        assert_close(got, [np.asarray(w) for w in want], rtol=tol, atol=10 * tol ** 1.25)
    except AssertionError as e:
        return "FAIL", f"differs from onnx's reference: {str(e)[:300]}"
    return "ok", ""


def _fuzz_worker(path: str, start: int) -> None:
    """Run the cases of `path` from `start` on, printing START/DONE lines (see the test)."""
    with open(path, "rb") as f:
        cases = pickle.load(f)
    import warnings
    warnings.simplefilter("ignore")  # numpy's overflow warnings on random inputs
    for i in range(start, len(cases)):
        print(f"START {i}", flush=True)
        with contextlib.redirect_stdout(io.StringIO()):
            outcome, detail = run_case(cases[i])
        print(f"DONE {i} {outcome} {json.dumps(detail)}", flush=True)


CASE_TIMEOUT = 60.0


def test_fuzz_mutated_models_raise_only_irgrad_errors(tmp_path):
    n = int(os.environ.get("IRGRAD_ONNX_FUZZ_CASES", "150"))
    seed = int(os.environ.get("IRGRAD_ONNX_FUZZ_SEED", "13"))
    cases = fuzz_cases(n, seed)
    path = tmp_path / "cases.pkl"
    path.write_bytes(pickle.dumps(cases))
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import test_onnx_import as t; "
            f"t._fuzz_worker(sys.argv[1], int(sys.argv[2]))")
    env = dict(os.environ, PYTHONPATH=REPO, IRGRAD_CACHE="0")
    results = run_case_workers([sys.executable, "-c", code, str(path)], len(cases), env, CASE_TIMEOUT)
    outcomes = {k: v[0] for k, v in results.items()}
    fails = [(i, results[i][1]) for i in sorted(results) if results[i][0].startswith("FAIL")]
    assert not fails, "\n".join(f"case {i} (seed {seed}): {d}" for i, d in fails)
    assert all(outcomes[i] == "ok" for i, c in enumerate(cases) if c["base"]), \
        [results[i] for i, c in enumerate(cases) if c["base"]]
    counts = {o: list(outcomes.values()).count(o) for o in ("ok", "rejected")}
    # the edits are neither all harmless nor all fatal: the fuzzer reaches past the checker
    assert counts["ok"] >= n // 10 and counts["rejected"] >= n // 10, counts


# --- the CLI ------------------------------------------------------------------------------------

def cli(*args) -> tuple[int, str, str]:
    from irgrad.tools import cli as cli_mod
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_mod.main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def cli_error(*args) -> str:
    status, out, err = cli(*args)
    assert status == 1, (status, out, err)
    assert "Traceback" not in err and err.startswith("irgrad: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def cnn_file(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(cnn_model(), str(path))
    return path


def test_cli_dump_and_run_an_onnx_model(cnn_file, tmp_path):
    status, out, err = cli("dump", cnn_file, "--input-shape", "x=2x1x6x6", "-p", "O2")
    assert status == 0, err
    assert out.startswith("func @cnn(%") and "%x: f32[2,1,6,6]" in out and "fused" in out
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    want = ReferenceEvaluator(cnn_model()).run(None, {"x": x})[0]
    # the symbolic batch is taken from the .npz; results saved under the output's name
    status, _, err = cli("run", cnn_file, "--npz", tmp_path / "in.npz", "-o", tmp_path / "out.npz",
                         "--backend", "cpu")
    assert status == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], want, rtol=1e-4, atol=1e-5)
    status, out, err = cli("run", cnn_file, "--npz", tmp_path / "in.npz")
    assert status == 0 and out.startswith("result 0 (y): f32[3,3] =\n"), (out, err)
    status, out, err = cli("run", cnn_file, "--input-shape", "x=1x1x6x6")  # random inputs
    assert status == 0 and "result 0 (y): f32[1,3]" in out and "random" in err


def test_cli_run_takes_shapes_and_needed_values_from_the_npz(tmp_path):
    """A Reshape whose shape is a graph input: `run` takes its value from the .npz (by name
    or position); the commands without inputs say where the value could come from."""
    path = tmp_path / "reshape.onnx"
    onnx.save(make([h.make_node("Reshape", ["x", "s"], ["y"], "rs")],
                   [vi("x", T.FLOAT, ["N", 4]), vi("s", T.INT64, [2])], [vi("y", T.FLOAT, ["A", "B"])]),
              str(path))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.savez(tmp_path / "named.npz", s=np.array([4, 2]), x=x)
    np.savez(tmp_path / "positional.npz", x, np.array([4, 2]))
    for npz in ("named.npz", "positional.npz"):
        status, _, err = cli("run", path, "--npz", tmp_path / npz, "-o", tmp_path / "out.npz")
        assert status == 0, err
        np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["y"], x.reshape(4, 2))
    err = cli_error("dump", path, "--input-shape", "x=2x4")
    assert "Reshape (node 1 'rs', opset 17): input 1 ('s') must be known at import" in err
    assert "--npz" in err and "ig.onnx.load" not in err


def test_cli_run_saves_the_results_of_python_targets_too(tmp_path):
    py = tmp_path / "f.py"
    py.write_text("import irgrad as ig\n@ig.function\ndef f(x: ig.f32[3]):\n    return x * 2.0, x.sum()\n")
    np.savez(tmp_path / "in.npz", x=np.arange(3, dtype=np.float32))
    status, out, err = cli("run", f"{py}:f", "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    assert status == 0 and out == "", (out, err)
    saved = np.load(tmp_path / "out.npz")
    assert saved.files == ["result0", "result1"] and saved["result0"].tolist() == [0, 2, 4]
    assert "OUT.npz" in cli_error("run", f"{py}:f", "-o", tmp_path / "out.txt")


def test_cli_bench_and_viz_an_onnx_model(cnn_file, tmp_path):
    status, out, err = cli("bench", cnn_file, "--input-shape", "x=1x1x6x6", "--pipelines", "O0", "O2",
                           "--backend", "numpy", "--repeat", "1", "--json")
    assert status == 0, err
    assert [r["pipeline"] for r in json.loads(out)] == ["O0", "O2"]
    status, _, err = cli("viz", cnn_file, "--input-shape", "x=1x1x6x6", "-o", tmp_path / "g.dot")
    assert status == 0, err
    assert (tmp_path / "g.dot").read_text().startswith('digraph "cnn"')


def test_cli_onnx_errors_are_one_message(cnn_file, tmp_path):
    err = cli_error("dump", cnn_file)
    assert "'x' dimension 0 'N'" in err and "--input-shape x=1x1x6x6" in err
    for bad in ("x=2x1x6xsix", "2x1x6x6", "=3", "x=2x-1"):
        assert "--input-shape" in cli_error("dump", cnn_file, "--input-shape", bad)
    assert "twice" in cli_error("dump", cnn_file, "--input-shape", "x=1x1x6x6", "--input-shape", "x=2x1x6x6")
    assert "no input called" in cli_error("dump", cnn_file, "--input-shape", "z=1")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    assert "not an ONNX model" in cli_error("run", junk)
    assert "no such file" in cli_error("viz", tmp_path / "missing.onnx")
    unsupported = tmp_path / "unsupported.onnx"
    onnx.save(make([h.make_node("Frobnicate", ["x"], ["y"], "frob", domain="com.example")],
                   [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])], domains=["com.example"]), str(unsupported))
    assert "Frobnicate (node 1 'frob', opset 1)" in cli_error("bench", unsupported)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 1, 5, 6), np.float32))
    assert "'x' has shape ?x1x6x6" in cli_error("run", cnn_file, "--npz", tmp_path / "wrong.npz")
    np.savez(tmp_path / "other.npz", q=np.zeros(3, np.float32))
    assert "no array for the model's input 'x'" in cli_error("run", cnn_file, "--npz", tmp_path / "other.npz",
                                                              "--input-shape", "x=1x1x6x6")
    py = tmp_path / "f.py"
    py.write_text("import irgrad as ig\n@ig.function\ndef f(x: ig.f32[2]):\n    return x\n")
    assert "ONNX models" in cli_error("dump", f"{py}:f", "--input-shape", "x=2")
