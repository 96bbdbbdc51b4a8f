"""``pspo-eval judge import``: human annotations or another tool's verdicts, stored as Judgment records.

One JSON object a line (docs/judging.md)::

    {"item_id": "17", "judge": "annotator-1", "model_a": "llama-7b", "model_b": "bloom-7b",
     "winner": "a" | "b" | "tie" | null, "order": "ab" | "ba", "prompt": "...",
     "response_a": "...", "response_b": "...", "length_a": 412, "length_b": 230}

``winner`` names the response (not the position); ``order`` says which response was shown first
(default ``ab``); null is a verdict that could not be parsed and is stored as a ``parse_error``.
Absolute scores use ``"score": {"criterion": value}`` instead of ``winner`` (``model_a`` is the rated
model). ``length_*`` are token counts as the source counted them; characters come from the texts.

Why records and not a side file: imported verdicts then go through exactly the aggregation, the
agreement table and the report that our own judges go through. The two orders of one item by one
judge become one pairwise record with both orders, as ``pspo-eval judge`` writes them (orders that
disagree make a tie and a flip); several lines of the same item, judge and order are repeats.

Every line is validated (pydantic) before anything is written: a bad line raises one
:class:`PspoError` naming the file, the line and the field, and the run directory is left as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pspo_eval.config import describe_validation_error
from pspo_eval.errors import PspoError
from pspo_eval.judge.records import ORDER_NAMES, ORDER_PREFERENCE, Judgment
from pspo_eval.store import RunStore, safe_name, stable_hash

IMPORT_RUBRIC = "imported"
DEFAULT_CRITERION = "overall_quality"  # the bundled pairwise rubric's overall criterion


class ImportLine(BaseModel):
    """One line of an import file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1)
    judge: str = Field(min_length=1)
    model_a: str = Field(min_length=1)
    model_b: str | None = Field(default=None, min_length=1)
    winner: Literal["a", "b", "tie"] | None = None
    score: dict[str, int] | None = None
    order: Literal["ab", "ba"] = "ab"
    prompt: str | None = None
    response_a: str | None = None
    response_b: str | None = None
    length_a: int | None = Field(default=None, ge=0)
    length_b: int | None = Field(default=None, ge=0)

    @field_validator("item_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_kind(self) -> ImportLine:
        has_winner = "winner" in self.model_fields_set
        if has_winner == (self.score is not None):
            raise ValueError("give exactly one of 'winner' (pairwise) and 'score' (absolute)")
        if has_winner and self.model_b is None:
            raise ValueError("a pairwise line needs 'model_b'")
        if has_winner and self.model_a == self.model_b:
            raise ValueError("model_a and model_b are the same model")
        if self.score is not None and not self.score:
            raise ValueError("'score' is empty: give {\"criterion\": value}")
        return self

    @property
    def pairwise(self) -> bool:
        return "winner" in self.model_fields_set


def _error(path: Path, number: int, exc: ValidationError) -> PspoError:
    return PspoError(f"{path}:{number}: " + describe_validation_error(exc),
                     "one JSON object a line, fields as in docs/judging.md (judge import); nothing was written")


def read_lines(path: str | Path) -> list[ImportLine]:
    """Every line of the file, validated; the first bad line raises (nothing is returned half-read)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PspoError(f"cannot read {path}: {exc}", "give a UTF-8 JSON Lines file") from None
    lines: list[ImportLine] = []
    # split on "\n" only: str.splitlines() would also split inside strings holding U+2028 etc.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PspoError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})",
                            "one JSON object a line; nothing was written") from None
        if not isinstance(data, dict):
            raise PspoError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}",
                            "one JSON object a line; nothing was written")
        try:
            lines.append(ImportLine.model_validate(data))
        except ValidationError as exc:
            raise _error(path, number, exc) from None
    if not lines:
        raise PspoError(f"{path} holds no verdicts", "one JSON object a line")
    return lines


@dataclass
class ImportSummary:
    run_dir: str
    lines: int
    records: int = 0
    written: int = 0  # new records (a re-import of the same file writes none)
    judges: dict[str, int] = field(default_factory=dict)  # judge -> records
    failures: int = 0  # null verdicts, stored as parse_error


def _base(line: ImportLine, *, judge: str, rubric: str, dataset: str, mode: str, model: str,
          baseline: str | None, repeat: int) -> dict[str, Any]:
    key = stable_hash({"import": judge, "rubric": rubric, "dataset": dataset, "item": line.item_id,
                       "model": model, "baseline": baseline, "repeat": repeat}, 24)
    return dict(
        key=key, item_key=key, model=model, dataset=dataset, problem_id=line.item_id,
        sample_key=f"import:{dataset}:{line.item_id}:{model}", setting="imported", baseline=baseline,
        baseline_sample_key=f"import:{dataset}:{line.item_id}:{baseline}" if baseline else None,
        judge=judge, rubric=rubric, rubric_version="import", rubric_hash="", mode=mode,
        prompt_hash=stable_hash(line.prompt or ""), repeat=repeat, temperature=0.0, seed=0, max_tokens=0,
        structured="import", source="import",
    )


def _choice(order: int, winner: str) -> str:
    """The position (A/B) a response-naming winner had in this order (order 0: the baseline is A)."""
    if winner == "tie":
        return "tie"
    return ("A" if winner == "a" else "B") if order == 0 else ("B" if winner == "a" else "A")


def _pair_record(lines: list[tuple[int, str | None, ImportLine]], *, baseline: str, model: str, repeat: int,
                 criterion: str, rubric: str, dataset: str) -> Judgment:
    """One pairwise record from one or two (order, winner, line) entries, winners already oriented."""
    first = lines[0][2]
    base = _base(first, judge=first.judge, rubric=rubric, dataset=dataset, mode="pairwise", model=model,
                 baseline=baseline, repeat=repeat)
    orders, values = [], []
    for order, winner, _ in sorted(lines, key=lambda t: t[0]):
        entry: dict[str, Any] = {"order": ORDER_NAMES[order], "outcome": "ok" if winner else "parse_error"}
        if winner:
            entry["verdict"] = {criterion: _choice(order, winner)}
            values.append(ORDER_PREFERENCE[(order, entry["verdict"][criterion])])
        orders.append(entry)
    fields: dict[str, Any] = {"orders": orders}
    if len(values) < len(lines):
        fields.update(outcome="parse_error", error="the imported verdict is null (could not be parsed)")
    else:
        combined = values[0] if len(set(values)) == 1 else 0  # orders that disagree make a tie
        fields.update(outcome="ok", scores={criterion: combined}, flags={},
                      flips={criterion: len(values) == 2 and values[0] != values[1]})
    texts: dict[str, int] = {}
    for _, _, line in lines:  # lengths and texts, oriented: model_a of a line may be either side
        for name, text, tokens in ((line.model_a, line.response_a, line.length_a),
                                   (line.model_b, line.response_b, line.length_b)):
            who = "baseline" if name == baseline else "response"
            if text is not None:
                texts.setdefault(f"{who}_chars", len(text))
            if tokens is not None:
                texts.setdefault(f"{who}_tokens", tokens)
    return Judgment(**base, **fields, **texts)


def build_records(lines: list[ImportLine], *, dataset: str = "imported", rubric: str = IMPORT_RUBRIC,
                  criterion: str = DEFAULT_CRITERION) -> list[Judgment]:
    """Judgment records for validated lines (pure: nothing is read or written)."""
    orientation: dict[tuple[str, frozenset], tuple[str, str]] = {}  # the first line's (a, b) of an item
    pairs: dict[tuple, dict[int, list[tuple[int, str | None, ImportLine]]]] = {}
    scored: dict[tuple, int] = {}
    records: list[Judgment] = []
    for line in lines:
        if not line.pairwise:
            key = (line.judge, line.item_id, line.model_a)
            repeat = scored.get(key, 0)
            scored[key] = repeat + 1
            base = _base(line, judge=line.judge, rubric=rubric, dataset=dataset, mode="absolute",
                         model=line.model_a, baseline=None, repeat=repeat)
            records.append(Judgment(**base, outcome="ok", scores=dict(line.score or {}), flags={},
                                    response_chars=len(line.response_a) if line.response_a is not None else None,
                                    response_tokens=line.length_a))
            continue
        pair = frozenset((line.model_a, line.model_b))
        baseline, model = orientation.setdefault((line.item_id, pair), (line.model_a, line.model_b or ""))
        swapped = line.model_a != baseline
        order = (0 if line.order == "ab" else 1) ^ int(swapped)
        winner = line.winner
        if swapped and winner in ("a", "b"):
            winner = "b" if winner == "a" else "a"
        pairs.setdefault((line.judge, line.item_id, pair), {}).setdefault(order, []).append((order, winner, line))
    for (_, item_id, pair), by_order in pairs.items():
        baseline, model = orientation[(item_id, pair)]
        for repeat in range(max(len(v) for v in by_order.values())):
            entries = [v[repeat] for _, v in sorted(by_order.items()) if repeat < len(v)]
            records.append(_pair_record(entries, baseline=baseline, model=model, repeat=repeat,
                                        criterion=criterion, rubric=rubric, dataset=dataset))
    return records


def import_verdicts(input_path: str | Path, out: str | Path, *, dataset: str = "imported",
                    rubric: str = IMPORT_RUBRIC, criterion: str = DEFAULT_CRITERION,
                    gold: str | None = None, lines: list[ImportLine] | None = None) -> ImportSummary:
    """Validate the whole file, then append its records to ``out`` (created if missing).

    Re-importing a file appends nothing new (records are keyed by judge, item, pair and repeat).
    ``gold`` names the judge the report compares every other judge with (stored in the manifest).
    ``lines``: the file already read by :func:`read_lines` (the CLI validates before it locks ``out``).
    """
    lines = read_lines(input_path) if lines is None else lines
    records = build_records(lines, dataset=dataset, rubric=rubric, criterion=criterion)
    if gold is not None and gold not in {r.judge for r in records}:
        raise PspoError(f"--gold {gold!r} is not a judge in {input_path}",
                        f"judges: {', '.join(sorted({r.judge for r in records}))}")
    store = RunStore(out)
    summary = ImportSummary(run_dir=str(store.root), lines=len(lines), records=len(records))
    by_judge: dict[str, list[Judgment]] = {}
    for record in records:
        by_judge.setdefault(record.judge, []).append(record)
        summary.failures += record.outcome != "ok"
    store.root.mkdir(parents=True, exist_ok=True)
    for judge, rows in by_judge.items():
        shard = store.shard("judgments", safe_name(judge), rubric)
        held = shard.keys() if shard.exists() else set()
        summary.written += shard.append([r for r in rows if r.key not in held])
        summary.judges[judge] = len(rows)
    manifest = store.read_manifest()
    imports = list(manifest.get("judge_imports") or [])
    imports.append({"file": str(input_path), "lines": len(lines), "records": len(records), "dataset": dataset,
                    "rubric": rubric, "criterion": criterion, "judges": sorted(by_judge)})
    fields: dict[str, Any] = {"judge_imports": imports}
    if gold is not None:
        fields["judge_gold"] = gold
    store.update_manifest(**fields)
    return summary
