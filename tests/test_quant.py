"""Int8 quantization: plain, multiplexed and pruned models, saved and loaded exactly, in recipes."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from effkit import EffkitModel, ModelError, RecipeError, load, load_model, save
from effkit.bench import BenchConfig, benchmark
from effkit.recipe import parse_recipe
from effkit.runner import run, stack
from effkit.transform import StageContext
from effkit_cofi import CoFiPrune
from effkit_mux import Multiplex
from effkit_quant import Int8Linear, Quantize

KEEP, DROP = 4.6, -20.0


def tiny(**mux: str) -> EffkitModel:
    torch.manual_seed(0)
    model = load_model("preset:tiny", num_labels=3)
    if mux:
        model = stack(model, [Multiplex(n=2, **mux)])
    return model.eval()


def cofi_pruned() -> EffkitModel:
    """CoFi-pruned tiny model: 2 and 3 heads, FFN widths 128 and 48 in its two layers."""
    model = tiny()
    transform = CoFiPrune(mha_layers=False, ffn_layers=False, hidden=False)
    ctx = StageContext(stage="test", tokenizer=None)
    model = transform.apply(model, ctx)
    masks = model.cofi_masks
    with torch.no_grad():
        for param in masks.log_alphas():
            param.fill_(KEEP)
        masks.head_log_alpha["0"][torch.tensor([1, 3])] = DROP
        masks.head_log_alpha["1"][torch.tensor([0])] = DROP
        masks.ffn_dim_log_alpha["1"][:80] = DROP
    model = transform.finalize(model.eval(), ctx)
    model.transforms.append(transform)
    return model


def inputs(size: int = 6, length: int = 10) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 5000, (size, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[4, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def logits(model: EffkitModel) -> torch.Tensor:
    return model(**inputs()).logits


def int8_layers(model: EffkitModel) -> dict[str, Int8Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Int8Linear)}


def round_trip(model: EffkitModel, folder: Path) -> EffkitModel:
    save(model, folder)
    again = load(folder)
    assert torch.equal(logits(model), logits(again))  # exactly the same function
    assert int8_layers(again).keys() == int8_layers(model).keys()
    return again


# --------------------------------------------------------------------------- the layer


def test_int8_layer_is_close_to_the_float_layer_and_packs_from_plain_tensors():
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 32)
    x = torch.randn(4, 7, 48)
    for per_channel in (True, False):
        layer = Int8Linear.from_float(linear, per_channel=per_channel, engine="auto")
        assert layer.qweight.dtype == torch.int8 and layer.qweight.abs().max() <= 127
        assert layer.scale.shape == ((32,) if per_channel else (1,))
        error = (layer.dequantized_weight() - linear.weight).abs().max()
        assert error <= layer.scale.max() / 2 + 1e-7  # round to nearest
        with torch.no_grad():
            out, ref = layer(x), linear(x)
        assert out.shape == ref.shape
        assert (out - ref).abs().max() < 0.05 * ref.abs().max()
        # a copy (pickled state) packs the same integers again
        assert torch.equal(copy.deepcopy(layer)(x), out)


def test_a_quantized_layer_refuses_to_train():
    layer = Int8Linear.from_float(torch.nn.Linear(8, 4), per_channel=True, engine="auto")
    with pytest.raises(ModelError, match="cannot be trained"):
        layer(torch.randn(2, 8, requires_grad=True))


# --------------------------------------------------------------------------- models


def test_plain_model_is_quantized_except_its_head_and_round_trips(tmp_path):
    model = tiny()
    before = logits(model)
    transform = Quantize()
    model = stack(model, [transform])
    layers = int8_layers(model)
    # 2 layers x (q, k, v, attention output, FFN up, FFN down) + the pooler
    assert len(layers) == 13 and "hf.bert.pooler.dense" in layers
    assert type(model.hf.classifier) is torch.nn.Linear
    report = transform.describe()
    assert report["skipped"] == {"hf.classifier": "matches skip"}
    assert report["linear_weight_bytes_after"] < 0.3 * report["linear_weight_bytes_before"]
    assert torch.allclose(logits(model), before, atol=2e-2)
    again = round_trip(model, tmp_path / "q")
    # the format: int8 weights and float scales as ordinary tensors, the layer list in effkit.json
    with safe_open(str(tmp_path / "q" / "effkit.safetensors"), "pt") as weights:
        key = "hf.bert.encoder.layer.0.attention.self.query"
        assert weights.get_tensor(f"{key}.qweight").dtype == torch.int8
        assert weights.get_tensor(f"{key}.scale").dtype == torch.float32
    meta = json.loads((tmp_path / "q" / "effkit.json").read_text())
    state = meta["transforms"][0]["state"]
    assert meta["transforms"][0]["name"] == "quantize" and len(state["layers"]) == 13
    assert again.num_parameters() == model.num_parameters()


@pytest.mark.parametrize(("mux", "demux"), [("gaussian", "rsa"), ("contextual", "prefix")])
def test_multiplexed_model_quantizes_its_demultiplexer_too(mux, demux, tmp_path):
    model = tiny(mux=mux, demux=demux)
    before = logits(model)
    transform = Quantize()
    model = stack(model, [transform])
    names = int8_layers(model)
    assert {"adapter.demultiplexer.mlp.from_hidden", "adapter.demultiplexer.mlp.from_key",
            "adapter.demultiplexer.mlp.rest.2"} <= set(names)  # fmt: skip
    skipped = transform.describe()["skipped"]
    if mux == "contextual":  # torch's own transformer layers read their weights directly
        assert skipped["adapter.multiplexer.within.linear1"].startswith("inside a torch")
        assert type(model.adapter.multiplexer.within.linear1) is torch.nn.Linear
    assert torch.allclose(logits(model), before, atol=2e-2)
    round_trip(model, tmp_path / "q")


def test_cofi_pruned_model_keeps_its_per_layer_shapes(tmp_path):
    model = cofi_pruned()
    before = logits(model)
    model = stack(model, [Quantize(granularity="per-tensor")])
    layers = model.hf.bert.encoder.layer
    assert layers[0].attention.self.query.qweight.shape == (32, 64)
    assert layers[1].attention.self.query.qweight.shape == (48, 64)
    assert layers[1].intermediate.dense.qweight.shape == (48, 64)
    assert layers[1].output.dense.qweight.shape == (64, 48)
    assert layers[0].attention.self.query.scale.shape == (1,)
    assert torch.allclose(logits(model), before, atol=2e-2)
    again = round_trip(model, tmp_path / "q")
    assert [t.registered_name() for t in again.transforms] == ["cofi", "quantize"]


def test_tied_and_skipped_layers_stay_float():
    model = tiny()
    model.hf.tied = torch.nn.Linear(64, 64)
    model.hf.tied.weight = model.hf.bert.pooler.dense.weight
    transform = Quantize(skip=["hf.classifier", "hf.bert.encoder.layer.1.*"])
    model = stack(model, [transform])
    skipped = transform.describe()["skipped"]
    assert skipped["hf.tied"] == skipped["hf.bert.pooler.dense"] == "weight tied to another module"
    assert skipped["hf.bert.encoder.layer.1.output.dense"] == "matches skip"
    assert len(int8_layers(model)) == 6


def test_misuse_is_one_clear_error():
    model = stack(tiny(), [Quantize()])
    ctx = StageContext(stage="test", tokenizer=None)
    with pytest.raises(ModelError, match="already quantized"):
        Quantize().apply(model, ctx)
    with pytest.raises(ModelError, match="no linear layer left"):
        stack(tiny(), [Quantize(skip=["*"])])
    with pytest.raises(RecipeError, match="scheme"):
        parse_recipe(RECIPE, overrides=["stages.quantize.transforms.0.scheme=int4"])


# --------------------------------------------------------------------------- recipes and CLI

RECIPE = textwrap.dedent(
    """
    name: quant
    model: {source: preset:tiny}
    data: {source: builtin:synthetic, max_length: 16}
    stages:
      - name: finetune
        train: {steps: 4, batch_size: 8, lr: 1.0e-3, checkpoint_every: 0}
      - name: quantize
        transforms: [{name: quantize}]
        train: {steps: 0}
    evaluate: {splits: [test]}
    benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1, device: cpu}
    """
)


def test_quantize_is_the_last_stage_of_a_recipe_and_bench_measures_it(tmp_path):
    recipe = parse_recipe(RECIPE, overrides=["stages.quantize.transforms.0.granularity=per-tensor"])
    result = run(recipe, tmp_path / "run", progress=False)
    assert int8_layers(result.model) and 0.0 <= result.metrics["test"]["accuracy"] <= 1.0
    assert result.bench is not None and result.bench["timings"]["final"]["samples_per_s"] > 0
    record = result.stages["quantize"]["transforms"][0]
    assert record["name"] == "quantize" and record["granularity"] == "per-tensor"

    # what `effkit bench QUANTIZED_DIR --baseline FLOAT_DIR` does
    stages = tmp_path / "run" / "stages"
    models = {
        "model": load(stages / "quantize" / "model"),
        "baseline": load(stages / "finetune" / "model"),
    }
    cfg = BenchConfig(batch_size=4, seq_len=16, warmup=0, trials=1, batches=1, device="cpu")
    bench = benchmark(models, cfg, vocab_size=models["model"].vocab_size, baseline="baseline",
                      type_vocab_size=models["model"].type_vocab_size, progress=False)  # fmt: skip
    assert bench.timings["model"].samples_per_s > 0 and bench.ratio("model") is not None
