"""The training loop: data order, gradient accumulation, schedules."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import torch
from pydantic import Field

from effkit.data import DataConfig, load_task_data
from effkit.models import load_model
from effkit.runner import fit
from effkit.train import TrainConfig, _lr_lambda, batch_indices
from effkit.transform import Transform


def test_batches_cover_each_epoch_once_and_repeat_exactly():
    n, size = 10, 4
    stream = [i for step in range(5) for i in batch_indices(n, seed=3, step=step, size=size)]
    assert sorted(stream[:10]) == list(range(10))  # the first epoch is a permutation
    assert sorted(stream[10:20]) == list(range(10))
    assert batch_indices(n, 3, 2, size) == batch_indices(n, 3, 2, size)
    assert batch_indices(n, 3, 0, size) != batch_indices(n, 4, 0, size)


def test_gradient_accumulation_matches_one_big_batch():
    data = load_task_data(DataConfig(source="builtin:synthetic", max_length=16),
                          "sequence-classification")  # fmt: skip
    results = []
    for accum in (1, 2):
        torch.manual_seed(0)
        model = load_model("preset:tiny", labels=data.labels, task="sequence-classification")
        model.hf.config.hidden_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model.max_length = 16
        cfg = TrainConfig(steps=3, batch_size=8, grad_accum=accum, lr=1e-3, max_grad_norm=None)
        model, _ = fit(model, data=data, train=cfg, progress=False)
        results.append(model.state_dict())
    for key in results[0]:
        assert torch.allclose(results[0][key], results[1][key], atol=1e-5), key


def test_batch_size_must_split_into_micro_batches():
    with pytest.raises(ValueError, match="not divisible by grad_accum"):
        TrainConfig(batch_size=10, grad_accum=3)


@pytest.mark.parametrize("scheduler", ["linear", "cosine", "constant"])
def test_learning_rate_warms_up_then_follows_the_schedule(scheduler):
    factor = _lr_lambda(TrainConfig(steps=100, warmup_ratio=0.1, scheduler=scheduler))
    warm = [factor(s) for s in range(10)]
    assert warm == sorted(warm) and warm[-1] <= 1.0
    assert factor(10) == pytest.approx(1.0)
    if scheduler == "constant":
        assert factor(99) == pytest.approx(1.0)
    else:
        assert factor(99) < 0.05


def test_interrupt_during_validation_saves_the_finished_step(tmp_path):
    from effkit.objectives import TaskObjective
    from effkit.train import train_stage
    from effkit.transform import StageContext

    data = load_task_data(DataConfig(source="builtin:synthetic", max_length=16),
                          "sequence-classification")  # fmt: skip
    model = load_model("preset:tiny", labels=data.labels)
    model.max_length = 16
    ctx = StageContext(stage="s", tokenizer=model.tokenizer, data=data, max_length=16)

    def validate(_model):
        if ctx.step == 4:  # Ctrl-C while step 4's update is already applied
            raise KeyboardInterrupt
        return {"accuracy": 0.5}

    cfg = TrainConfig(steps=8, batch_size=8, eval_every=2, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        train_stage(model, TaskObjective(), [], ctx, cfg, checkpoint_dir=tmp_path,
                    validate=validate, progress=False)  # fmt: skip
    progress = json.loads((tmp_path / "last" / "progress.json").read_text())
    state = torch.load(tmp_path / "last" / "state.pt", weights_only=True)
    assert progress["step"] == 4
    assert state["scheduler"]["last_epoch"] == 4  # no step counted twice on resume


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_bf16_on_a_cpu_runs_the_forward_pass_in_bfloat16_and_keeps_weights_in_float32(precision):
    data = load_task_data(DataConfig(source="builtin:synthetic", max_length=16),
                          "sequence-classification")  # fmt: skip
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=data.labels, task="sequence-classification")
    model.max_length = 16
    seen: list[torch.dtype] = []
    linear = next(m for m in model.encoder_layers()[0].modules() if isinstance(m, torch.nn.Linear))

    def record(module, _inputs, out):
        if module.training:  # not the evaluation after training
            seen.append(out.dtype)

    hook = linear.register_forward_hook(record)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(steps=2, batch_size=8, lr=1e-3, mixed_precision=precision)
    model, _ = fit(model, data=data, train=cfg, progress=False)
    hook.remove()
    expected = torch.bfloat16 if precision == "bf16" else torch.float32
    assert seen and set(seen) == {expected}  # "auto" is full precision on a CPU
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_weight_average_follows_the_ramped_decay_and_copies_integer_entries():
    from effkit.averaging import WeightAverage

    model = torch.nn.Linear(2, 1, bias=False)
    model.register_buffer("calls", torch.zeros((), dtype=torch.long))
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.9)
    expected = torch.zeros(1, 2)
    for t in range(1, 40):
        with torch.no_grad():
            model.weight.fill_(float(t))
            model.calls.fill_(t)
        average.update(model)
        keep = min(0.9, (1 + t) / (10 + t))
        expected = keep * expected + (1 - keep) * float(t)
        assert torch.allclose(average.state["weight"], expected)
    assert int(average.state["calls"]) == 39  # counters are copied
    live = model.weight.detach().clone()
    with average.applied(model):
        assert torch.equal(model.weight.detach(), average.state["weight"])
    assert torch.equal(model.weight.detach(), live)  # the live weights come back


class _Recorder(Transform):
    """Records the live weights after every optimizer step."""

    recorded: ClassVar[bool] = False
    steps: list[Any] = Field(default_factory=list)
    stop_at: int | None = None

    def on_step(self, model, ctx):
        if ctx.step == self.stop_at:
            raise KeyboardInterrupt  # mid-update: the stage resumes from its last checkpoint
        self.steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def _averaging_stage(folder, stop_at=None, rising=False):
    from effkit.objectives import TaskObjective
    from effkit.train import train_stage
    from effkit.transform import StageContext

    data = load_task_data(DataConfig(source="builtin:synthetic", max_length=16),
                          "sequence-classification")  # fmt: skip
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=data.labels)
    model.max_length = 16
    ctx = StageContext(stage="s", tokenizer=model.tokenizer, data=data, max_length=16)
    recorder = _Recorder(steps=[], stop_at=stop_at)
    scored: list[dict[str, torch.Tensor]] = []

    def validate(m):
        scored.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        # equal scores keep the first validated step; rising ones the last
        return {"accuracy": float(ctx.step) if rising else 0.5}

    cfg = TrainConfig(steps=8, batch_size=8, lr=5e-3, eval_every=4, checkpoint_every=2,
                      ema_decay=0.8)  # fmt: skip
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_stage(model, TaskObjective(), [recorder], ctx, cfg, checkpoint_dir=folder,
                validate=validate, progress=False)  # fmt: skip
    return model, initial, recorder.steps, scored


def test_averaged_stage_validates_keeps_and_returns_the_average(tmp_path):
    model, initial, steps, scored = _averaging_stage(tmp_path)
    expected = {k: v.clone() for k, v in initial.items()}
    for t, state in enumerate(steps[:4], start=1):
        keep = min(0.8, (1 + t) / (10 + t))
        for k, v in state.items():
            if v.is_floating_point():
                expected[k] = keep * expected[k] + (1 - keep) * v
    for k, v in model.state_dict().items():
        assert torch.allclose(scored[0][k], expected[k], atol=1e-6), k  # validation saw it
        assert torch.allclose(v, expected[k], atol=1e-6), k  # and the stage returns it
    moved = [k for k, v in steps[3].items() if v.is_floating_point()
             and not torch.allclose(v, expected[k], atol=1e-4)]  # fmt: skip
    assert moved  # the average is not the live weights


def test_averaged_stage_resumes_with_its_average(tmp_path):
    reference, *_ = _averaging_stage(tmp_path / "a", rising=True)
    with pytest.raises(KeyboardInterrupt):
        _averaging_stage(tmp_path / "b", stop_at=7, rising=True)
    progress = json.loads((tmp_path / "b" / "last" / "progress.json").read_text())
    assert progress["step"] == 6 and progress["average_updates"] == 6
    resumed, *_ = _averaging_stage(tmp_path / "b", rising=True)  # returns the step-8 average
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.allclose(a, b, atol=1e-6), name


def test_weight_average_names_parameters_that_appear_during_the_stage():
    from effkit.averaging import WeightAverage
    from effkit.errors import RunError

    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.9)
    model.register_buffer("extra", torch.zeros(1))
    with pytest.raises(RunError, match="extra"):
        average.update(model)


def test_ema_decay_must_lie_between_zero_and_one():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def _no_dropout_run(data, **train: Any) -> tuple[Any, dict[str, Any], int]:
    """A tiny model trained 3 steps without dropout; also how often its first layer ran."""
    from effkit.models import ModelConfig

    torch.manual_seed(0)
    model = load_model(ModelConfig(source="preset:tiny", dropout=0.0), labels=data.labels,
                       task="sequence-classification")  # fmt: skip
    model.max_length = 16
    calls = [0]
    layer = model.encoder_layers()[0]
    hook = layer.attention.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-3, log_every=1, **train)
    model, record = fit(model, data=data, train=cfg, progress=False)
    hook.remove()
    return model, record, calls[0]


def test_gradient_checkpointing_recomputes_the_layers_and_trains_alike():
    data = load_task_data(DataConfig(source="builtin:synthetic", max_length=16),
                          "sequence-classification")  # fmt: skip
    plain, plain_record, plain_calls = _no_dropout_run(data)
    saved, saved_record, saved_calls = _no_dropout_run(data, gradient_checkpointing=True)
    assert saved_calls > plain_calls  # the backward pass ran the layer again
    losses = [[row["loss"] for row in r["train"]["history"]] for r in (plain_record, saved_record)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for (name, a), b in zip(plain.state_dict().items(), saved.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    assert not saved.hf.is_activation_checkpointing  # off again after the stage


ONE_STAGE = """
name: gc
model: {source: preset:tiny}
data: {source: builtin:synthetic}
stages:
  - name: finetune
    train: {TRAIN}
"""
"""A one-stage recipe of the tiny model; TRAIN is its train section's fields."""


def test_gradient_checkpointing_on_a_backbone_without_it_is_refused(monkeypatch):
    from transformers import BertForSequenceClassification

    from effkit.distributed import family_checkpointing_problem, set_gradient_checkpointing
    from effkit.errors import RecipeError
    from effkit.preflight import preflight
    from effkit.recipe import parse_recipe

    text = ONE_STAGE.replace("TRAIN", "steps: 2, gradient_checkpointing: true")
    preflight(parse_recipe(text))  # BERT recomputes its layers
    assert family_checkpointing_problem("bert", "sequence-classification") is None
    monkeypatch.setattr(BertForSequenceClassification, "supports_gradient_checkpointing", False)
    with pytest.raises(RecipeError, match="does not support gradient checkpointing"):
        preflight(parse_recipe(text))
    model = load_model("preset:tiny", num_labels=2)
    with pytest.raises(RecipeError, match="BertForSequenceClassification does not support"):
        set_gradient_checkpointing(model, True)


def test_gradient_checkpointing_does_not_change_a_stage_key(tmp_path):
    from effkit.recipe import parse_recipe
    from effkit.runner import Runner

    keys = []
    for extra in ("", ", gradient_checkpointing: true"):
        recipe = parse_recipe(ONE_STAGE.replace("TRAIN", f"steps: 2{extra}"))
        runner = Runner(recipe, tmp_path / "run", progress=False)
        runner.data = load_task_data(DataConfig(source="builtin:synthetic"),
                                     "sequence-classification")  # fmt: skip
        keys.append(runner._stage_keys()["finetune"])
    assert keys[0] == keys[1]
