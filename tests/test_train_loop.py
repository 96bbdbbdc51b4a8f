"""The training loop: its mechanics on a tiny random Llama (fast), learning on the demo model (slow).

The tiny model runs the real pieces (FastDecoder sampling, the HF forward/backward, AdamW,
checkpoints); only its size is small. Rewards come from a real module imported by path.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from train_helpers import (
    REWARD_MODULE,
    tiny_config,
    tiny_workspace,
)

from pspo_eval.errors import PspoError
from pspo_eval.train import loop
from pspo_eval.train import step as train_step
from pspo_eval.train.checkpoint import list_checkpoints, load_optimizer, save_optimizer
from pspo_eval.train.config import config_hash, load_config
from pspo_eval.train.loop import Trainer, completion_logprobs, lr_factor
from pspo_eval.train.metrics import read_metrics
from pspo_eval.train.rewards import RewardSet
from pspo_eval.train.rollout import PromptSchedule, completion_seed, sampled_from_vllm, vllm_sampling_kwargs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _reward_module_on_path(tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny[0]))


def cfg_for(tiny, **sections):
    _, model, data = tiny
    return tiny_config(model, data, **sections)


# --- pure pieces -------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedule_matches_transformers(schedule):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup, total = 3, 11
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    if schedule == "constant":
        ref = get_constant_schedule_with_warmup(opt, warmup)
    elif schedule == "linear":
        ref = get_linear_schedule_with_warmup(opt, warmup, total)
    else:
        ref = get_cosine_schedule_with_warmup(opt, warmup, total)
    ours = lr_factor(schedule, warmup, total)
    for step in range(total + 2):
        assert ours(step) == pytest.approx(ref.lr_lambdas[0](step), abs=1e-12)


def test_completion_seeds_are_stable_and_distinct():
    a = completion_seed(42, 3, "gsm8k-train-0001", 0)
    assert a == completion_seed(42, 3, "gsm8k-train-0001", 0)
    others = {
        completion_seed(43, 3, "gsm8k-train-0001", 0),
        completion_seed(42, 4, "gsm8k-train-0001", 0),
        completion_seed(42, 3, "gsm8k-train-0002", 0),
        completion_seed(42, 3, "gsm8k-train-0001", 1),
    }
    assert a not in others and len(others) == 4
    assert 0 <= a < 2**63


def test_prompt_schedule_walks_epochs_and_reshuffles():
    s = PromptSchedule(10, 3, shuffle=True, seed=7)
    epoch0 = [i for k in range(3) for i in s.indices(k)]
    assert len(set(epoch0)) == 9  # 3 full batches, the incomplete last one dropped
    epoch1 = [i for k in range(3, 6) for i in s.indices(k)]
    assert epoch1 != epoch0 and len(set(epoch1)) == 9
    assert s.indices(4) == PromptSchedule(10, 3, shuffle=True, seed=7).indices(4)  # stateless
    assert PromptSchedule(10, 3, shuffle=False, seed=7).indices(1) == [3, 4, 5]
    with pytest.raises(PspoError, match="prompts_per_step"):
        PromptSchedule(2, 3, shuffle=True, seed=0)


def test_reward_set_weights_labels_and_errors(tiny):
    from pspo_eval.train.config import RewardSpec

    specs = [
        RewardSpec(name="format", weight=0.5),
        RewardSpec(name=f"{REWARD_MODULE}:has_digit", weight=2.0),
        RewardSpec(name="format", weight=1.0),
        RewardSpec(name=f"{REWARD_MODULE}:needs_dataset"),
    ]
    rs = RewardSet(specs, dataset="gsm8k_train")
    assert rs.labels == ["format", f"{REWARD_MODULE}:has_digit", "format#2", f"{REWARD_MODULE}:needs_dataset"]
    total, parts = rs(["So 3 + 4 = 7.\n#### 7", "no idea"], ["7", "7"])
    assert parts["format"] == [1.0, 0.0] and parts[f"{REWARD_MODULE}:has_digit"] == [1.0, 0.0]
    assert total == [0.5 + 2.0 + 1.0 + 1.0, 1.0]
    with pytest.raises(PspoError, match="returned 1 values for 2"):
        RewardSet([RewardSpec(name=f"{REWARD_MODULE}:wrong_length")])(["a", "b"], ["1", "2"])
    with pytest.raises(PspoError, match="cannot import module"):
        RewardSet([RewardSpec(name="no_such_module_xyz:fn")])


def test_vllm_pieces_without_vllm():
    kw = vllm_sampling_kwargs(2**40 + 5, temperature=0.8, top_p=0.9, top_k=None, max_new_tokens=64, stop_ids=[2, 0])
    assert kw == {
        "n": 1, "temperature": 0.8, "top_p": 0.9, "top_k": -1, "max_tokens": 64,
        "seed": (2**40 + 5) & 0x7FFFFFFF, "stop_token_ids": [2, 0], "detokenize": False,
    }
    greedy = vllm_sampling_kwargs(1, temperature=0.0, top_p=0.9, top_k=5, max_new_tokens=8, stop_ids=[2])
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and greedy["top_k"] == -1
    assert sampled_from_vllm([5, 6, 2], "stop", [2]).token_ids == [5, 6, 2]
    assert sampled_from_vllm([5, 6], "stop", [2, 0]).token_ids == [5, 6, 2]  # stop id put back
    assert sampled_from_vllm([5, 6, 7], "length", [2]).finish_reason == "length"
    try:
        import vllm  # noqa: F401
    except ImportError:
        from pspo_eval.train.rollout import VLLMGenerator

        with pytest.raises(PspoError, match="pip install") as err:
            VLLMGenerator("m", None, dtype="bfloat16", seed=0, max_model_len=10, stop_ids=[2])
        assert "\n" not in err.value.one_line()


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.8, 0.95))
    for _ in range(3):
        (params[0].sum() ** 2 + params[1].pow(3).sum()).backward()
        opt.step()
        opt.zero_grad()
    save_optimizer(opt, ["a", "b"], tmp_path)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.bin"))
    fresh = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=5.0)
    load_optimizer(fresh, ["a", "b"], tmp_path)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])
    with pytest.raises(PspoError, match="other parameters"):
        load_optimizer(fresh, ["a", "c"], tmp_path)


# --- the loop on the tiny model ----------------------------------------------------------------------------


def test_run_writes_checkpoints_metrics_final_and_config(tiny, tmp_path):
    cfg = cfg_for(
        tiny,
        checkpoint={"save_every": 2, "keep_last": None, "save_final": True},
        logging={"log_completions": 2},
    )
    out = tmp_path / "run"
    summary = Trainer(cfg, out, verbose=False).run()
    assert summary["steps"] == 4
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    ckpt = out / "checkpoint-2"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "config.yaml",
                 "trainer/state.json", "trainer/optimizer.safetensors", "trainer/optimizer.json",
                 "trainer/rng.safetensors"):
        assert (ckpt / name).is_file(), name
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "config.yaml").is_file()
    # the saved configs reload to the same config (same hash)
    for path in (out / "config.yaml", ckpt / "config.yaml", out / "final" / "config.yaml"):
        assert config_hash(load_config(path)) == config_hash(cfg)
    state = json.loads((ckpt / "trainer" / "state.json").read_text())
    assert state["step"] == 2 and state["config_hash"] == config_hash(cfg) and state["mid_rollout"] is False
    # one metrics line per optimizer step, in order
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [(r["rollout"], r["iteration"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    completions = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert [c["rollout"] for c in completions] == [0, 0, 1, 1]
    # the evaluator finds the checkpoints and the final model
    from pspo_eval.evaluate import discover_checkpoints

    assert [s.step for s in discover_checkpoints(out)] == [2, 4, None]
    # the checkpoint is a plain HF model
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt)


@pytest.mark.parametrize("objective", ["pspo", "clip"])
def test_metrics_have_every_field(tiny, tmp_path, objective):
    cfg = cfg_for(
        tiny,
        objective={"name": objective},
        loss={"beta": 0.05},
        rewards=[{"name": f"{REWARD_MODULE}:length_reward"}, {"name": f"{REWARD_MODULE}:has_digit", "weight": 0.5}],
        train={"max_steps": 2},
        optim={"learning_rate": 1e-3, "schedule": "constant", "warmup_steps": 0},
    )
    Trainer(cfg, tmp_path, verbose=False).run()
    first, second = read_metrics(tmp_path)
    for key in (
        "reward/mean", "reward/std", f"reward/{REWARD_MODULE}:length_reward/mean",
        f"reward/{REWARD_MODULE}:length_reward/std", f"reward/{REWARD_MODULE}:has_digit/mean",
        "frac_zero_std", "completion_len/mean", "completion_len/max", "truncated_frac", "entropy", "kl",
        "loss", "ratio/mean", "ratio/min", "ratio/max", "grad_norm", "lr", "time/step_s", "time/rollout_s",
        "time/train_s", "tokens_per_s", "mem/peak_mib", "epoch", "elapsed_s",
    ):
        assert key in second and second[key] is not None, key
    if objective == "clip":
        assert {"clip/low_clipped", "clip/high_clipped", "clip/clipped"} <= set(second)
    else:
        assert {"pspo/smoothed_deviation", "pspo/smoothed_deviation_max"} <= set(second)
        assert second["pspo/smoothed_deviation_max"] >= second["pspo/smoothed_deviation"] > 0
        # |r̃ - 1| = (1 - α)|r - 1|
        assert second["pspo/smoothed_deviation_max"] == pytest.approx(
            0.9 * max(abs(second["ratio/max"] - 1), abs(second["ratio/min"] - 1)), rel=1e-4
        )
    assert first["ratio/min"] == first["ratio/max"] == 1.0  # first iteration: π_θ = π_old exactly
    assert first["kl"] == 0.0  # the policy is still the reference
    assert second["kl"] > 0.0 and second["ratio/max"] != 1.0
    assert first["time/rollout_s"] > 0 and second["time/rollout_s"] == 0.0
    assert first["lr"] == second["lr"] == pytest.approx(1e-3)


def _count_forwards(trainer):
    """Calls of the policy's forward (the shared-prefix pass is two calls: prefix, then the rest)."""
    calls = []
    trainer.policy.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    return calls


@pytest.mark.parametrize("mu,steps,expected", [(1, 2, 4), (2, 4, 8)])
def test_no_extra_forward_pass_for_old_logprobs(tiny, tmp_path, mu, steps, expected):
    """8 completions in micro-batches of 4: two forwards per optimizer step, and nothing else.

    μ = 1: old_logp = logp.detach(). μ = 2: the first iteration's log-probs are the old ones (TRL
    spends an extra no-grad pass per rollout on them: 12 forwards for the μ = 2 case here).
    (Plain passes counted; the prompt-sharing pass splits each into three calls, tested elsewhere.)
    """
    cfg = cfg_for(tiny, train={"num_iterations": mu, "max_steps": steps})
    trainer = Trainer(cfg, tmp_path, verbose=False)
    trainer.share_prefix = False
    assert trainer.generator.kind == "fast"  # sampling does not go through model.forward
    calls = _count_forwards(trainer)
    trainer.run()
    assert len(calls) == expected


def test_old_logprobs_are_computed_once_and_reused(tiny, tmp_path, monkeypatch):
    cfg = cfg_for(
        tiny,
        train={"num_iterations": 3, "max_steps": 3, "micro_batch_size": 4},
        optim={"learning_rate": 1e-3, "schedule": "constant", "warmup_steps": 0},
    )
    trainer = Trainer(cfg, tmp_path, verbose=False)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = train_step.policy_loss

    def spy(name, logp, old_logp, advantages, **kw):
        seen.append((logp.detach().clone(), old_logp.detach().clone()))
        return real(name, logp, old_logp, advantages, **kw)

    monkeypatch.setattr(train_step, "policy_loss", spy)
    batch = trainer.make_rollout(0)
    for _ in range(3):
        trainer.optimizer_step(batch)
    assert len(seen) == 6  # 3 iterations x 2 micro-batches
    it0, it1, it2 = seen[0:2], seen[2:4], seen[4:6]
    for j in range(2):
        assert torch.equal(it0[j][1], it0[j][0])  # iteration 0: old = current, exactly
        assert torch.equal(it1[j][1], it0[j][0])  # later iterations reuse those numbers
        assert torch.equal(it2[j][1], it0[j][0])
        mask = batch.take(batch.micro_batches(4)[j])["completion_mask"].bool()
        assert not torch.equal(it1[j][0][mask], it0[j][0][mask])  # while the policy moves
    # and they are the behaviour policy's log-probs: an independent no-grad pass with the initial weights
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny[1], dtype=torch.float32)
    mask = batch.completion_mask.bool()
    with torch.no_grad():
        ref, _ = completion_logprobs(
            initial, batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask,
            cfg.rollout.temperature,
        )
    torch.testing.assert_close(batch.old_logp[mask], ref[mask], rtol=0, atol=1e-5)


def _grads(trainer, batch):
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.accumulate_gradients(batch)
    return {n: p.grad.detach().clone() for n, p in trainer.policy.named_parameters()}


@pytest.mark.parametrize("share_prefix", [True, False])
def test_padded_tokens_get_zero_gradient(tiny, tmp_path, share_prefix):
    cfg = cfg_for(tiny, train={"num_iterations": 1})
    trainer = Trainer(cfg, tmp_path, verbose=False)
    trainer.share_prefix = share_prefix
    batch = trainer.make_rollout(0)
    # Completions that stopped early (padding after them), an extra left-padding column, and
    # advantages of both signs on every completion.
    batch.completion_mask[0, 3:] = 0
    batch.completion_mask[5, 5:] = 0
    batch.prompt_ids = torch.cat([torch.full_like(batch.prompt_ids[:, :2], 2), batch.prompt_ids], 1)
    batch.prompt_mask = torch.cat([torch.zeros_like(batch.prompt_mask[:, :2]), batch.prompt_mask], 1)
    batch.advantages = torch.linspace(-1.0, 1.0, len(batch))
    before = _grads(trainer, batch)
    assert any(g.abs().sum() > 0 for g in before.values())
    # Put a token that appears nowhere else in every padded position: nothing may change, bitwise.
    used = set(batch.prompt_ids[batch.prompt_mask.bool()].tolist()) | set(
        batch.completion_ids[batch.completion_mask.bool()].tolist()
    )
    marker = next(t for t in range(1000, 2000) if t not in used)
    batch.completion_ids[~batch.completion_mask.bool()] = marker
    batch.prompt_ids[~batch.prompt_mask.bool()] = marker
    after = _grads(trainer, batch)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    embed = after["model.embed_tokens.weight"]
    assert torch.count_nonzero(embed[marker]) == 0  # the padding token's embedding gets no gradient
    assert torch.count_nonzero(embed[batch.completion_ids[0, 0]]) > 0


def test_prompt_sharing_pass_matches_the_plain_pass(tiny, tmp_path):
    """Common prefix once, each distinct prompt once, then the completions: same log-probs and gradients."""
    from pspo_eval.train.loop import MIN_SHARED_PREFIX, shared_prefix_length

    trainer = Trainer(cfg_for(tiny, train={"num_iterations": 1, "micro_batch_size": 8}), tmp_path, verbose=False)
    batch = trainer.make_rollout(0)
    batch.completion_mask[2, 4:] = 0
    batch.advantages = torch.linspace(-1.0, 1.0, len(batch))
    assert shared_prefix_length(batch.prompt_ids, batch.prompt_mask) >= MIN_SHARED_PREFIX
    calls = _count_forwards(trainer)
    shared = _grads(trainer, batch)
    assert len(calls) == 3  # the common prefix (1 row), the 2 distinct prompts, the 8 completions
    # micro-batches hold whole groups (a prompt's completions together)
    for idx in batch.micro_batches(4):
        assert len({batch.problem_ids[i] for i in idx.tolist()}) == 1
    again = _grads(trainer, batch)
    assert all(torch.equal(shared[name], again[name]) for name in shared)  # deterministic, bitwise
    trainer.share_prefix = False
    plain = _grads(trainer, batch)
    for name in plain:
        torch.testing.assert_close(shared[name], plain[name], rtol=1e-4, atol=1e-6)
    mask = batch.completion_mask.bool()
    args = (batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask, 0.8)
    with torch.no_grad():
        a, ea = completion_logprobs(trainer.policy, *args, share_prefix=True)
        b, eb = completion_logprobs(trainer.policy, *args, share_prefix=False)
    torch.testing.assert_close(a[mask], b[mask], rtol=0, atol=1e-4)
    torch.testing.assert_close(ea[mask], eb[mask], rtol=0, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradient(tiny, tmp_path):
    plain = Trainer(cfg_for(tiny, train={"num_iterations": 1}), tmp_path / "a", verbose=False)
    batch = plain.make_rollout(0)
    batch.advantages = torch.linspace(-1.0, 1.0, len(batch))
    expected = _grads(plain, batch)
    checkpointed = Trainer(
        cfg_for(tiny, train={"num_iterations": 1}, model={"gradient_checkpointing": True}), tmp_path / "b", verbose=False
    )
    assert checkpointed.policy.is_gradient_checkpointing and not checkpointed.share_prefix
    got = _grads(checkpointed, batch)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6)


def test_a_metrics_sink_that_is_not_installed_is_a_one_line_error(tiny, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(PspoError, match="pip install tensorboard") as err:
        Trainer(cfg_for(tiny, logging={"report_to": ["tensorboard"]}), tmp_path, verbose=False)
    assert "\n" not in err.value.one_line()


def test_micro_batch_split_does_not_change_the_gradient(tiny, tmp_path):
    cfg = cfg_for(tiny, train={"num_iterations": 1, "micro_batch_size": 8})
    trainer = Trainer(cfg, tmp_path, verbose=False)
    batch = trainer.make_rollout(0)
    batch.completion_mask[1, 2:] = 0
    whole = _grads(trainer, batch)
    for size in (4, 2, 1):
        trainer.cfg.train.micro_batch_size = size
        split = _grads(trainer, batch)
        for name in whole:
            torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6)


def test_keep_last_prunes_old_checkpoints(tiny, tmp_path):
    cfg = cfg_for(tiny, checkpoint={"save_every": 1, "keep_last": 2}, train={"max_steps": 5})
    Trainer(cfg, tmp_path, verbose=False).run()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")  and p.name != ".lock"]


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tiny, tmp_path, monkeypatch):
    cfg = cfg_for(tiny, checkpoint={"save_every": 1}, train={"max_steps": 1})
    Trainer(cfg, tmp_path, verbose=False).run()
    good = (tmp_path / "checkpoint-1" / "model.safetensors").read_bytes()

    from pspo_eval.train import checkpoint

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_optimizer", broken)
    cfg2 = cfg_for(tiny, checkpoint={"save_every": 1}, train={"max_steps": 2})
    with pytest.raises(OSError):
        Trainer(cfg2, tmp_path, resume=True, verbose=False).run()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert (tmp_path / "checkpoint-1" / "model.safetensors").read_bytes() == good
    assert not list(tmp_path.glob(".checkpoint-*"))
    # a directory left by a save that was killed is not a checkpoint, and the next run removes it
    leftover = tmp_path / ".checkpoint-9.tmp-12345" / "trainer"
    leftover.mkdir(parents=True)
    (leftover / "state.json").write_text("{}")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(tiny[0]))
    Trainer(cfg2, tmp_path, resume=True, verbose=False).run()
    assert not leftover.parent.exists()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2]


def test_existing_run_needs_resume_and_a_second_trainer_is_locked_out(tiny, tmp_path):
    cfg = cfg_for(tiny, checkpoint={"save_every": 1}, train={"max_steps": 1})
    Trainer(cfg, tmp_path, verbose=False).run()
    with pytest.raises(PspoError, match="--resume"):
        Trainer(cfg, tmp_path, verbose=False)
    from pspo_eval.store import LockHeld, RunStore

    with RunStore(tmp_path).locked("another trainer"):
        with pytest.raises(LockHeld, match="in use"):
            loop.train(cfg, tmp_path, resume=True, verbose=False)


def test_validation_eval_and_best_checkpoint(tiny, tmp_path):
    cfg = cfg_for(tiny, eval={"every": 2, "limit": 4, "select_best": True}, train={"max_steps": 4})
    trainer = Trainer(cfg, tmp_path, verbose=False)
    summary = trainer.run()
    records = read_metrics(tmp_path)
    evals = [r for r in records if r.get("eval/reward_mean") is not None]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["eval/n"] == 4 for r in evals)
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    top = max(evals, key=lambda r: r["eval/reward_mean"])
    assert best["step"] == top["step"] and best["eval_reward_mean"] == pytest.approx(top["eval/reward_mean"])
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert summary["eval_best"] == pytest.approx(top["eval/reward_mean"])
    # greedy evaluation is deterministic: the same weights score the same
    assert trainer.evaluate()["eval/reward_mean"] == evals[-1]["eval/reward_mean"]


def test_lora_trains_adapters_and_saves_a_merged_model(tiny, tmp_path):
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    cfg = cfg_for(
        tiny,
        model={"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}},
        loss={"beta": 0.1},
        checkpoint={"save_every": 2},
        train={"max_steps": 2},
    )
    trainer = Trainer(cfg, tmp_path, verbose=False)
    assert trainer.generator.kind == "generate"
    assert all("lora_" in n for n in trainer.param_names)
    trainer.run()
    first = read_metrics(tmp_path)[0]
    assert first["kl"] == 0.0  # adapters start at zero: policy = reference (adapters off)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint-2", dtype=torch.float32)
    ids = torch.tensor([[1, 200, 300, 400, 500]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, trainer.policy(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "checkpoint-2" / "adapter" / "adapter_config.json").is_file()
    # resume loads the adapters back
    cfg3 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 3})})
    resumed = Trainer(cfg3, tmp_path, resume=True, verbose=False)
    for name, p in resumed.policy.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, dict(trainer.policy.named_parameters())[name])


def test_bad_config_exits_2_with_one_line(tiny, tmp_path, capsys):
    from pspo_eval.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: x\ntrain:\n  lr: 1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(bad), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'train.lr'") and "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "demo-cpu", "--objective", "clipp", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "unknown objective 'clipp'" in err and "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", "--out", str(tmp_path / "empty")])
    assert exit_info.value.code == 2
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_cli_trains_and_resumes_the_tiny_model(tiny, tmp_path):
    from typer.testing import CliRunner

    from pspo_eval.cli import app
    from pspo_eval.train.config import dump_config

    cfg = cfg_for(tiny, checkpoint={"save_every": 1, "keep_last": 1}, train={"max_steps": 1})
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_config(cfg))
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(path), "--out", str(out), "--objective", "clip"])
    assert result.exit_code == 0, result.output
    assert "training summary" in result.output
    assert load_config(out / "config.yaml").objective.name == "clip"
    result = runner.invoke(app, ["train", "--resume", "--max-steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    assert [s for s, _ in list_checkpoints(out)] == [2]


# --- the real demo model ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_demo_cpu_two_steps(tmp_path):
    from typer.testing import CliRunner

    from pspo_eval.cli import app

    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["train", "--config", "configs/demo-cpu.yaml", "--set", "train.max_steps=2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert (out / "final" / "model.safetensors").is_file() and (out / "config.yaml").is_file()


LEARN_STEPS = 8  # 4 rollouts (μ = 2)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["pspo", "clip"])
def test_mean_reward_rises_on_the_demo_model(tiny, tmp_path, objective):
    """Learning sanity: reward 1 for a completion that starts with a number, on 'What is a + b?'.

    About one completion in eight starts with a digit at first; four rollouts (eight optimizer
    steps) at a high learning rate make it the rule. (The paper's format bonus needs long
    completions before '#### n' appears; this reward moves within 6 tokens, so a step is cheap.)
    """
    import random

    rng = random.Random(0)
    data = tmp_path / "arith.jsonl"
    pairs = [(rng.randint(1, 9), rng.randint(1, 9)) for _ in range(40)]
    data.write_text("".join(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n" for a, b in pairs))
    cfg = tiny_config(
        "smollm2-135m-instruct",
        data,
        seed=0,
        data={"file": str(data), "train_size": 32, "system_prompt": None},
        objective={"name": objective},
        rollout={"num_generations": 4, "max_new_tokens": 6, "temperature": 1.0, "top_p": 0.95},
        train={"prompts_per_step": 4, "micro_batch_size": 16, "num_iterations": 2, "max_steps": LEARN_STEPS},
        optim={"learning_rate": 2e-5, "schedule": "constant", "warmup_steps": 0},
        rewards=[{"name": f"{REWARD_MODULE}:starts_with_digit"}],
    )
    started = time.perf_counter()
    Trainer(cfg, tmp_path / "run", verbose=False).run()
    seconds = time.perf_counter() - started
    rewards = [r["reward/mean"] for r in read_metrics(tmp_path / "run") if r["iteration"] == 0]
    early, late = rewards[0], sum(rewards[-2:]) / 2
    print(f"{objective}: reward per rollout {[round(r, 3) for r in rewards]} in {seconds:.0f}s")
    assert late >= early + 0.3 and late >= 0.5, rewards


@pytest.mark.slow
def test_two_processes_through_accelerate_match_one(tiny, tmp_path):
    """`accelerate launch -m pspo_eval train` with 2 processes on CPU (gloo): each samples half of
    every rollout, DDP averages; the result is the single-process run up to float rounding.
    advantage.scale=batch is the setting where the processes must share a statistic (the batch's
    reward std); with group scaling every group lies inside one process."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    from pspo_eval.train.config import dump_config

    if shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("accelerate is not installed")
    cfg = cfg_for(tiny, train={"max_steps": 3, "micro_batch_size": 2}, checkpoint={"save_every": 1, "save_final": True},
                  advantage={"scale": "batch"})
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    env = {**os.environ, "PYTHONPATH": str(tiny[0]), "PSPO_EVAL_QUIET": "1"}
    # `--multi_gpu` is accelerate's torchrun-style launcher; on a CPU-only machine the trainer then
    # sets accelerate up with cpu=True (gloo). (`--cpu --num_processes 2` starts one process.)
    launch = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    args = ["-m", "pspo_eval", "train", "--config", str(path), "--out", str(tmp_path / "two")]
    done = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    Trainer(cfg, tmp_path / "one", verbose=False).run()
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    state = json.loads((tmp_path / "two" / "checkpoint-1" / "trainer" / "state.json").read_text())
    assert state["world_size"] == 2 and state["mid_rollout"] is True
    assert {p.name for p in (tmp_path / "two" / "checkpoint-1" / "trainer").glob("rollout-rank*")} == {
        "rollout-rank0.safetensors", "rollout-rank1.safetensors",
    }
    assert [r["step"] for r in read_metrics(tmp_path / "two")] == [1, 2, 3]


def test_reference_matches_policy_at_step_zero_in_bf16(tiny, tmp_path):
    """β > 0 with a bf16-autocast policy: the reference must compute what the policy computes before
    the first update, so the first step's KL is exactly 0 (a bf16 copy of the weights made it > 0)."""
    from pspo_eval.generation.hf import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("bf16 autocast on this CPU is emulated (slow); the path is the same on GPUs")
    cfg = cfg_for(tiny, model={"dtype": "bfloat16"}, loss={"beta": 0.05}, train={"max_steps": 1})
    Trainer(cfg, tmp_path, verbose=False).run()
    (first,) = read_metrics(tmp_path)
    assert first["kl"] == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_token_logprobs_equal_the_plain_log_softmax(dtype, temperature, monkeypatch):
    """The chunked log-prob / entropy / gradient equal log_softmax(logits.float() / T) gathered."""
    from pspo_eval.train import logprobs

    monkeypatch.setattr(logprobs, "_CHUNK", 3 * 50)  # 3 positions per chunk: chunks split rows
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 8, 50, generator=gen) * 3).to(dtype)  # [B, Tc + 1, V]
    tokens = torch.randint(0, 50, (3, 7), generator=gen)
    upstream = torch.randn(3, 7, generator=gen)
    ours_in = logits.clone().requires_grad_(True)
    logp, entropy = logprobs._TokenLogProb.apply(ours_in, tokens, temperature, True)
    (logp * upstream).sum().backward()
    ref_in = logits.clone().requires_grad_(True)
    all_logp = torch.log_softmax(ref_in[:, :-1].float() / temperature, dim=-1)
    ref = all_logp.gather(-1, tokens[..., None]).squeeze(-1)
    (ref * upstream).sum().backward()
    torch.testing.assert_close(logp, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy, -(all_logp.exp() * all_logp).sum(-1).detach(), rtol=0, atol=1e-5)
    assert torch.equal(ours_in.detach(), logits)  # the inputs are not changed in place (fp32: no cast copy)
    assert ours_in.grad.dtype == dtype and not entropy.requires_grad
    assert torch.count_nonzero(ours_in.grad[:, -1]) == 0  # the last position predicts nothing
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(ours_in.grad.float(), ref_in.grad.float(), rtol=tol, atol=tol)
    no_entropy, _ = logprobs._TokenLogProb.apply(logits, tokens, temperature, False)
    torch.testing.assert_close(no_entropy, logp.detach(), rtol=0, atol=0)


def test_token_logprob_chunks_cover_every_position_once():
    from pspo_eval.train.logprobs import _chunks

    cpu = list(_chunks(3, 100, 49152 * 4, torch.device("cpu")))  # 10 positions per CPU chunk
    gpu = list(_chunks(3, 100, 49152 * 4, torch.device("cuda")))  # the device is only named, not used
    for chunks in (cpu, gpu):
        covered = [(b, t) for b, t0, t1 in chunks for t in range(t0, t1)]
        assert covered == [(b, t) for b in range(3) for t in range(100)]
    assert len(cpu) == 30 and len(gpu) == 3  # on a GPU a row is one chunk
