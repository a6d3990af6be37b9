"""W1-W4 training steps in PyTorch (eager) and JAX (jit), used only when installed; W5 and
W6 (convolutional) are in peer_conv_steps.py, which torch_step and jax_step hand them to.

Both take irgrad's initial parameters (numpy dicts, weights stored (in, out)) so every
system starts from the same point and sees the same batch; the benchmark checks each
system's first loss against irgrad's interpreter before timing.
"""

from __future__ import annotations

import math
import os
import sys

CONV_WORKLOADS = ("W5", "W6")


def _conv_steps():
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import peer_conv_steps
    return peer_conv_steps


def _flat(params, prefix=""):
    out = {}
    for k, v in params.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, name + "."))
        else:
            out[name] = v
    return out


def torch_step(workload, params, threads: int = 1, device: str = "cpu"):
    """The step in PyTorch eager on `device` ("cpu" or "cuda"; float32 GEMMs on the GPU,
    TF32 off, as irgrad's default). Batches come as numpy arrays; the loss goes back as a
    float (which waits for the GPU)."""
    if workload.name in CONV_WORKLOADS:
        return _conv_steps().torch_conv_step(workload, params, threads, device)
    import torch
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    P = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in _flat(params).items()}
    lr = workload.lr
    name = workload.name
    masks = {}

    def mlp(x, act):
        layers = sorted({k.split(".")[0] for k in P}, key=lambda s: int(s[2:]))
        for i, l in enumerate(layers):
            x = x @ P[f"{l}.W"] + P[f"{l}.b"]
            if i < len(layers) - 1:
                x = torch.relu(x) if act == "relu" else torch.tanh(x)
        return x

    def ln(x, pre):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], P[pre + ".gamma"], P[pre + ".beta"], 1e-5)

    def transformer(ids, targets):
        B, T = ids.shape
        C = P["tok.weight"].shape[1]
        H, D = 4, C // 4
        if T not in masks:
            masks[T] = torch.tril(torch.ones(T, T, dtype=torch.bool, device=dev))
        x = P["tok.weight"][ids.long()] + P["pos.weight"][:T]
        h = ln(x, "block0.ln1")
        qkv = h @ P["block0.attn.qkv.W"] + P["block0.attn.qkv.b"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
        s = torch.where(masks[T], s, torch.tensor(-1e9, device=dev))
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + o @ P["block0.attn.proj.W"] + P["block0.attn.proj.b"]
        h = ln(x, "block0.ln2")
        u = h @ P["block0.mlp.fc0.W"] + P["block0.mlp.fc0.b"]
        x = x + torch.nn.functional.gelu(u, approximate="tanh") @ P["block0.mlp.fc1.W"] + P["block0.mlp.fc1.b"]
        logits = ln(x, "ln_f") @ P["head.W"] + P["head.b"]
        return torch.nn.functional.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1).long())

    def loss_fn(a, b):
        a, b = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        if name in ("W1", "W2"):
            return torch.nn.functional.cross_entropy(mlp(a, "relu"), b.long())
        if name == "W3":
            return torch.mean((mlp(a, "tanh") - b) ** 2)
        return transformer(a, b)

    def step(a, b):
        loss = loss_fn(a, b)
        for p in P.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in P.values():
                p -= lr * p.grad
        return float(loss.detach())

    return step


def jax_step(workload, params, threads: int):
    if workload.name in CONV_WORKLOADS:
        return _conv_steps().jax_conv_step(workload, params, threads)
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                                       f"intra_op_parallelism_threads={threads}")
    import jax
    import jax.numpy as jnp
    P = {k: jnp.asarray(v) for k, v in _flat(params).items()}
    lr = workload.lr
    name = workload.name

    def mlp(p, x, act):
        layers = sorted({k.split(".")[0] for k in p}, key=lambda s: int(s[2:]))
        for i, l in enumerate(layers):
            x = x @ p[f"{l}.W"] + p[f"{l}.b"]
            if i < len(layers) - 1:
                x = jax.nn.relu(x) if act == "relu" else jnp.tanh(x)
        return x

    def ce(logits, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def ln(p, x, pre):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * p[pre + ".gamma"] + p[pre + ".beta"]

    def transformer(p, ids, targets):
        B, T = ids.shape
        C = p["tok.weight"].shape[1]
        H, D = 4, C // 4
        x = p["tok.weight"][ids] + p["pos.weight"][:T]
        h = ln(p, x, "block0.ln1")
        qkv = h @ p["block0.attn.qkv.W"] + p["block0.attn.qkv.b"]
        q, k, v = jnp.split(qkv, 3, axis=-1)
        q, k, v = (t.reshape(B, T, H, D).transpose(0, 2, 1, 3) for t in (q, k, v))
        s = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(D))
        s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -1e9)
        o = (jax.nn.softmax(s, -1) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + o @ p["block0.attn.proj.W"] + p["block0.attn.proj.b"]
        h = ln(p, x, "block0.ln2")
        u = h @ p["block0.mlp.fc0.W"] + p["block0.mlp.fc0.b"]
        x = x + jax.nn.gelu(u, approximate=True) @ p["block0.mlp.fc1.W"] + p["block0.mlp.fc1.b"]
        logits = ln(p, x, "ln_f") @ p["head.W"] + p["head.b"]
        return ce(logits.reshape(B * T, -1), targets.reshape(-1))

    def loss_fn(p, a, b):
        if name in ("W1", "W2"):
            return ce(mlp(p, a, "relu"), b)
        if name == "W3":
            return jnp.mean((mlp(p, a, "tanh") - b) ** 2)
        return transformer(p, a, b)

    @jax.jit
    def update(p, a, b):
        loss, g = jax.value_and_grad(loss_fn)(p, a, b)
        return loss, jax.tree_util.tree_map(lambda x, d: x - lr * d, p, g)

    state = {"p": P}

    def step(a, b):
        loss, state["p"] = update(state["p"], a, b)
        return float(loss)

    return step
