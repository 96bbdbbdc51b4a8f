"""Rebuild math_verify_cases.jsonl from a checkout of github.com/huggingface/Math-Verify.

Math-Verify's regression tests are pytest parametrisations of literal (gold, prediction,
expected) triples. This reads those literals with :mod:`ast` (no test code is run or copied) and
writes one JSON line per triple, with the settings the test passes to math-verify (match types,
float precision, strict, set-relation comparison), so that a grader can be measured on exactly
the cases math-verify's own authors wrote down.

    python benchmarks/grading_cases/build_math_verify_cases.py MATH_VERIFY_CHECKOUT [--commit SHA]
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _decorator_cases(func: ast.FunctionDef) -> tuple[list[str], list[tuple]] | None:
    for dec in func.decorator_list:
        if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
            continue
        names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
        try:
            rows = ast.literal_eval(dec.args[1])
        except ValueError:
            return None
        return names, [r if isinstance(r, tuple) else (r,) for r in rows]
    return None


def _call_settings(func: ast.FunctionDef) -> dict:
    """The keyword arguments the test body passes to compare_strings / parse (constants only)."""
    settings: dict = {"match_types": ["latex", "expr"]}
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("compare_strings", "parse"):
            if getattr(node.func, "id", "") == "parse":
                settings["match_types"] = "default"
            for kw in node.keywords:
                try:
                    settings[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    settings[kw.arg] = f"<{ast.unparse(kw.value)}>"
    return settings


def cases_of(path: Path) -> list[dict]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        found = _decorator_cases(func)
        if found is None:
            continue
        names, rows = found
        if "gold" not in names or "pred" not in names:
            continue
        settings = _call_settings(func)
        for i, row in enumerate(rows):
            values = dict(zip(names, row))
            expected = values.get("expected", values.get("result"))
            row_settings = dict(settings)
            for name in ("precision", "strict", "allow_set_relation_comp"):
                if name in values:
                    row_settings[name] = values[name]
            out.append(
                {
                    "id": f"{path.stem}::{func.name}[{i}]",
                    "gold": str(values["gold"]),
                    "pred": str(values["pred"]),
                    "expected": bool(expected),
                    "settings": row_settings,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--commit", default="")
    parser.add_argument("--output", type=Path, default=HERE / "math_verify_cases.jsonl")
    args = parser.parse_args()
    rows = []
    for path in sorted((args.checkout / "tests").glob("test_*.py")):
        rows.extend(cases_of(path))
    with args.output.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({**row, "source": f"huggingface/Math-Verify@{args.commit}"}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} cases to {args.output}")


if __name__ == "__main__":
    main()
