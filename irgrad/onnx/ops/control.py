"""Control flow: If, Loop and Scan, imported without control-flow ops in the IR.

irgrad's IR is a straight-line dataflow graph (control-flow ops are a later issue), so
the importer resolves control flow while tracing:

- If with a condition known at import imports just the taken branch. With a computed
  condition both branches are imported and each output is selected elementwise,
  `where(cond, then, else)`: both branches run (no side effects in ONNX, so only the cost
  differs), which needs outputs of one shape and dtype in both branches; otherwise the
  condition must be known at import.
- Loop unrolls: the trip count and the initial condition must be known at import, and
  the condition each iteration produces should fold to a constant (the usual
  `cond_out = Identity(cond_in)` does, since the iteration number and the incoming
  condition are passed as constants). Scan outputs are stacked along a new axis 0. A
  computed condition (a while loop on values) is supported for loops without scan
  outputs: all trip-count iterations run, each keeping its results only while the
  condition holds, `state = where(active, new, state)`.
- Scan unrolls over the (static) length of its scan inputs.

A body's iteration counter is a constant, so index arithmetic on it (a Slice at the
iteration number) folds at import. Subgraphs see the values of the enclosing graphs
(`node.run_graph` scopes them).
"""

from __future__ import annotations

import numpy as np

from ...errors import OnnxError
from ...frontend import library as L
from .. import dtypes
from ..graph import NeedsConstant, Val
from . import onnx_op

# An unrolled Loop whose trip count is only bounded by its condition (M absent or huge)
# stops with an error after this many iterations rather than tracing forever.
MAX_UNROLL = 10_000


def _cond_value(v: Val) -> bool | None:
    """A condition's value at import, None when it is computed from inputs."""
    if v is None or v.c is None:
        return None
    c = np.asarray(v.c).reshape(-1)
    return bool(c[0]) if c.size else None


def _deps(v: Val, *sources: Val | None) -> Val:
    """v, depending on the graph inputs that `sources` depend on (so that a node needing
    its value at import can name them; see Node.const)."""
    if v.c is None:
        v.deps = tuple(dict.fromkeys(d for u in (v,) + sources if u is not None for d in u.deps))
    return v


def _same_type(a: Val, b: Val) -> bool:
    return a is not None and b is not None and a.shape == b.shape and a.dtype is b.dtype


# --- If -----------------------------------------------------------------------------------

@onnx_op("If", fold=False)
def if_(node):
    then_g, else_g = node.attr("then_branch"), node.attr("else_branch")
    cv = node.val(0)
    known = _cond_value(cv)
    if known is not None:
        return node.run_graph(then_g if known else else_g, [])
    # a computed condition: run both branches, select elementwise
    try:
        outs_t = node.run_graph(then_g, [])
        outs_f = node.run_graph(else_g, [])
    except NeedsConstant:
        raise
    except OnnxError as e:
        _fix_condition(node)
        raise node.fail(f"the condition is computed from inputs and a branch cannot be "
                        f"imported ({e})") from None
    if len(outs_t) != len(outs_f):
        raise node.error(f"the branches have {len(outs_t)} and {len(outs_f)} outputs")
    bad = [i for i, (a, b) in enumerate(zip(outs_t, outs_f)) if not _same_type(a, b)]
    if bad:
        _fix_condition(node)
        a, b = outs_t[bad[0]], outs_f[bad[0]]
        raise node.fail(f"the condition is computed from inputs and output {bad[0]} differs "
                        f"between the branches ({_desc(a)} and {_desc(b)}), so it cannot be "
                        f"selected elementwise")
    cond = L.reshape(cv.tensor(), ())
    if cond.dtype is not dtypes.compute_dtype(dtypes.BOOL):
        cond = cond != 0
    res = []
    for a, b in zip(outs_t, outs_f):
        if a.c is not None and b.c is not None and np.array_equal(a.c, b.c):
            res.append(a)
        else:
            res.append(_deps(node.out(L.where(cond, a.tensor(), b.tensor()), a.elem), cv, a, b))
    return res


def _fix_condition(node):
    """A condition computed from graph inputs or parameters: ask for their values
    (NeedsConstant), so that the model is imported again with just the taken branch."""
    if node.val(0).deps:
        node.const(0)


def _masked(node, active, new: Val, old: Val) -> Val:
    if not _same_type(new, old):
        raise node.fail(f"a loop-carried value changes from {_desc(old)} to {_desc(new)} under a "
                        f"computed loop condition, so it cannot be selected")
    return _deps(node.out(L.where(active, new.tensor(), old.tensor()), old.elem), new, old)


def _desc(v: Val | None) -> str:
    if v is None:
        return "no value"
    return f"{dtypes.name(v.elem)}{list(v.shape)}"


# --- stacking scan outputs -------------------------------------------------------------------

def _stack(node, vals: list[Val], axis: int) -> Val:
    """Per-iteration values stacked along a new `axis` (ONNX's scan outputs)."""
    first = vals[0]
    for v in vals[1:]:
        if v.shape != first.shape or v.dtype is not first.dtype:
            raise node.fail(f"a scan output changes shape or type between iterations "
                            f"({_desc(first)} then {_desc(v)}); it cannot be stacked")
    ax = axis + len(first.shape) + 1 if axis < 0 else axis
    if not 0 <= ax <= len(first.shape):
        raise node.error(f"scan output axis {axis} is out of range for rank-{len(first.shape)} values")
    if all(v.c is not None for v in vals):
        return Val(c=np.stack([v.c for v in vals], axis=ax), elem=first.elem)
    return _deps(node.out(L.stack([v.tensor() for v in vals], axis=ax), first.elem), *vals)


def _empty_scan_output(node, graph, j: int, axis: int = 0) -> Val:
    """A scan output of zero iterations: its shape must come from the body's output type."""
    vi = graph.output[j]
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape") or None in dims:
        raise node.fail(f"zero iterations and the body output '{vi.name}' has no static shape, "
                        f"so the shape of its scan output is unknown")
    ax = axis + len(dims) + 1 if axis < 0 else axis
    shape = dims[:ax] + [0] + dims[ax:]
    return Val(c=np.zeros(shape, dtype=dtypes.compute_dtype(tt.elem_type, f"{node.desc}: ").np),
               elem=tt.elem_type)


# --- Loop ---------------------------------------------------------------------------------

@onnx_op("Loop", fold=False)
def loop(node):
    body = node.attr("body")
    n_state = len(body.input) - 2
    n_scan = len(body.output) - 1 - n_state
    if n_state < 0 or n_scan < 0:
        raise node.error(f"the body has {len(body.input)} inputs and {len(body.output)} outputs")
    state = [node.vals[i] if i < len(node.vals) else None for i in range(2, 2 + n_state)]
    if len(node.vals) - 2 != n_state:
        raise node.error(f"{len(node.vals) - 2} loop-carried inputs for a body of {n_state}")
    trip = None
    if node.has(0):
        trip = int(np.asarray(node.const(0)).reshape(-1)[0])
    cond = True
    if node.has(1):
        cond = bool(np.asarray(node.const(1)).reshape(-1)[0])  # unrolling needs it at import
    it_elem = body.input[0].type.tensor_type.elem_type or dtypes.INT64
    it_np = dtypes.compute_dtype(it_elem, f"{node.desc}: ").np
    scans: list[list[Val]] = [[] for _ in range(n_scan)]
    active = None  # once the condition is computed: whether the loop is still running
    conds: list[Val] = []  # (the conditions `active` is made of)
    i = 0
    while (cond or active is not None) and (trip is None or i < trip):
        if i >= MAX_UNROLL:
            raise node.fail(f"the loop runs more than {MAX_UNROLL} iterations; irgrad unrolls "
                            f"loops at import")
        outs = node.run_graph(body, [Val(c=np.asarray(i, dtype=it_np), elem=it_elem),
                                     Val(c=np.asarray(True))] + state)
        new, c = outs[1:1 + n_state], _cond_value(outs[0])
        i += 1
        if active is None and c is not None:
            cond, state = c, new
            for k in range(n_scan):
                scans[k].append(outs[1 + n_state + k])
            continue
        # A computed condition: run all `trip` iterations, each one's results kept only
        # while the condition holds (state = where(active, new, state)). Scan outputs
        # would have a length known only at run time.
        if trip is None or trip > MAX_UNROLL or n_scan:
            raise node.fail(f"the loop condition of iteration {i - 1} is computed from inputs; "
                            f"irgrad unrolls loops and then needs a trip count (at most "
                            f"{MAX_UNROLL}) and no scan outputs")
        if active is not None:
            state = [_deps(_masked(node, active, a, b), *conds) for a, b in zip(new, state)]
        else:
            state = new
        if c is not None and not c:
            break
        cv = L.reshape(outs[0].tensor(), ())
        active = cv if active is None else active & cv
        conds.append(outs[0])
    res = list(state)
    for k in range(n_scan):
        res.append(_stack(node, scans[k], 0) if scans[k]
                   else _empty_scan_output(node, body, 1 + n_state + k))
    return res


# --- Scan ---------------------------------------------------------------------------------

def _norm_axis(node, axis: int, rank: int, what: str) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise node.error(f"{what} axis {axis} is out of range for rank {rank}")
    return a


def _take(v: Val, axis: int, t: int) -> Val:
    """Element t of v along `axis`, that axis removed."""
    if v.c is not None:
        return Val(c=np.take(v.c, t, axis=axis), elem=v.elem)
    idx = (slice(None),) * axis + (t,)
    return _deps(Val(t=v.tensor()[idx], elem=v.elem), v)


def _scan_run(node, body, states: list[Val], xs: list[Val], in_axes, in_dirs, n_out_scan):
    """One scan over the sequence: (final states, per-iteration scan outputs)."""
    lengths = {x.shape[a] for x, a in zip(xs, in_axes)}
    if len(lengths) != 1:
        raise node.error(f"the scan inputs have different sequence lengths {sorted(lengths)}")
    n = lengths.pop()
    per_iter: list[list[Val]] = [[] for _ in range(n_out_scan)]
    for t in range(n):
        slices = [_take(x, a, n - 1 - t if d else t) for x, a, d in zip(xs, in_axes, in_dirs)]
        outs = node.run_graph(body, states + slices)
        states = outs[:len(states)]
        for k in range(n_out_scan):
            per_iter[k].append(outs[len(states) + k])
    return states, per_iter


@onnx_op("Scan", since=9, fold=False)
def scan(node):
    body = node.attr("body")
    m = node.attr("num_scan_inputs")
    n_state = len(node.vals) - m
    n_out_scan = len(body.output) - n_state
    if n_state < 0 or n_out_scan < 0 or len(body.input) != len(node.vals):
        raise node.error(f"{len(node.vals)} inputs with num_scan_inputs={m} do not fit a body "
                         f"of {len(body.input)} inputs and {len(body.output)} outputs")
    states = [node.val(i) for i in range(n_state)]
    xs = [node.val(n_state + j) for j in range(m)]
    in_axes = node.attr("scan_input_axes", [0] * m)
    in_dirs = node.attr("scan_input_directions", [0] * m)
    out_axes = node.attr("scan_output_axes", [0] * n_out_scan)
    out_dirs = node.attr("scan_output_directions", [0] * n_out_scan)
    if len(in_axes) != m or len(in_dirs) != m or len(out_axes) != n_out_scan or len(out_dirs) != n_out_scan:
        raise node.error("scan_input_axes/directions need one entry per scan input and "
                         "scan_output_axes/directions one per scan output")
    in_axes = [_norm_axis(node, a, len(x.shape), "scan input") for a, x in zip(in_axes, xs)]
    states, per_iter = _scan_run(node, body, states, xs, in_axes, in_dirs, n_out_scan)
    res = list(states)
    for k in range(n_out_scan):
        seq = per_iter[k][::-1] if out_dirs[k] else per_iter[k]
        res.append(_stack(node, seq, out_axes[k]) if seq
                   else _empty_scan_output(node, body, n_state + k, out_axes[k]))
    return res


@onnx_op("Scan", since=8, fold=False)
def scan8(node):
    # opset 8: a batch axis 0 on every input and output, scan inputs [batch, seq, ...],
    # an optional sequence_lens input first and one `directions` attribute for the inputs
    body = node.attr("body")
    m = node.attr("num_scan_inputs")
    vals = node.vals[1:]
    n_state = len(vals) - m
    n_out_scan = len(body.output) - n_state
    if n_state < 0 or n_out_scan < 0 or len(body.input) != len(vals):
        raise node.error(f"{len(vals)} inputs with num_scan_inputs={m} do not fit a body "
                         f"of {len(body.input)} inputs and {len(body.output)} outputs")
    if any(v is None for v in vals):
        raise node.error("state and scan inputs are required")
    xs = vals[n_state:]
    if not xs or any(len(x.shape) < 2 for x in xs):
        raise node.error("opset-8 Scan needs scan inputs of shape [batch, sequence, ...]")
    batch, seq = xs[0].shape[0], xs[0].shape[1]
    if node.has(0):
        lens = np.asarray(node.const(0)).reshape(-1)
        if lens.size != batch or (lens != seq).any():
            raise node.fail(f"sequence_lens {lens.tolist()} shorter than the sequence ({seq}) "
                            f"are not supported (irgrad's shapes are static)")
    dirs = node.attr("directions", [0] * m)
    states_out: list[list[Val]] = [[] for _ in range(n_state)]
    scans_out: list[list[Val]] = [[] for _ in range(n_out_scan)]
    for b in range(batch):
        st = [_take(v, 0, b) for v in vals[:n_state]]
        xb = [_take(x, 0, b) for x in xs]
        st, per_iter = _scan_run(node, body, st, xb, [0] * m, dirs, n_out_scan)
        for k, v in enumerate(st):
            states_out[k].append(v)
        for k in range(n_out_scan):
            scans_out[k].append(_stack(node, per_iter[k], 0) if per_iter[k]
                                else _empty_scan_output(node, body, n_state + k))
    return [_stack(node, s, 0) for s in states_out] + [_stack(node, s, 0) for s in scans_out]
