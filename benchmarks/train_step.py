"""Time per optimizer step of this trainer against TRL's GRPOTrainer, like for like.

Both sides: the demo model (SmolLM2-135M-Instruct), the same GSM8K training prompts in the same order
(ours reads them from a file with ``data.shuffle=false``; the file is ordered so that after our
train/validation shuffle, ``numpy.random.default_rng(42).permutation``, the order is the one TRL
reads with ``--no-shuffle``), the paper's system prompt, 4 prompts x 4 generations, 64 new tokens,
temperature 0.8, top-p 0.9, mu = 2, dapo loss, 2 micro-batches, beta = 0, learning rate 5e-7,
gradient checkpointing OFF on both sides (TRL's GRPOConfig turns it on by default; the anchor and
ours are told not to), the same dtype. Ours runs through the public CLI (``pspo-eval train`` with
``--set`` overrides of the demo-cpu preset), TRL through the anchor venv
(``/work/shared/bench/anchor_env.sh``, pinned TRL, version printed) and ``anchor_trl_grpo.py``.

Which number. Each of the mu updates made with one rollout is an optimizer step for both tools, and
only the first of them generates, so the comparison is per rollout (generation + mu updates) divided
by mu: the mean optimizer step of a rollout. The first rollout of every run is a warm-up and is not
counted. Each dtype gets ``--runs`` runs per side, interleaved (ours, TRL, TRL, ours, ...), and the
medians over runs are compared. Every run is wrapped in ``flock /tmp/pspo-bench.lock`` so timing runs
of different people never overlap.

Where the difference comes from, per measured rollout (printed): ours' generation time and update
time (our metrics.jsonl: time/rollout_s, time/train_s); TRL's generating step minus its
non-generating step (= generation + TRL's separate no-grad old-log-prob forward) and its
non-generating step (= one update). See the README's "Train-step speed" section.

    python benchmarks/train_step.py [--steps 4] [--runs 3] [--dtypes bfloat16,float32]

Last line: ``train_step bfloat16_ratio=… float32_ratio=… ours_median_s=… trl_median_s=… ratio=…``
(ours / TRL per optimizer step; ``ratio`` and the two medians are for the first dtype listed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANCHOR_DIR = Path(os.environ.get("PSPO_ANCHOR_DIR", "/work/shared/bench"))
GSM8K_TRAIN = REPO / "pspo_eval" / "resources" / "datasets" / "gsm8k_train.jsonl"
LOCK = "/tmp/pspo-bench.lock"
SPLIT_SEED = 42  # our data.split_seed (the demo preset's)


def prompt_files(n: int, offset: int, workdir: Path, seed: int = SPLIT_SEED) -> tuple[Path, Path, list[str]]:
    """Two files, one per tool, such that both train on the same prompts in the same order.

    Ours shuffles a data.file with ``default_rng(seed).permutation(n)`` before its (here empty)
    validation split and then, with data.shuffle=false, takes the rows in that order. TRL with
    --no-shuffle takes its file in file order. So TRL's file holds ours' rows permuted that way.
    Returns (ours, TRL's, the questions in the order both see them)."""
    import numpy as np

    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text(encoding="utf-8").split("\n") if line.strip()][offset : offset + n]
    if len(rows) < n:
        sys.exit(f"only {len(rows)} prompts from offset {offset}")
    rows = [{"id": r["id"], "question": r["question"], "answer": r["answer"]} for r in rows]
    order = np.random.default_rng(seed).permutation(n)
    ours, trl = workdir / "prompts_ours.jsonl", workdir / "prompts_trl.jsonl"
    ours.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    trl.write_text("".join(json.dumps(rows[i]) + "\n" for i in order), encoding="utf-8")
    return ours, trl, [rows[i]["question"] for i in order]


def per_rollout(step_s: list[float], mu: int, warmup_rollouts: int = 1) -> float:
    """Mean seconds per optimizer step over the rollouts after the warm-up (each rollout = mu steps)."""
    kept = step_s[warmup_rollouts * mu :]
    kept = kept[: len(kept) - len(kept) % mu]
    if not kept:
        raise ValueError(f"{len(step_s)} steps: nothing left after {warmup_rollouts} warm-up rollout(s) of {mu}")
    return statistics.fmean(kept)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(["flock", LOCK, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=REPO)
    return proc.returncode, proc.stdout


def run_ours(args, dtype: str, prompts: Path, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="pspo-train-step-") as out:
        sets = {
            "train.max_steps": args.steps, "train.num_iterations": args.iterations,
            "train.prompts_per_step": args.prompts, "rollout.num_generations": args.generations,
            "rollout.max_new_tokens": args.max_new_tokens,
            "train.micro_batch_size": args.prompts * args.generations // 2,
            "model.dtype": dtype, "model.gradient_checkpointing": "false",
            "data.file": str(prompts), "data.train_size": n, "data.shuffle": "false", "data.split_seed": SPLIT_SEED,
            "optim.learning_rate": "5e-7", "optim.schedule": "constant",  # the anchor's (TRL's default decays
            "checkpoint.save_final": "false", "checkpoint.save_every": 0,  # linearly; immaterial at 5e-7)
            "loss.aggregation": "dapo", "loss.beta": 0, "logging.log_completions": 0,
        }
        cmd = [sys.executable, "-m", "pspo_eval", "train", "-c", "demo-cpu", "-o", out, "-q", "--objective", "pspo"]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        started = time.perf_counter()
        code, output = _run(cmd)
        wall = time.perf_counter() - started
        metrics = Path(out) / "metrics.jsonl"
        if code != 0 or not metrics.is_file():
            sys.exit(f"ours failed ({code}):\n{output[-3000:]}")
        recs = [json.loads(line) for line in metrics.read_text().split("\n") if line.strip()]
        config = (Path(out) / "config.yaml").read_text()
    mu = args.iterations
    measured = recs[mu:]
    gen = [r["time/rollout_s"] for r in measured if r.get("iteration", 0) == 0]
    return {
        "step_s": [r["time/step_s"] for r in recs],
        "per_step_s": per_rollout([r["time/step_s"] for r in recs], mu),
        "gen_s": statistics.fmean(gen),
        "update_s": statistics.fmean(r["time/train_s"] for r in measured),
        "completion_len": statistics.fmean(r["completion_len/mean"] for r in recs if r.get("iteration", 0) == 0),
        "gradient_checkpointing": "gradient_checkpointing: true" in config,
        "wall_s": wall,
    }


def run_trl(args, dtype: str, prompts: Path, model_dir: str, python: str) -> dict:
    cmd = [python, str(ANCHOR_DIR / "anchor_trl_grpo.py"), "--model", model_dir, "--train", str(prompts),
           "--steps", str(args.steps), "--prompts-per-step", str(args.prompts), "--generations", str(args.generations),
           "--grad-accum", "2", "--max-new-tokens", str(args.max_new_tokens), "--iterations", str(args.iterations),
           "--dtype", dtype, "--offset", "0", "--no-shuffle"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    code, output = _run(cmd, env)
    wall = time.perf_counter() - started
    times = [float(m.group(1)) for m in re.finditer(r"anchor_trl step=\d+ seconds=([0-9.]+)", output)]
    head = re.search(r"anchor_trl trl=(\S+) torch=(\S+) gradient_checkpointing=(\S+)", output)
    length = re.search(r"mean_completion_tokens=([0-9.na]+)", output)
    if code != 0 or len(times) < args.steps or not head:
        sys.exit(f"TRL anchor failed ({code}):\n{output[-3000:]}")
    mu = args.iterations
    measured = times[mu:]
    return {
        "step_s": times,
        "per_step_s": per_rollout(times, mu),
        "gen_plus_old_s": statistics.fmean(measured[i] - measured[i + 1] for i in range(0, len(measured) - 1, mu)),
        "update_s": statistics.fmean(measured[i + 1] for i in range(0, len(measured) - 1, mu)),
        "completion_len": float(length.group(1)) if length else float("nan"),
        "trl": head.group(1), "torch": head.group(2), "gradient_checkpointing": head.group(3) == "True",
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run (the first rollout is a warm-up)")
    p.add_argument("--runs", type=int, default=3, help="runs per side and dtype, interleaved")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--offset", type=int, default=0, help="first GSM8K training row used")
    p.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = p.parse_args()
    if args.steps < 2 * args.iterations:
        sys.exit(f"--steps must cover a warm-up rollout and a measured one (>= {2 * args.iterations})")

    model_dir = subprocess.run([sys.executable, "-m", "pspo_eval", "models", "path", "smollm2-135m-instruct"],
                               check=True, capture_output=True, text=True, cwd=REPO).stdout.strip().split("\n")[-1]
    python = subprocess.run(["bash", str(ANCHOR_DIR / "anchor_env.sh")], check=True, capture_output=True,
                            text=True).stdout.strip()
    n = args.prompts * (args.steps // args.iterations)
    mu = args.iterations
    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="pspo-train-step-prompts-") as work:
        ours_file, trl_file, order = prompt_files(n, args.offset, Path(work))
        print(f"train_step: {args.prompts} prompts x {args.generations} generations, {args.max_new_tokens} new tokens, "
              f"mu={mu}, dapo, {args.steps} steps per run (first rollout = warm-up), {args.runs} interleaved runs "
              f"per side and dtype; the same {n} GSM8K prompts in the same order on both sides (first: "
              f"{order[0][:50]!r}); load {os.getloadavg()[0]:.2f}", flush=True)
        for dtype in args.dtypes.split(","):
            results[dtype] = {"ours": [], "trl": []}
            for i in range(args.runs):
                sides = ("ours", "trl") if i % 2 == 0 else ("trl", "ours")
                for side in sides:
                    r = (run_ours(args, dtype, ours_file, n) if side == "ours"
                         else run_trl(args, dtype, trl_file, model_dir, python))
                    results[dtype][side].append(r)
                    extra = (f"gen={r['gen_s']:.2f}s update={r['update_s']:.2f}s" if side == "ours"
                             else f"gen+old_logp={r['gen_plus_old_s']:.2f}s update={r['update_s']:.2f}s trl={r['trl']}")
                    print(f"  {dtype} run {i + 1} {side:4s} per_step_s={r['per_step_s']:.2f} {extra} "
                          f"mean_completion_len={r['completion_len']:.1f} "
                          f"gradient_checkpointing={r['gradient_checkpointing']} "
                          f"steps_s={[round(t, 2) for t in r['step_s']]} load={os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))

    summary = {}
    for dtype, sides in results.items():
        o, t = sides["ours"], sides["trl"]
        med = {k: statistics.median(r["per_step_s"] for r in v) for k, v in sides.items()}
        ratios = [a["per_step_s"] / b["per_step_s"] for a, b in zip(o, t, strict=True)]
        summary[dtype] = med | {"ratio": med["ours"] / med["trl"]}
        print(f"{dtype}: ours median_step_s={med['ours']:.2f} (gen {statistics.median(r['gen_s'] for r in o):.2f} s + "
              f"{mu} x update {statistics.median(r['update_s'] for r in o):.2f} s per rollout)  "
              f"TRL median_step_s={med['trl']:.2f} (gen + old-log-prob pass "
              f"{statistics.median(r['gen_plus_old_s'] for r in t):.2f} s + {mu} x update "
              f"{statistics.median(r['update_s'] for r in t):.2f} s)  ratio={summary[dtype]['ratio']:.3f} "
              f"(per-pair ratios {[round(x, 3) for x in ratios]})  mean completion length ours "
              f"{statistics.fmean(r['completion_len'] for r in o):.1f} / TRL {statistics.fmean(r['completion_len'] for r in t):.1f}; "
              f"gradient checkpointing ours={o[0]['gradient_checkpointing']} TRL={t[0]['gradient_checkpointing']}; "
              f"TRL {t[0]['trl']}, torch {t[0]['torch']}", flush=True)
    first = next(iter(summary))
    print("train_step " + " ".join(f"{d}_ratio={s['ratio']:.3f}" for d, s in summary.items())
          + f" ours_median_s={summary[first]['ours']:.2f} trl_median_s={summary[first]['trl']:.2f}"
          + f" ratio={summary[first]['ratio']:.3f}")


if __name__ == "__main__":
    main()
