"""Hypothesis strategies for random, valid irgrad programs (reused across test files).

    from strategies import programs, programs_with_inputs, random_inputs

    @given(programs(max_ops=12))
    def test_something(prog):
        f = prog.function                  # an ir.Function, already verified
        args = prog.make_inputs(seed=0)    # matching numpy arrays, one per parameter
        want = prog.run(args)              # the reference interpreter's results

`programs()` builds a function op by op with `irgrad.ir.Builder`, drawing from a pool
of float values (parameters, constants, earlier results). Op kinds (the `kinds=` option):

    unary binary const broadcast reduce reshape transpose matmul slice pad concat
    select cast

Every program it returns:
- verifies (it is checked before it is returned) and has 1..`max_outputs` results;
- is numerically tame on its inputs: `make_inputs` gives floats uniform in [-2, 2], and
  the generator tracks a bound on every value's magnitude, so `exp` only sees bounded
  values, `log`/`sqrt`/`div`/`pow` get their operands shifted into their domains
  (`log(|x| + 1)`, `x / (|y| + 1)`, ...) and a `tanh` squashes anything that grows past
  1e4. Results are therefore finite in f32 and f64, and comparisons between two correct
  evaluations of the same program can use ordinary tolerances;
- may contain dead ops and unused parameters (both valid IR: passes must cope);
- keeps every value small (at most MAX_ELEMENTS elements, rank at most `max_rank` + 1).

Non-smooth ops (abs, max, min, select, comparisons, casts to narrower floats) are part
of the default mix; pass `kinds=` / `unary_ops=` / `binary_ops=` to restrict it, e.g. for
gradient checks by finite differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from irgrad.errors import SourceLoc
from irgrad.ir import Builder, Function, run_function, verify_function
from irgrad.ir.types import DType, TensorType

ALL_KINDS = ("unary", "binary", "const", "broadcast", "reduce", "reshape", "transpose",
             "matmul", "slice", "pad", "concat", "select", "cast")
UNARY_OPS = ("neg", "abs", "tanh", "sin", "cos", "exp", "log", "sqrt")
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "max", "min")
COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")
MAX_ELEMENTS = 256
SQUASH_ABOVE = 1e4  # values that may grow past this go through tanh
INPUT_BOUND = 2.0  # make_inputs draws floats uniformly from [-INPUT_BOUND, INPUT_BOUND]


def random_inputs(types, seed: int = 0) -> list[np.ndarray]:
    """Arrays for parameters of `types` (TensorTypes or anything with `.type`).

    Floats are uniform in [-2, 2]; integers are in [0, 3) (valid as indices of any axis of
    size >= 3); booleans are fair coin flips. Works for any function, parsed ones included.
    """
    rng = np.random.default_rng(seed)
    out = []
    for t in types:
        t = getattr(t, "type", t)
        if t.dtype.is_float:
            out.append(rng.uniform(-INPUT_BOUND, INPUT_BOUND, t.shape).astype(t.dtype.np))
        elif t.dtype.is_int:
            out.append(rng.integers(0, 3, t.shape).astype(t.dtype.np))
        else:
            out.append(rng.random(t.shape) < 0.5)
    return out


@dataclass
class Program:
    """A random function plus what is needed to run it."""

    function: Function
    kinds_used: list[str] = field(default_factory=list)

    @property
    def input_types(self) -> list[TensorType]:
        return [p.type for p in self.function.params]

    @property
    def text(self) -> str:
        return str(self.function)

    def make_inputs(self, seed: int = 0) -> list[np.ndarray]:
        """Fresh numpy arguments matching the parameters (deterministic in `seed`)."""
        return random_inputs(self.input_types, seed)

    def run(self, inputs) -> list[np.ndarray]:
        """The reference interpreter's results on `inputs`."""
        return run_function(self.function, inputs)

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        return f"Program(kinds={self.kinds_used}):\n{self.text}"


class _Gen:
    """Builds one program; `draw` is hypothesis' draw function."""

    def __init__(self, draw, *, dtypes, max_rank, max_dim, with_locs, unary_ops, binary_ops):
        self.draw = draw
        self.dtypes = tuple(dtypes)
        self.max_rank = max_rank
        self.max_dim = max_dim
        self.with_locs = with_locs
        self.unary_ops = unary_ops
        self.binary_ops = binary_ops
        self.pool: list = []
        self.bound: dict = {}  # value -> an upper bound of |value| on make_inputs' inputs
        self.b: Builder | None = None
        self.line = 0

    # -- small helpers ------------------------------------------------------------------------
    def shape(self, min_rank=0) -> tuple[int, ...]:
        rank = self.draw(st.integers(min_rank, self.max_rank))
        dims = self.draw(st.lists(st.integers(1, self.max_dim), min_size=rank, max_size=rank))
        while math.prod(dims) > MAX_ELEMENTS:
            dims[dims.index(max(dims))] //= 2
        return tuple(dims)

    def pick(self, pred=lambda v: True):
        cands = [v for v in self.pool if pred(v)]
        if not cands:
            return None
        # Prefer recent values, so programs are chains more often than flat fans.
        i = self.draw(st.integers(0, len(cands) - 1))
        j = self.draw(st.integers(0, len(cands) - 1))
        return cands[max(i, j)]

    def add(self, v, bound: float):
        if bound > SQUASH_ABOVE:
            v, bound = self.b.tanh(v), 1.0
        self.bound[v] = bound
        self.pool.append(v)
        return v

    def set_loc(self):
        self.line += 1
        self.b.loc = SourceLoc("model.py", self.line) if (
            self.with_locs and self.draw(st.booleans())) else None

    def splat(self, v, value):
        return self.b.full(v.type, value)

    def const_of(self, t: TensorType):
        if self.draw(st.booleans()):
            value = self.draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, 1e-3]))
            return self.b.const(value, t), abs(value)
        seed = self.draw(st.integers(0, 2**16))
        arr = np.random.default_rng(seed).uniform(-1, 1, t.shape).round(3)
        return self.b.const(arr, t), 1.0

    def like_dtype(self, v, dtype):
        return v if v.dtype is dtype else self.b.cast(v, dtype)

    # -- op kinds: each appends ops and returns True, or False when it does not apply -----------
    def k_unary(self):
        x = self.pick()
        op = self.draw(st.sampled_from(self.unary_ops))
        bx, b = self.bound[x], self.b
        if op in ("neg", "abs"):
            return self.add(getattr(b, op)(x), bx)
        if op in ("tanh", "sin", "cos"):
            return self.add(getattr(b, op)(x), 1.0)
        if op == "exp":
            if bx > 10:
                x, bx = b.tanh(x), 1.0
            return self.add(b.exp(x), math.exp(bx))
        shifted = b.add(b.abs(x), self.splat(x, 1.0))  # >= 1: inside log's and sqrt's domain
        if op == "log":
            return self.add(b.log(shifted), math.log(bx + 1))
        return self.add(b.sqrt(shifted), math.sqrt(bx + 1))

    def second_operand(self, x):
        y = self.pick(lambda v: v.shape == x.shape and v is not x)
        if y is None or self.draw(st.integers(0, 3)) == 0:
            return self.const_of(x.type)
        return self.like_dtype(y, x.dtype), self.bound[y]

    def k_binary(self):
        x = self.pick()
        y, by = self.second_operand(x)
        op = self.draw(st.sampled_from(self.binary_ops))
        bx, b = self.bound[x], self.b
        if op == "div":  # divide by |y| + 1 >= 1
            return self.add(b.div(x, b.add(b.abs(y), self.splat(y, 1.0))), bx)
        if op == "pow":  # (|x| + 1) ** tanh(y): base >= 1, exponent in [-1, 1]
            base = b.add(b.abs(x), self.splat(x, 1.0))
            return self.add(b.pow(base, b.tanh(y)), bx + 1)
        bound = {"add": bx + by, "sub": bx + by, "mul": bx * by}.get(op, max(bx, by))
        return self.add(getattr(b, op)(x, y), bound)

    def k_const(self):
        dtype = self.draw(st.sampled_from(self.dtypes))
        t = TensorType(dtype, self.shape())
        if t.rank and self.draw(st.integers(0, 3)) == 0:  # an iota, cast to a float type
            axis = self.draw(st.integers(0, t.rank - 1))
            v = self.b.cast(self.b.iota(t.with_dtype(DType.i32), axis), dtype)
            return self.add(v, float(t.shape[axis]))
        v, bound = self.const_of(t)
        return self.add(v, bound)

    def k_broadcast(self):
        x = self.pick(lambda v: v.type.rank <= self.max_rank)
        if x is None:
            return False
        n_new = self.draw(st.integers(0, self.max_rank + 1 - x.type.rank))
        out_rank = x.type.rank + n_new
        dims = sorted(self.draw(st.permutations(range(out_rank)))[:x.type.rank])
        shape = [self.draw(st.integers(1, self.max_dim)) for _ in range(out_rank)]
        for i, d in enumerate(dims):
            if x.shape[i] != 1 or self.draw(st.booleans()):
                shape[d] = x.shape[i]  # size-1 axes may stretch; others must match
        if math.prod(shape) > MAX_ELEMENTS:
            return False
        return self.add(self.b.broadcast(x, shape, dims), self.bound[x])

    def k_reduce(self):
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return False
        axes = sorted(self.draw(st.sets(st.integers(0, x.type.rank - 1), min_size=1)))
        if self.draw(st.booleans()):
            return self.add(self.b.reduce_max(x, axes), self.bound[x])
        n = math.prod(x.shape[a] for a in axes)
        return self.add(self.b.reduce_sum(x, axes), self.bound[x] * n)

    def k_reshape(self):
        x = self.pick()
        factors = _prime_factors(x.type.size)
        factors += [1] * self.draw(st.integers(0, 1))
        factors = list(self.draw(st.permutations(factors)))
        n_dims = self.draw(st.integers(0 if not factors else 1,
                                       max(1, min(len(factors), self.max_rank + 1))))
        shape = [1] * n_dims
        for f in factors:
            shape[self.draw(st.integers(0, n_dims - 1))] *= f
        if tuple(shape) == x.shape:
            return False
        return self.add(self.b.reshape(x, shape), self.bound[x])

    def k_transpose(self):
        x = self.pick(lambda v: v.type.rank >= 2)
        if x is None:
            return False
        perm = self.draw(st.permutations(range(x.type.rank)))
        return self.add(self.b.transpose(x, perm), self.bound[x])

    def k_matmul(self):
        x = self.pick(lambda v: v.type.rank >= 2)
        if x is None:
            return False
        batch, k = x.shape[:-2], x.shape[-1]
        y = self.pick(lambda v: v.type.rank == x.type.rank and v.shape[:-2] == batch
                      and v.shape[-2] == k)
        choice = self.draw(st.integers(0, 2))
        if y is not None and choice == 0:
            y, by = self.like_dtype(y, x.dtype), self.bound[y]
        elif choice == 1:
            y, by = self.b.swap_last_two(x), self.bound[x]
        else:
            n = self.draw(st.integers(1, self.max_dim))
            y, by = self.const_of(x.type.with_shape(batch + (k, n)))
        out = self.b.matmul(x, y)
        if out.type.size > MAX_ELEMENTS:
            return False
        return self.add(out, k * self.bound[x] * by)

    def k_slice(self):
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return False
        start, limit = [], []
        for d in x.shape:
            s = self.draw(st.integers(0, d - 1))
            start.append(s)
            limit.append(self.draw(st.integers(s + 1, d)))
        return self.add(self.b.slice(x, start, limit), self.bound[x])

    def k_pad(self):
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return False
        low = [self.draw(st.integers(0, 2)) for _ in x.shape]
        high = [self.draw(st.integers(0, 2)) for _ in x.shape]
        if math.prod(d + lo + hi for d, lo, hi in zip(x.shape, low, high)) > MAX_ELEMENTS:
            return False
        return self.add(self.b.pad(x, low, high), self.bound[x])

    def k_concat(self):
        x = self.pick(lambda v: v.type.rank >= 1)
        if x is None:
            return False
        axis = self.draw(st.integers(0, x.type.rank - 1))

        def fits(v):
            return v.type.rank == x.type.rank and all(
                a == c for i, (a, c) in enumerate(zip(v.shape, x.shape)) if i != axis)

        parts = [x]
        for _ in range(self.draw(st.integers(1, 2))):
            y = self.pick(fits)
            parts.append(self.like_dtype(y, x.dtype) if y is not None else x)
        out_size = x.type.size // x.shape[axis] * sum(p.shape[axis] for p in parts)
        if out_size > MAX_ELEMENTS:
            return False
        bound = max(self.bound.get(p, self.bound[x]) for p in parts)
        return self.add(self.b.concat(parts, axis), bound)

    def k_select(self):
        x = self.pick()
        y, by = self.second_operand(x)
        bound = max(self.bound[x], by)
        c1 = self.pick(lambda v: v.shape == x.shape)  # x itself qualifies
        c2, _ = self.second_operand(c1)  # same type as c1
        cond = getattr(self.b, self.draw(st.sampled_from(COMPARE_OPS)))(c1, c2)
        if self.draw(st.booleans()):
            x, y = y, x
        return self.add(self.b.select(cond, x, y), bound)

    def k_cast(self):
        x = self.pick()
        others = [d for d in self.dtypes if d is not x.dtype]
        if others:
            return self.add(self.b.cast(x, self.draw(st.sampled_from(others))), self.bound[x])
        # one float type only: a round trip through the other one (still exercises cast)
        other = DType.f64 if x.dtype is DType.f32 else DType.f32
        return self.add(self.b.cast(self.b.cast(x, other), x.dtype), self.bound[x])


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


@st.composite
def programs(draw, *, min_ops: int = 1, max_ops: int = 10, kinds=ALL_KINDS,
             dtypes=(DType.f32, DType.f64), max_params: int = 3, max_rank: int = 3,
             max_dim: int = 4, max_outputs: int = 2, with_locs: bool = True,
             unary_ops=UNARY_OPS, binary_ops=BINARY_OPS, name: str = "prog") -> Program:
    """A random valid `Program` (see the module docstring).

    min_ops/max_ops count op-kind steps (one step may emit a few ops, e.g. `log(|x|+1)`);
    `kinds` restricts the op kinds; `dtypes` are the float types values may take.
    """
    assert all(k in ALL_KINDS for k in kinds), kinds
    gen = _Gen(draw, dtypes=dtypes, max_rank=max_rank, max_dim=max_dim, with_locs=with_locs,
               unary_ops=tuple(unary_ops), binary_ops=tuple(binary_ops))
    n_params = draw(st.integers(1, max_params))
    types = [TensorType(draw(st.sampled_from(gen.dtypes)), gen.shape()) for _ in range(n_params)]
    f = Function(name, types, [f"x{i}" for i in range(n_params)])
    gen.b = Builder(f.body)
    for p in f.params:
        gen.bound[p] = INPUT_BOUND
        gen.pool.append(p)
    used = []
    n_steps = draw(st.integers(min_ops, max_ops))
    attempts = 0
    while len(used) < n_steps and attempts < 4 * n_steps + 8:
        attempts += 1
        kind = draw(st.sampled_from(kinds))
        gen.set_loc()
        n_before = len(f.body.ops)
        if getattr(gen, "k_" + kind)() is False:
            del f.body.ops[n_before:]  # drop helper ops of a step that did not apply
            continue
        used.append(kind)
    # Results: the newest value (so most ops are live) plus a few random others.
    outs = [gen.pool[-1]]
    for _ in range(draw(st.integers(0, max_outputs - 1))):
        outs.append(gen.pick())
    f.set_outputs(outs)
    verify_function(f)
    return Program(f, used)


@st.composite
def programs_with_inputs(draw, **kwargs) -> tuple[Program, list[np.ndarray]]:
    """A `(program, inputs)` pair; keyword arguments go to `programs()`."""
    prog = draw(programs(**kwargs))
    return prog, prog.make_inputs(draw(st.integers(0, 2**31 - 1)))


# A memory-planned function written by hand (two values share offset 0 in place, the
# update of %w is donated into its buffer): the reliability tests and the fuzzer edit it.
HAND_PLANNED = """\
func @f(%w: f32[16], %x: f32[16]) -> (f32[16], f32[16]) attributes {donate=[-1, 0], arena_bytes=128, naive_bytes=320, lower_bound_bytes=128} {
  %0 = exp %x : f32[16] mem[0]
  %1 = tanh %0 : f32[16] mem[64]
  %2 = add %0, %1 : f32[16] mem[0]
  %3 = mul %w, %x : f32[16] mem[64]
  %4 = sub %3, %x : f32[16] mem[%w]
  return %2, %4
}
"""
