"""Compare pass pipelines on one function: ops, kernels, memory and time (`irgrad bench`).

For every pipeline the function is optimized, memory-planned and compiled for the chosen
backend, then called on fixed random inputs; the median of many calls is reported with
the compile time. Memory is reported from the plan: `arena_bytes` (what the plan
allocates), `naive_bytes` (one buffer per intermediate value) and `lower_bound_bytes`
(the most intermediate bytes live at once).
"""

from __future__ import annotations

import time

import numpy as np

from ..api import as_function, compile as ig_compile
from ..errors import IrgradError
from ..ir.core import Function as IrFunction
from ..ir.plan import same_bytes_view
from ..passes.manager import run_pipeline
from ..pytree import unflatten

KEYS = ("pipeline", "ops", "kernels", "arena_bytes", "naive_bytes", "lower_bound_bytes",
        "compile_ms", "step_us_median")


def random_inputs(irf: IrFunction, seed: int = 0) -> list[np.ndarray]:
    """Normal floats, zero integers, false booleans: valid for gathers and labels alike."""
    rng = np.random.default_rng(seed)
    out = []
    for p in irf.params:
        t = p.type
        if t.dtype.is_float:
            out.append(rng.standard_normal(t.shape).astype(t.dtype.np))
        else:
            out.append(np.zeros(t.shape, t.dtype.np))
    return out


def count_kernels(planned: IrFunction) -> int:
    """Top-level ops that run code: everything but constants and in-place views."""
    return sum(1 for op in planned.ops if op.opname != "const" and not same_bytes_view(op))


def bench_function(fn, pipelines, backend: str = "cpu", repeat: int = 0, threads: int | None = None,
                   min_seconds: float = 1.0, seed: int = 0) -> list[dict]:
    """One row per pipeline with the keys of `KEYS` (and a few more)."""
    fn = as_function(fn)
    call_args = unflatten(fn.in_tree, random_inputs(fn.ir, seed))
    rows = []
    for pipe in pipelines:
        t0 = time.perf_counter()
        opts = {"threads": threads} if backend != "numpy" and threads else {}
        compiled = ig_compile(fn, backend=backend, pipeline=pipe, **opts)
        compile_ms = (time.perf_counter() - t0) * 1e3
        planned = getattr(compiled, "ir", None)
        if planned is None or "arena_bytes" not in planned.attrs:
            planned = run_pipeline(compiled.ir if planned is not None else fn.ir, "plan-memory")
        compiled(*call_args)  # warm up
        times = _time_calls(lambda: compiled(*call_args), repeat, min_seconds)
        rows.append({
            "pipeline": pipe,
            "ops": planned.num_ops(),
            "top_level_ops": len(planned.ops),
            "kernels": count_kernels(planned),
            "arena_bytes": int(planned.attrs["arena_bytes"]),
            "naive_bytes": int(planned.attrs["naive_bytes"]),
            "lower_bound_bytes": int(planned.attrs["lower_bound_bytes"]),
            "compile_ms": round(compile_ms, 2),
            "step_us_median": round(float(np.median(times)) * 1e6, 2),
            "calls": len(times),
            "backend": backend,
        })
    return rows


def _time_calls(call, repeat: int, min_seconds: float) -> list[float]:
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if repeat and len(times) >= repeat:
            break
        if not repeat and (time.perf_counter() - start >= min_seconds and len(times) >= 5
                           or len(times) >= 10000):
            break
    return times


def format_table(rows: list[dict]) -> str:
    if not rows:
        raise IrgradError("no pipelines to report")
    head = ["pipeline", "ops", "kernels", "arena KiB", "naive KiB", "lower KiB", "compile ms",
            "median us"]
    body = [[r["pipeline"], str(r["ops"]), str(r["kernels"]), f"{r['arena_bytes'] / 1024:.1f}",
             f"{r['naive_bytes'] / 1024:.1f}", f"{r['lower_bound_bytes'] / 1024:.1f}",
             f"{r['compile_ms']:.1f}", f"{r['step_us_median']:.1f}"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    for b in body:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))))
    return "\n".join(lines) + "\n"
