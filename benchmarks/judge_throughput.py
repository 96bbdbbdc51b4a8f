"""Judge throughput: judgments per second at concurrency 1 and 8 against the local judge server,
and the tool's own overhead per judgment.

    .venv/bin/python benchmarks/judge_throughput.py [--n 8] [--max-tokens 16] [--rubric tiny|PATH] [--out FILE]

1. Starts ``transformers serve`` with the demo model once (the ``local`` judge's server), then judges
   the same N responses into a fresh run directory at each concurrency (no cache hits), with the
   structured-output strategy fixed to ``prompt`` so the probe is not timed. Reported: judgments/s
   over the judging loop, and the mean latency per request.
2. Overhead: judges 200 items against an instant in-process fault server (tests/judge_fault_server.py)
   at concurrency 1: ``(judging time - time waiting on HTTP) / judgments`` is what pspo-eval itself
   spends per judgment (prompt rendering is excluded: it happens before the loop; parsing, record
   building and the fsynced append are included), and ``judging time / judgments`` bounds it from above
   including the loopback round trip.

The default rubric is a one-criterion rubric with a short prompt so the CPU run finishes in minutes;
``--rubric rubrics/math_response_quality.yaml`` measures the real one (a ~1.5k-token prompt).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

TINY = {
    "name": "bench_tiny", "version": 1, "description": "Benchmark rubric: one criterion, short prompt.",
    "mode": "absolute",
    "criteria": [{"key": "quality", "question": "How good is the answer?", "scale": {1: "bad", 2: "fair", 3: "good"}}],
    "flags": [],
    "template": {"system": "You grade answers to math problems. Reply with JSON only.",
                 "user": "Problem: {{problem}}\nAnswer:\n{{response}}\n{{criteria}}\n{{output_format}}"},
}


def _run_dir(root: Path, n: int) -> Path:
    from judge_helpers import make_run, sample

    rows = [sample("m", f"p{i:03d}", f"Tom has 3 + 4 = {7 + i % 3} apples.\n#### {7 + i % 3}") for i in range(n)]
    return make_run(root, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="responses judged per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rubric", default="tiny")
    parser.add_argument("--overhead-n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    import os

    os.environ.setdefault("PSPO_EVAL_QUIET", "1")
    from judge_fault_server import FaultServer

    from pspo_eval.judge.run import judge_run
    from pspo_eval.judge.server import LocalServer

    work = Path(tempfile.mkdtemp(prefix="pspo-judge-bench-"))
    rubric = Path(args.rubric)
    if args.rubric == "tiny":
        rubric = work / "tiny.yaml"
        rubric.write_text(yaml.safe_dump(TINY))
    results: dict = {"n": args.n, "max_tokens": args.max_tokens, "rubric": str(args.rubric), "levels": []}

    started = time.perf_counter()
    with LocalServer("smollm2-135m-instruct") as server:
        results["server_start_s"] = round(time.perf_counter() - started, 1)
        spec = f"{server.base_url}::{server.model_path}"
        for level in args.concurrency:
            run = _run_dir(work / f"c{level}", args.n)
            s = judge_run(run, [spec], rubric, concurrency=level, max_tokens=args.max_tokens, reasks=0,
                          structured="prompt", timeout=1800, max_retries=0)
            row = {"concurrency": level, "judged": s.judged, "seconds": round(s.judging_s, 2),
                   "judgments_per_s": round(s.judgments_per_s, 4),
                   "mean_request_s": round(s.http_s / max(1, s.usage["requests"]), 2),
                   "outcomes": {k: v for k, v in s.new_outcomes.items() if v}}
            results["levels"].append(row)
            print(json.dumps(row), flush=True)

    verdict = {"rationale": "ok", "quality": 2}
    with FaultServer(verdict=verdict) as fake:
        run = _run_dir(work / "overhead", args.overhead_n)
        s = judge_run(run, [fake.spec()], rubric, concurrency=1, structured="prompt", reasks=0, timeout=30)
        results["overhead"] = {
            "judged": s.judged,
            "tool_ms_per_judgment": round(1000 * (s.judging_s - s.http_s) / s.judged, 3),
            "wall_ms_per_judgment_incl_loopback_http": round(1000 * s.judging_s / s.judged, 3),
        }
        print(json.dumps(results["overhead"]), flush=True)

    print("\nconcurrency  judged  seconds  judgments/s  mean request s")
    for row in results["levels"]:
        print(f"{row['concurrency']:>11}  {row['judged']:>6}  {row['seconds']:>7}  {row['judgments_per_s']:>11}  "
              f"{row['mean_request_s']:>14}")
    o = results["overhead"]
    print(f"tool overhead: {o['tool_ms_per_judgment']} ms/judgment "
          f"({o['wall_ms_per_judgment_incl_loopback_http']} ms including the loopback HTTP round trip)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
