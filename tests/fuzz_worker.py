"""The worker of the IR mutation fuzzer (tests/test_fuzz_ir.py), run in a subprocess.

    python fuzz_worker.py CASES.json START

Reads a JSON list of cases ({"text": IR text, "seed": int, "cli": bool}) and, from case
START on, prints `START i` before a case and `DONE i OUTCOME DETAIL` after it (flushed),
so the parent knows which case crashed or hung. A case is one edited program, fed to
everything a user can feed it to: `irgrad check` and `irgrad run` (in-process, the CLI's
own entry point), `ig.parse`, and `ig.compile` at O0, O1 and O2 on the numpy and cpu
backends. Allowed: a clean error (an IrgradError; exit status 1 with one message and no
traceback from the CLI) or results equal to the reference interpreter's. Outcomes:

    rejected   the text was refused with a clean error (parse or verify)
    checked    it parsed; every compile gave the interpreter's results or a clean error
    FAIL-...   anything else: another exception, a wrong result, a CLI traceback
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile

os.environ.setdefault("IRGRAD_CACHE", "0")

import numpy as np  # noqa: E402

import irgrad as ig  # noqa: E402
from irgrad.tools.cli import main as cli_main  # noqa: E402

PRESETS = ("O0", "O1", "O2")
BACKENDS = ("numpy", "cpu")


def inputs(f, seed):
    rng = np.random.default_rng(seed)
    out = []
    for p in f.params:
        t = p.type
        if t.dtype.is_float:
            out.append(rng.uniform(-2, 2, t.shape).astype(t.dtype.np))
        elif t.dtype.is_int:
            out.append(rng.integers(0, 3, t.shape).astype(t.dtype.np))
        else:
            out.append(rng.random(t.shape) < 0.5)
    return out


def same(got, want) -> str | None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"shape/dtype {got.dtype}{list(got.shape)} vs {want.dtype}{list(want.shape)}"
    if want.dtype.kind != "f":
        return None if np.array_equal(got, want) else "integer values differ"
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return "nan pattern differs"
    finite = np.isfinite(want) & np.isfinite(got)
    if not np.array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)]):
        return "infinities differ"
    if finite.any():
        g, w = got[finite].astype(np.float64), want[finite].astype(np.float64)
        scale = max(1.0, float(np.abs(w).max()))
        err = float(np.abs(g - w).max())
        if err > 2e-3 * scale:
            return f"values differ by {err:.3g} (scale {scale:.3g})"
    return None


def cli(args) -> str | None:
    """Run the CLI in-process; a problem is anything but exit 0, or 1 with a message."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(args)
        except SystemExit as e:  # argparse
            rc = e.code
    text = err.getvalue()
    if rc not in (0, 1) or "Traceback" in text or "internal error" in text or (rc == 1 and not text.strip()):
        return f"cli {args[0]} exit {rc}: {text.strip()[-300:]}"
    return None


def run_case(case) -> tuple[str, str]:
    text = case["text"]
    if case.get("cli"):
        with tempfile.NamedTemporaryFile("w", suffix=".ir", delete=False) as fh:
            fh.write(text)
        try:
            for args in (["check", fh.name], ["run", fh.name], ["run", fh.name, "--backend", "cpu"],
                         ["run", fh.name, "-p", "O2", "--backend", "cpu"]):
                problem = cli(args)
                if problem:
                    return "FAIL-cli", problem
        finally:
            os.unlink(fh.name)
    try:
        module = ig.parse(text)
    except ig.IrgradError:
        return "rejected", ""
    f = next(iter(module), None)
    if f is None:
        return "rejected", "no function"
    args = inputs(f, case["seed"])
    try:
        want = ig.compile(f, backend="numpy", pipeline="O0")(*args)
    except ig.IrgradError as e:
        return "rejected", f"at run: {str(e).splitlines()[0][:80]}"
    want = want if isinstance(want, tuple) else (want,)
    ran, refused = 0, []
    for backend in BACKENDS:
        for preset in PRESETS:
            try:
                got = ig.compile(f, backend=backend, pipeline=preset)(*args)
            except ig.IrgradError as e:  # a clean error: allowed
                refused.append(f"{backend} {preset}: {str(e).splitlines()[0][:100]}")
                continue
            ran += 1
            got = got if isinstance(got, tuple) else (got,)
            for i, (g, w) in enumerate(zip(got, want)):
                problem = same(g, w)
                if problem:
                    return "FAIL-mismatch", f"{backend} {preset} result {i}: {problem}"
    return "checked", f"{ran} runs equal" + (f"; refused: {refused[0]}" if refused else "")


def main(path: str, start: int) -> None:
    with open(path) as fh:
        cases = json.load(fh)
    for i in range(start, len(cases)):
        print(f"START {i}", flush=True)
        try:
            outcome, detail = run_case(cases[i])
        except Exception as e:  # noqa: BLE001 - the point: report what escaped
            outcome, detail = "FAIL-exception", f"{type(e).__name__}: {str(e)[:300]}"
        print(f"DONE {i} {outcome} {json.dumps(detail)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
