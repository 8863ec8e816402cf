"""The plugin guide's package works as the guide says, and a plugin can bring its own export.

The guide's code (docs/plugins.md) is read from the guide and installed in a temporary site
folder with its entry points (see tests/plugin_guide.py): ``ffn-gates`` trains, cuts neurons
and loads back; ``contrastive`` trains and leaves nothing behind; ``temperature`` takes over the
forward pass and exports. A transform written here, outside effkit, supplies a graph that
runs two inputs per row, and ONNX export handles it with no change to the core.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from plugin_guide import PACKAGE, entry_points, install, modules
from torch import nn

from effkit import EffkitModel, ExportGraph, ModelError, StageContext, Transform, registry
from effkit.data import DataConfig, load_task_data
from effkit.models import load, load_model, save
from effkit.runner import fit, stack
from effkit.train import TrainConfig


@pytest.fixture(scope="module")
def extras(tmp_path_factory: pytest.TempPathFactory):
    """The guide's package, importable and registered through its entry points."""
    site = tmp_path_factory.mktemp("site")
    install(site)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    for group in registry.GROUPS:
        for name in entry_points().get(group, {}):
            registry.unregister(group, name)
    for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        sys.modules.pop(name)


@pytest.fixture(scope="module")
def synthetic():
    return load_task_data(
        DataConfig(source="builtin:synthetic", max_length=24), "sequence-classification"
    )


def tiny() -> EffkitModel:
    torch.manual_seed(0)
    model = load_model("preset:tiny", num_labels=3)
    model.max_length = 24
    return model


def test_the_guide_names_a_module_for_every_entry_point(extras):
    names = {group: set(eps) for group, eps in entry_points().items()}
    assert names["effkit.transforms"] == {"freeze", "ffn-gates", "temperature"}
    assert names["effkit.objectives"] == {"contrastive"}
    assert set(modules()) == {"freeze", "ffn_gates", "temperature", "contrastive"}
    for group, eps in names.items():
        assert eps <= set(registry.names(group))


def test_ffn_gates_trains_cuts_neurons_and_loads_back(extras, synthetic, tmp_path):
    gates = registry.get(registry.TRANSFORMS, "ffn-gates")(density=0.5, warmup=0.5)
    train = TrainConfig(steps=6, batch_size=8, lr=1e-3, checkpoint_every=0)
    model, record = fit(tiny(), data=synthetic, transforms=[gates], train=train, progress=False)
    (kept,) = [entry["kept_neurons"] for entry in record["transforms"]]
    assert len(kept) == 2 and all(0 < k < 128 for k in kept)
    assert [layer.intermediate.dense.out_features for layer in model.encoder_layers()] == kept
    loaded = load(save(model, tmp_path / "gated"))
    ids = torch.randint(1000, 5000, (3, 10))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_contrastive_trains_and_removes_its_head(extras, synthetic):
    objective = registry.get(registry.OBJECTIVES, "contrastive")(temperature=0.05)
    train = TrainConfig(steps=2, batch_size=8, lr=1e-4, checkpoint_every=0)
    model, record = fit(tiny(), data=synthetic, objective=objective, train=train, progress=False)
    history = record["train"]["history"]
    assert history and all(torch.isfinite(torch.tensor(row["loss"])) for row in history)
    assert "pair_accuracy" in history[-1]
    assert not hasattr(model, "simcse_head")


def test_temperature_takes_over_the_forward_pass_and_loads_back(extras, synthetic, tmp_path):
    temperature = registry.get(registry.TRANSFORMS, "temperature")(initial=2.0)
    train = TrainConfig(steps=3, batch_size=8, lr=1e-2, checkpoint_every=0)
    start = tiny()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    model, _ = fit(start, data=synthetic, transforms=[temperature], train=train, progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set()  # the encoder and head stayed frozen...
    assert set(after) - set(before) == {"adapter.log_temperature"}  # ...the temperature trained
    assert float(after["adapter.log_temperature"].exp()) != pytest.approx(2.0)
    loaded = load(save(model, tmp_path / "scaled"))
    ids = torch.randint(1000, 5000, (2, 9))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


class Pairs(nn.Module):
    """A forward pass with Python control flow over the batch: two inputs at a time."""

    def forward(self, model: EffkitModel, input_ids: torch.Tensor, **inputs: Any) -> Any:
        chunks = [
            model.hf(input_ids=input_ids[i : i + 2], **{k: v[i : i + 2] for k, v in inputs.items()})
            for i in range(0, input_ids.shape[0], 2)
        ]
        outputs = chunks[0]
        outputs.logits = torch.cat([c.logits for c in chunks])
        return outputs


class PairGraph(nn.Module):
    """The same computation on ``[groups, 2, seq]`` inputs, as tensor operations."""

    def __init__(self, model: EffkitModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        flat = [None if t is None else t.flatten(0, 1) for t in (input_ids, attention_mask,
                                                                  token_type_ids)]  # fmt: skip
        logits = self.model.hf(input_ids=flat[0], attention_mask=flat[1],
                               token_type_ids=flat[2]).logits  # fmt: skip
        return logits.view(input_ids.shape[0], 2, *logits.shape[1:])


class PairUp(Transform):
    """Run the batch two inputs at a time (a transform from outside effkit)."""

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        model.adapter = Pairs()
        return model

    def export_graph(self, model: EffkitModel, graph: ExportGraph) -> ExportGraph:
        return ExportGraph(module=PairGraph(model), group_size=2)


class Silent(PairUp):
    """The same adapter, from a transform that does not say how its model exports."""

    export_graph = Transform.export_graph  # type: ignore[assignment]


@pytest.fixture
def pair_plugins():
    registry.register(registry.TRANSFORMS, "pair-up", PairUp)
    registry.register(registry.TRANSFORMS, "silent-pairs", Silent)
    yield
    registry.unregister(registry.TRANSFORMS, "pair-up")
    registry.unregister(registry.TRANSFORMS, "silent-pairs")


onnx_needed = pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None
    or importlib.util.find_spec("onnxruntime") is None,
    reason="ONNX export needs effkit[onnx]",
)


@onnx_needed
def test_a_third_party_graph_with_two_inputs_per_row_exports(pair_plugins, tmp_path: Path):
    from effkit.export import export_onnx

    model = stack(tiny(), [PairUp()]).eval()
    report = export_onnx(model, tmp_path / "pairs.onnx", batch_size=6, seq_len=10)
    assert report["group_size"] == 2
    assert report["inputs"]["input_ids"] == ["groups", 2, "seq"]
    assert report["outputs"] == {"logits": ["groups", 2, 3]}
    assert report["check"]["ok"] and report["check"]["shapes"] == [[3, 2, 10], [1, 2, 6]]


@onnx_needed
def test_the_guides_temperature_exports_through_its_adapter(extras, tmp_path: Path):
    from effkit.export import export_onnx

    temperature = registry.get(registry.TRANSFORMS, "temperature")(initial=2.0)
    report = export_onnx(stack(tiny(), [temperature]).eval(), tmp_path / "t.onnx",
                         batch_size=4, seq_len=8)  # fmt: skip
    assert report["group_size"] is None and report["check"]["ok"]


def test_an_adapter_whose_transform_says_nothing_is_refused_before_tracing(
    pair_plugins, tmp_path: Path
):
    from effkit.export import export_onnx

    model = stack(tiny(), [Silent()]).eval()
    with pytest.raises(ModelError, match="taken over by Pairs, and none of its transforms"):
        export_onnx(model, tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()
