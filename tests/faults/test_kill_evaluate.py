"""SIGKILL `pspo-eval evaluate` at random moments (several seeds): the reruns end exactly where a clean run does."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_at_progress

from pspo_eval.store import RunStore

ARGS = ["-m", "demo=smollm2-135m-instruct", "--datasets", "gsm8k,math500", "--limit", "3",
        "--max-new-tokens", "12", "--dtype", "fp32", "--batch-size", "1"]


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "pspo_eval", "evaluate", *ARGS, "--out", str(out)]


def _env() -> dict:
    return {**os.environ, "PSPO_EVAL_QUIET": "1"}


def _records(run: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for shard in RunStore(run).shards("samples"):
        for line in shard.path.read_text().splitlines():
            r = json.loads(line)
            assert r["key"] not in out, "a record was written twice"
            out[r["key"]] = (r["response"], r["finish_reason"], r["correct"], r["extracted"])
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    subprocess.run(_cmd(out), check=True, env=_env(), capture_output=True, timeout=900)
    return _records(out)


def _written(run: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in run.glob("samples/**/*.jsonl")) if run.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_random_sigkills_then_rerun_match_a_clean_run(clean, tmp_path, seed):
    rng = random.Random(seed)
    out = tmp_path / "run"
    kills = 0
    for attempt in range(12):
        proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        # Kill anywhere from start-up (before the manifest exists) to deep into generation: once a
        # random number of records is on disk, a random moment later (the first attempt at once,
        # so at least one kill lands before the run can finish).
        have = _written(out)
        target = rng.randint(have, max(have, len(clean) - 1))
        extra = 0.0 if attempt == 0 else rng.uniform(0.0, 2.0)
        if kill_at_progress(proc, lambda: _written(out), target, extra):
            kills += 1
            continue
        assert proc.returncode == 0
        break
    else:
        final = subprocess.run(_cmd(out), env=_env(), capture_output=True, text=True, timeout=900)
        assert final.returncode == 0, final.stderr[-2000:]
    assert kills >= 1
    assert _records(out) == clean
    results = json.loads((out / "results.json").read_text())
    assert sum(r["samples"] for r in results["rows"]) == len(clean)
