"""SIGKILL `pspo-eval train` at random moments (several seeds), then `--resume` until it finishes.

The resumed run must end with the parameters of an uninterrupted run, bitwise (CPU, fp32), one
metrics line per step and no step missing or repeated. A kill can land anywhere: during start-up,
in a rollout, in an update, or while a checkpoint is being written (checkpoints are written to a
temporary directory and renamed, so a half-written one is never resumed from).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import kill_at_progress
from train_helpers import tiny_config, tiny_workspace

from pspo_eval.train.config import dump_config

STEPS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root, model, data = tiny_workspace(tmp_path_factory.mktemp("killtrain"))
    cfg = tiny_config(
        model,
        data,
        train={"num_iterations": 2, "max_steps": STEPS, "prompts_per_step": 2, "micro_batch_size": 4},
        optim={"learning_rate": 3e-3, "schedule": "linear", "warmup_steps": 1},
        checkpoint={"save_every": 1, "keep_last": 2, "save_final": True},
    )
    config = root / "config.yaml"
    config.write_text(dump_config(cfg), encoding="utf-8")
    env = {**os.environ, "PSPO_EVAL_QUIET": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    clean = root / "clean"
    subprocess.run(_cmd(config, clean), check=True, env=env, capture_output=True, timeout=600)
    return config, env, clean


def _cmd(config: Path, out: Path, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "pspo_eval", "train", "--config", str(config), "--out", str(out), "--quiet",
            *(["--resume"] if resume else [])]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "final" / "model.safetensors"))


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (path / "metrics.jsonl").read_text().splitlines()]


def _logged(path: Path) -> int:
    """Complete metrics lines so far (a line cut by a kill is not counted)."""
    try:
        return (path / "metrics.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_random_sigkills_then_resume_match_an_uninterrupted_run(setup, tmp_path, seed):
    config, env, clean = setup
    rng = random.Random(seed)
    out = tmp_path / "run"
    kills = 0
    for attempt in range(15):
        # the first attempt starts the run, every later one is the user's `--resume`
        proc = subprocess.Popen(_cmd(config, out, resume=attempt > 0), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        # Kill once a random number of steps is logged, a random moment later (the first attempt
        # at once, so at least one kill lands before the run can finish): start-up, rollouts,
        # updates and checkpoint writes all get hit across attempts.
        done = _logged(out)
        target = rng.randint(done, max(done, STEPS - 1))  # all logged: the final save is left to hit
        extra = 0.0 if attempt == 0 else rng.uniform(0.0, 3.0)
        if kill_at_progress(proc, lambda: _logged(out), target, extra):
            kills += 1
            continue
        _, err = proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
        break
    else:
        final = subprocess.run(_cmd(config, out, resume=True), env=env, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr[-2000:]
    assert kills >= 1

    a, b = _weights(clean), _weights(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _steps(out) == list(range(1, STEPS + 1)) == _steps(clean)
    # no half-written checkpoint left behind (the flock'd .lock file stays, as in every run directory)
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    got, want = sorted(p.name for p in out.iterdir()), sorted(p.name for p in clean.iterdir())
    ckpt = [n for n in got if n.startswith("checkpoint-")]
    assert ckpt[-1:] == [n for n in want if n.startswith("checkpoint-")][-1:] and len(ckpt) <= 2, (got, want)  # keep_last
    assert {n for n in want if not n.startswith("checkpoint-")} <= set(got), (got, want)
