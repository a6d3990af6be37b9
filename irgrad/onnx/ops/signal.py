"""Signal processing: DFT, STFT, the window functions and MelWeightMatrix.

A DFT is a matrix product with constant cos/sin matrices (irgrad has no FFT op):
O(n^2) work per transform instead of O(n log n), but one fusable matmul on any backend.
Complex values are ONNX's: a last axis of 2 (real, imaginary), or 1 for real input.

    forward  Y_k = sum_t x_t e^{-2 pi i k t / n}
    inverse  x_t = 1/n sum_k Y_k e^{+2 pi i k t / n}

The angles are reduced exactly, 2 pi ((k t) mod n) / n, and cos/sin values within an
ulp of 0 or +-1 are snapped to them, so structural zeros (the imaginary part of bin 0 and
n/2 of a real signal) come out exactly zero. The windows and the mel matrix depend only
on values known at import, so they are numpy constants.
"""

from __future__ import annotations

import numpy as np

from ...frontend import library as L
from .. import dtypes
from ..graph import Val
from . import onnx_op


def _dft_matrices(n_in: int, n_out: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi t k / n for t < n_in (rows), k < n_out (columns), in f64."""
    t = np.arange(n_in, dtype=np.int64)[:, None]
    k = np.arange(n_out, dtype=np.int64)[None, :]
    ang = 2.0 * np.pi * ((t * k) % n) / n
    c, s = np.cos(ang), np.sin(ang)
    for m in (c, s):
        for v in (-1.0, 0.0, 1.0):
            m[np.abs(m - v) < 1e-15] = v
    return c, s


def _along(x, axis: int, mat: np.ndarray):
    """sum_t x[..., t (at axis), ...] mat[t, k]: the result has k in place of t."""
    nd = x.ndim
    perm = [a for a in range(nd) if a != axis] + [axis]
    y = L.matmul(L.transpose(x, *perm) if axis != nd - 1 else x, mat.astype(x.dtype.np))
    back = list(range(nd - 1))
    back.insert(axis, nd - 1)
    return L.transpose(y, *back) if axis != nd - 1 else y


def _fit(x, axis: int, length: int):
    """x truncated or zero-padded to `length` along axis (numpy's fft `n`)."""
    d = x.shape[axis]
    if d > length:
        return x[(slice(None),) * axis + (slice(0, length),)]
    if d < length:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, length - d)
        return L.pad(x, widths)
    return x


def dft(xr, xi, axis: int, n: int, inverse: bool, onesided: bool):
    """(real, imaginary) parts of the DFT of xr + i xi (xi None: real) along `axis`, of
    length n; onesided: the first n//2+1 bins (forward), or a Hermitian one-sided input
    to a real output (inverse, as numpy's irfft; the imaginary part is then None)."""
    if inverse and onesided:
        # irfft: y_t = 1/n sum_{k<m} w_k (Re Y_k cos - Im Y_k sin), w = 1 at k = 0 and at
        # k = n/2 (n even), 2 elsewhere (the conjugate half counted twice)
        m = n // 2 + 1
        xr = _fit(xr, axis, m)
        c, s = _dft_matrices(m, n, n)
        w = np.full((m, 1), 2.0)
        w[0] = 1.0
        if n % 2 == 0:
            w[-1] = 1.0
        c, s = c * w / n, s * w / n
        y = _along(xr, axis, c)
        if xi is not None:
            y = y - _along(_fit(xi, axis, m), axis, s)
        return y, None
    n_in = min(xr.shape[axis], n)
    n_out = n // 2 + 1 if onesided and not inverse else n
    xr = _fit(xr, axis, n_in)
    xi = _fit(xi, axis, n_in) if xi is not None else None
    c, s = _dft_matrices(n_in, n_out, n)
    if inverse:  # e^{+i}: re = xr c - xi s, im = xi c + xr s, all / n
        c, s = c / n, s / n
        yr, yi = _along(xr, axis, c), _along(xr, axis, s)
        if xi is not None:
            yr, yi = yr - _along(xi, axis, s), yi + _along(xi, axis, c)
        return yr, yi
    # e^{-i}: re = xr c + xi s, im = xi c - xr s
    yr, yi = _along(xr, axis, c), -_along(xr, axis, s)
    if xi is not None:
        yr, yi = yr + _along(xi, axis, s), yi + _along(xi, axis, c)
    return yr, yi


def _split_complex(node, x):
    c = x.shape[-1]
    if c not in (1, 2):
        raise node.error(f"the last axis holds (real, imaginary) and must be 1 or 2, got "
                         f"shape {list(x.shape)}")
    xr = x[..., 0]
    return xr, (x[..., 1] if c == 2 else None)


def _join(yr, yi):
    if yi is None:
        return L.reshape(yr, yr.shape + (1,))
    return L.stack([yr, yi], axis=-1)


def _as_float(node, x):
    if not x.dtype.is_float:
        raise node.fail(f"a DFT of {dtypes.name(node.elem(0))} input is not supported")
    return x


@onnx_op("DFT", since=17)
def dft_op(node):
    x = _as_float(node, node.tensor(0))
    r = x.ndim
    if node.opset >= 20:  # the axis became input 2 (default -2) at opset 20
        axis = node.ints(2)[0] if node.has(2) else -2
    else:
        axis = node.attr("axis", 1)
    if not -r <= axis < r - 1:
        raise node.error(f"axis {axis} is out of range for rank {r} (the last axis is the "
                         f"complex one)")
    axis %= r
    inverse, onesided = bool(node.attr("inverse", 0)), bool(node.attr("onesided", 0))
    if node.has(1):
        n = node.ints(1)[0]
    elif inverse and onesided:
        n = 2 * (x.shape[axis] - 1)
    else:
        n = x.shape[axis]
    if n < 1:
        raise node.error(f"dft_length must be >= 1, got {n}")
    xr, xi = _split_complex(node, x)
    yr, yi = dft(xr, xi, axis, n, inverse, onesided)
    return _join(yr, yi)


@onnx_op("STFT", since=17)
def stft(node):
    x = _as_float(node, node.tensor(0))
    if x.ndim != 3:
        raise node.error(f"the signal must be [batch, length, 1 or 2], got {list(x.shape)}")
    step = node.ints(1)[0]
    window = node.tensor(2) if node.has(2) else None
    length = x.shape[1]
    if node.has(3):
        frame = node.ints(3)[0]
        if window is not None and window.shape != (frame,):
            raise node.error(f"frame_length {frame} but a window of shape {list(window.shape)}")
    else:
        frame = window.shape[0] if window is not None else length
    if step < 1 or not 1 <= frame <= length:
        raise node.error(f"frame_step {step} and frame_length {frame} do not fit a signal of "
                         f"length {length}")
    onesided = bool(node.attr("onesided", 1))
    frames = 1 + (length - frame) // step
    # frames[b, f, j] = x[b, f*step + j]: one gather with an index table known at import
    idx = (np.arange(frames)[:, None] * step + np.arange(frame)[None, :]).astype(np.int32)
    fr = L.take(x, idx, axis=1)  # [batch, frames, frame, c]
    if window is not None:
        fr = fr * L.reshape(window.astype(x.dtype), (frame, 1))
    xr, xi = _split_complex(node, fr)
    yr, yi = dft(xr, xi, 2, frame, False, onesided)
    return _join(yr, yi)


# --- windows ------------------------------------------------------------------------------

def _window(node, formula):
    size = node.ints(0)[0]
    periodic = node.attr("periodic", 1)
    elem = node.attr("output_datatype", dtypes.FLOAT)
    dtypes.compute_dtype(elem, f"{node.desc}: ")
    if size < 0:
        raise node.error(f"the window size must be >= 0, got {size}")
    n = np.arange(size, dtype=np.float64)
    big_n = size if periodic else size - 1
    with np.errstate(all="ignore"):
        w = formula(n, float(big_n))
    return Val(c=dtypes.widen(w.astype(dtypes.storage_np(elem)), elem), elem=elem)


@onnx_op("HannWindow", since=17)
def hann(node):
    # w_n = sin^2(pi n / N)
    return _window(node, lambda n, N: np.sin(np.pi * n / N) ** 2)


@onnx_op("HammingWindow", since=17)
def hamming(node):
    # w_n = a - (1 - a) cos(2 pi n / N), a = 25/46
    a = 25.0 / 46.0
    return _window(node, lambda n, N: a - (1.0 - a) * np.cos(2.0 * np.pi * n / N))


@onnx_op("BlackmanWindow", since=17)
def blackman(node):
    # w_n = 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)
    return _window(node, lambda n, N: 0.42 - 0.5 * np.cos(2.0 * np.pi * n / N)
                   + 0.08 * np.cos(4.0 * np.pi * n / N))


@onnx_op("MelWeightMatrix", since=17)
def mel_weight_matrix(node):
    """Triangular filters from linear frequency bins to mel bins, as ONNX's reference
    computes them (mel = 2595 log10(1 + f/700); bin edges floored to DFT bins)."""
    def arg(i):  # in the input's own storage type: the bin edges are floored, so the
        return dtypes.narrow(np.asarray(node.const(i)), node.elem(i))  # rounding matters

    num_mel, dft_length, rate = (int(arg(i).reshape(-1)[0]) for i in range(3))
    low, high = arg(3), arg(4)
    elem = node.attr("output_datatype", dtypes.FLOAT)
    dtypes.compute_dtype(elem, f"{node.desc}: ")
    if num_mel < 1 or dft_length < 1 or rate < 1:
        raise node.error("num_mel_bins, dft_length and sample_rate must be >= 1")
    n_spec = dft_length // 2 + 1
    bins = np.arange(0, num_mel + 2)
    low_mel = 2595 * np.log1p(low / 700) / np.log(10)
    high_mel = 2595 * np.log1p(high / 700) / np.log(10)
    step = (high_mel - low_mel) / bins.shape[0]
    bins = bins * step + low_mel
    bins = 700 * np.expm1(bins / 2595 * np.log(10))
    bins = (((dft_length + 1) * bins) // rate).astype(np.int64).reshape(-1)
    if bins.min() < 0 or bins.max() >= n_spec + 1:
        raise node.error(f"the mel edges fall outside the {n_spec} spectrogram bins")
    out = np.zeros((n_spec, num_mel))
    for i in range(num_mel):
        lo, mid, hi = bins[i], bins[i + 1], bins[i + 2]
        if mid == lo:
            if mid < n_spec:
                out[mid, i] = 1.0
        else:
            for j in range(lo, min(mid, n_spec - 1) + 1):
                out[j, i] = (j - lo) / (mid - lo)
        for j in range(mid, min(hi, n_spec)):
            out[j, i] = (hi - j) / (hi - mid)
    return Val(c=dtypes.widen(out.astype(dtypes.storage_np(elem)), elem), elem=elem)
