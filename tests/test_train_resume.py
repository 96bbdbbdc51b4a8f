"""Save → crash → resume gives the uninterrupted run, bitwise (CPU, fp32), metrics included."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import tiny_config, tiny_workspace

from pspo_eval.errors import PspoError
from pspo_eval.train.checkpoint import list_checkpoints, resolve_run_config
from pspo_eval.train.config import config_hash, dump_config
from pspo_eval.train.loop import Trainer
from pspo_eval.train.metrics import read_metrics

# Fields that measure time or memory: the only ones allowed to differ between the two runs.
TIMING = ("time/", "tokens_per_s", "gen_tokens_per_s", "elapsed_s", "mem/", "eval/seconds")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _reward_module_on_path(tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny[0]))


class Crash(Exception):
    pass


def _config(tiny, save_every: int, **sections):
    _, model, data = tiny
    return tiny_config(
        model,
        data,
        train={"num_iterations": 2, "max_steps": 6, "prompts_per_step": 2, "micro_batch_size": 4},
        optim={"learning_rate": 3e-3, "schedule": "linear", "warmup_steps": 1},
        checkpoint={"save_every": save_every, "keep_last": None, "save_final": True},
        eval={"every": 2, "limit": 3, "select_best": True},
        logging={"log_completions": 1},
        **sections,
    )


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _without_timing(records):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in records]


@pytest.mark.parametrize(
    "save_every,crash_in_step",
    [
        (3, 5),  # checkpoint-3 is between the two iterations of rollout 1: its rollout is saved with it
        (2, 4),  # checkpoint-2 is at a rollout boundary; step 3's metrics line was written before the crash
    ],
)
def test_resume_equals_uninterrupted_run(tiny, tmp_path, monkeypatch, save_every, crash_in_step):
    cfg = _config(tiny, save_every)
    straight = tmp_path / "straight"
    Trainer(cfg, straight, verbose=False).run()

    crashed = tmp_path / "crashed"
    trainer = Trainer(cfg, crashed, verbose=False)
    real_step = trainer.optimizer_step

    def crashing_step(batch):
        if trainer.step + 1 == crash_in_step:
            raise Crash("killed")
        return real_step(batch)

    monkeypatch.setattr(trainer, "optimizer_step", crashing_step)
    with pytest.raises(Crash):
        trainer.run()
    trainer.close()
    saved = [s for s, _ in list_checkpoints(crashed)]
    assert saved[-1] < crash_in_step - 1 or save_every == 2
    assert max(r["step"] for r in read_metrics(crashed)) == crash_in_step - 1  # ahead of the checkpoint

    resumed = Trainer(cfg, crashed, resume=True, verbose=False)
    assert resumed.step == saved[-1]
    if save_every == 3:
        assert resumed.batch is not None and resumed.batch.iterations_done == 1
    resumed.run()

    # the parameters after N + M steps are bitwise those of the uninterrupted run
    a, b = _weights(straight / "final"), _weights(crashed / "final")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for step, _ in list_checkpoints(straight):
        assert all(torch.equal(x, y) for x, y in zip(
            _weights(straight / f"checkpoint-{step}").values(), _weights(crashed / f"checkpoint-{step}").values(),
            strict=True,
        ))
    # and so are the metrics: one line per step, no duplicates, same numbers
    ra, rb = read_metrics(straight), read_metrics(crashed)
    lines = (crashed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert _without_timing(ra) == _without_timing(rb)
    assert json.loads((straight / "best" / "best.json").read_text()) == json.loads(
        (crashed / "best" / "best.json").read_text()
    )
    ca = (straight / "completions.jsonl").read_text()
    cb = (crashed / "completions.jsonl").read_text()
    assert ca == cb


def test_checkpoint_state_has_no_pickle_and_loads_with_safetensors(tiny, tmp_path):
    cfg = _config(tiny, save_every=3)
    Trainer(cfg, tmp_path, verbose=False).run()
    trainer_dir = tmp_path / "checkpoint-3" / "trainer"
    assert sorted(p.name for p in trainer_dir.iterdir()) == [
        "optimizer.json", "optimizer.safetensors", "rng.safetensors", "rollout-rank0.safetensors", "state.json",
    ]
    for path in (tmp_path / "checkpoint-3").rglob("*"):
        if path.is_file():
            assert path.suffix in {".json", ".safetensors", ".yaml", ".jinja"}, path
    state = json.loads((trainer_dir / "state.json").read_text())
    assert state["step"] == 3 and state["mid_rollout"] is True and state["config_hash"] == config_hash(cfg)


def test_resume_of_a_finished_run_changes_nothing(tiny, tmp_path):
    cfg = _config(tiny, save_every=2)
    Trainer(cfg, tmp_path, verbose=False).run()
    before = _weights(tmp_path / "final")
    summary = Trainer(cfg, tmp_path, resume=True, verbose=False).run()
    assert summary["steps"] == 6
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    after = _weights(tmp_path / "final")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_config_rules(tiny, tmp_path):
    cfg = _config(tiny, save_every=2)
    out = tmp_path / "run"
    Trainer(cfg, out, verbose=False).run()
    same = tmp_path / "same.yaml"
    same.write_text(dump_config(cfg))
    # the saved config is used; the same --config is accepted
    got, ckpt = resolve_run_config(out, config=None, objective=None, overrides=[], max_steps=None, resume=True)
    assert config_hash(got) == config_hash(cfg) and ckpt == out / "checkpoint-6"
    got, _ = resolve_run_config(out, config=str(same), objective=None, overrides=[], max_steps=None, resume=True)
    assert config_hash(got) == config_hash(cfg)
    # a different --config is refused; --set / --max-steps on the saved config are taken (with a warning)
    other = tmp_path / "other.yaml"
    other.write_text(dump_config(cfg).replace("learning_rate: 0.003", "learning_rate: 0.004"))
    with pytest.raises(PspoError, match="differs from the config of the run"):
        resolve_run_config(out, config=str(other), objective=None, overrides=[], max_steps=None, resume=True)
    longer, _ = resolve_run_config(out, config=None, objective=None, overrides=[], max_steps=8, resume=True)
    assert longer.train.max_steps == 8


def test_resume_with_a_longer_run_follows_the_new_schedule(tiny, tmp_path):
    cfg = _config(tiny, save_every=2)  # 6 steps, linear decay after 1 warmup step
    Trainer(cfg, tmp_path, verbose=False).run()
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 10})})
    Trainer(longer, tmp_path, resume=True, verbose=False).run()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 11))
    # step 7 is the 7th update of a 10-step schedule: lr = peak * (1 - (6 - 1) / (10 - 1))
    assert records[6]["lr"] == pytest.approx(3e-3 * (1 - 5 / 9))
