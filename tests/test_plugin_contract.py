"""The transform contract: every hook reaches the training loop, and plugins are found by name."""

from __future__ import annotations

import pytest

from effkit import registry
from effkit.data import DataConfig, load_task_data
from effkit.errors import PluginError
from effkit.models import load_model
from effkit.runner import fit, stack
from effkit.train import TrainConfig
from effkit_layers import KeepLayers


@pytest.fixture(scope="module")
def synthetic():
    return load_task_data(
        DataConfig(source="builtin:synthetic", max_length=32), "sequence-classification"
    )


def test_every_hook_runs_in_order(probe, synthetic):
    model = load_model("preset:tiny", labels=synthetic.labels)
    transform = probe(weight=1.0, extra_lr=0.05)
    model, record = fit(
        model,
        data=synthetic,
        transforms=[transform],
        train=TrainConfig(steps=6, batch_size=8, lr=1e-3, log_every=2),
        progress=False,
    )
    events = transform._events
    assert events[:3] == ["apply", "parameter_groups", "loss_terms"]
    assert [e for e in events if e.startswith("step")] == [f"step{i}" for i in range(1, 7)]
    assert events[-1] == "finalize"
    # the extra loss term is logged, and its own parameter group moved the parameter towards 2
    assert all("probe" in row for row in record["train"]["history"])
    assert all("probe_scale" in row for row in record["train"]["history"])  # step_figures()
    assert record["transforms"][0]["scale"] > 1.0
    assert not hasattr(model, "probe_scale")
    assert model.transforms == [transform]


def test_extra_group_keeps_its_own_constant_learning_rate(probe, synthetic):
    from effkit.train import build_optimizer

    model = load_model("preset:tiny", labels=synthetic.labels)
    transform = probe(extra_lr=0.123)
    model = transform.apply(model, None)  # type: ignore[arg-type]
    optimizer, scheduler = build_optimizer(model, [transform], TrainConfig(steps=10, lr=1e-3))
    groups = optimizer.param_groups
    extra = [g for g in groups if any(p is model.probe_scale for p in g["params"])]
    assert len(extra) == 1 and extra[0]["lr"] == pytest.approx(0.123)
    # the parameter appears in no other group
    assert sum(any(p is model.probe_scale for p in g["params"]) for g in groups) == 1
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert extra[0]["lr"] == pytest.approx(0.123)


def test_builtin_transform_is_found_through_its_entry_point():
    assert "keep-layers" in registry.names(registry.TRANSFORMS)
    assert registry.get(registry.TRANSFORMS, "keep-layers") is KeepLayers
    assert "task" in registry.names(registry.OBJECTIVES)


def test_unknown_plugin_names_the_closest():
    with pytest.raises(PluginError, match="keep-layers"):
        registry.get(registry.TRANSFORMS, "keep-layer")


def test_describe_lists_config_fields():
    rows = {row["name"]: row for row in registry.describe(registry.TRANSFORMS)}
    fields = {f["name"] for f in rows["keep-layers"]["fields"]}
    assert fields == {"layers"}


def test_stack_keep_layers_makes_a_smaller_model():
    model = load_model("preset:tiny", num_labels=2)
    before = model.num_parameters()
    model = stack(model, [KeepLayers(layers=[1])])
    assert model.config.num_hidden_layers == 1
    assert model.num_parameters() < before
    assert len(model.hf.bert.encoder.layer) == 1
