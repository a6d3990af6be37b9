"""`ig.nn` layers, `ig.optim` optimizers, whole training steps and the W1-W4 workloads.

Oracles: numpy implementations written here from the textbook definitions (layers in
float64, optimizer updates in PyTorch's documented form), centered finite differences
in float64, PyTorch itself when it is installed, and a real task (digits) that a correct
training step learns.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import irgrad as ig
from irgrad import f32, f64, i32
import workloads as W
from irgrad.pytree import flatten, tree_map
from irgrad.transforms.gradcheck import promote_to_f64

nn, optim = ig.nn, ig.optim


def rng(seed=0):
    return np.random.default_rng(seed)


def spec_tree(tree):
    return tree_map(lambda a: ig.TensorSpec.of(a), tree)


def to_f64(tree):
    return tree_map(lambda a: np.asarray(a, np.float64) if np.asarray(a).dtype == np.float32
                    else np.asarray(a), tree)


def assert_trees_close(got, want, rtol=1e-10, atol=1e-12):
    g_leaves, g_tree = flatten(got)
    w_leaves, w_tree = flatten(want)
    assert g_tree == w_tree, (g_tree, w_tree)
    for a, b in zip(g_leaves, w_leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# =============================================================================================
# numpy references (float64)
# =============================================================================================

def np_linear(p, x):
    return x @ p["W"] + p["b"]


def np_relu(x):
    return np.maximum(x, 0)


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


NP_ACT = {"relu": np_relu, "tanh": np.tanh, "gelu": np_gelu, "sigmoid": np_sigmoid,
          "identity": lambda x: x}


def np_mlp(p, x, act="relu"):
    n = len(p)
    for i in range(n):
        x = np_linear(p[f"fc{i}"], x)
        if i < n - 1:
            x = NP_ACT[act](x)
    return x


def np_layer_norm(p, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["gamma"] + p["beta"]


def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_log_softmax(s):
    m = s.max(-1, keepdims=True)
    return s - m - np.log(np.exp(s - m).sum(-1, keepdims=True))


def np_attention(p, x, n_heads):
    B, T, C = x.shape
    D = C // n_heads
    qkv = np_linear(p["qkv"], x)
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, n_heads, D).transpose(0, 2, 1, 3)
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    out = (np_softmax(s) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return np_linear(p["proj"], out)


def np_block(p, x, n_heads, act="gelu"):
    x = x + np_attention(p["attn"], np_layer_norm(p["ln1"], x), n_heads)
    return x + np_mlp(p["mlp"], np_layer_norm(p["ln2"], x), act)


def np_transformer(p, ids, n_heads):
    T = ids.shape[1]
    x = p["tok"]["weight"][ids] + p["pos"]["weight"][:T]
    i = 0
    while f"block{i}" in p:
        x = np_block(p[f"block{i}"], x, n_heads)
        i += 1
    return np_linear(p["head"], np_layer_norm(p["ln_f"], x))


def np_cross_entropy(logits, labels):
    return -np.mean(np_log_softmax(logits)[np.arange(len(labels)), labels])


# =============================================================================================
# Layers: shapes, seeded init, outputs against numpy
# =============================================================================================

def run_layer(layer, params, x):
    """Trace `layer(params, x)` and run it on the interpreter."""
    fn = ig.trace(lambda p, x: layer(p, x), spec_tree(params), ig.TensorSpec.of(x))
    return fn(params, x)


def test_linear_init_shapes_bounds_and_seeding():
    lin = nn.Linear(50, 7)
    p = lin.init(0)
    assert set(p) == {"W", "b"}
    assert p["W"].shape == (50, 7) and p["b"].shape == (7,)  # stored (in, out)
    assert p["W"].dtype == np.float32 and p["b"].dtype == np.float32
    bound = 1 / math.sqrt(50)
    for a in p.values():
        assert np.all(np.abs(a) <= bound)
    # uniform over the whole range, not a narrower one
    assert np.abs(p["W"]).max() > 0.9 * bound
    assert abs(p["W"].mean()) < 0.1 * bound and p["W"].std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert_trees_close(lin.init(0), p, rtol=0, atol=0)
    assert not np.array_equal(lin.init(1)["W"], p["W"])
    assert_trees_close(lin.init(np.random.default_rng(0)), p, rtol=0, atol=0)
    assert set(nn.Linear(3, 2, bias=False).init(0)) == {"W"}
    p64 = nn.Linear(50, 7, dtype="f64").init(0)
    assert p64["W"].dtype == np.float64


@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward(bias):
    lin = nn.Linear(5, 3, bias=bias, dtype="f64")
    p = lin.init(3)
    x = rng(1).standard_normal((4, 5))
    want = x @ p["W"] + (p["b"] if bias else 0)
    np.testing.assert_allclose(run_layer(lin, p, x), want, rtol=1e-13)
    # leading batch axes broadcast like numpy
    x3 = rng(2).standard_normal((2, 4, 5))
    np.testing.assert_allclose(run_layer(lin, p, x3), x3 @ p["W"] + (p["b"] if bias else 0),
                               rtol=1e-13)


def test_mlp_init_and_structure():
    mlp = nn.MLP([6, 9, 4, 2])
    p = mlp.init(5)
    assert sorted(p) == ["fc0", "fc1", "fc2"]
    for i, (a, b) in enumerate([(6, 9), (9, 4), (4, 2)]):
        assert p[f"fc{i}"]["W"].shape == (a, b) and p[f"fc{i}"]["b"].shape == (b,)
        for leaf in p[f"fc{i}"].values():
            assert np.all(np.abs(leaf) <= 1 / math.sqrt(a))
    assert not np.array_equal(p["fc0"]["b"][:4], p["fc1"]["b"])  # layers draw fresh numbers
    assert_trees_close(mlp.init(5), p, rtol=0, atol=0)
    with pytest.raises(ValueError):
        nn.MLP([3])


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "sigmoid", "identity"])
def test_mlp_forward(act):
    mlp = nn.MLP([6, 9, 4, 3], activation=act, dtype="f64")
    p = mlp.init(1)
    x = rng(2).standard_normal((5, 6)) * 2
    np.testing.assert_allclose(run_layer(mlp, p, x), np_mlp(p, x, act), rtol=1e-12, atol=1e-14)


def test_mlp_has_no_activation_after_the_last_layer():
    mlp = nn.MLP([4, 3], activation="relu", dtype="f64")
    p = mlp.init(0)
    x = rng(3).standard_normal((10, 4)) * 5
    out = run_layer(mlp, p, x)
    assert (out < 0).any()
    np.testing.assert_allclose(out, np_linear(p["fc0"], x), rtol=1e-13)


def test_embedding():
    emb = nn.Embedding(300, 64)
    p = emb.init(0)
    assert p["weight"].shape == (300, 64) and p["weight"].dtype == np.float32
    w = p["weight"].astype(np.float64)
    assert abs(w.mean()) < 0.02 and w.std() == pytest.approx(1.0, abs=0.02)  # N(0, 1)
    assert_trees_close(emb.init(0), p, rtol=0, atol=0)
    emb64 = nn.Embedding(10, 4, dtype="f64")
    p64 = emb64.init(1)
    ids = np.array([[3, 0, 9], [3, 3, 1]], np.int32)
    fn = ig.trace(lambda p, i: emb64(p, i), spec_tree(p64), i32[2, 3])
    out = fn(p64, ids)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, p64["weight"][ids])


def test_embedding_gradient_accumulates_repeated_ids():
    emb = nn.Embedding(5, 3, dtype="f64")
    p = emb.init(0)
    ids = np.array([1, 3, 1, 1], np.int32)
    up = rng(4).standard_normal((4, 3))
    fn = ig.trace(lambda p, i: ig.sum(emb(p, i) * up), spec_tree(p), i32[4])
    g = ig.grad(fn)(p, ids)["weight"]
    want = np.zeros((5, 3))
    np.add.at(want, ids, up)
    np.testing.assert_allclose(g, want, rtol=1e-13)


def test_layer_norm():
    ln = nn.LayerNorm(6, dtype="f64")
    p = ln.init(0)
    np.testing.assert_array_equal(p["gamma"], np.ones(6))
    np.testing.assert_array_equal(p["beta"], np.zeros(6))
    p = {"gamma": rng(1).standard_normal(6), "beta": rng(2).standard_normal(6)}
    x = rng(3).standard_normal((2, 3, 6)) * 3 + 1
    np.testing.assert_allclose(run_layer(ln, p, x), np_layer_norm(p, x), rtol=1e-12, atol=1e-13)
    ln2 = nn.LayerNorm(6, eps=0.5, dtype="f64")
    np.testing.assert_allclose(run_layer(ln2, p, x), np_layer_norm(p, x, eps=0.5), rtol=1e-12)
    # normalized rows: mean 0, variance 1 (up to eps) with the default gamma/beta
    out = run_layer(ln, ln.init(0), x)
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(-1), 1, rtol=1e-3)


def test_causal_self_attention_forward_and_init():
    attn = nn.CausalSelfAttention(8, 2, dtype="f64")
    p = attn.init(0)
    assert p["qkv"]["W"].shape == (8, 24) and p["proj"]["W"].shape == (8, 8)
    for leaf in flatten(p)[0]:
        assert np.all(np.abs(leaf) <= 1 / math.sqrt(8))
    assert_trees_close(attn.init(0), p, rtol=0, atol=0)
    x = rng(1).standard_normal((3, 5, 8))
    np.testing.assert_allclose(run_layer(attn, p, x), np_attention(p, x, 2), rtol=1e-11,
                               atol=1e-13)
    with pytest.raises(ValueError):
        nn.CausalSelfAttention(8, 3)


def test_attention_is_causal():
    attn = nn.CausalSelfAttention(8, 4, dtype="f64")
    p = attn.init(2)
    fn = ig.trace(lambda p, x: attn(p, x), spec_tree(p), f64[2, 6, 8])
    x = rng(5).standard_normal((2, 6, 8))
    y = x.copy()
    y[:, 3:] += rng(6).standard_normal((2, 3, 8))  # change the future only
    a, b = fn(p, x), fn(p, y)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    assert np.abs(a[:, 3:] - b[:, 3:]).min() > 0
    # and in derivatives: output position 2 depends on inputs 0..2 only
    g = ig.grad(ig.trace(lambda p, x: ig.sum(attn(p, x)[:, 2]), spec_tree(p), f64[2, 6, 8]),
                argnums=1)(p, x)
    assert np.all(g[:, 3:] == 0) and np.all(np.abs(g[:, :3]).sum(-1) > 0)


def test_transformer_block_forward():
    blk = nn.TransformerBlock(8, 2, 16, dtype="f64")
    p = blk.init(0)
    assert sorted(p) == ["attn", "ln1", "ln2", "mlp"]
    assert p["mlp"]["fc0"]["W"].shape == (8, 16) and p["mlp"]["fc1"]["W"].shape == (16, 8)
    # non-trivial LayerNorm parameters, so their placement (pre-LN) matters
    p["ln1"] = {"gamma": rng(1).standard_normal(8), "beta": rng(2).standard_normal(8)}
    p["ln2"] = {"gamma": rng(3).standard_normal(8), "beta": rng(4).standard_normal(8)}
    x = rng(5).standard_normal((2, 4, 8))
    np.testing.assert_allclose(run_layer(blk, p, x), np_block(p, x, 2), rtol=1e-11, atol=1e-12)


def test_tiny_transformer_forward_and_loss():
    model = nn.TinyTransformer(vocab=11, seq=6, d_model=8, n_heads=2, d_ff=16, n_layers=2,
                               dtype="f64")
    p = model.init(0)
    assert sorted(p) == ["block0", "block1", "head", "ln_f", "pos", "tok"]
    assert p["tok"]["weight"].shape == (11, 8) and p["pos"]["weight"].shape == (6, 8)
    assert p["head"]["W"].shape == (8, 11)
    assert all(leaf.dtype == np.float64 for leaf in flatten(p)[0])
    assert_trees_close(model.init(0), p, rtol=0, atol=0)
    ids = rng(1).integers(0, 11, (3, 6)).astype(np.int32)
    tgt = rng(2).integers(0, 11, (3, 6)).astype(np.int32)
    logits = ig.trace(lambda p, i: model(p, i), spec_tree(p), i32[3, 6])(p, ids)
    want = np_transformer(p, ids, 2)
    np.testing.assert_allclose(logits, want, rtol=1e-10, atol=1e-12)
    loss = ig.trace(model.loss, spec_tree(p), i32[3, 6], i32[3, 6])(p, ids, tgt)
    np.testing.assert_allclose(loss, np_cross_entropy(want.reshape(18, 11), tgt.reshape(18)),
                               rtol=1e-12)
    # sequences shorter than `seq` use the first position embeddings
    short = ig.trace(lambda p, i: model(p, i), spec_tree(p), i32[3, 4])(p, ids[:, :4])
    np.testing.assert_allclose(short, np_transformer(p, ids[:, :4], 2), rtol=1e-10, atol=1e-12)


def test_layers_reject_bad_input_shapes():
    attn = nn.CausalSelfAttention(8, 2)
    p = attn.init(0)
    with pytest.raises(ig.ShapeError):
        ig.trace(lambda p, x: attn(p, x), spec_tree(p), f32[2, 5, 6])


# =============================================================================================
# Optimizers against the textbook (PyTorch) update rules, over several steps
# =============================================================================================

class NpSGD:
    def __init__(self, lr, momentum=0.0, weight_decay=0.0):
        self.lr, self.mom, self.wd = lr, momentum, weight_decay
        self.buf = None

    def step(self, p, g):
        p, g = dict(p), {k: g[k] + self.wd * p[k] for k in p}
        if self.mom:
            # PyTorch: the buffer starts as the first gradient, then buf = mu buf + g
            self.buf = dict(g) if self.buf is None else {k: self.mom * self.buf[k] + g[k] for k in g}
            g = self.buf
        return {k: p[k] - self.lr * g[k] for k in p}


class NpAdam:
    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=True):
        self.lr, (self.b1, self.b2), self.eps, self.wd, self.dec = lr, betas, eps, weight_decay, decoupled
        self.t, self.m, self.v = 0, None, None

    def step(self, p, g):
        self.t += 1
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in p.items()}
            self.v = {k: np.zeros_like(v) for k, v in p.items()}
        out = {}
        for k in p:
            gk, pk = g[k], p[k]
            if self.wd and not self.dec:
                gk = gk + self.wd * pk  # L2 (torch.optim.Adam)
            if self.wd and self.dec:
                pk = pk * (1 - self.lr * self.wd)  # decoupled (torch.optim.AdamW)
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * gk
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * gk * gk
            m_hat = self.m[k] / (1 - self.b1 ** self.t)
            v_hat = self.v[k] / (1 - self.b2 ** self.t)
            out[k] = pk - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return out


# a small model with a closed-form gradient: out = (x W + b) * s, mean squared error
def opt_loss(params, x, t):
    return ig.mse_loss((x @ params["W"] + params["b"]) * params["s"], t)


def opt_loss_np(p, x, t):
    z = x @ p["W"] + p["b"]
    r = z * p["s"] - t
    dr = 2 * r / r.size
    loss = np.mean(r * r)
    return loss, {"W": x.T @ (dr * p["s"]), "b": (dr * p["s"]).sum(0), "s": np.sum(dr * z)}


def opt_params(dtype=np.float64):
    r = rng(30)
    return {"W": r.standard_normal((4, 3)).astype(dtype), "b": r.standard_normal(3).astype(dtype),
            "s": np.array(1.3, dtype)}


def opt_batches(n, dtype=np.float64):
    r = rng(31)
    return [(r.standard_normal((6, 4)).astype(dtype), r.standard_normal((6, 3)).astype(dtype))
            for _ in range(n)]


OPTIMIZERS = {
    "sgd": (lambda: optim.SGD(0.1), lambda: NpSGD(0.1)),
    "sgd_momentum": (lambda: optim.SGD(0.05, momentum=0.9), lambda: NpSGD(0.05, 0.9)),
    "sgd_weight_decay": (lambda: optim.SGD(0.1, weight_decay=0.05),
                         lambda: NpSGD(0.1, weight_decay=0.05)),
    "sgd_momentum_weight_decay": (lambda: optim.SGD(0.05, momentum=0.8, weight_decay=0.1),
                                  lambda: NpSGD(0.05, 0.8, 0.1)),
    "adam": (lambda: optim.Adam(0.05), lambda: NpAdam(0.05)),
    "adam_betas_eps": (lambda: optim.Adam(0.05, betas=(0.8, 0.95), eps=1e-3),
                       lambda: NpAdam(0.05, (0.8, 0.95), 1e-3)),
    "adam_decoupled_wd": (lambda: optim.Adam(0.05, weight_decay=0.2, decoupled_weight_decay=True),
                          lambda: NpAdam(0.05, weight_decay=0.2, decoupled=True)),
    "adam_l2_wd": (lambda: optim.Adam(0.05, weight_decay=0.2),  # L2 by default, as PyTorch's Adam
                   lambda: NpAdam(0.05, weight_decay=0.2, decoupled=False)),
    "adamw_default": (lambda: optim.AdamW(0.05), lambda: NpAdam(0.05, weight_decay=0.01)),
    "adamw": (lambda: optim.AdamW(0.05, betas=(0.85, 0.99), weight_decay=0.3),
              lambda: NpAdam(0.05, (0.85, 0.99), weight_decay=0.3)),
}

N_STEPS = 6


def _check_state(opt, state, ref):
    if isinstance(ref, NpSGD):
        if ref.mom:
            assert_trees_close(state["momentum"], ref.buf)
        else:
            assert not flatten(state)[0]
    else:
        np.testing.assert_allclose(state["step"], ref.t)
        assert_trees_close(state["m"], ref.m)
        assert_trees_close(state["v"], ref.v)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_via_training_step(name):
    make, make_ref = OPTIMIZERS[name]
    opt, ref = make(), make_ref()
    params = opt_params()
    loss_fn = ig.trace(opt_loss, spec_tree(params), f64[6, 4], f64[6, 3])
    step = ig.training_step(loss_fn, opt)
    assert isinstance(step, ig.Function)
    state = opt.init(params)
    p_ref = {k: v.copy() for k, v in params.items()}
    for x, t in opt_batches(N_STEPS):
        loss, params, state = step(params, state, x, t)
        want_loss, grads = opt_loss_np(p_ref, x, t)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
        p_ref = ref.step(p_ref, grads)
        assert_trees_close(params, p_ref)
    _check_state(opt, state, ref)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_via_compile_step(name):
    make, make_ref = OPTIMIZERS[name]
    opt, ref = make(), make_ref()
    params = opt_params()
    step = ig.compile_step(opt_loss, params, opt, (f64[6, 4], f64[6, 3]), backend="numpy",
                           pipeline="O0")
    p_ref = {k: v.copy() for k, v in params.items()}
    for x, t in opt_batches(N_STEPS):
        loss = step(x, t)
        want_loss, grads = opt_loss_np(p_ref, x, t)
        assert isinstance(loss, float)
        assert loss == pytest.approx(want_loss, rel=1e-12)
        p_ref = ref.step(p_ref, grads)
        assert_trees_close(step.params, p_ref)
    _check_state(opt, step.opt_state, ref)


def test_adam_in_float32_tracks_the_float64_formula():
    params = opt_params(np.float32)
    step = ig.compile_step(opt_loss, params, optim.Adam(0.01), (f32[6, 4], f32[6, 3]),
                           backend="numpy", pipeline="O0")
    ref, p_ref = NpAdam(0.01), to_f64(params)
    for x, t in opt_batches(20, np.float32):
        step(x, t)
        p_ref = ref.step(p_ref, opt_loss_np(p_ref, x.astype(np.float64), t.astype(np.float64))[1])
    assert all(v.dtype == np.float32 for v in flatten(step.params)[0])
    assert_trees_close(to_f64(step.params), p_ref, rtol=2e-4, atol=2e-5)


def test_adam_first_step_moves_every_weight_by_about_lr():
    """Bias correction: the first Adam step is lr * sign(g) (up to eps)."""
    params = opt_params()
    step = ig.compile_step(opt_loss, params, optim.Adam(0.01), (f64[6, 4], f64[6, 3]),
                           backend="numpy", pipeline="O0")
    x, t = opt_batches(1)[0]
    _, g = opt_loss_np(params, x, t)
    step(x, t)
    for k in params:
        np.testing.assert_allclose(params[k] - step.params[k], 0.01 * np.sign(g[k]), rtol=1e-5)


def test_optimizers_against_pytorch():
    torch = pytest.importorskip("torch")
    cases = [
        (lambda: optim.SGD(0.05, momentum=0.9, weight_decay=0.1),
         lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.1)),
        (lambda: optim.Adam(0.05, betas=(0.8, 0.99), weight_decay=0.2, decoupled_weight_decay=False),
         lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), weight_decay=0.2)),
        (lambda: optim.AdamW(0.05, weight_decay=0.2),
         lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.2)),
        (lambda: optim.Adam(0.05, weight_decay=0.2),  # L2 by default, as torch.optim.Adam
         lambda ps: torch.optim.Adam(ps, lr=0.05, weight_decay=0.2)),
    ]
    for make, make_torch in cases:
        params = opt_params()
        step = ig.compile_step(opt_loss, params, make(), (f64[6, 4], f64[6, 3]),
                               backend="numpy", pipeline="O0")
        tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        topt = make_torch(list(tp.values()))
        for x, t in opt_batches(N_STEPS):
            step(x, t)
            topt.zero_grad()
            z = (torch.from_numpy(x) @ tp["W"] + tp["b"]) * tp["s"]
            torch.nn.functional.mse_loss(z, torch.from_numpy(t)).backward()
            topt.step()
            assert_trees_close(step.params, {k: v.detach().numpy() for k, v in tp.items()},
                               rtol=1e-10, atol=1e-12)


# =============================================================================================
# compile_step on the reference interpreter
# =============================================================================================

def small_mlp_step(**kw):
    model = nn.MLP([5, 7, 3])
    params = model.init(0)

    def loss_fn(p, x, y):
        return ig.cross_entropy(model(p, x), y)
    step = ig.compile_step(loss_fn, params, optim.SGD(0.5), (f32[4, 5], i32[4]),
                           backend="numpy", pipeline="O0", **kw)
    return model, params, loss_fn, step


def test_compile_step_updates_parameters_in_place():
    model, params, loss_fn, step = small_mlp_step()
    original = tree_map(np.copy, params)
    held = step.params["fc0"]["W"]  # a reference taken before the step
    x = rng(1).standard_normal((4, 5)).astype(np.float32)
    y = np.array([0, 2, 1, 2], np.int32)
    loss_at_start = ig.trace(loss_fn, spec_tree(params), f32[4, 5], i32[4])(params, x, y)
    g = ig.grad(ig.trace(loss_fn, spec_tree(params), f32[4, 5], i32[4]))(params, x, y)
    loss = step(x, y)
    assert type(loss) is float
    assert loss == pytest.approx(float(loss_at_start), rel=1e-6)  # the loss before the update
    assert step.params["fc0"]["W"] is held  # same buffer, new contents
    assert not np.array_equal(held, original["fc0"]["W"])
    want = tree_map(lambda p, d: p - 0.5 * d, original, g)
    assert_trees_close(step.params, want, rtol=1e-5, atol=1e-6)
    assert_trees_close(params, original, rtol=0, atol=0)  # the caller's arrays are untouched
    assert all(v.dtype == np.float32 for v in flatten(step.params)[0])
    # a second step starts from the updated parameters and lowers the loss on this batch
    assert step(x, y) < loss


def test_compile_step_accepts_a_traced_loss_function():
    model = nn.MLP([5, 3])
    params = model.init(2)
    loss = ig.trace(lambda p, x, y: ig.cross_entropy(model(p, x), y), spec_tree(params),
                    f32[4, 5], i32[4])
    step = ig.compile_step(loss, params, optim.SGD(0.1), backend="numpy", pipeline="O0")
    x = rng(3).standard_normal((4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0], np.int32)
    first = step(x, y)
    assert first == pytest.approx(float(loss(params, x, y)), rel=1e-6)
    assert step(x, y) < first


@pytest.mark.parametrize("batch", [
    (np.zeros((3, 5), np.float32), np.zeros(4, np.int32)),  # wrong batch size
    (np.zeros((4, 6), np.float32), np.zeros(4, np.int32)),  # wrong feature size
    (np.zeros((4, 5), np.float64), np.zeros(4, np.int32)),  # wrong dtype, no silent cast
    (np.zeros((4, 5), np.float32), np.zeros(4, np.float32)),  # float labels
    (np.zeros((4, 5), np.float32),),  # too few arguments
    (np.zeros((4, 5), np.float32), np.zeros(4, np.int32), np.zeros(4, np.int32)),  # too many
], ids=["batch-size", "features", "dtype", "labels", "too-few", "too-many"])
def test_compile_step_rejects_wrong_batches(batch):
    _, _, _, step = small_mlp_step()
    before = tree_map(np.copy, step.params)
    with pytest.raises(ig.ArgumentError):
        step(*batch)
    assert_trees_close(step.params, before, rtol=0, atol=0)  # nothing was updated


def test_compile_step_unknown_backend():
    model = nn.MLP([5, 3])
    with pytest.raises(ig.IrgradError):
        ig.compile_step(lambda p, x: ig.sum(model(p, x)), model.init(0), optim.SGD(0.1),
                        (f32[2, 5],), backend="abacus", pipeline="O0")


def test_training_step_signature():
    params = opt_params()
    loss_fn = ig.trace(opt_loss, spec_tree(params), f64[6, 4], f64[6, 3])
    step = ig.training_step(loss_fn, optim.SGD(0.1, momentum=0.5))
    assert step.ir.result_types[0] == ig.TensorType(ig.DType.f64, ())
    # (params, opt_state, x, t) -> (loss, new_params, new_state)
    assert len(step.ir.params) == 3 + 3 + 2 and len(step.ir.result_types) == 1 + 3 + 3
    with pytest.raises(ig.IrgradError):
        ig.training_step(ig.trace(lambda p: (ig.sum(p), ig.sum(p)), f64[3]), optim.SGD(0.1))


# =============================================================================================
# W1-W4: gradients against finite differences (float64) and against PyTorch
# =============================================================================================

def f64_function(fn):
    return ig.Function(promote_to_f64(fn.ir), fn.in_tree, fn.out_tree)


def batch64(batch):
    return tuple(b.astype(np.float64) if b.dtype == np.float32 else b for b in batch)


class WorkloadCase:
    """A workload's traced loss, params and one batch, in float32 and float64, with the
    float64 loss and gradient computed once and shared by the tests below."""

    def __init__(self, name, rows=None):
        self.name = name
        self.w = W.get(name)
        self.params = self.w.init_params()
        self.batch = self.w.make_batch(rng(7))
        specs = self.w.batch_specs
        if rows is not None:  # the same model and loss on the first `rows` examples
            self.batch = tuple(b[:rows] for b in self.batch)
            specs = tuple(ig.TensorSpec(s.dtype, (rows,) + s.shape[1:]) for s in specs)
        self.loss = ig.trace(self.w.loss_fn, spec_tree(self.params), *specs)
        self.p64, self.b64 = to_f64(self.params), batch64(self.batch)
        self.l64 = f64_function(self.loss)
        self.value64, self.grads64 = f64_function(ig.value_and_grad(self.loss))(self.p64,
                                                                                *self.b64)


_CASES: dict = {}


def workload(name, rows=None) -> WorkloadCase:
    if (name, rows) not in _CASES:
        _CASES[name, rows] = WorkloadCase(name, rows)
    return _CASES[name, rows]


WORKLOAD_SPEC = {
    # name: (param shapes, batch specs, lr)
    "W1": ({"fc0": (64, 128), "fc1": (128, 10)}, (f32[64, 64], i32[64]), 0.1),
    "W2": ({"fc0": (784, 512), "fc1": (512, 512), "fc2": (512, 10)}, (f32[128, 784], i32[128]), 0.01),
    "W3": ({"fc0": (1024, 4096), "fc1": (4096, 1024)}, (f32[512, 1024], f32[512, 1024]), 0.01),
}


@pytest.mark.parametrize("name", sorted(WORKLOAD_SPEC))
def test_mlp_workloads_match_their_definition(name):
    shapes, specs, lr = WORKLOAD_SPEC[name]
    c = workload(name)
    assert {k: v["W"].shape for k, v in c.params.items()} == shapes
    assert all(v["b"].shape == (shape[1],) for v, shape in zip(c.params.values(), shapes.values()))
    assert tuple(c.w.batch_specs) == specs
    opt = c.w.optimizer()
    assert isinstance(opt, optim.SGD) and opt.lr == lr and not opt.momentum and not opt.weight_decay
    x, y = c.b64
    if name == "W3":
        want = np.mean((np_mlp(c.p64, x, "tanh") - y) ** 2)
    else:
        want = np_cross_entropy(np_mlp(c.p64, x, "relu"), y)
    np.testing.assert_allclose(c.value64, want, rtol=1e-12)
    np.testing.assert_allclose(c.loss(c.params, *c.batch), want, rtol=1e-5)


def test_w4_matches_its_definition():
    c = workload("W4")
    assert tuple(c.w.batch_specs) == (i32[8, 64], i32[8, 64])
    p = c.params
    assert p["tok"]["weight"].shape == (256, 128) and p["pos"]["weight"].shape == (64, 128)
    assert sorted(p) == ["block0", "head", "ln_f", "pos", "tok"]
    assert p["block0"]["mlp"]["fc0"]["W"].shape == (128, 512)
    assert p["head"]["W"].shape == (128, 256)
    opt = c.w.optimizer()
    assert isinstance(opt, optim.SGD) and not opt.momentum
    ids, tgt = c.batch
    np.testing.assert_array_equal(ids[:, 1:], tgt[:, :-1])  # targets are the next tokens
    logits = np_transformer(c.p64, ids, 4)
    want = np_cross_entropy(logits.reshape(-1, 256), tgt.reshape(-1))
    np.testing.assert_allclose(c.value64, want, rtol=1e-11)
    np.testing.assert_allclose(c.loss(c.params, ids, tgt), want, rtol=1e-5)


def _leaf_paths(tree, prefix=""):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaf_paths(tree[k], f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, tree


def relu_pattern(p, x):
    """Which ReLUs of an MLP are on, layer by layer (numpy, float64)."""
    out = []
    for i in range(len(p) - 1):
        x = np_linear(p[f"fc{i}"], x)
        out.append(x > 0)
        x = np_relu(x)
    return out


def replace_leaf(tree, path, value):
    if not path:
        return value
    new = dict(tree)
    new[path[0]] = replace_leaf(tree[path[0]], path[1:], value)
    return new


@pytest.mark.parametrize("name", W.FIRST)
def test_workload_gradients_against_finite_differences(name):
    """Sampled coordinates of every parameter, and one direction through all of them.

    W1 and W2 are ReLU networks, smooth only between kinks: a difference quotient whose
    step crosses a kink is wrong, so the step shrinks until no ReLU switches on the
    segment [-eps, eps] (checked with the numpy reference). W3's full batch is big, so its
    check runs on 32 examples (the full batch is compared with PyTorch below)."""
    c = workload(name, rows=32 if name == "W3" else None)
    p64, l64, x = c.p64, c.l64, c.b64[0]
    relu = name in ("W1", "W2")
    base = relu_pattern(p64, x) if relu else None

    def fd_of(at):
        for eps in (1e-5, 1e-6, 1e-7, 1e-8):
            if relu and not all(np.array_equal(a, b) for s in (eps, -eps)
                                for a, b in zip(relu_pattern(at(s), x), base)):
                continue  # this step crosses a kink
            return (float(l64(at(eps), *c.b64)) - float(l64(at(-eps), *c.b64))) / (2 * eps), eps
        raise AssertionError("no kink-free step")

    r = rng(8)
    g_paths = dict(_leaf_paths(c.grads64))
    for path, leaf in _leaf_paths(p64):
        g = g_paths[path]
        assert g.shape == leaf.shape and g.dtype == np.float64
        assert np.any(g != 0), path  # every parameter takes part in the loss
        picks = [np.unravel_index(int(np.argmax(np.abs(g))), g.shape)]
        picks += [tuple(int(r.integers(0, d)) for d in g.shape)
                  for _ in range({"W3": 1, "W4": 0}.get(name, 2))]
        for idx in picks:
            def at(eps, path=path, leaf=leaf, idx=idx):
                moved = leaf.copy()
                moved[idx] += eps
                return replace_leaf(p64, path.split("."), moved)
            fd, eps = fd_of(at)
            tol = 1e-6 * abs(fd) + 1e-9 + 1e-15 * abs(float(c.value64)) / eps
            assert abs(g[idx] - fd) <= tol, (path, idx, g[idx], fd, eps)
    # one directional derivative through every parameter at once
    direction = tree_map(lambda a: r.standard_normal(a.shape), p64)
    fd, eps = fd_of(lambda s: tree_map(lambda a, d: a + s * d, p64, direction))
    ad = sum(float(np.sum(g * d)) for g, d in zip(flatten(c.grads64)[0], flatten(direction)[0]))
    assert ad == pytest.approx(fd, rel=1e-6, abs=1e-9 + 1e-15 * abs(float(c.value64)) / eps)


@pytest.mark.parametrize("name", W.FIRST)
def test_workload_float32_gradients_match_float64(name):
    c = workload(name)
    v32, g32 = ig.value_and_grad(c.loss)(c.params, *c.batch)
    assert np.asarray(v32).dtype == np.float32
    np.testing.assert_allclose(v32, c.value64, rtol=1e-5)
    for a, b in zip(flatten(g32)[0], flatten(c.grads64)[0]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-4 * np.abs(b).max() + 1e-7)


# --- PyTorch ---------------------------------------------------------------------------------

def torch_mlp(torch, p, x, act, n_layers):
    for i in range(n_layers):
        x = x @ p[f"fc{i}"]["W"] + p[f"fc{i}"]["b"]
        if i < n_layers - 1:
            x = act(x)
    return x


def torch_layer_norm(torch, p, x):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], p["gamma"], p["beta"], eps=1e-5)


def torch_transformer_loss(torch, p, ids, tgt, n_heads=4):
    F = torch.nn.functional
    B, T = ids.shape
    x = p["tok"]["weight"][ids] + p["pos"]["weight"][:T]
    i = 0
    while f"block{i}" in p:
        bp = p[f"block{i}"]
        h = torch_layer_norm(torch, bp["ln1"], x)
        C = h.shape[-1]
        D = C // n_heads
        qkv = h @ bp["attn"]["qkv"]["W"] + bp["attn"]["qkv"]["b"]
        q, k, v = (qkv[..., j * C:(j + 1) * C].reshape(B, T, n_heads, D).transpose(1, 2)
                   for j in range(3))
        s = q @ k.transpose(-1, -2) / math.sqrt(D)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v
        a = a.transpose(1, 2).reshape(B, T, C)
        x = x + a @ bp["attn"]["proj"]["W"] + bp["attn"]["proj"]["b"]
        h = torch_layer_norm(torch, bp["ln2"], x)
        h = F.gelu(h @ bp["mlp"]["fc0"]["W"] + bp["mlp"]["fc0"]["b"], approximate="tanh")
        x = x + h @ bp["mlp"]["fc1"]["W"] + bp["mlp"]["fc1"]["b"]
        i += 1
    logits = torch_layer_norm(torch, p["ln_f"], x) @ p["head"]["W"] + p["head"]["b"]
    return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(B * T))


def torch_loss(torch, name, p, batch):
    F = torch.nn.functional
    if name in ("W1", "W2"):
        x, y = batch
        return F.cross_entropy(torch_mlp(torch, p, x, torch.relu, len(p)), y)
    if name == "W3":
        x, t = batch
        return F.mse_loss(torch_mlp(torch, p, x, torch.tanh, len(p)), t)
    ids, tgt = batch
    return torch_transformer_loss(torch, p, ids, tgt)


@pytest.mark.parametrize("name", W.FIRST)
def test_workload_loss_and_gradients_against_pytorch(name):
    torch = pytest.importorskip("torch")
    c = workload(name)
    tp = tree_map(lambda a: torch.tensor(a, requires_grad=True), c.p64)
    tb = [torch.from_numpy(b) if b.dtype == np.float64 else torch.from_numpy(b.astype(np.int64))
          for b in c.b64]
    tl = torch_loss(torch, name, tp, tb)
    tl.backward()
    np.testing.assert_allclose(c.value64, tl.item(), rtol=1e-11)
    for (path, g), (_, t) in zip(_leaf_paths(c.grads64), _leaf_paths(tp)):
        tg = t.grad.numpy()
        np.testing.assert_allclose(g, tg, rtol=1e-8, atol=1e-10 * max(1.0, np.abs(tg).max()),
                                   err_msg=path)


def test_workload_training_step_matches_pytorch_sgd():
    """Three SGD steps of W1 in float64, irgrad's compiled step against torch.optim.SGD."""
    torch = pytest.importorskip("torch")
    w = W.get("W1")
    p64 = to_f64(w.init_params())
    specs = tuple(ig.TensorSpec(ig.DType.f64 if s.dtype is ig.DType.f32 else s.dtype, s.shape)
                  for s in w.batch_specs)
    step = ig.compile_step(w.loss_fn, p64, w.optimizer(), specs, backend="numpy", pipeline="O0")
    tp = tree_map(lambda a: torch.tensor(a, requires_grad=True), p64)
    topt = torch.optim.SGD(flatten(tp)[0], lr=w.lr)
    for batch in w.batches(3, seed=4):
        x, y = batch
        loss = step(x.astype(np.float64), y)
        topt.zero_grad()
        tl = torch_loss(torch, "W1", tp, [torch.from_numpy(x.astype(np.float64)),
                                          torch.from_numpy(y.astype(np.int64))])
        tl.backward()
        topt.step()
        assert loss == pytest.approx(tl.item(), rel=1e-12)
        assert_trees_close(step.params, tree_map(lambda t: t.detach().numpy(), tp),
                           rtol=1e-10, atol=1e-13)


# =============================================================================================
# Training W1 on the digits data on the interpreter
# =============================================================================================

def test_training_w1_on_digits_reaches_95_percent():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(X))
    n_train = int(0.8 * len(X))
    tr, te = perm[:n_train], perm[n_train:]
    w = W.get("W1")
    (batch,) = {s.shape[0] for s in w.batch_specs}
    step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs,
                           backend="numpy", pipeline="O0")
    predict = ig.trace(lambda p, x: w.model(p, x), spec_tree(step.params), f32[len(te), 64])
    acc0 = float(np.mean(np.argmax(predict(step.params, X[te]), 1) == y[te]))
    order_rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    losses = []
    for epoch in range(30):
        order = order_rng.permutation(tr)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            losses.append(step(X[idx], y[idx]))
    elapsed = time.perf_counter() - t0
    acc = float(np.mean(np.argmax(predict(step.params, X[te]), 1) == y[te]))
    assert acc0 < 0.5
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:5])
    assert acc >= 0.95, (acc, elapsed)
