"""Training: GR-PSPO and its baselines (GRPO-clip, GRPO-noclip, and GSPO, CISPO, SAPO).

- :mod:`~pspo_eval.train.objectives`  — the policy losses, one pure function each (formula in the docstring)
- :mod:`~pspo_eval.train.aggregation` — per-token loss → scalar (dapo, grpo, dr_grpo), micro-batch exact
- :mod:`~pspo_eval.train.advantages`  — group-relative advantages and the k3 KL estimator
- :mod:`~pspo_eval.train.config`      — :class:`TrainConfig`, YAML presets with ``base:``, ``--set`` overrides
- :mod:`~pspo_eval.train.loop`        — :class:`~pspo_eval.train.loop.Trainer`, composed of ``setup`` (building
  the run), ``rollout`` (sampling), ``step`` (loss and update), ``logprobs`` (the forward pass), ``save``

Names are loaded lazily: importing this package does not import torch, so the CLI stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "policy_loss": "objectives",
    "ratio_stats": "objectives",
    "summarize_stats": "objectives",
    "OBJECTIVES": "objectives",
    "aggregate": "aggregation",
    "count_items": "aggregation",
    "AGGREGATIONS": "aggregation",
    "group_advantages": "advantages",
    "kl_k3": "advantages",
    "AdvantageStats": "advantages",
    "TrainConfig": "config",
    "load_config": "config",
    "config_hash": "config",
    "dump_config": "config",
    "config_from_dict": "config",
    "list_presets": "config",
    "OBJECTIVE_NAMES": "config",
    "PAPER_SYSTEM_PROMPT": "config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pspo_eval.train' has no attribute '{name}'")
    return getattr(importlib.import_module(f"pspo_eval.train.{module}"), name)
