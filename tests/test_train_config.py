"""Training config: presets carry the paper's numbers; overrides and inheritance work; errors name fields."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from pspo_eval.errors import PspoError
from pspo_eval.train.config import (
    OBJECTIVE_NAMES,
    PAPER_SYSTEM_PROMPT,
    TrainConfig,
    config_from_dict,
    config_hash,
    dump_config,
    field_paths,
    list_presets,
    load_config,
    presets_dir,
)

SIZES = {"0.5b": "Qwen/Qwen2.5-0.5B", "1.5b": "Qwen/Qwen2.5-1.5B"}
# (objective, size) -> (learning rate, epsilon or None, num_iterations): the intended settings.
INTENDED = {
    ("pspo", "0.5b"): (5e-7, None, 2),
    ("pspo", "1.5b"): (5e-7, None, 2),
    ("clip", "0.5b"): (1e-6, 0.1, 2),
    ("clip", "1.5b"): (5e-7, 0.2, 2),
    ("noclip", "0.5b"): (1e-6, None, 1),
    ("noclip", "1.5b"): (1e-6, None, 1),
}
PAPER_PRESETS = [f"paper/qwen2.5-{size}-{objective}" for objective, size in INTENDED]
AS_RUN = [f"paper/qwen2.5-{size}-clip-as-run" for size in SIZES]


def _flatten(data, prefix=""):
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def test_every_preset_is_listed_and_loads():
    presets = list_presets()
    assert set(PAPER_PRESETS + AS_RUN + ["demo-cpu"]) <= set(presets)
    assert not any(p.rsplit("/", 1)[-1].startswith("_") for p in presets)  # bases are not presets
    for name in presets:
        cfg = load_config(name)
        assert isinstance(cfg, TrainConfig)
        assert cfg.name == name.rsplit("/", 1)[-1]
        cfg.objective.params()  # the chosen objective's parameters are valid


@pytest.mark.parametrize(("objective", "size"), list(INTENDED))
def test_paper_presets_have_the_paper_settings(objective, size):
    cfg = load_config(f"paper/qwen2.5-{size}-{objective}")
    lr, epsilon, iterations = INTENDED[(objective, size)]
    # model and data
    assert cfg.model.path == SIZES[size]  # the base models, as the authors' scripts download them
    assert cfg.model.dtype == "bfloat16" and cfg.model.lora is None
    assert cfg.data.dataset == "gsm8k_train" and cfg.data.file is None
    assert (cfg.data.train_size, cfg.data.split_seed, cfg.seed) == (7000, 42, 42)
    assert cfg.data.system_prompt == PAPER_SYSTEM_PROMPT
    assert PAPER_SYSTEM_PROMPT.startswith("You are a careful math solver.")
    assert PAPER_SYSTEM_PROMPT.endswith("'#### <final numeric answer only>'")
    # rollout and loss
    assert cfg.rollout.num_generations == 4 and cfg.train.prompts_per_step == 16
    assert cfg.completions_per_step == 64
    assert cfg.rollout.max_new_tokens == 128
    assert (cfg.rollout.temperature, cfg.rollout.top_p) == (0.8, 0.9)
    assert cfg.loss.beta == 0.0 and cfg.loss.aggregation == "dapo"
    assert cfg.advantage.scale == "group"
    # objective, learning rate, iterations
    assert cfg.objective.name == objective
    assert cfg.optim.learning_rate == lr
    assert cfg.train.num_iterations == iterations
    if objective == "pspo":
        assert cfg.objective.params() == {"alpha": 0.1}
    if objective == "clip":
        assert cfg.objective.params() == {"epsilon": epsilon, "epsilon_high": None, "delta": None}
    # schedule and length: warmup = 2% of the 7,000 training prompts, in steps
    assert cfg.optim.warmup_dataset_fraction == 0.02
    assert cfg.warmup_steps(7000) == 140
    assert cfg.rollouts_per_epoch(7000) == 437
    assert cfg.total_steps(7000) == cfg.train.epochs * 437 * iterations
    assert cfg.optim.schedule == "linear"
    assert cfg.eval.every == 100 and cfg.eval.select_best and cfg.checkpoint.save_every == 100
    # disk: the newest 3 step checkpoints (best/ and final/ are separate copies); the authors' stop set
    assert cfg.checkpoint.keep_last == 3
    assert cfg.rollout.stop == "eos"


def test_clip_as_run_presets_differ_exactly_as_described():
    for size in SIZES:
        intended = _flatten(load_config(f"paper/qwen2.5-{size}-clip").model_dump(mode="json"))
        as_run = _flatten(load_config(f"paper/qwen2.5-{size}-clip-as-run").model_dump(mode="json"))
        changed = {key for key in intended if intended[key] != as_run[key]}
        expected = {"name", "objective.epsilon"} | ({"optim.learning_rate"} if size == "0.5b" else set())
        assert changed == expected, size
        assert as_run["objective.epsilon"] == 0.0 and as_run["optim.learning_rate"] == 5e-7
        assert as_run["objective.name"] == "clip" and as_run["train.num_iterations"] == 2


def test_clip_05b_preset_notes_the_disputed_learning_rate():
    text = (presets_dir() / "paper" / "qwen2.5-0.5b-clip.yaml").read_text()
    assert "5e-6" in text and "reviewer" in text


def test_demo_preset_is_small_and_on_cpu():
    cfg = load_config("demo-cpu")
    assert cfg.model.path == "smollm2-135m-instruct" and cfg.model.device == "cpu"
    assert cfg.train.max_steps == 4 and cfg.total_steps(7000) == 4
    assert (cfg.train.prompts_per_step, cfg.rollout.num_generations) == (4, 4)
    assert cfg.rollout.max_new_tokens == 64 and cfg.train.num_iterations == 2
    assert cfg.grad_accum_steps == 2
    assert cfg.checkpoint.save_final and cfg.eval.every == 0


# --- overrides ---------------------------------------------------------------------------------------------


def test_overrides_parse_yaml_values():
    cfg = load_config(
        "paper/qwen2.5-0.5b-pspo",
        overrides=[
            "optim.learning_rate=5e-7",  # YAML 1.1 would read this as a string
            "objective.alpha=0.25",
            "rollout.top_k=null",
            "model.lora.r=8",
            "rewards.0.weight=2",
            "rewards.0.kwargs.format_bonus=0.05",
            "optim.adam_betas=[0.9, 0.95]",
            "data.system_prompt=null",
            "model.path=Qwen/Qwen2.5-0.5B-Instruct",
        ],
    )
    assert cfg.optim.learning_rate == 5e-7 and isinstance(cfg.optim.learning_rate, float)
    assert cfg.objective.alpha == 0.25
    assert (
        cfg.model.lora is not None and cfg.model.lora.r == 8 and cfg.model.lora.target_modules == "all-linear"
    )
    assert cfg.rewards[0].weight == 2.0 and cfg.rewards[0].kwargs == {"format_bonus": 0.05}
    assert cfg.optim.adam_betas == (0.9, 0.95)
    assert cfg.data.system_prompt is None
    assert cfg.model.path == "Qwen/Qwen2.5-0.5B-Instruct"


def test_overrides_replace_a_whole_list_and_the_objective():
    cfg = load_config(
        "paper/qwen2.5-0.5b-pspo",
        overrides=["rewards=[{name: 'my.pkg:reward', weight: 0.5}]"],
        objective="gspo",
    )
    assert [(r.name, r.weight) for r in cfg.rewards] == [("my.pkg:reward", 0.5)]
    assert cfg.objective.name == "gspo"
    assert cfg.objective.params() == {"epsilon": 3e-4, "epsilon_high": 4e-4}
    assert cfg.optim.learning_rate == 5e-7  # only the name changed


def test_objective_argument_wins_over_an_override():
    cfg = load_config("paper/qwen2.5-0.5b-clip", overrides=["objective.name=noclip"], objective="sapo")
    assert cfg.objective.name == "sapo" and cfg.objective.params() == {"tau_pos": 1.0, "tau_neg": 1.05}


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("objective.alpha=1.5", ["objective.alpha", "[0, 1]"]),
        ("objective.epsilon=-0.1", ["objective.epsilon", ">= 0"]),
        ("objective.delta=1", ["objective.delta", "> 1"]),
        ("rollout.temperature=-0.5", ["rollout.temperature", "> 0"]),
        ("rollout.num_generations=1", ["rollout.num_generations", ">= 2"]),
        ("train.micro_batch_size=24", ["train.micro_batch_size", "64"]),
        ("rollout.top_p=1.5", ["rollout.top_p"]),
        ("optim.learning_rate=-1", ["optim.learning_rate"]),
        ("optim.warmup_steps=10", ["warmup_steps", "warmup_dataset_fraction=null"]),
        ("objective.name=ppo", ["objective.name", "pspo"]),
        ("rollout.backend=sglang", ["rollout.backend"]),
        ("model.device=gpu", ["model.device"]),
        ("rewards=[]", ["rewards"]),
        ("rewards.0.name=not a name", ["rewards.0.name"]),
    ],
)
def test_invalid_values_name_the_field(override, words):
    with pytest.raises(PspoError) as info:
        load_config("paper/qwen2.5-0.5b-pspo", overrides=[override])
    for word in words:
        assert word in info.value.one_line()


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("objective.alhpa=0.2", "objective.alpha"),
        ("alpha=0.2", "objective.alpha"),
        ("optim.lr=1e-6", "optim.learning_rate"),
        ("train.mu=1", "train.num_iterations"),
        ("rollout.temprature=1", "rollout.temperature"),
        ("rewards.0.wieght=1", "rewards.0.weight"),
    ],
)
def test_unknown_keys_are_named_with_close_matches(override, suggestion):
    with pytest.raises(PspoError) as info:
        load_config("paper/qwen2.5-0.5b-pspo", overrides=[override])
    text = info.value.one_line()
    assert "unknown config key" in text and override.split("=")[0] in text and suggestion in text


def test_malformed_overrides():
    for bad, word in [
        ("objective.alpha", "no '='"),
        ("=3", "empty key"),
        ("rewards.5.weight=1", "not an index"),
        ("model.path.sub=1", "single value"),
    ]:
        with pytest.raises(PspoError, match=word):
            load_config("paper/qwen2.5-0.5b-pspo", overrides=[bad])
    with pytest.raises(PspoError, match="unknown objective 'clipp'.*clip"):
        load_config("paper/qwen2.5-0.5b-pspo", objective="clipp")


# --- files: inheritance and errors --------------------------------------------------------------------------


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_base_inheritance_is_relative_and_deep(tmp_path):
    _write(
        tmp_path / "shared" / "root.yaml",
        """
        model: {path: smollm2-135m-instruct, dtype: float32}
        rollout: {num_generations: 8, max_new_tokens: 32}
        rewards: [{name: a}, {name: b}]
    """,
    )
    _write(
        tmp_path / "shared" / "mid.yaml",
        """
        base: root.yaml
        rollout: {max_new_tokens: 48}
    """,
    )
    child = _write(
        tmp_path / "runs" / "child.yaml",
        """
        base: ../shared/mid.yaml
        rollout: {temperature: 1.0}
        rewards: [{name: c}]
    """,
    )
    cfg = load_config(child)
    assert cfg.model.dtype == "float32"
    assert (cfg.rollout.num_generations, cfg.rollout.max_new_tokens, cfg.rollout.temperature) == (8, 48, 1.0)
    assert [r.name for r in cfg.rewards] == ["c"]  # lists are replaced, not merged


def test_file_errors_are_pspo_errors(tmp_path):
    bad_yaml = _write(tmp_path / "bad.yaml", "model: {path: x\nrollout: [\n")
    with pytest.raises(PspoError, match=r"invalid YAML \(line"):
        load_config(bad_yaml)
    with pytest.raises(PspoError, match="base config 'nope.yaml' not found"):
        load_config(_write(tmp_path / "orphan.yaml", "base: nope.yaml\n"))
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    with pytest.raises(PspoError, match="loops"):
        load_config(_write(tmp_path / "b.yaml", "base: a.yaml\n"))
    with pytest.raises(PspoError, match="mapping"):
        load_config(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(PspoError, match="model: required field is missing"):
        load_config(_write(tmp_path / "empty.yaml", "seed: 1\n"))
    with pytest.raises(PspoError, match="unknown config key 'rollout.tempreature'.*rollout.temperature"):
        load_config(_write(tmp_path / "typo.yaml", "model: {path: x}\nrollout: {tempreature: 1}\n"))
    with pytest.raises(PspoError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_config_from_dict_reports_every_bad_field():
    with pytest.raises(PspoError) as info:
        config_from_dict({"model": {"path": "x"}, "rollout": {"temperature": 0, "num_generations": 1}})
    text = info.value.one_line()
    assert "rollout.temperature" in text and "rollout.num_generations" in text


# --- derived numbers, hash, dump ---------------------------------------------------------------------------


def test_step_arithmetic():
    cfg = config_from_dict({"model": {"path": "x"}, "train": {"epochs": 1, "num_iterations": 2}})
    assert cfg.grad_accum_steps == 4  # 64 completions / micro-batches of 16
    assert cfg.total_steps(7000) == 874
    assert cfg.warmup_steps(7000) == 0
    cfg = config_from_dict({"model": {"path": "x"}, "train": {"epochs": 1}, "optim": {"warmup_ratio": 0.1}})
    assert cfg.warmup_steps(7000) == 88  # ceil(0.1 * 874), as transformers rounds
    cfg = config_from_dict({"model": {"path": "x"}, "train": {"max_steps": 10}, "optim": {"warmup_steps": 3}})
    assert cfg.total_steps(7000) == 10 and cfg.warmup_steps(7000) == 3


def test_config_hash_is_stable(tmp_path):
    first = config_hash(load_config("paper/qwen2.5-0.5b-pspo"))
    assert first == config_hash(load_config("paper/qwen2.5-0.5b-pspo"))
    assert len(first) == 16 and int(first, 16) >= 0
    # the same values written in another order, without inheritance, hash the same
    dumped = load_config("paper/qwen2.5-0.5b-pspo").model_dump(mode="json")
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump(dict(reversed(list(dumped.items()))), sort_keys=True))
    assert config_hash(load_config(flat)) == first
    # bookkeeping does not count, the learning rate does
    same = load_config(
        "paper/qwen2.5-0.5b-pspo",
        overrides=["name=other", "logging.log_every=50", "checkpoint.save_every=7", "notes=hi"],
    )
    assert config_hash(same) == first
    assert (
        config_hash(load_config("paper/qwen2.5-0.5b-pspo", overrides=["optim.learning_rate=1e-6"])) != first
    )
    hashes = {config_hash(load_config(p)) for p in PAPER_PRESETS + AS_RUN}
    assert len(hashes) == len(PAPER_PRESETS + AS_RUN)


@pytest.mark.parametrize("preset", ["demo-cpu", *PAPER_PRESETS])
def test_dump_round_trips(tmp_path, preset):
    cfg = load_config(preset)
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert "base:" not in path.read_text()


def test_objective_section_feeds_every_objective():
    import torch

    from pspo_eval.train.objectives import policy_loss

    logp = torch.zeros(2, 3, requires_grad=True)
    for name in OBJECTIVE_NAMES:
        cfg = config_from_dict({"model": {"path": "x"}, "objective": {"name": name}})
        loss = policy_loss(name, logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), **cfg.objective.params())
        assert loss.shape == (2, 3)


def test_field_paths_cover_nested_sections():
    paths = set(field_paths())
    assert {
        "objective.alpha",
        "rollout.vllm.gpu_memory_utilization",
        "model.lora.target_modules",
        "optim.warmup_dataset_fraction",
        "rewards",
        "eval.select_best",
    } <= paths


def test_config_module_does_not_import_torch():
    code = (
        "import sys, pspo_eval.train, pspo_eval.train.config as c; "
        "c.load_config('demo-cpu'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_reward_is_registered_by_the_grading_subsystem():
    reward = pytest.importorskip("pspo_eval.grading.reward")
    for preset in ["demo-cpu", *PAPER_PRESETS]:
        for spec in load_config(preset).rewards:
            assert callable(reward.get_reward_function(spec.name))


def test_summary_reports_host_and_gpu_peaks_separately():
    from pspo_eval.train.metrics import peak_memory, summarize

    records = [
        {"step": 1, "rollout": 1, "time/step_s": 2.0, "mem/peak_mib": 900.0, "mem/cuda_peak_mib": 5000.0},
        {"step": 2, "rollout": 1, "time/step_s": 1.0, "mem/peak_mib": 950.0, "mem/cuda_peak_mib": 6500.0},
    ]
    summary = summarize(records)
    assert summary["peak_mem_mib"] == 950.0 and summary["peak_cuda_mem_mib"] == 6500.0
    cpu_only = summarize([{k: v for k, v in r.items() if k != "mem/cuda_peak_mib"} for r in records])
    assert "peak_cuda_mem_mib" not in cpu_only
    # On CPU no CUDA figure is recorded (and CUDA is never initialised for it).
    assert set(peak_memory("cpu")) == {"mem/peak_mib"} and peak_memory("cpu")["mem/peak_mib"] > 0


def test_cispo_cap_uses_trls_convention_and_the_old_key_says_so():
    """objective.cispo_max_weight is the cap itself (TRL's epsilon_high for cispo), so a value copied
    from TRL means the same here; the old key, whose value meant cap - 1, is refused with that hint."""
    from pspo_eval.train.config import load_config

    cfg = load_config("demo-cpu", overrides=["objective.name=cispo", "objective.cispo_max_weight=5"])
    assert cfg.objective.params() == {"epsilon_low": None, "max_weight": 5.0}
    with pytest.raises(PspoError) as info:
        load_config("demo-cpu", overrides=["objective.cispo_epsilon_high=4"])
    assert "cispo_max_weight" in info.value.one_line() and "+ 1" in info.value.one_line()


# config_hash of presets as main computed them before the objective section became per-objective
# models: a run directory written before must still resume (the hash is compared on resume).
PINNED_HASHES = {
    ("demo-cpu", None): "ff41c089de7097eb",
    ("demo-cpu", "cispo"): "805021bc17736180",
    ("paper/qwen2.5-0.5b-pspo", None): "504b4353f26e29f2",
    ("paper/qwen2.5-1.5b-pspo", None): "d868c345da88f99e",
    ("paper/qwen2.5-1.5b-clip", None): "20105cfd8a0b5743",
    ("paper/qwen2.5-0.5b-noclip", None): "8800f2070bde3ddd",
    ("paper/qwen2.5-0.5b-clip-as-run", None): "83f3dbf0400858d5",
    ("paper/qwen2.5-0.5b-clip", "gspo"): "9e27d249027e8b2f",
}


@pytest.mark.parametrize(("preset", "objective"), list(PINNED_HASHES))
def test_config_hash_of_presets_is_pinned(preset, objective):
    assert config_hash(load_config(preset, objective=objective)) == PINNED_HASHES[(preset, objective)]


def test_objective_parameters_are_one_typed_model_per_objective():
    from pydantic import TypeAdapter

    from pspo_eval.train.config import (
        OBJECTIVE_DEFAULTS,
        OBJECTIVE_PARAMS,
        ClipParams,
        GspoParams,
        ObjectiveConfig,
        ObjectiveParams,
        yaml_key,
    )

    assert tuple(OBJECTIVE_PARAMS) == OBJECTIVE_NAMES
    # the flat section's defaults are the models' defaults
    flat = ObjectiveConfig()
    for name, cls in OBJECTIVE_PARAMS.items():
        for key, default in cls().kwargs().items():
            assert getattr(flat, yaml_key(name, key)) == default == OBJECTIVE_DEFAULTS[name][key]
    # the chosen objective, typed, from the flat section (other objectives' values are kept, unused)
    cfg = load_config("paper/qwen2.5-0.5b-clip", objective="gspo")
    chosen = cfg.objective.selected()
    assert isinstance(chosen, GspoParams) and chosen.kwargs() == cfg.objective.params()
    assert cfg.objective.epsilon == 0.1  # clip's value, untouched by --objective
    parsed = TypeAdapter(ObjectiveParams).validate_python({"name": "clip", "epsilon": 0.3})
    assert isinstance(parsed, ClipParams) and parsed.kwargs() == {"epsilon": 0.3, "epsilon_high": None, "delta": None}
    with pytest.raises(PspoError, match="alpha must be in"):
        TypeAdapter(ObjectiveParams).validate_python({"name": "pspo", "alpha": 2})
