"""Distillation: CoFi's logit and dynamically matched layer losses, on its own with a shallower
student, together with CoFi pruning, and with multiplexed models."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForSequenceClassification

from effkit import EffkitModel, load, load_model, save
from effkit.data import DataConfig, load_task_data
from effkit.errors import ModelError, RecipeError
from effkit.recipe import parse_recipe
from effkit.runner import fit, stack
from effkit.train import TrainConfig
from effkit_cofi import CoFiPrune
from effkit_distill import Distill, default_teacher_layers, ordered_alignment
from effkit_layers import KeepLayers
from effkit_mux import Multiplex


@pytest.fixture(scope="module")
def synthetic():
    return load_task_data(
        DataConfig(source="builtin:synthetic", max_length=24), "sequence-classification"
    )


@pytest.fixture(scope="module")
def teacher_dir(synthetic, tmp_path_factory):
    """A 4-layer tiny teacher, briefly fine-tuned, saved as a model folder."""
    torch.manual_seed(0)
    base = load_model("preset:tiny", labels=synthetic.labels)
    config = copy.deepcopy(base.hf.config)
    config.num_hidden_layers = 4
    model = EffkitModel(AutoModelForSequenceClassification.from_config(config), base.tokenizer,
                        base.task, "test")  # fmt: skip
    model.max_length = 24
    model, _ = fit(model, data=synthetic, train=TrainConfig(steps=15, batch_size=8, lr=2e-3),
                   progress=False)  # fmt: skip
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    save(model, path)
    return path


def history(record: dict, key: str) -> list[float]:
    return [row[key] for row in record["train"]["history"]]


# --------------------------------------------------------------------------- layer matching


def test_teacher_layers_and_ordered_matching_follow_cofi():
    assert default_teacher_layers(12) == [2, 5, 8, 11]  # CoFi's layers of BERT-base
    assert default_teacher_layers(6) == [0, 2, 3, 5]
    assert default_teacher_layers(2) == [0, 1]
    losses = torch.tensor(
        [[0.1, 0.5, 0.9],  # teacher layer A: best at student 0
         [0.2, 0.1, 0.3],  # B: best at 1
         [0.9, 0.8, 0.1]]  # C: best at 2
    )  # fmt: skip
    assert ordered_alignment(losses) == [0, 1, 2]
    # matches must descend from the last teacher layer: B may not take C's student layer or one
    # above it, so it falls back to the best one below
    losses[1] = torch.tensor([0.3, 0.4, 0.0])
    assert ordered_alignment(losses) == [0, 0, 2]
    # a student layer whose attention block a mask is dropping is not matched
    assert ordered_alignment(losses, live=[True, True, False]) == [0, 0, 1]
    # a pair of different shapes (inf) is never matched
    losses[2, 2] = float("inf")
    assert ordered_alignment(losses)[2] == 1


# --------------------------------------------------------------------------- training


def test_shallower_student_learns_from_a_deeper_teacher(synthetic, teacher_dir):
    student = load(teacher_dir)
    distill = Distill(teacher=str(teacher_dir), logit_weight=1.0)
    student, record = fit(student, data=synthetic,
                          transforms=[KeepLayers(layers=[0, 2]), distill],
                          train=TrainConfig(steps=30, batch_size=8, lr=3e-3, log_every=10),
                          progress=False)  # fmt: skip
    report = record["transforms"][1]
    assert report["teacher_layers"] == [0, 1, 2, 3]  # four teacher layers onto two
    alignment = report["last_alignment"]
    assert all(0 <= a < 2 for a in alignment) and alignment == sorted(alignment)
    layers = history(record, "distill_layers")
    assert layers[-1] < layers[0]  # the student (and the map) move towards the teacher
    assert all(v > 0 for v in history(record, "distill_logits"))
    # nothing of the distillation remains; the student keeps its two layers
    assert not hasattr(student, "distill_map")
    assert student.hf.config.output_hidden_states is False
    assert [t.registered_name() for t in student.transforms] == ["keep-layers"]
    assert len(student.hf.bert.encoder.layer) == 2


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_task_weight_scales_the_objectives_cross_entropy(synthetic, teacher_dir, weight):
    student = load(teacher_dir)
    student, record = fit(student, data=synthetic,
                          transforms=[Distill(teacher=str(teacher_dir), task_weight=weight)],
                          train=TrainConfig(steps=2, batch_size=8, lr=1e-4, log_every=1),
                          progress=False)  # fmt: skip
    if weight == 1.0:
        assert "distill_task_offset" not in record["train"]["history"][0]
        return
    for loss, offset in zip(history(record, "loss"), history(record, "distill_task_offset"),
                            strict=True):  # fmt: skip
        assert offset == pytest.approx(-(1 - weight) * loss, rel=1e-5)


def test_distillation_and_cofi_pruning_in_one_stage(synthetic, teacher_dir, tmp_path):
    student = load(teacher_dir)
    prune = CoFiPrune(sparsity=0.5, mask_lr=0.3, warmup_ratio=0.5)
    student, record = fit(student, data=synthetic,
                          transforms=[prune, Distill(teacher=str(teacher_dir))],
                          train=TrainConfig(steps=12, batch_size=8, lr=1e-3, log_every=4),
                          progress=False)  # fmt: skip
    row = record["train"]["history"][-1]
    assert {"lagrangian", "distill_logits", "distill_layers"} <= set(row)
    assert record["transforms"][0]["sparsity"] > 0.1
    assert not hasattr(student, "distill_map") and not hasattr(student, "cofi_masks")
    assert student.transforms == [prune]  # distillation is not recorded
    save(student, tmp_path / "pruned")
    again = load(tmp_path / "pruned")
    ids = torch.randint(1000, 5000, (3, 11))
    with torch.no_grad():
        assert torch.equal(student(input_ids=ids).logits, again(input_ids=ids).logits)


def test_multiplexed_layer_distillation_needs_the_same_n(synthetic, teacher_dir, tmp_path):
    mux_teacher = stack(load(teacher_dir), [Multiplex(n=2)])
    save(mux_teacher, tmp_path / "mux2")
    student = load(tmp_path / "mux2")
    student, record = fit(student, data=synthetic, objective="mux-task",
                          transforms=[Distill(teacher=str(tmp_path / "mux2"))],
                          train=TrainConfig(steps=2, batch_size=8, lr=1e-4, log_every=1),
                          progress=False)  # fmt: skip
    assert all(v >= 0 for v in history(record, "distill_layers"))
    # N=3 against N=2: rows hold different inputs, so only logits can be compared
    other = stack(load(teacher_dir), [Multiplex(n=3)])
    with pytest.raises(ModelError, match="same N"):
        fit(other, data=synthetic, objective="mux-task",
            transforms=[Distill(teacher=str(tmp_path / "mux2"))],
            train=TrainConfig(steps=1, batch_size=6), progress=False)  # fmt: skip
    other, record = fit(other, data=synthetic, objective="mux-task",
                        transforms=[Distill(teacher=str(tmp_path / "mux2"), layer_map="none")],
                        train=TrainConfig(steps=1, batch_size=6, log_every=1),
                        progress=False)  # fmt: skip
    assert "distill_layers" not in record["train"]["history"][0]


def test_cached_teacher_logits_are_the_teachers_and_run_each_input_once(synthetic, teacher_dir):
    rows = synthetic.splits["train"]
    steps, batch = 20, 16  # 320 inputs from a split of 210: the second epoch is all cached

    def train(cache: bool) -> tuple[dict, Distill]:
        distill = Distill(teacher=str(teacher_dir), layer_map="none", logit_weight=1.0,
                          cache_teacher=cache)  # fmt: skip
        _, record = fit(load(teacher_dir), data=synthetic, transforms=[distill],
                        train=TrainConfig(steps=steps, batch_size=batch, lr=1e-4, log_every=1),
                        progress=False)  # fmt: skip
        return record, distill

    cached, _ = train(True)
    plain, _ = train(False)
    # the same losses at every step, from far fewer teacher passes
    for a, b in zip(history(cached, "distill_logits"), history(plain, "distill_logits"),
                    strict=True):  # fmt: skip
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    assert plain["transforms"][0]["teacher_rows"] == steps * batch
    assert cached["transforms"][0]["teacher_rows"] == len(rows)


# --------------------------------------------------------------------------- configuration


def test_a_teacher_for_another_task_is_refused(teacher_dir):
    student = load_model("preset:tiny", num_labels=5)
    with pytest.raises(ModelError, match="5"):
        fit(student, transforms=[Distill(teacher=str(teacher_dir))],
            train=TrainConfig(steps=0), progress=False)  # fmt: skip


def test_recipe_fields_are_checked():
    text = """
name: distil
model: {source: preset:tiny}
data: {source: builtin:synthetic}
stages:
  - name: finetune
    train: {steps: 2}
  - name: student
    transforms:
      - {name: keep-layers, layers: [0]}
      - {name: distill, teacher: finetune}
    train: {steps: 2}
"""
    distill = parse_recipe(text).stages[1].build_transforms()[1]
    assert isinstance(distill, Distill)
    assert (distill.temperature, distill.logit_weight, distill.layer_weight) == (2.0, 0.1, 0.9)
    with pytest.raises(RecipeError, match="layer_map"):
        parse_recipe(text.replace("teacher: finetune", "teacher: finetune, layer_map: all"))
    with pytest.raises(ValidationError, match="nothing to distil"):
        Distill(logit_weight=0.0, layer_map="none")
    assert Distill(logit_weight=0.0, layer_map="none", output_weight=1.0).output_weight == 1.0
    with pytest.raises(ValidationError, match="distinct"):
        Distill(teacher_layers=[1, 1])


def test_cached_teacher_logits_for_a_token_task_match_the_teacher():
    data = load_task_data(DataConfig(source="builtin:synthetic-ner", max_length=24),
                          "token-classification")  # fmt: skip
    torch.manual_seed(0)
    teacher = load_model("preset:tiny", task="token-classification", labels=data.labels)
    teacher.max_length = 24
    distill = Distill(teacher="unused", layer_map="none", logit_weight=1.0, output_weight=1.0)
    teacher.hf.config.output_hidden_states = True
    distill._teacher = teacher.eval()
    from effkit.data import Collator, encode

    collate = Collator(int(teacher.tokenizer.pad_token_id))
    rows = encode(data.splits["train"][:6], teacher.tokenizer, "token-classification", 24)
    batch = {k: v for k, v in collate(rows).items() if k not in ("labels", "word_ids")}
    short = {k: v for k, v in collate(rows[:3]).items() if k not in ("labels", "word_ids")}
    with torch.no_grad():
        taught = teacher(**batch)
    first, _ = distill._cached_teacher(teacher, short)  # fills the cache at a shorter width
    again, states = distill._cached_teacher(teacher, batch)  # three of six rows are cached
    assert distill._teacher_rows == 6
    keep = batch["attention_mask"].bool()
    assert torch.allclose(again[keep], taught.logits[keep], atol=1e-5)
    assert first.shape[1] == short["input_ids"].shape[1]
    assert states is not None and states.shape == taught.hidden_states[-1].shape
    assert torch.allclose(states[keep], taught.hidden_states[-1][keep], atol=1e-5)
    assert not states[~keep].any()  # padding positions hold zeros, and the loss skips them


@pytest.mark.parametrize("cache", [True, False])
def test_output_distillation_teaches_a_multiplexed_student_the_teachers_states(
    synthetic, teacher_dir, cache
):
    torch.manual_seed(0)
    student = stack(load(teacher_dir), [Multiplex(n=2)])
    distill = Distill(teacher=str(teacher_dir), layer_map="none", logit_weight=0.0,
                      output_weight=1.0, task_weight=0.0, cache_teacher=cache)  # fmt: skip
    steps, batch = 40, 16  # 640 inputs from a split of 210
    _, record = fit(student, data=synthetic, objective="mux-task", transforms=[distill],
                    train=TrainConfig(steps=steps, batch_size=batch, lr=1e-3, log_every=1),
                    progress=False)  # fmt: skip
    losses = history(record, "distill_output")
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])  # demultiplexed states near the teacher's
    expected_rows = len(synthetic.splits["train"]) if cache else steps * batch
    assert record["transforms"][0]["teacher_rows"] == expected_rows
    assert record["transforms"][0]["weights"]["output"] == 1.0
    assert not student.hf.config.output_hidden_states  # restored when the stage ends


def test_output_distillation_needs_a_demultiplexed_pass_and_a_teacher_of_the_same_width(
    synthetic, teacher_dir
):
    student = stack(load(teacher_dir), [Multiplex(n=2)])
    with pytest.raises(ModelError, match="task objective"):
        fit(student, data=synthetic, objective="retrieval",
            transforms=[Distill(teacher=str(teacher_dir), layer_map="none", output_weight=1.0)],
            train=TrainConfig(steps=1, batch_size=4), progress=False)  # fmt: skip
    torch.manual_seed(0)
    base = load_model("preset:tiny", labels=synthetic.labels)
    config = copy.deepcopy(base.hf.config)
    config.hidden_size, config.intermediate_size = 2 * config.hidden_size, 64
    wide = EffkitModel(AutoModelForSequenceClassification.from_config(config), base.tokenizer,
                       base.task, "test")  # fmt: skip
    with pytest.raises(ModelError, match="wide"):
        fit(wide, data=synthetic,
            transforms=[Distill(teacher=str(teacher_dir), layer_map="none", output_weight=1.0)],
            train=TrainConfig(steps=1, batch_size=4), progress=False)  # fmt: skip
