"""A run directory written before the typed read path (issue #15) reads back and reports byte for byte.

``tests/data/run_before_15/run`` was written by main before the change; ``expected/`` holds the
results.json and report tables main computed from it (``"run"`` replaced by RUN_DIR).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pspo_eval.metrics import compute_results
from pspo_eval.report.build import make_report
from pspo_eval.store import RunStore, atomic_write_json

DATA = Path(__file__).parent / "data" / "run_before_15"


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / "run", tmp_path / "base_run"))  # the run name is in the tables


def test_results_json_is_byte_identical(tmp_path):
    run = _copy(tmp_path)
    atomic_write_json(run / "results.json", compute_results(RunStore(run)).to_json())
    expected = (DATA / "expected" / "results.json").read_text(encoding="utf-8")
    assert (run / "results.json").read_text(encoding="utf-8") == expected.replace('"RUN_DIR"', json.dumps(str(run)))


def test_report_tables_are_byte_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    result = make_report([_copy(tmp_path)], tmp_path / "report", baseline="base", n_boot=200)
    for want in sorted((DATA / "expected" / "tables").iterdir()):
        assert (result.out / "tables" / want.name).read_bytes() == want.read_bytes(), want.name
