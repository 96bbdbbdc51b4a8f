"""A run written by an older commit resumes and reports identically with today's code.

The fixture (tests/fixtures/old_run, made by its make_fixture.py) holds a LoRA training run of the
tiny test model cut after its step-2 checkpoint, an evaluation run with imported verdicts, and what
the old code gave for the uninterrupted run and its report. Whatever moves inside the package, the
formats on disk and the numbers computed from them must not.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "old_run"
sys.path.insert(0, str(FIXTURE))

import make_fixture  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    make_fixture.workspace(work)
    for name in ("train", "eval"):
        shutil.copytree(FIXTURE / name, work / name)
    return work


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def _without_times(report: str) -> str:
    """The report names when it was generated, when the runs ran and the code revision that last
    touched them (the rerun of evaluate records today's): everything else must match."""
    report = re.sub(r"git `[0-9a-f]{40}`", "git <revision>", report)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\+0000|Z)", "<time>", report)


def test_an_old_training_run_resumes_to_the_uninterrupted_result(old_run: Path):
    make_fixture.cli(old_run, "train", "--resume", "--out", "train", "--quiet")
    expected = json.loads((FIXTURE / "expected" / "metrics.json").read_text())
    assert make_fixture.untimed(old_run / "train" / "metrics.jsonl") == expected
    assert [r["step"] for r in expected] == [1, 2, 3, 4]
    digest = (FIXTURE / "expected" / "final_adapter.sha256").read_text().strip()
    assert make_fixture.adapter_digest(old_run / "train" / "final") == digest


def test_an_old_evaluation_run_is_complete_and_reports_identically(old_run: Path):
    before = _files(old_run / "eval")
    make_fixture.cli(old_run, "evaluate", "--model", "tiny=model", "--datasets", "gsm8k", "--limit", "3",
                     "--max-new-tokens", "8", "--batch-size", "3", "--dtype", "float32", "--out", "eval")
    after = _files(old_run / "eval")
    old_manifest, new_manifest = (json.loads(x.pop("manifest.json")) for x in (before, after))
    assert after == before  # samples, results and verdicts: nothing regenerated, nothing rewritten
    assert new_manifest["config_hash"] == old_manifest["config_hash"]
    assert new_manifest["history"][:-1] == old_manifest["history"]  # the rerun only adds its own entry
    assert new_manifest["history"][-1]["pending_at_start"] == 0
    make_fixture.cli(old_run, "train", "--resume", "--out", "train", "--quiet")
    make_fixture.cli(old_run, "report", "--run", "eval", "--train", "train", "--out", "report", "--n-boot", "200")
    got = (old_run / "report" / "report.md").read_text(encoding="utf-8")
    want = (FIXTURE / "expected" / "report.md").read_text(encoding="utf-8")
    assert " · generated " in want.splitlines()[2]
    assert _without_times(got) == _without_times(want)
