"""Where pspo-eval keeps its caches and finds its bundled data."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def home() -> Path:
    """The cache root: ``$PSPO_EVAL_HOME`` or ``~/.cache/pspo-eval``."""
    root = os.environ.get("PSPO_EVAL_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "pspo-eval"
    return path


def datasets_dir() -> Path:
    """The folder holding the normalized benchmark files (``datasets/`` of the repository).

    ``$PSPO_EVAL_DATASETS`` overrides it (for an installed package used outside the repository).
    """
    env = os.environ.get("PSPO_EVAL_DATASETS")
    return Path(env).expanduser() if env else REPO_DIR / "datasets"


def rubrics_dir() -> Path:
    env = os.environ.get("PSPO_EVAL_RUBRICS")
    return Path(env).expanduser() if env else REPO_DIR / "rubrics"


def configs_dir() -> Path:
    return REPO_DIR / "configs"
