"""The package's layers import only downwards (docs/architecture.md): a module's imports,
lazy ones included, name only its own layer or the layers below it."""

from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "irgrad")

# each layer, and the layers it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "ir": {"errors"},
    "pytree": {"errors", "ir"},
    "passes": {"errors", "ir"},
    "codegen": {"errors", "ir", "passes"},
    "backends": {"errors", "ir", "passes", "codegen"},
    "frontend": {"errors", "ir", "pytree"},
    "api": {"errors", "ir", "pytree", "frontend", "backends", "passes"},
    "transforms": {"errors", "ir", "pytree", "frontend", "passes", "backends", "api"},
    "onnx": {"errors", "ir", "pytree", "frontend", "passes", "backends", "api"},
    "tools": {"errors", "ir", "pytree", "frontend", "passes", "codegen", "backends", "api",
              "transforms", "onnx"},
    "__init__": None, "__main__": None,  # the package's face may import anything
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: str, module: str):
    tree = ast.parse(open(path).read())
    pkg = module.rsplit(".", 1)[0] if not path.endswith("__init__.py") else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("irgrad"):
                    yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("irgrad"):
                if target == "irgrad":  # from irgrad import x: x is the layer
                    for a in node.names:
                        yield f"irgrad.{a.name}", node.lineno
                else:
                    yield target, node.lineno


def test_layers_import_only_downwards():
    bad = []
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            module = rel[:-9] if rel.endswith(".__init__") else rel
            own = layer_of(module)
            allowed = ALLOWED.get(own, "missing")
            assert allowed != "missing", f"{module}: layer '{own}' is not in the table"
            if allowed is None:
                continue
            for target, line in imports(path, module):
                other = layer_of(target)
                if other != own and other not in allowed:
                    bad.append(f"{module}:{line} imports {target} ({own} -> {other})")
    assert not bad, "\n".join(bad)
