"""`fuse`: group ops into fused kernels (`fused` ops owning a region).

Which values are stored to memory ("materialized") and which are recomputed inside every
kernel that reads them is the whole decision:

- parameters, results of the function, and results of matmuls, reductions and
  scatter_add are materialized (the latter may stay inside their kernel, see below);
- an operand of a matmul is materialized, except a swap of its last two axes, which the
  matmul kernel absorbs (BLAS transposes for free);
- a cheap elementwise value (its recomputation costs at most `max-recompute`; data
  movement and constants cost nothing, transcendental ops cost 4) is recomputed in
  every consumer; an expensive one with several consumers is materialized once, and so
  is an expensive operand of a sliding window (`rereads`: window, window_transpose),
  which would recompute it once per window holding it;
- constants are never materialized: they move into the regions that use them.

Each materialized value gets a kernel: `loop` (elementwise over its shape), `reduce`,
`matmul` or a single op. Then kernels merge, whenever no cycle arises and the merged
region stays within `max-ops` ops:

- epilogues: a loop kernel that reads a matmul or reduction result only through
  elementwise ops (bias add, activation, scaling, log of a sum) joins that kernel; the
  result is no longer stored unless someone else needs it;
- prologues: a loop kernel whose output feeds a reduction elementwise joins the
  reduction, which then stores it while reducing (softmax's exp(x - max));
- siblings: loop kernels over the same shape that read a common input join;
- concat writers: matmuls whose results are only assembled (permuted, concatenated) into
  one stored value write their pieces of it directly.

A kernel of one op stays a plain op. Kernels already in the IR (`fused` ops, e.g. in the
output of an earlier `fuse`, or written by hand) are kept as they are, like any op that is
a kernel of its own, so fusing fused IR again changes nothing. Region text:

    %5 = fused %2, %b {kind="matmul"} : f32[64,128] {
      (%6: f32[64,64], %7: f32[64,128], %8: f32[128]):
      ...
      yield %12
    }
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import ClassVar

from ..ir.core import Block, Function, Operation, Value, clone_ops_into, compute_uses
from ..ir.registry import get_op
from ..ir.rewrite import remove_dead_ops
from .manager import Pass, PassResult, register_pass
from .patterns import is_concat, operand_matrix_view, permutes, result_matrix_view, view_chain, writer_chain


def op_class(op: Operation) -> str:
    """loop (elementwise or data movement), reduce, matmul, or opaque (a kernel of its own):
    the op entry's `kernel` trait."""
    k = get_op(op.opname).kernel
    return "opaque" if k in ("scatter", "region", "expand") else k


class _Kernel:
    __slots__ = ("id", "kind", "homes", "first", "anchor")

    def __init__(self, kid, kind, home: Value, first: int, anchor: Operation | None):
        self.id = kid
        self.kind = kind
        self.homes: list[Value] = [home]  # materialized values computed here
        self.first = first  # position of the earliest member op (for a stable order)
        self.anchor = anchor  # the matmul or reduction op of the kernel, if any


class _Fuser:
    def __init__(self, f: Function, max_ops: int, max_recompute: int):
        self.f = f
        self.max_ops = max_ops
        self.max_recompute = max_recompute
        self.ops = list(f.ops)
        self.pos = {op: i for i, op in enumerate(self.ops)}
        self.uses = compute_uses(f.body)
        self.outputs = set(f.outputs)
        self.params = set(f.params)
        self.materialized: set[Value] = set()
        self.kernel_of: dict[Value, _Kernel] = {}
        self.kernels: dict[_Kernel, None] = {}  # the live kernels, in order of creation
        self._members: dict[_Kernel, list[Operation]] = {}
        self._inputs: dict[_Kernel, list[Value]] = {}
        # value -> kernels that read it (possibly merged away since: check liveness)
        self._readers: dict[Value, set[_Kernel]] = {}

    # -- step 1: what is stored ------------------------------------------------------------
    def must_store(self) -> set[Value]:
        """Values a matmul or an opaque op reads from memory. A matmul operand that is a
        view (transpose, reshape, slice, broadcast) of a stored value is read in place
        when BLAS can address it as a strided matrix; otherwise the operand itself is
        stored. Iterated to a fixpoint, since storing a value cuts other views' chains."""
        must: set[Value] = set()
        for op in self.ops:
            if op_class(op) == "opaque":
                must.update(op.operands)
        matmul_operands = [v for op in self.ops if op_class(op) == "matmul" for v in op.operands]
        while True:
            def stored(x, must=must):
                return (x in must or x in self.params or x in self.outputs or x.op is None
                        or not get_op(x.op.opname).view)
            grew = False
            for v in matmul_operands:
                root, chain = view_chain(v, stored)
                if chain and root.op is not None and root.op.opname == "const":
                    want = v
                elif chain and operand_matrix_view(v, root, chain) is not None:
                    want = root
                else:
                    want = v
                if want not in must:
                    must.add(want)
                    grew = True
            if not grew:
                return must

    def decide_materialized(self) -> None:
        must = self.must_store()
        cost: dict[Value, int] = {}
        size: dict[Value, int] = {}  # ops a kernel computing the value would hold
        for op in self.ops:
            cls = op_class(op)
            if get_op(op.opname).rereads:
                # a sliding window computes each operand element once per window holding
                # it: an operand that costs more than max-recompute is stored first, and so
                # is a padded one (a window over a stored pad reads in-bounds, affine
                # addresses: no clamps, so its loop vectorizes)
                for v in op.operands:
                    if v not in self.materialized and (cost.get(v, 0) > self.max_recompute or (
                            cls == "loop" and v.op is not None and v.op.opname == "pad")):
                        self.materialized.add(v)
            # keep every region within max-ops: store the largest inlined operands first
            inlined = [v for v in op.operands if v in size and v not in self.materialized]
            total = (op.opname != "const") + sum(size[v] for v in inlined)
            while total > self.max_ops and inlined:
                big = max(inlined, key=size.__getitem__)
                if size[big] == 0:
                    break
                self.materialized.add(big)
                inlined.remove(big)
                total -= size[big]
            for r in op.results:
                size[r] = total
            for r in op.results:
                users = {u for u, _ in self.uses.get(r, ())}  # distinct ops (x * x reads x once)
                if r in self.outputs or r in must or cls in ("matmul", "reduce", "opaque"):
                    self.materialized.add(r)
                    continue
                if op.opname == "const":
                    cost[r] = 0  # constants move into the regions that use them
                    continue
                c = get_op(op.opname).cost + sum(cost.get(v, 0) for v in op.operands if v not in self.materialized)
                cost[r] = c
                if len(users) > 1 and c > self.max_recompute:
                    self.materialized.add(r)

    # -- step 2: one kernel per stored value ------------------------------------------------
    def make_kernels(self) -> None:
        for op in self.ops:
            for r in op.results:
                if r in self.materialized and r not in self.kernel_of:
                    cls = op_class(op)
                    k = _Kernel(len(self.kernels), cls, r, self.pos[op],
                                op if cls in ("matmul", "reduce") else None)
                    self.kernels[k] = None
                    for rr in op.results:
                        if rr in self.materialized:
                            self.kernel_of[rr] = k
                            if rr is not r:
                                k.homes.append(rr)

    # -- member ops of a kernel: its homes' producers plus everything inlined ----------------
    def members(self, k: _Kernel) -> list[Operation]:
        got = self._members.get(k)
        if got is None:
            got = self._members[k] = self._compute_members(k)
        return got

    def _compute_members(self, k: _Kernel) -> list[Operation]:
        seen: set[Operation] = set()
        stack = [h.op for h in k.homes]
        while stack:
            op = stack.pop()
            if op is None or op in seen:
                continue
            seen.add(op)
            for v in op.operands:
                if v in self.params:
                    continue
                if v in self.materialized and self.kernel_of.get(v) is not k:
                    continue
                stack.append(v.op)
        return sorted(seen, key=self.pos.__getitem__)

    def inputs(self, k: _Kernel, members=None) -> list[Value]:
        if members is None:
            got = self._inputs.get(k)
            if got is None:
                got = self._inputs[k] = self.inputs(k, self.members(k))
            return got
        mset = set(members)
        out, seen = [], set()
        for op in members:
            for v in op.operands:
                if v.op not in mset and v not in seen:
                    seen.add(v)
                    out.append(v)
        return out

    def index_readers(self, k: _Kernel) -> None:
        for v in self.inputs(k):
            self._readers.setdefault(v, set()).add(k)

    def readers(self, v: Value, kind: str | None = None) -> list[_Kernel]:
        """The live kernels that read v (of `kind`), in order of creation."""
        got = [k for k in self._readers.get(v, ()) if k in self.kernels and (kind is None or k.kind == kind)]
        return sorted(got, key=lambda k: k.id)

    def deps(self, k: _Kernel) -> set[_Kernel]:
        return {self.kernel_of[v] for v in self.inputs(k) if v in self.kernel_of} - {k}

    # -- step 3: merging ------------------------------------------------------------------
    def merge(self, into: _Kernel, other: _Kernel, checked: bool = False) -> bool:
        if not checked and not self._can_merge_all([into, other]):
            return False
        for h in other.homes:
            self.kernel_of[h] = into
        into.homes += other.homes
        into.first = min(into.first, other.first)
        del self.kernels[other]
        for k in (into, other):  # only these two kernels' member sets change
            self._members.pop(k, None)
            self._inputs.pop(k, None)
        self.index_readers(into)
        return True

    def only_elementwise_between(self, k: _Kernel, v: Value) -> bool:
        """Within k's members, is every op downstream of v elementwise or a reshape (the
        same linear index), up to k's own reduction?"""
        members = set(self.members(k)) - {k.anchor}
        frontier, seen = [v], set()
        while frontier:
            x = frontier.pop()
            for u, _ in self.uses.get(x, ()):
                if u is None or u not in members or u in seen:
                    continue
                seen.add(u)
                d = get_op(u.opname)
                if not (d.elementwise or d.alias):  # (an alias keeps the linear index)
                    return False
                frontier.extend(u.results)
        return True

    def fuse_epilogues(self) -> None:
        for k in list(self.kernels):
            if k not in self.kernels or k.kind not in ("matmul", "reduce"):
                continue
            r = k.anchor.results[0]
            readers = {u for u, _ in self.uses.get(r, ()) if u is not None}
            for kk in self.readers(r, "loop"):  # only kernels reading r can be its epilogue
                if kk not in self.kernels:
                    continue
                if k.kind == "matmul" and self._result_view(r, kk) is not None:
                    self.merge(k, kk)  # the GEMM writes straight into kk's layout
                    continue
                if all(h.type.size == r.type.size for h in kk.homes) and \
                        any(op in readers for op in self.members(kk)) and \
                        self.only_elementwise_between(kk, r):
                    self.merge(k, kk)

    def _result_view(self, r: Value, kk: _Kernel):
        """kk stores nothing but a permuted view h of matmul result r that the GEMM can
        write directly: return the chain r -> h, else None."""
        if len(kk.homes) != 1 or r in self.outputs:
            return None
        h = kk.homes[0]
        chain = writer_chain(r, h)
        if not chain or any(is_concat(op) for op, _ in chain) or not self._single_path(r, chain):
            return None
        view = result_matrix_view(r, h, chain)
        return chain if view is not None and not view[2] else None

    def _single_path(self, r: Value, chain) -> bool:
        """r and every value between it and the end of `chain` have one reader, the next
        op of the chain (nothing else needs them in their own layout)."""
        x = r
        for op, _ in chain:
            users = self.uses.get(x, ())
            if len(users) != 1 or users[0][0] is not op:
                return False
            x = op.result
        return True

    def fuse_concat_writers(self) -> None:
        """A loop kernel storing h = concat of permuted views of matmul results (attention's
        dq, dk, dv assembled into d(qkv)) joins those matmuls: each GEMM writes its piece
        of h in place, and no copy remains."""
        for kk in list(self.kernels):
            if kk not in self.kernels or kk.kind != "loop" or len(kk.homes) != 1:
                continue
            h = kk.homes[0]
            x = h
            while x.op is not None and permutes(x.op):
                x = x.op.operands[0]
            if x.op is None or not is_concat(x.op) or h in self.outputs:
                continue
            writers = []
            for v in x.op.operands:
                r = v
                while r.op is not None and permutes(r.op):
                    r = r.op.operands[0]
                k = self.kernel_of.get(r)
                chain = writer_chain(r, h) if k is not None else None
                if (k is None or k.kind != "matmul" or k.homes != [r] or r in self.outputs
                        or any(0 in x.shape for x in k.anchor.operands)
                        or chain is None or not self._single_path(r, chain)
                        or result_matrix_view(r, h, chain) is None or k in writers):
                    break
                writers.append(k)
            else:
                if self._can_merge_all([kk] + writers):
                    first = writers[0]
                    for k in [kk] + writers[1:]:
                        self.merge(first, k, checked=True)

    def _can_merge_all(self, group) -> bool:
        """No dependency path between two kernels of `group` leaves the group, and the
        merged region stays within max-ops."""
        members = set()
        for k in group:
            members.update(self.members(k))
        if len(members) > self.max_ops:
            return False
        inside = set(group)
        deps = _LazyDeps(self)
        for b in group:
            for d in deps[b]:
                if d in inside:
                    continue
                stack, seen = [d], set()
                while stack:
                    k = stack.pop()
                    if k in inside:
                        return False
                    if k in seen:
                        continue
                    seen.add(k)
                    stack.extend(deps[k])
        return True

    def _scan(self, k: _Kernel, candidates, consider) -> None:
        """Offer k candidate kernels in order of creation, each once; `candidates(k)` lists
        them and grows as k merges (a newly listed kernel is offered if it comes after
        the last one offered: the order of one pass over all kernels, without the pass)."""
        heap = [(c.id, c) for c in candidates(k)]
        heapq.heapify(heap)
        last = -1
        while heap:
            cid, kk = heapq.heappop(heap)
            if cid <= last:
                continue
            last = cid
            if kk is k or kk not in self.kernels or kk.kind != "loop":
                continue
            if consider(kk):
                for c in candidates(k):
                    if c.id > last:
                        heapq.heappush(heap, (c.id, c))

    def fuse_prologues(self) -> None:
        def producers(k):
            return [self.kernel_of[v] for v in self.inputs(k) if v in self.kernel_of]

        for k in list(self.kernels):
            if k not in self.kernels or k.kind != "reduce":
                continue
            x = k.anchor.operands[0]

            def consider(kk, k=k, x=x):
                if any(h.type.size != x.type.size for h in kk.homes):
                    return False
                ins = self.inputs(k)
                if any(h in ins for h in kk.homes) and all(
                        self.only_elementwise_between(k, h) for h in kk.homes if h in ins):
                    return self.merge(k, kk)
                return False
            self._scan(k, producers, consider)

    def fuse_siblings(self) -> None:
        def sharing(a):
            out = set()
            for v in self.inputs(a):
                out.update(b for b in self.readers(v, "loop") if b.id > a.id)
            return out

        for a in [k for k in self.kernels if k.kind == "loop"]:
            if a not in self.kernels:
                continue

            def consider(b, a=a):
                if a.homes[0].shape != b.homes[0].shape:
                    return False
                return self.merge(a, b)
            self._scan(a, sharing, consider)

    # -- step 4: rebuild the function ---------------------------------------------------------
    def rebuild(self) -> bool:
        """Replace the body by the kernels in schedule order; returns whether that changed
        it (a kernel was made, or the ops were reordered)."""
        order = self.schedule()
        original = [id(op) for op in self.f.body.ops]
        kept: list[int] = []
        read_elsewhere: set[Value] = set()
        for k in self.kernels:
            read_elsewhere.update(self.inputs(k))
        body = self.f.body
        new_ops: list[Operation] = []
        mapping: dict[Value, Value] = {}
        for k in order:
            members = self.members(k)
            ins = self.inputs(k, members)
            homes_out = [h for h in k.homes if h in self.outputs or h in read_elsewhere]
            if len(members) == 1 and (members[0].regions or len(homes_out) == len(members[0].results)):
                op = members[0]
                clone_ops_into([op], _Sink(new_ops, body), mapping)
                kept.append(id(op))
                continue
            region = Block([v.type for v in ins])
            inner = dict(zip(ins, region.args))
            clone_ops_into(members, region, inner)
            region.outputs = [inner[h] for h in homes_out]
            kind = k.kind if k.kind != "opaque" else "loop"
            fused = Operation("fused", [mapping.get(v, v) for v in ins], [h.type for h in homes_out],
                              {"kind": kind}, [region], members[-1].loc)
            fused.parent = body
            new_ops.append(fused)
            for h, r in zip(homes_out, fused.results):
                mapping[h] = r
        body.ops[:] = new_ops
        body.outputs = [mapping.get(v, v) for v in body.outputs]
        return kept != original

    def schedule(self) -> list[_Kernel]:
        deps = {k: self.deps(k) for k in self.kernels}
        indeg = {k: len(d) for k, d in deps.items()}
        users: dict[_Kernel, list[_Kernel]] = {k: [] for k in self.kernels}
        for k, d in deps.items():
            for p in d:
                users[p].append(k)
        ready = [(k.first, k.id, k) for k in self.kernels if indeg[k] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, _, k = heapq.heappop(ready)
            order.append(k)
            for u in users[k]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(ready, (u.first, u.id, u))
        if len(order) != len(self.kernels):
            raise AssertionError("fuse: kernel graph has a cycle")
        return order


class _LazyDeps:
    """kernel -> the kernels it reads from, computed on first use (for cycle checks)."""

    def __init__(self, fuser: "_Fuser"):
        self.fuser = fuser
        self.memo: dict = {}

    def __getitem__(self, k):
        got = self.memo.get(k)
        if got is None:
            got = self.memo[k] = self.fuser.deps(k)
        return got


class _Sink(Block):
    """A block stand-in that appends cloned top-level ops to a list."""

    def __init__(self, ops: list, parent: Block):
        super().__init__()
        self.ops = ops
        self._parent_block = parent

    def append(self, op):
        op.parent = self._parent_block
        self.ops.append(op)
        return op


def fuse_function(f: Function, max_ops: int = 64, max_recompute: int = 4) -> bool:
    """Fuse `f` in place; returns whether anything changed (dead ops removed, kernels
    made, or ops reordered)."""
    removed = remove_dead_ops(f.body)
    if not f.ops:
        return removed > 0
    fz = _Fuser(f, max_ops, max_recompute)
    fz.decide_materialized()
    fz.make_kernels()
    for k in fz.kernels:
        fz.index_readers(k)
    fz.fuse_epilogues()
    fz.fuse_concat_writers()
    fz.fuse_prologues()
    fz.fuse_siblings()
    return fz.rebuild() or removed > 0


@register_pass
@dataclass(frozen=True)
class FusePass(Pass):
    """Fuse elementwise ops, reductions and matmul epilogues into kernels (see the module
    docstring); `max-ops` bounds a region's size, `max-recompute` the cost of what is
    recomputed rather than stored."""

    name: ClassVar[str] = "fuse"
    max_ops: int = field(default=64, metadata={"min": 1})
    max_recompute: int = field(default=4, metadata={"min": 0})

    def apply(self, f: Function) -> PassResult:
        return PassResult(f, fuse_function(f, self.max_ops, self.max_recompute))
