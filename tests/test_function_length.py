"""One screen per concept: no function or method in the package runs over 80 lines.

Counted from the ``def`` line to the function's last line (decorators left out), docstring and
signature included. ruff's complexity and statement limits in ``make lint`` (pyproject.toml) keep
the shape; this keeps the length, which no ruff rule measures.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pspo_eval"
LIMIT = 80


def _long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append((f"{node.name}:{node.lineno}", lines))
    return found


def test_no_function_in_the_package_is_over_80_lines():
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{name} ({lines} lines)"
        for path in sorted(ROOT.rglob("*.py"))
        for name, lines in _long_functions(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_length_check_counts_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    assert _long_functions(f"def f():\n{body}\n") == [("f:1", LIMIT + 1)]
    assert _long_functions("def g():\n    return 1\n") == []
