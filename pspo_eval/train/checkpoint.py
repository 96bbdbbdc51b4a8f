"""Checkpoints: Hugging Face model directories plus the trainer's state, written atomically, no pickle.

Layout of ``OUT/checkpoint-N`` (N = optimizer steps taken)::

    config.json, generation_config.json, model.safetensors, tokenizer files   <- a plain HF model
    config.yaml                    the fully resolved training config
    adapter/                       (LoRA only) peft's adapter directory
    trainer/state.json             step, config hash, Python/NumPy RNG, best eval, parameter names
    trainer/optimizer.safetensors  AdamW's tensors (its param groups are in optimizer.json)
    trainer/optimizer.json
    trainer/rng.safetensors        torch CPU (and CUDA) generator states
    trainer/rollout-rankR.safetensors  only between the μ steps of a rollout: the rollout being trained on
    trainer/adapter.safetensors    (LoRA only) the trainable adapter weights, by parameter name

Everything is safetensors or JSON, so loading a checkpoint never unpickles anything. A checkpoint is
built in a hidden temporary directory next to its final place and renamed into place when complete:
a kill during a save leaves the previous checkpoint intact and at most a ``.checkpoint-N.tmp-*``
directory, which the next run removes. Only directories with ``trainer/state.json`` count.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pspo_eval.errors import PspoError

CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")
STATE = Path("trainer") / "state.json"
FORMAT_VERSION = 1


def checkpoint_path(out: Path, step: int) -> Path:
    return Path(out) / f"checkpoint-{step}"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out`` as (step, path), oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = []
    for child in out.iterdir():
        m = CHECKPOINT_RE.fullmatch(child.name)
        if m and (child / STATE).is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(out: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def remove_partial(out: Path) -> list[Path]:
    """Delete temporary directories left by a save that was killed (returns what was removed)."""
    out = Path(out)
    removed = []
    if out.is_dir():
        for child in out.iterdir():
            if child.name.startswith(".") and (".tmp-" in child.name or ".old-" in child.name) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``target`` in one rename (old one removed)."""
    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prune_checkpoints(out: Path, keep_last: int | None, protect: Collection[int] = frozenset()) -> list[int]:
    """Delete all but the newest ``keep_last`` checkpoints (never those in ``protect``). Returns steps removed."""
    if keep_last is None:
        return []
    found = list_checkpoints(out)
    removed = []
    for step, path in found[: max(0, len(found) - keep_last)]:
        if step in protect:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(step)
    return removed


# --- optimizer ---------------------------------------------------------------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, param_names: list[str], directory: Path) -> None:
    """The optimizer's state as safetensors (tensors) + JSON (param groups, scalars, parameter names)."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = []
    for group in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    save_file(tensors, str(directory / "optimizer.safetensors"))
    meta = {"param_groups": groups, "scalars": scalars, "param_names": param_names, "class": type(optimizer).__name__}
    (directory / "optimizer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_optimizer(optimizer: torch.optim.Optimizer, param_names: list[str], directory: Path) -> None:
    from safetensors.torch import load_file

    meta = json.loads((directory / "optimizer.json").read_text(encoding="utf-8"))
    if meta.get("param_names") != param_names:
        raise PspoError(
            f"checkpoint {directory.parent}: its optimizer state is for other parameters",
            "resume with the model and LoRA settings the run was started with",
        )
    tensors = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- RNG ------------------------------------------------------------------------------------------------


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of every random generator the trainer may draw from."""
    import numpy as np

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state: Any = np.random.get_state()
    data: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, data


def restore_rng(tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    py = data["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = data["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


# --- whole checkpoints ------------------------------------------------------------------------------


def save_checkpoint(
    target: Path,
    *,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    param_names: list[str],
    state: dict[str, Any],
    config_yaml: str,
    staged: dict[str, Path] | None = None,
) -> Path:
    """Write one checkpoint atomically (see the module docstring). ``state`` goes to trainer/state.json.

    ``staged``: files already written elsewhere (each process's rollout between μ steps) to move
    into ``trainer/`` under the given names.
    """
    from safetensors.torch import save_file

    from pspo_eval.train.policy import is_peft, save_model_dir, trainable_state_dict, unwrap

    with atomic_directory(target) as tmp:
        save_model_dir(model, tokenizer, tmp)
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        trainer = tmp / "trainer"
        trainer.mkdir(exist_ok=True)
        save_optimizer(optimizer, param_names, trainer)
        rng_tensors, rng_data = capture_rng()
        save_file({k: v.contiguous() for k, v in rng_tensors.items()}, str(trainer / "rng.safetensors"))
        if is_peft(unwrap(model)):
            tensors = {k: v.to("cpu").contiguous() for k, v in trainable_state_dict(model).items()}
            save_file(tensors, str(trainer / "adapter.safetensors"))
        for name, path in (staged or {}).items():
            shutil.move(str(path), str(trainer / name))
        full = {"format": FORMAT_VERSION, **state, "rng": rng_data, "mid_rollout": bool(staged)}
        (trainer / "state.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
    return target


def read_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PspoError(f"cannot read {path}: {exc}", "the checkpoint is damaged: delete it to resume from an earlier one") from exc
    if state.get("format") != FORMAT_VERSION:
        raise PspoError(f"{path}: unknown checkpoint format {state.get('format')!r}", "resume with the version that wrote it")
    return state


def load_rng(checkpoint: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    restore_rng(load_file(str(Path(checkpoint) / "trainer" / "rng.safetensors")), state["rng"])


def resolve_run_config(
    out: Path,
    *,
    config: str | None,
    objective: str | None,
    overrides: list[str],
    max_steps: int | None,
    resume: bool,
):
    """The config to train with, and the checkpoint a resume starts from (or None).

    Fresh run: ``--config`` with ``--objective`` / ``--set`` / ``--max-steps`` on top. Resume: the
    latest checkpoint's saved ``config.yaml`` with those options on top (the trainer warns when
    they change it); a ``--config`` given as well must resolve to the same config (same hash), so a
    typo cannot silently change a run.
    """
    from pspo_eval.train.config import config_hash, load_config

    sets = list(overrides) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
    found = latest_checkpoint(out) if resume else None
    if found is None:
        if config is None:
            hint = "give --config FILE (or a preset such as demo-cpu)"
            if resume:
                raise PspoError(f"--resume: {out} holds no checkpoint to resume from", hint)
            raise PspoError("no config given", hint)
        return load_config(config, overrides=sets, objective=objective), None
    step, path = found
    cfg = load_config(path / "config.yaml", overrides=sets, objective=objective)
    if config is not None:
        given = load_config(config, overrides=sets, objective=objective)
        if config_hash(given) != config_hash(cfg):
            raise PspoError(
                f"--config {config} differs from the config of the run in {out} (checkpoint-{step})",
                "omit --config to continue with the saved config (change settings with --set), or use a new --out",
            )
        cfg = given
    return cfg, path  # the trainer warns when cfg differs from the checkpoint's config
