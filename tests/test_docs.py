"""Every command and code block shown in README.md and docs/*.md runs, so the docs cannot rot.

- ```python blocks run in order, one namespace per document, from the repository root
  (a block indented in a list is dedented);
- ```console blocks hold `$ command` lines, each followed by its expected output; a
  command must exit 0 (unless the block is preceded by `<!-- doctest: exit=N -->`) and
  print the expected lines (trailing spaces ignored; a line `...` matches any lines);
- ```ir blocks must parse and verify;
- `<!-- doctest: skip -->` before a block skips it (used only for the two set-up commands,
  which the CI runs anyway, and long trainings).

A document may register ops, passes and backends (docs/architecture.md's recipes do);
the registries are restored after each document.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import types

import pytest

import irgrad as ig
from irgrad.backends import base as backend_registry
from irgrad.ir import registry as op_registry
from irgrad.passes import manager as pass_registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(
    os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))

_BLOCK = re.compile(r"(?:<!--\s*doctest:\s*(?P<opts>[^>]*?)\s*-->\s*\n)?```(?P<lang>[a-z]*)[^\n]*\n(?P<body>.*?)```",
                    re.S)


def blocks(path):
    text = open(path).read()
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        opts = dict(o.split("=", 1) if "=" in o else (o, True) for o in (m.group("opts") or "").split())
        yield m.group("lang"), m.group("body"), opts, line


def _matches(expected: list[str], got: list[str]) -> bool:
    """Line-by-line match where an expected `...` line stands for any number of lines."""
    i = j = 0
    while i < len(expected):
        if expected[i].strip() == "...":
            if i == len(expected) - 1:
                return True
            for k in range(j, len(got) + 1):
                if _matches(expected[i + 1:], got[k:]):
                    return True
            return False
        if j >= len(got) or expected[i].rstrip() != got[j].rstrip():
            return False
        i += 1
        j += 1
    return j == len(got)


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_console(body: str, opts: dict, where: str, tmp_path):
    exit_code = int(opts.get("exit", 0))
    cmds = []
    for line in body.splitlines():
        if line.startswith("$ "):
            cmds.append([line[2:], []])
        elif cmds:
            cmds[-1][1].append(line)
    for cmd, expected in cmds:
        while expected and not expected[-1].strip():
            expected.pop()
        proc = subprocess.run(cmd, shell=True, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=600)
        out = (proc.stdout + proc.stderr).splitlines()
        assert proc.returncode == exit_code, f"{where}: `{cmd}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        if expected:
            assert _matches(expected, out), (f"{where}: `{cmd}` printed\n" + "\n".join(out)
                                             + "\n\nbut the docs show\n" + "\n".join(expected))


CASES = [(os.path.relpath(p, ROOT), p) for p in DOCS]


@pytest.fixture
def registries():
    op_registry.all_ops()  # (the built-in entries are loaded before the snapshot)
    pass_registry.known_passes()
    saved = [(d, dict(d)) for d in (op_registry.REGISTRY, pass_registry.PASSES,
                                    backend_registry.BACKENDS, backend_registry._instances)]
    yield
    for d, copy in saved:
        d.clear()
        d.update(copy)


@pytest.mark.parametrize("name,path", CASES, ids=[c[0] for c in CASES])
def test_document(name, path, tmp_path, monkeypatch, registries):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("IRGRAD_CACHE_DIR", str(tmp_path / "cache"))
    module = types.ModuleType("_irgrad_doc")  # a real module: dataclasses look theirs up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    ran = 0
    for lang, body, opts, line in blocks(path):
        where = f"{name}:{line}"
        if opts.get("skip"):
            continue
        if lang == "python":
            exec(compile(textwrap.dedent(body), where, "exec"), namespace)
        elif lang == "console":
            run_console(body, opts, where, tmp_path)
        elif lang == "ir":
            ig.parse(body, where)
        else:
            continue
        ran += 1
    assert ran or name == "README.md", f"{name} has no runnable blocks"


def test_console_matcher():
    assert _matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert _matches(["a", "..."], ["a"])
    assert not _matches(["a", "b"], ["a", "c"])
    assert not _matches(["a"], ["a", "b"])
    assert shlex.split("irgrad check x.ir") == ["irgrad", "check", "x.ir"]
