"""Training configuration: one pydantic model, YAML presets with inheritance, ``--set`` overrides.

A training run is fully described by a :class:`TrainConfig`. Presets live in ``pspo_eval/resources/configs/`` as YAML;
a preset may name a ``base:`` file (relative to itself) whose values it inherits and overrides, so
the paper presets share one ``paper/_base.yaml``. On top of a file, ``--set key.sub=value``
overrides change single fields (the value is parsed as YAML: ``5e-7`` is a float, ``null`` is None,
``[a, b]`` a list). Anything wrong (bad YAML, an unknown key, a value out of range) raises one
:class:`~pspo_eval.errors.PspoError` naming the field path and the reason.

Vocabulary used throughout:

- a *rollout* generates ``num_generations`` completions for each of ``prompts_per_step`` prompts;
- an *optimizer step* is one parameter update over all completions of a rollout, split into
  micro-batches of ``micro_batch_size`` completions (gradient accumulation);
- each rollout is used for ``num_iterations`` (μ) optimizer steps, so ``max_steps``, the warmup and
  the learning-rate schedule count optimizer steps, exactly as TRL's ``GRPOTrainer`` counts them.

This module imports neither torch nor transformers, so the CLI can read configs cheaply. It also
holds one parameter model per objective (:data:`ObjectiveParams`, a union discriminated by
``name``), where each default and bound is written once: the flat ``objective:`` section of the
YAML, :func:`check_objective_params` and the keyword defaults of the loss functions in
:mod:`pspo_eval.train.objectives` all read them from there.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from pspo_eval import config
from pspo_eval.config import Schema
from pspo_eval.errors import PspoError
from pspo_eval.generation.prompts import PAPER_SYSTEM_PROMPT  # the one copy; re-exported here

# The default reward: the PSPO authors' GSM8K reward (1 for a numerically correct final answer, +0.05 for
# the '#### <n>' format, clipped to [0, 1]), registered as "paper" in pspo_eval.grading.reward.
PAPER_REWARD = "paper"

# ---------------------------------------------------------------------------------------------------
# Objectives: one parameter model per objective, each default and bound written once here
# ---------------------------------------------------------------------------------------------------


def _check_value(name: str, key: str, value: Any) -> None:
    """Raise :class:`PspoError` for an out-of-range objective parameter (``None`` is always allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PspoError(f"objective '{name}': {key} must be a finite number (got {value!r})")
    if key == "alpha" and not 0.0 <= value <= 1.0:
        raise PspoError(
            f"objective '{name}': alpha must be in [0, 1] (got {value})",
            "alpha=0 is no-clip GRPO, alpha=1 freezes the policy",
        )
    if key.startswith("epsilon") and value < 0:
        raise PspoError(f"objective '{name}': {key} must be >= 0 (got {value})")
    if key == "delta" and value <= 1.0:
        raise PspoError(
            f"objective '{name}': delta must be > 1 (got {value})",
            "dual clip bounds the loss of negative-advantage tokens at delta*A; use e.g. 3",
        )
    if key == "max_weight" and value <= 0:
        raise PspoError(f"objective '{name}': max_weight must be > 0 (got {value})", "5 is the default")
    if key.startswith("tau") and value <= 0:
        raise PspoError(f"objective '{name}': {key} must be > 0 (got {value})")


class _Params(BaseModel):
    """One objective's parameters, as the keyword arguments of its loss in :mod:`pspo_eval.train.objectives`.

    ``None`` for a parameter means "off" (epsilon_high=None: same as epsilon; delta=None: no dual
    clip; cispo epsilon_low=None: no lower bound on the IS weight).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str

    @model_validator(mode="before")
    @classmethod
    def _range(cls, data: Any) -> Any:
        if isinstance(data, dict):
            name = cls.model_fields["name"].default
            for key, value in data.items():
                if key != "name" and key in cls.model_fields:
                    _check_value(name, key, value)
        return data

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name"})


class PspoParams(_Params):
    # PSPO paper (arXiv 2509.21282): alpha = 0.1 in all reported runs.
    name: Literal["pspo"] = "pspo"
    alpha: float = Field(default=0.1, description="smoothing strength in [0, 1].")


class ClipParams(_Params):
    # PPO/GRPO clip: epsilon 0.2 (Schulman et al. 2017; TRL's default); dual clip off.
    name: Literal["clip"] = "clip"
    epsilon: float = Field(default=0.2, description="lower clip range (and upper, unless epsilon_high is set).")
    epsilon_high: float | None = Field(default=None, description="upper clip range; null = epsilon.")
    delta: float | None = Field(
        default=None, description="dual-clip bound (> 1) for negative advantages; null = off."
    )


class NoclipParams(_Params):
    name: Literal["noclip"] = "noclip"


class GspoParams(_Params):
    # GSPO paper (Zheng et al. 2025, arXiv 2507.18071, sec. 5.1): sequence-ratio clip 3e-4 / 4e-4.
    name: Literal["gspo"] = "gspo"
    epsilon: float = Field(default=3e-4, description="lower clip range of the sequence ratio.")
    epsilon_high: float = Field(default=4e-4, description="upper clip range of the sequence ratio.")


class CispoParams(_Params):
    # CISPO (MiniMax-M1, arXiv 2506.13585): no lower bound on the IS weight ("we did not impose a lower
    # bound ... set epsilon_low large"); the paper gives no number for the upper one, so the IS weight
    # is truncated at 5, ScaleRL's value (arXiv 2510.13786; insensitive over 5..9). max_weight is the
    # cap itself, the meaning TRL gives its `epsilon_high` for cispo, so a value copied from TRL means
    # the same here.
    name: Literal["cispo"] = "cispo"
    epsilon_low: float | None = Field(default=None, description="IS-weight lower bound 1-x; null = none.")
    max_weight: float = Field(
        default=5.0, description="the IS weight is truncated at this value (TRL's epsilon_high for cispo)."
    )


class SapoParams(_Params):
    # SAPO (Gao et al. 2025, arXiv 2511.20347): tau_pos = 1.0, tau_neg = 1.05 (tau_neg > tau_pos).
    name: Literal["sapo"] = "sapo"
    tau_pos: float = Field(default=1.0, description="gate temperature for positive advantages.")
    tau_neg: float = Field(default=1.05, description="gate temperature for negative advantages.")


# The chosen objective with its parameters: a union discriminated by ``name``.
ObjectiveParams = Annotated[
    PspoParams | ClipParams | NoclipParams | GspoParams | CispoParams | SapoParams, Field(discriminator="name")
]
ObjectiveName = Literal["pspo", "clip", "noclip", "gspo", "cispo", "sapo"]
OBJECTIVE_NAMES: tuple[str, ...] = get_args(ObjectiveName)
OBJECTIVE_PARAMS: dict[str, type[_Params]] = {
    cls.model_fields["name"].default: cls for cls in get_args(get_args(ObjectiveParams)[0])
}
assert tuple(OBJECTIVE_PARAMS) == OBJECTIVE_NAMES
_OBJECTIVE_ADAPTER: TypeAdapter[Any] = TypeAdapter(ObjectiveParams)

# Per objective: parameter -> default (derived from the models above; the loss functions' keyword
# defaults are read from here too).
OBJECTIVE_DEFAULTS: dict[str, dict[str, float | None]] = {
    name: cls.model_validate({}).kwargs() for name, cls in OBJECTIVE_PARAMS.items()
}


def objective_params(name: str, params: dict[str, Any]) -> _Params:
    """The typed parameters of objective ``name`` (``None`` for a parameter means its default).

    Raises :class:`PspoError` naming the objective or the parameter: an unknown objective, an
    unknown parameter, alpha outside [0, 1], a negative epsilon, delta <= 1, a non-positive tau.
    """
    if name not in OBJECTIVE_PARAMS:
        close = difflib.get_close_matches(name, OBJECTIVE_NAMES, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise PspoError(f"unknown objective '{name}'", f"{hint}known: {', '.join(OBJECTIVE_NAMES)}")
    fields = [key for key in OBJECTIVE_PARAMS[name].model_fields if key != "name"]
    unknown = [key for key in params if key not in fields]
    if unknown:
        takes = ", ".join(fields) or "no parameters"
        raise PspoError(f"objective '{name}' has no parameter '{unknown[0]}'", f"'{name}' takes: {takes}")
    given = {key: value for key, value in params.items() if value is not None}
    return _OBJECTIVE_ADAPTER.validate_python({"name": name, **given})


def check_objective_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate an objective's parameters and return them with defaults filled in (see :func:`objective_params`)."""
    return objective_params(name, params).kwargs()


# ---------------------------------------------------------------------------------------------------
# The config model
# ---------------------------------------------------------------------------------------------------

# The names a config may choose from, as types (the trainer's functions take these too).
Dtype = Literal["bfloat16", "float16", "float32"]
Aggregation = Literal["dapo", "grpo", "dr_grpo"]
AdvantageScale = Literal["group", "batch", "none"]
RolloutBackend = Literal["hf", "vllm"]
VllmMode = Literal["colocate", "server"]
StopRule = Literal["eos", "eos+end_of_turn"]
Schedule = Literal["constant", "linear", "cosine"]
MetricSink = Literal["tensorboard", "wandb"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Section):
    """LoRA adapters (peft). Absent (null) means full fine-tuning, as in the paper."""

    r: int = Field(default=16, ge=1, description="Adapter rank.")
    alpha: float = Field(default=32.0, gt=0, description="LoRA scaling numerator (lora_alpha).")
    # 0 by default: the μ > 1 updates of one rollout compare π_θ with π_old through the ratio, and
    # dropout noise in π_θ would show up in that ratio (and in what clipping or smoothing acts on).
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input (0 for RL).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="Module names to adapt, or 'all-linear'."
    )


class ModelConfig(_Section):
    """The policy: what to load and how."""

    path: str = Field(
        description="Model directory, checkpoint, demo alias (smollm2-135m-instruct) or hub id."
    )
    dtype: Dtype = Field(
        default="bfloat16", description="Weights/compute dtype."
    )
    device: str = Field(
        default="auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'."
    )
    gradient_checkpointing: bool = False
    attn_implementation: str | None = Field(
        default=None, description="Passed to from_pretrained (e.g. 'sdpa')."
    )
    lora: LoraConfig | None = None

    @field_validator("path")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty (a model directory, demo alias or hub id)")
        return value.strip()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' (got '{value}')")
        return value


class DataConfig(_Section):
    """The training prompts. Paper: GSM8K train shuffled with seed 42; first 7,000 train, rest validation."""

    dataset: str = Field(
        default="gsm8k_train", description="Registered dataset name (ignored when `file` is set)."
    )
    file: str | None = Field(
        default=None, description="A JSONL file of {question, answer} rows instead of `dataset`."
    )
    train_size: int = Field(
        default=7000, ge=1, description="Prompts used for training; the rest are validation."
    )
    split_seed: int = Field(default=42, description="Seed of the shuffle before the train/validation split.")
    shuffle: bool = Field(
        default=True, description="Reshuffle the training prompts every epoch (seeded by `seed`)."
    )
    system_prompt: str | None = Field(
        default=PAPER_SYSTEM_PROMPT, description="System message; null for none."
    )


# Where each objective's parameters live in the flat ``objective:`` section of the YAML: pspo's and
# clip's under their own names (they came first), the later objectives' prefixed with the objective
# (gspo_epsilon, cispo_max_weight, sapo_tau_pos, ...).
_UNPREFIXED = ("pspo", "clip")


def yaml_key(objective: str, param: str) -> str:
    """The ``objective.*`` config key of an objective's parameter (``gspo``, ``epsilon`` -> ``gspo_epsilon``)."""
    return param if objective in _UNPREFIXED else f"{objective}_{param}"


def _param_field(objective: str, param: str) -> Any:
    """A config field whose default and description are the objective parameter model's."""
    info = OBJECTIVE_PARAMS[objective].model_fields[param]
    return Field(default=info.default, description=f"{objective}: {info.description}")


class ObjectiveConfig(_Section):
    """Which policy loss, and its parameters (see pspo_eval.train.objectives for the formulas).

    The section stays flat, every objective's parameters side by side, as the YAML files and the
    saved runs have it: ``--objective NAME`` then switches the loss and keeps the other values, and
    the config hash of every existing run (which covers the whole section) is unchanged. The
    defaults come from the per-objective models above; :meth:`selected` gives the chosen one, typed.
    """

    name: ObjectiveName = "pspo"
    alpha: float = _param_field("pspo", "alpha")
    epsilon: float = _param_field("clip", "epsilon")
    epsilon_high: float | None = _param_field("clip", "epsilon_high")
    delta: float | None = _param_field("clip", "delta")
    gspo_epsilon: float = _param_field("gspo", "epsilon")
    gspo_epsilon_high: float = _param_field("gspo", "epsilon_high")
    cispo_epsilon_low: float | None = _param_field("cispo", "epsilon_low")
    cispo_max_weight: float = _param_field("cispo", "max_weight")
    sapo_tau_pos: float = _param_field("sapo", "tau_pos")
    sapo_tau_neg: float = _param_field("sapo", "tau_neg")

    def _values(self, objective: str) -> dict[str, Any]:
        keys = [k for k in OBJECTIVE_PARAMS[objective].model_fields if k != "name"]
        return {key: getattr(self, yaml_key(objective, key)) for key in keys}

    def selected(self) -> _Params:
        """The chosen objective's parameters as its own model (a member of :data:`ObjectiveParams`)."""
        return objective_params(self.name, self._values(self.name))

    def params(self) -> dict[str, Any]:
        """The keyword arguments of ``objectives.policy_loss`` for the chosen objective."""
        return self.selected().kwargs()

    @model_validator(mode="after")
    def _check_all(self) -> ObjectiveConfig:
        # Every parameter is checked, not just the chosen objective's: a wrong value in a file is a
        # mistake even while it is unused (and would bite as soon as the objective is switched).
        for objective in OBJECTIVE_NAMES:
            for key, value in self._values(objective).items():
                try:
                    _check_value(objective, key, value)
                except PspoError as exc:
                    reason = exc.one_line().split(": ", 1)[-1]
                    raise ValueError(f"objective.{yaml_key(objective, key)}: {reason}") from None
        return self


# Every parameter of every objective has its field in the flat section, and nothing else does.
assert set(ObjectiveConfig.model_fields) - {"name"} == {
    yaml_key(o, k) for o, cls in OBJECTIVE_PARAMS.items() for k in cls.model_fields if k != "name"
}


class LossConfig(_Section):
    """How per-token losses become one number, and the optional KL penalty."""

    aggregation: Aggregation = Field(
        default="dapo",
        description="dapo: mean over all completion tokens of the optimizer batch; grpo: mean per "
        "sequence then over sequences; dr_grpo: sum / (sequences x max_new_tokens).",
    )
    beta: float = Field(
        default=0.0, ge=0.0, description="KL coefficient (k3 estimator against the initial model); 0 = off."
    )


class AdvantageConfig(_Section):
    scale: AdvantageScale = Field(
        default="group", description="Divide r - group mean by the group std, the batch std, or nothing."
    )
    eps: float = Field(default=1e-4, ge=0.0, description="Added to the std before dividing (TRL's 1e-4).")


class VllmConfig(_Section):
    """vLLM rollout options (used only with rollout.backend = vllm)."""

    mode: VllmMode = "colocate"
    gpu_memory_utilization: float = Field(default=0.3, gt=0.0, le=1.0)
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    enable_prefix_caching: bool = True
    enforce_eager: bool | None = Field(
        default=None, description="null = eager on a CPU (faster there at these sizes), compiled graphs on a GPU."
    )
    importance_sampling: bool = Field(
        default=True,
        description="Truncated importance sampling: weight each token's loss by min(pi_old / q_vllm, cap).",
    )
    importance_sampling_cap: float = Field(default=3.0, ge=1.0, description="The cap C of those weights (TRL's 3).")
    server_url: str | None = Field(
        default=None, description="mode=server: base URL of a running vLLM server."
    )


class RolloutConfig(_Section):
    """Sampling the group of completions for each prompt."""

    backend: RolloutBackend = "hf"
    num_generations: int = Field(default=4, description="Completions per prompt (the group size G, >= 2).")
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = 0.8
    top_p: float = 0.9
    top_k: int | None = Field(default=None, ge=1, description="null = no top-k filtering.")
    stop: StopRule = Field(
        default="eos+end_of_turn",
        description="Where a completion ends: the tokenizer's and generation config's EOS ids only "
        "(what TRL does, and so the paper's runs), or also the chat template's end-of-turn token "
        "(<|im_end|>, <|eot_id|>, ...).",
    )
    generation_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="hf backend: completions generated per generate() call; null = all at once.",
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig)

    @field_validator("num_generations")
    @classmethod
    def _group(cls, value: int) -> int:
        if value < 2:
            raise ValueError(
                f"must be >= 2 (got {value}): group-relative advantages need at least two completions"
            )
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(
                f"must be > 0 (got {value}): GRPO needs sampled, different completions per prompt"
            )
        return value

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"must be in (0, 1] (got {value})")
        return value


class LoopConfig(_Section):
    """Batch shape and training length."""

    prompts_per_step: int = Field(
        default=16, ge=1, description="Prompts per rollout (x num_generations completions)."
    )
    micro_batch_size: int = Field(
        default=16, ge=1, description="Completions per forward/backward (gradient accumulation)."
    )
    num_iterations: int = Field(default=2, ge=1, description="μ: optimizer steps taken on each rollout.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Total optimizer steps; null = from `epochs`."
    )
    epochs: float = Field(
        default=1.0, gt=0.0, description="Passes over the training prompts (when max_steps is null)."
    )


class OptimConfig(_Section):
    """AdamW and the learning-rate schedule (steps are optimizer steps)."""

    learning_rate: float = Field(default=5e-7, gt=0.0)
    schedule: Schedule = Field(
        default="linear", description="After warmup: constant, linear decay to 0, or cosine decay to 0."
    )
    warmup_steps: int | None = Field(default=None, ge=0, description="Warmup in optimizer steps.")
    warmup_ratio: float | None = Field(
        default=None, ge=0.0, lt=1.0, description="Warmup as a fraction of all optimizer steps."
    )
    warmup_dataset_fraction: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Warmup steps = max(1, int(fraction x training prompts)), as the PSPO authors' script.",
    )
    weight_decay: float = Field(default=0.0, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(default=1e-8, gt=0.0)
    max_grad_norm: float | None = Field(
        default=1.0, gt=0.0, description="Gradient clipping by global norm; null = off."
    )

    @field_validator("adam_betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"both betas must be in [0, 1) (got {list(value)})")
        return value

    @model_validator(mode="after")
    def _one_warmup(self) -> OptimConfig:
        given = [
            k
            for k in ("warmup_steps", "warmup_ratio", "warmup_dataset_fraction")
            if getattr(self, k) is not None
        ]
        if len(given) > 1:
            fix = " ".join(f"--set optim.{k}=null" for k in given[1:])
            raise ValueError(f"optim: give at most one of {', '.join(given)} (e.g. {fix})")
        return self


class RewardSpec(_Section):
    """One reward function: a registered name (paper, correctness, format) or 'package.module:function'."""

    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_]\w*|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value.strip()):
            raise ValueError(
                f"'{value}' is neither a reward name nor an import path like 'pkg.module:function'"
            )
        return value.strip()

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be finite (got {value})")
        return value


class CheckpointConfig(_Section):
    output_dir: str | None = Field(
        default=None, description="Where checkpoints go; null = the trainer's run directory."
    )
    save_every: int = Field(default=0, ge=0, description="Save every N optimizer steps; 0 = only at the end.")
    keep_last: int | None = Field(
        default=None, ge=1, description="Keep only the newest N step checkpoints; null = all."
    )
    save_final: bool = True


class LoggingConfig(_Section):
    log_every: int = Field(default=1, ge=1, description="Log metrics every N optimizer steps.")
    log_completions: int = Field(default=0, ge=0, description="Sample completions to log per rollout.")
    report_to: list[MetricSink] = Field(
        default_factory=list,
        description="Extra metric sinks besides OUT/metrics.jsonl (need the tensorboard / wandb package).",
    )


class EvalConfig(_Section):
    """Optional evaluation on the held-out validation prompts during training."""

    every: int = Field(default=0, ge=0, description="Evaluate every N optimizer steps; 0 = never.")
    limit: int | None = Field(default=None, ge=1, description="Validation prompts used; null = all.")
    select_best: bool = Field(
        default=False, description="Keep the checkpoint with the best mean validation reward."
    )


class TrainConfig(_Section):
    """Everything a training run needs. Defaults are the PSPO paper's GR-PSPO settings."""

    name: str | None = Field(default=None, description="Run name (not part of the config hash).")
    notes: str | None = Field(default=None, description="Free text (not part of the config hash).")
    seed: int = 42
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name=PAPER_REWARD)])
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, value: list[RewardSpec]) -> list[RewardSpec]:
        if not value:
            raise ValueError("at least one reward is needed")
        return value

    @model_validator(mode="after")
    def _batch_shape(self) -> TrainConfig:
        completions = self.train.prompts_per_step * self.rollout.num_generations
        if completions % self.train.micro_batch_size:
            raise ValueError(
                f"train.micro_batch_size: {self.train.micro_batch_size} does not divide the "
                f"{completions} completions of a step (prompts_per_step {self.train.prompts_per_step} x "
                f"num_generations {self.rollout.num_generations})"
            )
        if self.eval.select_best and not self.eval.every:
            raise ValueError("eval.select_best needs eval.every > 0")
        return self

    # --- derived quantities (pure arithmetic; the trainer uses these, the tests pin them) ---

    @property
    def completions_per_step(self) -> int:
        return self.train.prompts_per_step * self.rollout.num_generations

    @property
    def grad_accum_steps(self) -> int:
        return self.completions_per_step // self.train.micro_batch_size

    def rollouts_per_epoch(self, n_prompts: int) -> int:
        """Full rollouts in one pass over ``n_prompts`` (an incomplete last batch is dropped, as TRL does)."""
        return n_prompts // self.train.prompts_per_step

    def total_steps(self, n_prompts: int) -> int:
        """Optimizer steps of the whole run: ``max_steps``, or epochs x rollouts per epoch x μ."""
        if self.train.max_steps is not None:
            return self.train.max_steps
        rollouts = max(1, int(self.train.epochs * self.rollouts_per_epoch(n_prompts)))
        return rollouts * self.train.num_iterations

    def warmup_steps(self, n_prompts: int) -> int:
        """Warmup length in optimizer steps for a run over ``n_prompts`` training prompts."""
        optim = self.optim
        if optim.warmup_steps is not None:
            return optim.warmup_steps
        if optim.warmup_ratio is not None:
            return math.ceil(optim.warmup_ratio * self.total_steps(n_prompts))
        if optim.warmup_dataset_fraction is not None:
            return max(1, int(optim.warmup_dataset_fraction * n_prompts))
        return 0


# ---------------------------------------------------------------------------------------------------
# Loading, overrides, errors
# ---------------------------------------------------------------------------------------------------


def presets_dir() -> Path:
    from pspo_eval.paths import configs_dir

    return configs_dir()


def list_presets() -> list[str]:
    """Preset names relative to the presets folder (without .yaml), bases (``_*.yaml``) excluded."""
    root = presets_dir()
    names = [
        p.relative_to(root).with_suffix("").as_posix()
        for p in root.rglob("*.yaml")
        if not p.name.startswith("_")
    ]
    return sorted(names)


def resolve_config_path(spec: str | Path) -> Path:
    """A YAML path, or a preset name such as ``paper/qwen2.5-0.5b-pspo`` or ``demo-cpu``."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    # ``configs/NAME.yaml`` is the repository path from before the presets moved into the package.
    name = str(spec).removeprefix("configs/")
    for candidate in (presets_dir() / name, presets_dir() / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    close = difflib.get_close_matches(str(spec), list_presets(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"presets: {', '.join(list_presets()) or 'none'}"
    raise PspoError(f"config '{spec}' not found (no such file, and no such preset)", hint)


# Names people reach for that the schema spells differently.
_SYNONYMS = {
    "lr": "learning_rate",
    "mu": "num_iterations",
    "iterations": "num_iterations",
    "group_size": "num_generations",
    "generations": "num_generations",
    "kl": "beta",
    "kl_coef": "beta",
    "steps": "max_steps",
    "batch_size": "micro_batch_size",
    "warmup": "warmup_steps",
    "grad_clip": "max_grad_norm",
    "clip_grad_norm": "max_grad_norm",
    "max_completion_length": "max_new_tokens",
    "loss_type": "aggregation",
    "scale_rewards": "scale",
    "model_name_or_path": "path",
    "smoothing_alpha": "alpha",
    "eps": "epsilon",
}


# Keys whose meaning changed when they were renamed: a plain "did you mean" would hide that.
_RENAMED = {
    "cispo_epsilon_high": "it is now objective.cispo_max_weight, the cap itself (TRL's epsilon_high for "
    "cispo): use your old value + 1",
}


SCHEMA = Schema(TrainConfig, synonyms=_SYNONYMS, renamed=_RENAMED)


def field_paths(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[str]:
    """Every settable dotted path (``objective.alpha``, ``rollout.vllm.mode``, ``rewards``, …)."""
    return config.field_paths(model, prefix)


def apply_override(data: dict[str, Any], override: str) -> dict[str, Any]:
    """Apply one ``key.sub=value`` override to a raw training config (see :func:`pspo_eval.config.apply_override`)."""
    return config.apply_override(data, override, SCHEMA)


def config_from_dict(data: dict[str, Any], source: str = "(dict)") -> TrainConfig:
    """Validate a raw mapping into a :class:`TrainConfig`, with errors as :class:`PspoError`."""
    return config.validate(SCHEMA, data, source)


def load_config(
    path: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    objective: str | None = None,
) -> TrainConfig:
    """Read a YAML config (following ``base:``), apply ``--set`` overrides, then ``objective``, and validate.

    ``path`` is a file or a preset name (``paper/qwen2.5-0.5b-pspo``). ``objective``, when given,
    replaces ``objective.name`` only: the other parameters stay as the file sets them.
    """
    file = resolve_config_path(path)
    data = config.read_with_bases(file)
    for override in overrides:
        apply_override(data, override)
    if objective is not None:
        check_objective_params(objective, {})  # a clear error for an unknown name
        data.setdefault("objective", {})
        if not isinstance(data["objective"], dict):
            raise PspoError(f"{file}: `objective` must be a mapping")
        data["objective"]["name"] = objective
    source = str(file) + (f" with {len(overrides)} override(s)" if overrides else "")
    return config_from_dict(data, source)


# Fields that do not change what gets trained: excluded from the hash so that renaming a run, or
# changing how often it logs or saves, still resumes the same run.
_HASH_EXCLUDE: dict[str, Any] = {"name": True, "notes": True, "logging": True, "checkpoint": True}


def config_hash(cfg: TrainConfig, length: int = 16) -> str:
    """A stable hex digest of everything that determines the trained weights.

    Canonical JSON (sorted keys) of the resolved config minus name, notes, logging and checkpoint
    settings. Key order in the YAML, inheritance and overrides that land on the same values give
    the same hash. (Adding a new field to the schema changes every hash: that is on purpose.)
    """
    payload = cfg.model_dump(mode="json", exclude=_HASH_EXCLUDE)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def dump_config(cfg: TrainConfig) -> str:
    """The fully resolved config as YAML (field order as in the schema); loading it gives ``cfg`` back."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=110)
