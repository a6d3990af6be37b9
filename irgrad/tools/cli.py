"""The `irgrad` command: dump, opt, check, run, bench, viz, memplan, train (see `irgrad --help`).

A target is `FILE.py:NAME` (a traced Function), `FILE.ir` (for run) or `MODEL.onnx`: an
ONNX model imported by `ig.onnx.load` as the Function `fn(params, *inputs)`, its symbolic
dimensions fixed by `--input-shape NAME=1x3x224x224` (repeatable).

Bad input ends with exit status 1 and one readable message (no traceback); wrong usage
with status 2. Set IRGRAD_TRACEBACK=1 to see the traceback of an internal error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import traceback

import numpy as np

from ..api import compile as ig_compile
from ..backends import backend_names, emit_kinds, get_backend
from ..errors import IrgradError, ParseError, VerifyError
from ..frontend.function import Function, function
from ..ir.core import Module
from ..ir.parser import parse
from ..ir.plan import has_plan
from ..ir.printer import print_module
from ..passes.manager import run_pipeline
from ..transforms.autodiff import grad_all_floats
from .bench import bench_function, format_table, random_inputs
from .plots import bench_figure, graph_dot, memory_plan_figure, render_dot
from .train import add_common_arguments, int_at_least, positive_int, run


class CliError(Exception):
    """A readable failure: printed as `irgrad: error: ...`, exit status 1."""


# --- loading user code -------------------------------------------------------------------------

def load_target(target: str):
    """`FILE.py:NAME` -> the frontend Function it names (tracing a plain function if needed)."""
    path, sep, name = target.rpartition(":")
    if not sep or not path.endswith(".py") or not name:
        raise CliError(f"expected FILE.py:NAME, got '{target}'")
    module = load_python_file(path)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Function))
        hint = f" (Functions there: {', '.join(found)})" if found else ""
        raise CliError(f"{path} has no '{name}'{hint}")
    obj = getattr(module, name)
    if isinstance(obj, Function):
        return obj
    if callable(obj):
        return function(obj)
    raise CliError(f"{path}:{name} is a {type(obj).__name__}, not an irgrad Function")


def is_onnx(target: str) -> bool:
    return target.lower().endswith(".onnx")


def load_function(args):
    """The Function of `args.target`: `FILE.py:NAME`, or an ONNX model's `fn(params, *inputs)`."""
    shapes = parse_input_shapes(getattr(args, "input_shape", None))
    if is_onnx(args.target):
        from ..onnx import NeedsConstant
        try:
            return load_onnx(args.target, shapes).fn
        except NeedsConstant as e:
            raise CliError(f"{_without_api_hint(e)} (irgrad run takes its value from --npz "
                           f"FILE.npz; the other commands need it in the model)") from None
    if shapes:
        raise CliError("--input-shape applies to ONNX models (MODEL.onnx) only")
    return load_target(args.target)


def _without_api_hint(e) -> str:
    """A NeedsConstant message less its Python hint (`ig.onnx.load(..., constants=...)`),
    which the command line has no way to follow."""
    return str(e).split(" (pass its value")[0]


def parse_input_shapes(items) -> dict[str, tuple[int, ...]]:
    """`["x=1x3x224x224", "mask=1,77", "scale="]` -> {name: shape} (`NAME=` is a scalar)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, sep, dims = item.rpartition("=")  # ONNX names may hold '=', dims never do
        if not sep or not name:
            raise CliError(f"--input-shape expects NAME=DIMS like x=1x3x224x224, got '{item}'")
        parts = [d.strip() for d in re.split(r"[x,]", dims.strip())] if dims.strip() else []
        if not all(d.isdigit() for d in parts):
            raise CliError(f"--input-shape {item}: the dimensions must be non-negative integers "
                           f"separated by 'x' (like {name}=1x3x224x224; {name}= for a scalar)")
        if name in shapes:
            raise CliError(f"--input-shape gives '{name}' twice")
        shapes[name] = tuple(int(d) for d in parts)
    return shapes


def load_onnx(path: str, shapes: dict | None = None, constants: dict | None = None):
    """`ig.onnx.load(path, input_shapes=shapes)`, with a command-line hint when the model has
    symbolic dimensions left unfixed."""
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    from ..errors import OnnxError
    from ..onnx import load
    try:
        return load(path, input_shapes=shapes or None, constants=constants or None)
    except OnnxError as e:
        hint = _shape_hint(path, {**(shapes or {}), **(constants or {})})
        if hint and "symbolic dimensions" in str(e):
            raise CliError(f"{e} ({hint})") from None
        raise


def _onnx_inputs(path: str):
    """The graph inputs that are not initializers: [(name, [dim or None (symbolic)])]."""
    from ..onnx.importer import read_model
    proto, _ = read_model(path)
    init = {t.name for t in proto.graph.initializer}
    out = []
    for vi in proto.graph.input:
        if vi.name in init or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        dims = None
        if tt.HasField("shape"):
            dims = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None
                    for d in tt.shape.dim]
        out.append((vi.name, dims))
    return out


def _shape_hint(path: str, shapes: dict) -> str | None:
    """`fix them with --input-shape x=1x3x224x224` for the inputs left symbolic (1 for each
    symbolic dimension, as an example), or None when there are none."""
    try:
        inputs = _onnx_inputs(path)
    except IrgradError:
        return None
    todo = [(n, d) for n, d in inputs if n not in shapes and (d is None or None in d)]
    if not todo:
        return None
    flags = " ".join(f"--input-shape {n}=" + ("x".join("1" if k is None else str(k) for k in d)
                                             if d is not None else "DIMS") for n, d in todo)
    return f"on the command line: {flags}, with the sizes you need"


def load_python_file(path: str):
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    mod_name = "_irgrad_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        spec.loader.exec_module(module)
    except IrgradError:
        raise
    except SyntaxError as e:
        raise CliError(f"{e.filename}:{e.lineno}:{e.offset}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - user code may raise anything; report it readably
        tb = traceback.extract_tb(e.__traceback__)
        frame = next((f for f in reversed(tb) if os.path.abspath(f.filename) == os.path.abspath(path)),
                     tb[-1] if tb else None)
        where = f"{frame.filename}:{frame.lineno}: " if frame else ""
        raise CliError(f"{where}{type(e).__name__} while loading {path}: {e}") from None
    finally:
        sys.path.pop(0)
    return module


def read_ir(path: str):
    if path == "-":
        data, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        if not os.path.isfile(path):
            raise CliError(f"no such file: {path}")
        with open(path, "rb") as fh:
            data, name = fh.read(), path
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise CliError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                       f"{e.start}); IR files are UTF-8") from None
    return parse(text, name)


def load_ir_or_python(target: str):
    """A `.ir` file (all its functions) or `FILE.py:NAME` -> (frontend Function or None, Module)."""
    if target.endswith(".ir") or target == "-":
        return None, read_ir(target)
    fn = load_target(target)
    return fn, Module([fn.ir])


def write_out(text: str, path: str | None) -> None:
    if path and path != "-":
        try:
            with open(path, "w") as fh:
                fh.write(text)
        except OSError as e:
            raise CliError(f"cannot write {path}: {e.strerror or e}") from None
    else:
        sys.stdout.write(text)


# --- commands ----------------------------------------------------------------------------------

def cmd_dump(args) -> int:
    fn = load_function(args)
    if args.grad:
        fn = grad_all_floats(fn)
    emit = args.emit
    print_after = tuple(args.print_after or ())
    optimized = run_pipeline(fn.ir, args.pipeline, print_after_all=args.print_after_all,
                             print_after=print_after, stream=sys.stdout,
                             time_passes=args.time_passes)
    if emit == "ir":
        if not (args.print_after_all or print_after):
            sys.stdout.write(str(optimized))
        return 0
    sys.stdout.write(get_backend(emit_kinds()[emit]).emit(optimized, emit))
    return 0


def cmd_opt(args) -> int:
    module = read_ir(args.file)
    out = run_pipeline(module, args.pipeline, print_after_all=args.print_after_all,
                       print_after=tuple(args.print_after or ()), time_passes=args.time_passes,
                       stream=sys.stderr)
    write_out(print_module(out), args.output)
    return 0


def cmd_check(args) -> int:
    module = read_ir(args.file)
    names = ", ".join(f"@{f.name}" for f in module)
    n_ops = sum(f.num_ops() for f in module)
    print(f"{args.file}: ok ({len(module.functions)} function(s): {names}; {n_ops} ops)")
    return 0


def cmd_run(args) -> int:
    if args.output and not args.output.endswith(".npz"):  # said before anything runs
        raise CliError(f"-o {args.output}: results are saved as an .npz file (OUT.npz)")
    if is_onnx(args.target):
        return run_onnx(args)
    if args.input_shape:
        raise CliError("--input-shape applies to ONNX models (MODEL.onnx) only")
    fn, module = load_ir_or_python(args.target)
    if fn is None:
        if not module.functions:
            raise CliError(f"{args.target} holds no function to run")
        if args.function:
            if args.function not in module.functions:
                raise CliError(f"{args.target} has no function @{args.function} (functions: "
                               f"{', '.join('@' + n for n in module.functions)})")
            irf = module.functions[args.function]
        else:
            irf = next(iter(module))
        fn = Function(irf)
    # compile first: a bad pipeline or backend should be the only message, not follow the
    # note about random inputs
    compiled = ig_compile(fn.ir, backend=args.backend, pipeline=args.pipeline)
    inputs = make_inputs(fn.ir, args.inputs, args.seed)
    outs = compiled(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    show_results(outs, [str(t) for t in fn.ir.result_types], [f"result{i}" for i in range(len(outs))],
                 None, args.output)
    return 0


def show_results(outs, types, keys, names, save: str | None) -> None:
    """Print each result (`result 0: f32[4] =` and its values), or save them all to an .npz."""
    if save:
        try:
            np.savez(save, **{k: np.asarray(o) for k, o in zip(keys, outs)})
        except OSError as e:
            raise CliError(f"cannot write {save}: {e.strerror or e}") from None
        print(f"wrote {save} ({', '.join(keys)})", file=sys.stderr)
        return
    np.set_printoptions(precision=6, threshold=64, edgeitems=3, linewidth=100)
    for i, (o, t) in enumerate(zip(outs, types)):
        label = f" ({names[i]})" if names else ""
        print(f"result {i}{label}: {t} =")
        print(np.array2string(np.asarray(o), prefix="  ") if np.ndim(o) else f"  {np.asarray(o).item()!r}")


def run_onnx(args) -> int:
    """`irgrad run MODEL.onnx`: the model's own parameters, inputs from --npz by input name
    or position (their shapes fix the symbolic dimensions --input-shape leaves open; an
    input whose value the import needs, a Reshape's shape, is taken as a constant) or
    random."""
    if args.function:
        raise CliError("--function names a function of an .ir file; an ONNX model has one graph")
    from ..onnx import NeedsConstant, dtypes
    shapes = parse_input_shapes(args.input_shape)
    data = read_npz(args.inputs) if args.inputs else None
    keys: dict[str, str] = {}  # model input -> its array in the .npz
    if data is not None and os.path.isfile(args.target):
        graph_inputs = _onnx_inputs(args.target)
        for i, (nm, _) in enumerate(graph_inputs):
            key = next((k for k in (nm, f"arg{i}", f"arr_{i}") if k in data.files), None)
            if key is not None:
                keys[nm] = key
        shapes = {**_npz_shapes(args.target, graph_inputs, data, keys, shapes), **shapes}
    constants: dict[str, np.ndarray] = {}
    while True:
        try:
            m = load_onnx(args.target, shapes, constants)
            break
        except NeedsConstant as e:
            nm = e.input_name
            if nm in keys and nm not in constants:
                constants[nm] = data[keys[nm]]
                shapes.pop(nm, None)
                continue
            raise CliError(f"{_without_api_hint(e)} (irgrad run takes its value from --npz "
                           f"FILE.npz)") from None
    run = m.compile(backend=args.backend, pipeline=args.pipeline)
    specs = m.fn.specs[len(m.fn.specs) - len(m.input_names):]
    if data is not None:
        missing = [nm for nm in m.input_names if nm not in keys]
        if missing:
            raise CliError(f"{args.inputs} has no array for the model's input '{missing[0]}' "
                           f"(keys: {', '.join(data.files) or 'none'})")
        inputs = [data[keys[nm]] for nm in m.input_names]
    else:
        print(f"(no --npz: normal random floats, zero integers and false booleans, seed "
              f"{args.seed}; the parameters are the model's own)", file=sys.stderr)
        rng = np.random.default_rng(args.seed)
        inputs = [(rng.standard_normal(s.shape) if s.dtype.is_float else np.zeros(s.shape))
                  .astype(dtypes.storage_np(e)) for s, e in zip(specs, m.input_elems)]
    outs = run(*inputs)
    types = []
    for t, e in zip(m.fn.ir.result_types, m.output_elems):
        native = dtypes.of_dtype(t.dtype) == e
        types.append(str(t) if native else f"{t} (ONNX {dtypes.name(e)})")
    show_results(outs, types, m.output_names, m.output_names, args.output)
    return 0


def read_npz(path: str):
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    try:
        return np.load(path)
    except Exception as e:  # noqa: BLE001
        raise CliError(f"cannot read {path}: {e}") from None


def _npz_shapes(path: str, graph_inputs, data, keys: dict, given: dict) -> dict:
    """Shapes for the model's symbolic input dimensions, from the .npz arrays of those
    inputs; an array that contradicts a fixed dimension is an error here, by name."""
    out = {}
    for nm, dims in graph_inputs:
        if nm in given or nm not in keys:
            continue
        shape = tuple(data[keys[nm]].shape)
        if dims is not None and (len(dims) != len(shape) or
                                 any(d is not None and d != s for d, s in zip(dims, shape))):
            want = "x".join("?" if d is None else str(d) for d in dims) or "a scalar"
            raise CliError(f"{path}: input '{nm}' has shape {want}, but the array "
                           f"'{keys[nm]}' of the .npz has shape {list(shape)}")
        if dims is None or None in dims:
            out[nm] = shape
    return out


def make_inputs(irf, npz_path: str | None, seed: int) -> list[np.ndarray]:
    """Arrays for every parameter: from an .npz (by parameter name or position), else random."""
    params = irf.params
    if npz_path:
        data = read_npz(npz_path)
        out = []
        for i, p in enumerate(params):
            for key in (p.name, f"arg{i}", f"arr_{i}"):
                if key and key in data.files:
                    out.append(data[key])
                    break
            else:
                raise CliError(f"{npz_path} has no array for parameter %{p.name} "
                               f"(keys: {', '.join(data.files) or 'none'})")
        return out
    print(f"(no --inputs: normal random floats, zero integers and false booleans, seed {seed})",
          file=sys.stderr)
    return random_inputs(irf, seed)


def cmd_bench(args) -> int:
    fn = load_function(args)
    rows = bench_function(fn, args.pipelines, backend=args.backend, repeat=args.repeat,
                          threads=args.threads)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{fn.name} on the {args.backend} backend (median of repeated calls):")
        sys.stdout.write(format_table(rows))
    if args.plot:
        path = bench_figure(rows, args.plot, title=f"@{fn.name}: pipelines compared on the "
                            f"{args.backend} backend")
        sys.stdout.flush()
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _planned(fn, pipeline: str, grad: bool):
    """The IR of `fn` (or of its gradient, with --grad) after `pipeline`."""
    if grad:
        fn = grad_all_floats(fn)
    return run_pipeline(fn.ir, pipeline)


def cmd_viz(args) -> int:
    fn = load_function(args)
    ir = _planned(fn, args.pipeline, args.grad)
    out = args.output or f"{ir.name}.svg"
    title = f"@{ir.name} after -p {args.pipeline}"
    dot = graph_dot(ir, title=title, show_types=not args.no_types, collapse=args.collapse)
    path, note = render_dot(dot, out)
    if note:
        print(f"irgrad: note: {note}", file=sys.stderr)
    else:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_memplan(args) -> int:
    fn = load_function(args)
    ir = _planned(fn, args.pipeline, args.grad)
    if not has_plan(ir):
        ir = run_pipeline(ir, "plan-memory")  # as codegen does
    path = memory_plan_figure(ir, args.output or f"{ir.name}-memory.png")
    print(f"wrote {path}: arena {ir.attrs['arena_bytes']} bytes, naive {ir.attrs['naive_bytes']}, "
          f"lower bound {ir.attrs['lower_bound_bytes']}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    module = load_python_file(args.file)
    defaults = {k: getattr(args, k) for k in ("backend", "epochs", "pipeline", "threads", "seed")}
    run(module, args.example_args, defaults=defaults, prog=f"irgrad train {args.file}",
        path=args.file)
    return 0


# --- argument parsing ----------------------------------------------------------------------------

TARGET = "FILE.py:NAME|MODEL.onnx"


def add_input_shape(p) -> None:
    p.add_argument("--input-shape", action="append", metavar="NAME=DIMS",
                   help="an ONNX model's input shape, fixing its symbolic dimensions: "
                   "x=1x3x224x224 (repeat for several inputs; x= for a scalar)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="irgrad", description="irgrad: a deep-learning compiler you "
                                "can see into. Trace, differentiate, optimize and run IR.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser("dump", help="print the IR of FILE.py:NAME or MODEL.onnx after a pipeline")
    d.add_argument("target", metavar=TARGET)
    add_input_shape(d)
    d.add_argument("--grad", action="store_true", help="dump the gradient function instead")
    d.add_argument("-p", "--pipeline", default="O0", help="pass pipeline (default O0)")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    g.add_argument("--print-after", action="append", metavar="PASS", help="print after PASS")
    d.add_argument("--time-passes", action="store_true", help="report the time of every pass")
    d.add_argument("--emit", choices=("ir", *emit_kinds()), default="ir",
                   help="what to print: the IR, or a backend's generated code")
    d.set_defaults(func=cmd_dump)

    o = sub.add_parser("opt", help="run a pipeline on IR text (file or - for stdin)")
    o.add_argument("file", metavar="FILE.ir|-")
    o.add_argument("-p", "--pipeline", required=True)
    o.add_argument("--print-after-all", action="store_true")
    o.add_argument("--print-after", action="append", metavar="PASS")
    o.add_argument("--time-passes", action="store_true")
    o.add_argument("-o", "--output", metavar="OUT")
    o.set_defaults(func=cmd_opt)

    c = sub.add_parser("check", help="parse and verify an IR file")
    c.add_argument("file", metavar="FILE.ir")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("run", help="run FILE.ir, FILE.py:NAME or MODEL.onnx and print the results")
    r.add_argument("target", metavar="FILE.ir|FILE.py:NAME|MODEL.onnx")
    r.add_argument("--backend", default="numpy", choices=backend_names())
    r.add_argument("-p", "--pipeline", default="O0")
    r.add_argument("--inputs", "--npz", dest="inputs", metavar="FILE.npz",
                   help="arrays named after the parameters (an ONNX model's: after its inputs; "
                   "the parameters are its initializers)")
    r.add_argument("-o", "--output", metavar="OUT.npz", help="save the results to OUT.npz (named "
                   "after an ONNX model's outputs, else result0, result1, ...) instead of printing")
    add_input_shape(r)
    r.add_argument("--function", metavar="NAME", help="which function of an .ir file")
    r.add_argument("--seed", type=int_at_least(0), default=0)
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="compare pipelines: ops, kernels, memory, compile and step time")
    b.add_argument("target", metavar=TARGET)
    add_input_shape(b)
    b.add_argument("--pipelines", nargs="+", default=["O0", "O2"], metavar="PIPELINE")
    b.add_argument("--backend", default="cpu", choices=backend_names())
    b.add_argument("--threads", type=positive_int, default=None, help="threads for the native backends")
    b.add_argument("--repeat", type=int_at_least(0), default=0, help="calls to time (default: about 1 s)")
    b.add_argument("--json", action="store_true", help="print a JSON list, one object per pipeline")
    b.add_argument("--plot", metavar="OUT.png", help="also draw time and memory per pipeline "
                   "(needs matplotlib: the viz extra)")
    b.set_defaults(func=cmd_bench)

    v = sub.add_parser("viz", help="draw the IR of FILE.py:NAME or MODEL.onnx as a graph "
                       "(Graphviz), fused kernels as clusters")
    v.add_argument("target", metavar=TARGET)
    add_input_shape(v)
    v.add_argument("-o", "--output", metavar="OUT", help="OUT.svg, .png, .pdf (drawn by Graphviz's "
                   "dot) or .dot (default NAME.svg); without Graphviz the .dot is written")
    v.add_argument("-p", "--pipeline", default="O2", help="pass pipeline first (default O2)")
    v.add_argument("--grad", action="store_true", help="draw the gradient function instead")
    v.add_argument("--no-types", action="store_true", help="leave the types out of the labels")
    v.add_argument("--collapse", action="store_true", help="one node per fused kernel (an "
                   "overview of a large function)")
    v.set_defaults(func=cmd_viz)

    m = sub.add_parser("memplan", help="draw the memory plan of FILE.py:NAME or MODEL.onnx "
                       "(matplotlib)")
    m.add_argument("target", metavar=TARGET)
    add_input_shape(m)
    m.add_argument("-o", "--output", metavar="OUT.png", help="picture to write (.png, .svg, .pdf; "
                   "default NAME-memory.png)")
    m.add_argument("-p", "--pipeline", default="O2", help="pass pipeline (default O2; plan-memory "
                   "runs last if the pipeline does not)")
    m.add_argument("--grad", action="store_true", help="plan the gradient function instead")
    m.set_defaults(func=cmd_memplan)

    t = sub.add_parser("train", help="run an example's training loop (FILE.py defines train(...))",
                       description="Run the train(...) function of an example file (see "
                       "irgrad/tools/train.py for the protocol). Options after FILE.py that are not "
                       "listed here go to the example: irgrad train FILE.py --help lists them.")
    t.add_argument("file", metavar="FILE.py")
    add_common_arguments(t)
    t.add_argument("example_args", nargs=argparse.REMAINDER, metavar="...",
                   help="options of the example itself")
    t.set_defaults(func=cmd_train)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ParseError, VerifyError) as e:
        print(str(e), file=sys.stderr)  # already "file:line:col: error: ..." with a caret
        return 1
    except (IrgradError, CliError) as e:
        print(f"irgrad: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("irgrad: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except ModuleNotFoundError as e:  # an optional package (matplotlib, tqdm, scikit-learn, ...)
        if e.name and e.name.split(".")[0] == "irgrad":
            raise
        print(f"irgrad: error: the Python package {e.name} is missing: {e} (the extras: pip install "
              f"'irgrad[viz]' for pictures, 'irgrad[examples]' for the examples)", file=sys.stderr)
        return 1
    except OSError as e:  # a file that cannot be read or written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"irgrad: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except MemoryError:
        print("irgrad: error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - never show users a raw traceback
        if os.environ.get("IRGRAD_TRACEBACK"):
            raise
        print(f"irgrad: internal error: {type(e).__name__}: {e} "
              f"(run with IRGRAD_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
