"""W5 (LeNet-5) and W6 (ResNet-8) training steps in PyTorch (eager) and JAX (jit), used only
when installed; peer_steps.torch_step / jax_step hand these workloads here.

Both start from irgrad's initial parameters (`workload.init_params()`, nested numpy dicts
keyed as ig.nn.Sequential keys them: by layer position "0", "1", ...; Conv2d "weight"
[O, I, kH, kW] and "bias"; Linear "W" (in, out) and "b"; BatchNorm2d "gamma"/"beta" with
state "mean"/"var"; W6's BasicBlock conv1/bn1/conv2/bn2/down_conv/down_bn) and W6 also
from its batch-norm statistics (`workload.init_state()`), and follow irgrad's semantics:

- max-pool 2 (stride 2), flatten in NCHW order, mean cross-entropy;
- batch norm in training mode: normalized by the batch's mean and biased variance
  (eps 1e-5), running mean and unbiased running variance updated with momentum 0.1;
- W6's global average pool is the mean over (H, W);
- SGD with PyTorch's semantics: buf = momentum buf + g (the first buf = g), p -= lr buf.

A step is `step(x, y) -> float loss`; `step.params()` and `step.state()` give the current
parameters and batch-norm statistics as nested numpy dicts shaped like irgrad's (tests
compare trajectories with them); the PyTorch step's `evaluate(x, y)` is the loss in
evaluation mode.
"""

from __future__ import annotations

import numpy as np

# W6's residual blocks: (params key, stride); a block with "down_conv" has the 1x1 shortcut
RESNET_BLOCKS = (("3", 1), ("4", 2), ("5", 2))
BN_EPS, BN_MOMENTUM = 1e-5, 0.1


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _nest(flat: dict) -> dict:
    out: dict = {}
    for name, v in flat.items():
        *path, leaf = name.split(".")
        d = out
        for p in path:
            d = d.setdefault(p, {})
        d[leaf] = v
    return out


def _expected_keys(name: str, params: dict) -> tuple[set, set]:
    """(parameter names, state names) the hand-written model below uses."""
    if name == "W5":
        return {f"{l}.{k}" for l in ("0", "3") for k in ("weight", "bias")} | \
               {f"{l}.{k}" for l in ("7", "9", "11") for k in ("W", "b")}, set()
    if name != "W6":
        raise ValueError(f"peer_conv_steps has W5 and W6, not {name}")
    p = {"0.weight", "7.W", "7.b"} | {f"1.{k}" for k in ("gamma", "beta")}
    s = {"1.mean", "1.var"}
    for blk, _ in RESNET_BLOCKS:
        bns = ["bn1", "bn2"] + (["down_bn"] if "down_conv" in params.get(blk, {}) else [])
        p |= {f"{blk}.conv1.weight", f"{blk}.conv2.weight"}
        if "down_conv" in params.get(blk, {}):
            p.add(f"{blk}.down_conv.weight")
        p |= {f"{blk}.{bn}.{k}" for bn in bns for k in ("gamma", "beta")}
        s |= {f"{blk}.{bn}.{k}" for bn in bns for k in ("mean", "var")}
    return p, s


def _check_keys(workload, flat_p: dict, flat_s: dict) -> None:
    want_p, want_s = _expected_keys(workload.name, _nest(flat_p))
    if set(flat_p) != want_p or set(flat_s) != want_s:
        raise ValueError(f"{workload.name}: the parameters/state do not have the layout "
                         f"peer_conv_steps expects (params {sorted(set(flat_p) ^ want_p)}, "
                         f"state {sorted(set(flat_s) ^ want_s)} differ); update it with workloads.py")


def _initial_state(workload, state):
    if state is None and workload.stateful:
        state = workload.init_state()
    return _flat(state) if state else {}


# --- PyTorch ------------------------------------------------------------------------------


class _TorchStep:
    def __init__(self, fn, evaluate, P, S):
        self._fn, self.evaluate, self.P, self.S = fn, evaluate, P, S

    def __call__(self, x, y) -> float:
        return self._fn(x, y)

    def params(self) -> dict:
        return _nest({k: v.detach().cpu().numpy().copy() for k, v in self.P.items()})

    def state(self) -> dict:
        return _nest({k: v.cpu().numpy().copy() for k, v in self.S.items()})


def torch_conv_step(workload, params, threads: int = 1, device: str = "cpu", state=None):
    """The W5/W6 step in PyTorch eager on `device` (TF32 off on the GPU, as irgrad's
    default); `state` defaults to `workload.init_state()`."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    flat_p, flat_s = _flat(params), _initial_state(workload, state)
    _check_keys(workload, flat_p, flat_s)
    P = {k: torch.tensor(np.asarray(v), device=dev, requires_grad=True) for k, v in flat_p.items()}
    S = {k: torch.tensor(np.asarray(v), device=dev) for k, v in flat_s.items()}
    opt = torch.optim.SGD(list(P.values()), lr=workload.lr, momentum=workload.momentum)

    def linear(x, l):
        return x @ P[f"{l}.W"] + P[f"{l}.b"]

    mode = {"train": True}

    def bn(x, pre):
        return F.batch_norm(x, S[pre + ".mean"], S[pre + ".var"], P[pre + ".gamma"], P[pre + ".beta"],
                            training=mode["train"], momentum=BN_MOMENTUM, eps=BN_EPS)

    def lenet(x):
        x = F.max_pool2d(torch.relu(F.conv2d(x, P["0.weight"], P["0.bias"])), 2)
        x = F.max_pool2d(torch.relu(F.conv2d(x, P["3.weight"], P["3.bias"])), 2)
        x = torch.relu(linear(x.reshape(x.shape[0], -1), "7"))
        return linear(torch.relu(linear(x, "9")), "11")

    def resnet(x):
        x = torch.relu(bn(F.conv2d(x, P["0.weight"], padding=1), "1"))
        for blk, stride in RESNET_BLOCKS:
            h = torch.relu(bn(F.conv2d(x, P[f"{blk}.conv1.weight"], stride=stride, padding=1), f"{blk}.bn1"))
            h = bn(F.conv2d(h, P[f"{blk}.conv2.weight"], padding=1), f"{blk}.bn2")
            if f"{blk}.down_conv.weight" in P:
                x = bn(F.conv2d(x, P[f"{blk}.down_conv.weight"], stride=stride), f"{blk}.down_bn")
            x = torch.relu(h + x)
        return linear(x.mean(dim=(2, 3)), "7")

    model = lenet if workload.name == "W5" else resnet

    def step(x, y):
        x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev).long()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def evaluate(x, y):
        """The loss in evaluation mode (batch norm on the running statistics); nothing changes."""
        mode["train"] = False
        try:
            with torch.no_grad():
                x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev).long()
                return float(F.cross_entropy(model(x), y))
        finally:
            mode["train"] = True

    return _TorchStep(step, evaluate, P, S)


# --- JAX ----------------------------------------------------------------------------------


class _JaxStep:
    def __init__(self, update, carry):
        self._update, self._carry = update, carry

    def __call__(self, x, y) -> float:
        loss, *self._carry = self._update(*self._carry, x, y)
        return float(loss)

    def params(self) -> dict:
        return _nest({k: np.asarray(v).copy() for k, v in self._carry[0].items()})

    def state(self) -> dict:
        return _nest({k: np.asarray(v).copy() for k, v in self._carry[2].items()})


def jax_conv_step(workload, params, threads: int = 1, state=None):
    """The W5/W6 step as one jax.jit of (params, momentum buffers, batch-norm state, x, y)
    -> (loss, params, buffers, state), the carried arrays donated."""
    import os
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                                       f"intra_op_parallelism_threads={threads}")
    import jax
    import jax.numpy as jnp
    from jax import lax
    flat_p, flat_s = _flat(params), _initial_state(workload, state)
    _check_keys(workload, flat_p, flat_s)
    P = {k: jnp.asarray(np.asarray(v)) for k, v in flat_p.items()}
    S = {k: jnp.asarray(np.asarray(v)) for k, v in flat_s.items()}
    lr, mom = workload.lr, workload.momentum
    B = {k: jnp.zeros_like(v) for k, v in P.items()} if mom else {}

    def conv(x, w, b=None, stride=1, pad=0):
        y = lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                     precision=lax.Precision.HIGHEST)
        return y if b is None else y + b[None, :, None, None]

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def linear(p, x, l):
        return x @ p[f"{l}.W"] + p[f"{l}.b"]

    def bn(p, s, new, x, pre):
        n = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(axis=(0, 2, 3))
        xc = x - mean[None, :, None, None]
        var = (xc * xc).mean(axis=(0, 2, 3))
        y = xc * (1.0 / jnp.sqrt(var + BN_EPS))[None, :, None, None]
        m = BN_MOMENTUM
        new[pre + ".mean"] = lax.stop_gradient(s[pre + ".mean"] * (1 - m) + mean * m)
        new[pre + ".var"] = lax.stop_gradient(s[pre + ".var"] * (1 - m) + var * (n / (n - 1)) * m)
        return y * p[pre + ".gamma"][None, :, None, None] + p[pre + ".beta"][None, :, None, None]

    def lenet(p, s, x):
        x = pool(jax.nn.relu(conv(x, p["0.weight"], p["0.bias"])))
        x = pool(jax.nn.relu(conv(x, p["3.weight"], p["3.bias"])))
        x = jax.nn.relu(linear(p, x.reshape(x.shape[0], -1), "7"))
        return linear(p, jax.nn.relu(linear(p, x, "9")), "11"), s

    def resnet(p, s, x):
        new = {}
        x = jax.nn.relu(bn(p, s, new, conv(x, p["0.weight"], pad=1), "1"))
        for blk, stride in RESNET_BLOCKS:
            h = jax.nn.relu(bn(p, s, new, conv(x, p[f"{blk}.conv1.weight"], stride=stride, pad=1), f"{blk}.bn1"))
            h = bn(p, s, new, conv(h, p[f"{blk}.conv2.weight"], pad=1), f"{blk}.bn2")
            if f"{blk}.down_conv.weight" in p:
                x = bn(p, s, new, conv(x, p[f"{blk}.down_conv.weight"], stride=stride), f"{blk}.down_bn")
            x = jax.nn.relu(h + x)
        return linear(p, x.mean(axis=(2, 3)), "7"), new

    model = lenet if workload.name == "W5" else resnet

    def loss_fn(p, s, x, y):
        logits, new_s = model(p, s, x)
        lsm = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(lsm, y[:, None], axis=1)), new_s

    def update(p, b, s, x, y):
        (loss, new_s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, x, y)
        if mom:
            b = jax.tree_util.tree_map(lambda bb, d: bb * mom + d, b, g)
            p = jax.tree_util.tree_map(lambda x_, d: x_ - lr * d, p, b)
        else:
            p = jax.tree_util.tree_map(lambda x_, d: x_ - lr * d, p, g)
        return loss, p, b, new_s

    return _JaxStep(jax.jit(update, donate_argnums=(0, 1, 2)), [P, B, S])
