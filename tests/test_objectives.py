"""The policy objectives, loss aggregation and advantages, checked with autograd.

Each test states a property of the formula (a gradient, a dead zone, an invariance) and checks it
on real tensors; none of them re-derives the implementation.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pspo_eval.errors import PspoError
from pspo_eval.train.advantages import group_advantages, kl_k3
from pspo_eval.train.aggregation import aggregate, count_items
from pspo_eval.train.config import OBJECTIVE_DEFAULTS, OBJECTIVE_NAMES
from pspo_eval.train.objectives import (
    OBJECTIVES,
    gspo_sequence_log_ratio,
    policy_loss,
    ratio_stats,
    summarize_stats,
)


def _batch(b: int = 6, t: int = 5, seed: int = 0, spread: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * 3 - 0.1
    logp = (old + spread * torch.randn(b, t, generator=g)).requires_grad_(True)
    adv = torch.randn(b, generator=g)
    return logp, old, adv


def _grad(name: str, logp: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, **params) -> torch.Tensor:
    logp = logp.detach().clone().requires_grad_(True)
    policy_loss(name, logp, old, adv, **params).sum().backward()
    return logp.grad


def _grad_wrt_ratio(
    name: str, ratio: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, **params
) -> torch.Tensor:
    """d loss / d r per token, with logp = old + log r so that r is the leaf."""
    r = ratio.detach().clone().requires_grad_(True)
    policy_loss(name, old + torch.log(r), old, adv, **params).sum().backward()
    return r.grad


# --- PSPO -------------------------------------------------------------------------------------------


def test_pspo_alpha_zero_is_noclip():
    logp, old, adv = _batch()
    assert torch.allclose(
        policy_loss("pspo", logp, old, adv, alpha=0.0), policy_loss("noclip", logp, old, adv)
    )
    assert torch.allclose(_grad("pspo", logp, old, adv, alpha=0.0), _grad("noclip", logp, old, adv))


def test_pspo_alpha_one_freezes_the_policy():
    logp, old, adv = _batch()
    loss = policy_loss("pspo", logp, old, adv, alpha=1.0)
    assert torch.allclose(loss, (-adv).unsqueeze(-1).expand_as(loss).float())
    assert torch.count_nonzero(_grad("pspo", logp, old, adv, alpha=1.0)) == 0


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9])
def test_pspo_on_policy_gradient_is_scaled_policy_gradient(alpha):
    _, old, adv = _batch()
    grad = _grad("pspo", old, old, adv, alpha=alpha)  # r = 1 exactly
    expected = (-(1 - alpha) * adv).unsqueeze(-1).expand_as(grad)
    assert torch.allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_pspo_ratio_derivative_is_constant_everywhere(alpha):
    g = torch.Generator().manual_seed(3)
    ratio = torch.exp(torch.randn(8, 7, generator=g) * 1.5)  # r from ~0.01 to ~100
    _, old, adv = _batch(8, 7, seed=4)
    grad = _grad_wrt_ratio("pspo", ratio, old, adv, alpha=alpha)
    expected = (-(1 - alpha) * adv).unsqueeze(-1).expand_as(grad)
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_pspo_stats_report_the_smoothed_deviation():
    logp, old, adv = _batch()
    stats = ratio_stats("pspo", logp, old, adv, alpha=0.1)
    r = torch.exp(logp.detach() - old).float()
    assert torch.allclose(stats["ratio"], r, rtol=1e-5)
    assert torch.allclose(stats["smoothed_deviation"], 0.9 * (r - 1).abs(), rtol=1e-5, atol=1e-7)


# --- clip ---------------------------------------------------------------------------------------------


def _ratio_grid():
    ratio = torch.tensor([[0.5, 0.85, 1.0, 1.15, 1.6]] * 2)
    adv = torch.tensor([1.0, -1.0])
    old = torch.full_like(ratio, -1.0)
    return ratio, old, adv


def test_clip_dead_zones():
    ratio, old, adv = _ratio_grid()
    grad = _grad_wrt_ratio("clip", ratio, old, adv, epsilon=0.1)
    # A > 0: no gradient once r > 1 + eps (column 1.15 and 1.6); full -A below.
    assert grad[0].tolist() == pytest.approx([-1, -1, -1, 0, 0])
    # A < 0: no gradient once r < 1 - eps (columns 0.5 and 0.85); full -A above (unbounded side).
    assert grad[1].tolist() == pytest.approx([0, 0, 1, 1, 1])
    stats = ratio_stats("clip", old + torch.log(ratio), old, adv, epsilon=0.1)
    assert torch.equal(stats["clipped"], grad == 0)
    assert stats["high_clipped"][0].tolist() == [False, False, False, True, True]
    assert stats["low_clipped"][1].tolist() == [True, True, False, False, False]


def test_clip_epsilon_high_widens_only_the_upper_side():
    ratio, old, adv = _ratio_grid()
    grad = _grad_wrt_ratio("clip", ratio, old, adv, epsilon=0.1, epsilon_high=0.28)
    assert grad[0].tolist() == pytest.approx([-1, -1, -1, -1, 0])  # 1.15 < 1.28 now live
    assert grad[1].tolist() == pytest.approx([0, 0, 1, 1, 1])


def test_clip_epsilon_zero_keeps_only_the_opposing_side():
    """epsilon = 0 (the authors' clip runs as executed): a token moving with its advantage is frozen."""
    ratio = torch.tensor([[0.9, 1.1]] * 2)
    old = torch.full_like(ratio, -1.0)
    adv = torch.tensor([1.0, -1.0])
    grad = _grad_wrt_ratio("clip", ratio, old, adv, epsilon=0.0)
    assert grad[0].tolist() == pytest.approx([-1, 0])
    assert grad[1].tolist() == pytest.approx([0, 1])


def test_clip_with_huge_epsilon_is_noclip():
    logp, old, adv = _batch(spread=1.0)
    assert torch.allclose(
        policy_loss("clip", logp, old, adv, epsilon=1e6), policy_loss("noclip", logp, old, adv)
    )
    assert torch.allclose(_grad("clip", logp, old, adv, epsilon=1e6), _grad("noclip", logp, old, adv))


def test_dual_clip_bounds_negative_advantage_loss():
    delta = 3.0
    ratio = torch.tensor([[0.5, 1.0, 2.0, 2.9, 3.1, 10.0, 100.0]] * 2)
    old = torch.full_like(ratio, -2.0)
    adv = torch.tensor([-2.0, 1.5])
    logp = old + torch.log(ratio)
    loss = policy_loss("clip", logp, old, adv, epsilon=0.2, delta=delta)
    plain = policy_loss("clip", logp, old, adv, epsilon=0.2)
    # A < 0: the loss never exceeds -delta*A, and equals it once r > delta.
    assert (loss[0] <= -delta * adv[0] + 1e-6).all()
    assert loss[0, 4:].tolist() == pytest.approx([-delta * -2.0] * 3)
    assert loss[0, :4].tolist() == pytest.approx(plain[0, :4].tolist())
    grad = _grad_wrt_ratio("clip", ratio, old, adv, epsilon=0.2, delta=delta)
    assert grad[0].tolist() == pytest.approx([0, 2.0, 2.0, 2.0, 0, 0, 0])
    # A > 0 is untouched by delta.
    assert torch.allclose(loss[1], plain[1])
    stats = ratio_stats("clip", logp, old, adv, epsilon=0.2, delta=delta)
    assert stats["dual_clipped"][0].tolist() == [False, False, False, False, True, True, True]


# --- noclip, sapo, cispo --------------------------------------------------------------------------------


def test_noclip_on_policy_is_reinforce():
    _, old, adv = _batch()
    assert torch.allclose(_grad("noclip", old, old, adv), (-adv).unsqueeze(-1).expand(6, 5).float())


@pytest.mark.parametrize("name", ["sapo", "cispo", "noclip", "clip", "gspo"])
def test_on_policy_gradient_is_the_policy_gradient(name):
    _, old, adv = _batch()
    grad = _grad(name, old, old, adv)
    expected = (-adv).unsqueeze(-1).expand_as(grad)  # gspo too: d(s_i,t)/d(logp_t) = s_i = 1 on-policy
    assert torch.allclose(grad, expected, atol=1e-6)


def test_sapo_gate_is_soft_and_asymmetric():
    ratio = torch.tensor([[1.0, 1.5, 3.0, 0.3]] * 2)
    old = torch.full_like(ratio, -1.0)
    adv = torch.tensor([1.0, -1.0])
    loss = policy_loss("sapo", old + torch.log(ratio), old, adv, tau_pos=1.0, tau_neg=2.0)
    assert loss[0, 0].item() == pytest.approx(-2.0 / 1.0)  # -2A/tau at r = 1
    assert loss[1, 0].item() == pytest.approx(2.0 / 2.0)
    grad = _grad_wrt_ratio("sapo", ratio, old, adv, tau_pos=1.0, tau_neg=2.0)
    assert grad[:, 0].tolist() == pytest.approx([-1.0, 1.0])  # df/dr = 1 at r = 1
    assert (grad[:, 1:].abs() < 1.0).all() and (grad[:, 1:].abs() > 0).all()  # damped, never zero
    # larger tau (negative side) damps faster at the same distance from 1
    assert abs(grad[1, 2]) < abs(grad[0, 2])
    gate = ratio_stats("sapo", old + torch.log(ratio), old, adv, tau_pos=1.0, tau_neg=2.0)["gate_weight"]
    assert torch.allclose(gate, grad.abs().float(), atol=1e-6)


def test_cispo_truncates_the_weight_but_keeps_the_gradient():
    ratio = torch.tensor([[0.2, 1.0, 3.0, 9.0]])
    old = torch.full_like(ratio, -1.0)
    adv = torch.tensor([2.0])
    grad = _grad("cispo", old + torch.log(ratio), old, adv, max_weight=5.0)
    assert grad[0].tolist() == pytest.approx([-0.4, -2.0, -6.0, -10.0], rel=1e-5)  # weight min(r, 5) * -A
    grad = _grad("cispo", old + torch.log(ratio), old, adv, epsilon_low=0.5, max_weight=2.0)
    assert grad[0].tolist() == pytest.approx([-1.0, -2.0, -4.0, -4.0], rel=1e-5)  # weight clip(r, .5, 2)
    stats = ratio_stats("cispo", old + torch.log(ratio), old, adv, max_weight=5.0)
    assert stats["truncated"][0].tolist() == [False, False, False, True]


# --- gspo ----------------------------------------------------------------------------------------------


def test_gspo_sequence_ratio_is_exp_mean_log_ratio_over_the_mask():
    logp, old, adv = _batch(4, 6, seed=7)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
    ).bool()
    wild = torch.where(mask, logp.detach(), torch.full_like(old, 50.0))  # padding must not count
    stats = ratio_stats("gspo", wild, old, adv, mask=mask)
    for i in range(4):
        n = int(mask[i].sum())
        expected = math.exp(float((logp.detach()[i, :n] - old[i, :n]).mean()))
        assert stats["seq_ratio"][i, 0].item() == pytest.approx(expected, rel=1e-5)
        assert torch.allclose(stats["seq_ratio"][i], stats["seq_ratio"][i, 0].expand(6))
    assert torch.allclose(
        gspo_sequence_log_ratio(wild, old, mask), torch.log(stats["seq_ratio"][:, 0]), atol=1e-5
    )


@pytest.mark.parametrize("eps", [(3e-4, 4e-4), (0.05, 0.05)])
def test_gspo_token_form_equals_the_sequence_objective(eps):
    """Under grpo aggregation, GSPO-token has GSPO's value and gradient (Zheng et al. 2025, sec. 4.3)."""
    logp, old, adv = _batch(6, 5, seed=11, spread=0.08)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[1, 3:] = False
    mask[4, 1:] = False
    low, high = eps

    token_logp = logp.detach().clone().requires_grad_(True)
    token_loss = aggregate(
        policy_loss("gspo", token_logp, old, adv, mask=mask, epsilon=low, epsilon_high=high), mask, "grpo"
    )
    token_loss.backward()

    seq_logp = logp.detach().clone().requires_grad_(True)
    m = mask.float()
    s = torch.exp(((seq_logp - old) * m).sum(-1) / m.sum(-1))
    seq_loss = -torch.minimum(s * adv, torch.clamp(s, 1 - low, 1 + high) * adv).mean()
    seq_loss.backward()

    assert token_loss.item() == pytest.approx(seq_loss.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(token_logp.grad, seq_logp.grad, rtol=1e-4, atol=1e-7)
    clipped = ratio_stats("gspo", logp, old, adv, mask=mask, epsilon=low, epsilon_high=high)["clipped"]
    assert torch.equal(clipped.any(-1), (seq_logp.grad.abs().sum(-1) == 0))


# --- validation, dtype, padding, stats --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "word"),
    [
        ("pspo", {"alpha": 1.5}, "alpha"),
        ("pspo", {"alpha": -0.1}, "alpha"),
        ("clip", {"epsilon": -0.1}, "epsilon"),
        ("clip", {"epsilon_high": -1.0}, "epsilon_high"),
        ("clip", {"delta": 1.0}, "delta"),
        ("clip", {"delta": 0.5}, "delta"),
        ("sapo", {"tau_neg": 0.0}, "tau_neg"),
        ("gspo", {"epsilon": float("nan")}, "epsilon"),
        ("pspo", {"epsilon": 0.2}, "epsilon"),
        ("noclip", {"alpha": 0.1}, "alpha"),
        ("ppo", {}, "ppo"),
    ],
)
def test_bad_names_and_parameters_raise_pspo_error(name, params, word):
    logp, old, adv = _batch()
    with pytest.raises(PspoError, match=word):
        policy_loss(name, logp, old, adv, **params)


def test_function_defaults_match_the_shared_table():
    assert tuple(OBJECTIVES) == OBJECTIVE_NAMES
    for name, objective in OBJECTIVES.items():
        signature = inspect.signature(objective.loss)
        defaults = {
            k: p.default for k, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY and k != "mask"
        }
        assert defaults == OBJECTIVE_DEFAULTS[name], name


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_padding_gets_zero_gradient_and_cannot_poison_the_loss(name):
    logp, old, adv = _batch(3, 6, seed=5)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]]).bool()
    garbage = logp.detach().clone()
    garbage[0, 4], garbage[0, 5], garbage[2, 2] = float("nan"), 1e4, -float("inf")
    leaf = torch.where(mask, logp.detach(), garbage).requires_grad_(True)
    loss = aggregate(policy_loss(name, leaf, old, adv, mask=mask), mask, "dapo")
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(leaf.grad).all()
    assert torch.count_nonzero(leaf.grad[~mask]) == 0
    assert torch.count_nonzero(leaf.grad[mask]) > 0


def test_low_precision_inputs_are_computed_in_float32():
    logp, old, adv = _batch()
    loss = policy_loss("pspo", logp.detach().bfloat16(), old.bfloat16(), adv.bfloat16())
    assert loss.dtype == torch.float32


def test_shape_mismatch_is_reported():
    logp, old, adv = _batch()
    with pytest.raises(ValueError, match="advantages"):
        policy_loss("noclip", logp, old, adv[:3])
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss("noclip", logp, old[:, :2], adv)


def test_summarize_stats_uses_only_completion_tokens():
    ratio = torch.tensor([[1.0, 2.0, 99.0], [0.5, 99.0, 99.0]])
    old = torch.zeros_like(ratio)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    adv = torch.tensor([1.0, -1.0])
    summary = summarize_stats(ratio_stats("clip", torch.log(ratio), old, adv, epsilon=0.2), mask)
    assert summary["ratio"] == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    assert summary["ratio_max"] == pytest.approx(2.0) and summary["ratio_min"] == pytest.approx(0.5)
    assert summary["clipped"] == pytest.approx(2 / 3)  # r = 2 with A > 0, r = 0.5 with A < 0


# --- aggregation ----------------------------------------------------------------------------------------


def _ragged(seed: int, b: int = 7, t: int = 9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, t + 1, (b,), generator=g)
    lengths[0] = t  # at least one full row
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    logp, old, adv = _batch(b, t, seed=seed)
    return logp, old, adv, mask


def _loss_and_grad(mode, logp, old, adv, mask, splits, **kw):
    leaf = logp.detach().clone().requires_grad_(True)
    total_items = sum(count_items(m, mode) for m in mask.split(splits))
    losses = []
    for idx in torch.arange(leaf.shape[0]).split(splits):
        per_token = policy_loss("pspo", leaf[idx], old[idx], adv[idx], mask=mask[idx], alpha=0.1)
        losses.append(aggregate(per_token, mask[idx], mode, num_items_in_batch=total_items, **kw))
    total = torch.stack(losses).sum()
    total.backward()
    return total.item(), leaf.grad


@pytest.mark.parametrize("mode", ["dapo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("splits", [[3, 1, 3], [1, 6], [2, 2, 2, 1], [1] * 7])
def test_micro_batching_does_not_change_loss_or_gradient(mode, splits):
    logp, old, adv, mask = _ragged(seed=len(splits))
    kw = {"max_len": 9} if mode == "dr_grpo" else {}
    full_loss, full_grad = _loss_and_grad(mode, logp, old, adv, mask, [7], **kw)
    micro_loss, micro_grad = _loss_and_grad(mode, logp, old, adv, mask, splits, **kw)
    assert micro_loss == pytest.approx(full_loss, rel=1e-6, abs=1e-9)
    assert torch.allclose(micro_grad, full_grad, rtol=1e-6, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=8), st.data())
def test_dapo_invariance_for_any_split(lengths, data):
    t = 6
    b = len(lengths)
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    loss = torch.randn(b, t, dtype=torch.float64)
    cuts = sorted(set(data.draw(st.lists(st.integers(min_value=1, max_value=max(1, b - 1)), max_size=3))))
    bounds = [0, *[c for c in cuts if c < b], b]
    total_tokens = int(mask.sum())
    micro = sum(
        aggregate(loss[a:z], mask[a:z], "dapo", num_items_in_batch=total_tokens)
        for a, z in zip(bounds, bounds[1:], strict=False)
        if z > a
    )
    full = aggregate(loss, mask, "dapo")
    assert float(micro) == pytest.approx(float(full), rel=1e-12, abs=1e-12)


def test_aggregation_values():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()
    assert aggregate(loss, mask, "dapo").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "grpo").item() == pytest.approx((2.0 + 4.0) / 2)
    assert aggregate(loss, mask, "dr_grpo", max_len=5).item() == pytest.approx(10 / (2 * 5))
    assert count_items(mask, "dapo") == 4 and count_items(mask, "grpo") == 2
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert aggregate(loss, empty, "dapo").item() == 0.0 and aggregate(loss, empty, "grpo").item() == 0.0


def test_aggregation_errors():
    loss, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(PspoError, match="seq_mean"):
        aggregate(loss, mask, "seq_mean")
    with pytest.raises(PspoError, match="max_len"):
        aggregate(loss, mask, "dr_grpo")


# --- advantages -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_have_zero_mean_per_group(scale):
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(24, generator=g)
    adv, stats = group_advantages(rewards, 4, scale=scale)
    assert adv.shape == (24,)
    assert torch.allclose(adv.view(6, 4).mean(1), torch.zeros(6, dtype=adv.dtype), atol=1e-6)
    assert stats.n_groups == 6 and stats.n_zero_std_groups == 0
    centred = rewards.view(6, 4) - rewards.view(6, 4).mean(1, keepdim=True)
    if scale == "group":
        expected = centred / (rewards.view(6, 4).std(1, keepdim=True) + 1e-4)
    elif scale == "batch":
        expected = centred / (rewards.std() + 1e-4)
    else:
        expected = centred
    assert torch.allclose(adv, expected.reshape(-1).float(), atol=1e-6)


def test_zero_std_groups_get_exactly_zero_and_are_counted():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.3])
    adv, stats = group_advantages(rewards, 4)
    assert torch.count_nonzero(adv[:4]) == 0 and torch.count_nonzero(adv[8:]) == 0
    assert torch.count_nonzero(adv[4:8]) == 4
    assert (stats.n_groups, stats.n_zero_std_groups) == (4, 3)
    assert stats.fraction_zero_std == pytest.approx(0.75)
    assert stats.as_dict()["reward_mean"] == pytest.approx(float(rewards.float().mean()))


def test_group_advantage_sign_follows_reward():
    adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    assert adv[0] > 0 and (adv[1:] < 0).all()
    assert adv.tolist() == pytest.approx([0.75 / (0.5 + 1e-4), *[-0.25 / (0.5 + 1e-4)] * 3], rel=1e-5)


def test_advantage_errors():
    with pytest.raises(PspoError, match="group size"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(PspoError, match="scale"):
        group_advantages(torch.zeros(4), 2, scale="rank")
    with pytest.raises(PspoError, match="finite"):
        group_advantages(torch.tensor([0.0, float("nan"), 1.0, 1.0]), 2)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 2)


def test_k3_is_nonnegative_and_zero_at_equality():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(200, generator=g) * 5
    ref = logp + torch.randn(200, generator=g)
    k3 = kl_k3(logp, ref)
    assert (k3 >= 0).all()
    d = ref - logp
    assert torch.allclose(k3, (torch.exp(d) - d - 1).float(), rtol=1e-5, atol=1e-6)
    same = logp.clone().requires_grad_(True)
    at_equality = kl_k3(same, logp)
    assert torch.count_nonzero(at_equality) == 0
    at_equality.sum().backward()
    assert torch.count_nonzero(same.grad) == 0
    tiny = kl_k3(torch.zeros(5), torch.tensor([1e-9, -1e-9, 1e-7, -1e-7, 0.0]))
    assert (tiny >= 0).all()


def test_batch_scale_over_processes_equals_one_process():
    """With advantage.scale=batch, N processes each holding whole groups must use the std of the
    whole batch (one all-reduce of count, sum and sum of squares), not their own share's std."""
    from pspo_eval.train.advantages import pooled_std

    torch.manual_seed(0)
    rewards = torch.rand(16) * 2
    whole, _ = group_advantages(rewards, 4, scale="batch")
    halves = rewards[:8], rewards[8:]
    sums = [sum(v) for v in zip(*[[h.numel(), float(h.sum()), float((h**2).sum())] for h in halves])]
    std = pooled_std(*sums)
    assert std == pytest.approx(float(rewards.std()), rel=1e-6)
    pooled = torch.cat([group_advantages(h, 4, scale="batch", batch_std=std)[0] for h in halves])
    torch.testing.assert_close(pooled, whole, rtol=1e-5, atol=1e-6)
    # Each process's own std gives a different step: the bug this replaces.
    local = torch.cat([group_advantages(h, 4, scale="batch")[0] for h in halves])
    assert not torch.allclose(local, whole, rtol=1e-3)
    assert pooled_std(1, 3.0, 9.0) == 0.0
