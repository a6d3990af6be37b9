"""Normalization layers: BatchNormalization (inference and training outputs), Instance-,
Layer-, RMS-, Group- and MeanVarianceNormalization, LRN, LpNormalization; each a few DSL
reductions and elementwise ops (the fuse pass makes them reduce kernels)."""

from __future__ import annotations

from ...frontend import library as L
from ...frontend.tensor import broadcast_to
from .. import dtypes
from . import onnx_op
from .nn import _axis, _float_input, _named, _per_channel, _spatial_axes


def _mean_var(x, axes):
    """Mean and (biased) variance over axes, both kept as size-1 axes."""
    m = L.mean(x, axis=axes, keepdims=True)
    c = x - m
    return m, L.mean(c * c, axis=axes, keepdims=True), c


@onnx_op("BatchNormalization")
def batch_normalization(node):
    """Inference: (x - mean) scale / sqrt(var + eps) + B with the given statistics.
    Training (training_mode=1 from opset 14; before, asking for the statistics outputs):
    the batch's mean and biased variance normalize, and running = stat momentum +
    batch (1 - momentum)."""
    x = _float_input(node)
    scale, bias, mean, var = (node.tensor(i) for i in range(1, 5))
    eps = node.attr("epsilon", 1e-5)
    mom = node.attr("momentum", 0.9)
    spatial = node.attr("spatial", 1) if node.opset < 9 else 1
    if node.opset >= 14:
        training = bool(node.attr("training_mode", 0))
    else:
        training = any(_named(node, i) for i in range(1, node.n_outputs))
    if spatial:
        axes = (0,) + _spatial_axes(x)

        def bc(t):
            return _per_channel(t, x)
    else:  # statistics per activation: [C, *S]
        axes = (0,)

        def bc(t):
            return L.reshape(t.astype(x.dtype), (1,) + x.shape[1:])
    if not training:
        return (x - bc(mean)) * (bc(scale) / L.sqrt(bc(var) + eps)) + bc(bias)
    bm, bv, centered = _mean_var(x, axes)
    y = centered * (bc(scale) / L.sqrt(bv + eps)) + bc(bias)
    stat = mean.shape
    bm, bv = L.reshape(bm, stat), L.reshape(bv, stat)
    sdt, selem = node.dtype(3), node.elem(3)
    running_mean = mean * mom + bm.astype(sdt) * (1.0 - mom)
    running_var = var * mom + bv.astype(sdt) * (1.0 - mom)
    res = [y, node.out(running_mean, selem), node.out(running_var, selem)]
    if node.opset < 14:
        res += [node.out(bm, node.elem(0)), node.out(bv, node.elem(0))]
    return res


@onnx_op("InstanceNormalization")
def instance_normalization(node):
    x = _float_input(node)
    _, v, c = _mean_var(x, _spatial_axes(x))
    eps = node.attr("epsilon", 1e-5)
    return c * (_per_channel(node.tensor(1), x) / L.sqrt(v + eps)) + _per_channel(node.tensor(2), x)


def _stat_elem(node):
    # Mean / InvStdDev are of stash_type (float) for the narrow float types
    e = node.elem(0)
    return dtypes.FLOAT if e in (dtypes.FLOAT16, dtypes.BFLOAT16) else e


@onnx_op("LayerNormalization")
def layer_normalization(node):
    """Normalized over the axes from `axis` on: (x - mean) / sqrt(var + eps) Scale + B;
    also Mean and InvStdDev (shape x[:axis] + 1s) when asked for."""
    x = _float_input(node)
    a = _axis(node, x, -1)
    eps = node.attr("epsilon", 1e-5)
    m, v, c = _mean_var(x, tuple(range(a, x.ndim)))
    inv = 1.0 / L.sqrt(v + eps)
    y = c * inv * node.tensor(1).astype(x.dtype)
    if node.has(2):
        y = y + node.tensor(2).astype(x.dtype)
    elem = _stat_elem(node)
    return [y, node.out(m, elem) if _named(node, 1) else None,
            node.out(inv, elem) if _named(node, 2) else None]


@onnx_op("RMSNormalization")
def rms_normalization(node):
    """x / sqrt(mean(x^2 over the axes from `axis`) + eps) Scale."""
    x = _float_input(node)
    a = _axis(node, x, -1)
    eps = node.attr("epsilon", 1e-5)
    ms = L.mean(x * x, axis=tuple(range(a, x.ndim)), keepdims=True)
    return x * (1.0 / L.sqrt(ms + eps)) * node.tensor(1).astype(x.dtype)


@onnx_op("GroupNormalization")
def group_normalization(node):
    """Statistics per (n, group) over its C/G channels and the spatial axes; scale and bias
    per group before opset 21, per channel from 21."""
    x = _float_input(node)
    g = node.attr("num_groups")
    eps = node.attr("epsilon", 1e-5)
    nb, c = x.shape[:2]
    if g < 1 or c % g:
        raise node.error(f"num_groups={g} does not divide the {c} channels")
    grouped = L.reshape(x, (nb, g, -1))
    _, v, cen = _mean_var(grouped, (2,))
    y = L.reshape(cen / L.sqrt(v + eps), x.shape)
    scale, bias = node.tensor(1).astype(x.dtype), node.tensor(2).astype(x.dtype)
    if scale.size != c or bias.size != c:
        if scale.size != g or bias.size != g:
            raise node.error(f"scale {list(scale.shape)} and bias {list(bias.shape)} need one entry per "
                             f"channel ({c}) or, before opset 21, per group ({g})")
        scale, bias = (broadcast_to(L.reshape(t, (g, 1)), (g, c // g)) for t in (scale, bias))
    return y * _per_channel(L.reshape(scale, (c,)), x) + _per_channel(L.reshape(bias, (c,)), x)


@onnx_op("MeanVarianceNormalization")
def mean_variance_normalization(node):
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over `axes` (ONNX's function body)."""
    x = _float_input(node)
    axes = tuple(a % x.ndim for a in node.attr("axes", [0, 2, 3]))
    m = L.mean(x, axis=axes, keepdims=True)
    var = L.mean(x * x, axis=axes, keepdims=True) - m * m
    return (x - m) / (L.sqrt(var) + 1e-9)


@onnx_op("LRN")
def lrn(node):
    """x / (bias + alpha / size * sum of x^2 over the channels c - floor((size-1)/2) ..
    c + ceil((size-1)/2))^beta."""
    x = _float_input(node)
    size = node.attr("size")
    alpha, beta, bias = node.attr("alpha", 1e-4), node.attr("beta", 0.75), node.attr("bias", 1.0)
    c = x.shape[1]
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = L.pad(x * x, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    total = None
    for i in range(size):
        part = sq[:, i:i + c]
        total = part if total is None else total + part
    return x / (bias + (alpha / size) * total) ** beta


@onnx_op("LpNormalization")
def lp_normalization(node):
    """x / ||x||_p along `axis` (p 1 or 2); 0 where the norm is 0."""
    x = _float_input(node)
    a = _axis(node, x, -1)
    p = node.attr("p", 2)
    if p not in (1, 2):
        raise node.error(f"p must be 1 or 2, got {p}")
    norm = L.sum(L.abs(x) if p == 1 else x * x, axis=a, keepdims=True)
    norm = norm if p == 1 else L.sqrt(norm)
    zero = norm == 0.0
    return L.where(zero, 0.0, x / L.where(zero, 1.0, norm))
