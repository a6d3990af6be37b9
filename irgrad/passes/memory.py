"""`plan-memory`: a schedule, liveness, and one arena offset for every intermediate.

The schedule is the order of the top-level ops. A value lives from the op that defines it
to its last reader (to the end for results of the function). Values share storage when:

- a view: `reshape` and `stop_gradient` results are their operand's bytes;
- in place: an op's result takes the storage of an operand that dies at that op, when
  the op reads that operand only at the index it writes (an elementwise path) — see
  `inplace_safe`;
- donation: a result that the function's `donate` attribute pairs with a parameter (the
  updated parameters and optimizer state of a training step) is written into that
  parameter's buffer, when nothing reads the parameter afterwards and the op may write
  over it (`inplace_safe`).

Storages then get 64-byte aligned offsets, largest first, each at the lowest offset free
for its whole lifetime (best fit). `check_plan` re-derives lifetimes from the printed
plan and proves that no two simultaneously live buffers overlap; tests run it after
every plan. The plan prints in the IR (`mem[OFFSET]`, `mem[%param]` for a donated
buffer, `scratch[OFFSET]` for a kernel's temporary) and the function's attributes
summarize it: `arena_bytes` (what the plan allocates), `naive_bytes` (one buffer per
intermediate value) and `lower_bound_bytes` (the most bytes live at one point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import IrgradError
from ..ir.core import Function, Operation, Value
from ..ir.registry import get_op
from .manager import Pass, register_pass
from .patterns import gemm_accumulate_form, kernel_scratch_bytes

ALIGN = 64
VIEW_OPS = ("reshape", "stop_gradient")


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def inplace_safe(op: Operation, operand_index: int, result_index: int) -> bool:
    """May `op` write result `result_index` over the storage of operand `operand_index`?

    True when every element of the result is written only after the same element of the
    operand has been read, and no other element of the operand is read later: the op
    reads the operand through elementwise ops alone (same index as the result), and the
    types have the same size. Matmul kernels qualify only in the GEMM form
    `beta * C + alpha * (A @ B)` with C the operand (BLAS accumulates into C).
    """
    x, r = op.operands[operand_index], op.results[result_index]
    if x.type.size != r.type.size or x.dtype.itemsize != r.dtype.itemsize:
        return False
    if not op.regions:
        opdef = get_op(op.opname)
        return opdef.elementwise and op.opname != "stop_gradient"
    kind = op.attrs.get("kind")
    region = op.regions[0]
    arg = region.args[operand_index]
    if kind == "matmul":
        # BLAS accumulates beta * C + alpha * A @ B into C; a second result would need
        # the bare product, which is then nowhere in memory.
        form = gemm_accumulate_form(op, result_index)
        return form is not None and form.c_arg == operand_index and len(region.outputs) == 1
    # loop and reduce kernels: every path from the argument to any output is elementwise
    # and stays in the output's shape (no reduction in between).
    return _elementwise_paths_only(region, arg)


def _elementwise_paths_only(region, arg: Value) -> bool:
    frontier, seen = [arg], set()
    users: dict[Value, list[Operation]] = {}
    for o in region.ops:
        for v in o.operands:
            users.setdefault(v, []).append(o)
    while frontier:
        x = frontier.pop()
        for u in users.get(x, ()):
            if u in seen:
                continue
            seen.add(u)
            if not (get_op(u.opname).elementwise or u.opname in ("reshape", "stop_gradient")):
                return False
            frontier.extend(u.results)
    return True


@dataclass
class _Storage:
    size: int
    start: int
    end: int
    values: list
    offset: int = -1


def _schedule_facts(f: Function):
    """Definition and last-use positions of every top-level value. A value read through a
    view (reshape, stop_gradient) counts as read wherever the view is read."""
    T = len(f.ops)
    pos = {}
    last = {}
    for t, op in enumerate(f.ops):
        for v in op.operands:
            last[v] = t
        for r in op.results:
            pos[r] = t
    for v in f.outputs:
        last[v] = T
    for op in reversed(f.ops):
        if op.opname in VIEW_OPS and not op.regions and op.result in last:
            src = op.operands[0]
            last[src] = max(last.get(src, -1), last[op.result])
    return pos, last, T


def plan_memory(f: Function) -> Function:
    _, last, T = _schedule_facts(f)
    params = set(f.params)
    donate = dict(enumerate(f.attrs.get("donate", ())))
    out_index = {}
    for i, v in enumerate(f.outputs):
        out_index.setdefault(v, i)
    storage_of: dict[Value, _Storage] = {}
    storages: list[_Storage] = []
    param_written: dict[Value, Value] = {}
    naive = 0

    for t, op in enumerate(f.ops):
        op.mem = None
        if op.opname == "const":
            continue  # static data, not in the arena
        placements = []
        for ri, r in enumerate(op.results):
            naive += r.type.nbytes
            end = last.get(r, t)
            st = None
            # 1. views share their operand's storage
            if op.opname in VIEW_OPS and not op.regions:
                src = op.operands[0]
                if src in storage_of:
                    st = storage_of[src]
                elif src in params:
                    placements.append(src)
                    storage_of[r] = None
                    continue
            # 2. donation into a parameter (training steps)
            if st is None and r in out_index and donate.get(out_index[r], -1) >= 0:
                p = f.params[donate[out_index[r]]]
                if p.type.nbytes == r.type.nbytes and last.get(p, -1) <= t and p not in param_written \
                        and _donation_ok(op, p, ri) and f.outputs.count(r) == 1:
                    param_written[p] = r
                    placements.append(p)
                    storage_of[r] = None
                    continue
            # 3. in place over an operand that dies here
            if st is None:
                for oi, x in enumerate(op.operands):
                    sx = storage_of.get(x)
                    if sx is None or x in params:
                        continue
                    if last.get(x) == t and sx.end <= t and inplace_safe(op, oi, ri) and \
                            all(last.get(v, -1) <= t for v in sx.values) and \
                            not any(st2 is sx for st2 in (storage_of.get(rr) for rr in op.results[:ri])):
                        st = sx
                        break
            if st is None:
                st = _Storage(aligned(r.type.nbytes), t, end, [])
                storages.append(st)
            st.values.append(r)
            st.end = max(st.end, end)
            st.size = max(st.size, aligned(r.type.nbytes))
            storage_of[r] = st
            placements.append(st)
        scratch = kernel_scratch_bytes(op)
        if scratch:
            st = _Storage(aligned(scratch), t, t, [])
            storages.append(st)
            placements.append(("scratch", st))
        op.mem = placements

    arena = _assign_offsets(storages)
    lower = _lower_bound(storages, T)
    for op in f.ops:
        if op.mem is None:
            continue
        op.mem = [p.offset if isinstance(p, _Storage) else ("scratch", p[1].offset)
                  if isinstance(p, tuple) else p for p in op.mem]
    f.attrs = {k: v for k, v in f.attrs.items() if k not in ("arena_bytes", "naive_bytes", "lower_bound_bytes")}
    f.attrs.update(arena_bytes=arena, naive_bytes=naive, lower_bound_bytes=lower)
    return f


def _donation_ok(op: Operation, p: Value, ri: int) -> bool:
    """Can `op` write result `ri` over parameter `p`? Either it does not read `p`, or
    it reads it in a way that allows in-place writing."""
    idx = [i for i, v in enumerate(op.operands) if v is p]
    if not idx:
        return True
    return all(inplace_safe(op, i, ri) for i in idx)


def _assign_offsets(storages: list[_Storage]) -> int:
    placed: list[_Storage] = []
    arena = 0
    for st in sorted(storages, key=lambda s: (-s.size, s.start)):
        busy = sorted((o.offset, o.offset + o.size) for o in placed
                      if not (o.end < st.start or st.end < o.start))
        offset = 0
        for lo, hi in busy:
            if offset + st.size <= lo:
                break
            offset = max(offset, hi)
        st.offset = offset
        placed.append(st)
        arena = max(arena, offset + st.size)
    return arena


def _lower_bound(storages: list[_Storage], T: int) -> int:
    delta = [0] * (T + 2)
    for st in storages:
        delta[st.start] += st.size
        delta[st.end + 1] -= st.size
    best = cur = 0
    for d in delta:
        cur += d
        best = max(best, cur)
    return best


def check_plan(f: Function) -> None:
    """Prove the plan sound: raises IrgradError if two simultaneously live buffers overlap,
    a buffer leaves the arena or is misaligned, or a donated parameter is read after it
    is overwritten. Lifetimes are recomputed from the IR, not taken from the planner."""
    if "arena_bytes" not in f.attrs:
        raise IrgradError(f"@{f.name} has no memory plan")
    arena = f.attrs["arena_bytes"]
    pos, last, T = _schedule_facts(f)
    intervals = []  # (offset, size, start, end, value, op)
    offset_of: dict[Value, int] = {}
    written_param: dict[Value, int] = {}
    for t, op in enumerate(f.ops):
        if op.opname == "const":
            continue
        if op.mem is None:
            raise IrgradError(f"@{f.name}: op {t} ('{op.opname}') has no placement")
        places = [p for p in op.mem if not isinstance(p, tuple)]
        scratch = [p[1] for p in op.mem if isinstance(p, tuple)]
        if len(places) != len(op.results):
            raise IrgradError(f"@{f.name}: op {t} ('{op.opname}') has {len(places)} placements "
                              f"for {len(op.results)} results")
        for ri, (r, p) in enumerate(zip(op.results, places)):
            if isinstance(p, Value):
                if op.opname in VIEW_OPS and op.operands[0] is p:
                    continue
                if p.type.nbytes != r.type.nbytes:
                    raise IrgradError(f"@{f.name}: op {t} writes {r.type} into %{p.name} ({p.type})")
                if last.get(p, -1) > t:
                    raise IrgradError(f"@{f.name}: op {t} overwrites %{p.name}, which op "
                                      f"{last[p]} still reads")
                if p in written_param:
                    raise IrgradError(f"@{f.name}: %{p.name} is written twice")
                if p in op.operands and not all(inplace_safe(op, i, ri) for i, v in enumerate(op.operands) if v is p):
                    raise IrgradError(f"@{f.name}: op {t} cannot write over %{p.name} while reading it")
                written_param[p] = t
                continue
            off = int(p)
            if off % ALIGN or off < 0 or off + r.type.nbytes > arena:
                raise IrgradError(f"@{f.name}: op {t} result {ri} at offset {off} is misaligned or "
                                  f"outside the arena of {arena} bytes")
            offset_of[r] = off
            intervals.append((off, r.type.nbytes, t, last.get(r, t), r, op))
        for off in scratch:
            if off % ALIGN or off < 0 or off > arena:
                raise IrgradError(f"@{f.name}: op {t} scratch at {off} is outside the arena")
            size = kernel_scratch_bytes(op)
            intervals.append((off, size, t, t, None, op))
    intervals.sort(key=lambda x: x[0])
    for i, a in enumerate(intervals):
        for b in intervals[i + 1:]:
            if b[0] >= a[0] + a[1]:
                break
            if a[3] < b[2] or b[3] < a[2]:
                continue  # lifetimes disjoint
            if _legal_share(a, b) or _legal_share(b, a):
                continue
            raise IrgradError(
                f"@{f.name}: buffers overlap while both live: [{a[0]}, {a[0] + a[1]}) of op {a[2]} "
                f"(live {a[2]}..{a[3]}) and [{b[0]}, {b[0] + b[1]}) of op {b[2]} (live {b[2]}..{b[3]})")


def _legal_share(a, b) -> bool:
    """b may share a's bytes: b is a view of a, or b is written in place over a at the op
    where a dies (same offset)."""
    va, vb, opb = a[4], b[4], b[5]
    if va is None or vb is None or a[0] != b[0]:
        return False
    if opb.opname in VIEW_OPS and not opb.regions and opb.operands[0] is va:
        return True
    if a[3] == b[2]:
        ri = opb.results.index(vb)
        # the dying value may be read directly or through a view of it (a reshape)
        return any(_same_view_root(x) is _same_view_root(va) and inplace_safe(opb, i, ri)
                   for i, x in enumerate(opb.operands))
    # a view chain: both views of the same storage at the same offset
    return _same_view_root(va) is _same_view_root(vb)


def _same_view_root(v: Value) -> Value:
    while v.op is not None and v.op.opname in VIEW_OPS and not v.op.regions:
        v = v.op.operands[0]
    return v


@register_pass
@dataclass(frozen=True)
class PlanMemoryPass(Pass):
    """Give every intermediate an offset in one arena (see the module docstring)."""

    name: ClassVar[str] = "plan-memory"

    def run(self, f: Function) -> Function:
        plan_memory(f)
        check_plan(f)
        return f
