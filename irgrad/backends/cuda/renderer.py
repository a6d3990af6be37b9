"""Render a `Program` (codegen/kernel_ir.py) as one CUDA C translation unit plus a launch plan.

Every kernel is `extern "C" __global__`, takes its buffers as pointer arguments (a table
slot's device address plus the buffer's byte offset, resolved by the runtime once) and is
launched with the grid and block the plan records. How each kernel kind maps to the GPU:

- `LoopKernel`: a grid-stride loop over the flattened iteration space. When the innermost
  loop's extent is a multiple of 4 (or the kernel is one flat loop: a scalar tail follows)
  and every store is unit-stride in it at a 16-byte aligned offset, a thread handles 4
  consecutive elements: such loads and stores become float4/int4/uchar4 (two double2 or
  longlong2 for 8-byte types), other loads stay per lane or, when invariant, are shared.
- `ReduceKernel`, row layout (the reduced axes include the innermost): one warp per output
  for short rows (lanes stride the row, `__shfl_xor_sync` tree), one 256-thread block per
  output for long ones (warp shuffles, then shared memory across warps), and for a few
  outputs with very long rows two kernels: blocks reduce chunks into partials (runtime
  scratch), one warp per output combines them; rows of at most 4 elements, one thread
  per output. Prologue stores run where the element is
  read; the epilogue runs once per output on the thread holding the result.
- column layout (the innermost axis is kept): 32 consecutive outputs per block (coalesced),
  8 warps splitting the reduced axes, partials combined through shared memory.
- `GemmKernel`: the tiled shared-memory GEMM of prelude.py (tile shape picked from the
  problem size), `MatrixView` offsets per batch through blockIdx.z, ld and transposes as
  template arguments, alpha/beta exact; then the epilogue as a loop kernel. With
  `tf32=True` float32 GEMMs use tensor cores (WMMA, see prelude.PRELUDE_TF32).
- `ScatterKernel`: the copy as a loop kernel, then one thread per update with `atomicAdd`
  (float sums in an unspecified order: rounding may differ from the CPU's sequential
  order by a few ulps).

Stores always follow the computation of every value of the same point (in-place kernels
read an element before it is overwritten). Numerics: CUDA's expf/logf/tanhf/sinf/cosf/
powf (a few ulp, full range; no --use_fast_math), IEEE division and sqrt, FMA contraction
allowed (as the CPU's `contract`).
"""

from __future__ import annotations

import math
import re

from ...ir.types import DType
from ...codegen.kernel_ir import GemmKernel, LoopKernel, Program, ReduceKernel, ScatterKernel
from ...ir.indexing import FloorDiv, Ix, Mod, Var, atom_vars, linearize
from ...ir.scalar import AccRef, Buf, Clamp, Load, ix_exprs, sx_indices, walk_exprs
from ...codegen.renderer import KernelBuffers, Scope
from .cexpr import ACC_VAR, CT, LANE_BASE, Block, ExprRenderer, literal
from .gemm import render_gemm
from .prelude import PRELUDE, PRELUDE_TF32
from .program import CudaProgram, Launch, c_param

THREADS = 256
GRID_CAP = 4096  # blocks of a grid-stride loop (enough to fill any current GPU)
VEC = 4
VEC_TYPES = {DType.f32: ("float4", 1), DType.i32: ("int4", 1), DType.bool: ("uchar4", 1),
             DType.f64: ("double2", 2), DType.i64: ("longlong2", 2)}
WARP_ROW_MAX = 256  # rows up to this long get a warp each
WARP_ROW_MAX_MANY = 4096  # ... or up to this long when there are many of them
SPLIT_MIN_INNER = 16384  # rows at least this long, with few outputs, reduce in two passes
SPLIT_MAX_OUTER = 64
THREAD_ROW_MAX = 4  # rows this short: one thread per output


def c_name(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    return s if s and not s[0].isdigit() else "k_" + s


def _signature(name: str, args: list, threads: int) -> str:
    params = ", ".join(f"{c_param(a)} {a.name}" for a in args)
    return f'extern "C" __global__ void __launch_bounds__({threads}) {name}({params})'


def _bind_flat(block: Block, scope: Scope, flat: str, vars_, itype: str, tmp) -> None:
    """Bind loop variables (outermost first) from a flat row-major index `flat`."""
    ut = "unsigned" if itype == "int" else "unsigned long long"
    rem = flat
    for d in range(len(vars_) - 1, -1, -1):
        v = vars_[d]
        nm = tmp(c_name(v.name) + "_")
        if d == 0:
            expr = flat if rem == flat else f"({itype})({rem})"
        elif v.extent == 1:
            expr = "0"
        else:
            expr = f"({itype})(({ut})({rem}) % {v.extent}u)"
        block.emit(f"const {itype} {nm} = {expr};")
        scope.binds[v] = nm
        if d > 0 and v.extent != 1:
            q = tmp("q")
            block.emit(f"const {ut} {q} = ({ut})({rem}) / {v.extent}u;")
            rem = q


# --- the renderer ---------------------------------------------------------------------------------

class CudaRenderer:
    def __init__(self, program: Program, tf32: bool = False, vectorize: bool = True):
        self.program = program
        self.tf32 = tf32
        self.vectorize = vectorize
        self.kernels: list[str] = []
        self.globals: list[str] = []
        self.launches: list[Launch] = []
        self.scratch_bytes = 0
        self.uses_tf32 = False

    def render(self) -> CudaProgram:
        for k in self.program.kernels:
            if isinstance(k, LoopKernel):
                self.loop_kernel(k, k.name)
            elif isinstance(k, ReduceKernel):
                self.reduce_kernel(k)
            elif isinstance(k, GemmKernel):
                src, glob, launch, tf = render_gemm(k, c_name(k.name), self.tf32)
                self.uses_tf32 |= tf
                self.globals.extend(glob)
                self.kernels.append(src)
                self.launches.append(launch)
                if k.epilogue is not None:
                    self.loop_kernel(k.epilogue, k.epilogue.name, origin=k.name)
            elif isinstance(k, ScatterKernel):
                if k.copy is not None:
                    self.loop_kernel(k.copy, k.copy.name, origin=k.name)
                self.scatter_kernel(k)
            else:
                raise AssertionError(f"unknown kernel {type(k).__name__}")
        head = (f"// irgrad: CUDA C for program '{self.program.name}': "
                f"{len(self.launches)} kernels, arena {self.program.arena_bytes} bytes\n")
        parts = [head, PRELUDE]
        if self.uses_tf32:
            parts.append(PRELUDE_TF32)
        parts.extend(self.globals)
        parts.extend(self.kernels)
        source = "\n".join(parts)
        return CudaProgram(self.program.name, source, self.launches, self.program,
                           self.scratch_bytes, {"tf32": self.tf32, "vectorize": self.vectorize})

    def _emit(self, sig: str, body: Block) -> None:
        self.kernels.append(sig + " {\n" + "\n".join(body.render(1)) + "\n}\n")

    # -- loop kernels ------------------------------------------------------------------------------
    def loop_kernel(self, k: LoopKernel, name: str, origin: str | None = None) -> None:
        name = c_name(name)
        args = KernelBuffers()
        args.add_stores(k.stores)
        arglist = args.args()
        n = math.prod(v.extent for v in k.loops)
        itype = "int" if n < 2**31 - 4 * THREADS * GRID_CAP else "long long"
        plan = self._vector_plan(k) if self.vectorize else None
        ex = ExprRenderer(args)
        body = Block()
        body.emit(f"const {itype} stride = ({itype})gridDim.x * blockDim.x;")
        body.emit(f"const {itype} tid = ({itype})blockIdx.x * blockDim.x + threadIdx.x;")
        root = Scope(None, body)
        groups = n
        if plan is not None:
            groups = n // VEC
            loop = body.open(f"for ({itype} g = tid; g < {groups}; g += stride)")
            self._vector_body(k, args, ex, Scope(root, loop), loop, f"g * {VEC}", itype, plan)
            body.close_child()
            if n % VEC:
                tail = body.open(f"for ({itype} t = {groups * VEC} + tid; t < {n}; t += stride)")
                scalar = ExprRenderer(args)  # no lane analysis; names continue
                scalar.n = ex.n
                self._scalar_body(k, scalar, Scope(root, tail), tail, "t", itype)
                body.close_child()
        else:
            loop = body.open(f"for ({itype} t = tid; t < {n}; t += stride)")
            self._scalar_body(k, ex, Scope(root, loop), loop, "t", itype)
            body.close_child()
        self._emit(_signature(name, arglist, THREADS), body)
        grid = max(1, min(GRID_CAP, -(-max(groups, 1) // THREADS)))
        self.launches.append(Launch(name, (grid, 1, 1), (THREADS, 1, 1), arglist, origin or k.name,
                                    "loop vec4" if plan is not None else "loop"))

    def _scalar_body(self, k: LoopKernel, ex: ExprRenderer, scope: Scope, block: Block, flat: str,
                     itype: str) -> None:
        _bind_flat(block, scope, flat, k.loops, itype, ex.tmp)
        vals = [(s, ex.expr(s.value, scope)) for s in k.stores]
        idx = [ex.index(s.index, scope) for s, _ in vals]
        for (s, v), i in zip(vals, idx):
            block.emit(ex.store_stmt(s.buf, i, v))

    def _vector_plan(self, k: LoopKernel):
        """The innermost variable and the vectorizable loads, or None."""
        if not k.loops:
            return None
        x = k.loops[-1]
        if x.extent % VEC and len(k.loops) > 1:
            return None
        if math.prod(v.extent for v in k.loops) < VEC:
            return None
        for s in k.stores:
            if not _unit_stride(s.index, x, s.buf):
                return None
        vec_loads = set()
        for e in walk_exprs([s.value for s in k.stores] + [e for s in k.stores for e in ix_exprs(s.index)]):
            if isinstance(e, Load) and x in e.index.vars() and _unit_stride(e.index, x, e.buf):
                vec_loads.add(e)
        return x, vec_loads

    def _vector_body(self, k: LoopKernel, args: KernelBuffers, ex: ExprRenderer, group: Scope,
                     block: Block, flat: str, itype: str, plan) -> None:
        x, vec_loads = plan
        _bind_flat(block, group, flat, k.loops, itype, ex.tmp)
        base = group.binds[x]  # lanes bind x; the group scope holds what is shared
        group.binds[LANE_BASE] = base
        lanes = []
        for j in range(VEC):
            lanes.append(Scope(group, block, {x: base if j == 0 else f"({base} + {j})"}))
        lane_of = {id(s): j for j, s in enumerate(lanes)}

        def vector_load(load: Load, scope: Scope):
            j = lane_of.get(id(scope))
            if j is None or load not in vec_loads:
                return None
            key = ("vec", load)
            names = group.memo.get(key)
            if names is None:
                vt, parts = VEC_TYPES[load.dtype]
                i0 = ex.index(load.index, lanes[0])
                p = ex.ptr(load.buf)
                names = []
                per = VEC // parts
                for q in range(parts):
                    nm = ex.tmp("v")
                    off = f"{i0}" if q == 0 else f"{i0} + {q * per}"
                    block.emit(f"const {vt} {nm} = *reinterpret_cast<const {vt}*>(&{p}[{off}]);")
                    names.append(nm)
                group.memo[key] = names
            per = VEC // len(names)
            comp = "xyzw"[j % per]
            v = f"{names[j // per]}.{comp}"
            return f"({v} != 0)" if load.dtype is DType.bool else v

        def lane_index(ix: Ix, scope: Scope):
            j = lane_of.get(id(scope))
            if j is None or x not in ix.vars():
                return None
            form = lane_form(ix, x)
            if form is None:
                return None
            i0 = ex.index(ix, lanes[0]) if j else None
            if j == 0:
                return None  # lane 0 renders the index itself
            return f"({i0} + {form[0] * j})" if form[0] else i0

        ex.vector_load = vector_load
        ex.lane_index = lane_index
        ex.lane_var = x
        ex.lane_invariant = lambda ix: (lane_form(ix, x) or (None,))[0] == 0
        vals = [[ex.expr(s.value, lane) for s in k.stores] for lane in lanes]
        for si, s in enumerate(k.stores):
            vt, parts = VEC_TYPES[s.buf.dtype]
            i0 = ex.index(s.index, lanes[0])
            p = ex.ptr(s.buf)
            per = VEC // parts
            cast = "(unsigned char)" if s.buf.dtype is DType.bool else ""
            for q in range(parts):
                comps = ", ".join(f"{cast}({vals[q * per + j][si]})" for j in range(per))
                off = f"{i0}" if q == 0 else f"{i0} + {q * per}"
                block.emit(f"*reinterpret_cast<{vt}*>(&{p}[{off}]) = make_{vt}({comps});")

    # -- scatter ----------------------------------------------------------------------------------
    def scatter_kernel(self, k: ScatterKernel) -> None:
        name = c_name(k.name)
        args = KernelBuffers()
        args.add(k.target, write=True)
        args.add_exprs([k.value], [k.index])
        arglist = args.args()
        n = math.prod(v.extent for v in k.loops)
        body = Block()
        body.emit("const long long stride = (long long)gridDim.x * blockDim.x;")
        loop = body.open("for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; "
                         f"t < {n}; t += stride)")
        scope = Scope(Scope(None, body), loop)
        ex = ExprRenderer(args)
        _bind_flat(loop, scope, "t", k.loops, "long long", ex.tmp)
        v = ex.expr(k.value, scope)
        i = ex.index(k.index, scope)
        p = ex.ptr(k.target)
        dt = k.target.dtype
        if dt is DType.i64:
            loop.emit(f"atomicAdd((unsigned long long*)&{p}[{i}], (unsigned long long)({v}));")
        elif dt in (DType.f32, DType.f64, DType.i32):
            loop.emit(f"atomicAdd(&{p}[{i}], {v});")
        else:
            raise AssertionError(f"scatter_add into {dt}")
        body.close_child()
        self._emit(_signature(name, arglist, THREADS), body)
        grid = max(1, min(GRID_CAP, -(-n // THREADS)))
        self.launches.append(Launch(name, (grid, 1, 1), (THREADS, 1, 1), arglist, k.name,
                                    "scatter atomicAdd"))

    # -- reductions -------------------------------------------------------------------------------
    def reduce_kernel(self, k: ReduceKernel) -> None:
        n_out = math.prod(v.extent for v in k.outer)
        n_in = math.prod(v.extent for v in k.inner)
        if k.layout == "column" and n_in >= 32:
            return self._reduce_column(k, n_out, n_in)
        if k.layout == "column":
            return self._reduce_rows(k, "thread", n_out, n_in)
        if n_out <= SPLIT_MAX_OUTER and n_in >= SPLIT_MIN_INNER:
            return self._reduce_split(k, n_out, n_in)
        if n_in <= THREAD_ROW_MAX and n_out >= 32:
            return self._reduce_rows(k, "thread", n_out, n_in)
        if n_in <= WARP_ROW_MAX or (n_in <= WARP_ROW_MAX_MANY and n_out >= 1024):
            return self._reduce_rows(k, "warp", n_out, n_in)
        return self._reduce_rows(k, "block", n_out, n_in)

    def _reduce_args(self, k: ReduceKernel, extra=()) -> tuple[KernelBuffers, list]:
        args = KernelBuffers()
        args.add_stores(k.prologue + k.epilogue)
        args.add_exprs([k.operand])
        for b in extra:
            args.add(b, write=True)
        return args, args.args()

    def _inner_loop(self, k, ex, outer_scope: Scope, block: Block, start: str, stop: str,
                    step: str, acc: str, itype: str = "int") -> None:
        """for r in [start, stop) by step: operand, prologue stores, combine into acc."""
        loop = block.open(f"for ({itype} r = {start}; r < {stop}; r += {step})")
        s2 = Scope(outer_scope, loop)
        _bind_flat(loop, s2, "r", k.inner, itype, ex.tmp)
        v = ex.expr(k.operand, s2)
        vals = [(st, ex.expr(st.value, s2)) for st in k.prologue]
        idx = [ex.index(st.index, s2) for st, _ in vals]
        for (st, val), i in zip(vals, idx):
            loop.emit(ex.store_stmt(st.buf, i, val))
        loop.emit(f"{acc} = {_combine(k, acc, v)};")
        block.close_child()

    def _epilogue(self, k, ex, scope: Scope, block: Block, acc: str) -> None:
        s3 = Scope(scope, block, {ACC_VAR: acc})
        s3.memo[AccRef(k.dtype)] = acc
        for a in _accrefs(k):
            s3.memo[a] = acc
        vals = [(st, ex.expr(st.value, s3)) for st in k.epilogue]
        idx = [ex.index(st.index, s3) for st, _ in vals]
        for (st, val), i in zip(vals, idx):
            block.emit(ex.store_stmt(st.buf, i, val))

    def _reduce_rows(self, k: ReduceKernel, mode: str, n_out: int, n_in: int,
                     name: str | None = None, origin: str | None = None) -> None:
        name = c_name(name or k.name)
        args, arglist = self._reduce_args(k)
        ct = CT[k.dtype]
        init = literal(k.init, k.dtype)
        op = _FUNCTOR[k.combine]
        body = Block()
        root = Scope(None, body)
        ex = ExprRenderer(args)
        shared = 0
        if mode == "warp":
            body.emit("const int lane = threadIdx.x & 31;")
            body.emit("const int nw = (gridDim.x * blockDim.x) >> 5;")
            head = "for (int o = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; o < %d; o += nw)" % n_out
            start, step, leader = "lane", "32", "lane == 0"
            grid = min(GRID_CAP, -(-n_out // (THREADS // 32)))
        elif mode == "block":
            body.emit(f"__shared__ {ct} red_smem[{THREADS // 32}];")
            shared = THREADS // 32 * k.dtype.itemsize
            head = f"for (int o = blockIdx.x; o < {n_out}; o += gridDim.x)"
            start, step, leader = "(int)threadIdx.x", str(THREADS), "threadIdx.x == 0"
            grid = min(GRID_CAP, n_out)
        else:  # thread: one thread per output (short column reductions)
            head = (f"for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < {n_out}; "
                    f"o += gridDim.x * blockDim.x)")
            start, step, leader = "0", "1", None
            grid = min(GRID_CAP, -(-n_out // THREADS))
        loop = body.open(head)
        outer = Scope(root, loop)
        _bind_flat(loop, outer, "o", k.outer, "int", ex.tmp)
        loop.emit(f"{ct} acc = {init};")
        self._inner_loop(k, ex, outer, loop, start, str(n_in), step, "acc")
        if mode == "warp":
            loop.emit(f"acc = irg_warp_reduce(acc, {op});")
        elif mode == "block":
            loop.emit(f"acc = irg_block_reduce<{THREADS}>(acc, red_smem, {init}, {op});")
        if leader:
            epi = loop.open(f"if ({leader})")
            self._epilogue(k, ex, Scope(outer, epi), epi, "acc")
            loop.close_child()
        else:
            self._epilogue(k, ex, outer, loop, "acc")
        body.close_child()
        self._emit(_signature(name, arglist, THREADS), body)
        self.launches.append(Launch(name, (max(1, grid), 1, 1), (THREADS, 1, 1), arglist,
                                    origin or k.name, f"reduce row {mode}", shared, mode != "thread"))

    def _reduce_column(self, k: ReduceKernel, n_out: int, n_in: int) -> None:
        name = c_name(k.name)
        args, arglist = self._reduce_args(k)
        ct = CT[k.dtype]
        init = literal(k.init, k.dtype)
        ny = THREADS // 32
        body = Block()
        root = Scope(None, body)
        ex = ExprRenderer(args)
        body.emit(f"__shared__ {ct} part[{ny}][33];")
        body.emit("const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;")
        n_groups = -(-n_out // 32)
        loop = body.open(f"for (int ob = blockIdx.x; ob < {n_groups}; ob += gridDim.x)")
        group = Scope(root, loop)
        loop.emit("const int o = ob * 32 + tx;")
        loop.emit(f"{ct} acc = {init};")
        active = loop.open(f"if (o < {n_out})")
        outer = Scope(group, active)
        _bind_flat(active, outer, "o", k.outer, "int", ex.tmp)
        self._inner_loop(k, ex, outer, active, "ty", str(n_in), str(ny), "acc")
        loop.close_child()
        loop.emit("part[ty][tx] = acc;")
        loop.emit("__syncthreads();")
        epi = loop.open(f"if (ty == 0 && o < {n_out})")
        epi.emit("acc = part[0][tx];")
        epi.emit(f"for (int q = 1; q < {ny}; ++q) acc = {_combine(k, 'acc', 'part[q][tx]')};")
        es = Scope(group, epi)
        _bind_flat(epi, es, "o", k.outer, "int", ex.tmp)
        self._epilogue(k, ex, es, epi, "acc")
        loop.close_child()
        loop.emit("__syncthreads();")
        body.close_child()
        self._emit(_signature(name, arglist, THREADS), body)
        grid = max(1, min(GRID_CAP, n_groups))
        self.launches.append(Launch(name, (grid, 1, 1), (THREADS, 1, 1), arglist, k.name,
                                    "reduce column", ny * 33 * k.dtype.itemsize, True))

    def _reduce_split(self, k: ReduceKernel, n_out: int, n_in: int) -> None:
        """Two passes: blocks reduce chunks of every row into partials (scratch), then one
        warp per output combines its partials and runs the epilogue."""
        parts = max(2, min(-(-n_in // 2048), 512 // n_out))
        chunk = -(-n_in // parts)
        parts = -(-n_in // chunk)
        dt = k.dtype
        scratch = Buf(f"{k.name}_partials", len(self.program.slots), 0, dt, n_out * parts)
        self.scratch_bytes = max(self.scratch_bytes, n_out * parts * dt.itemsize)
        name = c_name(k.name + "_part")
        args, arglist = self._reduce_args(k, [scratch])
        ct = CT[dt]
        init = literal(k.init, dt)
        op = _FUNCTOR[k.combine]
        body = Block()
        root = Scope(None, body)
        ex = ExprRenderer(args)
        body.emit(f"__shared__ {ct} red_smem[{THREADS // 32}];")
        loop = body.open(f"for (int w = blockIdx.x; w < {n_out * parts}; w += gridDim.x)")
        loop.emit(f"const int o = w / {parts}, p = w % {parts};")
        loop.emit(f"const int r0 = p * {chunk}, r1 = min(r0 + {chunk}, {n_in});")
        outer = Scope(root, loop)
        _bind_flat(loop, outer, "o", k.outer, "int", ex.tmp)
        loop.emit(f"{ct} acc = {init};")
        self._inner_loop(k, ex, outer, loop, "r0 + (int)threadIdx.x", "r1", str(THREADS), "acc")
        loop.emit(f"acc = irg_block_reduce<{THREADS}>(acc, red_smem, {init}, {op});")
        loop.emit(f"if (threadIdx.x == 0) {ex.ptr(scratch)}[w] = acc;")
        body.close_child()
        self._emit(_signature(name, arglist, THREADS), body)
        self.launches.append(Launch(name, (min(GRID_CAP, n_out * parts), 1, 1), (THREADS, 1, 1),
                                    arglist, k.name, "reduce row split", THREADS // 32 * dt.itemsize,
                                    True))
        # pass 2: a row reduction of the partials with the original epilogue
        pvar = Var("__part", parts)
        flat_out = linearize(k.outer, [v.extent for v in k.outer]) if k.outer else Ix.of(0)
        final = ReduceKernel(k.name, k.outer, [pvar], k.combine, k.init, dt,
                             Load(dt, scratch, flat_out * parts + pvar), [], k.epilogue, "row")
        self._reduce_rows(final, "warp", n_out, parts, name=k.name + "_final", origin=k.name)


def _accrefs(k: ReduceKernel):
    out = set()
    for e in walk_exprs([s.value for s in k.epilogue]):
        if isinstance(e, AccRef):
            out.add(e)
    return out


# how a reduction combines two values: the prelude's function and functor per instruction
_FUNCTOR = {"add": "IrgAdd()", "max": "IrgMax()", "min": "IrgMin()"}


def _combine(k: ReduceKernel, a: str, b: str) -> str:
    return f"irg_{k.combine}({a}, {b})"


def lane_form(ix: Ix, x: Var):
    """How an index changes across the VEC lanes of a vectorized loop, whose lane j binds
    x = x0 + j with x0 a multiple of VEC: (slope, aligned) when index(lane j) ==
    index(lane 0) + slope * j for every lane (aligned: index(lane 0) is a multiple of VEC),
    None when it is not affine across lanes. Floor divisions and modulos of an aligned
    unit-slope argument by a multiple of VEC are lane-invariant and unit-slope
    respectively (the lanes never cross a multiple of the divisor)."""
    slope, aligned = 0, ix.const % VEC == 0
    for a, c in ix.terms:
        if a == x:
            slope += c
            continue
        if isinstance(a, Var) or x not in atom_vars(a):
            aligned = aligned and c % VEC == 0
            continue
        if isinstance(a, Clamp) and _sx_lane_invariant(a.value, x):
            aligned = aligned and c % VEC == 0
            continue
        if isinstance(a, (FloorDiv, Mod)) and a.d % VEC == 0 and a.x.bounds()[0] >= 0:
            inner = lane_form(a.x, x)
            if inner == (1, True):
                if isinstance(a, FloorDiv):
                    aligned = aligned and c % VEC == 0
                else:
                    slope += c
                continue
        return None
    return slope, aligned


def _sx_lane_invariant(e, x: Var) -> bool:
    for node in walk_exprs([e]):
        for ix in sx_indices(node):
            if x in ix.vars() and (lane_form(ix, x) or (None,))[0] != 0:
                return False
    return True


def _unit_stride(ix: Ix, x: Var, buf: Buf) -> bool:
    """Index is unit-stride across lanes from a VEC-aligned start, at an aligned offset."""
    if buf.dtype not in VEC_TYPES or lane_form(ix, x) != (1, True):
        return False
    return buf.offset % min(16, VEC * buf.dtype.itemsize) == 0


def render_cuda_program(program: Program, tf32: bool = False, vectorize: bool = True) -> CudaProgram:
    """The CUDA C translation unit and launch plan of a lowered program."""
    return CudaRenderer(program, tf32=tf32, vectorize=vectorize).render()


__all__ = ["render_cuda_program"]
