"""Running the `irgrad` command in a subprocess, shared by the CLI test files."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(cwd, *args, ok=True, stdin=None, env=None, timeout=300):
    """`python -m irgrad ARGS` in `cwd`; returns the CompletedProcess (asserting success
    when ok). IRGRAD_DUMP and IRGRAD_TRACEBACK from the outside are cleared."""
    e = dict(os.environ, PYTHONPATH=REPO, IRGRAD_TRACEBACK="")
    e.pop("IRGRAD_DUMP", None)
    e.update(env or {})
    r = subprocess.run([sys.executable, "-m", "irgrad", *map(str, args)], cwd=cwd, env=e,
                       input=stdin, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r
