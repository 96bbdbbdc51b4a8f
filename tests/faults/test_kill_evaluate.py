"""SIGKILL `pspo-eval evaluate` at random moments (several seeds): the reruns end exactly where a clean run does."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    started = time.perf_counter()
    subprocess.run(_cmd(out), check=True, env=_env(), capture_output=True, timeout=900)
    return _records(out), time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_random_sigkills_then_rerun_match_a_clean_run(clean, tmp_path, seed):
    clean, clean_s = clean
    rng = random.Random(seed)
    out = tmp_path / "run"
    kills = 0
    for _attempt in range(12):
        proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        # Kill anywhere from start-up (before the manifest exists) to deep into generation: the
        # window is relative to this machine's own clean run, so kills land however fast it is.
        delay = rng.uniform(0.05, 0.6) * clean_s
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0
        break
    else:
        final = subprocess.run(_cmd(out), env=_env(), capture_output=True, text=True, timeout=900)
        assert final.returncode == 0, final.stderr[-2000:]
    assert kills >= 1, f"no kill landed: the clean run took {clean_s:.1f} s"
    assert _records(out) == clean
    results = json.loads((out / "results.json").read_text())
    assert sum(r["samples"] for r in results["rows"]) == len(clean)
