"""Imports flow one way: no cycles between modules, and no layer reaches up.

Every import counts, the ones inside functions too (a lazy import hides a cycle from Python, not
from a reader). ``from pkg import name`` points at ``pkg.name`` when that is a module, else at
``pkg``; a module's import of its own parent package is not an edge (Python runs the parent's
``__init__`` first in any case).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pspo_eval"

# Bottom to top. A module may import its own layer and the layers below, never one above.
LAYERS = [
    {"pspo_eval", "pspo_eval.errors", "pspo_eval.paths", "pspo_eval.console", "pspo_eval.config", "pspo_eval.records",
     "pspo_eval.stats", "pspo_eval.store", "pspo_eval.machine"},
    {"pspo_eval.data", "pspo_eval.models", "pspo_eval.endpoint"},
    {"pspo_eval.grading", "pspo_eval.generation", "pspo_eval.metrics"},
    {"pspo_eval.evaluate", "pspo_eval.merge", "pspo_eval.train", "pspo_eval.judge"},
    {"pspo_eval.report"},
    {"pspo_eval.pipeline"},
    {"pspo_eval.cli", "pspo_eval.__main__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    ancestors = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in modules and m != name and m not in ancestors}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    for i, layer in enumerate(LAYERS):
        if any(name.startswith(top + ".") for top in layer if top != "pspo_eval"):
            return i
    raise AssertionError(f"{name} is in no layer of tests/test_imports.py: place it")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    graph = _graph()
    assert "pspo_eval.report.build" in graph["pspo_eval.pipeline"]  # lazy imports are read too
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_layer_imports_one_above_it():
    upward = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(name)
    ]
    assert upward == []


def test_the_cli_is_imported_by_nothing_below_it():
    graph = _graph()
    assert not [n for n, t in graph.items() if any(x.startswith("pspo_eval.cli") for x in t)
                and not n.startswith(("pspo_eval.cli", "pspo_eval.__main__"))]
