"""Hand-built run directories for the report and regress tests (real Sample records in a real run store)."""

from __future__ import annotations

from pathlib import Path

from pspo_eval.records import Sample
from pspo_eval.store import RunStore


def rec(model: str, dataset: str, pid: str, correct: bool, *, t: float = 0.0, idx: int = 0, max_new: int = 64,
        category: str | None = None, level: str | None = None, tokens: int = 20, finish: str = "stop",
        model_id: str | None = None, extracted: str | None = None, setting: str | None = None) -> Sample:
    setting = setting or f"t{t:g}-p1-m{max_new}-abc123"
    return Sample(
        key=f"{model}|{dataset}|{pid}|{setting}|{idx}", model=model, model_id=model_id or f"org/{model}-135M-instruct",
        dataset=dataset, problem_id=pid, sample_index=idx, setting=setting, temperature=t, top_p=1.0,
        max_new_tokens=max_new, seed=idx, prompt="<prompt>", response="<response>", finish_reason=finish,
        prompt_tokens=5, completion_tokens=tokens, gold="7", extracted=extracted or ("7" if correct else "8"),
        correct=correct, strict=correct, method="hash", category=category, level=level,
    )


def write_run(root: Path, samples: list[Sample], *, config_hash: str = "cfg0", checksums: dict | None = None,
              status: str = "complete") -> Path:
    """A run directory as `pspo-eval evaluate` leaves it: manifest + one shard per (model, dataset, setting)."""
    store = RunStore(root)
    models = list(dict.fromkeys(s.model for s in samples))
    datasets = list(dict.fromkeys(s.dataset for s in samples))
    store.write_manifest({
        "kind": "pspo-eval run", "created": "2025-01-01T00:00:00+0000", "ended": "2025-01-01T00:10:00+0000",
        "config": {"models": [{"name": m, "ref": f"org/{m}"} for m in models], "datasets": datasets},
        "config_hash": config_hash, "git_revision": "0123456789abcdef", "versions": {"python": "3.x", "torch": "2.x"},
        "dataset_checksums": checksums if checksums is not None else {d: f"sha-{d}" for d in datasets},
        "backends": {m: {"backend": "hf"} for m in models},
        "history": [{"command": "evaluate", "status": status}],
    })
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.model, s.dataset, s.setting), []).append(s)
    for (model, dataset, setting), rows in groups.items():
        store.shard("samples", model, dataset, setting).append(rows)
    return root


def greedy(model: str, dataset: str, verdicts: list[bool], **kw) -> list[Sample]:
    """One greedy sample per problem p0, p1, … with the given correctness."""
    return [rec(model, dataset, f"{dataset}-{i}", ok, **kw) for i, ok in enumerate(verdicts)]


def pattern(n: int, correct: int) -> list[bool]:
    """n verdicts of which the first `correct` are right."""
    return [i < correct for i in range(n)]
