"""`ig.optim`: optimizers whose updates are IR ops like everything else.

An optimizer has `init(params) -> state` (numpy arrays, a pytree) and, inside a trace,
`update(params, grads, state) -> (new_params, new_state)`. The semantics follow PyTorch:

- `SGD(lr, momentum=0, weight_decay=0)`:  g = grad + wd p;  buf = momentum buf + g;
  p = p - lr buf  (buf starts at zero, which equals PyTorch's first-step buf = g);
- `Adam(lr, betas, eps, weight_decay, decoupled_weight_decay=False)`: bias-corrected Adam,
  t = t + 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
  p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
  Weight decay is PyTorch Adam's L2 form by default (g = grad + wd p); with
  `decoupled_weight_decay=True` it is decoupled (AdamW: p = p - lr wd p before the step).
  `AdamW` is Adam with decoupled decay and PyTorch's default weight_decay of 0.01.
"""

from __future__ import annotations

import numpy as np

from . import library as L
from ..pytree import flatten, tree_map, unflatten


class Optimizer:
    def init(self, params) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, params, grads, state):  # pragma: no cover - abstract
        raise NotImplementedError


def _zeros_like_tree(params):
    return tree_map(lambda p: np.zeros_like(np.asarray(p)), params)


class SGD(Optimizer):
    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"

    def init(self, params) -> dict:
        return {"momentum": _zeros_like_tree(params)} if self.momentum else {}

    def update(self, params, grads, state):
        p_leaves, tree = flatten(params)
        g_leaves = flatten(grads)[0]
        bufs = flatten(state["momentum"])[0] if self.momentum else [None] * len(p_leaves)
        new_p, new_b = [], []
        for p, g, buf in zip(p_leaves, g_leaves, bufs):
            if self.weight_decay:
                g = g + p * self.weight_decay
            if self.momentum:
                buf = buf * self.momentum + g
                g = buf
                new_b.append(buf)
            new_p.append(p - g * self.lr)
        new_state = {"momentum": unflatten(tree, new_b)} if self.momentum else {}
        return unflatten(tree, new_p), new_state


class Adam(Optimizer):
    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False):
        self.lr, self.eps = float(lr), float(eps)
        self.b1, self.b2 = (float(b) for b in betas)
        self.weight_decay = float(weight_decay)
        self.decoupled = bool(decoupled_weight_decay)

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr}, betas=({self.b1}, {self.b2}), eps={self.eps}, "
                f"weight_decay={self.weight_decay}, decoupled_weight_decay={self.decoupled})")

    def init(self, params) -> dict:
        leaves = flatten(params)[0]
        dtype = np.asarray(leaves[0]).dtype if leaves else np.float32
        return {"step": np.zeros((), dtype), "m": _zeros_like_tree(params),
                "v": _zeros_like_tree(params)}

    def update(self, params, grads, state):
        p_leaves, tree = flatten(params)
        g_leaves = flatten(grads)[0]
        m_leaves, v_leaves = flatten(state["m"])[0], flatten(state["v"])[0]
        t = state["step"] + 1.0
        # bias corrections 1 - b^t, computed once per step as scalars
        c1 = 1.0 - L.exp(t * float(np.log(self.b1)))
        c2 = 1.0 - L.exp(t * float(np.log(self.b2)))
        step_size = self.lr / c1
        inv_sqrt_c2 = 1.0 / L.sqrt(c2)
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(p_leaves, g_leaves, m_leaves, v_leaves):
            if self.weight_decay and not self.decoupled:
                g = g + p * self.weight_decay
            if self.weight_decay and self.decoupled:
                p = p * (1.0 - self.lr * self.weight_decay)
            m = m * self.b1 + g * (1.0 - self.b1)
            v = v * self.b2 + (g * g) * (1.0 - self.b2)
            denom = L.sqrt(v) * inv_sqrt_c2 + self.eps
            new_p.append(p - m * step_size / denom)
            new_m.append(m)
            new_v.append(v)
        state = {"step": t, "m": unflatten(tree, new_m), "v": unflatten(tree, new_v)}
        return unflatten(tree, new_p), state


class AdamW(Adam):
    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(lr, betas, eps, weight_decay, decoupled_weight_decay=True)
