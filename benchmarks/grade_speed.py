"""How fast responses are graded: numeric benchmarks single-threaded, MATH-500 with its worker pool.

The responses are a realistic mix built from each benchmark's own gold answers: worked solutions
ending in '#### x' (GSM8K's own solutions where the dataset has them), 'The answer is x.',
'\\boxed{x}', answers left in the text with no marker, '#### x' followed by a made-up next problem
(small models do that), and wrong answers. MATH-500 mixes exact boxed golds (decided by the quick
check), equivalent rewritings and other problems' answers (both need math-verify).

    python benchmarks/grade_speed.py [--limit N] [--workers W] [--repeat R]

The last line is machine-readable: ``grade_speed numeric_per_s=… symbolic_per_s=…``.
"""

from __future__ import annotations

import argparse
import random
import re
import time

from pspo_eval.data import load_dataset
from pspo_eval.grading import grade, grade_many

NUMERIC = ["gsm8k", "svamp", "asdiv"]

FILLER = (
    "Let's think step by step. First we find how many items there are in total: {a} + {b} = {c}. "
    "Then we multiply by the price, {c} * 2 = {d}. "
)


def _wrong(answer: str) -> str:
    try:
        return str(int(answer) + 7)
    except ValueError:
        return "12345"


def numeric_responses(problems, rng: random.Random) -> list[tuple[str, str]]:
    pairs = []
    for p in problems:
        gold = p.answer
        a, b = rng.randint(2, 90), rng.randint(2, 90)
        # ~500-900 characters, like a small instruct model's worked answer.
        reasoning = (
            "Let's solve this step by step.\n\n"
            + (p.solution or FILLER.format(a=a, b=b, c=a + b, d=2 * (a + b)))
            + f"\n\nTo double-check: {a} + {b} = {a + b}, and {a + b} * 2 = {2 * (a + b)}, "
            "which agrees with the steps above, so the calculation is consistent."
        )
        pairs += [
            (f"{reasoning}\n#### {gold}", gold),
            (f"{reasoning}\nSo, the answer is {gold}.", gold),
            (f"{reasoning}\nTherefore the final answer is $\\boxed{{{gold}}}$.", gold),
            (f"{reasoning}\nSo she ends up with {gold} apples in total.", gold),
            (
                f"{reasoning}\n#### {gold}\n\nQuestion: Tom has {a} pens and buys {b} more.\n#### {a + b}",
                gold,
            ),
            (f"{reasoning}\n#### {_wrong(gold)}\nThe answer is: {_wrong(gold)}", gold),
            (f"{reasoning}\n**Final Answer:** ${_wrong(gold)}", gold),
        ]
    return pairs


def symbolic_responses(problems, rng: random.Random) -> list[tuple[str, str]]:
    golds = [p.answer for p in problems]
    pairs = []
    for p in problems:
        other = rng.choice(golds)
        pairs += [
            (f"We simplify step by step.\nThe final answer is $\\boxed{{{p.answer}}}$.", p.answer),
            (f"Therefore, the final answer is ${p.answer}$. I hope it is correct.", p.answer),
            (f"Solving, we get $x = {p.answer}$.", p.answer),
            (f"So the answer is $\\boxed{{{other}}}$.", p.answer),
        ]
    return pairs


# Reference point: lm-evaluation-harness's GSM8K answer filters (its 'strict-match' and
# 'flexible-extract' regexes from the task config, applied the way its filters do) with exact string
# comparison. It does much less (no LaTeX, units, rounding or fallbacks), so it bounds the speed of
# a regex-only grader; the ratio to it is what to compare across machines.
_LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def lm_eval_style(response: str, gold: str) -> tuple[bool, bool]:
    strict = _LM_EVAL_STRICT.search(response)
    found = _LM_EVAL_FLEXIBLE.findall(response)
    flexible = next((g for g in found[-1] if g), "") if found else ""
    norm = gold.replace(",", "")
    return (
        bool(strict) and strict.group(1).replace(",", "").rstrip(".") == norm,
        flexible.replace(",", "").replace("$", "").rstrip(".") == norm,
    )


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="problems per dataset (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="math-verify processes for MATH-500")
    parser.add_argument("--repeat", type=int, default=3, help="numeric timing: best of this many passes")
    args = parser.parse_args()
    rng = random.Random(0)

    numeric_total, numeric_seconds, numeric_cpu = 0, 0.0, 0.0
    reference_total, reference_cpu = 0, 0.0
    for name in NUMERIC:
        pairs = numeric_responses(load_dataset(name, limit=args.limit), rng)
        best = best_cpu = float("inf")
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            grades = [grade(name, r, g) for r, g in pairs]
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        accuracy = sum(g.correct for g in grades) / len(grades)
        chars = sum(len(r) for r, _ in pairs) / len(pairs)
        print(
            f"{name:8s} n={len(pairs):6d} avg_chars={chars:4.0f} graded_per_s={rate(len(pairs), best):7.0f} "
            f"per_cpu_s={rate(len(pairs), best_cpu):7.0f} accuracy_of_mix={accuracy:.3f}"
        )
        numeric_total += len(pairs)
        numeric_seconds += best
        numeric_cpu += best_cpu
        ref = float("inf")
        for _ in range(args.repeat):
            c0 = time.process_time()
            for r, g in pairs:
                lm_eval_style(r, g)
            ref = min(ref, time.process_time() - c0)
        reference_total += len(pairs)
        reference_cpu += ref

    pairs = symbolic_responses(load_dataset("math500", limit=args.limit), rng)
    grade_many("math500", pairs[:4], workers=args.workers)  # start the worker processes first
    t0 = time.perf_counter()
    grades = grade_many("math500", pairs, workers=args.workers)
    seconds = time.perf_counter() - t0
    timed_out = sum(g.timed_out for g in grades)
    accuracy = sum(g.correct for g in grades) / len(grades)
    print(
        f"math500  n={len(pairs):6d} graded_per_s={rate(len(pairs), seconds):9.1f} "
        f"accuracy_of_mix={accuracy:.3f} timed_out={timed_out}"
    )
    # Wall-clock rates depend on what else the machine runs; CPU-time rates much less so.
    ours, reference = rate(numeric_total, numeric_cpu), rate(reference_total, reference_cpu)
    print(
        f"numeric per CPU-second: pspo-eval {ours:.0f}, lm-eval-style regexes {reference:.0f} "
        f"(ratio {ours / reference:.2f})"
    )
    print(
        f"grade_speed numeric_per_s={rate(numeric_total, numeric_seconds):.0f} "
        f"symbolic_per_s={rate(len(pairs), seconds):.1f}"
    )


if __name__ == "__main__":
    main()
