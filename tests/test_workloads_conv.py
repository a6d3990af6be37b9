"""W5 (LeNet-5) and W6 (ResNet-8), and the layers they are made of.

- irgrad's CPU step over ten steps on ten batches against PyTorch eager (the bench's
  step, benchmarks/peer_conv_steps.py; skipped without torch) and, always, against the
  interpreter at O0: losses within 1e-4, W6's batch-norm running statistics too;
- BatchNorm2d (training with its running-statistics update, evaluation, gradients)
  against a numpy formula and PyTorch, and Dropout (rate, scaling, identity in
  evaluation, determinism in the key, gradient).

W6 trains with lr 0.05 and momentum 0.9 on random data, which amplifies float32 rounding:
two float32 implementations drift apart by ~1e-5 in the loss (and more in single
parameters) by the tenth step, while after three steps they still agree to ~1e-6. The
tight checks of parameters and statistics are therefore made after three steps, the
ten-step ones at the 1e-4 the workload allows.
"""

from __future__ import annotations

import numpy as np
import pytest

import irgrad as ig
import workloads
from peer_conv_steps import _flat, jax_conv_step, torch_conv_step

STEPS = 10
EARLY = 3  # steps after which parameters and statistics are compared tightly
LOSS_RTOL = 1e-4
NAMES = ["W5", "W6"]


def _copy(tree) -> dict:
    return {k: np.array(v, copy=True) for k, v in _flat(tree).items()}


_runs: dict = {}


def run(name: str, system: str) -> dict:
    """losses, eval_loss (after EARLY steps, on the eleventh batch), params and state
    (flat dicts) after EARLY and after STEPS steps of `system` on w.batches(STEPS)."""
    if (name, system) in _runs:
        return _runs[name, system]
    w = workloads.get(name)
    batches = w.batches(STEPS + 1)
    if system in ("cpu", "numpy"):
        step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend=system,
                               **({"pipeline": "O0"} if system == "numpy" else {}), **w.step_options())
        params, state = (lambda: step.params), (lambda: step.state or {})
        evaluate = _eval_loss(w, step) if system == "cpu" and w.stateful else None
    else:
        make = torch_conv_step if system == "torch" else jax_conv_step
        step = make(w, w.init_params(), 1)
        params, state = step.params, step.state
        evaluate = step.evaluate if system == "torch" and w.stateful else None
    out = {"losses": []}
    for i, b in enumerate(batches[:STEPS]):
        out["losses"].append(step(*b))
        if i + 1 == EARLY:
            out["early_params"], out["early_state"] = _copy(params()), _copy(state())
            if evaluate is not None:
                out["eval_loss"] = evaluate(*batches[STEPS])
                if system == "cpu":
                    out["step_eval_loss"] = step(*batches[STEPS], train=False)
    out["params"], out["state"] = _copy(params()), _copy(state())
    _runs[name, system] = out
    return out


def _eval_loss(w, step):
    """The loss in evaluation mode (batch norm on the running statistics) on the step's
    current parameters and state, from the workload's model."""
    def f(params, state, x, y):
        logits, _ = w.model(params, x, state=state, train=False)
        return ig.cross_entropy(logits, y)
    fn = ig.compile(ig.trace(f, w.init_params(), w.init_state(), *w.batch_specs), "cpu")
    return lambda x, y: float(fn(step.params, step.state, x, y))


def _assert_losses(got, want, what):
    for i, (a, b) in enumerate(zip(got, want)):
        assert a == pytest.approx(b, rel=LOSS_RTOL), f"{what}: step {i + 1}: {a} vs {b}"
    assert len(got) == len(want) == STEPS


def _assert_trees(got: dict, want: dict, what: str, rtol: float, atol: float):
    assert set(got) == set(want), f"{what}: keys differ: {sorted(set(got) ^ set(want))}"
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=f"{what}: {k}")


# --- W5 and W6 against PyTorch ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_cpu_step_matches_torch(name):
    pytest.importorskip("torch")
    ours, theirs = run(name, "cpu"), run(name, "torch")
    _assert_losses(ours["losses"], theirs["losses"], f"{name} cpu vs torch")
    _assert_trees(ours["early_params"], theirs["early_params"], f"{name} params after {EARLY} steps",
                  rtol=1e-4, atol=1e-5)
    if name == "W5":  # no momentum, no batch statistics: stays together for all ten steps
        _assert_trees(ours["params"], theirs["params"], f"{name} params after {STEPS} steps",
                      rtol=1e-4, atol=1e-5)


def test_w6_running_statistics_match_torch():
    pytest.importorskip("torch")
    ours, theirs = run("W6", "cpu"), run("W6", "torch")
    assert len(ours["state"]) == 2 * 9  # nine batch norms, mean and var each
    # after three steps: tight (the unbiased-variance factor alone is ~1e-4 relative)
    _assert_trees(ours["early_state"], theirs["early_state"], f"W6 state after {EARLY} steps",
                  rtol=1e-5, atol=1e-6)
    # after ten: the trajectories' drift (observed <= 1.5e-4 on statistics of size <= 0.75)
    _assert_trees(ours["state"], theirs["state"], f"W6 state after {STEPS} steps", rtol=1e-3, atol=1e-3)
    # they moved: 0.9^10 of the initial zeros/ones is left
    assert max(np.abs(v).max() for k, v in ours["state"].items() if k.endswith("mean")) > 0.1
    # evaluation mode (batch norm on the running statistics) after three steps
    assert ours["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-5)


def test_w6_step_evaluation_uses_running_statistics():
    cpu = run("W6", "cpu")
    assert cpu["step_eval_loss"] == pytest.approx(cpu["eval_loss"], rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_cpu_step_matches_jax(name):
    """The bench's JAX step follows the same trajectory (checked where JAX is installed)."""
    pytest.importorskip("jax")
    ours, theirs = run(name, "cpu"), run(name, "jax")
    _assert_losses(ours["losses"], theirs["losses"], f"{name} cpu vs jax")
    _assert_trees(ours["early_state"], theirs["early_state"], f"{name} state after {EARLY} steps",
                  rtol=1e-5, atol=1e-6)


# --- W5 and W6 against the interpreter (no torch needed) ------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_cpu_step_matches_interpreter(name):
    ours, ref = run(name, "cpu"), run(name, "numpy")
    _assert_losses(ours["losses"], ref["losses"], f"{name} cpu vs interpreter")
    _assert_trees(ours["early_params"], ref["early_params"], f"{name} params after {EARLY} steps",
                  rtol=1e-4, atol=1e-5)
    _assert_trees(ours["early_state"], ref["early_state"], f"{name} state after {EARLY} steps",
                  rtol=1e-5, atol=1e-6)
    _assert_trees(ours["state"], ref["state"], f"{name} state after {STEPS} steps", rtol=1e-3, atol=1e-3)
    assert ours["losses"][0] == pytest.approx(ref["losses"][0], rel=1e-6)


def test_w6_step_carries_state():
    w = workloads.get("W6")
    assert w.stateful and set(w.step_options()) == {"state"}
    assert workloads.get("W5").step_options() == {}
    cpu = run("W6", "cpu")
    assert set(cpu["state"]) == set(_flat(w.init_state()))
    assert all(np.isfinite(v).all() for v in cpu["state"].values())
    assert all((v > 0).all() for k, v in cpu["state"].items() if k.endswith("var"))


# --- BatchNorm2d -------------------------------------------------------------------------------

C = 3
RNG = np.random.default_rng(7)
X = (RNG.standard_normal((4, C, 5, 6)) * 2 + 0.5).astype(np.float32)
R = RNG.standard_normal(X.shape).astype(np.float32)  # the cotangent of a test loss sum(y * R)
BN_P = {"gamma": RNG.uniform(0.5, 1.5, C).astype(np.float32), "beta": RNG.standard_normal(C).astype(np.float32)}
BN_S = {"mean": RNG.standard_normal(C).astype(np.float32), "var": RNG.uniform(0.5, 2, C).astype(np.float32)}


def _bn_numpy(x, p, s, train, eps=1e-5, m=0.1):
    x = x.astype(np.float64)
    c = lambda v: np.asarray(v, np.float64)[None, :, None, None]  # noqa: E731
    if train:
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        n = x.size // x.shape[1]
        new = {"mean": (1 - m) * s["mean"] + m * mean, "var": (1 - m) * s["var"] + m * var * n / (n - 1)}
    else:
        mean, var, new = s["mean"], s["var"], s
    return (x - c(mean)) / np.sqrt(c(var) + eps) * c(p["gamma"]) + c(p["beta"]), new


def _bn_torch(x, p, s, train):
    import torch
    import torch.nn.functional as F
    xt = torch.tensor(x, requires_grad=True)
    g, b = (torch.tensor(p[k], requires_grad=True) for k in ("gamma", "beta"))
    rm, rv = torch.tensor(s["mean"]), torch.tensor(s["var"])
    y = F.batch_norm(xt, rm, rv, g, b, training=train, momentum=0.1, eps=1e-5)
    (y * torch.tensor(R)).sum().backward()
    grads = {"x": xt.grad.numpy(), "gamma": g.grad.numpy(), "beta": b.grad.numpy()}
    return y.detach().numpy(), {"mean": rm.numpy(), "var": rv.numpy()}, grads


def _bn_irgrad(backend, train):
    bn = ig.nn.BatchNorm2d(C)
    fwd = ig.trace(lambda p, s, x: bn(p, x, state=s, train=train), BN_P, BN_S, X)
    loss = ig.trace(lambda p, s, x: ig.sum(bn(p, x, state=s, train=train)[0] * R), BN_P, BN_S, X)
    y, new = ig.compile(fwd, backend)(BN_P, BN_S, X)
    gp, gx = ig.compile(ig.grad(loss, argnums=(0, 2)), backend)(BN_P, BN_S, X)
    return np.asarray(y), {k: np.asarray(v) for k, v in new.items()}, \
        {"x": np.asarray(gx), "gamma": np.asarray(gp["gamma"]), "beta": np.asarray(gp["beta"])}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_batchnorm2d_matches_formula(backend, train):
    y, new, _ = _bn_irgrad(backend, train)
    y_ref, new_ref = _bn_numpy(X, BN_P, BN_S, train)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(new[k], new_ref[k], rtol=1e-6, atol=1e-6, err_msg=k)
    if not train:
        assert all(np.array_equal(new[k], BN_S[k]) for k in BN_S)  # unchanged in evaluation
    else:  # the running variance is the unbiased one (n = 4 * 5 * 6 = 120)
        biased = 0.9 * BN_S["var"] + 0.1 * X.astype(np.float64).var((0, 2, 3))
        assert np.abs(new["var"] - biased).min() > 1e-4


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_batchnorm2d_matches_torch(backend, train):
    pytest.importorskip("torch")
    y, new, grads = _bn_irgrad(backend, train)
    y_t, new_t, grads_t = _bn_torch(X, BN_P, BN_S, train)
    np.testing.assert_allclose(y, y_t, rtol=1e-5, atol=1e-5)
    for k in ("mean", "var"):
        np.testing.assert_allclose(new[k], new_t[k], rtol=1e-6, atol=1e-6, err_msg=k)
    for k in grads_t:  # training: through the batch statistics; evaluation: an affine map
        np.testing.assert_allclose(grads[k], grads_t[k], rtol=1e-4, atol=1e-4, err_msg=f"d{k}")


def test_batchnorm2d_refusals():
    bn = ig.nn.BatchNorm2d(C)
    with pytest.raises(ig.IrgradError, match="state="):
        ig.trace(lambda p, x: bn(p, x, train=True)[0], BN_P, X)
    with pytest.raises(ig.IrgradError, match="BatchNorm2d"):
        ig.trace(lambda p, s, x: bn(p, x, state=s)[0], BN_P, BN_S, X[:, :2])


# --- Dropout ---------------------------------------------------------------------------------

XD = RNG.uniform(1.0, 2.0, (200, 1000)).astype(np.float32)  # no zeros of its own


def _dropout(p, key, backend="cpu", train=True, x=XD):
    d = ig.nn.Dropout(p)
    f = ig.trace(lambda x, k: d({}, x, key=k, train=train) * 1.0, x, ig.random.key(0))
    return np.asarray(ig.compile(f, backend)(x, key))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_rate_and_scaling(p):
    y = _dropout(p, ig.random.key(3))
    dropped = y == 0
    n = y.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[~dropped], XD[~dropped] / (1 - p), rtol=1e-6)


def test_dropout_identity_in_evaluation_and_at_zero():
    key = ig.random.key(1)
    assert np.array_equal(_dropout(0.5, key, train=False), XD)
    assert np.array_equal(_dropout(0.0, key), XD)
    with pytest.raises(ig.IrgradError, match="0 <= p < 1"):
        ig.nn.Dropout(1.0)
    with pytest.raises(ig.IrgradError, match="key="):
        ig.trace(lambda x: ig.nn.Dropout(0.5)({}, x, train=True), XD)


def test_dropout_key_determinism():
    x = XD[:20]
    a, b = _dropout(0.5, ig.random.key(5), x=x), _dropout(0.5, ig.random.key(5), x=x)
    assert np.array_equal(a, b)
    assert np.array_equal(a, _dropout(0.5, ig.random.key(5), backend="numpy", x=x))  # every backend
    c = _dropout(0.5, ig.random.key(6), x=x)
    assert not np.array_equal(a == 0, c == 0)


def test_dropout_gradient_is_the_mask():
    p, key, x = 0.3, ig.random.key(2), XD[:16]
    d = ig.nn.Dropout(p)
    r = RNG.standard_normal(x.shape).astype(np.float32)
    loss = ig.trace(lambda x, k: ig.sum(d({}, x, key=k) * r), x, key)
    g = np.asarray(ig.compile(ig.grad(loss), "cpu")(x, key))
    kept = _dropout(p, key, x=x) != 0
    np.testing.assert_allclose(g, np.where(kept, r / (1 - p), 0), rtol=1e-6)


def test_dropout_matches_torch_semantics():
    torch = pytest.importorskip("torch")
    p = 0.25
    xt = torch.tensor(XD)
    yt = torch.nn.functional.dropout(xt, p, training=True).numpy()
    y = _dropout(p, ig.random.key(4))
    for out in (y, yt):  # same rate, same 1/(1-p) scaling of what is kept
        kept = out != 0
        assert abs((~kept).mean() - p) < 0.01
        np.testing.assert_allclose(out[kept], XD[kept] / (1 - p), rtol=1e-6)
    assert np.array_equal(torch.nn.functional.dropout(xt, p, training=False).numpy(),
                          _dropout(p, ig.random.key(4), train=False))


def test_dropout_in_a_step_advances_the_key():
    model = ig.nn.Sequential(ig.nn.Linear(8, 16), ig.relu, ig.nn.Dropout(0.5), ig.nn.Linear(16, 2))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 8)).astype(np.float32), rng.integers(0, 2, 32).astype(np.int32)

    def loss_fn(params, x, y, key, train=True):
        return ig.cross_entropy(model(params, x, key=key, train=train), y)

    def losses(seed):
        step = ig.compile_step(loss_fn, model.init(0), ig.optim.SGD(0.0), (ig.f32[32, 8], ig.i32[32]),
                               key=ig.random.key(seed))
        keys = []
        out = []
        for _ in range(3):
            out.append(step(x, y))
            keys.append(np.array(step.key))
        return out, keys, step(x, y, train=False), step(x, y, train=False)

    a, ka, ea1, ea2 = losses(0)
    b, _, _, _ = losses(0)
    c, _, _, _ = losses(1)
    assert a == b  # the same key: the same masks
    assert a != c
    assert len({tuple(k) for k in ka}) == 3  # a new key each step
    assert len(set(a)) == 3  # lr 0: only the masks change the loss
    assert ea1 == ea2  # evaluation: no dropout, deterministic
