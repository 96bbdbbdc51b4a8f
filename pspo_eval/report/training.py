"""Training curves from trainer output directories (``OUT/metrics.jsonl`` and ``OUT/config.yaml``).

The trainer writes one JSON object per optimizer step (see :mod:`pspo_eval.train.metrics` for the
keys). Which keys exist depends on the objective (clip fractions for GRPO-clip, the smoothed
deviation for GR-PSPO), on β (``kl``) and on the version of the trainer, so everything here is
"plot what exists": a panel is drawn when at least one run has the key, a missing value is a gap.

The file is read without modifying it (a trainer may still be appending to it): a partial last
line is skipped, never truncated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pspo_eval.errors import PspoError
from pspo_eval.report.load import read_jsonl_readonly
from pspo_eval.report.tables import DASH, Cell, Table, num
from pspo_eval.store import stable_hash

METHOD_TITLES = {"pspo": "GR-PSPO", "clip": "GRPO-clip", "noclip": "GRPO-noclip", "gspo": "GSPO",
                 "cispo": "CISPO", "sapo": "SAPO"}

# (key, panel title, band keys (low, high) or None) in display order.
PANELS: list[tuple[str, str, tuple[str, str] | None]] = [
    ("reward/mean", "Reward (rollout mean)", None),
    ("eval/reward_mean", "Validation reward", None),
    ("completion_len/mean", "Completion length (tokens)", None),
    ("entropy", "Entropy (nats / token)", None),
    ("ratio/mean", "Probability ratio: mean (dashed: min, max)", ("ratio/min", "ratio/max")),
    ("clip/clipped", "Clipped token fraction", None),
    ("pspo/smoothed_deviation", "PSPO: mean |r̃ − 1|", None),
    ("kl", "KL to the reference", None),
    ("frac_zero_std", "Groups with zero reward spread", None),
    ("truncated_frac", "Truncated completions", None),
    ("grad_norm", "Gradient norm (before clipping)", None),
]


@dataclass
class TrainRun:
    path: Path
    label: str
    method: str | None  # objective name from config.yaml (pspo, clip, noclip, …)
    records: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None

    def series(self, key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in self.records:
            value = r.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                xs.append(float(r["step"]))
                ys.append(float(value))
        return xs, ys


def load_train_dirs(paths: Sequence[str | Path]) -> list[TrainRun]:
    """Read every ``--train DIR``; a directory without metrics.jsonl is a user error."""
    import yaml

    runs: list[TrainRun] = []
    for raw in paths:
        path = Path(raw)
        metrics = path / "metrics.jsonl"
        if not metrics.is_file():
            raise PspoError(f"--train {path}: no metrics.jsonl", "give the --out directory of `pspo-eval train`")
        records = [r for r in read_jsonl_readonly(metrics) if isinstance(r.get("step"), (int, float))]
        records.sort(key=lambda r: r["step"])
        config: dict[str, Any] = {}
        config_hash = None
        config_file = path / "config.yaml"
        if config_file.is_file():
            text = config_file.read_text(encoding="utf-8")
            try:
                config = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise PspoError(f"{config_file} is not valid YAML ({exc.__class__.__name__})",
                                "restore it from a checkpoint's config.yaml") from exc
            if not isinstance(config, dict):
                config = {}
            config_hash = stable_hash(config, 16)
        objective = config.get("objective") if isinstance(config.get("objective"), dict) else {}
        method = objective.get("name") if objective else None
        label = str(config.get("name") or METHOD_TITLES.get(str(method), method or path.name))
        runs.append(TrainRun(path, label, method, records, config, config_hash))
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    for r in runs:
        if counts[r.label] > 1:
            r.label = f"{r.label} ({r.path.name})"
    return runs


def present_panels(runs: list[TrainRun]) -> list[tuple[str, str, tuple[str, str] | None]]:
    return [p for p in PANELS if any(run.series(p[0])[1] for run in runs)]


def _tail_mean(run: TrainRun, key: str, fraction: float = 0.1, head: bool = False) -> float | None:
    _, ys = run.series(key)
    if not ys:
        return None
    n = max(1, int(round(len(ys) * fraction)))
    part = ys[:n] if head else ys[-n:]
    return sum(part) / len(part)


def training_table(runs: list[TrainRun]) -> Table:
    """Per training run: steps, reward at the start and end, length, entropy, clip fraction, validation."""
    columns = ["Run", "Objective", "Steps", "Reward, start", "Reward, end", "Length, end", "Entropy, end",
               "Clipped", "Val. reward, best"]
    rows, records = [], []
    for run in runs:
        steps = int(run.records[-1]["step"]) if run.records else 0
        r0, r1 = _tail_mean(run, "reward/mean", head=True), _tail_mean(run, "reward/mean")
        length, entropy = _tail_mean(run, "completion_len/mean"), _tail_mean(run, "entropy")
        clipped = _tail_mean(run, "clip/clipped", fraction=1.0)
        _, evals = run.series("eval/reward_mean")
        best = max(evals) if evals else None
        rows.append([Cell(run.label, title=str(run.path)), Cell(run.method or DASH), Cell(str(steps)), Cell(num(r0, 3)),
                     Cell(num(r1, 3)), Cell(num(length, 1)), Cell(num(entropy, 3)), Cell(num(clipped, 3)),
                     Cell(num(best, 3))])
        records.append({"run": run.label, "path": str(run.path), "objective": run.method, "steps": steps,
                        "reward_first": r0, "reward_last": r1, "length_last": length, "entropy_last": entropy,
                        "clipped_mean": clipped, "eval_reward_best": best, "config_hash": run.config_hash})
    caption = ("From each trainer's metrics.jsonl: 'start' and 'end' are means over the first and last 10% of the "
               "optimizer steps (at least one step); 'Clipped' is the mean clipped-token fraction over all steps; "
               "— where the trainer did not log the quantity.")
    return Table("training", "Training runs", columns, rows, caption, align=["l", "l"] + ["r"] * 7, records=records)
