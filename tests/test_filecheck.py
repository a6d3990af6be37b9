"""FileCheck tests of the passes: tests/filecheck/<pass>/*.ir.

Each file holds input IR (one or more functions), a `// RUN: <irgrad opt options>` line
such as `// RUN: -p simplify` or `// RUN: -p "fuse{max-ops=2}"`, and `// CHECK:`,
`// CHECK-NEXT:`, `// CHECK-NOT:`, `// CHECK-LABEL:` ... lines (the `filecheck` package,
a Python clone of LLVM's FileCheck). The runner calls

    python -m irgrad opt FILE <options>

exactly as a user would and pipes what it prints through `filecheck FILE`. The IR parser
ignores the `//` lines, so the same file is the input and the expectations.

An optional `// XFAIL: <reason>` line marks a file that documents a known bug in code
owned elsewhere (strict: the test fails once the bug is fixed, so the marker is removed).

The opt runs are started in parallel the first time a test needs one (they are separate
processes), so the whole directory costs about as much as the slowest few files.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ROOT = HERE / "filecheck"
FILES = sorted(ROOT.rglob("*.ir"))
_FILE_SET = set(FILES)


def _directives(path: Path, key: str) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith(f"// {key}:"):
            out.append(s[len(f"// {key}:"):].strip())
    return out


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), IRGRAD_TRACEBACK="1")
    env.pop("IRGRAD_DUMP", None)
    return env


def _run_one(path: Path):
    runs = _directives(path, "RUN")
    if len(runs) != 1:
        return None, f"{path}: needs exactly one '// RUN: -p PIPELINE' line, found {len(runs)}"
    argv = [sys.executable, "-m", "irgrad", "opt", str(path), *shlex.split(runs[0])]
    opt = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300)
    if opt.returncode != 0:
        return opt, None
    check = subprocess.run([sys.executable, "-m", "filecheck", str(path)], input=opt.stdout,
                           capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300)
    return opt, check


_RESULTS: dict[Path, tuple] = {}


@pytest.fixture(scope="session")
def filecheck_results(request):
    """Runs every selected file once, in parallel threads (each run is two processes)."""
    wanted = []
    for item in request.session.items:
        cs = getattr(item, "callspec", None)
        if cs is not None and cs.params.get("path") in _FILE_SET:
            wanted.append(cs.params["path"])
    todo = [p for p in dict.fromkeys(wanted) if p not in _RESULTS]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        for p, res in zip(todo, ex.map(_run_one, todo)):
            _RESULTS[p] = res
    return _RESULTS


def test_every_pass_has_filecheck_files():
    dirs = {p.parent.name for p in FILES}
    for name in ("constant-fold", "simplify", "cse", "dce", "fuse", "plan-memory", "pipelines"):
        assert name in dirs, f"no FileCheck files for {name}"
    for p in FILES:
        text = p.read_text()
        assert "// CHECK" in text, f"{p} checks nothing"


def _marks(path: Path):
    reasons = _directives(path, "XFAIL")
    return [pytest.mark.xfail(strict=True, reason=reasons[0])] if reasons else []


@pytest.mark.parametrize("path", [pytest.param(p, id=str(p.relative_to(ROOT)), marks=_marks(p))
                                  for p in FILES])
def test_filecheck(path, filecheck_results):
    if path not in filecheck_results:  # selected in some unusual way: run it now
        filecheck_results[path] = _run_one(path)
    opt, check = filecheck_results[path]
    assert opt is not None, check
    assert opt.returncode == 0, (f"irgrad opt failed (exit {opt.returncode}):\n{opt.stderr}")
    assert "Traceback" not in opt.stderr, opt.stderr
    assert check.returncode == 0, (
        f"FileCheck failed for {path.relative_to(REPO)}\n--- irgrad opt output ---\n{opt.stdout}"
        f"\n--- filecheck ---\n{check.stdout}{check.stderr}")
