"""Which responses are judged.

By default: for every (model, dataset, problem), the greedy setting's (temperature 0) first sample
(``sample_index`` 0). Where a model has no greedy setting for a dataset, its lowest-temperature
setting is used, with a warning; ``setting=`` names one explicitly.

``per_dataset=N`` judges a seeded, stratified sample of N problems per dataset instead of all: the
problems every selected model answered, grouped by ``category`` (one group when there is none),
N split over the groups in proportion to their size (largest remainders), and drawn with a random
generator seeded by (seed, dataset). Every model is judged on the same problems, so comparisons
between models are paired.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable

from pspo_eval.console import warn
from pspo_eval.errors import PspoError
from pspo_eval.store import RunStore, stable_hash

Key = tuple[str, str, str]  # (model, dataset, problem_id)
_REQUIRED = ("key", "model", "dataset", "problem_id", "setting", "response")


def load_samples(store: RunStore) -> list[dict]:
    """Every Sample record of a run (as dicts), checked for the fields the judge needs."""
    shards = store.shards("samples")
    if not shards:
        raise PspoError(f"{store.root} has no samples (no samples/**/*.jsonl)",
                        "run `pspo-eval evaluate` into this directory first, or check --run")
    out = []
    for shard in shards:
        for record in shard.iter_dicts():
            missing = [f for f in _REQUIRED if f not in record]
            if missing:
                raise PspoError(f"{shard.path}: a record lacks {', '.join(missing)}",
                                "the file is not a pspo-eval samples shard; remove it or regenerate it")
            out.append(record)
    return out


def _filter(samples: Iterable[dict], field: str, wanted: list[str] | None, what: str) -> list[dict]:
    samples = list(samples)
    if not wanted:
        return samples
    have = {s[field] for s in samples}
    unknown = [w for w in wanted if w not in have]
    if unknown:
        raise PspoError(f"no samples for {what} {', '.join(unknown)} in this run",
                        f"known {what}s: {', '.join(sorted(have)) or 'none'}")
    return [s for s in samples if s[field] in set(wanted)]


def pick_responses(
    samples: list[dict],
    *,
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    setting: str | None = None,
) -> dict[Key, dict]:
    """One sample per (model, dataset, problem): the chosen setting's sample_index 0."""
    samples = _filter(samples, "model", models, "model")
    samples = _filter(samples, "dataset", datasets, "dataset")
    samples = [s for s in samples if s.get("finish_reason") != "error"]
    by_group: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by_group[(s["model"], s["dataset"])][s["setting"]].append(s)
    chosen: dict[Key, dict] = {}
    for (model, dataset), settings in sorted(by_group.items()):
        if setting is not None:
            if setting not in settings:
                raise PspoError(f"model {model} has no setting '{setting}' on {dataset}",
                                f"its settings: {', '.join(sorted(settings))}")
            name = setting
        else:
            greedy = sorted(n for n, rows in settings.items() if float(rows[0].get("temperature", 1.0)) == 0.0)
            if greedy:
                name = greedy[0]
            else:
                name = min(settings, key=lambda n: (float(settings[n][0].get("temperature", 1.0)), n))
                warn(f"{model} on {dataset} has no greedy (temperature 0) setting; judging setting '{name}'")
        for s in sorted(settings[name], key=lambda r: (r["problem_id"], int(r.get("sample_index", 0)))):
            key = (model, dataset, s["problem_id"])
            if key not in chosen and int(s.get("sample_index", 0)) == 0:
                chosen[key] = s
    if not chosen:
        raise PspoError("no responses to judge after filtering", "check --model / --dataset / --setting")
    return chosen


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split n over groups in proportion to their sizes (largest remainders; never more than a group has)."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    raw = {g: n * size / total for g, size in sizes.items()}
    alloc = {g: min(sizes[g], int(raw[g])) for g in sizes}
    left = n - sum(alloc.values())
    for g in sorted(sizes, key=lambda g: (-(raw[g] - int(raw[g])), g)):
        if left <= 0:
            break
        if alloc[g] < sizes[g]:
            alloc[g] += 1
            left -= 1
    return alloc


def stratified_problems(chosen: dict[Key, dict], per_dataset: int, seed: int) -> set[tuple[str, str]]:
    """The (dataset, problem_id) pairs of the seeded stratified sample (see the module docstring)."""
    if per_dataset < 1:
        raise PspoError(f"--per-dataset must be at least 1, got {per_dataset}")
    models_by_dataset: dict[str, set[str]] = defaultdict(set)
    problems: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # dataset -> pid -> models
    category: dict[tuple[str, str], str] = {}
    for (model, dataset, pid), s in chosen.items():
        models_by_dataset[dataset].add(model)
        problems[dataset][pid].add(model)
        category.setdefault((dataset, pid), str(s.get("category") or "(none)"))
    picked: set[tuple[str, str]] = set()
    for dataset in sorted(problems):
        common = sorted(pid for pid, ms in problems[dataset].items() if ms == models_by_dataset[dataset])
        groups: dict[str, list[str]] = defaultdict(list)
        for pid in common:
            groups[category[(dataset, pid)]].append(pid)
        alloc = allocate({g: len(v) for g, v in groups.items()}, per_dataset)
        rng = random.Random(stable_hash(["judge-sample", seed, dataset]))
        for g in sorted(groups):
            picked.update((dataset, pid) for pid in rng.sample(groups[g], alloc[g]))
    return picked
