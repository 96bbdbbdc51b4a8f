"""Where pspo-eval keeps its caches and finds its bundled data.

The bundled data (normalized benchmarks, rubrics, trainer presets, pipeline files) ships inside the
package under ``pspo_eval/resources/`` and is located through :mod:`importlib.resources`, so a wheel
installed anywhere finds it exactly as a checkout does. ``resources/`` and its folders have no
``__init__.py``: they are data, and a folder named ``datasets`` must never become an importable
package (it would shadow the Hugging Face ``datasets`` library).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The source checkout when running from one (editable install); site-packages for an installed wheel.
REPO_DIR = PACKAGE_DIR.parent


def home() -> Path:
    """The cache root: ``$PSPO_EVAL_HOME`` or ``~/.cache/pspo-eval``."""
    root = os.environ.get("PSPO_EVAL_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "pspo-eval"
    return path


def resources_dir() -> Path:
    """The package's data folder. Wheels install packages as plain directories, so this is a real path."""
    return Path(str(files("pspo_eval") / "resources"))


def _bundled(name: str, env: str | None = None) -> Path:
    override = os.environ.get(env) if env else None
    return Path(override).expanduser() if override else resources_dir() / name


def datasets_dir() -> Path:
    """The normalized benchmark files and their MANIFEST.json (``$PSPO_EVAL_DATASETS`` overrides)."""
    return _bundled("datasets", "PSPO_EVAL_DATASETS")


def rubrics_dir() -> Path:
    """The bundled judge rubrics (``$PSPO_EVAL_RUBRICS`` overrides)."""
    return _bundled("rubrics", "PSPO_EVAL_RUBRICS")


def configs_dir() -> Path:
    """The trainer presets (``demo-cpu``, ``paper/…``)."""
    return _bundled("configs")


def experiments_dir() -> Path:
    """The pipeline files (``demo``, ``paper-0.5b``)."""
    return _bundled("experiments")


def source_checkout() -> Path | None:
    """The git checkout this package runs from, or None for an installed wheel.

    Only a directory holding our own pyproject.toml counts: a wheel installed into a venv that lies
    inside some other git repository must not report that repository's revision as ours.
    """
    pyproject = REPO_DIR / "pyproject.toml"
    if pyproject.is_file() and 'name = "pspo-eval"' in pyproject.read_text(encoding="utf-8", errors="replace"):
        return REPO_DIR
    return None
