"""Random numbers, sampling (GridSample, AffineGrid, RoiAlign, DeformConv), NonMaxSuppression,
the preview-training optimizers, optionals and CausalConvWithState.

Random ops draw from irgrad's counter-based generator (`ig.random`, Threefry): a model
is a pure function, so it gives the same numbers on every call and every backend (ONNX
Runtime draws new ones per run, and its numbers are not numpy's either, so no test can
compare them). The key is `ig.random.key(seed)` for a node's `seed` attribute (an integral
float; any other float uses its 64 bits), and for a node without one
`ig.random.key(DEFAULT_SEED * 2**32 + n)`, n the node's number in the import, so that
unseeded nodes (and the iterations of an unrolled Loop) draw independent numbers.

Sampling at computed positions is a gather: the input flattened, one index per tap of
the interpolation (1 for nearest, 2 per axis for linear, 4 per axis for cubic), the taps
weighted and summed. Indices are clamped into the input and taps outside it weighted 0.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ...frontend import library as L
from ...frontend import random as R
from ...frontend.conv import conv1d
from ...frontend.einsum import einsum
from ...ir.types import DType
from .. import dtypes
from . import onnx_op

DEFAULT_SEED = 0x6F6E6E78  # "onnx"
TRAINING = "ai.onnx.preview.training"


# --- random -------------------------------------------------------------------------------

def _key(node) -> np.ndarray:
    seed = node.attr("seed", None)
    if seed is None:
        return R.key((DEFAULT_SEED << 32) + node.index)
    s = float(seed)
    if s.is_integer() and abs(s) < 2.0 ** 63:
        return R.key(int(s))
    return R.key(int(np.float64(s).view(np.int64)))


def _float_elem(node, elem: int, what: str) -> DType:
    dt = dtypes.compute_dtype(elem, f"{node.desc}: ")
    if not dtypes.is_float(elem):
        raise node.error(f"{what} must be a floating type, got {dtypes.name(elem)}")
    return dt


def _random(node, shape, elem, normal: bool):
    dt = _float_elem(node, elem, "dtype")
    if normal:
        y = R.normal(_key(node), tuple(shape), dt, node.attr("mean", 0.0), node.attr("scale", 1.0))
    else:
        y = R.uniform(_key(node), tuple(shape), dt, node.attr("low", 0.0), node.attr("high", 1.0))
    return node.out(y, elem)


@onnx_op("RandomUniform", fold=False)
def random_uniform(node):
    return _random(node, node.attr("shape"), node.attr("dtype", dtypes.FLOAT), False)


@onnx_op("RandomNormal", fold=False)
def random_normal(node):
    return _random(node, node.attr("shape"), node.attr("dtype", dtypes.FLOAT), True)


@onnx_op("RandomUniformLike", fold=False)
def random_uniform_like(node):
    return _random(node, node.shape(0), node.attr("dtype", node.elem(0)), False)


@onnx_op("RandomNormalLike", fold=False)
def random_normal_like(node):
    return _random(node, node.shape(0), node.attr("dtype", node.elem(0)), True)


@onnx_op("Bernoulli", fold=False)
def bernoulli(node):
    # y = 1 with probability p: u < p for u uniform in [0, 1)
    p = node.tensor(0)
    _float_elem(node, node.elem(0), "the input")
    elem = node.attr("dtype", node.elem(0))
    u = R.uniform(_key(node), p.shape, p.dtype)
    return node.out((u < p).astype(dtypes.compute_dtype(elem, f"{node.desc}: ")), elem)


@onnx_op("Multinomial", fold=False)
def multinomial(node):
    # inverse CDF: sample s of row b is the first class c with cdf[b, c] > u[b, s], where
    # cdf is the running sum of softmax(x[b]) (the input holds unnormalized log-probabilities)
    x = node.tensor(0)
    if x.ndim != 2:
        raise node.error(f"the input must be [batch, classes], got {list(x.shape)}")
    _float_elem(node, node.elem(0), "the input")
    elem = node.attr("dtype", dtypes.INT32)
    if elem not in (dtypes.INT32, dtypes.INT64):
        raise node.error(f"dtype must be int32 or int64, got {dtypes.name(elem)}")
    n, c = x.shape
    k = node.attr("sample_size", 1)
    cdf = L.cumsum(L.softmax(x, axis=-1), axis=-1)
    u = R.uniform(_key(node), (n, k), x.dtype)
    below = L.reshape(cdf, (n, 1, c)) <= L.reshape(u, (n, k, 1))
    idx = L.minimum(L.sum(below.astype(DType.i32), axis=-1), c - 1)
    return node.out(idx.astype(dtypes.compute_dtype(elem)), elem)


# --- interpolation taps (GridSample, DeformConv) -----------------------------------------------

def _trunc(x):
    return L.where(x < 0.0, L.ceil(x), L.floor(x))


def _reflect(x, lo: float, hi: float):
    """x reflected at the borders lo and hi until it lies between them (ONNX's GridSample)."""
    rng = hi - lo
    if rng <= 0:
        return x * 0.0 + lo
    below, above = x < lo, x > hi
    dx = L.where(below, lo - x, L.where(above, x - hi, x * 0.0))
    n = L.floor(dx / rng)
    r = dx - n * rng
    odd = L.floor(n * 0.5) != n * 0.5
    from_lo, from_hi = r + lo, hi - r
    return L.where(below, L.where(odd, from_hi, from_lo),
                   L.where(above, L.where(odd, from_lo, from_hi), x))


def _cubic(t):
    # Keys' cubic convolution weights, a = -0.75, for the taps at -1, 0, 1, 2 of t in [0, 1)
    a = -0.75
    t1, u, u1 = t + 1.0, 1.0 - t, 2.0 - t
    return [((t1 * a - 5 * a) * t1 + 8 * a) * t1 - 4 * a,
            ((t * (a + 2)) - (a + 3)) * t * t + 1.0,
            ((u * (a + 2)) - (a + 3)) * u * u + 1.0,
            ((u1 * a - 5 * a) * u1 + 8 * a) * u1 - 4 * a]


def _taps(x, d: int, mode: str, padding: str, lo: float, hi: float):
    """[(index, weight)] along one axis of size d for the coordinates x (pixels)."""
    if mode == "nearest":
        pos = [(_trunc(x), None)]
    else:
        x0 = L.floor(x)
        f = x - x0
        if mode == "linear":
            pos = [(x0, 1.0 - f), (x0 + 1.0, f)]
        else:
            pos = [(x0 + float(j - 1), w) for j, w in enumerate(_cubic(f))]
    out = []
    for i, w in pos:
        if padding == "zeros":
            ok = ((i >= 0.0) & (i <= float(d - 1))).astype(x.dtype)
            w = ok if w is None else w * ok
        elif padding == "reflection":
            i = _trunc(_reflect(i, lo, hi))
        out.append((L.clip(i, 0.0, float(d - 1)), w))
    return out


def _gather_taps(x, per_axis, out_shape):
    """sum over tap combinations of prod(weights) x[n, c, i_0, i_1, ...]: x [N, C, *S],
    per_axis[a] the taps of spatial axis a, each index/weight [N, *O] (or [N, C, *O])."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    size = math.prod(spatial)
    strides = [math.prod(spatial[a + 1:]) for a in range(len(spatial))]
    it = DType.i64 if n * c * size >= 2 ** 31 else DType.i32
    base = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * size
    base = base.reshape((n, c) + (1,) * (len(out_shape) - 2)).astype(it.np)
    idx, wts = [], []
    for combo in itertools.product(*per_axis):
        flat, w = None, None
        for (i, wi), s in zip(combo, strides):
            term = i.astype(it) * s if s != 1 else i.astype(it)
            flat = term if flat is None else flat + term
            if wi is not None:
                w = wi if w is None else w * wi
        if flat.ndim == len(out_shape) - 1:  # [N, *O]: the same positions for every channel
            flat = L.reshape(flat, (n, 1) + flat.shape[1:])
            w = L.reshape(w, (n, 1) + w.shape[1:]) if w is not None else None
        idx.append(flat + base)
        wts.append(w)
    vals = L.take(L.reshape(x, (n * c * size,)), L.stack(idx, 0))  # [K, N, C, *O]
    if all(w is None for w in wts):
        return vals[0]
    return L.sum(vals * L.stack(wts, 0), axis=0)  # (all taps weighted, or none)


@onnx_op("GridSample", since=16)
def grid_sample(node):
    x, grid = node.tensor(0), node.tensor(1)
    mode = node.attr("mode", "linear" if node.opset >= 20 else "bilinear")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    padding = node.attr("padding_mode", "zeros")
    align = bool(node.attr("align_corners", 0))
    if mode not in ("nearest", "linear", "cubic") or padding not in ("zeros", "border", "reflection"):
        raise node.fail(f"mode '{mode}' with padding_mode '{padding}' is not supported")
    nd = x.ndim - 2
    if nd < 1 or grid.ndim != x.ndim or grid.shape[0] != x.shape[0] or grid.shape[-1] != nd:
        raise node.error(f"X {list(x.shape)} and grid {list(grid.shape)} do not fit "
                         f"([N, C, *spatial] and [N, *out, {max(nd, 1)}])")
    if not x.dtype.is_float:
        raise node.fail(f"GridSample of {dtypes.name(node.elem(0))} is not supported")
    if mode == "cubic" and nd != 2:
        raise node.fail("cubic GridSample is defined for 4-D input only")
    grid = grid.astype(x.dtype)
    per_axis = []
    for a, d in enumerate(x.shape[2:]):
        g = grid[..., nd - 1 - a]  # grid's last axis is (x, y, z): the innermost axis first
        # pixel coordinates: (g+1)/2 (d-1) with aligned corners, ((g+1) d - 1)/2 without
        p = (g + 1.0) * (0.5 * (d - 1)) if align else ((g + 1.0) * float(d) - 1.0) * 0.5
        lo, hi = (0.0, d - 1.0) if align else (-0.5, d - 0.5)
        if mode == "nearest":
            p = L.round(p)
        if padding != "zeros":
            outside = (p < lo) | (p > hi)
            fixed = L.clip(p, 0.0, float(d - 1)) if padding == "border" else _reflect(p, lo, hi)
            p = L.where(outside, fixed, p)
        per_axis.append(_taps(p, d, mode, padding, lo, hi))
    out_shape = (x.shape[0], x.shape[1]) + grid.shape[1:-1]
    return _gather_taps(x, per_axis, out_shape)


@onnx_op("AffineGrid", since=20)
def affine_grid(node):
    # grid[n, ..., :] = theta[n] @ (x, y[, z], 1), the base coordinates normalized to [-1, 1]
    theta = node.tensor(0)
    size = node.ints(1)
    align = bool(node.attr("align_corners", 0))
    nd = len(size) - 2
    if nd not in (2, 3) or theta.shape != (size[0], nd, nd + 1):
        raise node.error(f"theta {list(theta.shape)} and size {size} do not fit ([N, 2, 3] and "
                         f"4 sizes, or [N, 3, 4] and 5)")
    spatial = size[2:]
    axes = []
    for d in spatial:
        j = np.arange(d, dtype=np.float64)
        if align:
            axes.append(-1.0 + 2.0 * j / (d - 1) if d > 1 else np.full(1, -1.0))
        else:
            axes.append(-1.0 + (2.0 * j + 1.0) / d)
    mesh = np.meshgrid(*axes, indexing="ij")  # D, H, W order
    base = np.stack([m.reshape(-1) for m in mesh[::-1]] + [np.ones(mesh[0].size)], axis=-1)
    if not theta.dtype.is_float:
        raise node.fail(f"AffineGrid of {dtypes.name(node.elem(0))} is not supported")
    g = einsum("pk,nik->npi", base.astype(theta.dtype.np), theta)
    return L.reshape(g, (size[0], *spatial, nd))


# --- RoiAlign -----------------------------------------------------------------------------

def _roi_axis(start, bin_size, pooled: int, grid: int, d: int, dtype):
    """Sample positions along one axis of every roi and their bilinear taps, as ONNX's
    reference: [(index, weight)] of shape [R, pooled, grid], weight 0 outside [-1, d]."""
    r = start.shape[0]
    frac = (np.arange(pooled)[:, None] + (np.arange(grid)[None, :] + 0.5) / grid).astype(dtype.np)
    y = L.reshape(start, (r, 1, 1)) + L.reshape(bin_size, (r, 1, 1)) * frac
    ok = ((y >= -1.0) & (y <= float(d))).astype(dtype)
    y = L.maximum(y, 0.0)
    low = L.floor(y)
    top = low >= float(d - 1)
    low = L.where(top, low * 0.0 + float(d - 1), low)
    y = L.where(top, low, y)
    high = L.minimum(low + 1.0, float(d - 1))
    ly = y - low
    return [(low, (1.0 - ly) * ok), (high, ly * ok)]


@onnx_op("RoiAlign", since=10)
def roi_align(node):
    x, rois = node.tensor(0), node.tensor(1)
    bidx = node.tensor(2)
    if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4 or bidx.shape != (rois.shape[0],):
        raise node.error(f"X {list(x.shape)}, rois {list(rois.shape)} and batch_indices "
                         f"{list(bidx.shape)} do not fit ([N, C, H, W], [R, 4], [R])")
    if not x.dtype.is_float:
        raise node.fail(f"RoiAlign of {dtypes.name(node.elem(0))} is not supported")
    mode = node.attr("mode", "avg")
    ctm = node.attr("coordinate_transformation_mode",
                    "half_pixel" if node.opset >= 16 else "output_half_pixel")
    if mode not in ("avg", "max") or ctm not in ("half_pixel", "output_half_pixel"):
        raise node.fail(f"mode '{mode}' with coordinate_transformation_mode '{ctm}' is not supported")
    ph, pw = node.attr("output_height", 1), node.attr("output_width", 1)
    ratio = node.attr("sampling_ratio", 0)
    scale = node.attr("spatial_scale", 1.0)
    n, c, h, w = x.shape
    nr = rois.shape[0]
    half = 0.5 if ctm == "half_pixel" else 0.0
    box = rois.astype(x.dtype) * scale - half
    x0, y0, x1, y1 = (box[:, i] for i in range(4))
    rw, rh = x1 - x0, y1 - y0
    if not half:
        rw, rh = L.maximum(rw, 1.0), L.maximum(rh, 1.0)
    if ratio > 0:
        gh = gw = ratio
    else:  # ceil(roi size / pooled size) samples per bin: the rois must be known at import
        box_c = np.asarray(node.const(1), dtype=np.float64) * scale - half
        sizes = box_c[:, 2:4] - box_c[:, 0:2]
        if not half:
            sizes = np.maximum(sizes, 1.0)
        gw_all, gh_all = np.ceil(sizes[:, 0] / pw).astype(int), np.ceil(sizes[:, 1] / ph).astype(int)
        if len(set(gw_all)) > 1 or len(set(gh_all)) > 1:
            raise node.fail("sampling_ratio=0 with rois that need different sample counts is "
                            "not supported (set sampling_ratio > 0)")
        gh, gw = max(int(gh_all[0]), 1), max(int(gw_all[0]), 1)
    ty = _roi_axis(y0, rh / float(ph), ph, gh, h, x.dtype)  # [R, ph, gh] each
    tx = _roi_axis(x0, rw / float(pw), pw, gw, w, x.dtype)
    # corners (a, b): index (b_r C + c) H W + y_a W + x_b, shape [R, C, ph, gh, pw, gw]
    it = DType.i64 if n * c * h * w >= 2 ** 31 else DType.i32
    chan = (L.reshape(bidx.astype(it), (nr, 1)) * c + np.arange(c, dtype=it.np)[None, :]) * (h * w)
    chan = L.reshape(chan, (nr, c, 1, 1, 1, 1))
    idx, wts = [], []
    for (yi, wy), (xi, wx) in itertools.product(ty, tx):
        yy = L.reshape(yi.astype(it) * w, (nr, 1, ph, gh, 1, 1))
        xx = L.reshape(xi.astype(it), (nr, 1, 1, 1, pw, gw))
        idx.append(chan + yy + xx)
        wts.append(L.reshape(wy, (nr, 1, ph, gh, 1, 1)) * L.reshape(wx, (nr, 1, 1, 1, pw, gw)))
    vals = L.take(L.reshape(x, (n * c * h * w,)), L.stack(idx, 0)) * L.stack(wts, 0)
    if mode == "avg":
        y = L.sum(vals, axis=(0, 4, 6)) / float(max(gh * gw, 1))
    else:  # ONNX's reference: the max over samples of the max of the weighted corners
        y = L.max(vals, axis=(0, 4, 6))
    return y  # [R, C, ph, pw]


# --- NonMaxSuppression --------------------------------------------------------------------

def _iou_suppresses(b1, b2, center: bool, thr: float) -> bool:
    if center:
        x1a, x1b = b1[0] - b1[2] / 2, b1[0] + b1[2] / 2
        y1a, y1b = b1[1] - b1[3] / 2, b1[1] + b1[3] / 2
        x2a, x2b = b2[0] - b2[2] / 2, b2[0] + b2[2] / 2
        y2a, y2b = b2[1] - b2[3] / 2, b2[1] + b2[3] / 2
    else:  # [y1, x1, y2, x2], either corner order
        y1a, y1b = sorted((b1[0], b1[2]))
        x1a, x1b = sorted((b1[1], b1[3]))
        y2a, y2b = sorted((b2[0], b2[2]))
        x2a, x2b = sorted((b2[1], b2[3]))
    iw = min(x1b, x2b) - max(x1a, x2a)
    ih = min(y1b, y2b) - max(y1a, y2a)
    if iw <= 0 or ih <= 0:
        return False
    inter = iw * ih
    a1, a2 = (x1b - x1a) * (y1b - y1a), (x2b - x2a) * (y2b - y2a)
    union = a1 + a2 - inter
    if a1 <= 0 or a2 <= 0 or union <= 0:
        return False
    return inter / union > thr


@onnx_op("NonMaxSuppression", since=10)
def non_max_suppression(node):
    # The output's length depends on the values, and irgrad's shapes are static: every
    # input must be known at import, and the selection is computed then.
    boxes, scores = np.asarray(node.const(0)), np.asarray(node.const(1))
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or \
            scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        raise node.error(f"boxes {list(boxes.shape)} and scores {list(scores.shape)} do not fit "
                         f"([B, N, 4] and [B, classes, N])")

    def scalar(i, default):
        v = node.const(i, None)
        v = None if v is None else np.asarray(v).reshape(-1)
        return default if v is None or v.size == 0 else v[0]

    max_out = max(int(scalar(2, 0)), 0)
    iou = float(scalar(3, 0.0))
    thr = scalar(4, None)
    center = bool(node.attr("center_point_box", 0))
    out = []
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c]
            cand = [i for i in range(boxes.shape[1]) if thr is None or s[i] > thr]
            cand.sort(key=lambda i: (-s[i], i))  # highest score first, ties by index
            kept: list[int] = []
            for i in cand:
                if len(kept) >= max_out:
                    break
                if not any(_iou_suppresses(boxes[b, i], boxes[b, k], center, iou) for k in kept):
                    kept.append(i)
                    out.append((b, c, i))
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


# --- training (ai.onnx.preview.training) --------------------------------------------------

def _groups(node, per: int):
    n = (node.n_inputs - 2) // per
    if n < 1 or node.n_inputs != 2 + per * n:
        raise node.error(f"expects R, T and {per} groups of tensors, got {node.n_inputs} inputs")
    r, t = node.tensor(0), node.tensor(1)
    return n, [[node.tensor(2 + k * n + i) for k in range(per)] for i in range(n)], r, t


def _scalar_like(v, x):
    return L.reshape(v, ()).astype(x.dtype)


@onnx_op("Adagrad", domain=TRAINING)
def adagrad(node):
    # r' = r / (1 + t decay); g' = norm x + g; h' = h + g'^2; x' = x - r' g' / (sqrt h' + eps)
    decay, eps = node.attr("decay_factor", 0.0), node.attr("epsilon", 1e-6)
    norm = node.attr("norm_coefficient", 0.0)
    n, groups, r, t = _groups(node, 3)
    xs, hs = [], []
    for x, g, h in groups:
        rr = _scalar_like(r, x) / (_scalar_like(t, x) * decay + 1.0)
        gr = x * norm + g
        hn = h + gr * gr
        xs.append(x - rr * gr / (L.sqrt(hn) + eps))
        hs.append(hn)
    return xs + hs


@onnx_op("Momentum", domain=TRAINING)
def momentum(node):
    # g' = norm x + g; v' = alpha v + beta' g' (beta' = 1 at t = 0);
    # standard x' = x - r v'; nesterov x' = x - r (g' + alpha v')
    alpha, beta = node.attr("alpha"), node.attr("beta")
    norm, mode = node.attr("norm_coefficient"), node.attr("mode")
    if mode not in ("standard", "nesterov"):
        raise node.fail(f"mode '{mode}' is not supported")
    n, groups, r, t = _groups(node, 3)
    xs, vs = [], []
    for x, g, v in groups:
        rr, tt = _scalar_like(r, x), L.reshape(t, ())
        gr = x * norm + g
        b = L.where(tt > 0, rr * 0.0 + beta, rr * 0.0 + 1.0)
        vn = v * alpha + gr * b
        xs.append(x - rr * vn if mode == "standard" else x - rr * (gr + vn * alpha))
        vs.append(vn)
    return xs + vs


@onnx_op("Adam", domain=TRAINING)
def adam(node):
    # g' = norm x + g; v' = alpha v + (1-alpha) g'; h' = beta h + (1-beta) g'^2;
    # r' = r sqrt(1 - beta^t) / (1 - alpha^t) (r at t = 0);
    # x' = (1 - norm_post) (x - r' v' / (sqrt h' + eps))
    alpha, beta = node.attr("alpha", 0.9), node.attr("beta", 0.999)
    eps = node.attr("epsilon", 1e-6)
    norm, post = node.attr("norm_coefficient", 0.0), node.attr("norm_coefficient_post", 0.0)
    n, groups, r, t = _groups(node, 4)
    xs, vs, hs = [], [], []
    for x, g, v, h in groups:
        rr, tf = _scalar_like(r, x), _scalar_like(t, x)
        gr = x * norm + g
        vn = v * alpha + gr * (1.0 - alpha)
        hn = h * beta + gr * gr * (1.0 - beta)
        adj = rr * L.sqrt(1.0 - (tf * 0.0 + beta) ** tf) / (1.0 - (tf * 0.0 + alpha) ** tf)
        ra = L.where(tf > 0.0, adj, rr)
        xs.append((x - ra * (vn / (L.sqrt(hn) + eps))) * (1.0 - post))
        vs.append(vn)
        hs.append(hn)
    return xs + vs + hs


# --- optionals ----------------------------------------------------------------------------
# irgrad has no optional type: an optional holding a tensor is that tensor, an empty one
# is an absent value (as an omitted input), so these are plumbing.

@onnx_op("Optional", since=15)
def optional(node):
    return node.val(0) if node.has(0) else None


@onnx_op("OptionalHasElement", since=15)
def optional_has_element(node):
    return np.asarray(node.has(0))


@onnx_op("OptionalGetElement", since=15)
def optional_get_element(node):
    if not node.has(0):
        raise node.error("the optional input is empty")
    return node.val(0)


# --- CausalConvWithState ------------------------------------------------------------------

@onnx_op("CausalConvWithState", since=27)
def causal_conv_with_state(node):
    # padded = concat(past_state or zeros, input) along time; output = act(depthwise conv of
    # padded with no padding); present_state = the last k-1 steps of padded
    x, w = node.tensor(0), node.tensor(1)
    act = node.attr("activation", "none")
    if act not in ("none", "silu", "swish"):
        raise node.fail(f"activation '{act}' is not supported")
    if x.ndim != 3 or w.ndim != 3 or w.shape[:2] != (x.shape[1], 1):
        raise node.error(f"input {list(x.shape)} and weight {list(w.shape)} do not fit "
                         f"([batch, channels, length] and [channels, 1, k])")
    if not x.dtype.is_float:
        raise node.fail(f"CausalConvWithState of {dtypes.name(node.elem(0))} is not supported")
    b, c, _ = x.shape
    k = w.shape[2]
    if node.has(3):
        past = node.tensor(3)
        if past.shape != (b, c, k - 1):
            raise node.error(f"past_state must be {[b, c, k - 1]}, got {list(past.shape)}")
        padded = L.concatenate([past.astype(x.dtype), x], axis=2)
    else:
        padded = L.pad(x, [(0, 0), (0, 0), (k - 1, 0)])
    bias = node.tensor(2).astype(x.dtype) if node.has(2) else None
    y = conv1d(padded, w.astype(x.dtype), bias, groups=c)
    if act != "none":
        y = y * L.sigmoid(y)
    t = padded.shape[2]
    return [y, padded[:, :, t - (k - 1):]]


# --- DeformConv ---------------------------------------------------------------------------

@onnx_op("DeformConv", since=19)
def deform_conv(node):
    # y[n, o, i, j] = b[o] + sum_{c, a, e} w[o, c, a, e] mask[n, g(c), a, e, i, j]
    #                 * bilinear(x[n, c], p(i, j, a, e) + offset[n, g(c), a, e, :, i, j])
    # with p = (i s_h - pad_t + a d_h, j s_w - pad_l + e d_w), zeros outside x
    x, w, off = node.tensor(0), node.tensor(1), node.tensor(2)
    if x.ndim != 4:
        raise node.fail("DeformConv is supported for 2-D images (4-D input) only")
    if not x.dtype.is_float:
        raise node.fail(f"DeformConv of {dtypes.name(node.elem(0))} is not supported")
    n, c, ih, iw = x.shape
    oc, cg, kh, kw = w.shape
    group, og = node.attr("group", 1), node.attr("offset_group", 1)
    sh, sw = node.attr("strides", [1, 1])
    dh, dw = node.attr("dilations", [1, 1])
    pt, pl, pb, pr = node.attr("pads", [0, 0, 0, 0])
    if list(node.attr("kernel_shape", [kh, kw])) != [kh, kw]:
        raise node.error(f"kernel_shape does not match the weight {list(w.shape)}")
    oh = (ih + pt + pb - ((kh - 1) * dh + 1)) // sh + 1
    ow = (iw + pl + pr - ((kw - 1) * dw + 1)) // sw + 1
    if cg * group != c or oc % group or c % og or off.shape != (n, og * kh * kw * 2, oh, ow):
        raise node.error(f"X {list(x.shape)}, W {list(w.shape)} and offset {list(off.shape)} do "
                         f"not fit group={group}, offset_group={og} (output {oh}x{ow})")
    off = L.reshape(off.astype(x.dtype), (n, og, kh, kw, 2, oh, ow))
    gidx = np.arange(c) // (c // og)  # the offset group of each input channel
    base_h = (np.arange(oh) * sh - pt)[None, :] + (np.arange(kh) * dh)[:, None]  # [kh, oh]
    base_w = (np.arange(ow) * sw - pl)[None, :] + (np.arange(kw) * dw)[:, None]  # [kw, ow]
    py = off[:, :, :, :, 0] + base_h.astype(x.dtype.np).reshape(1, 1, kh, 1, oh, 1)
    px = off[:, :, :, :, 1] + base_w.astype(x.dtype.np).reshape(1, 1, 1, kw, 1, ow)
    py, px = L.take(py, gidx, axis=1), L.take(px, gidx, axis=1)  # [n, c, kh, kw, oh, ow]
    cols = _gather_taps(x, [_taps(py, ih, "linear", "zeros", 0.0, ih - 1.0),
                            _taps(px, iw, "linear", "zeros", 0.0, iw - 1.0)], py.shape)
    if node.has(4):
        mask = L.reshape(node.tensor(4).astype(x.dtype), (n, og, kh, kw, oh, ow))
        cols = cols * L.take(mask, gidx, axis=1)
    cols = L.reshape(cols, (n, group, cg, kh, kw, oh, ow))
    y = einsum("ngcabij,gocab->ngoij", cols, L.reshape(w.astype(x.dtype), (group, oc // group, cg, kh, kw)))
    y = L.reshape(y, (n, oc, oh, ow))
    if node.has(3):
        y = y + L.reshape(node.tensor(3).astype(x.dtype), (1, oc, 1, 1))
    return y
