"""The measurements behind conv's algorithm choice (`expand{conv=auto}`).

For each convolution of the W5 and W6 workloads (and a few more shapes), times the
forward conv, its input gradient and its weight gradient compiled with each algorithm
the `expand` pass offers, on the CPU backend at one thread: median microseconds of many
calls. The table goes to stdout (docs/passes.md quotes one run).

    python benchmarks/conv_algorithms.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import irgrad as ig  # noqa: E402
from irgrad.ir.ops.conv import conv_attrs  # noqa: E402

# name, x shape, w shape, stride, padding
SHAPES = [
    ("W5 conv1", (64, 1, 28, 28), (6, 1, 5, 5), 1, 0),
    ("W5 conv2", (64, 6, 12, 12), (16, 6, 5, 5), 1, 0),
    ("W6 stem / block1", (32, 16, 32, 32), (16, 16, 3, 3), 1, 1),
    ("W6 block2 conv1", (32, 16, 32, 32), (32, 16, 3, 3), 2, 1),
    ("W6 block2 conv2", (32, 32, 16, 16), (32, 32, 3, 3), 1, 1),
    ("W6 block3 conv2", (32, 64, 8, 8), (64, 64, 3, 3), 1, 1),
    ("W6 shortcut 1x1", (32, 16, 32, 32), (32, 16, 1, 1), 2, 0),
    ("digits conv1", (64, 1, 8, 8), (16, 1, 3, 3), 1, 1),
]


def _median_us(fn, args, repeat):
    for _ in range(3):
        fn(*args)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e6


def measure(repeat: int):
    rng = np.random.default_rng(0)
    rows = []
    for name, xs, ws, s, p in SHAPES:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        attrs = conv_attrs((s, s), (1, 1), (p, p), (p, p), 1)
        fwd = ig.trace(lambda a, b: ig.primitive("conv", a, b, **attrs), x, w, name="fwd")
        g = rng.standard_normal(fwd(x, w).shape).astype(np.float32)
        dx = ig.trace(lambda gg, b: ig.primitive("conv_input_grad", gg, b, size=xs[2:], **attrs), g, w,
                      name="dx")
        row = {"conv": name, "x": xs, "w": ws}
        for algo in ("gemm", "batched", "direct"):
            c = ig.compile(fwd, "cpu", pipeline=f"expand{{conv={algo}}},O2", threads=1)
            row[f"fwd {algo}"] = _median_us(c, (x, w), repeat)
        for algo in ("col2im", "flip"):
            c = ig.compile(dx, "cpu", pipeline=f"expand{{input-grad={algo}}},O2", threads=1)
            row[f"dx {algo}"] = _median_us(c, (g, w), repeat)
        rows.append(row)
    return rows


def table(rows) -> str:
    keys = ["fwd gemm", "fwd batched", "fwd direct", "dx col2im", "dx flip"]
    lines = ["| conv | x | w | " + " | ".join(keys) + " |", "|---|---|---|" + "---:|" * len(keys)]
    for r in rows:
        best_f = min(keys[:3], key=lambda k: r[k])
        best_d = min(keys[3:], key=lambda k: r[k])
        cells = [f"**{r[k]:,.0f}**" if k in (best_f, best_d) else f"{r[k]:,.0f}" for k in keys]
        lines.append(f"| {r['conv']} | {list(r['x'])} | {list(r['w'])} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Median microseconds per call, CPU backend, one thread; bold: the fastest.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    print(table(measure(args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
