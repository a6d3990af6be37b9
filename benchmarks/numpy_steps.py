"""W1-W4 training steps written by hand in numpy (float32): a baseline the benchmark
ratios are taken against (W5 and W6, convolutional, have none: make_step raises
NoHandStep). Each `make_*_step(params, lr)` returns `step(*batch) -> loss`
that updates `params` (a dict shaped like irgrad's) in place with plain SGD, using the
same definitions as workloads (weights stored (in, out), pre-LayerNorm block,
causal mask, tanh GELU, next-token cross-entropy).
"""

from __future__ import annotations

import math

import numpy as np

F = np.float32


def _log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    s = z - m
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def _ce_backward(logits, labels):
    """(loss, dlogits) of mean cross-entropy over the rows."""
    n = logits.shape[0]
    lsm = _log_softmax(logits)
    loss = -lsm[np.arange(n), labels].mean()
    d = np.exp(lsm)
    d[np.arange(n), labels] -= 1.0
    return loss, d * F(1.0 / n)


def make_mlp_step(params, lr, activation="relu", loss="ce"):
    layers = sorted(params, key=lambda k: int(k[2:]))
    lr = F(lr)

    def step(x, y):
        acts, pre = [x], []
        h = x
        for i, name in enumerate(layers):
            z = h @ params[name]["W"] + params[name]["b"]
            pre.append(z)
            if i < len(layers) - 1:
                h = np.maximum(z, 0) if activation == "relu" else np.tanh(z)
                acts.append(h)
            else:
                h = z
        if loss == "ce":
            value, d = _ce_backward(h, y)
        else:
            diff = h - y
            value = np.mean(diff * diff)
            d = diff * F(2.0 / diff.size)
        for i in reversed(range(len(layers))):
            p = params[layers[i]]
            dW = acts[i].T @ d
            db = d.sum(axis=0)
            if i > 0:
                d = d @ p["W"].T
                if activation == "relu":
                    d *= pre[i - 1] > 0
                else:
                    d *= 1 - acts[i] * acts[i]
            p["W"] -= lr * dW
            p["b"] -= lr * db
        return float(value)

    return step


def _layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(var + F(eps))
    xh = xc * inv
    return xh * g + b, (xh, inv)


def _layer_norm_backward(dy, g, cache):
    xh, inv = cache
    c = xh.shape[-1]
    dxh = dy * g
    dg = (dy * xh).reshape(-1, c).sum(0)
    db = dy.reshape(-1, c).sum(0)
    dx = inv * (dxh - dxh.mean(-1, keepdims=True) - xh * (dxh * xh).mean(-1, keepdims=True))
    return dx, dg, db


_GELU_C = F(math.sqrt(2.0 / math.pi))


def _gelu(u):
    t = np.tanh(_GELU_C * (u + F(0.044715) * u * u * u))
    return F(0.5) * u * (1 + t), t


def _gelu_backward(du, u, t):
    dinner = _GELU_C * (1 + F(3 * 0.044715) * u * u)
    return du * (F(0.5) * (1 + t) + F(0.5) * u * (1 - t * t) * dinner)


def make_transformer_step(params, lr, n_heads=4):
    lr = F(lr)
    blk = params["block0"]

    def step(ids, targets):
        B, T = ids.shape
        C = params["tok"]["weight"].shape[1]
        H, D = n_heads, C // n_heads
        x = params["tok"]["weight"][ids] + params["pos"]["weight"][:T]
        h1, c1 = _layer_norm(x, blk["ln1"]["gamma"], blk["ln1"]["beta"])
        a = blk["attn"]
        qkv = h1.reshape(B * T, C) @ a["qkv"]["W"] + a["qkv"]["b"]
        qkv = qkv.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)  # [3, B, H, T, D]
        q, k, v = qkv[0], qkv[1], qkv[2]
        s = (q @ k.transpose(0, 1, 3, 2)) * F(1.0 / math.sqrt(D))
        mask = np.tril(np.ones((T, T), dtype=bool))
        s = np.where(mask, s, F(-1e9))
        e = np.exp(s - s.max(-1, keepdims=True))
        att = e / e.sum(-1, keepdims=True)
        o = (att @ v).transpose(0, 2, 1, 3).reshape(B * T, C)
        x2 = x + (o @ a["proj"]["W"] + a["proj"]["b"]).reshape(B, T, C)
        h2, c2 = _layer_norm(x2, blk["ln2"]["gamma"], blk["ln2"]["beta"])
        m = blk["mlp"]
        u = h2.reshape(B * T, C) @ m["fc0"]["W"] + m["fc0"]["b"]
        g, t = _gelu(u)
        x3 = x2 + (g @ m["fc1"]["W"] + m["fc1"]["b"]).reshape(B, T, C)
        hf, cf = _layer_norm(x3, params["ln_f"]["gamma"], params["ln_f"]["beta"])
        logits = hf.reshape(B * T, C) @ params["head"]["W"] + params["head"]["b"]
        loss, dl = _ce_backward(logits, targets.reshape(-1))
        grads = {}
        grads["head.W"] = hf.reshape(B * T, C).T @ dl
        grads["head.b"] = dl.sum(0)
        dhf = (dl @ params["head"]["W"].T).reshape(B, T, C)
        dx3, grads["ln_f.gamma"], grads["ln_f.beta"] = _layer_norm_backward(dhf, params["ln_f"]["gamma"], cf)
        dm = dx3.reshape(B * T, C)
        grads["fc1.W"] = g.T @ dm
        grads["fc1.b"] = dm.sum(0)
        du = _gelu_backward(dm @ m["fc1"]["W"].T, u, t)
        grads["fc0.W"] = h2.reshape(B * T, C).T @ du
        grads["fc0.b"] = du.sum(0)
        dh2 = (du @ m["fc0"]["W"].T).reshape(B, T, C)
        dx2n, grads["ln2.gamma"], grads["ln2.beta"] = _layer_norm_backward(dh2, blk["ln2"]["gamma"], c2)
        dx2 = dx3 + dx2n
        dy = dx2.reshape(B * T, C)
        grads["proj.W"] = o.T @ dy
        grads["proj.b"] = dy.sum(0)
        do = (dy @ a["proj"]["W"].T).reshape(B, T, H, D).transpose(0, 2, 1, 3)
        datt = do @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ do
        ds = att * (datt - (datt * att).sum(-1, keepdims=True))
        ds = np.where(mask, ds, F(0)) * F(1.0 / math.sqrt(D))
        dq = ds @ k
        dk = ds.transpose(0, 1, 3, 2) @ q
        dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B * T, 3 * C)
        grads["qkv.W"] = h1.reshape(B * T, C).T @ dqkv
        grads["qkv.b"] = dqkv.sum(0)
        dh1 = (dqkv @ a["qkv"]["W"].T).reshape(B, T, C)
        dx1, grads["ln1.gamma"], grads["ln1.beta"] = _layer_norm_backward(dh1, blk["ln1"]["gamma"], c1)
        dx = dx2 + dx1
        grads["pos"] = dx.sum(0)
        dtok = np.zeros_like(params["tok"]["weight"])
        np.add.at(dtok, ids.reshape(-1), dx.reshape(B * T, C))
        # SGD, in place
        params["head"]["W"] -= lr * grads["head.W"]
        params["head"]["b"] -= lr * grads["head.b"]
        params["ln_f"]["gamma"] -= lr * grads["ln_f.gamma"]
        params["ln_f"]["beta"] -= lr * grads["ln_f.beta"]
        for name, sub, key in (("fc0", m, "fc0"), ("fc1", m, "fc1"), ("qkv", a, "qkv"), ("proj", a, "proj")):
            sub[key]["W"] -= lr * grads[name + ".W"]
            sub[key]["b"] -= lr * grads[name + ".b"]
        for ln in ("ln1", "ln2"):
            blk[ln]["gamma"] -= lr * grads[ln + ".gamma"]
            blk[ln]["beta"] -= lr * grads[ln + ".beta"]
        params["pos"]["weight"][:T] -= lr * grads["pos"]
        params["tok"]["weight"] -= lr * dtok
        return float(loss)

    return step


class NoHandStep(NotImplementedError):
    """The workload has no step written by hand here (bench.py reports it as "n/a")."""


def make_step(workload, params):
    """The by-hand step for a workloads.Workload (params updated in place); NoHandStep (a
    NotImplementedError) for the workloads that have none (the convolutional W5 and W6)."""
    if workload.name == "W1" or workload.name == "W2":
        return make_mlp_step(params, workload.lr, "relu", "ce")
    if workload.name == "W3":
        return make_mlp_step(params, workload.lr, "tanh", "mse")
    if workload.name == "W4":
        return make_transformer_step(params, workload.lr)
    raise NoHandStep(f"no numpy step by hand for {workload.name} ({workload.title})")
