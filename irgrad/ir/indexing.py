"""Symbolic index arithmetic: how an element of one tensor maps to an element of another.

`Ix` is a linear form `sum(coeff * atom) + const` over loop variables and opaque atoms
(floor division, modulo, clipping). `floordiv` and `mod` simplify with the ranges of the
variables, so the index map of a reshape folds back into an affine form wherever the
layout allows. `operand_index` gives, for a data-movement op, the operand element that a
result element reads; fusion uses it to see which views a matmul can read in place, and
codegen to turn views into load addresses; the maps of the ops themselves are in their
registry entries (`operand_index`, `result_index`).
"""

from __future__ import annotations

import itertools
import math

from .hashcons import Node
from .registry import get_op


class Var(Node):
    """A loop variable over [0, extent)."""

    FIELDS = __slots__ = ("name", "extent")

    def __repr__(self):
        return self.name


class FloorDiv(Node):
    FIELDS = __slots__ = ("x", "d")

    def __repr__(self):
        return f"FloorDiv({self.x!r}, {self.d})"


class Mod(Node):
    FIELDS = __slots__ = ("x", "d")

    def __repr__(self):
        return f"Mod({self.x!r}, {self.d})"


class Clip(Node):
    """min(max(x, lo), hi): keeps an index of a padded or concatenated operand in bounds."""

    FIELDS = __slots__ = ("x", "lo", "hi")

    def __repr__(self):
        return f"Clip({self.x!r}, {self.lo}, {self.hi})"


class Ix(Node):
    """terms: ((atom, coeff), ...) sorted by repr(atom), coeffs nonzero; plus const."""

    FIELDS = __slots__ = ("terms", "const")
    DEFAULTS = {"terms": (), "const": 0}

    # construction ------------------------------------------------------------------------
    @staticmethod
    def of(x) -> "Ix":
        if isinstance(x, Ix):
            return x
        if isinstance(x, int):
            return Ix((), x)
        return Ix(((x, 1),), 0)

    def _combine(self, other: "Ix", sign: int) -> "Ix":
        acc = dict(self.terms)
        for a, c in other.terms:
            acc[a] = acc.get(a, 0) + sign * c
        return _make(acc, self.const + sign * other.const)

    def __add__(self, o):
        return self._combine(Ix.of(o), 1)

    __radd__ = __add__

    def __sub__(self, o):
        return self._combine(Ix.of(o), -1)

    def __mul__(self, k: int):
        if not isinstance(k, int):
            raise TypeError("an index can only be scaled by an integer")
        return _make({a: c * k for a, c in self.terms}, self.const * k)

    __rmul__ = __mul__

    # facts ---------------------------------------------------------------------------------
    def coeff(self, atom) -> int:
        for a, c in self.terms:
            if a == atom:
                return c
        return 0

    def vars(self) -> set:
        out = set()
        for a, _ in self.terms:
            out |= atom_vars(a)
        return out

    def is_affine(self) -> bool:
        return all(isinstance(a, Var) for a, _ in self.terms)

    def bounds(self) -> tuple[int, int]:
        lo = hi = self.const
        for a, c in self.terms:
            alo, ahi = atom_bounds(a)
            if c >= 0:
                lo, hi = lo + c * alo, hi + c * ahi
            else:
                lo, hi = lo + c * ahi, hi + c * alo
        return lo, hi

    def substitute(self, mapping: dict) -> "Ix":
        """Replace variables by index expressions (through opaque atoms too)."""
        out = Ix((), self.const)
        for a, c in self.terms:
            out = out + substitute_atom(a, mapping) * c
        return out

    def __repr__(self):
        parts = [f"{c}*{a!r}" if c != 1 else repr(a) for a, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts)


def _make(acc: dict, const: int) -> Ix:
    acc = {a: c for a, c in acc.items() if c}
    # (x // d) * (c d) + (x % d) * c == c x: the split that delinearizing made, undone
    while True:
        pair = next(((q, r) for q in acc if isinstance(q, FloorDiv)
                     for r in acc if isinstance(r, Mod) and r.x == q.x and r.d == q.d
                     and acc[q] == acc[r] * q.d), None)
        if pair is None:
            break
        q, r = pair
        c = acc.pop(r)
        del acc[q]
        for a, k in q.x.terms:
            acc[a] = acc.get(a, 0) + c * k
            if not acc[a]:
                del acc[a]
        const += c * q.x.const
    terms = tuple(sorted(acc.items(), key=lambda t: repr(t[0])))
    return Ix(terms, const)


def atom_vars(a) -> set:
    if isinstance(a, Var):
        return {a}
    if isinstance(a, (FloorDiv, Mod, Clip)):
        return a.x.vars()
    return a.vars()  # an atom defined elsewhere (codegen's data-dependent index)


def atom_bounds(a) -> tuple[int, int]:
    if isinstance(a, Var):
        return 0, a.extent - 1
    if isinstance(a, FloorDiv):
        lo, hi = a.x.bounds()
        return lo // a.d, hi // a.d
    if isinstance(a, Mod):
        lo, hi = a.x.bounds()
        if lo >= 0 and hi < a.d:
            return lo, hi
        return 0, a.d - 1
    if isinstance(a, Clip):
        lo, hi = a.x.bounds()
        return max(lo, a.lo), min(hi, a.hi)
    return a.bounds()


def substitute_atom(a, mapping) -> Ix:
    if isinstance(a, Var):
        return Ix.of(mapping.get(a, a))
    if isinstance(a, FloorDiv):
        return floordiv(a.x.substitute(mapping), a.d)
    if isinstance(a, Mod):
        return mod(a.x.substitute(mapping), a.d)
    if isinstance(a, Clip):
        return clip(a.x.substitute(mapping), a.lo, a.hi)
    return Ix.of(a.substitute(mapping))


def _split(x: Ix, d: int):
    """(quotient terms, remainder Ix) where quotient holds the terms divisible by d."""
    q, r = {}, {}
    for a, c in x.terms:
        if c % d == 0:
            q[a] = c // d
        else:
            r[a] = c
    qc, rc = divmod(x.const, d)
    return _make(q, qc), _make(r, rc)


def floordiv(x: Ix, d: int) -> Ix:
    x = Ix.of(x)
    if d == 1:
        return x
    q, r = _split(x, d)
    lo, hi = r.bounds()
    if lo >= 0 and hi < d:
        return q  # the remainder never carries into the quotient
    lo, hi = x.bounds()
    if lo // d == hi // d:
        return Ix.of(lo // d)
    red = _reduce_by_gcd(x, d)
    if red is not None:
        big, small, g = red
        return floordiv(big, d // g)
    return Ix.of(FloorDiv(x, d))


def _reduce_by_gcd(x: Ix, d: int):
    """Split x = g * big + small with g | d and 0 <= small < g, so that
    x // d == big // (d / g) and x % d == (big % (d / g)) * g + small; or None.

    (384 i + j) // 24576 with 0 <= j < 384 is i // 64: the split a reshape of a reshape
    makes, which would otherwise hide an affine index."""
    terms = sorted(x.terms, key=lambda t: abs(t[1]))
    for m in range(1, len(terms) + 1):
        small, large = terms[:m], terms[m:]
        g = d
        for _, c in large:
            g = math.gcd(g, c)
        if g <= 1:
            continue
        s = _make(dict(small), x.const % g)
        lo, hi = s.bounds()
        if lo >= 0 and hi < g:
            big = _make({a: c // g for a, c in large}, x.const // g)
            return big, s, g
    return None


def mod(x: Ix, d: int) -> Ix:
    x = Ix.of(x)
    if d == 1:
        return Ix.of(0)
    q, r = _split(x, d)
    lo, hi = r.bounds()
    if lo >= 0 and hi < d:
        return r
    lo, hi = x.bounds()
    if lo >= 0 and hi < d:
        return x
    red = _reduce_by_gcd(x, d)
    if red is not None:
        big, small, g = red
        return mod(big, d // g) * g + small
    return Ix.of(Mod(x, d))


def clip(x: Ix, lo: int, hi: int) -> Ix:
    x = Ix.of(x)
    xlo, xhi = x.bounds()
    if xlo >= lo and xhi <= hi:
        return x
    if xhi <= lo:
        return Ix.of(lo)
    if xlo >= hi:
        return Ix.of(hi)
    return Ix.of(Clip(x, lo, hi))


def linearize(idx, shape) -> Ix:
    """Row-major offset of a multi-index."""
    out, stride = Ix.of(0), 1
    for i, n in zip(reversed(idx), reversed(shape)):
        out = out + Ix.of(i) * stride
        stride *= n
    return out


def delinearize(flat: Ix, shape) -> list[Ix]:
    out, stride = [], 1
    strides = []
    for n in reversed(shape):
        strides.append(stride)
        stride *= n
    strides.reverse()
    for s, n in zip(strides, shape):
        out.append(mod(floordiv(flat, s), n) if n != 1 else Ix.of(0))
    return out


def operand_index(op, idx) -> tuple | None:
    """The operand index a view op reads for result index `idx` (its entry's
    `operand_index` map), or None for other ops."""
    fn = get_op(op.opname).operand_index
    return None if fn is None else fn(op, tuple(idx))


def result_index(op, idx, operand: int = 0) -> tuple | None:
    """The result index a permuting view or a concatenation writes element `idx` of operand
    number `operand` to (its entry's `result_index` map), or None for other ops."""
    fn = get_op(op.opname).result_index
    return None if fn is None else fn(op, tuple(idx), operand)


def strided_matrix(flat: "Ix", batch_vars, i: "Var", j: "Var", rows: int, cols: int):
    """If `flat` (an element offset over batch variables and a row i / column j) is the
    address of a BLAS matrix in every batch, return (per-batch offsets, ld, transposed):
    element (i, j) at offset + i * ld + j, or offset + j * ld + i when transposed."""
    if not flat.is_affine():
        return None
    ci, cj = flat.coeff(i), flat.coeff(j)
    if cj == 1 and (rows == 1 or ci >= max(cols, 1)):
        ld, trans = (ci if rows > 1 else max(cols, 1)), False
    elif ci == 1 and (cols == 1 or cj >= max(rows, 1)):
        ld, trans = (cj if cols > 1 else max(rows, 1)), True
    elif rows == 1 and cols == 1:
        ld, trans = 1, False
    else:
        return None
    if any(flat.coeff(b) < 0 for b in batch_vars):
        return None
    offsets = []
    for point in itertools.product(*(range(b.extent) for b in batch_vars)):
        offsets.append(flat.const + sum(flat.coeff(b) * p for b, p in zip(batch_vars, point)))
    return tuple(offsets), ld, trans
