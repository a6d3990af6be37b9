"""GEMM kernels: one `extern "C"` wrapper per `GemmKernel` around the templates of prelude.py.

The wrapper offsets A, B and C by the batch's `MatrixView` offsets (blockIdx.z; an
arithmetic progression inline, any other offsets from a `__constant__` table) and calls
the non-inlined `irg_gemm<T, BM, BN, BK, TM, TN, TA, TB, I>` with the sizes, leading
dimensions, alpha and beta (I: int, or long long for views spanning 2^31 elements).

Tile shapes (256 threads each): 128x128x8 with 8x8 per thread when that still gives at
least `MIN_BLOCKS` blocks, else 64x64x16 (4x4 per thread), else 32x32x32 (2x2): small
matrices (the MLPs' 64x128 layers) need more, smaller blocks to occupy the GPU.
"""

from __future__ import annotations

from ...codegen.kernel_ir import GemmKernel, MatrixView
from ...codegen.renderer import KernelBuffers
from ...ir.types import DType
from .cexpr import CT, literal
from .program import Launch, c_param

TILES = [  # (BM, BN, BK, TM, TN)
    (128, 128, 8, 8, 8),
    (64, 64, 16, 4, 4),
    (32, 32, 32, 2, 2),
]
MIN_BLOCKS = 96
MAX_GRID_Z = 65535


def pick_tile(k: GemmKernel):
    for t in TILES:
        bm, bn = t[0], t[1]
        blocks = -(-k.m // bm) * -(-k.n // bn) * k.batch
        if blocks >= MIN_BLOCKS:
            return t
    return TILES[-1]


def _offset_expr(name: str, which: str, view: MatrixView, batch: int, glob: list) -> str:
    offs = list(view.offsets)[:batch] or [0]
    if len(offs) == 1:
        return str(offs[0])
    step = offs[1] - offs[0]
    if all(offs[i] == offs[0] + i * step for i in range(len(offs))):
        base = f"{offs[0]}LL + " if offs[0] else ""
        return f"{base}z * {step}LL"
    table = f"{name}_{which}_off"
    glob.append(f"__constant__ long long {table}[{len(offs)}] = {{{', '.join(map(str, offs))}}};")
    return f"{table}[z]"


def render_gemm(k: GemmKernel, name: str, tf32: bool = False):
    """(kernel source, file-scope declarations, Launch, uses tf32)."""
    if k.dtype not in (DType.f32, DType.f64):
        raise AssertionError(f"matmul of {k.dtype}")
    ct = CT[k.dtype]
    glob: list[str] = []
    bufs = KernelBuffers()
    bufs.add(k.a.buf)
    bufs.add(k.b.buf)
    bufs.add(k.c.buf, write=True)
    args = bufs.args()
    pa, pb, pc = (bufs.arg(b).name for b in (k.a.buf, k.b.buf, k.c.buf))
    use_tf32 = tf32 and k.dtype is DType.f32
    oa = _offset_expr(name, "a", k.a, k.batch, glob)
    ob = _offset_expr(name, "b", k.b, k.batch, glob)
    oc = _offset_expr(name, "c", k.c, k.batch, glob)
    alpha, beta = literal(k.alpha, k.dtype), literal(k.beta, k.dtype)
    ta, tb = str(k.a.trans).lower(), str(k.b.trans).lower()
    span = max(max(v.offsets) + v.ld * max(k.m, k.n, k.k) for v in (k.a, k.b, k.c))
    it = "int" if span < 2**31 - 1 else "long long"
    sfx = "" if it == "int" else "LL"
    if use_tf32:
        bm, bn, threads = 64, 64, 128
        call = f"irg_gemm_tf32<{ta}, {tb}, {it}>"
        strategy = "gemm tf32 wmma 64x64x16"
        shared = (64 * 20 + 16 * 68 + 4 * 32 * 36) * 4
    else:
        bm, bn, bk, tm, tn = pick_tile(k)
        threads = (bm // tm) * (bn // tn)
        call = f"irg_gemm<{ct}, {bm}, {bn}, {bk}, {tm}, {tn}, {ta}, {tb}, {it}>"
        strategy = f"gemm {bm}x{bn}x{bk}"
        shared = (bk * (bm + 4) + bk * (bn + 4)) * k.dtype.itemsize
    gz = min(k.batch, MAX_GRID_Z)
    params = ", ".join(f"{c_param(a)} {a.name}" for a in args)
    lines = [f'extern "C" __global__ void __launch_bounds__({threads}) {name}({params}) {{',
             f"  for (long long z = blockIdx.z; z < {k.batch}; z += gridDim.z) {{",
             f"    {call}({pa} + ({oa}), {pb} + ({ob}), {pc} + ({oc}),",
             f"        {k.m}, {k.n}, {k.k}, {k.a.ld}{sfx}, {k.b.ld}{sfx}, {k.c.ld}{sfx}, {alpha}, {beta});",
             "  }",
             "}"]
    grid = (-(-k.n // bn), -(-k.m // bm), gz)
    launch = Launch(name, grid, (threads, 1, 1), args, k.name, strategy, shared, True)
    return "\n".join(lines) + "\n", glob, launch, use_tf32
