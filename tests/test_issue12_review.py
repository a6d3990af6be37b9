"""Review of issue 12 (convolutions, ig.random, ig.nn layers, state and keys in a step).

Two kinds of tests:

- regression tests for the bugs found in review (each was a strict xfail with the smallest
  program showing it, and lost its marker when the bug was fixed);
- behaviour checked in review that the other test files do not cover yet: edge shapes
  against torch on the CPU backend, 3-d convs from IR text, hand-written IR of every new op
  through every pass and backend, second-order checks of the cotangent primitives, steps with
  state and key (evaluation before training, threads, determinism), memory-plan edits of a
  conv step, random draws of empty and scalar shapes, bit operations on the native backends.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest

import irgrad as ig
from irgrad.frontend.function import trace
from irgrad.ir.registry import all_ops
from irgrad.transforms.training import _spec_tree, training_step

from cli_runner import REPO, run_cli

from cuda_markers import ARCHS, HAVE_CXX, HAVE_NVRTC, SMEM_LIMIT, needs_cxx, needs_nvrtc  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("private_cache")


def _parse_one(text: str):
    m = ig.parse(textwrap.dedent(text))
    return next(iter(m.functions.values()))


# =============================================================================================
# Bugs
# =============================================================================================

# --- compile_step: evaluation, state structure, key, messages ---------------------------------

def _linear_problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6).astype(np.int32)
    return ig.nn.Linear(4, 3), x, y


def test_evaluate_a_step_without_state_or_key():
    m, x, y = _linear_problem()

    def loss_fn(params, x, y, train=True):
        return ig.cross_entropy(m(params, x), y)

    params = m.init(0)
    step = ig.compile_step(loss_fn, params, ig.optim.SGD(0.1), (ig.f32[6, 4], ig.i32[6]))
    want = float(ig.compile(ig.trace(loss_fn, params, x, y), "numpy")(params, x, y))
    assert step(x, y, train=False) == pytest.approx(want, rel=1e-6)
    np.testing.assert_array_equal(step.params["W"], params["W"])  # nothing changed


def _bn_setup():
    rng = np.random.default_rng(0)
    bn = ig.nn.BatchNorm2d(2)
    x = (rng.standard_normal((3, 2, 2, 2)) * 3 + 5).astype(np.float32)
    return bn, x


def test_new_state_with_a_misspelt_key_is_refused():
    bn, x = _bn_setup()

    def bn_loss(params, x, state, train=True):
        y, new = bn(params, x, state=state, train=train)
        return ig.mean(y * y), {"mean": new["mean"], "Var": new["var"]}

    with pytest.raises(ig.IrgradError, match="state"):
        ig.compile_step(bn_loss, bn.init(), ig.optim.SGD(0.0), (ig.f32[3, 2, 2, 2],),
                        state=bn.init_state())


def test_new_state_with_a_missing_entry_names_the_state():
    bn, x = _bn_setup()

    def bn_loss(params, x, state, train=True):
        y, new = bn(params, x, state=state, train=train)
        return ig.mean(y * y), {"mean": new["mean"]}

    with pytest.raises(ig.IrgradError) as info:
        ig.compile_step(bn_loss, bn.init(), ig.optim.SGD(0.0), (ig.f32[3, 2, 2, 2],),
                        state=bn.init_state())
    assert "donate" not in str(info.value) and "state" in str(info.value)


def test_state_errors_name_the_state():
    bn, x = _bn_setup()
    with pytest.raises(ig.IrgradError, match=r"state\b") as info:
        ig.compile_step(lambda p, x, state: (ig.mean(x), state), bn.init(), ig.optim.SGD(0.1),
                        (ig.f32[3, 2, 2, 2],), state={"mean": [0.0, 0.0], "var": [1.0, 1.0]})
    assert "params" not in str(info.value)


def test_step_key_can_be_reassigned():
    m, x, y = _linear_problem()
    drop = ig.nn.Dropout(0.5)

    def loss_fn(params, x, y, key, train=True):
        return ig.cross_entropy(drop({}, m(params, x), key=key, train=train), y)

    step = ig.compile_step(loss_fn, m.init(0), ig.optim.SGD(0.0), (ig.f32[6, 4], ig.i32[6]),
                           key=ig.random.key(0))
    first = step(x, y)
    step.key = ig.random.key(0)
    assert step(x, y) == first


# --- ig.nn ----------------------------------------------------------------------------------------

def test_nested_sequential_with_state_and_dropout_gets_its_key():
    block = ig.nn.Sequential(ig.nn.Conv2d(2, 2, 3, padding=1), ig.nn.BatchNorm2d(2), ig.nn.Dropout(0.5))
    model = ig.nn.Sequential(block, ig.relu)
    x = np.ones((4, 2, 3, 3), np.float32)
    f = ig.trace(lambda p, s, k, x: model(p, x, state=s, key=k, train=True),
                 model.init(0), model.init_state(), ig.random.key(0), x)
    y, _ = ig.compile(f, "numpy")(model.init(0), model.init_state(), ig.random.key(0), x)
    assert np.asarray(y).shape == (4, 2, 3, 3)


# --- IR text: what the verifier lets through ---------------------------------------------------

INT_WINDOW_INF = """
func @f(%x: i32[4,4]) -> i32[2,2,4,4] {
  %0 = window %x {kernel=[2, 2], stride=[1, 1], dilation=[1, 1], pad_low=[1, 1], pad_high=[0, 0], fill=-inf} : i32[2,2,4,4]
  return %0
}
"""


def test_window_of_integers_with_a_non_finite_fill_is_refused_or_runs():
    _refused_or_runs_alike(INT_WINDOW_INF, np.arange(16, dtype=np.int32).reshape(4, 4) - 8)


def _refused_or_runs_alike(text, *args):
    """Either the verifier refuses the program, or the interpreter and the CPU backend run it
    and agree (either is a fix; an internal error in between is the bug)."""
    try:
        f = _parse_one(text)
    except ig.VerifyError:
        return
    want = np.asarray(ig.compile(f, "numpy")(*args))
    got = np.asarray(ig.compile(f, "cpu")(*args))
    assert got.tobytes() == want.tobytes()


ZERO_KERNEL = """
func @f(%x: f32[1,1,3,3], %w: f32[1,1,0,0]) -> f32[1,1,4,4] {
  %0 = conv %x, %w {stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=1} : f32[1,1,4,4]
  return %0
}
"""


def test_conv_with_a_zero_size_kernel_is_refused_or_runs():
    _refused_or_runs_alike(ZERO_KERNEL, np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 0, 0), np.float32))


def test_window_fill_beyond_float32_is_refused_or_runs():
    _refused_or_runs_alike("""
    func @f(%x: f32[3]) -> f32[1,4] {
      %0 = window %x {kernel=[1], stride=[1], dilation=[1], pad_low=[1], pad_high=[0], fill=1e300} : f32[1,4]
      return %0
    }
    """, np.arange(3, dtype=np.float32))


# --- empty batches, empty axes --------------------------------------------------------------------

def test_conv_of_an_empty_batch_compiles_at_O2():
    x = np.zeros((0, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    f = ig.trace(lambda x, w: ig.conv2d(x, w, padding=1), x, w)
    assert ig.compile(f, "cpu")(x, w).shape == (0, 3, 5, 5)


def test_conv_of_an_empty_batch_works_at_O0():
    x = np.zeros((0, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    f = ig.trace(lambda x, w: ig.conv2d(x, w, padding=1), x, w)
    assert ig.compile(f, "cpu", pipeline="O0")(x, w).shape == (0, 3, 5, 5)
    assert ig.compile(ig.trace(lambda x: ig.max_pool2d(x, 2), x), "cpu")(x).shape == (0, 2, 2, 2)


def test_argmax_over_an_empty_axis_is_refused():
    with pytest.raises(ig.ShapeError):
        ig.trace(lambda x: ig.argmax(x, axis=0), np.zeros((0, 3), np.float32))


# --- ig.random arguments ---------------------------------------------------------------------------

def test_random_shape_may_be_a_numpy_integer():
    assert ig.random.uniform(ig.random.key(0), np.int64(3)).shape == (3,)


def test_random_shape_refuses_float_sizes():
    with pytest.raises(ig.ShapeError):
        ig.random.uniform(ig.random.key(0), (2.5,))


# --- conv and numpy constants ---------------------------------------------------------------------

def test_conv_with_a_numpy_float64_weight_constant():
    w = np.ones((3, 2, 3, 3))  # numpy's default dtype
    x = np.ones((1, 2, 4, 4), np.float32)
    f = ig.trace(lambda x: ig.conv2d(x, w, np.zeros(3)), x)
    np.testing.assert_allclose(ig.compile(f, "numpy")(x), np.full((1, 3, 2, 2), 18.0, np.float32))


# --- documentation ----------------------------------------------------------------------------------

def test_every_registered_op_is_documented():
    doc = open(f"{REPO}/docs/ir.md").read()
    missing = [n for n in sorted(all_ops()) if not re.search(rf"[` ]{n}[` ]", doc)]
    assert not missing, missing


# =============================================================================================
# Verified behaviour not covered elsewhere
# =============================================================================================

# --- edge shapes against torch, values and gradients, CPU backend --------------------------------

EDGE_CASES = {
    # name: (op, x shape, w shape, kwargs)
    "batch1_1x1_image": ("conv2d", (1, 3, 1, 1), (4, 3, 1, 1), {}),
    "kernel_equals_input": ("conv2d", (2, 3, 5, 4), (4, 3, 5, 4), {}),
    "stride_beyond_kernel": ("conv2d", (2, 3, 9, 9), (4, 3, 2, 2), dict(stride=(5, 3), padding=1)),
    "dilation_with_padding": ("conv2d", (1, 2, 7, 8), (3, 2, 3, 2), dict(dilation=(2, 3), padding=(2, 1))),
    "depthwise_multiplier": ("conv2d", (2, 4, 6, 6), (8, 1, 3, 3), dict(groups=4, padding=1, stride=2)),
    "same_even_kernel": ("conv2d", (1, 2, 6, 6), (3, 2, 4, 2), dict(padding="same")),
    "unused_last_rows": ("conv2d", (1, 2, 8, 8), (2, 2, 3, 3), dict(stride=3)),
    "conv1d_every_option": ("conv1d", (2, 4, 11), (6, 2, 3), dict(stride=2, padding=3, dilation=2, groups=2)),
    "conv1d_length1": ("conv1d", (1, 3, 1), (2, 3, 1), dict(stride=3)),
    "transpose_output_padding_groups": ("conv_transpose2d", (2, 4, 3, 3), (4, 3, 3, 3),
                                        dict(stride=2, padding=1, output_padding=1, groups=2)),
    "transpose_crop": ("conv_transpose2d", (1, 2, 5, 5), (2, 3, 3, 3), dict(padding=2)),
    "transpose_depthwise": ("conv_transpose2d", (1, 3, 4, 4), (3, 1, 2, 2), dict(stride=2, groups=3)),
    "max_pool_stride1_padded": ("max_pool2d", (1, 2, 5, 5), None, dict(kernel_size=3, stride=1, padding=1)),
    "avg_pool_stride_beyond_kernel": ("avg_pool2d", (1, 1, 7, 7), None, dict(kernel_size=2, stride=3, padding=1)),
    "avg_pool_rectangular": ("avg_pool2d", (1, 1, 6, 7), None, dict(kernel_size=(2, 4), stride=(1, 2), padding=(1, 2))),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_shapes_match_torch_values_and_gradients(name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    op, xs, ws, kw = EDGE_CASES[name]
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(xs).astype(np.float32)]
    if ws is not None:
        args.append(rng.standard_normal(ws).astype(np.float32))
    targs = [torch.tensor(a, requires_grad=True) for a in args]
    out = getattr(F, op)(*targs, **kw)
    r = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    loss = (out * torch.tensor(r)).sum()
    loss.backward()
    fn = getattr(ig, op)
    f = ig.trace(lambda *a: ig.sum(fn(*a, **kw) * r), *args)
    vg = ig.value_and_grad(f, argnums=tuple(range(len(args))))
    value, grads = ig.compile(vg, "cpu")(*args)
    assert float(value) == pytest.approx(loss.item(), rel=1e-4, abs=1e-4)
    for g, t in zip(grads, targs):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-4)


# --- a 3-d conv from IR text --------------------------------------------------------------------

CONV3D = """
func @c3(%x: f32[2,4,5,6,4], %w: f32[6,2,3,2,2]) -> f32[2,6,2,7,3] {
  %0 = conv %x, %w {stride=[2, 1, 2], dilation=[1, 2, 1], pad_low=[1, 1, 1], pad_high=[0, 2, 1], groups=2} : f32[2,6,2,7,3]
  return %0
}
"""


def test_conv3d_from_ir_text_matches_torch_with_every_algorithm():
    torch = pytest.importorskip("torch")
    f = _parse_one(CONV3D)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 6, 4)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2, 2)).astype(np.float32)
    xp = np.pad(x, [(0, 0), (0, 0), (1, 0), (1, 2), (1, 1)])
    want = torch.nn.functional.conv3d(torch.tensor(xp), torch.tensor(w), stride=(2, 1, 2),
                                      dilation=(1, 2, 1), groups=2).numpy()
    np.testing.assert_allclose(ig.compile(f, "numpy", pipeline="O0")(x, w), want, rtol=1e-4, atol=1e-4)
    for pipeline in ("O2", "expand{conv=direct},O2", "expand{conv=batched},O2"):
        np.testing.assert_allclose(ig.compile(f, "cpu", pipeline=pipeline)(x, w), want,
                                   rtol=1e-4, atol=1e-4, err_msg=pipeline)
    f64 = _parse_one(CONV3D.replace("f32", "f64"))
    ig.check_grads(f64, [x.astype(np.float64), w.astype(np.float64)], order=2, modes=("fwd", "rev"))


# --- every new op in hand-written IR: every pass round-trips, every backend agrees -----------------

ALL_NEW_OPS = """
func @f(%x: f32[2,2,5,5], %w: f32[4,1,3,3], %g: f32[2,4,3,3], %k: i32[2], %a: i32[4], %b: i32[4]) -> (f32[2,4,3,3], f32[4,1,3,3], f32[2,2,5,5], f32[2,2,2,2,4,4], f32[2,2,5,5], i32[3,4], i32[4], i32[4], i32[4], f32[2,2,2,2,3,4], f32[2,4,2,2]) {
  %0 = conv %x, %w {stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2} : f32[2,4,3,3]
  %1 = conv_weight_grad %x, %g {kernel=[3, 3], stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2} : f32[4,1,3,3]
  %2 = conv_input_grad %g, %w {size=[5, 5], stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2} : f32[2,2,5,5]
  %3 = window %x {kernel=[2, 2], stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], fill=nan} : f32[2,2,2,2,4,4]
  %4 = window_transpose %3 {kernel=[2, 2], stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], size=[5, 5]} : f32[2,2,5,5]
  %5 = random_bits %k : i32[3,4]
  %6 = bitwise_xor %a, %b : i32[4]
  %7 = shift_left %a, %b : i32[4]
  %8 = shift_right_logical %a, %b : i32[4]
  %9 = reverse %x {axes=[2, 3]} : f32[2,2,5,5]
  %10 = window %9 {kernel=[2, 2], stride=[2, 1], dilation=[2, 1], pad_low=[1, -1], pad_high=[1, 1], fill=-inf} : f32[2,2,2,2,3,4]
  %11 = conv %x, %w {stride=[2, 2], dilation=[1, 1], pad_low=[-1, 1], pad_high=[2, -1], groups=2} : f32[2,4,2,2]
  return %0, %1, %2, %3, %4, %5, %6, %7, %8, %10, %11
}
"""


def _same(got, want, where):
    for i, (a, b) in enumerate(zip(got, want)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, (where, i)
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, equal_nan=True, err_msg=f"{where} #{i}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{where} #{i}")


def test_every_new_op_in_ir_text_round_trips_after_every_pass_and_runs_alike():
    m = ig.parse(ALL_NEW_OPS)
    f = m.functions["f"]
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(p.type.shape).astype(p.type.dtype.np) if p.type.dtype.is_float
            else rng.integers(-100, 100, p.type.shape).astype(p.type.dtype.np) for p in f.params]
    want = ig.compile(f, "numpy", pipeline="O0")(*args)
    singles = ["expand", "expand{conv=direct}", "expand{conv=batched}", "expand{input-grad=flip}",
               "constant-fold", "simplify", "cse", "dce", "fuse", "plan-memory"]
    for p in singles + ["O1", "O2", "O2,O2"]:
        text = str(ig.run_pipeline(m, p))
        assert str(ig.parse(text)) == text, p
    for p in ("O2", "expand{conv=direct},O2", "expand{input-grad=flip},O2"):
        g = ig.parse(str(ig.run_pipeline(m, p))).functions["f"]
        _same(ig.compile(g, "numpy", pipeline="O0")(*args), want, f"numpy {p}")
        _same(ig.compile(g, "cpu", pipeline="O0")(*args), want, f"cpu {p}")
    if HAVE_CXX:
        _same(ig.compile(f, "cuda", device="emulate")(*args), want, "cuda emulate O2")


# --- the cotangent primitives to second order, hand-written, negative padding ---------------------

COTANGENTS = """
func @cig(%g: f64[2,4,2,3], %w: f64[4,1,3,2]) -> f64[2,2,5,6] {
  %0 = conv_input_grad %g, %w {size=[5, 6], stride=[2, 2], dilation=[1, 2], pad_low=[0, 1], pad_high=[1, 0], groups=2} : f64[2,2,5,6]
  return %0
}
func @cwg(%x: f64[2,2,5,6], %g: f64[2,4,2,3]) -> f64[4,1,3,2] {
  %0 = conv_weight_grad %x, %g {kernel=[3, 2], stride=[2, 2], dilation=[1, 2], pad_low=[0, 1], pad_high=[1, 0], groups=2} : f64[4,1,3,2]
  return %0
}
func @wt(%c: f64[2,2,3,3,2]) -> f64[2,5,5] {
  %0 = window_transpose %c {kernel=[2, 3], stride=[1, 2], dilation=[2, 1], pad_low=[-1, 1], pad_high=[1, 0], size=[5, 5]} : f64[2,5,5]
  return %0
}
func @crop(%x: f64[1,1,6,6], %w: f64[1,1,2,2]) -> f64[1,1,4,6] {
  %0 = conv %x, %w {stride=[1, 1], dilation=[1, 1], pad_low=[-1, 1], pad_high=[0, 0], groups=1} : f64[1,1,4,6]
  return %0
}
"""


@pytest.mark.parametrize("name", ["cig", "cwg", "wt", "crop"])
def test_cotangent_primitives_second_order_from_ir_text(name):
    f = ig.parse(COTANGENTS).functions[name]
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(p.type.shape) for p in f.params]
    ig.check_grads(f, args, order=2, modes=("fwd", "rev"))
    ig.check_grads(f, args, order=1, modes=("fwd", "rev"), backend="cpu")


def test_second_order_through_edge_transposed_convs_and_pools():
    rng = np.random.default_rng(3)
    cases = [
        (lambda x, w: ig.conv_transpose2d(x, w, stride=(2, 3), padding=(0, 1), output_padding=(1, 2), groups=2),
         [(2, 2, 2, 2), (2, 2, 2, 3)]),
        (lambda x, w: ig.conv_transpose2d(x, w, stride=2, groups=3), [(1, 3, 2, 2), (3, 1, 2, 2)]),
        (lambda x, w: ig.conv2d(x, w, groups=3, dilation=2, padding=2, stride=2), [(1, 3, 5, 5), (3, 1, 2, 2)]),
        (lambda x: ig.avg_pool2d(x, 3, stride=1, padding=1), [(1, 1, 4, 4)]),
    ]
    for fn, shapes in cases:
        args = [rng.standard_normal(s) for s in shapes]
        ig.check_grads(ig.trace(fn, *args), args, order=2, modes=("fwd", "rev"))
    # max pooling with distinct values (no ties), stride 1 with padding and stride > kernel
    x = (rng.permutation(49) * 0.1).reshape(1, 1, 7, 7)
    for fn in (lambda x: ig.max_pool2d(x, 3, stride=1, padding=1),
               lambda x: ig.max_pool2d(x, 2, stride=3, padding=1)):
        ig.check_grads(ig.trace(fn, x), [x], order=2, modes=("fwd", "rev"))


# --- compile_step with state and key --------------------------------------------------------------

def _bn_dropout_model():
    return ig.nn.Sequential(ig.nn.Conv2d(2, 4, 3, padding=1), ig.nn.BatchNorm2d(4), ig.relu,
                            ig.nn.Dropout(0.3), ig.nn.Flatten(), ig.nn.Linear(4 * 5 * 5, 3))


def _bn_dropout_step(backend, lr=0.1, seed=0, **options):
    model = _bn_dropout_model()

    def loss_fn(params, x, y, state, key, train=True):
        logits, new = model(params, x, state=state, key=key, train=train)
        return ig.cross_entropy(logits, y), new

    step = ig.compile_step(loss_fn, model.init(0), ig.optim.SGD(lr), (ig.f32[6, 2, 5, 5], ig.i32[6]),
                           backend=backend, state=model.init_state(), key=ig.random.key(seed), **options)
    return model, step


def _copy_tree(tree):
    return {k: _copy_tree(v) if isinstance(v, dict) else np.array(v) for k, v in tree.items()}


def _batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 2, 5, 5)).astype(np.float32), rng.integers(0, 3, 6).astype(np.int32)


@pytest.mark.parametrize("backend,options", [("numpy", {}), ("cpu", {}), ("cpu", {"threads": 2})],
                         ids=["numpy", "cpu", "cpu-2-threads"])
def test_evaluation_before_training_changes_nothing_and_uses_running_statistics(backend, options):
    model, step = _bn_dropout_step(backend, **options)
    x, y = _batch()
    before = (_copy_tree(step.params), _copy_tree(step.state), np.array(step.key))
    e0 = step(x, y, train=False)
    assert step.evaluate(x, y) == e0
    for got, want in zip((step.params, step.state), before[:2]):
        for k in want:
            for kk in want[k]:
                np.testing.assert_array_equal(got[k][kk], want[k][kk])
    np.testing.assert_array_equal(step.key, before[2])
    # the evaluation-mode model on the initial state (running mean 0, variance 1)
    ev = ig.trace(lambda p, s, x, y: ig.cross_entropy(model(p, x, state=s, train=False)[0], y),
                  model.init(0), model.init_state(), x, y)
    assert e0 == pytest.approx(float(ig.compile(ev, "numpy")(model.init(0), model.init_state(), x, y)), rel=1e-5)
    # after training the state moved and evaluation sees it
    step(x, y)
    assert not np.array_equal(step.state["1"]["mean"], before[1]["1"]["mean"])
    assert not np.array_equal(step.key, before[2])
    assert step(x, y, train=False) != e0


def test_steps_from_one_seed_agree_across_threads_and_a_new_state_is_used():
    _, a = _bn_dropout_step("cpu")
    _, b = _bn_dropout_step("cpu", threads=2)
    _, c = _bn_dropout_step("cpu", seed=1)
    x, y = _batch()
    la, lb, lc = ([s(x, y) for _ in range(3)] for s in (a, b, c))
    assert la == lb  # bit for bit: the same masks, the same arithmetic
    assert la != lc
    np.testing.assert_array_equal(a.key, b.key)
    # assigning a whole sub-dict of the state, then one entry, reaches evaluation
    e = a.evaluate(x, y)
    a.state["1"] = {"mean": np.full(4, 5, np.float32), "var": np.full(4, 3, np.float32)}
    e2 = a.evaluate(x, y)
    assert e2 != e
    a.state["1"]["mean"] = np.zeros(4, np.float32)
    np.testing.assert_array_equal(a.state["1"]["mean"], np.zeros(4, np.float32))
    assert a.evaluate(x, y) != e2


@needs_cxx
def test_state_and_key_step_on_emulated_cuda_matches_cpu():
    _, cpu = _bn_dropout_step("cpu")
    _, emu = _bn_dropout_step("cuda", device="emulate")
    x, y = _batch()
    e_cpu, e_emu = cpu(x, y, train=False), emu(x, y, train=False)
    assert e_emu == pytest.approx(e_cpu, rel=1e-5)
    np.testing.assert_allclose([emu(x, y) for _ in range(3)], [cpu(x, y) for _ in range(3)], rtol=1e-5)
    np.testing.assert_array_equal(emu.key, cpu.key)  # the same keys: the same masks
    np.testing.assert_allclose(emu.state["1"]["var"], cpu.state["1"]["var"], rtol=1e-5)
    emu.state["1"] = {"mean": np.zeros(4, np.float32), "var": np.ones(4, np.float32)}
    cpu.state["1"] = {"mean": np.zeros(4, np.float32), "var": np.ones(4, np.float32)}
    assert emu.evaluate(x, y) == pytest.approx(cpu.evaluate(x, y), rel=1e-5)


def test_training_step_with_state_and_key_round_trips_after_every_pass():
    model = ig.nn.Sequential(ig.nn.Conv2d(2, 4, 3, padding=1), ig.nn.BatchNorm2d(4), ig.relu,
                             ig.nn.MaxPool2d(2, padding=1), ig.nn.Dropout(0.3), ig.nn.AvgPool2d(3, 1, 1),
                             ig.nn.Flatten(), ig.nn.Linear(4 * 4 * 4, 3))

    def loss(params, state, key, x, y):
        logits, new = model(params, x, state=state, key=key, train=True)
        return ig.cross_entropy(logits, y), new

    lf = trace(loss, _spec_tree(model.init(0)), _spec_tree(model.init_state()), ig.i32[2],
               ig.f32[3, 2, 6, 6], ig.i32[3])
    fn = training_step(lf, ig.optim.Adam(1e-3), state=True, key=True)
    # (params, opt_state, state, key, *batch) -> (loss, params, opt_state, state, next key)
    key_param = fn.ir.params[-3]
    assert str(key_param.type) == "i32[2]"
    assert fn.ir.attrs["donate"][-1] == len(fn.ir.params) - 3  # the next key overwrites the key
    cur = ig.parse(str(fn.ir))
    for p in ["expand{input-grad=flip}", "constant-fold", "simplify", "cse", "dce", "fuse{max-ops=8}",
              "plan-memory"]:
        cur = ig.run_pipeline(cur, p)
        text = str(cur)
        assert str(ig.parse(text)) == text, p


def test_nested_sequential_of_random_layers_splits_the_key():
    model = ig.nn.Sequential(ig.nn.Sequential(ig.nn.Dropout(0.5)), ig.nn.Dropout(0.5))
    x = np.ones((8, 64), np.float32)
    f = ig.trace(lambda k, x: model({}, x, key=k, train=True), ig.random.key(0), x)
    y = np.asarray(ig.compile(f, "numpy")(ig.random.key(0), x))
    assert set(np.unique(y)) <= {0.0, 4.0}
    assert abs((y == 0).mean() - 0.75) < 0.06  # two independent masks
    ev = ig.trace(lambda k, x: model({}, x, key=k, train=False), ig.random.key(0), x)
    np.testing.assert_array_equal(ig.compile(ev, "numpy")(ig.random.key(0), x), x)


# --- memory plans of a conv step: every edit the verifier accepts computes the right thing ---------

def _conv_step_o2():
    rng = np.random.default_rng(0)
    params = {"w1": (rng.standard_normal((4, 2, 3, 3)) * 0.3).astype(np.float32),
              "b1": np.zeros(4, np.float32),
              "w2": (rng.standard_normal((4, 2, 3, 3)) * 0.3).astype(np.float32)}

    def loss(p, x):
        h = ig.relu(ig.conv2d(x, p["w1"], p["b1"], padding=1))
        h = ig.max_pool2d(h, 2, padding=1)
        h = ig.conv2d(h, p["w2"], stride=2, groups=2)
        return ig.mean(ig.square(h))

    fn = training_step(trace(loss, _spec_tree(params), ig.f32[3, 2, 8, 8]), ig.optim.SGD(0.1, momentum=0.9))
    return str(ig.run_pipeline(fn.ir, "O2"))


def test_hand_edited_plans_of_a_conv_step_are_refused_or_right():
    text = _conv_step_o2()
    f = ig.parse(text).functions[next(iter(ig.parse(text).functions))]
    rng = np.random.default_rng(0)
    args = [(rng.standard_normal(p.type.shape) * 0.3).astype(np.float32) for p in f.params]
    want = ig.compile(f, "numpy", pipeline="O0")(*[a.copy() for a in args])
    offsets = sorted({int(m.group(1)) for m in re.finditer(r"mem\[(\d+)", text)})
    arena = int(re.search(r"arena_bytes=(\d+)", text).group(1))
    mutants = []
    for m in re.finditer(r"mem\[(\d+)", text):
        for new in offsets + [arena - 64, arena]:
            if new != int(m.group(1)):
                mutants.append(text[:m.start(1)] + str(new) + text[m.end(1):])
    for m in re.finditer(r" scratch\[\d+\]", text):
        mutants.append(text[:m.start()] + text[m.end():])
    mutants.append(re.sub(r"arena_bytes=\d+", f"arena_bytes={arena - 64}", text))
    mutants.append(re.sub(r"donate=\[[^\]]*\]", "donate=[-1, 0, 0, 2, 3, 4, 5]", text))
    picked = [mutants[i] for i in np.random.default_rng(1).choice(len(mutants), 40, replace=False)]
    accepted = refused = 0
    for t in picked:
        try:
            g = next(iter(ig.parse(t).functions.values()))
        except ig.VerifyError:
            refused += 1
            continue
        accepted += 1
        got = ig.compile(g, "cpu", pipeline="O0")(*[a.copy() for a in args])
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert refused > accepted  # most edits break the plan, and the verifier says so


# --- IR text errors on the command line: exit 1, one message, a caret ------------------------------

BAD_CONV_ATTRS = {
    "stride_count": "stride=[1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2",
    "zero_stride": "stride=[0, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2",
    "negative_dilation": "stride=[1, 1], dilation=[-1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2",
    "groups_not_dividing": "stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=3",
    "groups_missing": "stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0]",
    "groups_float": "stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2.0",
    "stride_not_a_list": "stride=1, dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=2",
    "huge_groups": "stride=[1, 1], dilation=[1, 1], pad_low=[0, 0], pad_high=[0, 0], groups=99999999999999999999999",
}


def test_bad_conv_attributes_on_the_command_line(tmp_path):
    for name, attrs in BAD_CONV_ATTRS.items():
        (tmp_path / f"{name}.ir").write_text(
            "func @f(%x: f32[1,2,5,5], %w: f32[4,1,3,3]) -> f32[1,4,3,3] {\n"
            f"  %0 = conv %x, %w {{{attrs}}} : f32[1,4,3,3]\n"
            "  return %0\n}\n")
    # one process checks them all (each one a readable VerifyError or ParseError) ...
    for name in BAD_CONV_ATTRS:
        with pytest.raises((ig.VerifyError, ig.ParseError)) as info:
            ig.parse((tmp_path / f"{name}.ir").read_text())
        assert "^" in str(info.value) and ":2:" in str(info.value), name
    # ... and the command line says the same with exit status 1 and no traceback
    for name in ("zero_stride", "groups_not_dividing", "groups_float"):
        for cmd in (["check"], ["opt", "-p", "O2"]):
            r = run_cli(tmp_path, *cmd, f"{name}.ir", ok=False)
            assert r.returncode == 1, (name, cmd, r.stderr)
            assert "Traceback" not in r.stderr and f"{name}.ir:2:" in r.stderr and "^" in r.stderr


def test_window_fills_round_trip_and_agree_on_the_backends():
    for fill in ("-inf", "nan", "-0.0", "1e-45", "3.4028235e+38"):
        f = _parse_one(f"""
        func @f(%x: f32[3]) -> f32[1,4] {{
          %0 = window %x {{kernel=[1], stride=[1], dilation=[1], pad_low=[1], pad_high=[0], fill={fill}}} : f32[1,4]
          return %0
        }}""")
        assert str(ig.parse(str(f))) == str(f)
        x = np.arange(3, dtype=np.float32)
        want = np.asarray(ig.compile(f, "numpy")(x))
        assert want[0, 0].tobytes() == np.float32(float(fill)).tobytes(), fill
        for pipeline in ("O0", "O2"):
            got = np.asarray(ig.compile(f, "cpu", pipeline=pipeline)(x))
            assert got.tobytes() == want.tobytes(), (fill, pipeline)


# --- ig.random: scalar and empty shapes, seeds, keys inside traces, fused consumers ---------------

def test_random_scalar_and_empty_draws_traced_and_eager():
    k = ig.random.key(3)
    for draw in (lambda k, s: ig.random.bits(k, s), lambda k, s: ig.random.uniform(k, s),
                 lambda k, s: ig.random.normal(k, s, "f64"), lambda k, s: ig.random.bernoulli(k, 0.3, s)):
        for shape in ((), (0,), (3, 0)):
            eager = draw(k, shape)
            assert eager.shape == shape
            f = ig.trace(lambda kk: draw(kk, shape), k)
            for be in ("numpy", "cpu"):
                got = np.asarray(ig.compile(f, be)(k))
                assert got.shape == shape and got.dtype == eager.dtype
                np.testing.assert_array_equal(got, eager)
    # seeds: every 64-bit pattern, negative ones as their two's complement (JAX's words)
    assert ig.random.key(2 ** 64 - 1).tolist() == ig.random.key(-1).tolist() == [-1, -1]
    assert ig.random.key(-2 ** 63).tolist() == [-2 ** 31, 0]
    assert ig.random.key(np.uint64(2 ** 64 - 1)).tolist() == [-1, -1]
    with pytest.raises(ig.ShapeError, match="64 bits"):
        ig.random.key(-2 ** 63 - 1)


def test_random_bits_fused_into_every_kind_of_consumer():
    def f(k, x):
        u = ig.random.uniform(k, (4, 6))
        return (ig.reshape(ig.random.bits(k, (6,)), (2, 3)).T,
                (u.T + x).sum(axis=0),
                ig.random.uniform(k, ()) + x,
                u[1:3, 2:5] * 2.0,
                ig.max_pool2d(ig.reshape(u, (1, 1, 4, 6)), 2, padding=1),
                ig.cumsum(ig.random.bits(k, (7,))),
                ig.argmax(u, axis=1),
                ig.random.normal(k, (3, 4), "f64") @ ig.astype(u, "f64"),
                ig.random.bernoulli(k, 0.3, (4, 6)) & (u > 0.5),
                ig.random.uniform(ig.random.split(k, 3)[2], (5,)))

    k = ig.random.key(77)
    x = np.linspace(0, 1, 24, dtype=np.float32).reshape(6, 4)
    tf = ig.trace(f, k, x)
    want = ig.compile(tf, "numpy", pipeline="O0")(k, x)
    configs = [("cpu", {}), ("cpu", {"threads": 2})] + ([("cuda", {"device": "emulate"})] if HAVE_CXX else [])
    for be, options in configs:
        got = ig.compile(tf, be, **options)(k, x)
        for i, (a, b) in enumerate(zip(got, want)):
            a, b = np.asarray(a), np.asarray(b)
            if a.dtype.kind in "iub":
                np.testing.assert_array_equal(a, b, err_msg=f"{be} #{i}")
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{be} #{i}")


def test_dropout_and_random_draws_in_check_grads():
    d = ig.nn.Dropout(0.4)
    x = np.random.default_rng(0).standard_normal((3, 4))
    f = ig.trace(lambda x, k: ig.sum(ig.tanh(d({}, x, key=k)) * ig.random.normal(k, (3, 4), "f64")),
                 x, ig.random.key(0))
    ig.check_grads(f, [x, ig.random.key(0)], order=2, modes=("fwd", "rev"))
    with pytest.raises(ig.IrgradError, match="integer and boolean values carry no gradient"):
        ig.grad(f, argnums=1)


# --- bit operations on the native backends ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_bit_operations_with_any_shift_amount_on_native_backends(dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, 64, dtype=dtype)
    b = np.arange(-20, 44).astype(dtype)
    b[:6] = [info.min, info.max, 64, 128, 31, 63]
    bits, u = (32, np.uint32) if dtype == np.int32 else (64, np.uint64)
    sh = (b & (bits - 1)).astype(u)
    want = [a & b, a | b, a ^ b, (a.view(u) << sh).view(dtype), (a.view(u) >> sh).view(dtype),
            (a.view(u) << u(33 % bits)).view(dtype), a & 0xFF]
    f = ig.trace(lambda a, b: tuple(ig.primitive(op, a, b) for op in (
        "bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right_logical"))
        + (ig.primitive("shift_left", a, 33), ig.primitive("bitwise_and", a, 0xFF)), a, b)
    configs = [("cpu", "O0", {}), ("cpu", "O2", {})] + ([("cuda", "O2", {"device": "emulate"})] if HAVE_CXX else [])
    for be, pipeline, options in configs:
        got = ig.compile(f, be, pipeline=pipeline, **options)(a, b)
        for i, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(g, w, err_msg=f"{be} {pipeline} #{i}")


# --- library corners --------------------------------------------------------------------------------

def test_library_promotion_and_broadcasting_corners():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    i = rng.integers(-3, 3, (3, 4)).astype(np.int32)
    cases = [
        (lambda a, b: ig.einsum("...ij,...jk->...ik", a, b), lambda a, b: np.einsum("...ij,...jk->...ik", a, b),
         (a[:1], rng.standard_normal((3, 4, 2)).astype(np.float32))),  # size-1 batch broadcasts
        (lambda x, y: ig.einsum("ij,jk->ik", x, y), lambda x, y: np.einsum("ij,jk->ik", x, y),
         (rng.standard_normal((3, 1)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32))),
        (lambda x: ig.einsum("i...j->j...i", x), lambda x: np.einsum("i...j->j...i", x), (a,)),
        (lambda x, y: ig.einsum("ibj,jbk->bik", x, y), lambda x, y: np.einsum("ibj,jbk->bik", x, y),
         (rng.standard_normal((3, 2, 4)).astype(np.float32), rng.standard_normal((4, 2, 5)).astype(np.float32))),
        (lambda x, y: ig.einsum("ij,jk->ik", x, y), lambda x, y: np.einsum("ij,jk->ik", x, y).astype(np.float32),
         (i, rng.standard_normal((4, 5)).astype(np.float32))),  # i32 with f32 -> f32
        (lambda x: ig.clip(x, -1.5, 1.5), lambda x: np.clip(x, -1.5, 1.5).astype(np.float32), (i,)),
        (lambda x, lo: ig.clip(x, lo, 0.5), lambda x, lo: np.clip(x, lo, 0.5), (a, np.full(4, -0.2, np.float32))),
        (lambda x: ig.clip(x, 0.0, 1.0), lambda x: np.clip(x, 0.0, 1.0), (np.array([np.nan, 2, -1], np.float32),)),
        (lambda x, y: x ^ y, np.logical_xor, (a > 0, a[0, 0] > 0)),
        (lambda x: False | x, lambda x: False | x, (a > 0,)),
        (lambda x: ig.cumsum(x, axis=0), lambda x: np.cumsum(x, axis=0).astype(np.int32), (a[0] > 0,)),
        (lambda x: ig.cumsum(x, axis=0), lambda x: np.cumsum(x, axis=0), (np.zeros((0, 3), np.float32),)),
        (lambda x: ig.argmin(x), lambda x: np.int32(np.argmin(x)), (np.array([np.inf, np.nan, 1], np.float32),)),
        (lambda x: ig.argmax(x, 0), lambda x: np.argmax(x, 0).astype(np.int32), (i.astype(np.int64),)),
        (lambda c, x: ig.where(c, x, 0.5), lambda c, x: np.where(c, x, 0.5).astype(np.float32), (i > 0, i)),
    ]
    for fn, ref, args in cases:
        f = ig.trace(fn, *args)
        want = np.asarray(ref(*args))
        for be in ("numpy", "cpu"):
            got = np.asarray(ig.compile(f, be)(*args))
            assert got.dtype == want.dtype and got.shape == want.shape, (be, got.dtype, want.dtype)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_conv_dtype_refusals_name_both_types():
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    for xs, ws, words in ((x.astype(np.int32), w, "i32[1,2,4,4]"), (x, w.astype(np.int32), "i32[3,2,3,3]"),
                          (x.astype(np.float64), w, "f64[1,2,4,4]")):
        with pytest.raises(ig.ShapeError, match=re.escape(words)) as info:
            ig.trace(lambda x, w: ig.conv2d(x, w), xs, ws)
        assert "test_issue12_review.py" in str(info.value)
    with pytest.raises(ig.ShapeError, match="conv_transpose2d"):
        ig.trace(lambda x, w: ig.conv_transpose2d(x, w), x.astype(np.int32), w)
    with pytest.raises(ig.ShapeError, match="max_pool2d"):
        ig.trace(lambda x: ig.max_pool2d(x, 2), x.astype(np.int32))
