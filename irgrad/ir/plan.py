"""Memory plans: what one is, and the proof that one is safe to run.

A plan (made by the `plan-memory` pass, or written by hand in IR text) places the results
of every top-level op: at an arena offset (`mem[OFFSET]`), or in a parameter's buffer
(`mem[%p]`); kernels that need temporaries get `scratch[OFFSET]`. The function's
`arena_bytes` attribute is the size of the arena. Native backends run exactly what the
plan says, so a wrong plan means wrong numbers or memory corruption: `plan_problem` proves
a plan sound, re-deriving every lifetime from the IR, and nothing trusts a plan it has not
proved. The verifier runs it on every function that carries a plan (parsed text, the
output of every pass), and the lowering runs it again before any code is generated.

A sound plan:
- places every non-constant top-level op (constants are static data) and nothing else;
  one placement per result, and scratch exactly where the kernel needs it;
- keeps every buffer inside the arena, at offsets aligned to 64 bytes;
- never overlaps two buffers that are live at the same time, except where sharing is
  the point: a view (an `alias` op: reshape, stop_gradient) at its operand's offset, a result written
  in place over an operand that dies at that op and that the op reads only at the index
  it writes (`inplace_safe`);
- writes into a parameter's buffer only if the parameter is donated (the function's
  `donate` attribute pairs it with a result), nothing reads the parameter afterwards, it
  is not itself returned, the op may write over what it reads, and only once.

A view of a parameter may also sit on the parameter's buffer (`mem[%p]` for `reshape %p`).
"""

from __future__ import annotations

import bisect
import heapq

import numpy as np

from ..errors import IrgradError
from .core import Arena, Function, InParam, Operation, Value
from .ops.kernel import gemm_accumulate_form, kernel_scratch_bytes
from .registry import get_op

ALIGN = 64  # bytes: every planned offset (a cache line, and any vector width we emit)
PLAN_ATTRS = ("arena_bytes", "naive_bytes", "lower_bound_bytes")


def aligned(n: int, align: int = ALIGN) -> int:
    """n rounded up to a multiple of `align`."""
    return (n + align - 1) // align * align


def has_plan(f: Function) -> bool:
    """Does `f` carry a memory plan (or part of one)?"""
    return any(k in f.attrs for k in PLAN_ATTRS) or any(op.mem is not None for op in f.ops)


def strip_plan(f: Function) -> Function:
    """Remove the memory plan: any change to the ops invalidates it."""
    for op in f.ops:
        op.mem = None
    for k in PLAN_ATTRS:
        f.attrs.pop(k, None)
    return f


def is_view(op: Operation) -> bool:
    """Is op's result its operand's bytes (an `alias` op: reshape, stop_gradient)?"""
    return not op.regions and get_op(op.opname).alias


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
        d = get_op(op.opname)
        return d.elementwise and not d.alias
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
            d = get_op(u.opname)
            if not (d.elementwise or d.alias):
                return False
            frontier.extend(u.results)
    return True


def schedule_facts(f: Function):
    """(definition position, last-use position, number of ops) of the top-level values.
    A value read through a view (reshape, stop_gradient) counts as read wherever the view
    is read; results of the function live to the end (position T)."""
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
        if is_view(op) and op.result in last:
            src = op.operands[0]
            last[src] = max(last.get(src, -1), last[op.result])
    return pos, last, T


def placements(op: Operation) -> tuple[tuple, tuple]:
    """(one place per result: Arena or InParam, scratch offsets) of a planned op."""
    mem = op.mem
    return (mem.results, mem.scratch) if mem is not None else ((), ())


def place_of(v: Value):
    """The planned place (Arena or InParam) of a top-level value, or None (a constant, or
    unplanned)."""
    if isinstance(v.owner, Operation):
        mem = v.owner.mem
        return mem.results[v.owner.results.index(v)] if mem is not None else None
    return InParam(v)  # a parameter is its own buffer


def same_bytes_view(op: Operation) -> bool:
    """Is op a view placed on its operand's own bytes (so no code runs for it)?"""
    return is_view(op) and op.mem is not None and place_of(op.operands[0]) == op.mem.results[0]


def result_place(f: Function, v: Value):
    """Where result v of a planned function is after a run: ("param", index) (a parameter
    returned, or a result written into or viewing its buffer), ("arena", offset), or
    ("const", array) for a constant."""
    if v in f.params:
        return ("param", f.params.index(v))
    op = v.op
    if op.opname == "const":
        return ("const", np.array(np.broadcast_to(op.attrs["value"], v.shape)))
    place = op.mem.results[op.results.index(v)]
    if isinstance(place, InParam):
        return ("param", f.params.index(place.param))
    return ("arena", place.offset)


def written_params(f: Function) -> list[int]:
    """Indices of the parameters whose buffers a planned function writes (donation)."""
    out = set()
    for op in f.ops:
        for p in placements(op)[0]:
            if isinstance(p, InParam) and not (is_view(op) and op.operands[0] is p.param):
                out.add(f.params.index(p.param))
    return sorted(out)


def check_plan(f: Function) -> None:
    """Raise IrgradError unless `f`'s plan is sound (see the module docstring)."""
    problem = plan_problem(f)
    if problem is not None:
        raise IrgradError(f"@{f.name}: {problem[0]}")


def plan_problem(f: Function) -> tuple[str, Operation | None] | None:
    """(message, the op at fault or None) for the first flaw of `f`'s plan, else None."""
    arena = f.attrs.get("arena_bytes")
    if arena is None:
        return ("has no memory plan" if not has_plan(f) else
                "has memory placements but no 'arena_bytes' attribute (the arena size)"), None
    for k in PLAN_ATTRS:
        v = f.attrs.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            return f"attribute '{k}' must be a non-negative integer, got {v!r}", None
    _, last, T = schedule_facts(f)
    params = {p: i for i, p in enumerate(f.params)}
    donated = {d for d in f.attrs.get("donate", ()) if isinstance(d, int) and d >= 0}
    returned = set(f.outputs)
    intervals = []  # (offset, size, start, end, value or None for scratch, op)
    written: dict[Value, int] = {}
    for t, op in enumerate(f.ops):
        if op.opname == "const":
            if op.mem is not None:
                return "a constant is static data and takes no placement", op
            continue
        if op.mem is None:
            return f"op {t} ('{op.opname}') has no placement", op
        places, scratch = placements(op)
        if len(places) != len(op.results):
            return f"op {t} ('{op.opname}') has {len(places)} placements for {len(op.results)} results", op
        need = kernel_scratch_bytes(op)
        if len(scratch) != (1 if need else 0):
            return (f"op {t} ('{op.opname}') needs {'one scratch buffer of ' + str(need) + ' bytes' if need else 'no scratch'}, "
                    f"the plan gives it {len(scratch)}"), op
        for ri, (r, place) in enumerate(zip(op.results, places)):
            if isinstance(place, InParam):
                bad = _param_write_problem(op, t, ri, r, place.param, params, donated, returned,
                                           last, written)
                if bad:
                    return bad, op
                continue
            p = place.offset if isinstance(place, Arena) else None
            if isinstance(p, bool) or not isinstance(p, int):
                return f"op {t} has a placement that is neither an offset nor a parameter", op
            if p % ALIGN or p < 0 or p + r.type.nbytes > arena:
                return (f"op {t} ('{op.opname}') result {ri} at offset {p} ({r.type.nbytes} bytes) is "
                        f"misaligned or outside the arena of {arena} bytes"), op
            intervals.append((p, r.type.nbytes, t, last.get(r, t), r, op))
        for off in scratch:
            if isinstance(off, bool) or not isinstance(off, int) or off % ALIGN or off < 0 \
                    or off + need > arena:
                return (f"op {t} ('{op.opname}') scratch at {off} ({need} bytes) is misaligned or "
                        f"outside the arena of {arena} bytes"), op
            intervals.append((off, need, t, t, None, op))
    return _overlap_problem(intervals)


def _param_write_problem(op, t, ri, r, p, params, donated, returned, last, written):
    if p not in params:
        return "a result can only be placed in the arena or in a parameter's buffer"
    if is_view(op) and op.operands[0] is p:
        return None  # a view of the parameter, on its bytes
    if params[p] not in donated:
        return (f"op {t} writes into %{p.name}, which the function does not donate (a plain "
                f"call never writes its arguments; see the 'donate' attribute)")
    if p.type.nbytes != r.type.nbytes or p.dtype.itemsize != r.dtype.itemsize:
        return f"op {t} writes {r.type} into %{p.name} ({p.type})"
    if p in returned:
        return f"op {t} overwrites %{p.name}, which the function returns"
    if last.get(p, -1) > t:
        return f"op {t} overwrites %{p.name}, which op {last[p]} still reads"
    if p in written:
        return f"%{p.name} is written twice (by ops {written[p]} and {t})"
    if p in op.operands and not all(inplace_safe(op, i, ri) for i, v in enumerate(op.operands) if v is p):
        return f"op {t} cannot write over %{p.name} while reading it"
    written[p] = t
    return None


def _overlap_problem(intervals):
    """No two buffers that are live at one point overlap (unless sharing is legal).

    A sweep over program points: every buffer is compared with the buffers live when it
    starts (any overlapping pair is live together at the later start). The live buffers
    of a sound plan are disjoint apart from legal sharers, which have the same offset and
    size, so, sorted by offset, their ends are sorted too and each comparison stops at the
    first buffer that ends before the new one begins: near-linear time.
    """
    intervals = sorted((iv for iv in intervals if iv[1] > 0), key=lambda iv: (iv[2], iv[0]))
    live_keys: list = []  # (offset, seq), sorted
    live: dict = {}
    ends: list = []  # heap of (end, key)
    for seq, b in enumerate(intervals):
        while ends and ends[0][0] < b[2]:
            _, key = heapq.heappop(ends)
            del live[key]
            del live_keys[bisect.bisect_left(live_keys, key)]
        i = bisect.bisect_left(live_keys, (b[0] + b[1], -1)) - 1
        while i >= 0:
            a = live[live_keys[i]]
            if a[0] + a[1] <= b[0]:
                break
            if not (_legal_share(a, b) or _legal_share(b, a)):
                return (f"buffers overlap while both live: [{a[0]}, {a[0] + a[1]}) of op {a[2]} "
                        f"(live {a[2]}..{a[3]}) and [{b[0]}, {b[0] + b[1]}) of op {b[2]} "
                        f"(live {b[2]}..{b[3]})"), b[5]
            i -= 1
        key = (b[0], seq)
        bisect.insort(live_keys, key)
        live[key] = b
        heapq.heappush(ends, (b[3], key))
    return None


def _legal_share(a, b) -> bool:
    """b may share a's bytes: b is a view of a, or b is written in place over a at the op
    where a dies (same offset, same size)."""
    va, vb, opb = a[4], b[4], b[5]
    if va is None or vb is None or a[0] != b[0] or a[1] != b[1]:
        return False
    if is_view(opb) and opb.operands[0] is va:
        return True
    if a[3] == b[2]:
        ri = opb.results.index(vb)
        # the dying value may be read directly or through a view of it (a reshape)
        if any(_view_root(x) is _view_root(va) and inplace_safe(opb, i, ri)
               for i, x in enumerate(opb.operands)):
            return True
    # a view chain: both views of the same storage at the same offset
    return _view_root(va) is _view_root(vb)


def _view_root(v: Value) -> Value:
    while v.op is not None and is_view(v.op):
        v = v.op.operands[0]
    return v
