"""Baselines for ``pspo-eval regress``: per (model, dataset) greedy verdicts per problem, plus provenance.

A baseline file is small JSON (one boolean per problem), so it can be committed next to the CI
workflow and compared with any later run on exactly the same problems::

    {"format": "pspo-eval-baseline", "version": 1, "created": "…",
     "source": {"run": "runs/base", "config_hash": "…", "git_revision": "…",
                "dataset_checksums": {…}, "versions": {…}},
     "models": {"base": {"model_id": "…", "datasets": {
         "gsm8k": {"setting": "t0-p1-m128-…", "max_new_tokens": 128, "n": 200, "correct": 61,
                   "accuracy": 0.305, "problems": {"gsm8k-test-0000": true, …}}}}}}

A run directory can stand in for a baseline file anywhere: it is read the same way (greedy first
samples at temperature 0), so "regress against another run" and "regress against a saved
baseline" are one code path.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pspo_eval.errors import PspoError

FORMAT = "pspo-eval-baseline"
VERSION = 1


@dataclass
class DatasetBaseline:
    setting: str | None
    max_new_tokens: int | None
    problems: dict[str, bool]

    @property
    def n(self) -> int:
        return len(self.problems)

    @property
    def accuracy(self) -> float:
        return sum(self.problems.values()) / len(self.problems) if self.problems else float("nan")


@dataclass
class ModelBaseline:
    model_id: str | None
    datasets: dict[str, DatasetBaseline] = field(default_factory=dict)


@dataclass
class Baseline:
    where: str  # the file or run directory it was read from
    source: dict[str, Any]
    models: dict[str, ModelBaseline]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": self.source,
            "models": {
                name: {"model_id": m.model_id, "datasets": {
                    d: {"setting": b.setting, "max_new_tokens": b.max_new_tokens, "n": b.n,
                        "correct": sum(b.problems.values()), "accuracy": b.accuracy,
                        "problems": dict(sorted(b.problems.items()))}
                    for d, b in m.datasets.items()}}
                for name, m in self.models.items()
            },
        }


def from_run(run_dir: str | Path, models: list[str] | None = None) -> Baseline:
    """The greedy verdicts of a run directory (optionally only some of its models)."""
    from pspo_eval.report.load import load_runs

    coll = load_runs([run_dir])
    wanted = [coll.model_named(name) for name in models] if models else coll.models
    out: dict[str, ModelBaseline] = {}
    for m in wanted:
        entry = ModelBaseline(m.model_id)
        for d in coll.datasets():
            group = coll.group(m, d, 0.0)
            if group is None:
                continue
            recs = group.greedy()
            entry.datasets[d] = DatasetBaseline(group.setting, recs[0].max_new_tokens if recs else None,
                                                {r.problem_id: r.correct for r in recs})
        if entry.datasets:
            out[m.label] = entry
    if not out:
        raise PspoError(f"{run_dir} has no greedy (temperature 0) samples",
                        "a baseline pairs greedy answers: evaluate with --temperature 0 (the default)")
    manifest = coll.runs[0].manifest
    source = {"run": str(Path(run_dir)), "config_hash": manifest.config_hash,
              "git_revision": manifest.git_revision, "dataset_checksums": manifest.dataset_checksums or {},
              "versions": manifest.versions or {}, "ended": manifest.ended}
    return Baseline(str(run_dir), source, out)


def save_baseline(run_dir: str | Path, out: str | Path, models: list[str] | None = None) -> Baseline:
    from pspo_eval.store import atomic_write_json

    baseline = from_run(run_dir, models)
    out = Path(out)
    if out.is_dir():
        raise PspoError(f"--out {out} is a directory", "give a file name, e.g. --out baseline.json")
    atomic_write_json(out, baseline.to_json())
    return baseline


def load_baseline(path: str | Path) -> Baseline:
    """A baseline file written by ``pspo-eval baseline save``, or a run directory."""
    path = Path(path)
    if path.is_dir():
        return from_run(path)
    if not path.is_file():
        raise PspoError(f"--baseline {path}: no such file or run directory",
                        "give a file from `pspo-eval baseline save` or a run directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PspoError(f"--baseline {path} is not valid JSON ({exc.__class__.__name__})",
                        "regenerate it with `pspo-eval baseline save`") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PspoError(f"--baseline {path} is not a pspo-eval baseline file (no \"format\": \"{FORMAT}\")",
                        "create one with `pspo-eval baseline save --run RUN_DIR --out baseline.json`")
    if data.get("version") != VERSION:
        raise PspoError(f"--baseline {path} has format version {data.get('version')!r}; this pspo-eval reads {VERSION}",
                        "regenerate it with this version's `pspo-eval baseline save`")
    models: dict[str, ModelBaseline] = {}
    try:
        for name, m in data["models"].items():
            entry = ModelBaseline(m.get("model_id"))
            for d, b in m["datasets"].items():
                problems = b["problems"]
                if not isinstance(problems, dict) or not all(isinstance(v, bool) for v in problems.values()):
                    raise TypeError(f"models.{name}.datasets.{d}.problems must map problem ids to true/false")
                entry.datasets[d] = DatasetBaseline(b.get("setting"), b.get("max_new_tokens"), dict(problems))
            models[name] = entry
    except (KeyError, TypeError, AttributeError) as exc:
        raise PspoError(f"--baseline {path} is malformed ({exc})", "regenerate it with `pspo-eval baseline save`") from exc
    if not models:
        raise PspoError(f"--baseline {path} holds no model", "regenerate it with `pspo-eval baseline save`")
    return Baseline(str(path), data.get("source") or {}, models)
