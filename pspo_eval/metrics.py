"""Results of an evaluation run, computed from its Sample records (never from anything else).

Per (model, dataset, sampling setting):

- ``accuracy``: mean correctness over all samples; ``strict_accuracy`` likewise for strict.
- ``ci95``: Wilson interval when there is one sample per problem, else a bootstrap over problems
  (resampling whole problems, the mean of per-problem means).
- ``pass@k`` for k = 1, 2, 4, … ≤ K: the unbiased estimator averaged over problems.
- ``maj@k``: the exact expected majority-vote accuracy over all size-k subsets of a problem's
  samples (answers vote by their canonical form: the grader's canonical number for numeric
  benchmarks, whitespace-free LaTeX for MATH-500; ties split the credit), averaged over problems.
- breakdowns per category and per level, mean response tokens, truncation rate (finish ``length``),
  extraction-method counts, symbolic timeouts, wall time and throughput.

``problems`` is the number of distinct problems with at least one sample; ``samples_per_problem``
is the smallest number of samples any of them has (pass@k/maj@k use k ≤ that).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from pspo_eval.records import Sample, SampleVerdict
from pspo_eval.store import RunStore

# A stored sample as the metrics read it: the full record, its verdict, or (tests, old callers) a dict.
SampleLike = Sample | SampleVerdict | dict


class Breakdown(BaseModel):
    """Accuracy of the samples with one category (or level) value."""

    model_config = ConfigDict(extra="forbid")

    n: int
    accuracy: float


class GroupSummary(BaseModel):
    """The metrics of one (model, dataset, setting): one row of ``results.json`` (see the module docstring).

    The field order is the on-disk key order of results.json.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    model_id: str | None
    step: int | None
    dataset: str
    setting: str
    temperature: float
    top_p: float
    max_new_tokens: int
    problems: int
    samples: int
    samples_per_problem: int
    correct: int
    accuracy: float
    strict_accuracy: float
    ci95: tuple[float, float]
    ci_method: str
    pass_at_k: dict[str, float]
    maj_at_k: dict[str, float]
    mean_completion_tokens: float
    truncation_rate: float
    methods: dict[str, int]
    symbolic_timeouts: int
    by_category: dict[str, Breakdown]
    by_level: dict[str, Breakdown]
    generation_seconds: float
    samples_per_second: float | None
    tokens_per_second: float | None


class EvalResults(BaseModel):
    """``results.json``: every group of a run, summarised (derived; the records stay the truth)."""

    model_config = ConfigDict(extra="forbid")

    run: str
    config_hash: str | None
    rows: list[GroupSummary]

    def to_json(self) -> dict:
        """The JSON object written to results.json (same keys and order as the fields)."""
        return self.model_dump(mode="json")


def canonical_answer(dataset: str, extracted: str | None, gold: str | None = None) -> str | None:
    """The form in which answers vote for maj@k (exact text equality after canonicalisation)."""
    if extracted is None:
        return None
    from pspo_eval.grading import kind_of

    if kind_of(dataset, gold) == "numeric":
        return extracted.strip()
    from pspo_eval.grading.grader import normalize_latex

    return normalize_latex(extracted)


def iter_samples(store: RunStore) -> Iterable[Sample]:
    """Every sample of a run, read back as a :class:`Sample` (first record of each key)."""
    return store.read_records("samples", Sample)


def _powers_of_two(limit: int) -> list[int]:
    ks, k = [], 1
    while k <= limit:
        ks.append(k)
        k *= 2
    return ks


def _verdicts(samples: Sequence[SampleLike]) -> list[Sample | SampleVerdict]:
    return [SampleVerdict.model_validate(s) if isinstance(s, dict) else s for s in samples]


def _accuracy_ci(by_problem: dict[str, list], correct: int, n_samples: int, seed: int) -> tuple[float, float, str]:
    """Wilson with one sample per problem, else a bootstrap over problems."""
    from pspo_eval.stats import cluster_bootstrap_ci, wilson_interval

    if all(len(v) == 1 for v in by_problem.values()):
        low, high = wilson_interval(correct, n_samples)
        return low, high, "wilson"
    per_problem = [[float(s.correct) for s in v] for v in by_problem.values()]
    _, low, high = cluster_bootstrap_ci(per_problem, seed=seed)
    return low, high, "bootstrap-problems"


def _pass_and_maj(by_problem: dict[str, list], dataset: str, k_min: int) -> tuple[dict[str, float], dict[str, float]]:
    """Unbiased pass@k and exact maj@k for k = 1, 2, 4, … ≤ k_min, averaged over problems."""
    from pspo_eval.stats import maj_at_k, pass_at_k

    n_problems = len(by_problem)
    pass_k, maj_k = {}, {}
    for k in _powers_of_two(k_min):
        pass_k[str(k)] = sum(pass_at_k(len(v), sum(s.correct for s in v), k) for v in by_problem.values()) / n_problems
        maj_k[str(k)] = sum(
            maj_at_k([canonical_answer(dataset, s.extracted, s.gold) for s in v], [s.correct for s in v], k)
            for v in by_problem.values()
        ) / n_problems
    return pass_k, maj_k


def _breakdown(samples: list, field: str) -> dict[str, Breakdown]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        value = getattr(s, field)
        if value is not None:
            groups[str(value)].append(s.correct)
    return {k: Breakdown(n=len(v), accuracy=sum(v) / len(v)) for k, v in sorted(groups.items())}


def summarize_group(samples: Sequence[SampleLike], *, seed: int = 0) -> GroupSummary:
    """All metrics of one (model, dataset, setting) group of sample records."""
    samples = _verdicts(samples)
    by_problem: dict[str, list] = defaultdict(list)
    for s in samples:
        by_problem[s.problem_id].append(s)
    for lst in by_problem.values():
        lst.sort(key=lambda s: s.sample_index)
    n_samples = len(samples)
    k_min = min(len(v) for v in by_problem.values())
    correct = sum(s.correct for s in samples)
    first = samples[0]
    low, high, ci_method = _accuracy_ci(by_problem, correct, n_samples, seed)
    pass_k, maj_k = _pass_and_maj(by_problem, first.dataset, k_min)
    tokens = sum(s.completion_tokens for s in samples)
    seconds = sum(float(s.gen_seconds or 0.0) for s in samples)
    return GroupSummary(
        model=first.model, model_id=first.model_id, step=first.step, dataset=first.dataset, setting=first.setting,
        temperature=first.temperature, top_p=first.top_p, max_new_tokens=first.max_new_tokens,
        problems=len(by_problem), samples=n_samples, samples_per_problem=k_min, correct=correct,
        accuracy=correct / n_samples, strict_accuracy=sum(s.strict for s in samples) / n_samples,
        ci95=(low, high), ci_method=ci_method, pass_at_k=pass_k, maj_at_k=maj_k,
        mean_completion_tokens=tokens / n_samples,
        truncation_rate=sum(s.finish_reason == "length" for s in samples) / n_samples,
        methods=dict(Counter(s.method for s in samples).most_common()),
        symbolic_timeouts=sum(bool(s.timed_out) for s in samples),
        by_category=_breakdown(samples, "category"), by_level=_breakdown(samples, "level"),
        generation_seconds=seconds,
        samples_per_second=n_samples / seconds if seconds > 0 else None,
        tokens_per_second=tokens / seconds if seconds > 0 else None,
    )


def compute_results(store: RunStore) -> EvalResults:
    """Group every sample of the run and summarise each group (see module docstring)."""
    groups: dict[tuple, list[Sample]] = defaultdict(list)
    for s in iter_samples(store):
        groups[(s.model, s.dataset, s.setting)].append(s)
    manifest = store.read_manifest()
    order = [m["name"] for m in manifest.get("config", {}).get("models", [])]
    rows = [summarize_group(v) for v in groups.values()]
    rows.sort(key=lambda r: (order.index(r.model) if r.model in order else len(order), r.model, r.dataset,
                             r.temperature))
    return EvalResults(run=str(store.root), config_hash=manifest.get("config_hash"), rows=rows)


def results_table(results: EvalResults, title: str | None = None):
    """A rich table of the results (one row per model × dataset × setting)."""
    from rich.table import Table

    rows = results.rows
    kmax = max((r.samples_per_problem for r in rows), default=1)
    ks = _powers_of_two(kmax)
    table = Table(title=title, show_lines=False)
    for col in ("model", "dataset", "T", "n", "acc %", "95% CI", "strict %"):
        table.add_column(col, justify="left" if col in {"model", "dataset"} else "right")
    for k in ks[1:]:
        table.add_column(f"pass@{k}", justify="right")
        table.add_column(f"maj@{k}", justify="right")
    for col in ("tokens", "trunc %", "samples/s"):
        table.add_column(col, justify="right")
    for r in rows:
        cells = [
            r.model,
            r.dataset,
            f"{r.temperature:g}",
            f"{r.problems}" + (f"×{r.samples_per_problem}" if r.samples_per_problem > 1 else ""),
            f"{100 * r.accuracy:.1f}",
            f"{100 * r.ci95[0]:.1f}–{100 * r.ci95[1]:.1f}",
            f"{100 * r.strict_accuracy:.1f}",
        ]
        for k in ks[1:]:
            cells.append(f"{100 * r.pass_at_k[str(k)]:.1f}" if str(k) in r.pass_at_k else "")
            cells.append(f"{100 * r.maj_at_k[str(k)]:.1f}" if str(k) in r.maj_at_k else "")
        sps = r.samples_per_second
        cells += [f"{r.mean_completion_tokens:.0f}", f"{100 * r.truncation_rate:.0f}", f"{sps:.2f}" if sps else ""]
        table.add_row(*cells)
    return table
