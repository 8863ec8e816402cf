"""One-shot pruning with torch-pruning: heads and FFN channels go, the hidden size stays."""

from __future__ import annotations

import copy
import textwrap

import pytest
import torch
from pydantic import ValidationError

from effkit import EffkitModel, ModelError, RecipeError, Task, load, load_model, save
from effkit.data import DataConfig, load_task_data
from effkit.recipe import parse_recipe
from effkit.runner import fit, stack
from effkit.train import TrainConfig
from effkit.transform import StageContext
from effkit_torchprune import OneShotPrune

HIDDEN, HEADS, HEAD_SIZE, FFN, LABELS = 64, 4, 16, 128, 3


@pytest.fixture(scope="module")
def data():
    return load_task_data(
        DataConfig(source="builtin:synthetic", max_length=24), "sequence-classification"
    )


def tiny(seed: int = 0) -> EffkitModel:
    torch.manual_seed(seed)
    model = load_model("preset:tiny", num_labels=LABELS)
    model.max_length = 24
    return model


def ids(batch: int = 5, length: int = 12) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1000, 30000, (batch, length), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[0, 8:] = 0
    return {"input_ids": input_ids, "attention_mask": mask}


def logits(model: EffkitModel) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**ids()).logits


def layers(model: EffkitModel):
    return list(model.hf.bert.encoder.layer)


def expected_drop(heads_removed: int, ffn_removed: int) -> int:
    """Parameters one BERT layer loses: q/k/v rows and biases, output-projection columns."""
    attention = heads_removed * HEAD_SIZE * (3 * (HIDDEN + 1) + HIDDEN)
    ffn = ffn_removed * ((HIDDEN + 1) + HIDDEN)
    return attention + ffn


def test_half_the_heads_and_ffn_channels_go_and_the_model_still_runs():
    model = tiny()
    before = model.num_parameters()
    prune = OneShotPrune(ratio=0.5, round_to=8)
    model = stack(model, [prune])

    for layer in layers(model):
        attention = layer.attention.self
        assert attention.query.out_features == attention.key.out_features == 2 * HEAD_SIZE
        assert attention.value.out_features == 2 * HEAD_SIZE
        assert layer.attention.output.dense.in_features == 2 * HEAD_SIZE
        assert (attention.num_attention_heads, attention.attention_head_size) == (2, HEAD_SIZE)
        assert attention.all_head_size == 2 * HEAD_SIZE
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features == FFN // 2
        # the hidden size is untouched
        assert layer.attention.output.dense.out_features == layer.output.dense.out_features
        assert layer.output.LayerNorm.normalized_shape == (HIDDEN,)
    assert model.hf.bert.embeddings.word_embeddings.embedding_dim == HIDDEN
    assert model.hf.classifier.in_features == HIDDEN
    assert logits(model).shape == (5, LABELS)
    assert model.num_parameters() == before - 2 * expected_drop(HEADS // 2, FFN // 2)

    info = prune.describe()
    assert info["heads_before"] == [4, 4] and info["heads_after"] == [2, 2]
    assert info["ffn_before"] == [128, 128] and info["ffn_after"] == [64, 64]
    assert info["parameters_before"] - info["parameters_after"] == 2 * expected_drop(2, 64)
    assert (
        info["encoder_parameters_before"] - info["encoder_parameters_after"]
        == info["parameters_before"] - info["parameters_after"]
    )
    assert model.transforms == [prune]


def test_recorded_indices_are_exactly_what_was_pruned():
    original = tiny()
    pruned = stack(copy.deepcopy(original), [prune := OneShotPrune(ratio=0.5)])
    kept = prune.kept()
    assert [len(k["heads"]) for k in kept] == [2, 2] and [len(k["ffn"]) for k in kept] == [64, 64]

    replay = OneShotPrune.model_validate(prune.model_dump())
    replay.load_state(prune.state())
    rebuilt = replay.rebuild(original, StageContext(stage="load", tokenizer=None, rebuilding=True))
    expected, got = pruned.state_dict(), rebuilt.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert torch.equal(logits(pruned), logits(rebuilt))


def test_magnitude_keeps_the_largest_heads():
    model = tiny()
    attention = layers(model)[0].attention.self
    with torch.no_grad():  # make heads 1 and 3 of layer 0 the strongest by far
        for linear in (attention.query, attention.key, attention.value):
            for head in (1, 3):
                linear.weight[head * HEAD_SIZE : (head + 1) * HEAD_SIZE] *= 10
    prune = OneShotPrune(ratio=0.5)
    stack(model, [prune])
    assert prune.kept()[0]["heads"] == [1, 3]


def test_taylor_ranks_with_task_gradients(data):
    model = tiny()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    prune = OneShotPrune(ratio=0.5, importance="taylor", calibration_batches=2)
    ctx = StageContext(stage="t", tokenizer=model.tokenizer, data=data, max_length=24)
    model = prune.apply(model, ctx)
    assert prune.describe()["heads_after"] == [2, 2]
    assert prune.describe()["ffn_after"] == [64, 64]
    assert all(p.grad is None for p in model.parameters())  # calibration leaves no gradients
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    assert model.training  # the training mode is restored after tracing
    assert logits(model).shape == (5, LABELS)


def test_taylor_without_data_is_an_error():
    model = tiny()
    with pytest.raises(ModelError, match="'taylor' needs the task's training data"):
        stack(model, [OneShotPrune(importance="taylor")])


def test_fit_prunes_then_fine_tunes_to_recover(data):
    untrained, _ = fit(
        tiny(), data=data, transforms=[OneShotPrune(ratio=0.5)], progress=False,
        train=TrainConfig(steps=0, checkpoint_every=0),
    )  # fmt: skip
    model, record = fit(
        tiny(), data=data, transforms=[OneShotPrune(ratio=0.5)], progress=False,
        train=TrainConfig(steps=4, batch_size=8, lr=1e-3, checkpoint_every=0),
    )  # fmt: skip
    assert record["train"]["steps"] == 4
    (info,) = record["transforms"]
    assert info["name"] == "oneshot-prune" and info["heads_after"] == [2, 2]
    assert [t.registered_name() for t in model.transforms] == ["oneshot-prune"]
    # same pruning (same starting weights and seed), then the recovery steps moved the weights
    a, b = layers(untrained)[0], layers(model)[0]
    assert a.intermediate.dense.weight.shape == b.intermediate.dense.weight.shape == (64, HIDDEN)
    assert not torch.equal(a.intermediate.dense.weight, b.intermediate.dense.weight)
    assert not torch.equal(a.attention.self.query.weight, b.attention.self.query.weight)


def test_save_and_load_restore_the_pruned_model_exactly(tmp_path, data):
    model, _ = fit(
        tiny(), data=data, progress=False,
        transforms=[OneShotPrune(ratio=0.5, importance="taylor", calibration_batches=1)],
        train=TrainConfig(steps=2, batch_size=8, lr=1e-3, checkpoint_every=0),
    )  # fmt: skip
    save(model, tmp_path / "m")
    loaded = load(tmp_path / "m")

    assert torch.equal(logits(model), logits(loaded))
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    assert {n: tuple(t.shape) for n, t in loaded.state_dict().items()} == shapes
    attention = layers(loaded)[1].attention.self
    assert (attention.num_attention_heads, attention.all_head_size) == (2, 2 * HEAD_SIZE)
    assert loaded.hf.config.num_attention_heads == HEADS  # config.json stays the unpruned one
    assert loaded.transforms[0].describe() == model.transforms[0].describe()


def test_round_to_sets_the_kept_ffn_width():
    prune = OneShotPrune(ratio=0.3, round_to=8)
    assert prune.ffn_kept(128) == 88  # 89.6 channels, rounded down to a multiple of 8
    assert prune.heads_kept(4) == 2  # 1.2 heads removed, rounded up
    assert OneShotPrune(ratio=0.97, round_to=8).ffn_kept(128) == 8  # never below round_to
    assert OneShotPrune(ratio=0.9).heads_kept(4) == 1  # at least one head stays
    model = stack(tiny(), [OneShotPrune(ratio=0.3, round_to=8)])
    assert [layer.intermediate.dense.out_features for layer in layers(model)] == [88, 88]
    assert [layer.attention.self.num_attention_heads for layer in layers(model)] == [2, 2]


def test_heads_only_and_ffn_only():
    heads_only = stack(tiny(), [OneShotPrune(ratio=0.5, prune_ffn=False)])
    assert layers(heads_only)[0].intermediate.dense.out_features == FFN
    assert layers(heads_only)[0].attention.self.num_attention_heads == 2
    ffn_only = stack(tiny(), [OneShotPrune(ratio=0.5, prune_heads=False)])
    assert layers(ffn_only)[0].intermediate.dense.out_features == FFN // 2
    assert layers(ffn_only)[0].attention.self.num_attention_heads == HEADS


def test_a_multiplexed_model_is_pruned_and_reloads(tmp_path):
    from effkit_mux import Multiplex

    model = stack(tiny(), [Multiplex(n=2), OneShotPrune(ratio=0.5)])
    assert layers(model)[0].attention.self.num_attention_heads == 2
    assert logits(model).shape == (5, LABELS)
    save(model, tmp_path / "mux")
    assert torch.equal(logits(model), logits(load(tmp_path / "mux")))


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_other_bert_family_encoders_prune_and_reload(tmp_path, family):
    import transformers

    sizes = {
        "vocab_size": 2000,
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": HEADS,
        "intermediate_size": FFN,
        "num_labels": LABELS,
    }
    if family == "roberta":
        hf = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**sizes))
    else:  # ELECTRA with a narrower embedding projected up to the hidden size
        config = transformers.ElectraConfig(embedding_size=32, **sizes)
        hf = transformers.ElectraForSequenceClassification(config)
    model = EffkitModel(hf, None, Task(labels=["a", "b", "c"]))
    prune = OneShotPrune(ratio=0.5)
    model = stack(model, [prune])
    assert prune.describe()["heads_after"] == [2, 2] and prune.describe()["ffn_after"] == [64, 64]
    batch = {"input_ids": torch.randint(5, 2000, (3, 10))}
    model.eval()
    save(model, tmp_path / family)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, load(tmp_path / family)(**batch).logits)


def test_token_classification_with_taylor():
    ner = load_task_data(
        DataConfig(source="builtin:synthetic-ner", max_length=24), "token-classification"
    )
    torch.manual_seed(0)
    model = load_model("preset:tiny", task="token-classification", labels=ner.labels)
    prune = OneShotPrune(ratio=0.5, importance="taylor", calibration_batches=1)
    ctx = StageContext(stage="t", tokenizer=model.tokenizer, data=ner, max_length=24)
    model = prune.apply(model, ctx)
    assert prune.describe()["heads_after"] == [2, 2]
    assert logits(model).shape == (5, 12, len(ner.labels))


RECIPE = """\
name: prune
model:
  source: preset:tiny
data:
  source: builtin:synthetic
stages:
  - name: prune
    transforms:
      - {name: oneshot-prune, ratio: 0.5%s}
    train:
      steps: 10
"""


def test_a_recipe_names_it_and_its_fields_are_validated():
    recipe = parse_recipe(RECIPE % "", source="r.yaml")
    (prune,) = recipe.stage("prune").build_transforms()
    assert isinstance(prune, OneShotPrune) and prune.ratio == 0.5
    with pytest.raises(RecipeError, match="ratio"):
        parse_recipe(textwrap.dedent(RECIPE % "").replace("0.5", "1.5"), source="r.yaml")
    with pytest.raises(RecipeError, match="importance"):
        parse_recipe(RECIPE % ", importance: fisher", source="r.yaml")
    with pytest.raises(ValidationError):
        OneShotPrune(prune_heads=False, prune_ffn=False)
    with pytest.raises(ValidationError):
        OneShotPrune(round_to=0)
