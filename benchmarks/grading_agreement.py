"""How often the grader agrees with a person's verdict, next to the naive baselines, slice by slice.

Inputs, all graded in one run:

- the labelled real-output corpus (``benchmarks/grading_corpus/`` by default, or any JSONL file or
  folder of them): rows with ``id``, ``dataset``, ``source``, ``question``, ``response``, ``gold``
  and ``label`` (a person's verdict: is the response's final answer right);
- Math-Verify's own regression cases (``benchmarks/grading_cases/math_verify_cases.jsonl``: gold,
  prediction, expected), as their own slice;
- the hand-made cases of every pattern docs/grading.md names (``benchmarks/grading_cases/patterns.jsonl``).

The baselines are what people use instead of a grader: the last number of the response;
lm-evaluation-harness's GSM8K ``strict-match`` (``#### x``) and ``flexible-extract`` (its last-number
regex) filters, compared as strings after its ``regexes_to_ignore``; math-verify's default
``parse`` of the whole response verified against the gold; and exact match of the last ``\\boxed{}``.
A slice is *behind* when any baseline agrees with the labels on more of its rows than we do.

    python benchmarks/grading_agreement.py [CORPUS] [--no-cases] [--losses N]

The last line is machine-readable:
``grading_agreement ours=… best_baseline=… slices_behind=… rows=…``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pspo_eval.grading import grade
from pspo_eval.grading.extract import boxed_groups

HERE = Path(__file__).resolve().parent
CASES = HERE / "grading_cases"
BASELINES = ("last_number", "lm_eval_strict", "lm_eval_flexible", "math_verify", "last_boxed")

# lm-evaluation-harness tasks/gsm8k/gsm8k.yaml: the two filters and the strings it ignores.
_LM_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
_LM_FLEX_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LM_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))
_LAST_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Row:
    id: str
    slice: str
    dataset: str
    question: str
    response: str
    gold: str
    label: bool
    verdicts: dict[str, bool] = field(default_factory=dict)
    why: str = ""


# --- loading ----------------------------------------------------------------------------------------


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_corpus(path: Path) -> list[Row]:
    """Every labelled row of a JSONL file, or of the *.jsonl files under a folder."""
    if not path.exists():
        return []
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    rows = []
    for file in files:
        for r in _jsonl(file):
            if "label" not in r or "response" not in r or "gold" not in r:
                continue
            rows.append(
                Row(
                    id=str(r.get("id", f"{file.name}:{len(rows)}")),
                    slice=str(r.get("dataset", "unknown")),
                    dataset=str(r.get("dataset", "unknown")),
                    question=str(r.get("question") or ""),
                    response=str(r["response"]),
                    gold=str(r["gold"]),
                    label=bool(r["label"]),
                )
            )
    return rows


def load_cases() -> list[Row]:
    """Math-Verify's regression cases and the hand-made pattern cases, each its own slice."""
    rows = []
    for r in _jsonl(CASES / "math_verify_cases.jsonl"):
        # Graded as MATH answers (symbolic): these are the cases math-verify was written for.
        rows.append(Row(r["id"], "math_verify_cases", "math500", "", r["pred"], r["gold"], r["expected"]))
    for r in _jsonl(CASES / "patterns.jsonl"):
        rows.append(
            Row(r["id"], "patterns", r["dataset"], r.get("question", ""), r["response"], r["gold"], r["label"])
        )
    return rows


# --- the baselines ----------------------------------------------------------------------------------


def _lm_clean(s: str) -> str:
    for pattern in _LM_IGNORE:
        s = pattern.sub("", s)
    return s.strip().lower()


def _gold_answer(gold: str) -> str:
    return gold.rsplit("####", 1)[1].strip() if "####" in gold else gold.strip()


def _as_float(s: str) -> float | None:
    try:
        return float(s.replace(",", "").rstrip("."))
    except ValueError:
        return None


def last_number(response: str, gold: str) -> bool:
    found = _LAST_NUMBER_RE.findall(response)
    g = _as_float(_gold_answer(gold))
    return bool(found) and g is not None and _as_float(found[-1]) == g


def lm_eval_strict(response: str, gold: str) -> bool:
    m = _LM_STRICT_RE.search(response)
    return m is not None and _lm_clean(m.group(1)) == _lm_clean(_gold_answer(gold))


def lm_eval_flexible(response: str, gold: str) -> bool:
    found = _LM_FLEX_RE.findall(response)
    if not found:
        return False
    last = [g for g in found[-1] if g][0]
    return _lm_clean(last) == _lm_clean(_gold_answer(gold))


def last_boxed(response: str, gold: str) -> bool:
    boxes = boxed_groups(response)
    squash = lambda s: re.sub(r"\s+|\$", "", s)  # noqa: E731
    return bool(boxes) and squash(boxes[-1]) == squash(_gold_answer(gold))


def math_verify_default(rows: list[Row]) -> None:
    """math-verify's default parse of the whole response against the gold (in the worker pool)."""
    from pspo_eval.grading import symbolic

    pool = symbolic.pool()
    for row in rows:
        gold = row.gold if ("$" in row.gold or "\\boxed" in row.gold) else f"${_gold_answer(row.gold)}$"
        ok, _ = pool.verify_default(gold, row.response, 10.0)
        row.verdicts["math_verify"] = ok


# --- scoring ----------------------------------------------------------------------------------------


def grade_rows(rows: list[Row]) -> None:
    for row in rows:
        g = grade(row.dataset, row.response, row.gold, question=row.question or None, explain=True)
        row.verdicts["ours"] = g.correct
        row.why = f"{g.method} -> {g.extracted!r}: {g.why}"
        for name, fn in (
            ("last_number", last_number),
            ("lm_eval_strict", lm_eval_strict),
            ("lm_eval_flexible", lm_eval_flexible),
            ("last_boxed", last_boxed),
        ):
            row.verdicts[name] = fn(row.response, row.gold)
    math_verify_default(rows)


def agreement(rows: list[Row], name: str) -> float:
    return sum(r.verdicts[name] == r.label for r in rows) / len(rows) if rows else float("nan")


def slices(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        out[row.slice].append(row)
    return dict(sorted(out.items()))


def print_table(groups: dict[str, list[Row]]) -> int:
    names = ("ours", *BASELINES)
    print(f"{'slice':<22}{'n':>6}" + "".join(f"{n:>18}" for n in names) + f"{'behind':>8}")
    behind = 0
    for name, rows in groups.items():
        scores = {n: agreement(rows, n) for n in names}
        best = max(scores[b] for b in BASELINES)
        is_behind = scores["ours"] < best - 1e-12
        behind += is_behind
        cells = "".join(f"{scores[n]:>18.4f}" for n in names)
        print(f"{name:<22}{len(rows):>6}{cells}{'  YES' if is_behind else '   no':>8}")
    return behind


def print_losses(rows: list[Row], limit: int) -> None:
    lost = [r for r in rows if r.verdicts["ours"] != r.label and any(r.verdicts[b] == r.label for b in BASELINES)]
    print(f"\nrows where a baseline agrees with the label and we do not: {len(lost)}")
    for r in lost[:limit]:
        winners = ",".join(b for b in BASELINES if r.verdicts[b] == r.label)
        tail = r.response[-160:].replace("\n", "\\n")
        print(f"- {r.id} [{r.slice}] label={r.label} gold={r.gold[:40]!r} won_by={winners}\n    ours: {r.why}"
              f"\n    response tail: …{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=HERE / "grading_corpus")
    parser.add_argument("--no-cases", action="store_true", help="Only the corpus (no Math-Verify/pattern slices).")
    parser.add_argument("--losses", type=int, default=50, help="How many lost rows to list.")
    args = parser.parse_args(argv)
    rows = load_corpus(args.corpus)
    if not rows:
        print(f"note: no labelled rows under {args.corpus}", file=sys.stderr)
    if not args.no_cases:
        rows += load_cases()
    if not rows:
        print("nothing to measure", file=sys.stderr)
        return 2
    grade_rows(rows)
    behind = print_table(slices(rows))
    print_losses(rows, args.losses)
    best = max(agreement(rows, b) for b in BASELINES)
    print(
        f"grading_agreement ours={agreement(rows, 'ours'):.4f} best_baseline={best:.4f} "
        f"slices_behind={behind} rows={len(rows)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
