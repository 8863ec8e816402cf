"""CoFi pruning: CoFi's expected sparsity, the Lagrangian reaching its target, and physical
removal that keeps what the masked model computed, for plain and multiplexed models."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from effkit import load, load_model, save
from effkit.data import DataConfig, load_task_data
from effkit.errors import ModelError, RecipeError
from effkit.recipe import parse_recipe
from effkit.runner import fit, stack
from effkit.train import TrainConfig, build_optimizer
from effkit.transform import StageContext
from effkit_cofi import CoFiPrune, SkippedAttention, SkippedFeedForward
from effkit_cofi.hardconcrete import deterministic, keep_probability, nearest_multiple
from effkit_mux import Multiplex

KEEP, DROP = 4.6, -20.0  # log_alpha: kept for sure (CoFi's clamp), dropped for sure
ALL_OFF = dict(heads=False, mha_layers=False, ffn_dims=False, ffn_layers=False, hidden=False)
ANY_WIDTH = 1
"""``round_to`` for tests that count entries exactly: at the default (multiples of 8) a 64-wide
model's widths move by up to 6% (rounding itself is tested on its own)."""


@pytest.fixture(scope="module")
def synthetic():
    return load_task_data(
        DataConfig(source="builtin:synthetic", max_length=24), "sequence-classification"
    )


def ctx() -> StageContext:
    return StageContext(stage="test", tokenizer=None)


def tiny(task: str = "sequence-classification", **mux) -> object:
    torch.manual_seed(0)
    model = load_model("preset:tiny", task=task, num_labels=3)
    if mux:
        model = stack(model, [Multiplex(n=2, **mux)])
    return model.eval()


def inputs(size: int = 5, length: int = 9) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 5000, (size, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def set_masks(model, drop: dict[str, object]) -> None:
    """Kept entries get log_alpha in [4, 4.6] (mask values just below 1, which finalize must
    fold into the weights); the listed entries are dropped. Keys: 'heads:L', 'mha:L',
    'ffn_dims:L', 'ffn:L', 'hidden' with index lists (or True for whole-block masks)."""
    masks = model.cofi_masks
    gen = torch.Generator().manual_seed(7)
    groups = {
        "heads": masks.head_log_alpha,
        "mha": masks.mha_log_alpha,
        "ffn_dims": masks.ffn_dim_log_alpha,
        "ffn": masks.ffn_log_alpha,
    }
    with torch.no_grad():
        for param in masks.log_alphas():
            param.copy_(4.0 + 0.6 * torch.rand(param.shape, generator=gen))
        for key, which in drop.items():
            kind, _, layer = key.partition(":")
            param = masks.hidden_log_alpha if kind == "hidden" else groups[kind][layer]
            if which is True:
                param.fill_(DROP)
            else:
                param[torch.tensor(which)] = DROP


DROPS = {
    "heads": {"heads:0": [1, 3], "heads:1": [0, 1, 2, 3]},
    "mha_layers": {"mha:1": True},
    "ffn_dims": {"ffn_dims:0": list(range(0, 128, 3)), "ffn_dims:1": list(range(128))},
    "ffn_layers": {"ffn:0": True},
    "hidden": {"hidden": list(range(5, 64, 4))},
}


def pruned(model, kinds: dict[str, bool], drop: dict[str, object]):
    """(model after finalize, the transform, logits of the masked model in eval mode)."""
    transform = CoFiPrune(round_to=ANY_WIDTH, **kinds)
    model = transform.apply(model, ctx())
    set_masks(model, drop)
    with torch.no_grad():
        masked = model.eval()(**inputs()).logits
    return transform.finalize(model, ctx()), transform, masked


# --------------------------------------------------------------------------- the masks


def test_hard_concrete_constants_and_deterministic_mask_follow_cofi():
    # P(z > 0) at log_alpha = 0: 1 - sigmoid(log(1/11) * 2/3), CoFi's l=-0.1, r=1.1, T=2/3
    assert float(keep_probability(torch.zeros(()))) == pytest.approx(
        1 - torch.sigmoid(torch.log(torch.tensor(1 / 11)) * 2 / 3).item(), abs=1e-6
    )
    log_alpha = torch.tensor([4.0, -3.0, 2.0, -5.0, 0.5])
    z = deterministic(log_alpha)
    kept = round(float(keep_probability(log_alpha).sum()))
    # the expected number of entries kept, the highest scores, valued sigmoid(la / T * 0.8)
    assert int((z > 0).sum()) == kept == 3
    assert torch.equal(z > 0, torch.tensor([True, False, True, False, True]))
    assert torch.allclose(z[0], torch.sigmoid(torch.tensor(4.0) / (2 / 3) * 0.8))
    assert float(deterministic(torch.tensor(-3.0))) == 0.0  # a layer mask: all or nothing


def masked_tiny(**kinds: Any):
    """A tiny model with CoFi masks applied and set by :func:`set_masks` (nothing dropped)."""
    transform = CoFiPrune(**kinds)
    model = transform.apply(tiny(), ctx())
    set_masks(model, {})
    return model, transform, model.cofi_masks


def test_expected_sparsity_is_cofis_formula_on_known_masks():
    model, _, masks = masked_tiny(hidden=False)
    with torch.no_grad():
        for param in masks.log_alphas():
            param.fill_(30.0)  # everything kept with probability 1 - 1e-6
        masks.head_log_alpha["0"][:2] = -30.0  # two heads of layer 0 dropped
        masks.ffn_dim_log_alpha["1"][:64] = -30.0  # half the FFN of layer 1
        masks.ffn_log_alpha["0"].fill_(-30.0)  # the whole FFN of layer 0
    # CoFi for H=64, 4 heads of 16, I=128: per head 4*64*64/4 + 4*64/4 = 4160 parameters, per
    # FFN dimension (2*64*128 + 5*64) // 128 = 130; the prunable size 2 * (16640 + 16704)
    expected = (2 + 4) * 4160 + (0 + 64) * 130
    prunable = 2 * (4 * 4160 + 2 * 64 * 128 + 5 * 64)
    assert masks.sizes.prunable() == prunable == 66688
    assert masks.expected_size().item() == pytest.approx(expected, rel=1e-4)
    assert masks.expected_sparsity().item() == pytest.approx(1 - expected / prunable, abs=1e-4)

    # with hidden masks: heads count H_kept * heads * 4160 / 64, FFN dims 2 * H_kept * dims
    model = tiny()
    model = CoFiPrune().apply(model, ctx())
    masks = model.cofi_masks
    with torch.no_grad():
        for param in masks.log_alphas():
            param.fill_(30.0)
        masks.hidden_log_alpha[:16] = -30.0
        masks.head_log_alpha["1"][:] = -30.0
    expected = 48 * 4 * 4160 / 64 + 2 * 48 * 256
    assert masks.expected_size().item() == pytest.approx(expected, rel=1e-4)


def test_deterministic_masks_keep_the_expected_size():
    from dataclasses import replace

    # widths at any count: rounding them to multiples moves a model this small by several %
    model, transform, masks = masked_tiny(hidden=False, round_to=1)
    with torch.no_grad():
        for param in masks.ffn_log_alpha.values():
            param.fill_(-1.2)  # each FFN block kept with probability 0.6: rounding keeps it whole
        for param in masks.ffn_dim_log_alpha.values():
            param.copy_(torch.linspace(0.0, 4.0, param.numel()))  # distinct scores, low first
    with torch.no_grad():
        expected = float(masks.expected_sparsity())
    sizes = masks.sizes

    def sparsity(values) -> float:
        heads, ffn, hidden = masks.kept_counts(values)
        return 1.0 - sizes.remaining(heads, ffn, hidden) / sizes.prunable()

    values = masks.draw(training=False)
    with torch.no_grad():
        grouped = {layer: deterministic(masks.ffn_dim_log_alpha[str(layer)])
                   for layer in values.ffn_dims}  # fmt: skip
    assert abs(sparsity(replace(values, ffn_dims=grouped)) - expected) > 0.1
    assert abs(sparsity(values) - expected) <= 0.01
    for z in values.ffn_dims.values():  # the lowest-scored dimensions went first
        kept = (z != 0).int()
        assert torch.equal(kept, kept.sort().values)
    transform.finalize(model, ctx())
    assert abs(transform.describe()["sparsity"] - expected) <= 0.01


def test_deterministic_masks_restore_dimensions_when_rounding_drops_too_much():
    _, _, masks = masked_tiny(hidden=False, round_to=1)
    with torch.no_grad():
        masks.mha_log_alpha["0"].fill_(-2.0)  # kept with probability 0.4: rounded away whole
        for param in masks.ffn_dim_log_alpha.values():
            param.copy_(torch.linspace(-4.0, 4.0, param.numel()))  # the low half is dropped
        expected = float(masks.expected_sparsity())
        values = masks.draw(training=False)
    heads, ffn, hidden = masks.kept_counts(values)
    reached = 1.0 - masks.sizes.remaining(heads, ffn, hidden) / masks.sizes.prunable()
    assert heads[0] == 0
    assert abs(reached - expected) <= 0.01
    for z in values.ffn_dims.values():  # the highest-scored dimensions came back first
        kept = (z != 0).int()
        assert torch.equal(kept, kept.sort().values)


@pytest.mark.parametrize(
    ("count", "full", "rounded"),
    [(438, 1536, 440), (436, 1536, 440), (435, 1536, 432), (380, 384, 384), (3, 128, 8),
     (0, 128, 0), (1536, 1536, 1536), (125, 128, 128), (13, 13, 13), (11, 12, 12)],
)  # fmt: skip
def test_widths_round_to_the_nearest_multiple_within_the_full_width(count, full, rounded):
    assert nearest_multiple(count, 8, full) == rounded
    assert nearest_multiple(count, 1, full) == count


def test_deterministic_widths_are_multiples_of_round_to_and_keep_the_best_entries():
    def kept_widths(round_to: int):
        model, transform, masks = masked_tiny(round_to=round_to)
        index = torch.arange(128)
        score = index * 0.01
        with torch.no_grad():  # 61 and 67 of 128 FFN dimensions kept, distinct scores
            masks.ffn_dim_log_alpha["0"].copy_(torch.where(index < 61, 20 + score, -20 + score))
            masks.ffn_dim_log_alpha["1"].copy_(torch.where(index < 67, 20 + score, -20 + score))
            masks.hidden_log_alpha[:3] = -30.0  # 61 of 64 hidden dimensions kept
            values = masks.draw(training=False)
        return masks.kept_counts(values), values, model, transform

    assert kept_widths(1)[0][1:] == ([61, 67], 61)
    (_, ffn, hidden), values, model, transform = kept_widths(8)
    assert (ffn, hidden) == ([64, 64], 64)
    for layer, z in values.ffn_dims.items():  # the restored or dropped ones are next in line
        order = model.cofi_masks.ffn_dim_log_alpha[str(layer)].detach().argsort(descending=True)
        assert bool((z[order[:64]] != 0).all()) and not bool((z[order[64:]] != 0).any())
    with torch.no_grad():
        masked = model.eval()(**inputs()).logits
        transform.finalize(model, ctx())
        assert torch.allclose(masked, model(**inputs()).logits, atol=1e-5)  # what was evaluated
    report = transform.describe()
    assert report["ffn_widths"] == [64, 64] and report["hidden_width"] == 64


def test_mask_and_multiplier_groups_have_their_own_constant_rates():
    model = tiny()
    transform = CoFiPrune(mask_lr=0.05, lagrangian_lr=0.2)
    model = transform.apply(model, ctx())
    optimizer, scheduler = build_optimizer(model, [transform], TrainConfig(steps=10, lr=1e-3))
    masks = model.cofi_masks
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    mask_group = by_param[id(masks.hidden_log_alpha)]
    lambda_group = by_param[id(masks.lambda_1)]
    assert mask_group["lr"] == 0.05 and not mask_group["maximize"]
    assert lambda_group["lr"] == 0.2 and lambda_group["maximize"]  # gradient ascent
    assert by_param[id(masks.lambda_2)] is lambda_group
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert mask_group["lr"] == 0.05 and lambda_group["lr"] == 0.2  # no schedule
    # the warm-up (20% of the stage) starts from the initial masks' expected sparsity
    start = float(masks.expected_sparsity())
    assert 0.0 < start < 0.6
    assert transform.target_at(0, 100) == pytest.approx(start)
    assert transform.target_at(10, 100) == pytest.approx((start + 0.6) / 2)
    assert transform.target_at(50, 100) == 0.6


def test_lagrangian_steers_the_expected_sparsity_to_the_target(synthetic):
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=synthetic.labels)
    transform = CoFiPrune(sparsity=0.6, mask_lr=0.3, warmup_ratio=0.6)
    model, record = fit(model, data=synthetic, transforms=[transform],
                        train=TrainConfig(steps=100, batch_size=8, lr=1e-3, log_every=20),
                        progress=False)  # fmt: skip
    report = record["transforms"][0]
    # CoFi's initial masks: FFN dimensions at droprate 0.5, everything else kept
    assert all("lagrangian" in row for row in record["train"]["history"])
    assert all(0.0 <= row["expected_sparsity"] <= 1.0 for row in record["train"]["history"])
    assert report["expected_sparsity"] == pytest.approx(0.6, abs=0.05)
    assert report["sparsity"] == pytest.approx(0.6, abs=0.05)
    # the model really is smaller, the masks and hooks are gone
    assert not hasattr(model, "cofi_masks")
    assert report["encoder_parameters_after"] < 0.55 * report["encoder_parameters_before"]
    assert report["parameters_after"] == sum(p.numel() for p in model.hf.parameters())
    assert model.transforms == [transform]
    with torch.no_grad():
        assert model(**inputs()).logits.shape == (5, 3)


def test_model_selection_waits_for_the_target_sparsity(synthetic):
    """Validation-based selection keeps only states near the target, never an early one."""
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=synthetic.labels)
    transform = CoFiPrune(sparsity=0.6, mask_lr=0.3, warmup_ratio=0.6, round_to=ANY_WIDTH)
    model, record = fit(model, data=synthetic, transforms=[transform],
                        train=TrainConfig(steps=100, batch_size=8, lr=1e-3, eval_every=10),
                        progress=False)  # fmt: skip
    rows = record["train"]["validation"]
    assert [row["selectable"] for row in rows[:5]] == [0.0] * 5  # still in the warm-up
    best = record["train"]["best_step"]
    assert best is not None and best >= 60
    assert rows[int(best) // 10 - 1]["selectable"] == 1.0
    assert record["transforms"][0]["sparsity"] == pytest.approx(0.6, abs=0.03)


# --------------------------------------------------------------------------- physical removal


@pytest.mark.parametrize("kind", list(DROPS))
def test_finalize_keeps_what_the_masked_model_computed(kind):
    model, transform, masked = pruned(tiny(), {**ALL_OFF, kind: True}, DROPS[kind])
    with torch.no_grad():
        after = model(**inputs()).logits
    assert torch.allclose(masked, after, atol=1e-5)
    layers = model.hf.bert.encoder.layer
    report = transform.describe()
    if kind == "heads":
        assert layers[0].attention.self.query.out_features == 2 * 16
        assert layers[0].attention.self.num_attention_heads == 2
        assert isinstance(layers[1].attention, SkippedAttention)  # every head gone
        assert report["heads_per_layer"] == [2, 0]
    elif kind == "mha_layers":
        assert isinstance(layers[1].attention, SkippedAttention)
        assert report["mha_layers_removed"] == [False, True]
    elif kind == "ffn_dims":
        assert layers[0].intermediate.dense.out_features == 128 - 43
        assert isinstance(layers[1].output, SkippedFeedForward)
        assert report["ffn_widths"] == [85, 0]
    elif kind == "ffn_layers":
        assert isinstance(layers[0].output, SkippedFeedForward)
        assert report["ffn_layers_removed"] == [True, False]
    else:
        assert report["hidden_width"] == 64 - 15
        assert model.hf.bert.embeddings.word_embeddings.weight.shape[1] == 49
        assert model.hf.bert.pooler.dense.in_features == 49
    assert report["encoder_parameters_after"] < report["encoder_parameters_before"]


@pytest.mark.parametrize("task", ["sequence-classification", "token-classification"])
def test_every_mask_kind_together_keeps_the_function(task):
    drop = {k: v for d in DROPS.values() for k, v in d.items() if k != "mha:1"}
    drop["mha:0"] = True
    model, transform, masked = pruned(tiny(task), {}, drop)
    with torch.no_grad():
        assert torch.allclose(masked, model(**inputs()).logits, atol=1e-5)
    report = transform.describe()
    assert report["heads_per_layer"] == [0, 0]
    assert report["ffn_widths"] == [0, 0]  # layer 0: whole-FFN mask; layer 1: every dimension
    assert report["hidden_width"] == 49
    if task == "token-classification":
        assert model.hf.classifier.in_features == 49  # the head reads the states itself


def test_save_and_load_give_the_same_model(tmp_path):
    drop = {"heads:0": [2], "ffn_dims:1": list(range(40)), "ffn:0": True, "hidden": [0, 9, 33]}
    model, transform, _ = pruned(tiny(), {}, drop)
    model.transforms.append(transform)
    save(model, tmp_path / "pruned")
    meta = json.loads((tmp_path / "pruned" / "effkit.json").read_text())
    state = meta["transforms"][0]["state"]
    assert state["heads"] == [[0, 1, 3], [0, 1, 2, 3]]
    assert state["ffn"][0] == [] and len(state["ffn"][1]) == 88
    assert len(state["hidden"]) == 61
    # config.json stays the unpruned transformers config that rebuild starts from
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())["source_config"]
    assert config["hidden_size"] == 64 and config["intermediate_size"] == 128
    again = load(tmp_path / "pruned")
    with torch.no_grad():
        assert torch.equal(model(**inputs()).logits, again(**inputs()).logits)
    layers = again.hf.bert.encoder.layer
    assert layers[0].attention.self.query.weight.shape == (48, 61)
    assert isinstance(layers[0].output, SkippedFeedForward)
    assert layers[1].intermediate.dense.weight.shape == (88, 61)
    assert again.num_parameters() == model.num_parameters()
    assert again.transforms[0].describe()["hidden_width"] == 61


@pytest.mark.parametrize(("mux", "demux"), [("gaussian", "rsa"), ("binary", "prefix"),
                                            ("orthogonal", "rsa")])  # fmt: skip
def test_multiplexed_model_is_pruned_and_round_trips(mux, demux, tmp_path):
    drop = {"heads:1": [0, 3], "ffn_dims:0": list(range(0, 128, 2)), "hidden": [1, 2, 40, 63]}
    model, transform, masked = pruned(tiny(mux=mux, demux=demux), {}, drop)
    with torch.no_grad():
        assert torch.allclose(masked, model(**inputs()).logits, atol=1e-5)
    model.transforms.append(transform)
    save(model, tmp_path / "mux")
    again = load(tmp_path / "mux")
    with torch.no_grad():
        assert torch.equal(model(**inputs()).logits, again(**inputs()).logits)
    assert again.adapter.multiplexer.keys.shape[-1] == 60  # the adapter followed prune_hidden


def test_multiplexed_model_trains_with_masks(synthetic):
    model = load_model("preset:tiny", labels=synthetic.labels)
    transforms = [Multiplex(n=2), CoFiPrune(sparsity=0.3, mask_lr=0.2)]
    train = TrainConfig(steps=6, batch_size=8, lr=1e-3)
    model, record = fit(
        model, data=synthetic, objective="mux-task", transforms=transforms, train=train,
        progress=False,
    )  # fmt: skip
    assert record["transforms"][1]["sparsity"] > 0
    with torch.no_grad():
        assert model(**inputs(7)).logits.shape == (7, 3)


def test_a_multiplexer_that_cannot_follow_hidden_pruning_leaves_the_model_intact():
    model = tiny(mux="contextual")
    transform = CoFiPrune(round_to=ANY_WIDTH)
    model = transform.apply(model, ctx())
    set_masks(model, {"hidden": [3]})
    with pytest.raises(ModelError, match="ContextualMux"):
        transform.finalize(model, ctx())
    assert hasattr(model, "cofi_masks")  # nothing was cut
    # without hidden masks the contextual multiplexer is pruned as any other
    model, _, masked = pruned(tiny(mux="contextual"), {"hidden": False}, DROPS["heads"])
    with torch.no_grad():
        assert torch.allclose(masked, model(**inputs()).logits, atol=1e-5)


# --------------------------------------------------------------------------- configuration


def test_recipe_with_cofi_validates_and_bad_values_are_errors():
    text = """
name: prune
model: {source: preset:tiny}
data: {source: builtin:synthetic}
stages:
  - name: finetune
    train: {steps: 2}
  - name: prune
    transforms:
      - {name: cofi, sparsity: 0.6}
      - {name: distill, teacher: finetune}
    train: {steps: 2}
"""
    recipe = parse_recipe(text)
    transforms = recipe.stages[1].build_transforms()
    assert isinstance(transforms[0], CoFiPrune) and transforms[0].sparsity == 0.6
    with pytest.raises(RecipeError, match="sparsity"):
        parse_recipe(text.replace("sparsity: 0.6", "sparsity: 1.5"))
    with pytest.raises(ValidationError):
        CoFiPrune(sparsity=1.5)
    with pytest.raises(ValidationError, match="nothing would be pruned"):
        CoFiPrune(**ALL_OFF)


def test_a_stage_that_misses_its_target_says_so(synthetic, caplog):
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=synthetic.labels)
    transform = CoFiPrune(sparsity=0.6)  # four steps at CoFi's own rates: nowhere near 0.6
    with caplog.at_level("WARNING", logger="effkit_cofi"):
        _, record = fit(
            model,
            data=synthetic,
            transforms=[transform],
            train=TrainConfig(steps=4, batch_size=8, lr=1e-3),
            progress=False,
        )
    reached = record["transforms"][0]["sparsity"]
    assert abs(reached - 0.6) > 0.02
    assert any("reached sparsity" in r.getMessage() and "target 0.600" in r.getMessage()
               for r in caplog.records)  # fmt: skip
