"""DESIGN section 2: imports inside kdcache point downward only."""

from __future__ import annotations

import ast
from pathlib import Path

import kdcache

# bottom first; a module may import its own layer and any layer below it
LAYERS = ["", "data", "models", "cache", "distill", "teacher", "evaluate", "train", "report", "workflows"]
UNRELATED = {("cache", "distill"), ("distill", "cache")}  # same height, never import each other


def _layer(module: str) -> str:
    """The layer of a dotted kdcache module: its subpackage, or "" for root modules (errors, distributed)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("kdcache.")}


def test_imports_point_downward_only():
    root = Path(kdcache.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(("kdcache", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        here = _layer(module)
        for target in _imports(path):
            there = _layer(target)
            if LAYERS.index(there) > LAYERS.index(here) or (here, there) in UNRELATED:
                wrong.append(f"{module} ({here or 'root'}) imports {target} ({there or 'root'})")
    assert not wrong, "\n".join(wrong)
