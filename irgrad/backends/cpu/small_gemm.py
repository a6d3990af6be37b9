"""Our own matmul loops in LLVM IR, for products too small for BLAS to pay off.

A BLAS call costs a fixed overhead (argument checks, packing, thread decisions) that
dominates tiny products; for those, plain loops that LLVM vectorizes win:

- B not transposed: i-k-j order, C's row stays in L1 and the j loop streams B's row:
  C[i, :] += alpha * A[i, k] * B[k, :]   (vectorized over j);
- B transposed: i-j-k order, a dot product over k per element (vectorized with the
  `reassoc` flag).

Operands are the same strided `MatrixView`s BLAS gets (per-batch offsets as constant
tables), so every view the fusion absorbed works here too. `prefer_loops` decides per
shape.
"""

from __future__ import annotations

from ...codegen.kernel_ir import GemmKernel
from ...ir.types import DType
from .llvm_text import ELEMENT_FLAGS, LL, REDUCE_FLAGS, FunctionWriter, const_literal

LOOP_GEMM_MAX_MNK = 8192  # m * n * k at or below which the loops beat BLAS here


def prefer_loops(k: GemmKernel) -> bool:
    """Measured on this project's 2-core machine (OpenBLAS from scipy, 1 thread):

    | m x n x k (batch) | BLAS us | loops us |
    |---|---|---|
    | 16 x 16 x 16 | 3.6 | 1.5 |
    | 32 x 32 x 32 | 2.0 | 2.2 |
    | 64 x 64 x 16 | 2.5 | 3.8 |
    | 64 x 10 x 128 | 8.2 | 19.0 |
    | 64 x 128 x 64 | 16.6 | 35.3 |
    | 64 x 32 x 64 (32) | 113 | 178 |

    OpenBLAS wins from about 32^3 up, including W1's narrow products; plain vectorized
    loops win only below that (a register-blocked micro-kernel would be needed to beat it
    on W1's shapes). So the loops are chosen for products of at most 16^3 * 2, and for
    every integer product (BLAS has none).
    """
    if not k.dtype.is_float:
        return True
    return k.m * k.n * k.k <= LOOP_GEMM_MAX_MNK


def render_loop_gemm(r, k: GemmKernel) -> str:
    """Emit `@name(ptr %table)` computing the GEMM with loops; returns the name."""
    ty = LL[k.dtype]
    sz = k.dtype.itemsize
    name = k.name
    is_float = k.dtype.is_float
    if is_float:
        fma = f"llvm.fma.{'f32' if k.dtype is DType.f32 else 'f64'}"
        r.declare(f"declare {ty} @{fma}({ty}, {ty}, {ty})")

    def mul_add(a, b, c):
        """a * b + c (fused for floats; wrapping integer arithmetic otherwise)."""
        if is_float:
            return w.assign(f"call {ty} @{fma}({ty} {a}, {ty} {b}, {ty} {c})")
        return w.assign(f"add {ty} {w.assign(f'mul {ty} {a}, {b}')}, {c}")

    def mul(a, b, flags=ELEMENT_FLAGS):
        return w.assign(f"fmul {flags} {ty} {a}, {b}" if is_float else f"mul {ty} {a}, {b}")
    w = FunctionWriter()
    w.label("%entry")
    tables = []
    for tag, view in (("a", k.a), ("b", k.b), ("c", k.c)):
        vals = ", ".join(f"i64 {o}" for o in view.offsets)
        tables.append(f"@{name}.{tag}off = internal constant [{k.batch} x i64] [{vals}]")
    def loop(var, n, body):
        pre, head, bodyl, latch, exit_ = (w.tmp(p) for p in ("pre", "head", "body", "latch", "exit"))
        w.emit(f"br label {pre}")
        w.label(pre)
        w.emit(f"br label {head}")
        w.label(head)
        iv, nxt = w.tmp(var), w.tmp(var + "n")
        w.emit(f"{iv} = phi i64 [ 0, {pre} ], [ {nxt}, {latch} ]")
        c = w.assign(f"icmp slt i64 {iv}, {n}")
        w.emit(f"br i1 {c}, label {bodyl}, label {exit_}")
        w.label(bodyl)
        body(iv)
        w.emit(f"br label {latch}")
        w.label(latch)
        w.emit(f"{nxt} = add nuw nsw i64 {iv}, 1")
        w.emit(f"br label {head}")
        w.label(exit_)

    def elem(ptr, off, row, col, view):
        """Address of element (row, col) of a view (row-major or stored transposed)."""
        a, b = (col, row) if view.trans else (row, col)
        t = w.assign(f"mul nsw i64 {a}, {view.ld}")
        t = w.assign(f"add nsw i64 {t}, {b}")
        t = w.assign(f"add nsw i64 {t}, {off}")
        return w.assign(f"getelementptr inbounds {ty}, ptr {ptr}, i64 {t}")

    alpha, beta = const_literal(k.alpha, k.dtype), const_literal(k.beta, k.dtype)
    zero = const_literal(0.0, k.dtype)

    def batch_body(bi):
        offs = []
        for tag in "abc":
            p = w.assign(f"getelementptr inbounds [{k.batch} x i64], ptr @{name}.{tag}off, i64 0, i64 {bi}")
            offs.append(w.assign(f"load i64, ptr {p}"))
        ao, bo, co = offs

        def row_body(i):
            if not k.b.trans:
                # C[i, :] = beta C[i, :];  C[i, :] += (alpha A[i, kk]) B[kk, :]
                def init(j):
                    p = elem("%c", co, i, j, k.c)
                    if k.beta == 0:
                        w.emit(f"store {ty} {zero}, ptr {p}, align {sz}")
                    elif k.beta != 1:
                        v = w.assign(f"load {ty}, ptr {p}, align {sz}")
                        w.emit(f"store {ty} {mul(v, beta)}, ptr {p}, align {sz}")
                if k.beta != 1:
                    loop("j", k.n, init)

                def k_body(kk):
                    a = w.assign(f"load {ty}, ptr {elem('%a', ao, i, kk, k.a)}, align {sz}")
                    if k.alpha != 1:
                        a = mul(a, alpha)

                    def j_body(j):
                        pc = elem("%c", co, i, j, k.c)
                        bv = w.assign(f"load {ty}, ptr {elem('%b', bo, kk, j, k.b)}, align {sz}")
                        cv = w.assign(f"load {ty}, ptr {pc}, align {sz}")
                        w.emit(f"store {ty} {mul_add(a, bv, cv)}, ptr {pc}, align {sz}")
                    loop("j", k.n, j_body)
                loop("kk", k.k, k_body)
                return

            # B stored transposed: a dot product over kk for every element
            acc = w.tmp("acc")
            w.entry_allocas.append(f"{acc} = alloca {ty}, align 8")

            def col_body(j):
                w.emit(f"store {ty} {zero}, ptr {acc}")

                def k_body(kk):
                    av = w.assign(f"load {ty}, ptr {elem('%a', ao, i, kk, k.a)}, align {sz}")
                    bv = w.assign(f"load {ty}, ptr {elem('%b', bo, kk, j, k.b)}, align {sz}")
                    cur = w.assign(f"load {ty}, ptr {acc}")
                    prod = mul(av, bv, REDUCE_FLAGS)
                    total = w.assign(f"fadd {REDUCE_FLAGS} {ty} {cur}, {prod}" if is_float else f"add {ty} {cur}, {prod}")
                    w.emit(f"store {ty} {total}, ptr {acc}")
                loop("kk", k.k, k_body)
                s = w.assign(f"load {ty}, ptr {acc}")
                if k.alpha != 1:
                    s = mul(s, alpha)
                pc = elem("%c", co, i, j, k.c)
                if k.beta != 0:
                    cv = w.assign(f"load {ty}, ptr {pc}, align {sz}")
                    s = mul_add(cv, beta, s)
                w.emit(f"store {ty} {s}, ptr {pc}, align {sz}")
            loop("j", k.n, col_body)

        loop("i", k.m, row_body)

    loop("bi", k.batch, batch_body)
    w.emit("ret void")
    body = w.lines
    body[1:1] = ["  " + a for a in w.entry_allocas]
    r.kernel_out.append("\n".join(tables))
    r.export(f"{name}.body", ["ptr", "ptr", "ptr"])
    r.kernel_out.append(f"define void @{name}.body(ptr noalias %a, ptr noalias %b, ptr noalias %c) nounwind {{\n"
                 + "\n".join(body) + "\n}")
    # the wrapper reads the three pointers from the table
    w2 = FunctionWriter()
    pa, pb, pc = r._load_pointers(w2, [k.a.buf, k.b.buf, k.c.buf])
    w2.emit(f"call void @{name}.body(ptr {pa}, ptr {pb}, ptr {pc})")
    if k.epilogue is not None:
        epi = r.kernel(k.epilogue)
        w2.emit(f"call void @{epi}(ptr %table)")
    r.define_wrapper(name, w2.lines)
    return name
