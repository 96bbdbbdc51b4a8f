"""Shared pieces of the trainer tests: a tiny random Llama with the demo tokenizer, data, configs.

The tiny model (2 layers, hidden 32, the demo tokenizer's 49k vocabulary, untied embeddings) runs
the real loop (FastDecoder sampling, HF forward/backward, AdamW, checkpoints) in a fraction of a
second per step. Its output layer is scaled up so that sampling distributions are peaked, as a
trained model's are (a near-uniform 49k-way distribution makes top-p sampling needlessly slow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REWARD_MODULE = "pspo_train_test_rewards"
REWARD_SOURCE = '''
def length_reward(responses, golds, **kw):
    """Longer text scores higher: varies within every group, so every step has a gradient."""
    return [len(r) / 100.0 for r in responses]


def has_digit(responses, golds, **kw):
    return [1.0 if any(c.isdigit() for c in r) else 0.0 for r in responses]


def starts_with_digit(responses, golds, **kw):
    """1 when the completion states a number straight away (the learning-sanity reward)."""
    return [1.0 if r.strip()[:1].isdigit() else 0.0 for r in responses]


def wrong_length(responses, golds, **kw):
    return [0.0]


def needs_dataset(responses, golds, *, dataset):
    return [1.0 if dataset else 0.0 for _ in responses]
'''


def make_tiny_model(directory: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pspo_eval.models import resolve_model

    if (directory / "config.json").exists():
        return directory
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.9)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_problems(path: Path, n: int = 24) -> Path:
    path.write_text(
        "".join(json.dumps({"question": f"What is {i} plus {i + 1}?", "answer": str(2 * i + 1)}) + "\n" for i in range(n)),
        encoding="utf-8",
    )
    return path


def tiny_workspace(root: Path) -> tuple[Path, Path, Path]:
    """(root, model directory, problems file) with the test reward module in root (put it on sys.path)."""
    model = make_tiny_model(root / "model")
    data = write_problems(root / "problems.jsonl")
    write_reward_module(root)
    return root, model, data


def write_reward_module(directory: Path) -> None:
    (directory / f"{REWARD_MODULE}.py").write_text(REWARD_SOURCE, encoding="utf-8")


def tiny_config(model_dir: Path, data_file: Path, **sections: Any):
    """A small, fast config; ``sections`` replace/extend top-level sections (dicts are merged)."""
    from pspo_eval.train.config import config_from_dict

    base: dict[str, Any] = {
        "seed": 1,
        "model": {"path": str(model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"file": str(data_file), "train_size": 16},
        "rollout": {"num_generations": 4, "max_new_tokens": 8},
        "train": {"prompts_per_step": 2, "micro_batch_size": 4, "num_iterations": 2, "max_steps": 4},
        "optim": {"learning_rate": 1e-3, "schedule": "linear", "warmup_steps": 1},
        "rewards": [{"name": f"{REWARD_MODULE}:length_reward"}],
        "checkpoint": {"save_every": 0, "save_final": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return config_from_dict(base)
