"""Matmuls through BLAS (`sgemm`/`dgemm`, Fortran ABI).

Row-major C = A B is computed as column-major C^T = B^T A^T: B is passed first, and a
view stored transposed is passed with 'T'. Every operand is a `MatrixView` (per-batch
offsets and a leading dimension), so the views the fusion absorbed cost nothing here.

Threads: BLAS runs its own threads (limited with threadpoolctl). Splitting a product
into one single-threaded BLAS call per thread from generated code was measured too: with
scipy's OpenBLAS it was slower (W2 at 2 threads: 4.7 ms against 3.5 ms), as concurrent
calls contend inside the library, so the library's own threading is used.
"""

from __future__ import annotations

from ...codegen.kernel_ir import GemmKernel
from ...ir.types import DType
from .llvm_text import LL, FunctionWriter, const_literal


def render_blas_gemm(r, k: GemmKernel) -> str:
    name = k.name
    blas = "sgemm" if k.dtype is DType.f32 else "dgemm"
    ty = LL[k.dtype]
    r.declare(f"declare void @{blas}(ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr)")
    w = FunctionWriter()
    pa, pb, pc = r._load_pointers(w, [k.a.buf, k.b.buf, k.c.buf])

    def by_ref(t: str, v) -> str:  # Fortran arguments are passed by reference
        p = w.assign(f"alloca {t}, align 8")
        w.emit(f"store {t} {v}, ptr {p}")
        return p

    ta = by_ref("i8", ord("T" if k.b.trans else "N"))
    tb = by_ref("i8", ord("T" if k.a.trans else "N"))
    M, N, K = by_ref("i32", k.n), by_ref("i32", k.m), by_ref("i32", k.k)
    lda, ldb, ldc = by_ref("i32", k.b.ld), by_ref("i32", k.a.ld), by_ref("i32", k.c.ld)
    alpha = by_ref(ty, const_literal(k.alpha, k.dtype))
    beta = by_ref(ty, const_literal(k.beta, k.dtype))

    def at(p, elems):
        return w.assign(f"getelementptr inbounds {ty}, ptr {p}, i64 {elems}") if elems else p

    for bi in range(k.batch):
        w.emit(f"call void @{blas}(ptr {ta}, ptr {tb}, ptr {M}, ptr {N}, ptr {K}, ptr {alpha}, "
               f"ptr {at(pb, k.b.offsets[bi])}, ptr {lda}, ptr {at(pa, k.a.offsets[bi])}, ptr {ldb}, "
               f"ptr {beta}, ptr {at(pc, k.c.offsets[bi])}, ptr {ldc})")
    if k.epilogue is not None:
        epi = r.kernel(k.epilogue)
        w.emit(f"call void @{epi}(ptr %table)")
    r.define_wrapper(name, w.lines)
    return name
