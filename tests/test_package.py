"""The bundled data lives inside the package and is found by name from any directory.

The wheel itself is built, installed into a fresh venv and used from outside the checkout by
`.ci/wheel_check.sh` (too slow for a unit test); these tests pin the lookups it relies on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from pspo_eval import paths
from pspo_eval.errors import PspoError
from pspo_eval.judge.rubric import resolve_rubric_path
from pspo_eval.pipeline import load_experiment, resolve_experiment_path
from pspo_eval.train.config import list_presets, resolve_config_path


def test_resources_live_inside_the_package():
    root = paths.resources_dir()
    assert root.parent == paths.PACKAGE_DIR
    for folder in (paths.datasets_dir(), paths.rubrics_dir(), paths.configs_dir(), paths.experiments_dir()):
        assert folder.parent == root and any(folder.iterdir()), folder
    # A data folder named `datasets` must never become an importable package (it would shadow HF datasets).
    assert not list(root.rglob("__init__.py"))
    assert not (paths.REPO_DIR / "datasets").exists()


def test_package_data_ships_the_whole_resources_tree():
    # setuptools' package-data glob: every file under resources/, at any depth, goes into the wheel.
    config = tomllib.loads((paths.REPO_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["setuptools"]["package-data"]["pspo_eval"] == ["resources/**/*"]


def test_bundled_names_resolve_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_experiment_path("demo") == paths.experiments_dir() / "demo.yaml"
    assert load_experiment("paper-0.5b").name
    assert resolve_rubric_path("math_pairwise") == paths.rubrics_dir() / "math_pairwise.yaml"
    assert resolve_config_path("paper/qwen2.5-0.5b-pspo").is_file()
    assert "demo-cpu" in list_presets()


def test_repository_paths_from_before_the_move_still_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_experiment_path("experiments/demo.yaml") == paths.experiments_dir() / "demo.yaml"
    assert resolve_rubric_path("rubrics/math_response_quality.yaml") == (
        paths.rubrics_dir() / "math_response_quality.yaml"
    )
    assert resolve_config_path("configs/demo-cpu.yaml") == paths.configs_dir() / "demo-cpu.yaml"


def test_a_file_in_the_current_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "demo.yaml"
    mine.write_text((paths.experiments_dir() / "demo.yaml").read_text(encoding="utf-8").replace(
        "name: demo", "name: mine"), encoding="utf-8")
    assert resolve_experiment_path("demo.yaml") == Path("demo.yaml")
    assert load_experiment("demo.yaml").name == "mine"


def test_unknown_experiment_names_the_bundled_ones():
    with pytest.raises(PspoError) as info:
        resolve_experiment_path("nope")
    assert "demo" in info.value.one_line() and "paper-0.5b" in info.value.one_line()


def test_git_revision_only_for_our_own_checkout(tmp_path, monkeypatch):
    from pspo_eval.evaluate import git_revision

    assert paths.source_checkout() == paths.REPO_DIR  # the tests run from the checkout
    # An installed wheel: site-packages holds no pyproject.toml of ours, even inside another git repo.
    monkeypatch.setattr(paths, "REPO_DIR", tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "something-else"\n', encoding="utf-8")
    assert paths.source_checkout() is None
    assert git_revision() is None
