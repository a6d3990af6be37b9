"""`plan-memory`: a schedule, liveness, and one arena offset for every intermediate.

The schedule is the order of the top-level ops. A value lives from the op that defines it
to its last reader (to the end for results of the function). Values share storage when:

- a view: the result of an `alias` op (reshape, stop_gradient) is its operand's bytes;
- in place: an op's result takes the storage of an operand that dies at that op, when
  the op reads that operand only at the index it writes (an elementwise path) — see
  `inplace_safe`;
- donation: a result that the function's `donate` attribute pairs with a parameter (the
  updated parameters and optimizer state of a training step) is written into that
  parameter's buffer, when nothing reads the parameter afterwards and the op may write
  over it (`inplace_safe`).

Storages then get 64-byte aligned offsets, largest first, each at the lowest offset free
for its whole lifetime (best fit). `check_plan` (ir/plan.py) re-derives lifetimes from
the printed plan and proves it sound; the pass runs it on its own plan, the verifier on
every plan it sees. The plan prints in the IR (`mem[OFFSET]`, `mem[%param]` for a donated
buffer, `scratch[OFFSET]` for a kernel's temporary) and the function's attributes
summarize it: `arena_bytes` (what the plan allocates), `naive_bytes` (one buffer per
intermediate value) and `lower_bound_bytes` (the most bytes live at one point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir.core import Arena, Function, InParam, Operation, Placement, Value
from ..ir.ops.kernel import kernel_scratch_bytes
from ..ir.plan import aligned, check_plan, inplace_safe, is_view, schedule_facts
from .manager import Pass, register_pass


@dataclass
class _Storage:
    size: int
    start: int
    end: int
    values: list
    offset: int = -1


def plan_memory(f: Function) -> Function:
    _, last, T = schedule_facts(f)
    params = set(f.params)
    donate = dict(enumerate(f.attrs.get("donate", ())))
    out_index, out_count = {}, {}
    for i, v in enumerate(f.outputs):
        out_index.setdefault(v, i)
        out_count[v] = out_count.get(v, 0) + 1
    storage_of: dict[Value, _Storage] = {}
    storages: list[_Storage] = []
    param_written: dict[Value, Value] = {}
    naive = 0

    places_of: dict[Operation, tuple[list, list]] = {}  # op -> (storage or param per result, scratch)
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
            if is_view(op):
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
                        and _donation_ok(op, p, ri) and out_count[r] == 1:
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
                    # (sx.end is the last use of every value sx holds)
                    if last.get(x) == t and sx.end <= t and inplace_safe(op, oi, ri) and \
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
        scratch = []
        need = kernel_scratch_bytes(op)
        if need:
            st = _Storage(aligned(need), t, t, [])
            storages.append(st)
            scratch.append(st)
        places_of[op] = (placements, scratch)

    arena = _assign_offsets(storages)
    lower = _lower_bound(storages, T)
    for op, (results, scratch) in places_of.items():
        op.mem = Placement(tuple(Arena(p.offset) if isinstance(p, _Storage) else InParam(p) for p in results),
                           tuple(st.offset for st in scratch))
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
    """Best fit, largest first: each storage goes to the lowest offset where it overlaps
    no placed storage that is live at the same time. The scan over placed storages is
    vectorized (numpy), so large programs plan in near-linear time in practice."""
    n = len(storages)
    lo_off = np.zeros(n, np.int64)  # offsets and lifetimes of the storages placed so far
    hi_off = np.zeros(n, np.int64)
    t0 = np.zeros(n, np.int64)
    t1 = np.zeros(n, np.int64)
    arena = 0
    for k, st in enumerate(sorted(storages, key=lambda s: (-s.size, s.start))):
        live = (t1[:k] >= st.start) & (t0[:k] <= st.end)
        offset = 0
        if live.any():
            lo, hi = lo_off[:k][live], hi_off[:k][live]
            order = np.argsort(lo, kind="stable")
            lo, hi = lo[order], hi[order]
            # the offset the scan would have reached before each busy interval
            before = np.concatenate(([0], np.maximum.accumulate(hi)[:-1]))
            fits = np.nonzero(before + st.size <= lo)[0]
            offset = int(before[fits[0]]) if len(fits) else max(0, int(hi.max()))
        st.offset = offset
        lo_off[k], hi_off[k], t0[k], t1[k] = offset, offset + st.size, st.start, st.end
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


@register_pass
@dataclass(frozen=True)
class PlanMemoryPass(Pass):
    """Give every intermediate an offset in one arena (see the module docstring)."""

    name: ClassVar[str] = "plan-memory"

    def run(self, f: Function) -> Function:
        plan_memory(f)
        check_plan(f)
        return f
