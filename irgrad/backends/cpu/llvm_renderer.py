"""Render a `Program` (codegen/kernel_ir.py) as LLVM IR text for the host CPU.

Layout of the generated module:

- `@irgrad_entry(ptr %table)`: the whole program, one call per kernel in order;
- per kernel `@kN(ptr %table)` (never inlined, so LLVM's work grows with the number of
  kernels, not with its square): loads its buffer pointers from the pointer table (slot 0
  is the arena) and runs a body `@body.M(ptr noalias ..., i64 lo, i64 hi)` on the
  outermost loop range [lo, hi), directly or split over threads by `GOMP_parallel`;
- bodies are shared: kernels that compute the same thing on other buffers (the layers
  of a deep model, the steps of a long chain) call one body, compiled once;
- two modules (`RenderedProgram`): the bodies are optimized at -O3, the per-kernel glue
  (wrappers, entry, thread fan-out) is compiled without optimization, so LLVM's work is
  bounded by the distinct computations of a program;
- matmuls call BLAS `sgemm`/`dgemm` (Fortran ABI; row-major C = A B is computed as
  C^T = B^T A^T), followed by their epilogue loop.

Loops are plain counted loops; LLVM's vectorizer widens the innermost one (unit-stride
loads, `noalias` buffers, the exp/log/tanh approximations inlined). Reductions carry the
`reassoc` flag so they vectorize too; elementwise arithmetic only `contract` (FMA), which
keeps float32 results within about 1e-6 of the interpreter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...codegen.kernel_ir import GemmKernel, LoopKernel, Program, ReduceKernel, ScatterKernel
from ...codegen.renderer import KernelBuffers, Renderer, Scope
from ...ir.indexing import Clip, FloorDiv, Ix, Mod, Var
from ...ir.scalar import AccRef, Buf, Clamp, IndexValue, InRange, Load
from ...ir.types import DType
from .blas_gemm import render_blas_gemm
from .llvm_math import INTRINSICS_F32, math_library
from .llvm_text import ELEMENT_FLAGS, LL, MEM, REDUCE_FLAGS, FunctionWriter, const_literal
from .small_gemm import prefer_loops, render_loop_gemm

_BODY_NAME = "<body>"  # placeholder in body texts, filled in when the module is written
PARALLEL_MIN_WORK = 32768  # elements below which a kernel stays on one thread


@dataclass
class RenderedProgram:
    """The LLVM IR of a program, as two modules. `kernels` holds the loop bodies, the math
    library and our small matmuls: the work, optimized at -O3. The glue (`glue_defs`: the
    per-kernel entry points, @irgrad_entry and the thread fan-out) is a few loads and
    calls per kernel, compiled without optimization, so that LLVM's effort grows with the
    distinct computations of a program, not with its number of kernels. `glue_decls`
    declare what the glue calls; `text` is the whole program as one module."""

    kernels: str
    glue_decls: str
    glue_defs: str

    @property
    def glue(self) -> str:
        return self.glue_decls + "\n" + self.glue_defs

    @property
    def text(self) -> str:
        return self.kernels + "\n; ---- glue (compiled without optimization) ----\n\n" + self.glue_defs


_EXTREMUM = {"max": "maximum", "min": "minimum"}  # LLVM's NaN-propagating float intrinsics


class KernelRenderer(Renderer):
    backend = "cpu"

    def __init__(self, program: Program, threads: int, gemm: str = "auto"):
        self.program = program
        self.threads = threads
        self.gemm_mode = gemm  # "auto" (per shape), "blas" or "loops"
        self.decls: set[str] = set()
        self.out: list[str] = []  # glue functions
        self.kernel_out: list[str] = []  # functions of the kernels module besides the bodies
        self.exported: list[str] = []  # `declare`s of kernel-module functions the glue calls
        self._bodies: dict[str, list] = {}  # body text (name left out) -> [name, uses]

    # -- module -------------------------------------------------------------------------------
    def render(self) -> RenderedProgram:
        names = []
        for k in self.program.kernels:
            names.append(self.kernel(k))
        body = ["define void @irgrad_entry(ptr %table) {"]
        for n in names:
            body.append(f"  call void @{n}(ptr %table)")
        body.append("  ret void")
        body.append("}")
        bodies = []
        for text, (bname, uses) in self._bodies.items():
            bodies.append(text.replace(_BODY_NAME, bname))
        decls = "\n".join(sorted(self.decls))
        kernels = [math_library(), decls] + bodies + self.kernel_out
        glue_decls = [INTRINSICS_F32, decls, "\n".join(self.exported)]
        glue = self.out + ["\n".join(body)]
        return RenderedProgram("\n\n".join(p for p in kernels if p) + "\n",
                               "\n\n".join(p for p in glue_decls if p) + "\n",
                               "\n\n".join(p for p in glue if p) + "\n")

    def export(self, name: str, param_types) -> None:
        """Declare kernel-module function `name` for the glue module."""
        self.exported.append(f"declare void @{name}({', '.join(param_types)})")

    def define_wrapper(self, name: str, lines) -> None:
        """`@name(ptr %table)`, a kernel's entry point (called from @irgrad_entry and by
        profile())."""
        self.out.append(f"define void @{name}(ptr %table) noinline {{\n" + "\n".join(lines)
                        + "\n  ret void\n}")

    def declare(self, text: str) -> None:
        if text not in INTRINSICS_F32:  # the math library declares those already
            self.decls.add(text)

    # -- buffers --------------------------------------------------------------------------------
    def _load_pointers(self, w: FunctionWriter, bufs, table: str = "%table") -> list[str]:
        """Pointers to buffers (anything with a slot and a byte offset) from the table."""
        ptrs = []
        base_cache: dict[int, str] = {}
        for b in bufs:
            base = base_cache.get(b.slot)
            if base is None:
                slot_ptr = w.assign(f"getelementptr inbounds ptr, ptr {table}, i64 {b.slot}", "sp")
                base = w.assign(f"load ptr, ptr {slot_ptr}, align 8", "base")
                base_cache[b.slot] = base
            ptrs.append(w.assign(f"getelementptr inbounds i8, ptr {base}, i64 {b.offset}", "buf")
                        if b.offset else base)
        return ptrs

    # -- kernels ------------------------------------------------------------------------------
    def kernel(self, k) -> str:
        if isinstance(k, GemmKernel):
            if self.loop_gemms(k):
                return render_loop_gemm(self, k)
            return self.gemm(k)
        name = k.name
        bufs = KernelBuffers().add_kernel(k)
        extent0, work = _outer_extent_and_work(k)
        parallel = self.threads > 1 and work >= PARALLEL_MIN_WORK and extent0 >= 2
        body = self.body_function(k, bufs)
        w = FunctionWriter()
        ptrs = self._load_pointers(w, bufs.args())
        if parallel:
            self.omp_function(name, body, bufs, extent0)
            self.declare("declare void @GOMP_parallel(ptr, ptr, i32, i32)")
            w.emit(f"call void @GOMP_parallel(ptr @{name}.omp, ptr %table, i32 {self.threads}, i32 0)")
        else:
            args = ", ".join(f"ptr {p}" for p in ptrs)
            w.emit(f"call void @{body}({args}{', ' if args else ''}i64 0, i64 {extent0})")
        self.define_wrapper(name, w.lines)
        return name

    def omp_function(self, name: str, body: str, bufs: KernelBuffers, extent0: int) -> None:
        self.declare("declare i32 @omp_get_thread_num()")
        self.declare("declare i32 @omp_get_num_threads()")
        w = FunctionWriter()
        ptrs = self._load_pointers(w, bufs.args(), "%data")
        tid = w.assign("call i32 @omp_get_thread_num()")
        nth = w.assign("call i32 @omp_get_num_threads()")
        tid64 = w.assign(f"sext i32 {tid} to i64")
        nth64 = w.assign(f"sext i32 {nth} to i64")
        # static chunks: [tid * n / nth, (tid + 1) * n / nth)
        a = w.assign(f"mul i64 {tid64}, {extent0}")
        lo = w.assign(f"udiv i64 {a}, {nth64}")
        t1 = w.assign(f"add i64 {tid64}, 1")
        b = w.assign(f"mul i64 {t1}, {extent0}")
        hi = w.assign(f"udiv i64 {b}, {nth64}")
        args = ", ".join(f"ptr {p}" for p in ptrs)
        w.emit(f"call void @{body}({args}{', ' if args else ''}i64 {lo}, i64 {hi})")
        self.out.append(f"define internal void @{name}.omp(ptr %data) {{\n" + "\n".join(w.lines)
                        + "\n  ret void\n}")

    def body_function(self, k, bufs: KernelBuffers) -> str:
        """The name of the function computing kernel k on buffer arguments `bufs` (an
        existing body when another kernel computes the same thing)."""
        args = bufs.args()
        params = ", ".join(f"ptr{' noalias' if a.noalias else ''} %{a.name}" for a in args)
        self.bufs = bufs
        w = FunctionWriter()
        self.w = w
        w.label("%entry")
        entry_at = len(w.lines)
        if isinstance(k, LoopKernel):
            self.loop_kernel(k, lo="%lo", hi="%hi")
        elif isinstance(k, ReduceKernel):
            self.reduce_kernel(k, lo="%lo", hi="%hi")
        elif isinstance(k, ScatterKernel):
            self.scatter_kernel(k, lo="%lo", hi="%hi")
        else:
            raise AssertionError(type(k))
        w.emit("ret void")
        w.lines[entry_at:entry_at] = ["  " + a for a in w.entry_allocas]
        sep = ", " if params else ""
        text = (f"define void @{_BODY_NAME}({params}{sep}i64 %lo, i64 %hi) nounwind {{\n"
                + "\n".join(w.lines) + "\n}")
        entry = self._bodies.get(text)
        if entry is None:
            entry = self._bodies[text] = [f"body.{len(self._bodies)}", 0]
            self.export(entry[0], ["ptr"] * len(args) + ["i64", "i64"])
        entry[1] += 1
        return entry[0]

    # -- loop structures ------------------------------------------------------------------------
    def loops(self, vars_, scope: Scope, body, lo=None, hi=None) -> None:
        """Nested counted loops over `vars_`; the first one runs over [lo, hi) if given."""
        w = self.w
        if not vars_:
            body(scope)
            return
        v = vars_[0]
        start = lo if lo is not None else "0"
        stop = hi if hi is not None else str(v.extent)
        head, bodyl, latch, exit_ = (w.tmp(p) for p in ("head", "body", "latch", "exit"))
        pre = w.tmp("pre")
        w.emit(f"br label {pre}")
        w.label(pre)
        w.emit(f"br label {head}")
        w.label(head)
        iv = w.tmp(v.name)
        nxt = w.tmp(v.name + "n")
        w.emit(f"{iv} = phi i64 [ {start}, {pre} ], [ {nxt}, {latch} ]")
        c = w.assign(f"icmp slt i64 {iv}, {stop}")
        w.emit(f"br i1 {c}, label {bodyl}, label {exit_}")
        w.label(bodyl)
        self.loops(vars_[1:], Scope(scope, binds={v: iv}), body)
        w.emit(f"br label {latch}")
        w.label(latch)
        w.emit(f"{nxt} = add nuw nsw i64 {iv}, 1")
        w.emit(f"br label {head}")
        w.label(exit_)

    def loop_kernel(self, k: LoopKernel, lo, hi) -> None:
        def body(scope):
            self.stores(k.stores, scope)
        self.loops(k.loops, Scope(), body, lo, hi)

    def stores(self, stores, scope) -> None:
        # compute every value first, then store: a result may overwrite an input in place
        vals = [(s, self.expr(s.value, scope)) for s in stores]
        for s, v in vals:
            self.store(s.buf, s.index, v, scope)

    def store(self, buf: Buf, index: Ix, value: str, scope) -> None:
        w = self.w
        ptr = self.address(buf, index, scope)
        if buf.dtype is DType.bool:
            value = w.assign(f"zext i1 {value} to i8")
        w.emit(f"store {MEM[buf.dtype]} {value}, ptr {ptr}, align {buf.dtype.itemsize}")

    def address(self, buf: Buf, index: Ix, scope) -> str:
        i = self.index(index, scope)
        ptr = "%" + self.bufs.arg(buf).name
        return self.w.assign(f"getelementptr inbounds {MEM[buf.dtype]}, ptr {ptr}, i64 {i}", "p")

    def reduce_kernel(self, k: ReduceKernel, lo, hi) -> None:
        w = self.w
        ty = LL[k.dtype]
        init = const_literal(k.init, k.dtype)
        if k.layout == "row":
            acc = w.tmp("acc")
            w.entry_allocas.append(f"{acc} = alloca {ty}, align 8")

            blk = w.tmp("blk")
            if k.blocked:
                w.entry_allocas.append(f"{blk} = alloca {ty}, align 8")

            def outer_body(scope):
                w.emit(f"store {ty} {init}, ptr {acc}")
                target = blk if k.blocked else acc

                def inner_body(s2):
                    v = self.expr(k.operand, s2)
                    for st in k.prologue:
                        self.store(st.buf, st.index, self.expr(st.value, s2), s2)
                    cur = w.assign(f"load {ty}, ptr {target}")
                    w.emit(f"store {ty} {self.combine(k, cur, v)}, ptr {target}")

                if not k.blocked:
                    self.loops(k.inner, scope, inner_body)
                else:
                    # blocked summation: partial sums of one block, then their sum, so the
                    # rounding error grows with blocks + block size, not with the length
                    # (the block totals are added up in double precision)
                    total = w.tmp("tot")
                    w.entry_allocas.append(f"{total} = alloca double, align 8")
                    w.emit(f"store double 0.0, ptr {total}")

                    def block_body(s1):
                        w.emit(f"store {ty} {init}, ptr {blk}")
                        self.loops(k.inner[-1:], s1, inner_body)
                        part = w.assign(f"load {ty}, ptr {blk}")
                        if k.dtype is not DType.f64:
                            part = w.assign(f"fpext {ty} {part} to double")
                        cur = w.assign(f"load double, ptr {total}")
                        w.emit(f"store double {w.assign(f'fadd double {cur}, {part}')}, ptr {total}")
                    self.loops(k.inner[:-1], scope, block_body)
                    t = w.assign(f"load double, ptr {total}")
                    if k.dtype is not DType.f64:
                        t = w.assign(f"fptrunc double {t} to {ty}")
                    w.emit(f"store {ty} {t}, ptr {acc}")
                result = w.assign(f"load {ty}, ptr {acc}")
                s3 = Scope(scope)
                s3.memo[AccRef(k.dtype)] = result
                self.stores(k.epilogue, s3)

            self.loops(k.outer, Scope(), outer_body, lo, hi)
            return
        # column layout: a vector of partial results indexed by the kept axes
        if k.acc_buf is not None:
            acc_ptr = "%" + self.bufs.arg(k.acc_buf).name
        else:
            acc_ptr = w.tmp("accv")
            w.entry_allocas.append(f"{acc_ptr} = alloca {ty}, i64 {k.acc_size}, align 64")

        def acc_addr(scope):
            i = self.index(k.acc_index, scope)
            return w.assign(f"getelementptr inbounds {ty}, ptr {acc_ptr}, i64 {i}", "p")

        def init_body(scope):
            w.emit(f"store {ty} {init}, ptr {acc_addr(scope)}, align {k.dtype.itemsize}")

        self.loops(k.outer, Scope(), init_body, lo, hi)

        def red_body(scope):
            def inner(s2):
                v = self.expr(k.operand, s2)
                for st in k.prologue:
                    self.store(st.buf, st.index, self.expr(st.value, s2), s2)
                p = acc_addr(s2)
                cur = w.assign(f"load {ty}, ptr {p}, align {k.dtype.itemsize}")
                w.emit(f"store {ty} {self.combine(k, cur, v)}, ptr {p}, align {k.dtype.itemsize}")
            self.loops(k.outer, scope, inner, lo, hi)

        self.loops(k.inner, Scope(), red_body)

        def epi_body(scope):
            p = acc_addr(scope)
            result = w.assign(f"load {ty}, ptr {p}, align {k.dtype.itemsize}")
            s3 = Scope(scope)
            s3.memo[AccRef(k.dtype)] = result
            todo = [st for st in k.epilogue if not (
                k.acc_buf is not None and (st.buf.slot, st.buf.offset) == (k.acc_buf.slot, k.acc_buf.offset)
                and isinstance(st.value, AccRef) and st.index == k.acc_index)]
            self.stores(todo, s3)

        if k.epilogue:
            self.loops(k.outer, Scope(), epi_body, lo, hi)

    def combine(self, k: ReduceKernel, a: str, b: str) -> str:
        """One step of a reduction (reassociable, so it vectorizes): add, or max/min with
        NaN propagating (llvm.maximum/minimum; signed smax/smin on integers)."""
        ty = LL[k.dtype]
        if k.combine == "add":
            return self.w.assign(f"fadd {REDUCE_FLAGS} {ty} {a}, {b}" if k.dtype.is_float
                                 else f"add {ty} {a}, {b}")
        fn = (f"llvm.{_EXTREMUM[k.combine]}.{_sfx(k.dtype)}" if k.dtype.is_float
              else f"llvm.s{k.combine}.{ty}")
        flags = f"{REDUCE_FLAGS} " if k.dtype.is_float else ""
        self.declare(f"declare {ty} @{fn}({ty}, {ty})")
        return self.w.assign(f"call {flags}{ty} @{fn}({ty} {a}, {ty} {b})")

    def scatter_kernel(self, k: ScatterKernel, lo, hi) -> None:
        if k.copy is not None:
            self.loops(k.copy.loops, Scope(), lambda s: self.stores(k.copy.stores, s))
        w = self.w
        ty = MEM[k.target.dtype]

        def body(scope):
            v = self.expr(k.value, scope)
            p = self.address(k.target, k.index, scope)
            cur = w.assign(f"load {ty}, ptr {p}, align {k.target.dtype.itemsize}")
            op = "fadd" if k.target.dtype.is_float else "add"
            w.emit(f"store {ty} {w.assign(f'{op} {ty} {cur}, {v}')}, ptr {p}, align {k.target.dtype.itemsize}")

        # updates run in order on one thread (repeated indices accumulate)
        self.loops(k.loops, Scope(), body)

    def loop_gemms(self, k: GemmKernel) -> bool:
        if not k.dtype.is_float:
            return True  # BLAS has no integer products
        if self.gemm_mode == "auto":
            return prefer_loops(k)
        return self.gemm_mode == "loops"

    def gemm(self, k: GemmKernel) -> str:
        return render_blas_gemm(self, k)

    # -- expressions ------------------------------------------------------------------------------
    def index(self, ix: Ix, scope) -> str:
        key = ("ix", ix)
        got = scope.lookup(key)
        if got is not None:
            return got
        w = self.w
        acc = None
        for atom, c in ix.terms:
            a = self.atom(atom, scope)
            term = a if c == 1 else w.assign(f"mul nsw i64 {a}, {c}")
            acc = term if acc is None else w.assign(f"add nsw i64 {acc}, {term}")
        if acc is None:
            out = str(ix.const)
        elif ix.const:
            out = w.assign(f"add nsw i64 {acc}, {ix.const}")
        else:
            out = acc
        scope.memo[key] = out
        return out

    def atom(self, a, scope) -> str:
        w = self.w
        if isinstance(a, Var):
            return scope.var(a)
        if isinstance(a, (FloorDiv, Mod)):
            x = self.index(a.x, scope)
            lo, _ = a.x.bounds()
            if lo >= 0:
                return w.assign(f"{'udiv' if isinstance(a, FloorDiv) else 'urem'} i64 {x}, {a.d}")
            q = w.assign(f"sdiv i64 {x}, {a.d}")
            r = w.assign(f"srem i64 {x}, {a.d}")
            neg = w.assign(f"icmp slt i64 {r}, 0")
            if isinstance(a, FloorDiv):
                qm = w.assign(f"sub i64 {q}, 1")
                return w.assign(f"select i1 {neg}, i64 {qm}, i64 {q}")
            rp = w.assign(f"add i64 {r}, {a.d}")
            return w.assign(f"select i1 {neg}, i64 {rp}, i64 {r}")
        if isinstance(a, Clip):
            return self.clamp_i64(self.index(a.x, scope), a.lo, a.hi)
        if isinstance(a, Clamp):
            v = self.expr(a.value, scope)
            if a.value.dtype is DType.i32:
                v = w.assign(f"sext i32 {v} to i64")
            neg = w.assign(f"icmp slt i64 {v}, 0")  # numpy's negative indices count from the end
            wrapped = w.assign(f"add i64 {v}, {a.n}")
            return self.clamp_i64(w.assign(f"select i1 {neg}, i64 {wrapped}, i64 {v}"), 0, a.n - 1)
        raise AssertionError(a)

    def clamp_i64(self, x: str, lo: int, hi: int) -> str:
        self.declare("declare i64 @llvm.smax.i64(i64, i64)")
        self.declare("declare i64 @llvm.smin.i64(i64, i64)")
        t = self.w.assign(f"call i64 @llvm.smax.i64(i64 {x}, i64 {lo})")
        return self.w.assign(f"call i64 @llvm.smin.i64(i64 {t}, i64 {hi})")

    # -- expression hooks (the walk and the dispatch are codegen/renderer.py's) ---------------
    def literal(self, value, dtype: DType) -> str:
        return const_literal(value, dtype)

    def load(self, x: Load, scope) -> str:
        w = self.w
        p = self.address(x.buf, x.index, scope)
        v = w.assign(f"load {MEM[x.dtype]}, ptr {p}, align {x.dtype.itemsize}", "ld")
        return w.assign(f"icmp ne i8 {v}, 0") if x.dtype is DType.bool else v

    def index_value(self, x: IndexValue, scope) -> str:
        i = self.index(x.index, scope)
        if x.dtype.is_float:
            return self.w.assign(f"sitofp i64 {i} to {LL[x.dtype]}")
        return i if x.dtype is DType.i64 else self.w.assign(f"trunc i64 {i} to {LL[x.dtype]}")

    def in_range(self, x: InRange, scope) -> str:
        w = self.w
        i = self.index(x.index, scope)
        a = w.assign(f"icmp sge i64 {i}, {x.lo}")
        b = w.assign(f"icmp slt i64 {i}, {x.hi}")
        return w.assign(f"and i1 {a}, {b}")

    def select(self, dtype: DType, c: str, a: str, b: str) -> str:
        ty = LL[dtype]
        return self.w.assign(f"select i1 {c}, {ty} {a}, {ty} {b}")

    def cast(self, src: DType, dst: DType, a: str) -> str:
        w = self.w
        s, d = LL[src], LL[dst]
        if src is dst:
            return a
        if dst is DType.bool:
            if src.is_float:
                return w.assign(f"fcmp une {s} {a}, {const_literal(0, src)}")
            return w.assign(f"icmp ne {s} {a}, 0")
        if src is DType.bool:
            return w.assign(f"uitofp i1 {a} to {d}") if dst.is_float else w.assign(f"zext i1 {a} to {d}")
        if src.is_float and dst.is_float:
            op = "fpext" if src.itemsize < dst.itemsize else "fptrunc"
            return w.assign(f"{op} {s} {a} to {d}")
        if src.is_float:
            return w.assign(f"fptosi {s} {a} to {d}")
        if dst.is_float:
            return w.assign(f"sitofp {s} {a} to {d}")
        op = "sext" if src.itemsize < dst.itemsize else "trunc"
        return w.assign(f"{op} {s} {a} to {d}")


def _sfx(dt: DType) -> str:
    return "f32" if dt is DType.f32 else "f64"


def _outer_extent_and_work(k) -> tuple[int, int]:
    if isinstance(k, LoopKernel):
        return (k.loops[0].extent if k.loops else 1), math.prod(v.extent for v in k.loops)
    if isinstance(k, ReduceKernel):
        ext = k.outer[0].extent if k.outer else 1
        return ext, math.prod(v.extent for v in k.outer + k.inner)
    if isinstance(k, ScatterKernel):
        return 1, 0  # sequential: repeated indices must accumulate in order
    raise AssertionError(type(k))


# --- per-op spellings (the scalar instructions of the registry) ---------------------------------

def _neg(r, dt, args, odt):
    ty, (a,) = LL[dt], args
    return r.w.assign(f"fneg {ELEMENT_FLAGS} {ty} {a}") if dt.is_float else r.w.assign(f"sub {ty} 0, {a}")


def _abs(r, dt, args, odt):
    ty, (a,) = LL[dt], args
    if dt.is_float:
        r.declare(f"declare {ty} @llvm.fabs.{_sfx(dt)}({ty})")
        return r.w.assign(f"call {ty} @llvm.fabs.{_sfx(dt)}({ty} {a})")
    r.declare(f"declare {ty} @llvm.abs.{ty}({ty}, i1)")
    return r.w.assign(f"call {ty} @llvm.abs.{ty}({ty} {a}, i1 false)")


def _sign(r, dt, args, odt):
    w, ty, (a,) = r.w, LL[dt], args
    zero, one, mone = const_literal(0, dt), const_literal(1, dt), const_literal(-1, dt)
    if dt.is_float:  # numpy: sign(+-0) = +0, sign(nan) = nan
        gt = w.assign(f"fcmp ogt {ty} {a}, {zero}")
        lt = w.assign(f"fcmp olt {ty} {a}, {zero}")
        nan = w.assign(f"fcmp uno {ty} {a}, {a}")
        z = w.assign(f"select i1 {nan}, {ty} {a}, {ty} {zero}")
        t = w.assign(f"select i1 {lt}, {ty} {mone}, {ty} {z}")
        return w.assign(f"select i1 {gt}, {ty} {one}, {ty} {t}")
    gt = w.assign(f"icmp sgt {ty} {a}, 0")
    lt = w.assign(f"icmp slt {ty} {a}, 0")
    t = w.assign(f"select i1 {lt}, {ty} -1, {ty} 0")
    return w.assign(f"select i1 {gt}, {ty} 1, {ty} {t}")


def _intrinsic(name):
    """A float intrinsic of LLVM (vectorizable): sqrt, floor, ceil, roundeven."""
    def spell(r, dt, args, odt):
        ty, (a,) = LL[dt], args
        r.declare(f"declare {ty} @llvm.{name}.{_sfx(dt)}({ty})")
        return r.w.assign(f"call {ELEMENT_FLAGS} {ty} @llvm.{name}.{_sfx(dt)}({ty} {a})")
    return spell



def _math(name, inline_f32: bool):
    """exp, log, tanh: float32 through the inline approximations of llvm_math.py (they
    vectorize); float64, sin and cos through libm."""
    def spell(r, dt, args, odt):
        ty, (a,) = LL[dt], args
        if inline_f32 and dt is DType.f32:
            return r.w.assign(f"call float @irgrad_{name}f(float {a})")
        fn = name + "f" if dt is DType.f32 else name
        r.declare(f"declare {ty} @{fn}({ty}) nounwind readnone")
        return r.w.assign(f"call {ty} @{fn}({ty} {a})")
    return spell


def _arith(name):
    def spell(r, dt, args, odt):
        ty, (a, b) = LL[dt], args
        if dt.is_float:
            return r.w.assign(f"f{name} {ELEMENT_FLAGS} {ty} {a}, {b}")
        return r.w.assign(f"{name} {ty} {a}, {b}")  # integers wrap (two's complement)
    return spell


def _pow(r, dt, args, odt):
    ty, (a, b) = LL[dt], args
    fn = "powf" if dt is DType.f32 else "pow"
    r.declare(f"declare {ty} @{fn}({ty}, {ty}) nounwind readnone")
    return r.w.assign(f"call {ty} @{fn}({ty} {a}, {ty} {b})")


def _safe_divisor(r, ty, b):
    """(b == 0, b == -1, a divisor sdiv/srem can take): both of those trap on x86."""
    w = r.w
    zero, m1 = w.assign(f"icmp eq {ty} {b}, 0"), w.assign(f"icmp eq {ty} {b}, -1")
    bad = w.assign(f"or i1 {zero}, {m1}")
    return zero, m1, bad, w.assign(f"select i1 {bad}, {ty} 1, {ty} {b}")


def _idiv(r, dt, args, odt):
    # C's a / b; a / 0 = 0 and a / -1 = -a (MIN / -1 wraps), as the IR defines them
    w, ty, (a, b) = r.w, LL[dt], args
    zero, m1, _, d = _safe_divisor(r, ty, b)
    q = w.assign(f"sdiv {ty} {a}, {d}")
    neg = w.assign(f"sub {ty} 0, {a}")
    q = w.assign(f"select i1 {m1}, {ty} {neg}, {ty} {q}")
    return w.assign(f"select i1 {zero}, {ty} 0, {ty} {q}")


def _rem(r, dt, args, odt):
    # C's % and fmod; an integer a % 0 = 0 (and a % -1 = 0, which srem could trap on)
    w, ty, (a, b) = r.w, LL[dt], args
    if dt.is_float:
        return w.assign(f"frem {ELEMENT_FLAGS} {ty} {a}, {b}")
    _, _, bad, d = _safe_divisor(r, ty, b)
    m = w.assign(f"srem {ty} {a}, {d}")
    return w.assign(f"select i1 {bad}, {ty} 0, {ty} {m}")


def _extremum(name):
    def spell(r, dt, args, odt):
        w, ty, (a, b) = r.w, LL[dt], args
        if dt.is_float:
            # numpy's maximum/minimum: NaN propagates, else a > b ? a : b (of two zeros the
            # second wins; llvm.maximum would order -0 below +0)
            cmp = w.assign(f"fcmp {'ogt' if name == 'max' else 'olt'} {ty} {a}, {b}")
            m = w.assign(f"select i1 {cmp}, {ty} {a}, {ty} {b}")
            nan = w.assign(f"fcmp uno {ty} {a}, {a}")
            return w.assign(f"select i1 {nan}, {ty} {a}, {ty} {m}")
        fn = "smax" if name == "max" else "smin"
        r.declare(f"declare {ty} @llvm.{fn}.{ty}({ty}, {ty})")
        return w.assign(f"call {ty} @llvm.{fn}.{ty}({ty} {a}, {ty} {b})")
    return spell


def _bits(inst):
    """and/or/xor/shl/lshr on integers; a shift amount is taken mod the width (the IR's
    definition; LLVM leaves wider shifts undefined)."""
    def spell(r, dt, args, odt):
        ty, (a, b) = LL[dt], args
        if inst in ("shl", "lshr"):
            b = r.w.assign(f"and {ty} {b}, {dt.itemsize * 8 - 1}")
        return r.w.assign(f"{inst} {ty} {a}, {b}")
    return spell


_FCMP = {"eq": "oeq", "ne": "une", "lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge"}
_ICMP = {"eq": "eq", "ne": "ne", "lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge"}
_UCMP = {"eq": "eq", "ne": "ne", "lt": "ult", "le": "ule", "gt": "ugt", "ge": "uge"}


def _compare(name):
    def spell(r, dt, args, odt):
        ty, (a, b) = LL[odt], args
        if odt.is_float:
            return r.w.assign(f"fcmp {_FCMP[name]} {ty} {a}, {b}")
        pred = (_UCMP if odt is DType.bool else _ICMP)[name]
        return r.w.assign(f"icmp {pred} {ty} {a}, {b}")
    return spell


KernelRenderer.code_for_op = {
    "neg": _neg, "abs": _abs, "sign": _sign, "sqrt": _intrinsic("sqrt"),
    "exp": _math("exp", True), "log": _math("log", True), "tanh": _math("tanh", True),
    "sin": _math("sin", False), "cos": _math("cos", False), "atan": _math("atan", False),
    "log1p": _math("log1p", False), "expm1": _math("expm1", False), "erf": _math("erf", False),
    "floor": _intrinsic("floor"), "ceil": _intrinsic("ceil"), "round": _intrinsic("roundeven"),
    "add": _arith("add"), "sub": _arith("sub"), "mul": _arith("mul"), "div": _arith("div"),
    "idiv": _idiv, "rem": _rem, "pow": _pow, "max": _extremum("max"), "min": _extremum("min"),
    "bitwise_and": _bits("and"), "bitwise_or": _bits("or"), "bitwise_xor": _bits("xor"),
    "shift_left": _bits("shl"), "shift_right_logical": _bits("lshr"),
    **{name: _compare(name) for name in _FCMP},
}


def render_program(program: Program, threads: int = 1, gemm: str = "auto") -> RenderedProgram:
    return KernelRenderer(program, threads, gemm).render()
