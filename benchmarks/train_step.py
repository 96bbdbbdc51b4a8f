"""Optimizer-step time of this trainer against TRL's GRPOTrainer, side by side, same settings.

Both run the demo model (SmolLM2-135M-Instruct) on GSM8K training prompts with the paper's system
prompt: 4 prompts x 4 generations, 64 new tokens, temperature 0.8, top-p 0.9, μ = 2 iterations,
dapo loss, 2 micro-batches (gradient accumulation), β = 0, same dtype (default: what
``resolve_dtype('auto')`` picks for this device, float32 on CPUs without native bf16). Ours runs
once per objective (pspo and clip), each in its own process; TRL runs through the anchor venv
(``/work/shared/bench/anchor_env.sh``, created on first use) and ``anchor_trl_grpo.py``.

Which number to compare. Both trainers count an *optimizer step* the same way: each of the μ
updates made with one rollout is a step, and only the first step of a rollout generates. So a
step is either "generate + update" or "update", and with μ = 2 the median of an even number of
steps averages one of each: noisy and not very meaningful. The fair comparison is the time per
rollout (the μ steps that share one rollout: sampling, the old log-probabilities, μ updates), which
is μ x the mean step time; the first rollout is a warm-up for both and is left out.

    python benchmarks/train_step.py [--steps 6] [--dtype auto|float32|bfloat16] [--skip-trl]

The last line is machine-readable:
``train_step ours_median_s=… trl_median_s=… ratio=…`` (ours = pspo; ratio = ours / TRL, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANCHOR_DIR = Path(os.environ.get("PSPO_ANCHOR_DIR", "/work/shared/bench"))


def _run(cmd: list[str], env: dict[str, str] | None = None, echo: str = "") -> tuple[int, str, float]:
    """Run a child, stream its output, return (exit code, output, its peak RSS in MiB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if echo and (line.startswith(echo) or "error" in line.lower()):
            print("   ", line.rstrip(), flush=True)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (KiB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, "".join(lines), usage.ru_maxrss / 1024


def _stats(times: list[float], mu: int, warmup_rollouts: int = 1) -> dict[str, float]:
    kept = times[warmup_rollouts * mu :] or times
    rollouts = [sum(kept[i : i + mu]) for i in range(0, len(kept) - len(kept) % mu, mu)]
    return {
        "steps": len(kept),
        "median_step_s": statistics.median(kept),
        "mean_step_s": statistics.fmean(kept),
        "per_rollout_s": statistics.fmean(rollouts) if rollouts else float("nan"),
    }


# --- ours (child process) ----------------------------------------------------------------------------


def child(args) -> None:
    import tempfile

    from pspo_eval.train.config import load_config
    from pspo_eval.train.loop import Trainer

    overrides = [
        f"train.max_steps={args.steps}",
        f"train.num_iterations={args.iterations}",
        f"train.prompts_per_step={args.prompts}",
        f"rollout.num_generations={args.generations}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"train.micro_batch_size={args.prompts * args.generations // 2}",
        f"model.dtype={args.dtype}",
        f"model.path={args.model}",
        "optim.learning_rate=5e-7",  # the anchor's
        "checkpoint.save_final=false",
        "checkpoint.save_every=0",
        "loss.aggregation=dapo",
        "loss.beta=0",
    ]
    cfg = load_config("demo-cpu", overrides=overrides, objective=args.objective)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        trainer = Trainer(cfg, out, verbose=False)
        setup = time.perf_counter() - started
        trainer.run()
        records = trainer.metrics.records
    print("ours_result " + json.dumps({
        "objective": args.objective,
        "setup_s": setup,
        "step_s": [r["time/step_s"] for r in records],
        "rollout_s": [r["time/rollout_s"] for r in records],
        "completion_len": [r["completion_len/mean"] for r in records],
        "decoder": trainer.generator.kind,
    }), flush=True)


def run_ours(args, objective: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--objective", objective, "--steps", str(args.steps),
           "--dtype", args.dtype, "--model", args.model, "--prompts", str(args.prompts),
           "--generations", str(args.generations), "--max-new-tokens", str(args.max_new_tokens),
           "--iterations", str(args.iterations)]
    code, output, peak = _run(cmd, env={**os.environ, "PSPO_EVAL_QUIET": "1"})
    found = [line for line in output.splitlines() if line.startswith("ours_result ")]
    if code != 0 or not found:
        sys.exit(f"ours ({objective}) failed:\n{output[-3000:]}")
    result = json.loads(found[-1].split(" ", 1)[1])
    result["peak_rss_mib"] = peak
    return result


# --- TRL ---------------------------------------------------------------------------------------------------


def run_trl(args, model_dir: str) -> dict:
    env_script = ANCHOR_DIR / "anchor_env.sh"
    print(f"preparing the anchor venv ({env_script}; the first time installs trl, a few minutes)", flush=True)
    python = subprocess.run(["bash", str(env_script)], check=True, capture_output=True, text=True).stdout.strip()
    from pspo_eval.data import dataset_path

    cmd = [python, str(ANCHOR_DIR / "anchor_trl_grpo.py"), "--model", model_dir,
           "--train", str(dataset_path("gsm8k_train")), "--steps", str(args.steps),
           "--prompts-per-step", str(args.prompts), "--generations", str(args.generations), "--grad-accum", "2",
           "--max-new-tokens", str(args.max_new_tokens), "--iterations", str(args.iterations),
           "--dtype", args.dtype]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    code, output, peak = _run(cmd, env=env, echo="anchor_trl")
    times = [float(m.group(1)) for m in re.finditer(r"anchor_trl step=\d+ seconds=([0-9.]+)", output)]
    if code != 0 or not times:
        sys.exit(f"TRL anchor failed:\n{output[-3000:]}")
    return {"step_s": times, "peak_rss_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per trainer (first rollout = warm-up)")
    p.add_argument("--dtype", default="auto", help="auto (resolve_dtype), float32 or bfloat16, for both")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--objectives", default="pspo,clip")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--objective", default="pspo", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.dtype == "auto":
        from pspo_eval.generation.hf import resolve_dtype

        args.dtype = str(resolve_dtype("auto", "cpu")).replace("torch.", "")
    if args.child:
        child(args)
        return

    from pspo_eval.models import resolve_model

    model_dir = resolve_model(args.model)
    mu = args.iterations
    print(f"train_step: {args.prompts} prompts x {args.generations} generations, {args.max_new_tokens} new tokens, "
          f"mu={mu}, dapo, dtype={args.dtype}, {args.steps} steps each (first rollout = warm-up, not counted); "
          f"load: {os.getloadavg()[0]:.2f}", flush=True)
    ours: dict[str, dict] = {}
    for objective in args.objectives.split(","):
        result = run_ours(args, objective)
        ours[objective] = {**result, **_stats(result["step_s"], mu)}
        o = ours[objective]
        print(f"ours[{objective}]  median_step_s={o['median_step_s']:.2f} mean_step_s={o['mean_step_s']:.2f} "
              f"per_rollout_s={o['per_rollout_s']:.2f} peak_rss_mib={o['peak_rss_mib']:.0f} "
              f"decoder={o['decoder']} mean_completion_len={statistics.fmean(o['completion_len']):.1f} "
              f"steps_s={[round(t, 2) for t in o['step_s']]}", flush=True)
    if "pspo" in ours and "clip" in ours:
        ratio = ours["pspo"]["per_rollout_s"] / ours["clip"]["per_rollout_s"]
        print(f"pspo_vs_clip per_rollout_ratio={ratio:.3f} (goal: within 2%)", flush=True)
    first = ours.get("pspo") or next(iter(ours.values()))
    if args.skip_trl:
        print(f"train_step ours_median_s={first['median_step_s']:.2f} trl_median_s=nan ratio=nan")
        return
    trl = run_trl(args, model_dir)
    trl.update(_stats(trl["step_s"], mu))
    print(f"trl          median_step_s={trl['median_step_s']:.2f} mean_step_s={trl['mean_step_s']:.2f} "
          f"per_rollout_s={trl['per_rollout_s']:.2f} peak_rss_mib={trl['peak_rss_mib']:.0f} "
          f"steps_s={[round(t, 2) for t in trl['step_s']]}", flush=True)
    print(f"per_rollout ours/trl ratio={first['per_rollout_s'] / trl['per_rollout_s']:.3f} (the fair comparison; "
          f"mean step ratio {first['mean_step_s'] / trl['mean_step_s']:.3f}); load now {os.getloadavg()[0]:.2f}")
    print(f"train_step ours_median_s={first['median_step_s']:.2f} trl_median_s={trl['median_step_s']:.2f} "
          f"ratio={first['median_step_s'] / trl['median_step_s']:.3f}")


if __name__ == "__main__":
    main()
