"""Pictures of IR: graphs (`irgrad viz`), memory plans (`irgrad memplan`) and benchmark
comparisons (`irgrad bench --plot`).

- `graph_dot(f)` is Graphviz DOT text of an IR function: parameters (blue, top),
  results (green, bottom), one box per op labelled `%N = opname {attrs}` and its type,
  and one cluster per fused kernel (a `fused` op) holding its region's ops. Edges follow
  the data: a region's arguments are drawn as edges from the values the kernel reads,
  and its outputs as edges from the inner op that yields them. Names are those of the
  printed IR (`irgrad dump`), so the picture and the text can be read side by side.
  `render_dot` runs Graphviz's `dot` when it is installed and otherwise leaves the `.dot`.
- `memory_plan_figure(f, path)` draws a memory-planned function: program point (the
  index of a top-level op) across, arena offset up, one rectangle per buffer from the op
  that writes it to its last reader, with the arena size and the lower bound (the most
  bytes live at once) as lines, and below it the bytes live at every point.
- `bench_figure(rows, path)` draws the rows of `irgrad bench`: median call time and
  memory (arena, naive, lower bound) per pipeline.

matplotlib is an optional dependency (the `viz` extra); Graphviz is a system package.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import textwrap

import numpy as np

from ..errors import IrgradError
from ..ir.core import Arena, Function, InParam, Operation, Value
from ..ir.ops.kernel import kernel_scratch_bytes
from ..ir.plan import aligned, is_view, same_bytes_view, schedule_facts
from ..ir.printer import _Namer, format_attr, format_placement, format_scalar

# --- names as the printer gives them -----------------------------------------------------------


def value_names(f: Function) -> _Namer:
    """The names `irgrad dump` prints: parameters keep theirs, results and region
    arguments are numbered in print order (an op's results, then its region, then on)."""
    namer = _Namer()
    for i, p in enumerate(f.params):
        namer.param(p, i)
    stack = [iter(f.ops)]
    while stack:
        op = next(stack[-1], None)
        if op is None:
            stack.pop()
            continue
        for r in op.results:
            namer.fresh(r)
        if op.regions:
            for a in op.regions[0].args:
                if a not in namer.names:
                    namer.fresh(a)
            stack.append(iter(op.regions[0].ops))
    return namer


# --- graphs --------------------------------------------------------------------------------------

KIND_COLORS = {"matmul": "#fde3c8", "reduce": "#dde8fb", "loop": "#e3f3dc"}
KIND_BORDER = {"matmul": "#d9822b", "reduce": "#4a7bd0", "loop": "#4f9a3a"}


def _short_attrs(op: Operation, limit: int = 28) -> str:
    parts = []
    for k, v in op.attrs.items():
        if op.opname == "fused" and k == "kind":
            continue
        try:
            text = f"{k}={format_attr(v)}"
        except TypeError:
            continue
        if len(text) <= limit:
            parts.append(text)
    return " {" + ", ".join(parts) + "}" if parts else ""


def _const_text(op: Operation) -> str:
    v = op.attrs.get("value")
    arr = np.asarray(v) if v is not None else None
    dtype = op.results[0].dtype if op.results else None
    if arr is not None and arr.size and (arr.ndim == 0 or np.all(arr == arr.reshape(-1)[0])):
        return f"const {format_scalar(arr.reshape(-1)[0].item(), dtype)}"
    return "const (dense)"


def _kernel_summary(op: Operation, width: int = 40) -> str:
    """The ops of a fused kernel's region in order, repeats counted: 'matmul, add, max'."""
    counts: dict[str, int] = {}
    for o in op.regions[0].walk():
        if o.opname not in ("const",):
            counts[o.opname] = counts.get(o.opname, 0) + 1
    parts = [f"{k}×{n}" if n > 1 else k for k, n in counts.items()]
    return "\n".join(textwrap.wrap(", ".join(parts), width)) or "(empty)"


def _font(text: str, size: int, color: str | None = None) -> str:
    """An HTML-label line break and `text` (already escaped) in a smaller font."""
    c = f' color="{color}"' if color else ""
    return f'<br/><font point-size="{size}"{c}>{text}</font>'


def graph_dot(f: Function, title: str | None = None, show_types: bool = True,
              collapse: bool = False) -> str:
    """Graphviz DOT text of `f` (see the module docstring). `collapse` draws each fused
    kernel as one node listing its ops, for an overview of a large function."""
    names = value_names(f)
    esc = html.escape
    lines = [
        f"digraph {_dot_id(f.name)} {{",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=12, nodesep=0.25, ranksep=0.35, '
        'newrank=true, labelloc=t, labeljust=l];',
        '  node [shape=box, style="rounded,filled", fillcolor=white, color="#555555", '
        'fontname="Helvetica", fontsize=10, margin="0.08,0.03", height=0.3];',
        '  edge [color="#777777", arrowsize=0.6];',
    ]
    summary = []
    if "arena_bytes" in f.attrs:
        a = f.attrs
        summary.append(f"arena {_kib(a['arena_bytes'])}, naive {_kib(a['naive_bytes'])}, "
                       f"lower bound {_kib(a['lower_bound_bytes'])}")
    n_fused = sum(1 for op in f.ops if op.opname == "fused")
    summary.append(f"{len(f.ops)} top-level ops, {f.num_ops()} in all, {n_fused} fused kernels")
    lines.append(f'  label=<<b>{esc(title or "@" + f.name)}</b>'
                 f'{_font(esc("; ".join(summary)), 10)}>;')

    node_of: dict[Value, str] = {}   # value -> the node that produces it
    stores: dict[Value, str] = {}    # a region's yielded value -> the kernel results it becomes
    edges: list[str] = []
    counter = [0]

    def new_id(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def types(values) -> str:
        if not show_types:
            return ""
        return _font(esc(", ".join(str(v.type) for v in values)), 9, "#555555")

    def mem(op) -> str:
        if op.mem is None:
            return ""
        return _font(esc(format_placement(op.mem, names).strip()), 8, "#8a5a00")

    def kernel_style(kind) -> str:
        return (f'fillcolor="{KIND_COLORS.get(kind, "#eeeeee")}", '
                f'color="{KIND_BORDER.get(kind, "#888888")}", penwidth=1.5')

    def connect(op, nid, arg_map):
        for v in op.operands:
            src = node_of.get(arg_map.get(v, v))
            if src is not None:
                edges.append(f"  {src} -> {nid};")

    # parameters, in one row at the top
    lines.append("  subgraph params { rank=source;")
    for p in f.params:
        nid = node_of[p] = new_id("p")
        lines.append(f'    {nid} [shape=box, style="filled", fillcolor="#cfe2f3", color="#3d6fa8", '
                     f'label=<<b>{esc(names(p))}</b>{types([p])}>];')
    lines.append("  }")

    def emit_block(ops, indent: str, arg_map: dict[Value, Value]):
        for op in ops:
            if op.opname == "fused" and op.regions and not collapse:
                emit_fused(op, indent, arg_map)
                continue
            nid = new_id("n")
            for r in op.results:
                node_of[r] = nid
            res = esc(", ".join(names(r) for r in op.results))
            if op.opname == "fused" and op.regions:  # collapsed: one node per kernel
                kind = str(op.attrs.get("kind", "loop"))
                ops_text = "<br/>".join(esc(x) for x in _kernel_summary(op).splitlines())
                lines.append(f'{indent}{nid} [{kernel_style(kind)}, label=<{res} = <b>fused</b>'
                             f'&#160;({esc(kind)} kernel){_font(ops_text, 9)}{types(op.results)}'
                             f'{mem(op)}>];')
            elif op.opname == "const":
                lines.append(f'{indent}{nid} [shape=plaintext, style="", fontsize=9, '
                             f'fontcolor="#666666", label=<{res} = {esc(_const_text(op))}>];')
            else:
                stored, extra = stores.get(op.results[0], ""), ""
                if stored:  # the value a fused kernel writes to memory
                    stored = f' <font color="#8a5a00">→ {esc(stored)}</font>'
                    extra = ", penwidth=2"
                lines.append(f'{indent}{nid} [label=<{res} = <b>{esc(op.opname)}</b>'
                             f'{esc(_short_attrs(op))}{stored}{types(op.results)}{mem(op)}>'
                             f'{extra}];')
            connect(op, nid, arg_map)

    def emit_fused(op: Operation, indent: str, arg_map: dict[Value, Value]):
        region = op.regions[0]
        kind = str(op.attrs.get("kind", "loop"))
        res = esc(", ".join(names(r) for r in op.results))
        place = f" {format_placement(op.mem, names).strip()}" if op.mem is not None else ""
        result_types = ", ".join(str(t) for t in op.result_types)
        lines.append(f"{indent}subgraph {new_id('cluster_')} {{")
        lines.append(f'{indent}  label=<<b>{res} = fused</b>&#160;({esc(kind)} kernel)'
                     f'{_font(esc(result_types + place), 9)}>;')
        lines.append(f'{indent}  style="rounded,filled"; {kernel_style(kind).replace(", ", "; ")}; '
                     f'fontsize=10; labeljust=l;')
        inner = dict(arg_map)
        for r, y in zip(op.results, region.outputs):
            stores[y] = (stores[y] + ", " if y in stores else "") + names(r)
        for a, outer in zip(region.args, op.operands):
            inner[a] = arg_map.get(outer, outer)
        emit_block(region.ops, indent + "  ", inner)
        lines.append(f"{indent}}}")
        # the kernel's results come from the inner ops that yield them
        for r, y in zip(op.results, region.outputs):
            y = inner.get(y, y)
            if y in node_of:
                node_of[r] = node_of[y]

    emit_block(f.ops, "  ", {})
    # results, in one row at the bottom
    lines.append("  subgraph results { rank=sink;")
    donate = f.attrs.get("donate", ())
    for i, v in enumerate(f.outputs):
        nid = new_id("r")
        # a training step's new parameters and optimizer state overwrite the old ones
        into = ""
        if i < len(donate) and 0 <= donate[i] < len(f.params):
            into = f" → {esc(names(f.params[donate[i]]))}"
        lines.append(f'    {nid} [shape=box, style="filled", fillcolor="#d5ecd4", color="#3f8f3f", '
                     f'label=<<b>result {i}</b>{into}{types([v])}>];')
        if v in node_of:
            edges.append(f"  {node_of[v]} -> {nid};")
    lines.append("  }")
    lines.extend(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_id(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render_dot(dot_text: str, out_path: str, timeout: float = 120) -> tuple[str, str | None]:
    """Write `out_path` from DOT text: by Graphviz when the extension asks for a picture
    and `dot` is installed. Returns (the path written, a note for the user or None)."""
    root, ext = os.path.splitext(out_path)
    fmt = ext.lstrip(".").lower()
    if fmt in ("dot", "gv", ""):
        path = out_path if fmt else out_path + ".dot"
        _write(path, dot_text)
        return path, None
    if not dot_available():
        path = root + ".dot"
        _write(path, dot_text)
        return path, (f"Graphviz 'dot' is not installed, so {out_path} was not drawn; wrote the "
                      f"graph to {path} instead (install Graphviz, e.g. `apt-get install "
                      f"graphviz`, then `dot -T{fmt} {path} -o {out_path}`)")
    try:
        r = subprocess.run(["dot", f"-T{fmt}", "-o", out_path], input=dot_text, text=True,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        path = root + ".dot"
        _write(path, dot_text)
        return path, f"Graphviz took over {timeout:.0f} s; wrote the graph to {path} instead"
    if r.returncode != 0:
        path = root + ".dot"
        _write(path, dot_text)
        msg = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise IrgradError(f"Graphviz could not draw {out_path} ({msg}); the graph is in {path}")
    return out_path, None


def _write(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


# --- matplotlib ----------------------------------------------------------------------------------

def _matplotlib(what: str):
    """matplotlib's Figure class and Agg canvas (no pyplot, no display needed); matplotlib
    is an optional dependency (the `viz` extra), imported only when a figure is drawn."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise IrgradError(f"{what} needs matplotlib, which is not installed: "
                          f"pip install 'irgrad[viz]' (or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg


def _save(fig, canvas_cls, path: str) -> str:
    canvas_cls(fig)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    try:
        fig.savefig(path, dpi=fig.dpi)
    except ValueError as e:  # unknown extension
        raise IrgradError(f"cannot write {path}: {e}") from None
    return path


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def memory_intervals(f: Function) -> list[dict]:
    """The buffers of a memory plan: one dict per arena placement (views of a buffer and
    results written into parameter buffers are left out)."""
    if "arena_bytes" not in f.attrs:
        raise IrgradError(f"@{f.name} has no memory plan (run a pipeline that ends with "
                          f"plan-memory)")
    names = value_names(f)
    _, last, T = schedule_facts(f)
    out = []
    for t, op in enumerate(f.ops):
        if op.mem is None:
            continue
        kind = str(op.attrs.get("kind", "loop")) if op.opname == "fused" else "op"
        if same_bytes_view(op):
            continue  # a view: the same bytes as its operand
        for r, p in zip(op.results, op.mem.results):
            if not isinstance(p, Arena):
                continue  # written into a parameter's buffer, or a view of one
            out.append({"name": names(r), "offset": p.offset, "size": r.type.nbytes, "start": t,
                        "end": last.get(r, t), "kind": kind, "type": str(r.type),
                        "result": r in f.outputs, "op": op.opname})
        for off in op.mem.scratch:
            out.append({"name": "scratch", "offset": off, "size": kernel_scratch_bytes(op),
                        "start": t, "end": t, "kind": "scratch", "type": "", "result": False,
                        "op": op.opname})
    return out


MEM_COLORS = {"matmul": "#f2a65a", "reduce": "#7fa7e6", "loop": "#8cc97a", "op": "#c7c7c7",
              "scratch": "#e07b7b"}
MEM_LABELS = {"matmul": "matmul kernel", "reduce": "reduction kernel", "loop": "loop kernel",
              "op": "single op", "scratch": "kernel scratch"}


def memory_plan_figure(f: Function, path: str, title: str | None = None) -> str:
    """Draw the memory plan of `f` (see the module docstring) into `path`."""
    Figure, Canvas = _matplotlib("irgrad memplan")
    from matplotlib.patches import Patch, Rectangle  # (matplotlib is there: see above)
    bufs = memory_intervals(f)
    T = len(f.ops)
    if T == 0:
        raise IrgradError(f"@{f.name} has no ops, so no memory plan to draw")
    arena = int(f.attrs["arena_bytes"])
    lower = int(f.attrs["lower_bound_bytes"])
    naive = int(f.attrs["naive_bytes"])
    unit, scale = (("MiB", 1 << 20) if arena >= 8 << 20 else ("KiB", 1 << 10) if arena >= 4096
                   else ("bytes", 1))

    width = min(24.0, max(9.0, 0.16 * T + 6))
    fig = Figure(figsize=(width, 7.5), dpi=110, layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[3.2, 1])
    ax = fig.add_subplot(gs[0])
    ax2 = fig.add_subplot(gs[1], sharex=ax)

    half = 0.28  # a buffer used only where it is made still gets a visible width
    min_h = max(arena, 1) * 0.004  # and a tiny one a visible height
    for b in bufs:
        x0 = b["start"] - (half if b["end"] == b["start"] else 0)
        x1 = b["end"] + (half if b["end"] == b["start"] else 0)
        if b["result"]:
            x1 = T - 0.5
        rect = Rectangle((x0, b["offset"] / scale), x1 - x0, max(b["size"], min_h) / scale,
                         facecolor=MEM_COLORS[b["kind"]], edgecolor="#333333", linewidth=0.6,
                         alpha=0.9, hatch="//" if b["kind"] == "scratch" else None)
        ax.add_patch(rect)
        b["_rect"] = (x0, x1)
    ax.axhline(arena / scale, color="#222222", linewidth=1.2)
    ax.axhline(lower / scale, color="#b22222", linewidth=1.2, linestyle="--")
    ax.set_xlim(-0.7, T - 0.3)
    top = max(arena, 1) / scale
    ax.set_ylim(0, top * 1.12)
    # the two lines' names, right of the plot (one label when they coincide)
    ytx = ax.get_yaxis_transform()
    if abs(arena - lower) <= 0.06 * max(arena, 1):
        ax.text(1.005, arena / scale, f"arena {_fmt_bytes(arena)}\n= lower bound" if arena == lower
                else f"arena {_fmt_bytes(arena)}\nlower bound\n{_fmt_bytes(lower)}", transform=ytx,
                ha="left", va="center", fontsize=8, color="#222222")
    else:
        ax.text(1.005, arena / scale, f"arena\n{_fmt_bytes(arena)}", transform=ytx, ha="left",
                va="center", fontsize=8, color="#222222")
        ax.text(1.005, lower / scale, f"lower bound\n{_fmt_bytes(lower)}", transform=ytx,
                ha="left", va="center", fontsize=8, color="#b22222")
    ax.set_ylabel(f"arena offset ({unit})")
    plural = "s" * (len(bufs) != 1)
    ax.set_title(title or f"memory plan of @{f.name}: {len(bufs)} buffer{plural} in an arena of "
                 f"{_fmt_bytes(arena)} (naive: {_fmt_bytes(naive)}, lower bound: "
                 f"{_fmt_bytes(lower)})",
                 fontsize=11, loc="left")
    ax.grid(axis="y", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    kinds = [k for k in MEM_COLORS if any(b["kind"] == k for b in bufs)]
    handles = [Patch(facecolor=MEM_COLORS[k], edgecolor="#333333", label=MEM_LABELS[k],
                     hatch="//" if k == "scratch" else None) for k in kinds]
    donated = sum(1 for op in f.ops if op.mem for p in op.mem.results if isinstance(p, InParam)
                  and not (is_view(op) and op.operands[0] is p.param))
    if donated:
        handles.append(Patch(facecolor="white", edgecolor="white",
                             label=f"+{donated} results written into parameter buffers"))
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=min(len(handles), 6),
              frameon=True, framealpha=0.9)

    # labels where they fit
    canvas = Canvas(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    to_px = ax.transData
    for b in bufs:
        if b["kind"] == "scratch":
            continue
        x0, x1 = b["_rect"]
        (px0, py0), (px1, py1) = to_px.transform([(x0, b["offset"] / scale),
                                                  (x1, (b["offset"] + b["size"]) / scale)])
        w, h = px1 - px0, py1 - py0
        for text in (f"{b['name']} {b['type']}", b["name"]):
            t = ax.text((x0 + x1) / 2, (b["offset"] + b["size"] / 2) / scale, text, ha="center",
                        va="center", fontsize=7, clip_on=True)
            bb = t.get_window_extent(renderer)
            if bb.width + 4 <= w and bb.height + 2 <= h:
                break
            t.remove()

    # bytes live at every program point
    live = np.zeros(T)
    for t in range(T):
        spans = sorted((b["offset"], b["offset"] + aligned(b["size"])) for b in bufs
                       if b["start"] <= t <= (T if b["result"] else b["end"]))
        total, cur_lo, cur_hi = 0, None, None
        for lo, hi in spans:
            if cur_hi is None or lo > cur_hi:
                if cur_hi is not None:
                    total += cur_hi - cur_lo
                cur_lo, cur_hi = lo, hi
            else:
                cur_hi = max(cur_hi, hi)
        if cur_hi is not None:
            total += cur_hi - cur_lo
        live[t] = total
    xs = np.arange(T)
    ax2.bar(xs, live / scale, width=1.0, color="#9bb7d4", edgecolor="#3d6fa8", linewidth=0.5)
    ax2.axhline(lower / scale, color="#b22222", linewidth=1.2, linestyle="--")
    ax2.axhline(arena / scale, color="#222222", linewidth=1.2)
    ax2.set_ylim(0, top * 1.12)
    ax2.set_ylabel(f"live ({unit})")
    ax2.set_xlabel("program point (index of the top-level op)")
    ax2.grid(axis="y", color="#eeeeee", linewidth=0.6)
    if T <= 48:
        names = value_names(f)
        ticks = [f"{', '.join(names(r) for r in op.results)} {op.opname}"
                 + (f"·{op.attrs.get('kind')}" if op.opname == "fused" else "") for op in f.ops]
        ax2.set_xticks(xs)
        ax2.set_xticklabels(ticks, rotation=60, ha="right", fontsize=7)
    ax.tick_params(labelbottom=False)
    return _save(fig, Canvas, path)


def _wrap_pipeline(p: str, width: int = 18) -> str:
    return ("\n".join(textwrap.wrap(p.replace(",", ", "), width, break_on_hyphens=False))
            if len(p) > width else p)


def bench_figure(rows: list[dict], path: str, title: str | None = None) -> str:
    """Bars of median call time and of memory per pipeline (rows of `irgrad bench`)."""
    Figure, Canvas = _matplotlib("irgrad bench --plot")
    if not rows:
        raise IrgradError("no pipelines to plot")
    labels = [_wrap_pipeline(r["pipeline"]) for r in rows]
    n = len(rows)
    fig = Figure(figsize=(max(9.0, 3.0 + 2.6 * n), 4.8), dpi=110, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.4])
    x = np.arange(n)

    times = np.array([r["step_us_median"] for r in rows], float)
    t_unit, t_scale = ("ms", 1e3) if times.max() >= 1e4 else ("µs", 1.0)
    bars = ax1.bar(x, times / t_scale, color="#5b8fd6", edgecolor="#2d5a9c", width=0.6)
    for b, r in zip(bars, rows):
        c = r["compile_ms"]
        compile_text = f"{c / 1e3:.1f} s" if c >= 1000 else f"{c:.0f} ms"
        ax1.annotate(f"{r['step_us_median'] / t_scale:.3g} {t_unit}\n{r['kernels']} kernels\n"
                     f"compile {compile_text}",
                     (b.get_x() + b.get_width() / 2, b.get_height()), xytext=(0, 3),
                     textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
    ax1.set_ylim(0, times.max() / t_scale * 1.45 if times.max() > 0 else 1)
    ax1.set_xticks(x)
    ax1.set_xticklabels(labels, fontsize=8)
    ax1.set_ylabel(f"median call time ({t_unit})")
    ax1.set_title("time (lower is better)", fontsize=10)
    ax1.grid(axis="y", color="#eeeeee")
    ax1.set_axisbelow(True)

    mem_keys = [("arena_bytes", "arena (planned)", "#f2a65a"), ("naive_bytes", "naive", "#c7c7c7"),
                ("lower_bound_bytes", "lower bound", "#8cc97a")]
    biggest = max(max(r[k] for k, _, _ in mem_keys) for r in rows)
    m_unit, m_scale = (("MiB", 1 << 20) if biggest >= 8 << 20 else ("KiB", 1 << 10)
                       if biggest >= 4096 else ("bytes", 1))
    w = 0.26
    for j, (key, label, color) in enumerate(mem_keys):
        vals = np.array([r[key] for r in rows], float) / m_scale
        bs = ax2.bar(x + (j - 1) * w, vals, w, label=label, color=color, edgecolor="#444444",
                     linewidth=0.6)
        for b, v in zip(bs, vals):
            ax2.annotate(f"{v:.0f}" if v >= 100 else f"{v:.3g}", (b.get_x() + b.get_width() / 2, v),
                         xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                         fontsize=7)
    ax2.set_ylim(0, biggest / m_scale * 1.2 if biggest else 1)
    ax2.set_xticks(x)
    ax2.set_xticklabels(labels, fontsize=8)
    ax2.set_ylabel(f"intermediate memory ({m_unit})")
    ax2.set_title("memory (lower is better)", fontsize=10)
    ax2.legend(fontsize=8, loc="upper right")
    ax2.grid(axis="y", color="#eeeeee")
    ax2.set_axisbelow(True)
    backend = rows[0].get("backend", "")
    on = f" on the {backend} backend" if backend else ""
    fig.suptitle(title or f"pipelines compared{on}",
                 fontsize=11)
    return _save(fig, Canvas, path)
