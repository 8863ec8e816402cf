"""The training loop: data order, gradient accumulation, schedules."""

from __future__ import annotations

import pytest
import torch

from effkit.data import DataConfig, load_task_data
from effkit.models import load_model
from effkit.runner import fit
from effkit.train import TrainConfig, _lr_lambda, batch_indices


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
    import json

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
