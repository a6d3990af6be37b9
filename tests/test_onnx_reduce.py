"""ONNX import of reductions, arg-extrema, TopK, the losses, RNN/GRU/LSTM and the
attention family, each compared with onnx's ReferenceEvaluator on small models (and
with ONNX Runtime where the reference ignores an attribute: RNN sequence_lens,
activations, clip)."""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as TP  # noqa: E402

import irgrad.onnx as ox  # noqa: E402
from onnx_one_node import check, model  # noqa: E402
from irgrad.errors import OnnxError  # noqa: E402

RNG = np.random.default_rng(7)


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# --- reductions -----------------------------------------------------------------------------------

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_axes_as_input_and_as_attribute(op):
    x = np.abs(randn(2, 3, 4)) + 0.5 if op == "ReduceLogSum" else randn(2, 3, 4)
    # the axes became an input at opset 13 (ReduceSum) or 18 (the others)
    new = 13 if op == "ReduceSum" else 18
    for axes, keep in (([0, 2], 1), ([-1], 0), ([1], 1)):
        check(model(op, {"x": x}, opset=new, consts={"axes": np.array(axes, np.int64)},
                    keepdims=keep), {"x": x})
        check(model(op, {"x": x}, opset=new - 1 if new == 18 else 11, axes=axes, keepdims=keep),
              {"x": x})
    check(model(op, {"x": x}, opset=new, keepdims=0), {"x": x})  # no axes: everything


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_noop_with_empty_axes_keeps_the_elementwise_part(op):
    x = np.abs(randn(2, 3)) + 0.5
    m = model(op, {"x": x}, opset=18, consts={"axes": np.zeros(0, np.int64)},
              noop_with_empty_axes=1)
    check(m, {"x": x})


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_over_an_empty_set_gives_the_identity(op):
    x = np.zeros((2, 0, 3), np.float32)
    m = model(op, {"x": x}, opset=18, consts={"axes": np.array([1], np.int64)}, keepdims=1)
    if op == "ReduceMean":  # the mean of nothing is NaN (numpy's), not an error
        assert np.isnan(ox.load(m, check=False)(x)[0]).all()
    else:
        check(m, {"x": x})


def test_reduce_prod_handles_zeros_signs_and_integers():
    x = np.array([[-2.0, 0.0, 3.0], [-1.5, -2.0, -0.5], [1e-3, 4.0, 7.0]], np.float32)
    for axes in ([0], [1], [0, 1]):
        check(model("ReduceProd", {"x": x}, consts={"axes": np.array(axes, np.int64)}), {"x": x})
    xi = np.array([[3, -2, 5, 7, -1], [2, 2, 2, 2, 2]], np.int64)  # an odd row length
    check(model("ReduceProd", {"x": xi}, consts={"axes": np.array([1], np.int64)}), {"x": xi})


def test_reduce_integers_and_bools():
    xi = np.array([[1, 2, 4], [-3, 5, 6]], np.int32)
    for op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceSumSquare",
               "ReduceMean"):
        m = model(op, {"x": xi}, consts={"axes": np.array([1], np.int64)}, keepdims=0)
        # (the reference's np.sum(np.square(x)) widens int32 to int64; ONNX keeps int32)
        ref = [(xi * xi).sum(1).astype(np.int32)] if op == "ReduceSumSquare" else None
        check(m, {"x": xi}, ref=ref)
    xb = np.array([[True, False, True], [False, False, False]])
    for op in ("ReduceMax", "ReduceMin"):
        check(model(op, {"x": xb}, opset=20, consts={"axes": np.array([1], np.int64)}),
              {"x": xb})


def test_reduce_narrow_int_max_of_nothing_is_the_narrow_minimum():
    x = np.zeros((0, 2), np.int8)
    m = model("ReduceMax", {"x": x}, consts={"axes": np.array([0], np.int64)}, keepdims=0)
    (got,) = ox.load(m, check=False)(x)
    assert got.dtype == np.int8 and (got == -128).all()


def test_reduce_log_sum_exp_is_stable_and_handles_infinities():
    x = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, -np.inf, -np.inf],
                  [np.inf, 1.0, 2.0]], np.float32)
    (got,) = ox.load(model("ReduceLogSumExp", {"x": x}, consts={"axes": np.array([1], np.int64)},
                           keepdims=0), check=False)(x)
    np.testing.assert_allclose(got, [1000.0 + math.log(2.0), -np.inf, np.inf], rtol=1e-6)


def test_reduce_axes_from_a_graph_input_need_a_constant():
    x = randn(2, 3)
    axes = np.array([1], np.int64)
    m = model("ReduceSum", {"x": x, "axes": axes}, opset=13)
    with pytest.raises(OnnxError, match="must be known at import"):
        ox.load(m, check=False)
    got = ox.load(m, check=False, constants={"axes": axes})(x)
    np.testing.assert_allclose(got[0], x.sum(1, keepdims=True), rtol=1e-6)


# --- ArgMax / ArgMin / TopK -----------------------------------------------------------------------

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_extrema_ties_and_last_index(op):
    x = np.array([[2.0, 5.0, 5.0, -1.0], [-1.0, -1.0, 3.0, -1.0]], np.float32)
    for axis in (0, 1, -1):
        for keep in (0, 1):
            for last in (0, 1):
                check(model(op, {"x": x}, opset=13, axis=axis, keepdims=keep,
                            select_last_index=last), {"x": x})
    xi = np.array([[3, 1, 3], [0, 0, -2]], np.int64)
    check(model(op, {"x": xi}, opset=11, axis=1), {"x": xi})


def test_argmax_finds_the_first_nan():
    x = np.array([[1.0, np.nan, 3.0, np.nan]], np.float32)
    (got,) = ox.load(model("ArgMax", {"x": x}, opset=13, axis=1, keepdims=0), check=False)(x)
    assert got.tolist() == [1]


@pytest.mark.parametrize("largest", [1, 0])
def test_top_k_ties_axis_and_order(largest):
    x = np.array([[3.0, 1.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 5.0, -1.0]], np.float32)
    for k, axis in ((3, 1), (5, -1), (1, 0), (0, 1)):
        check(model("TopK", {"x": x}, n_out=2, opset=11, consts={"k": np.array([k], np.int64)},
                    axis=axis, largest=largest), {"x": x})
    xi = RNG.integers(-3, 3, (3, 6)).astype(np.int32)
    check(model("TopK", {"x": xi}, n_out=2, opset=11, consts={"k": np.array([4], np.int64)},
                largest=largest), {"x": xi})


def test_top_k_opset_7_attribute_and_nan_first():
    x = randn(2, 6)
    check(model("TopK", {"x": x}, n_out=2, opset=7, k=3), {"x": x})
    xn = np.array([[1.0, np.nan, 3.0, -np.inf]], np.float32)
    vals, idx = ox.load(model("TopK", {"x": xn}, n_out=2, opset=11,
                              consts={"k": np.array([4], np.int64)}), check=False)(xn)
    assert idx.tolist() == [[1, 2, 0, 3]]


def test_top_k_long_rows_select_one_at_a_time(monkeypatch):
    from irgrad.onnx.ops import reduce as R
    monkeypatch.setattr(R, "_RANK_LIMIT", 0)  # force the k-round selection
    x = np.round(randn(3, 9), 1)
    x[0, 2] = x[0, 5]  # a tie
    for largest in (1, 0):
        check(model("TopK", {"x": x}, n_out=2, opset=11, consts={"k": np.array([4], np.int64)},
                    largest=largest), {"x": x})


# --- losses ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_losses_weights_and_ignore_index(op, reduction):
    x = randn(3, 4, 2)
    t = np.array([[0, 3], [1, 1], [2, 0]], np.int64)
    w = np.abs(randn(4)) + 0.1
    n_out = 2 if op == "SoftmaxCrossEntropyLoss" else 1
    for weights in (None, w):
        for ii in (None, 1, -5):
            attrs = {"reduction": reduction}
            if ii is not None:
                attrs["ignore_index"] = ii
            tt = t.copy()
            if ii == -5:
                tt[1, 0] = -5  # an ignored target outside [0, C)
            ins = {"x": x, "t": tt, "w": weights}
            check(model(op, ins, n_out=n_out, opset=13, **attrs), ins)


# --- RNN / GRU / LSTM -----------------------------------------------------------------------------

def _rnn_inputs(op, T, B, I, H, D, lens=None, init=False, peep=False, layout=0):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    ins = {"X": randn(*((B, T, I) if layout else (T, B, I))),
           "W": randn(D, gates * H, I) * 0.5, "R": randn(D, gates * H, H) * 0.5,
           "B": randn(D, 2 * gates * H) * 0.5,
           "lens": None if lens is None else np.array(lens, np.int32)}
    shp = (B, D, H) if layout else (D, B, H)
    ins["h0"] = randn(*shp) if init else None
    if op == "LSTM":
        ins["c0"] = randn(*shp) if init else None
        ins["P"] = randn(D, 3 * H) * 0.5 if peep else None
    return ins


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_directions_layout_and_initial_states(op):
    n_out = 3 if op == "LSTM" else 2
    for direction, D in (("forward", 1), ("reverse", 1), ("bidirectional", 2)):
        for layout in (0, 1):
            ins = _rnn_inputs(op, 4, 2, 3, 5, D, init=True, peep=True, layout=layout)
            check(model(op, ins, n_out=n_out, opset=14, hidden_size=5, direction=direction,
                        layout=layout), ins)
    if op == "GRU":
        ins = _rnn_inputs(op, 3, 2, 3, 4, 1)
        check(model(op, ins, n_out=2, opset=14, hidden_size=4, linear_before_reset=1), ins)


def _ort(m, ins):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v for k, v in ins.items() if v is not None})


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_sequence_lens_match_onnxruntime(op):
    # ONNX's reference ignores sequence_lens: ONNX Runtime says what they mean (steps past
    # a length leave the state alone and give Y = 0; reverse starts at length - 1)
    n_out = 3 if op == "LSTM" else 2
    for direction, D in (("forward", 1), ("reverse", 1), ("bidirectional", 2)):
        ins = _rnn_inputs(op, 4, 3, 2, 3, D, lens=[4, 2, 1], init=True)
        m = model(op, ins, n_out=n_out, opset=14, hidden_size=3, direction=direction,
                  out_type=TP.FLOAT)
        check(m, ins, ref=_ort(m, ins), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [
    ("RNN", {"activations": ["LeakyRelu"], "activation_alpha": [0.3], "clip": 0.7}),
    ("RNN", {"direction": "bidirectional", "activations": ["HardSigmoid", "ScaledTanh"],
             "activation_alpha": [0.3, 0.7], "activation_beta": [0.4, 1.5]}),
    ("GRU", {"activations": ["HardSigmoid", "Softsign"], "activation_alpha": [0.3],
             "activation_beta": [0.6]}),
    ("LSTM", {"activations": ["Sigmoid", "Elu", "Softplus"], "activation_alpha": [0.5],
              "clip": 0.5}),
    ("LSTM", {"input_forget": 1}),
    ("LSTM", {"activations": ["Affine", "ThresholdedRelu", "Relu"],
              "activation_alpha": [0.5, 0.1], "activation_beta": [0.2]}),
])
def test_recurrent_activations_and_clip_match_onnxruntime(op, attrs):
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    ins = _rnn_inputs(op, 3, 2, 2, 3, D, peep=op == "LSTM")
    m = model(op, ins, n_out=3 if op == "LSTM" else 2, opset=14, hidden_size=3,
              out_type=TP.FLOAT, **attrs)
    check(m, ins, ref=_ort(m, ins), rtol=1e-4, atol=1e-5)


# --- Attention ------------------------------------------------------------------------------------

def _attention_case(rank=4, b=2, hq=4, hk=2, sq=3, skv=5, d=8, dv=6, past=0, mask=None):
    def t(h, s, n):
        return randn(b, h, s, n) if rank == 4 else randn(b, s, h * n)
    ins = {"Q": t(hq, sq, d), "K": t(hk, skv, d), "V": t(hk, skv, dv)}
    total = skv + past
    if mask == "bool":
        m = RNG.random((sq, total)) > 0.3
        m[1] = False  # a fully masked row
        ins["mask"] = m
    elif mask == "float":
        ins["mask"] = randn(b, 1, sq, total - 1)  # shorter than the keys: padded with -inf
    else:
        ins["mask"] = None
    ins["pk"] = randn(b, hk, past, d) if past else None
    ins["pv"] = randn(b, hk, past, dv) if past else None
    heads = {"q_num_heads": hq, "kv_num_heads": hk} if rank == 3 else {}
    return ins, heads


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_masks_gqa_causal_and_cache(rank, mask, causal):
    for past in (0, 2):
        ins, heads = _attention_case(rank=rank, past=past, mask=mask)
        m = model("Attention", ins, n_out=4 if past else 1, opset=23, is_causal=causal, **heads)
        check(m, ins, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_attention_qk_output_modes_softcap_scale(mode):
    ins, _ = _attention_case(mask="bool")
    for softcap in (0.0, 2.0):
        m = model("Attention", ins, n_out=4, opset=23, qk_matmul_output_mode=mode,
                  softcap=softcap, scale=0.3)
        check(m, ins, rtol=1e-4, atol=1e-5)
    m = model("Attention", ins, n_out=4, opset=23, qk_matmul_output_mode=mode,
              softmax_precision=TP.DOUBLE)
    check(m, ins, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the reference's inf - inf)
def test_attention_fully_masked_rows_are_zero_even_with_nan_scores():
    ins, _ = _attention_case(hq=2, hk=2, mask="bool")
    ins["Q"][0, 0, 1, 0] = np.inf  # row 1 is fully masked: its scores may be NaN
    m = model("Attention", ins, n_out=4, opset=23, qk_matmul_output_mode=3)
    y, _, _, p = check(m, ins, rtol=1e-4, atol=1e-5)
    assert (y[:, :, 1] == 0).all() and (p[:, :, 1] == 0).all()


def test_attention_nonpad_kv_seqlen_and_windows():
    ins, _ = _attention_case(skv=6)
    ins["nonpad"] = np.array([4, 6], np.int64)  # (after the omitted mask and past inputs)
    for causal in (0, 1):
        check(model("Attention", ins, opset=24, is_causal=causal), ins, rtol=1e-4, atol=1e-5)
        for left, right in ((1, -1), (2, 0), (-1, 1)):
            check(model("Attention", ins, opset=25, is_causal=causal, left_window_size=left,
                        right_window_size=right), ins, rtol=1e-4, atol=1e-5)
    del ins["nonpad"]
    for causal in (0, 1):
        check(model("Attention", ins, opset=25, is_causal=causal, left_window_size=1),
              ins, rtol=1e-4, atol=1e-5)


# --- RotaryEmbedding / SwiGLU / LinearAttention ---------------------------------------------------

@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot", [0, 4])
def test_rotary_embedding(interleaved, rot):
    b, s, h, d = 2, 3, 2, 8
    half = (rot or d) // 2
    pos = np.array([[0, 1, 2], [4, 2, 0]], np.int64)
    cache = {"cos": randn(5, half), "sin": randn(5, half)}
    for x, attrs in ((randn(b, h, s, d), {}), (randn(b, s, h * d), {"num_heads": h})):
        ins = {"x": x, **cache, "pos": pos}
        check(model("RotaryEmbedding", ins, opset=23, interleaved=interleaved,
                    rotary_embedding_dim=rot, **attrs), ins)
        ins = {"x": x, "cos": randn(b, s, half), "sin": randn(b, s, half)}
        check(model("RotaryEmbedding", ins, opset=23, interleaved=interleaved,
                    rotary_embedding_dim=rot, **attrs), ins)


def test_swiglu():
    ins = {"a": randn(3, 4) * 4, "b": randn(3, 4)}
    check(model("SwiGLU", ins, opset=28), ins)
    check(model("SwiGLU", ins, opset=28, alpha=1.7), ins)


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_linear_attention(rule):
    b, t, hq, hk, dk, dv = 2, 3, 4, 2, 4, 3
    for per_dim in (False, True):
        ins = {"q": randn(b, t, hq * dk), "k": randn(b, t, hk * dk) * 0.5,
               "v": randn(b, t, hk * dv), "past": randn(b, hk, dk, dv),
               "decay": -np.abs(randn(b, t, hk * dk if per_dim else hk)) if "gated" in rule else None,
               "beta": np.abs(randn(b, t, 1 if per_dim else hk)) if "delta" in rule else None}
        check(model("LinearAttention", ins, n_out=2, opset=27, q_num_heads=hq, kv_num_heads=hk,
                    update_rule=rule), ins, rtol=1e-4, atol=1e-5)
    ins["past"] = None
    check(model("LinearAttention", ins, n_out=2, opset=27, q_num_heads=hq, kv_num_heads=hk,
                update_rule=rule, scale=0.5), ins, rtol=1e-4, atol=1e-5)
