"""`ig.nn` layers for convolutional networks: Conv2d, pooling, BatchNorm2d, Dropout, Flatten,
ReLU, Sequential.

The functional style of `ig.nn` holds: `params = layer.init(seed)`, `layer(params, x)`.
Layers with state or randomness take them as arguments and give new state back, so the
whole step stays a pure function (JAX's flax/haiku convention, PyTorch's semantics):

- a stateful layer (`stateful = True`, BatchNorm2d) has `init_state()` and is called
  `layer(params, x, state=state, train=True) -> (y, new_state)`; `train=False` uses the
  state and returns it unchanged;
- a random layer (`random = True`, Dropout) is called `layer(params, x, key=key,
  train=True) -> y` and is the identity when `train=False`;
- `Sequential` threads both: `seq(params, x, state=..., key=..., train=...)` returns
  `(y, new_state)` when it holds a stateful layer, else `y`; it splits `key` once per
  random layer. Plain functions of x (ig.relu, ...) are layers too.

`ig.compile_step(..., state=..., key=...)` carries the state and a per-step key inside
the compiled step (transforms/training.py).
"""

from __future__ import annotations

import math

import numpy as np

from . import conv as C
from . import library as L
from . import random as R
from .specs import as_dtype
from .tensor import as_tensor, fail, reshape


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Layer:
    """What Sequential asks of a layer (see the module docstring)."""

    stateful = False
    random = False
    has_params = False

    def init(self, seed=0) -> dict:
        return {}

    def init_state(self) -> dict:
        return {}

    def __call__(self, params, x, **kw):  # pragma: no cover - abstract
        raise NotImplementedError


def _pair(v, what):
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return tuple(int(a) for a in v)
    raise fail(f"{what} must be an int or a pair, got {v!r}")


class Conv2d(Layer):
    """PyTorch's Conv2d: weight [out, in/groups, kH, kW] and bias [out], both uniform in
    +-1/sqrt(fan_in), fan_in = in/groups kH kW (kaiming_uniform with a = sqrt 5, PyTorch's
    default)."""

    has_params = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 dilation=1, groups=1, dtype="f32"):
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "Conv2d kernel_size")
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.bias = bool(bias)
        self.dtype = as_dtype(dtype).np
        if self.in_channels % groups or self.out_channels % groups:
            raise fail(f"Conv2d: groups={groups} must divide in_channels ({in_channels}) and "
                       f"out_channels ({out_channels})")

    def init(self, seed=0) -> dict:
        rng = _rng(seed)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        p = {"weight": rng.uniform(-bound, bound, shape).astype(self.dtype)}
        if self.bias:
            p["bias"] = rng.uniform(-bound, bound, (self.out_channels,)).astype(self.dtype)
        return p

    def __call__(self, params, x, **kw):
        return C.conv2d(x, params["weight"], params.get("bias") if self.bias else None,
                        self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def __call__(self, params, x, **kw):
        return C.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def __call__(self, params, x, **kw):
        return C.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(Layer):
    """[N, ...] -> [N, prod(...)] (PyTorch's start_dim=1)."""

    def __call__(self, params, x, **kw):
        x = as_tensor(x)
        return reshape(x, (x.shape[0], -1)) if x.ndim != 2 else x


class ReLU(Layer):
    def __call__(self, params, x, **kw):
        return L.relu(x)


class BatchNorm2d(Layer):
    """PyTorch's BatchNorm2d over [N, C, H, W]: params gamma (ones) and beta (zeros), state
    mean (zeros) and var (ones). Training normalizes with the batch's mean and biased
    variance and updates the running mean and the unbiased running variance by
    `momentum`; evaluation normalizes with the running statistics."""

    has_params = True
    stateful = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype="f32"):
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.dtype = as_dtype(dtype).np

    def init(self, seed=0) -> dict:
        c = self.num_features
        return {"gamma": np.ones(c, self.dtype), "beta": np.zeros(c, self.dtype)}

    def init_state(self) -> dict:
        c = self.num_features
        return {"mean": np.zeros(c, self.dtype), "var": np.ones(c, self.dtype)}

    def __call__(self, params, x, state=None, train=True, **kw):
        x = as_tensor(x)
        c = self.num_features
        if x.ndim != 4 or x.shape[1] != c:
            raise fail(f"BatchNorm2d({c}) needs x [N, {c}, H, W], got {x.type}")
        if state is None:
            raise fail("BatchNorm2d needs state= (from init_state(), or the state a step carries)")

        def per_channel(v):
            return reshape(as_tensor(v, x), (1, c, 1, 1))

        if train:
            n = x.shape[0] * x.shape[2] * x.shape[3]
            mean = L.mean(x, axis=(0, 2, 3))
            centered = x - per_channel(mean)
            var = L.mean(centered * centered, axis=(0, 2, 3))
            inv = 1.0 / L.sqrt(var + self.eps)
            y = centered * per_channel(inv)
            m = self.momentum
            unbiased = var * (n / max(n - 1, 1))
            new_state = {"mean": L.stop_gradient(as_tensor(state["mean"], x) * (1.0 - m) + mean * m),
                         "var": L.stop_gradient(as_tensor(state["var"], x) * (1.0 - m) + unbiased * m)}
        else:
            inv = 1.0 / L.sqrt(as_tensor(state["var"], x) + self.eps)
            y = (x - per_channel(state["mean"])) * per_channel(inv)
            new_state = state
        return y * per_channel(params["gamma"]) + per_channel(params["beta"]), new_state


class Dropout(Layer):
    """Zeroes each element with probability p while training and scales the rest by
    1/(1-p) (PyTorch's inverted dropout); the identity when train=False."""

    random = True

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) < 1.0:
            raise fail(f"Dropout needs 0 <= p < 1, got {p}")
        self.p = float(p)

    def __call__(self, params, x, key=None, train=True, **kw):
        x = as_tensor(x)
        if not train or self.p == 0.0:
            return x
        if key is None:
            raise fail("Dropout needs key= while training (ig.random.key, or the key a step carries)")
        keep = R.bernoulli(key, 1.0 - self.p, x.shape)
        return L.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)


class _Fn(Layer):
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, params, x, **kw):
        return self.fn(x)


class Sequential(Layer):
    """Layers applied in order; params and state are dicts keyed by the layer's position
    ("0", "1", ...) holding only the layers that have them."""

    def __init__(self, *layers):
        self.layers = [l if isinstance(l, Layer) or hasattr(l, "init") else _Fn(l) for l in layers]
        self.stateful = any(getattr(l, "stateful", False) for l in self.layers)
        self.random = any(getattr(l, "random", False) for l in self.layers)
        self.has_params = any(getattr(l, "has_params", True) for l in self.layers)

    def init(self, seed=0) -> dict:
        rng = _rng(seed)
        return {str(i): l.init(rng) for i, l in enumerate(self.layers) if getattr(l, "has_params", True)}

    def init_state(self) -> dict:
        return {str(i): l.init_state() for i, l in enumerate(self.layers) if getattr(l, "stateful", False)}

    def __call__(self, params, x, state=None, key=None, train=True, **kw):
        if self.stateful and state is None:
            raise fail("this Sequential holds stateful layers (BatchNorm2d): pass state=")
        n_random = sum(1 for l in self.layers if getattr(l, "random", False))
        keys = R.split(key, n_random) if (key is not None and n_random and train) else None
        new_state, r = {}, 0
        for i, layer in enumerate(self.layers):
            name = str(i)
            p = params.get(name, {}) if params is not None else {}
            if getattr(layer, "stateful", False):
                extra = {}
                if getattr(layer, "random", False):  # (a nested Sequential with both)
                    extra["key"] = keys[r] if keys is not None else None
                    r += 1
                x, new_state[name] = layer(p, x, state=state[name], train=train, **extra)
            elif getattr(layer, "random", False):
                x = layer(p, x, key=keys[r] if keys is not None else None, train=train)
                r += 1
            elif isinstance(layer, Layer):
                x = layer(p, x)
            else:  # an ig.nn.Module (Linear, MLP, ...)
                x = layer(p, x)
        return (x, new_state) if self.stateful else x
