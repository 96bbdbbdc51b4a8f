"""The policy being trained: device, precision, loading (full or LoRA), the reference model, exporting.

Precision. ``model.dtype`` is the *compute* dtype. The trained weights (and AdamW's moments) are
always float32: at the paper's learning rates (5e-7 .. 1e-6) an update is far below bf16's resolution
(8 bits of mantissa), so pure-bf16 weights would silently not train. With ``bfloat16`` the forward
and backward passes run under ``torch.autocast`` (mixed precision, as transformers' Trainer does
with ``bf16=True``); with ``float32`` everything is float32. ``float16`` would need loss scaling and
is refused. On a CPU without native bf16 instructions bf16 is about seven times slower than fp32
(measured in docs/training.md): the trainer warns.

LoRA (peft). Only the adapters train; the reference policy for the KL term is the same model with
its adapters disabled (no second copy). Checkpoints hold the *merged* weights as a plain Hugging
Face model (so the evaluator loads them like any other checkpoint) plus the adapter weights.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pspo_eval.console import warn
from pspo_eval.errors import PspoError, require

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise PspoError(f"model.device is '{spec}' but no CUDA GPU is available", "use --set model.device=cpu")
    if spec == "mps" and not torch.backends.mps.is_available():
        raise PspoError("model.device is 'mps' but MPS is not available", "use --set model.device=cpu")
    return torch.device(spec)


def autocast_dtype(dtype_name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``model.dtype`` on ``device`` (None: plain float32)."""
    dtype = _DTYPES[dtype_name]
    if dtype == torch.float32:
        return None
    if dtype == torch.float16:
        raise PspoError(
            "model.dtype=float16 is not supported for training (it needs loss scaling)",
            "use bfloat16 (GPUs from Ampere on) or float32",
        )
    if device.type == "cpu":
        from pspo_eval.generation.hf import cpu_supports_bf16

        if not cpu_supports_bf16():
            warn(
                "model.dtype=bfloat16 on a CPU without native bf16 instructions is about seven times slower "
                "than float32 (--set model.dtype=float32)"
            )
    elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PspoError("this GPU does not support bfloat16", "use --set model.dtype=float32")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise PspoError(f"could not load the tokenizer of '{path}': {_first_line(exc)}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_causal_lm(path: str | Path, *, dtype: torch.dtype, attn_implementation: str | None = None):
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise PspoError(
            f"could not load model '{path}': {_first_line(exc)}",
            "give a directory with config.json and *.safetensors, or a hub id reachable from here",
        ) from exc


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def apply_lora(model, lora_cfg):
    peft = require("peft", extra="lora", what="model.lora (LoRA adapters)")
    targets = lora_cfg.target_modules
    config = peft.LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def load_policy(model_cfg, *, model_path: str, device: torch.device, weights_from: Path | None = None):
    """The trainable policy on ``device`` in float32 (see the module docstring), in train mode.

    ``weights_from``: a checkpoint directory to resume from (its merged model for full fine-tuning;
    its ``trainer/adapter.safetensors`` on top of the base model for LoRA).
    """
    lora = model_cfg.lora
    source = weights_from if (weights_from is not None and lora is None) else model_path
    model = load_causal_lm(source, dtype=torch.float32, attn_implementation=model_cfg.attn_implementation)
    if lora is not None:
        model = apply_lora(model, lora)
        if weights_from is not None:
            from safetensors.torch import load_file

            saved = load_file(str(Path(weights_from) / "trainer" / "adapter.safetensors"))
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            if set(saved) != trainable:
                raise PspoError(
                    f"checkpoint {weights_from}: its adapter weights do not match model.lora",
                    "resume with the same model.lora settings the run was started with",
                )
            model.load_state_dict(saved, strict=False)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.to(device)
    model.train()
    return model


def load_reference(model_cfg, *, model_path: str, device: torch.device):
    """The frozen initial policy for the KL term (None with LoRA: the adapters are switched off instead).

    Loaded in float32 like the policy's master weights and run under the same autocast, so that it
    computes exactly what the policy computes at step 0 (KL = 0). A bf16 copy would differ in every op
    that autocast keeps in float32 (norms, embeddings), and KL would start above zero.
    """
    if model_cfg.lora is not None:
        return None
    ref = load_causal_lm(model_path, dtype=torch.float32, attn_implementation=model_cfg.attn_implementation)
    ref.to(device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def unwrap(model):
    """The model under a DDP / accelerate wrapper."""
    return getattr(model, "module", model)


@torch.no_grad()
def export_state_dict(model) -> dict[str, Tensor]:
    """The policy's weights under the plain Hugging Face names (LoRA: merged into the base weights)."""
    model = unwrap(model)
    if not is_peft(model):
        return {k: v.detach() for k, v in model.state_dict().items()}
    base = model.get_base_model()
    lora_modules = {name: m for name, m in base.named_modules() if hasattr(m, "get_delta_weight")}
    out: dict[str, Tensor] = {}
    for name, tensor in base.state_dict().items():
        if ".lora_" in name or name.split(".")[-1].startswith("lora_"):
            continue
        if ".base_layer." in name:
            module_name, _, leaf = name.rpartition(".base_layer.")
            if leaf == "weight" and module_name in lora_modules:
                module = lora_modules[module_name]
                for adapter in module.active_adapters:
                    tensor = tensor + module.get_delta_weight(adapter).to(tensor.dtype)
            name = f"{module_name}.{leaf}"
        out[name] = tensor.detach()
    return out


def trainable_state_dict(model) -> dict[str, Tensor]:
    return {n: p.detach() for n, p in unwrap(model).named_parameters() if p.requires_grad}


def save_model_dir(model, tokenizer, target: Path) -> None:
    """A plain Hugging Face model directory (safetensors + config + generation config + tokenizer)."""
    model = unwrap(model)
    target.mkdir(parents=True, exist_ok=True)
    if is_peft(model):
        base = model.get_base_model()
        base.save_pretrained(str(target), state_dict=export_state_dict(model))
        model.save_pretrained(str(target / "adapter"))  # peft's own format, for users of the adapter
    else:
        model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
