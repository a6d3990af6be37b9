"""Resize and Upsample: separable interpolation, one axis at a time.

Every resized axis is a linear map fixed at import. Output position o maps to the input
coordinate x(o) of the coordinate transformation mode; the mode's kernel then reads n
neighbours of x (nearest 2 taps of which one has weight 1, linear 2, cubic 4, antialias
the kernel stretched by 1/scale) from the edge-clamped input. The taps and weights are
computed in float64 with the formulas of onnx's reference (onnx/reference/ops/op_resize.py),
and the axis becomes n gathers along it, each times its [out] weights, summed: nearest is
one gather. tf_crop_and_resize then sets the positions whose x falls outside the input
to extrapolation_value, axis by axis as the reference does.

Before opset 11 (Resize-10, Upsample) there is no coordinate mode: x = o / scale
(asymmetric) and nearest takes floor(x) when upsampling and ceil(x) when downsampling,
as onnxruntime does for those opsets.
"""

from __future__ import annotations

import math

import numpy as np

from ...frontend import library as L
from ...frontend.tensor import Tensor
from ...ir.types import DType
from .. import dtypes
from . import onnx_op

_MODES = ("nearest", "linear", "cubic")
_COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
           "tf_crop_and_resize", "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


# --- one axis: taps and weights (numpy, at import) -----------------------------------------------

def _source_coords(ctm, out_n, in_n, scale, roi):
    """x(o) for o < out_n, and which positions are extrapolated (tf_crop_and_resize)."""
    y = np.arange(out_n, dtype=np.float64)
    length = scale * in_n  # the output length the scale implies (not rounded)
    outside = None
    if ctm == "align_corners":
        x = np.zeros(out_n) if length == 1 else y * (in_n - 1) / (length - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_crop_and_resize":
        lo, hi = roi
        x = np.full(out_n, (hi - lo) * (in_n - 1) / 2) if length == 1 else \
            y * (hi - lo) * (in_n - 1) / (length - 1)
        x = x + lo * (in_n - 1)
        outside = (x < 0) | (x > in_n - 1)
    elif ctm == "pytorch_half_pixel":
        x = np.full(out_n, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        # the centre of the input maps to the centre of the output canvas
        offset = in_n / 2 * (1 - out_n / length)
        x = offset + (y + 0.5) / scale - 0.5
    elif ctm == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    else:
        raise ValueError(ctm)
    return x, outside


def _cubic(t, a):
    """Keys' cubic kernel W(t), |t| < 2."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _coefficients(mode, ratio, scale, nearest_mode, a, antialias, downsample):
    """[out, n] weights of the n taps at offsets start .. start + n - 1 from the ratio
    x - floor(x) in (0, 1] (1 at an integer x: its left neighbour is x - 1)."""
    r = ratio[:, None]
    if mode == "nearest":
        right = {"round_prefer_floor": r > 0.5, "round_prefer_ceil": r >= 0.5,
                 "floor": np.zeros_like(r, dtype=bool), "ceil": np.ones_like(r, dtype=bool),
                 "simple": np.full_like(r, downsample, dtype=bool)}[nearest_mode] | (r == 1)
        return np.concatenate([~right, right], axis=1).astype(np.float64)
    if antialias:
        s = min(scale, 1.0)  # the kernel widens by 1/scale when downsampling
        support = 1 if mode == "linear" else 2
        start = int(np.floor(-support / s) + 1)
        offsets = np.arange(start, 2 - start)
        t = (offsets[None, :] - r) * s
        c = np.clip(1 - np.abs(t), 0, 1) if mode == "linear" else _cubic(t, a)
        return c / c.sum(axis=1, keepdims=True)
    if mode == "linear":
        return np.concatenate([1 - r, r], axis=1)
    return np.concatenate([_cubic(r + 1, a), _cubic(r, a), _cubic(1 - r, a), _cubic(2 - r, a)], axis=1)


def axis_taps(in_n, out_n, scale, mode, ctm, nearest_mode="round_prefer_floor", cubic_a=-0.75,
              exclude_outside=False, antialias=False, roi=(0.0, 1.0)):
    """(indices [out, n] clamped into the input, weights [out, n], extrapolated [out] or None)."""
    x, outside = _source_coords(ctm, out_n, in_n, scale, roi)
    ratio = np.where(x == np.floor(x), 1.0, x - np.floor(x))
    coeffs = _coefficients(mode, ratio, scale, nearest_mode, cubic_a, antialias, scale < 1)
    n = coeffs.shape[1]
    # the n taps nearest x, ties to the smaller index, on the input padded by ceil(n/2)
    pad = int(math.ceil(n / 2))
    xp = x + pad
    p = np.floor(xp).astype(np.int64)
    frac = xp - p
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        offset = np.where(frac <= 0.5, base, base + 1)
    idx = (p + offset)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((idx < 0) | (idx >= in_n), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, in_n - 1), coeffs, outside


def _apply_axis(x: Tensor, axis: int, idx, coeffs, outside, extrapolation):
    """x resized along `axis`: sum over taps t of x.take(idx[:, t], axis) coeffs[:, t]."""
    shape = [1] * x.ndim
    shape[axis] = idx.shape[0]
    used = [t for t in range(idx.shape[1]) if np.any(coeffs[:, t] != 0)]
    ones = all(np.all((coeffs[:, t] == 0) | (coeffs[:, t] == 1)) for t in used)
    if ones and np.all((coeffs[:, used] != 0).sum(axis=1) == 1):
        # one weight-1 tap per output (nearest, or linear at whole coordinates): a gather
        pick = idx[np.arange(idx.shape[0]), np.argmax(coeffs != 0, axis=1)]
        y = L.take(x, pick.astype(np.int32), axis=axis)
    else:
        y = None
        for t in used:
            term = L.take(x, idx[:, t].astype(np.int32), axis=axis)
            w = coeffs[:, t]
            if not np.all(w == 1):
                term = term * w.reshape(shape).astype(x.dtype.np)
            y = term if y is None else y + term
    if outside is not None and outside.any():
        y = L.where(outside.reshape(shape), float(extrapolation), y)
    return y


def resize(x: Tensor, elem: int, out_sizes, scales, axes, mode, ctm, **kw) -> Tensor:
    """x resized along each of `axes` to out_sizes[i] with scale scales[i]; integer types
    are computed in float and rounded back (saturating, as onnx's reference)."""
    src = x
    if not x.dtype.is_float and mode != "nearest":
        x = x.astype(DType.f32)
    rois = kw.pop("rois", None)
    extrapolation = kw.pop("extrapolation_value", 0.0)
    for i, (ax, n_out, sc) in enumerate(zip(axes, out_sizes, scales)):
        roi = rois[i] if rois is not None else (0.0, 1.0)
        n_in = x.shape[ax]
        if math.isclose(sc, 1.0) and n_out == n_in and (ctm != "tf_crop_and_resize" or (
                math.isclose(roi[0], 0.0) and math.isclose(roi[1], 1.0))):
            continue  # nothing to do along this axis
        idx, coeffs, outside = axis_taps(n_in, n_out, sc, mode, ctm, roi=roi, **kw)
        x = _apply_axis(x, ax, idx, coeffs, outside if ctm == "tf_crop_and_resize" else None,
                        extrapolation)
    if x.dtype is not src.dtype:
        bits = dtypes.INT_BITS.get(elem)
        info = np.iinfo(dtypes.storage_np(elem)) if bits else np.iinfo(src.dtype.np)
        x = L.clip(L.round(x), float(info.min), float(info.max)).astype(src.dtype)
    return x


# --- the ops -------------------------------------------------------------------------------------

def _floats(node, i):
    """An optional float input as a list; None when absent or empty."""
    if not node.has(i):
        return None
    c = np.asarray(node.const(i), dtype=np.float64).reshape(-1)
    return None if c.size == 0 else [float(v) for v in c]


def _sizes_from_scales(shape, scales):
    # floor(in * scale), in float64 of the (float32) scale as the reference computes it
    return [int(np.float64(a) * np.float64(s)) for a, s in zip(shape, scales)]


@onnx_op("Resize")
def resize_op(node):
    x = node.tensor(0)
    rank = x.ndim
    mode = node.attr("mode", "nearest")
    if mode not in _MODES:
        raise node.error(f"mode '{mode}' is not one of {', '.join(_MODES)}")
    if node.opset < 11:
        if mode == "cubic":
            raise node.error("mode 'cubic' needs opset 11")
        scales = _floats(node, 1)
        if scales is None or len(scales) != rank:
            raise node.error(f"scales must have {rank} entries")
        return resize(x, node.elem(0), _sizes_from_scales(x.shape, scales), scales, list(range(rank)),
                      mode, "asymmetric", nearest_mode="simple")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    if ctm not in _COORDS:
        raise node.error(f"coordinate_transformation_mode '{ctm}' is not one of {', '.join(_COORDS)}")
    nearest_mode = node.attr("nearest_mode", "round_prefer_floor")
    if nearest_mode not in _NEAREST[:4]:
        raise node.error(f"nearest_mode '{nearest_mode}' is not one of {', '.join(_NEAREST[:4])}")
    antialias = bool(node.attr("antialias", 0))
    if antialias and mode == "nearest":
        raise node.error("antialias needs mode 'linear' or 'cubic'")
    axes = node.attr("axes", None)
    axes = list(range(rank)) if not axes else [a % rank for a in axes]
    if len(set(axes)) != len(axes):
        raise node.error(f"axes {axes} repeat an axis")
    scales = _floats(node, 2)
    sizes = node.ints(3) if node.has(3) and np.asarray(node.const(3)).size else None
    if (scales is None) == (sizes is None):
        raise node.error("exactly one of scales and sizes must be given")
    k = len(axes)
    if len(scales if scales is not None else sizes) != k:
        raise node.error(f"scales/sizes need one entry per axis ({k})")
    if sizes is not None:
        scales = [s / x.shape[a] for s, a in zip(sizes, axes)]
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            if policy not in ("not_larger", "not_smaller"):
                raise node.error(f"keep_aspect_ratio_policy '{policy}' is not stretch, not_larger "
                                 f"or not_smaller")
            s = min(scales) if policy == "not_larger" else max(scales)
            scales = [s] * k
            sizes = [int(s * x.shape[a] + 0.5) for a in axes]  # rounded half up
    else:
        sizes = _sizes_from_scales([x.shape[a] for a in axes], scales)
    rois = None
    if ctm == "tf_crop_and_resize":
        roi = _floats(node, 1)
        if roi is None or len(roi) not in (2 * k, 2 * rank):
            raise node.error(f"tf_crop_and_resize needs an roi of {2 * k} values")
        if len(roi) == 2 * rank and k != rank:
            roi = [roi[a] for a in axes] + [roi[rank + a] for a in axes]
        rois = [(roi[i], roi[k + i]) for i in range(k)]
    return resize(x, node.elem(0), sizes, scales, axes, mode, ctm, nearest_mode=nearest_mode,
                  cubic_a=node.attr("cubic_coeff_a", -0.75),
                  exclude_outside=bool(node.attr("exclude_outside", 0)), antialias=antialias,
                  rois=rois, extrapolation_value=node.attr("extrapolation_value", 0.0))


@onnx_op("Upsample")
def upsample(node):
    """Resize-10's ancestor: scales (an attribute before opset 9, an input from 9), modes
    nearest and linear, x = o / scale."""
    x = node.tensor(0)
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise node.error(f"mode '{mode}' is not nearest or linear")
    scales = node.attr("scales", None) if node.opset < 9 else _floats(node, 1)
    if scales is None or len(scales) != x.ndim:
        raise node.error(f"scales must have {x.ndim} entries")
    if min(scales) < 1:
        raise node.error(f"Upsample scales must be >= 1, got {list(scales)}")
    mode = "linear" if mode == "bilinear" else mode
    return resize(x, node.elem(0), _sizes_from_scales(x.shape, scales), [float(s) for s in scales],
                  list(range(x.ndim)), mode, "asymmetric", nearest_mode="simple")
