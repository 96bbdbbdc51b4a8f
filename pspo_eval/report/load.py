"""Reading run directories for the report: sample records grouped per model, dataset and temperature.

Why a layer of its own: several runs can be combined (a base-model run and a run of trained
checkpoints), and the report must never silently merge two different things under one name. So

- a model is keyed by (run, label). A label that occurs in two runs gets a display name that says
  which run it came from (``base (run1)``), and a warning is printed;
- within one (run, model, dataset, temperature) there must be exactly one sampling setting (one
  token budget, prompt and seed). Two settings at the same temperature (e.g. a run resumed with a
  different ``--max-new-tokens``) are refused with a one-line error naming them, instead of pooling
  records that answer different questions.

Records are read back as :class:`~pspo_eval.records.SampleVerdict`: the prompt and response texts
are dropped on load (the report needs verdicts and lengths, and a full evaluation's texts can run
to gigabytes).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pspo_eval.errors import PspoError
from pspo_eval.records import SampleVerdict
from pspo_eval.store import RunManifest, RunStore, Shard

DATASET_TITLES = {"gsm8k": "GSM8K", "svamp": "SVAMP", "asdiv": "ASDiv", "math500": "MATH-500"}
# Column order of the paper's Table 1; other datasets follow in the order they were first seen.
PAPER_DATASETS = ("gsm8k", "svamp", "asdiv", "math500")


def dataset_title(name: str) -> str:
    return DATASET_TITLES.get(name, name)


@dataclass
class ModelRef:
    """One model of one run. ``name`` is what tables print; ``label`` is the records' ``model`` field."""

    run_index: int
    run_name: str
    label: str
    name: str
    model_id: str | None = None
    size: str | None = None  # "135M", "1.5B", … when known
    size_value: float | None = None  # parameters, for ordering groups

    @property
    def key(self) -> tuple[int, str]:
        return (self.run_index, self.label)


@dataclass
class Group:
    """The records of one (model, dataset, temperature): one sampling setting."""

    model: ModelRef
    dataset: str
    temperature: float
    setting: str
    records: list[SampleVerdict]

    def greedy(self) -> list[SampleVerdict]:
        """The first sample of every problem (greedy pass@1 uses only these, and only at T = 0)."""
        return [r for r in self.records if r.sample_index == 0]


@dataclass
class RunInfo:
    path: Path
    name: str
    manifest: RunManifest


@dataclass
class Collection:
    """Everything the report reads from the run stores."""

    runs: list[RunInfo]
    models: list[ModelRef]
    groups: dict[tuple[tuple[int, str], str, float], Group] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def datasets(self) -> list[str]:
        seen = {d for (_, d, _) in self.groups}
        ordered = [d for d in PAPER_DATASETS if d in seen]
        extra = []
        for _, d, _ in self.groups:
            if d not in ordered and d not in extra:
                extra.append(d)
        return ordered + extra

    def temperatures(self) -> list[float]:
        return sorted({t for (_, _, t) in self.groups})

    def group(self, model: ModelRef, dataset: str, temperature: float) -> Group | None:
        return self.groups.get((model.key, dataset, temperature))

    def greedy(self, model: ModelRef, dataset: str) -> list[SampleVerdict] | None:
        """Greedy first samples of a model on a dataset, or None when it has no T = 0 setting."""
        group = self.group(model, dataset, 0.0)
        return group.greedy() if group else None

    def model_named(self, name: str) -> ModelRef:
        """Resolve a model by its display name, or by its label when that is unambiguous."""
        for m in self.models:
            if m.name == name:
                return m
        matches = [m for m in self.models if m.label == name]
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(m.name for m in self.models)
        if matches:
            raise PspoError(f"model '{name}' is in several runs", f"name one of: {names}")
        raise PspoError(f"no model named '{name}' in the given runs", f"models: {names}")


def parse_size(text: str | None) -> tuple[str, float] | None:
    """A parameter count written in a model name (``smollm2-135m``, ``Qwen2.5-1.5B``): ('135M', 1.35e8)."""
    if not text:
        return None
    for part in reversed(re.split(r"[/\\]", text)):
        for token in re.split(r"[-_ ]", part):
            m = re.fullmatch(r"(\d+(?:\.\d+)?)([mMbB])", token)
            if m:
                number, unit = float(m.group(1)), m.group(2).upper()
                return f"{m.group(1)}{unit}", number * (1e6 if unit == "M" else 1e9)
    return None


def model_size(model_id: str | None) -> tuple[str, float] | None:
    """The base model size of a model reference: from its name, or for a trainer checkpoint from the
    ``model.path`` of the training config saved next to it (``config.yaml``)."""
    found = parse_size(model_id)
    if found or not model_id:
        return found
    config = Path(model_id) / "config.yaml"
    if config.is_file():
        try:
            import yaml

            data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            return parse_size(str((data.get("model") or {}).get("path") or ""))
        except (OSError, ValueError, AttributeError):
            return None
    return None


def _run_names(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def load_runs(paths: Sequence[str | Path]) -> Collection:
    """Read the sample records of every run directory (see the module docstring)."""
    if not paths:
        raise PspoError("no run directory given", "pass --run RUN_DIR (repeatable)")
    resolved = [Path(p) for p in paths]
    seen_paths: set[Path] = set()
    for p in resolved:
        if not p.is_dir():
            raise PspoError(f"--run {p}: no such directory", "give a directory written by `pspo-eval evaluate`")
        if not (p / "manifest.json").exists() and not (p / "samples").is_dir():
            raise PspoError(f"--run {p} is not a run directory (no manifest.json, no samples/)",
                            "give a directory written by `pspo-eval evaluate`")
        real = p.resolve()
        if real in seen_paths:
            raise PspoError(f"--run {p} is given twice", "give each run directory once")
        seen_paths.add(real)
    names = _run_names(resolved)
    runs: list[RunInfo] = []
    per_run: list[dict[str, dict[tuple[str, float], dict[str, list[SampleVerdict]]]]] = []
    for path, name in zip(resolved, names):
        store = RunStore(path)
        runs.append(RunInfo(path=path, name=name, manifest=store.manifest()))
        # label -> (dataset, temperature) -> setting -> records
        tree: dict[str, dict[tuple[str, float], dict[str, list[SampleVerdict]]]] = defaultdict(lambda: defaultdict(dict))
        for rec in store.read_records("samples", SampleVerdict, readonly=True):
            tree[rec.model][(rec.dataset, rec.temperature)].setdefault(rec.setting, []).append(rec)
        if not tree:
            raise PspoError(f"--run {path} holds no sample records", "run `pspo-eval evaluate` into it first")
        per_run.append(tree)

    # Models, in run order and then in each run's configured order.
    label_count: dict[str, int] = defaultdict(int)
    for tree in per_run:
        for label in tree:
            label_count[label] += 1
    warnings: list[str] = []
    models: list[ModelRef] = []
    groups: dict[tuple[tuple[int, str], str, float], Group] = {}
    for index, (run, tree) in enumerate(zip(runs, per_run)):
        order = run.manifest.model_names
        labels = sorted(tree, key=lambda lbl: (order.index(lbl) if lbl in order else len(order), lbl))
        for label in labels:
            display = label if label_count[label] == 1 else f"{label} ({run.name})"
            if label_count[label] > 1 and f"'{label}'" not in " ".join(warnings):
                warnings.append(f"model '{label}' occurs in several runs; they are kept apart as "
                                f"'{label} (<run>)' (label them differently with NAME=PATH to avoid this)")
            first = next(iter(next(iter(tree[label].values())).values()))[0]
            size = model_size(first.model_id)
            ref = ModelRef(index, run.name, label, display, first.model_id,
                           size[0] if size else None, size[1] if size else None)
            models.append(ref)
            for (dataset, temperature), settings in tree[label].items():
                if len(settings) > 1:
                    listed = ", ".join(f"{s} ({len(v)} samples)" for s, v in sorted(settings.items()))
                    raise PspoError(
                        f"run {run.path}: model '{label}' has {len(settings)} sampling settings at T={temperature:g} "
                        f"on {dataset}: {listed}; the report will not pool them",
                        f"keep one: move the other shard(s) out of {run.path}/samples/ or evaluate each "
                        "configuration into its own run directory",
                    )
                setting, records = next(iter(settings.items()))
                groups[(ref.key, dataset, temperature)] = Group(ref, dataset, temperature, setting, records)
    return Collection(runs=runs, models=models, groups=groups, warnings=warnings)


def read_jsonl_readonly(path: Path) -> list[dict]:
    """The records of a JSON Lines file another process may be appending to (see Shard.iter_dicts)."""
    return list(Shard(path).iter_dicts(readonly=True))
