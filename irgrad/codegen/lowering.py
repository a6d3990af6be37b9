"""Lowering: a fused, memory-planned IR function -> a `Program` of backend-neutral kernels.

Each top-level op becomes at most one kernel: a `fused` op by its kind, a plain op as a
kernel of one op, a view (an `alias` op placed on its operand's bytes) or a constant as
nothing at all. The kernel class (the entries' `kernel` trait) picks the kernel: a loop,
a reduction, a GEMM, a scatter. Values inside a kernel are evaluated per element:
asking for value v at index I walks the region backwards through the op entries' `reads`
(the elements an op needs: data movement becomes index arithmetic) and `build` (the
scalar expression of ir/scalar.py it computes), down to loads from the kernel's input
buffers.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import IrgradError
from ..ir.core import Function, InParam, Operation, Value
from ..ir.indexing import Ix, Var, atom_vars, delinearize, linearize, result_index
from ..ir.ops.kernel import STACK_ACCUMULATOR_LIMIT, gemm_accumulate_form, reduction_layout
from ..ir.plan import check_plan, has_plan, is_view, placements
from ..ir.registry import get_op
from ..ir.scalar import AccRef, Buf, Clamp, Const, Load, Sx, sx_indices, sx_substitute, walk_exprs
from ..ir.types import DType
from ..passes.expand import needs_expand
from ..passes.manager import run_pipeline
from ..passes.patterns import is_concat, operand_matrix_view, result_matrix_view, view_chain, writer_chain
from .kernel_ir import (GemmKernel, LoopKernel, MatrixView, Program, ReduceKernel, ScatterKernel,
                        Store)

ARENA_SLOT = 0


class Sources:
    """Where the values a kernel reads come from: buffers, constants, or the kernel itself
    (a reduction's accumulator, a GEMM's product)."""

    def __init__(self):
        self.map: dict[Value, object] = {}

    def set(self, v: Value, src) -> None:
        self.map[v] = src

    def get(self, v: Value):
        return self.map.get(v)


def const_expr(value: np.ndarray, dtype: DType):
    """A splat's scalar, or None for a dense constant."""
    if value.ndim == 0:
        return Const(dtype, value.item())
    return None


class Evaluator:
    """Scalar expressions for region values at symbolic indices (iterative, memoized)."""

    def __init__(self, sources: Sources, program: "ProgramBuilder"):
        self.sources = sources
        self.program = program
        self.memo: dict = {}

    def at(self, v: Value, idx) -> Sx:
        idx = tuple(Ix.of(i) for i in idx)
        root = (v, idx)
        stack = [root]
        while stack:
            key = stack[-1]
            if key in self.memo:
                stack.pop()
                continue
            reqs = self._requests(*key)
            missing = [r for r in reqs if r not in self.memo]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            self.memo[key] = self._build(key[0], key[1], [self.memo[r] for r in reqs])
        return self.memo[root]

    # which (value, index) pairs a value at an index needs: the op entry's `reads` --------
    def _requests(self, v: Value, idx) -> list:
        if self.sources.get(v) is not None:
            return []
        op = v.op
        if op is None:
            raise IrgradError(f"lowering: no buffer for a value of type {v.type}")
        reads = get_op(op.opname).reads
        if reads is None:
            raise IrgradError(f"lowering: '{op.opname}' cannot be evaluated element by element")
        return [(op.operands[i], j) for i, j in reads(op, idx)]

    def _build(self, v: Value, idx, kids) -> Sx:
        src = self.sources.get(v)
        if src is not None:
            if isinstance(src, Buf):
                return Load(v.dtype, src, linearize(idx, v.shape))
            if isinstance(src, Sx):
                return src
            if callable(src):
                return src(idx)
            raise AssertionError(src)
        op = v.op
        return get_op(op.opname).build(self, op, idx, kids)

    def constant(self, value, dtype: DType) -> Buf:
        """A buffer holding a dense constant (for an entry's `build`)."""
        return self.program.constant(value, dtype)


class ProgramBuilder:
    """Walks the top-level ops of a planned function and emits kernels."""

    def __init__(self, f: Function):
        self.f = f
        self.kernels: list = []
        self.slots: list[str] = ["arena"]
        self.constants: dict[int, np.ndarray] = {}
        self.const_slots: dict = {}
        self.param_slot = {}
        for p in f.params:
            self.param_slot[p] = len(self.slots)
            self.slots.append(f"param %{p.name}")
        self.where: dict[Value, object] = {}  # top-level value -> Buf or Sx (constants)
        for p in f.params:
            self.where[p] = Buf(f"%{p.name}", self.param_slot[p], 0, p.dtype, p.type.size)

    def constant(self, value: np.ndarray, dtype: DType) -> Buf:
        arr = np.ascontiguousarray(value, dtype=dtype.np)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        slot = self.const_slots.get(key)
        if slot is None:
            slot = len(self.slots)
            self.slots.append(f"const {arr.dtype}{list(arr.shape)}")
            self.constants[slot] = arr
            self.const_slots[key] = slot
        return Buf(f"const{slot}", slot, 0, dtype, arr.size)

    def buf_for(self, v: Value, placement, name: str) -> Buf:
        if isinstance(placement, InParam):
            p = placement.param
            return Buf(f"%{p.name}", self.param_slot[p], 0, v.dtype, v.type.size)
        return Buf(name, ARENA_SLOT, placement.offset, v.dtype, v.type.size)

    def build(self) -> Program:
        for t, op in enumerate(self.f.ops):
            self.lower_op(t, op)
        return Program(self.f.name, self.kernels, self.slots, self.f.attrs.get("arena_bytes", 0),
                       self.constants)

    def lower_op(self, t: int, op: Operation) -> None:
        if op.opname == "const":
            value = op.attrs["value"]
            c = const_expr(value, op.result.dtype)
            self.where[op.result] = c if c is not None else self.constant(
                np.broadcast_to(value, op.result.shape), op.result.dtype)
            return
        places, scratch = placements(op)
        outs = []
        for i, (r, p) in enumerate(zip(op.results, places)):
            buf = self.buf_for(r, p, f"v{t}_{i}")
            self.where[r] = buf
            outs.append(buf)
        if all(r.type.size == 0 for r in op.results):
            return  # nothing to compute (and no index space to iterate)
        src = self.where.get(op.operands[0]) if op.operands else None
        if is_view(op) and isinstance(src, Buf) \
                and (src.slot, src.offset) == (outs[0].slot, outs[0].offset):
            return  # a view: same bytes, nothing to do
        name = f"k{t}_{op.opname}" if not op.regions else f"k{t}_{op.attrs.get('kind', 'fused')}"
        if op.regions:
            region = op.regions[0]
            sources = Sources()
            for a, v in zip(region.args, op.operands):
                sources.set(a, self._source(v))
            kernel = self.lower_region(name, op, region.ops, region.outputs, outs, sources, scratch)
        else:
            sources = Sources()
            # a plain op is a region of one op whose arguments are its operands
            kernel = self.lower_region(name, op, [op], op.results, outs, sources, scratch,
                                       plain_operands={v: self._source(v) for v in op.operands})
        if isinstance(kernel, list):
            self.kernels.extend(kernel)
        elif kernel is not None:
            self.kernels.append(kernel)

    def _source(self, v: Value):
        w = self.where.get(v)
        if w is None:
            raise IrgradError(f"lowering: value {v.type} is read before it is placed")
        return w

    # -- kernels -------------------------------------------------------------------------------
    def lower_region(self, name, op, ops, outputs, outs, sources: Sources, scratch,
                     plain_operands=None):
        if plain_operands:
            for v, s in plain_operands.items():
                sources.set(v, s)
        ev = Evaluator(sources, self)
        kinds = {get_op(o.opname).kernel for o in ops}
        if "matmul" in kinds:
            return self.lower_gemm(name, op, ops, outputs, outs, sources, ev, scratch)
        if "reduce" in kinds:
            return self.lower_reduce(name, op, ops, outputs, outs, sources, ev, scratch)
        if "scatter" in kinds:
            return self.lower_scatter(name, ops[0], outs[0], sources, ev)
        return self.lower_loop(name, outputs, outs, ev, inside=set(ops))

    def lower_loop(self, name, outputs, outs, ev, shape=None, inside=()) -> LoopKernel:
        # A region whose result is a reshape (im2col's window flattened into a matrix) is
        # iterated in the shape before the reshape: the same elements in the same row-major
        # order, without dividing the flat index back into the original axes per element.
        bases = [_before_reshapes(v, inside) for v in outputs]
        if shape is None:
            shape = max((b.shape for b in bases), key=len) if bases else outputs[0].shape
            if any(b.type.size != math.prod(shape) for b in bases):
                shape = outputs[0].shape
        loops = [Var(f"i{d}", n) for d, n in enumerate(shape)]
        flat = linearize(loops, shape)
        stores = []
        for v, base, buf in zip(outputs, bases, outs):
            if v.type.size != math.prod(shape):
                raise IrgradError(f"lowering: a loop kernel yields {v.type} in an iteration "
                                  f"space of {list(shape)}")
            # outputs of another shape but the same size are the same elements in row-major
            # order (fused through a reshape)
            if base.shape == tuple(shape):
                stores.append(Store(buf, flat, ev.at(base, loops)))
            else:
                idx = loops if v.shape == tuple(shape) else delinearize(flat, v.shape)
                stores.append(Store(buf, flat, ev.at(v, idx)))
        return collapse_loop(LoopKernel(name, loops, stores))

    def lower_reduce(self, name, op, ops, outputs, outs, sources, ev, scratch) -> ReduceKernel:
        reds = [o for o in ops if get_op(o.opname).kernel == "reduce"]
        if len(reds) != 1:
            raise IrgradError(f"lowering: a reduce kernel holds {len(reds)} reductions")
        red = reds[0]
        x = red.operands[0]
        axes = red.attrs["axes"]
        full = [Var(f"i{d}", n) for d, n in enumerate(x.shape)]
        outer = [full[d] for d in range(len(full)) if d not in axes]
        inner = [full[d] for d in axes]
        d = get_op(red.opname)
        combine, dt = d.reduction, red.result.dtype
        init = d.identity(dt)
        operand = ev.at(x, full)
        layout = reduction_layout(red)
        sources.set(red.result, AccRef(dt))
        prologue, epilogue = [], []
        flat_in = linearize(full, x.shape)
        flat_out = linearize(outer, red.result.shape)
        for v, buf in zip(outputs, outs):
            if v.type.size == x.type.size and v is not red.result:
                idx = full if v.shape == x.shape else delinearize(flat_in, v.shape)
                prologue.append(Store(buf, flat_in, ev.at(v, idx)))
            elif v.type.size == red.result.type.size:
                idx = outer if v.shape == red.result.shape else delinearize(flat_out, v.shape)
                epilogue.append(Store(buf, flat_out, ev.at(v, idx)))
            else:
                raise IrgradError(f"lowering: a reduce kernel yields {v.type}")
        acc_buf = None
        acc_index = linearize(outer, red.result.shape)
        if layout == "column":
            raw = [b for v, b in zip(outputs, outs) if v is red.result]
            if outputs == [red.result]:
                acc_buf = raw[0]  # partial sums accumulate straight into the result
            elif scratch:
                acc_buf = Buf(f"{name}_acc", ARENA_SLOT, scratch[0], dt, red.result.type.size)
            elif red.result.type.nbytes > STACK_ACCUMULATOR_LIMIT:
                raise IrgradError("lowering: a column reduction has no scratch for its partial sums")
        k = ReduceKernel(name, outer, inner, combine, init, dt, operand, prologue, epilogue,
                         layout, acc_buf, acc_index, red.result.type.size)
        return block_long_sums(collapse_reduce(k))

    def lower_gemm(self, name, op, ops, outputs, outs, sources, ev, scratch) -> GemmKernel:
        mms = [o for o in ops if get_op(o.opname).kernel == "matmul"]
        if len(mms) > 1:
            return self.lower_gemm_writers(name, mms, outputs, outs, sources)
        mm = mms[0]
        shape = mm.result.shape
        batch = math.prod(shape[:-2])
        m, n = shape[-2], shape[-1]
        k = mm.operands[0].shape[-1]
        dt = mm.result.dtype
        if batch * m * n == 0:
            return None  # an empty product, and every result has its size: nothing to do
        if k == 0:
            # a sum of no terms: the product is zeros (BLAS refuses empty operands)
            sources.set(mm.result, Const(dt, 0))
            return self.lower_loop(name, outputs, outs, ev, shape)
        av, bv = (self._gemm_operand(v, sources) for v in mm.operands)

        def cview(buf):
            return MatrixView(buf, tuple(bi * m * n for bi in range(batch)), n, False)

        # where the product goes (see passes/patterns.py): a result in the product's own
        # layout, a result that is a permuted view of it (written with a strided C), C
        # itself when the result is beta * C + alpha * A @ B, or scratch
        out_map = dict(zip(outputs, outs))
        c, target, written = None, None, None  # written: the result the GEMM itself produces
        if mm.result in out_map:
            target, written = out_map[mm.result], mm.result
            c = cview(target)
        if c is None:
            for v, buf in out_map.items():
                chain = writer_chain(mm.result, v)
                if chain and any(is_concat(o) for o, _ in chain):
                    chain = None
                view = result_matrix_view(mm.result, v, chain) if chain else None
                if view is not None and not view[2]:
                    c = MatrixView(buf, view[0], view[1], False)
                    sources.set(mm.result, _strided_loads(buf, mm.result, v, chain))
                    target, written = buf, v
                    break
        if c is None and len(outputs) == 1 and op.regions:
            form = gemm_accumulate_form(op, 0)
            if form is not None and form.c_arg is not None:
                c_src = sources.get(op.regions[0].args[form.c_arg])
                if isinstance(c_src, Buf) and (c_src.slot, c_src.offset) == (outs[0].slot, outs[0].offset):
                    # beta * C + alpha * A @ B written over C: one BLAS call, no epilogue
                    return GemmKernel(name, dt, batch, m, n, k, av, bv, cview(outs[0]),
                                      form.alpha, form.beta, None)
        if c is None:
            same = [bf for v, bf in out_map.items() if v.type == mm.result.type]
            if same:
                target = same[0]
            elif scratch:
                target = Buf(f"{name}_mm", ARENA_SLOT, scratch[0], dt, mm.result.type.size)
            else:
                raise IrgradError("lowering: a matmul kernel has nowhere to put its product")
            c = cview(target)
        if sources.get(mm.result) is None:
            sources.set(mm.result, target)
        rest = [(v, bf) for v, bf in out_map.items() if v is not written]
        epilogue = None
        if rest:
            epilogue = self.lower_loop(name + "_epilogue", [v for v, _ in rest], [bf for _, bf in rest],
                                       ev, shape)
        return GemmKernel(name, dt, batch, m, n, k, av, bv, c, 1.0, 0.0, epilogue)

    def lower_gemm_writers(self, name, mms, outputs, outs, sources) -> list:
        """Several matmuls that each write their piece of one result (fuse's concat
        writers): one GEMM per piece, straight into the result's buffer."""
        if len(outputs) != 1:
            raise IrgradError("lowering: concat writers must yield one value")
        h, buf = outputs[0], outs[0]
        kernels = []
        if any(0 in mm.operands[0].shape or 0 in mm.operands[1].shape for mm in mms):
            raise IrgradError("lowering: concat writers of empty matmuls are not supported "
                              "(fuse does not make them)")
        for n, mm in enumerate(mms):
            chain = writer_chain(mm.result, h)
            view = result_matrix_view(mm.result, h, chain) if chain else None
            if view is None:
                raise IrgradError("lowering: a matmul of a concat-writer kernel cannot write its piece")
            av, bv = (self._gemm_operand(v, sources) for v in mm.operands)
            shape = mm.result.shape
            m, n_, k = shape[-2], shape[-1], mm.operands[0].shape[-1]
            offsets, ld, trans = view
            if trans:  # a transposed piece: compute C^T = B^T A^T, which is row-major there
                av, bv = (MatrixView(bv.buf, bv.offsets, bv.ld, not bv.trans),
                          MatrixView(av.buf, av.offsets, av.ld, not av.trans))
                m, n_ = n_, m
            kernels.append(GemmKernel(f"{name}_{n}", mm.result.dtype, math.prod(shape[:-2]),
                                      m, n_, k, av, bv, MatrixView(buf, offsets, ld, False)))
        return kernels

    def _gemm_operand(self, v: Value, sources: Sources) -> MatrixView:
        """A matmul operand as a strided matrix in some buffer (views read in place)."""
        root, chain = view_chain(v, lambda x: sources.get(x) is not None)
        src = sources.get(root)
        if not isinstance(src, Buf):
            src = self._materialize_const(root, src)
        view = operand_matrix_view(v, root, chain)
        if view is None:
            raise IrgradError(f"lowering: a matmul operand {v.type} is not a strided matrix")
        return MatrixView(src, *view)

    def _materialize_const(self, v: Value, src):
        if isinstance(src, Const):
            return self.constant(np.full(v.shape, src.value, v.dtype.np), v.dtype)
        if v.op is not None and v.op.opname == "const":
            return self.constant(np.broadcast_to(v.op.attrs["value"], v.shape), v.dtype)
        raise IrgradError("lowering: a matmul operand is not in memory")

    def lower_scatter(self, name, op, out: Buf, sources, ev) -> ScatterKernel:
        a, idx, upd = op.operands
        ax = op.attrs["axis"]
        a_src = sources.get(a)
        copy = None
        if not (isinstance(a_src, Buf) and (a_src.slot, a_src.offset) == (out.slot, out.offset)):
            copy = self.lower_loop(name + "_copy", [a], [out], ev)
        loops = [Var(f"u{d}", n) for d, n in enumerate(upd.shape)]
        k = len(idx.shape)
        j = Ix.of(Clamp(ev.at(idx, loops[ax:ax + k]), a.shape[ax]))
        target_idx = list(loops[:ax]) + [j] + list(loops[ax + k:])
        return ScatterKernel(name, copy, loops, out, linearize(target_idx, a.shape),
                             ev.at(upd, loops))


def _strided_loads(buf: Buf, r: Value, h: Value, chain):
    """Source of r's elements when they live in h's buffer (h = chain(r))."""
    def load(idx):
        j = tuple(idx)
        for op, pos in chain:
            j = result_index(op, j, pos)
        return Load(r.dtype, buf, linearize(j, h.shape))
    return load


# --- loop collapsing -----------------------------------------------------------------------------

def _all_indices(exprs, extra=()):
    """Every Ix appearing in the given scalar expressions (and `extra`)."""
    return list(extra) + [ix for e in walk_exprs(exprs) for ix in sx_indices(e)]


def _mergeable(indices, a: Var, b: Var) -> bool:
    """Every index uses a and b only affinely, with coeff(a) == coeff(b) * extent(b)."""
    for ix in indices:
        for atom, _ in ix.terms:
            if not isinstance(atom, Var) and ({a, b} & atom_vars(atom)):
                return False
        if ix.coeff(a) != ix.coeff(b) * b.extent:
            return False
    return True


def _collapse_vars(vars_, indices):
    """Merge adjacent loop variables wherever every index treats them as one; returns the
    new variables and the substitution."""
    vars_ = list(vars_)
    subst: dict = {}
    if len(vars_) > 1 and any(v.extent == 1 for v in vars_):
        # a loop of one iteration is no loop (and as the outermost one it would keep the
        # kernel on one thread: threads split the outermost loop)
        keep = [v for v in vars_ if v.extent != 1] or vars_[-1:]
        subst = {v: Ix.of(0) for v in vars_ if v not in keep}
        vars_ = keep
    d = len(vars_) - 2
    while d >= 0:
        a, b = vars_[d], vars_[d + 1]
        cur = [ix.substitute(subst) if subst else ix for ix in indices]
        if _mergeable(cur, a, b):
            j = Var(f"{a.name}{b.name}", a.extent * b.extent)
            m = {a: Ix.of(0), b: Ix.of(j)}  # c_a a + c_b b == c_b (e_b a + b) == c_b j
            # compose: earlier substitutions that produced a or b now go to j
            subst = {k: v.substitute(m) for k, v in subst.items()}
            subst.update(m)
            vars_[d:d + 2] = [j]
        d -= 1
    return vars_, subst


def collapse_loop(k: LoopKernel) -> LoopKernel:
    if len(k.loops) < 2:
        return k
    indices = _all_indices([s.value for s in k.stores], [s.index for s in k.stores])
    loops, subst = _collapse_vars(k.loops, indices)
    if not subst:
        return k
    stores = [Store(s.buf, s.index.substitute(subst), sx_substitute(s.value, subst)) for s in k.stores]
    return LoopKernel(k.name, loops, stores, k.parallel)


def collapse_reduce(k: ReduceKernel) -> ReduceKernel:
    exprs = [k.operand] + [s.value for s in k.prologue + k.epilogue]
    idx = [s.index for s in k.prologue + k.epilogue] + [k.acc_index]
    indices = _all_indices(exprs, idx)
    inner, s1 = _collapse_vars(k.inner, indices)
    indices = [ix.substitute(s1) for ix in indices] if s1 else indices
    outer, s2 = _collapse_vars(k.outer, indices)
    subst = {}
    for m in (s1, s2):
        subst = {a: v.substitute(m) for a, v in subst.items()}
        subst.update(m)
    if not subst:
        return k
    def fix(e):
        return sx_substitute(e, subst)
    return ReduceKernel(k.name, outer, inner, k.combine, k.init, k.dtype, fix(k.operand),
                        [Store(s.buf, s.index.substitute(subst), fix(s.value)) for s in k.prologue],
                        [Store(s.buf, s.index.substitute(subst), fix(s.value)) for s in k.epilogue],
                        k.layout, k.acc_buf, k.acc_index.substitute(subst), k.acc_size, k.parallel)


BLOCK = 1024  # elements summed into one partial sum before it joins the total
LONG_SUM = 4 * BLOCK


def block_long_sums(k: ReduceKernel) -> ReduceKernel:
    """Split the innermost reduced loop of a long float sum into blocks of BLOCK, so the
    sum is accumulated in two levels (rounding error ~ (n / BLOCK + BLOCK) eps instead of
    n eps: a million float32 0.1s sum to within 1e-7 of the pairwise sum, not 1.5e-4)."""
    if k.layout != "row" or not k.dtype.is_float or k.combine != "add" or not k.inner:
        return k
    v = k.inner[-1]
    if math.prod(x.extent for x in k.inner) < LONG_SUM or v.extent < 2 * BLOCK or v.extent % BLOCK:
        return k
    hi, lo = Var(v.name + "b", v.extent // BLOCK), Var(v.name + "e", BLOCK)
    subst = {v: Ix.of(hi) * BLOCK + lo}

    def fix(e):
        return sx_substitute(e, subst)

    return ReduceKernel(k.name, k.outer, k.inner[:-1] + [hi, lo], k.combine, k.init, k.dtype,
                        fix(k.operand),
                        [Store(s.buf, s.index.substitute(subst), fix(s.value)) for s in k.prologue],
                        k.epilogue, k.layout, k.acc_buf, k.acc_index, k.acc_size, k.parallel,
                        blocked=True)


def _before_reshapes(v: Value, inside) -> Value:
    """The value `v` reshapes (through a chain of reshapes computed in this kernel)."""
    while v.op is not None and v.op in inside and v.op.opname == "reshape":
        v = v.op.operands[0]
    return v


def default_threads() -> int:
    """The cores this process may run on (the native backends' default thread count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def plan_for_codegen(ir: Function, pipeline: str) -> Function:
    """Run `pipeline` (which verifies its input: a plan given with it is proved sound);
    codegen needs a memory plan, so plan-memory runs last if the result has none; ops no
    kernel computes (conv) are expanded first if the pipeline left any (O0)."""
    out = run_pipeline(ir, pipeline)
    if needs_expand(out):
        out = run_pipeline(out, "expand")
    if not has_plan(out):
        out = run_pipeline(out, "plan-memory")
    return out


def lower_function(f: Function) -> Program:
    """The Program of a function that has been through plan-memory. The plan is proved
    sound first (ir/plan.py): native code runs exactly what it says."""
    if "arena_bytes" not in f.attrs:
        raise IrgradError("lowering needs a memory plan (run plan-memory last)")
    check_plan(f)
    return ProgramBuilder(f).build()
