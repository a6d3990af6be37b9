"""A convolution with bias and ReLU: docs/passes.md dumps it after `expand` and after O2."""

from __future__ import annotations

import irgrad as ig
from irgrad import f32


# (the DSL emits one `conv` op; `expand` makes it im2col + GEMM)
@ig.function
def conv_relu(x: f32[8, 3, 16, 16], w: f32[16, 3, 3, 3], b: f32[16]):
    return ig.relu(ig.conv2d(x, w, b, padding=1))
