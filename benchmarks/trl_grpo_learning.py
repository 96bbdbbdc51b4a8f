"""The learning benchmark's setting through TRL's GRPOTrainer (run with the anchor venv's python).

Reads benchmarks/learning/config.yaml (the file our trainer runs), so both sides share the prompts
file, the system prompt, the reward (benchmarks/learning/learning_reward.py, imported by both), G,
the completion budget, temperature/top-p, mu, the loss aggregation, beta, epsilon, the learning rate
and its schedule, gradient clipping, the batch split and the number of optimizer steps. TRL's
GRPOConfig would turn gradient checkpointing on and decay the learning rate linearly; both are set
to what our side does (off; constant).

Writes OUT/metrics.jsonl in our trainer's key names (one record per optimizer step: step,
reward/mean, completion_len/mean, entropy, clip/clipped, grad_norm, lr, time/step_s) and
OUT/config.yaml, so that ``pspo-eval report --train OUT`` draws TRL's curve next to ours, and saves
the final model and tokenizer to OUT/final for ``pspo-eval evaluate``.

    /tmp/pspo-anchor-venv/bin/python benchmarks/trl_grpo_learning.py --config benchmarks/learning/config.yaml \
        --train benchmarks/learning/train.jsonl --out OUT [--steps 24] [--iterations 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import trl
import yaml
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "learning"))
import learning_reward  # noqa: E402  (the reward our trainer uses too)

# Our trainer's default system prompt (the paper's, verbatim): config.yaml leaves data.system_prompt unset.
PAPER_SYSTEM_PROMPT = (
    "You are a careful math solver. Think through the solution and show the steps. Use English only. "
    "End the response with the final answer only in the format: '#### <final numeric answer only>'"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--train", required=True, help="the prompts JSONL (question, answer)")
    p.add_argument("--model", required=True, help="model directory (pspo-eval models path smollm2-135m-instruct)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the config's)")
    p.add_argument("--iterations", type=int, default=None, help="mu (default: the config's)")
    a = p.parse_args()
    cfg = yaml.safe_load(open(a.config))
    r, t, o, lo = cfg["rollout"], cfg["train"], cfg["optim"], cfg["loss"]
    steps = a.steps or t["max_steps"]
    mu = a.iterations or t["num_iterations"]
    system = cfg.get("data", {}).get("system_prompt", PAPER_SYSTEM_PROMPT)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, cfg["model"]["dtype"])
    print(f"trl_learning trl={trl.__version__} torch={torch.__version__} dtype={dtype} steps={steps} mu={mu} "
          f"gradient_checkpointing={cfg['model'].get('gradient_checkpointing', False)}", flush=True)

    rows = [json.loads(line) for line in open(a.train)]
    ds = Dataset.from_list([{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": row["question"]}],
                             "gold": str(row["answer"])} for row in rows])

    def reward(completions, gold, **_):
        return learning_reward.reward(completions, gold)

    reward.__name__ = "learning_reward"
    completions = t["prompts_per_step"] * r["num_generations"]
    accum = completions // t["micro_batch_size"]
    args = GRPOConfig(
        output_dir=str(out / "trl"), seed=cfg["seed"], data_seed=cfg["seed"],
        per_device_train_batch_size=t["micro_batch_size"], gradient_accumulation_steps=accum,
        num_generations=r["num_generations"], max_completion_length=r["max_new_tokens"],
        temperature=r["temperature"], top_p=r["top_p"], top_k=0,
        num_iterations=mu, beta=lo["beta"], loss_type=lo["aggregation"], epsilon=cfg["objective"].get("epsilon", 0.2),
        scale_rewards=cfg.get("advantage", {}).get("scale", "group"),
        learning_rate=o["learning_rate"], lr_scheduler_type=o["schedule"], warmup_steps=o.get("warmup_steps") or 0,
        weight_decay=o.get("weight_decay", 0.0), max_grad_norm=o.get("max_grad_norm", 1.0),
        max_steps=steps, logging_steps=1, report_to=[], save_strategy="no",
        bf16=dtype == torch.bfloat16, use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=bool(cfg["model"].get("gradient_checkpointing", False)), shuffle_dataset=True,
    )
    records: list[dict] = []
    state = {"t": 0.0, "reward": None, "len": None}

    class Log(TrainerCallback):
        def on_step_begin(self, *_, **__):
            state["t"] = time.perf_counter()

        def on_log(self, args, st, control, logs=None, **kw):
            logs = logs or {}
            if "reward" in logs:  # logged by the steps that generated; reused steps repeat it (as ours)
                state["reward"], state["len"] = logs["reward"], logs.get("completions/mean_length")
            if "loss" not in logs and "reward" not in logs:
                return
            clipped = None
            if "clip_ratio/region_mean" in logs:
                clipped = logs["clip_ratio/region_mean"]
            rec = {"step": st.global_step, "reward/mean": state["reward"], "completion_len/mean": state["len"],
                   "entropy": logs.get("entropy"), "clip/clipped": clipped, "grad_norm": logs.get("grad_norm"),
                   "lr": logs.get("learning_rate"), "time/step_s": time.perf_counter() - state["t"]}
            records.append(rec)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"trl_learning step={st.global_step} reward={state['reward']} len={state['len']} "
                  f"seconds={rec['time/step_s']:.1f}", flush=True)

    (out / "metrics.jsonl").write_text("")
    run_cfg = {**cfg, "name": "TRL GRPO-clip", "objective": {**cfg["objective"], "name": "clip"},
               "train": {**t, "max_steps": steps, "num_iterations": mu}, "trainer": f"trl {trl.__version__}"}
    (out / "config.yaml").write_text(yaml.safe_dump(run_cfg, sort_keys=False))
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tokenizer,
                          callbacks=[Log()])
    started = time.perf_counter()
    trainer.train()
    trainer.save_model(str(out / "final"))
    tokenizer.save_pretrained(str(out / "final"))
    print(f"trl_learning done steps={len(records)} seconds={time.perf_counter() - started:.0f} "
          f"reward_first={records[0]['reward/mean'] if records else None} "
          f"reward_last={records[-1]['reward/mean'] if records else None}", flush=True)


if __name__ == "__main__":
    main()
