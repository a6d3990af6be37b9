"""`ig.einsum`: Einstein summation lowered to the primitives a compiler sees anyway.

Each operand first sums out the indices nobody else needs (reduce_sum) and takes its
diagonals never (repeated indices in one operand are refused); then operands are
contracted left to right, each pair as one batched matmul: the indices both share and
the output keeps are the batch, the shared ones that die are the contraction, the rest
are the rows and the columns. Transposes and reshapes put each side in [batch, rows, k]
and [batch, k, cols] order; a last transpose puts the result in the output's order. So
the IR holds only transposes, reshapes, reductions and matmuls, which fusion and the
GEMM kernels already handle.
"""

from __future__ import annotations

import math
import string

from .tensor import Tensor, as_tensor, broadcast_to, fail, matmul, reduce, reshape, transpose

_LETTERS = set(string.ascii_letters)


def _parse(subscripts: str, operands):
    spec = subscripts.replace(" ", "")
    if "->" in spec:
        lhs, out = spec.split("->", 1)
        explicit = True
    else:
        lhs, out, explicit = spec, None, False
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise fail(f"einsum '{subscripts}' names {len(terms)} operands but got {len(operands)}")
    # '...' becomes the same fresh letters in every operand (right-aligned, numpy's rule)
    used = set(spec) & _LETTERS
    spare = [c for c in string.ascii_letters if c not in used]
    n_ell = 0
    for t, x in zip(terms, operands):
        if "..." in t:
            n_ell = max(n_ell, x.ndim - (len(t) - 3))
    ell = "".join(spare[:n_ell])
    fixed = []
    for t, x in zip(terms, operands):
        if "..." in t:
            k = x.ndim - (len(t) - 3)
            if k < 0:
                raise fail(f"einsum term '{t}' has more indices than operand {list(x.shape)} has axes")
            t = t.replace("...", ell[n_ell - k:])
        bad = set(t) - _LETTERS
        if bad or len(t) != x.ndim:
            raise fail(f"einsum term '{t}' does not fit operand {list(x.shape)} "
                       f"(one letter per axis{', letters only' if bad else ''})")
        if len(set(t)) != len(t):
            raise fail(f"einsum term '{t}' repeats an index (diagonals are not supported)")
        fixed.append(t)
    if explicit:
        out = out.replace("...", ell)
        if set(out) - _LETTERS or len(set(out)) != len(out):
            raise fail(f"einsum output '{out}' must be distinct letters")
        missing = set(out) - set("".join(fixed))
        if missing:
            raise fail(f"einsum output index {sorted(missing)} appears in no operand")
    else:
        counts = {}
        for t in fixed:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return fixed, out


def einsum(subscripts: str, *operands) -> Tensor:
    """numpy's einsum for any number of operands: 'ij,jk->ik', 'bhqd,bhkd->bhqk', '...ij->...ji'."""
    xs = [as_tensor(x) for x in operands]
    if not xs:
        raise fail("einsum needs at least one operand")
    terms, out = _parse(subscripts, xs)
    sizes: dict[str, int] = {}
    for t, x in zip(terms, xs):
        for c, d in zip(t, x.shape):
            if sizes.setdefault(c, d) != d and 1 not in (d, sizes[c]):
                raise fail(f"einsum index '{c}' has sizes {sizes[c]} and {d} "
                           f"({' , '.join(str(list(x.shape)) for x in xs)})")
            sizes[c] = max(sizes[c], d)
    # broadcast size-1 axes of a shared index up front (numpy's broadcasting)
    xs = [broadcast_to(x, tuple(sizes[c] for c in t)) if x.shape != tuple(sizes[c] for c in t) else x
          for t, x in zip(terms, xs)]

    def needed(later):
        return set(out).union(*[set(t) for t in later])

    def sum_out(x, t, keep):
        axes = tuple(i for i, c in enumerate(t) if c not in keep)
        if axes:
            x = reduce("reduce_sum", x, axes)
            t = "".join(c for c in t if c in keep)
        return x, t

    acc, at = sum_out(xs[0], terms[0], needed(terms[1:]))
    for i in range(1, len(xs)):
        rest = terms[i + 1:]
        keep = needed(rest)
        y, yt = sum_out(xs[i], terms[i], keep | set(at))
        acc, at = sum_out(acc, at, keep | set(yt))
        acc, at = _contract(acc, at, y, yt, keep)
    if set(at) != set(out):
        acc, at = sum_out(acc, at, set(out))
    if at != out:
        acc = transpose(acc, [at.index(c) for c in out])
    return acc



def _contract(a: Tensor, at: str, b: Tensor, bt: str, keep: set):
    batch = [c for c in at if c in bt and c in keep]
    k = [c for c in at if c in bt and c not in keep]
    rows = [c for c in at if c not in bt]
    cols = [c for c in bt if c not in at]
    size = dict(zip(at, a.shape)) | dict(zip(bt, b.shape))

    def arrange(x, xt, order, shape):
        if list(xt) != order:
            x = transpose(x, [xt.index(c) for c in order])
        return reshape(x, shape)

    nb, nm, nk, nn = (math.prod(size[c] for c in g) for g in (batch, rows, k, cols))
    lead = (nb,) if batch else ()  # no batch: one plain 2-D product
    a2 = arrange(a, at, batch + rows + k, lead + (nm, nk))
    b2 = arrange(b, bt, batch + k + cols, lead + (nk, nn))
    r = matmul(a2, b2)
    r = reshape(r, tuple(size[c] for c in batch + rows + cols))
    return r, "".join(batch + rows + cols)
