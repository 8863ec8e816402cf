"""Regression: one real number per input, trained on standardised targets, predicted in the
data's units by every stack and every way out of effkit (saved folder, ONNX, stock folder)."""

from __future__ import annotations

import copy
import csv
import json
import math
import textwrap

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from effkit import DataError, RecipeError, fit, load, load_model, save, stack
from effkit.cli import main
from effkit.data import DataConfig, load_task_data
from effkit.inference import evaluate_examples
from effkit.metrics import regression_metrics
from effkit.recipe import parse_recipe
from effkit.regression import output_layer, standardised_head, target_scale
from effkit.task import Task, metric_names, primary_metric
from effkit.train import TrainConfig
from effkit_cofi import CoFiPrune
from effkit_distill import Distill
from effkit_mux import Multiplex
from effkit_precision import Precision
from effkit_quant import Quantize

TEXTS = [
    "we saw the match today in the city",
    "the house was very old and small",
    "football goal team player in the big city",
    "our friend was at home with people",
]


@pytest.fixture(scope="module")
def data():
    return load_task_data(DataConfig(source="builtin:synthetic-regression", max_length=24),
                          "regression")  # fmt: skip


@pytest.fixture(scope="module")
def trained(data):
    """A tiny model that learned the synthetic score (how many sports words a text holds)."""
    torch.manual_seed(0)
    model = load_model("preset:tiny", task="regression")
    model.max_length = 24
    cfg = TrainConfig(steps=60, batch_size=16, lr=1e-3, eval_every=0, log_every=10)
    model, record = fit(model, data=data, train=cfg, progress=False)
    return model, record


def test_the_task_reports_correlations_and_mse_and_is_ranked_by_spearman():
    assert primary_metric("regression") == "spearman"
    assert metric_names("regression") == ["combined", "mse", "pearson", "spearman"]
    out = regression_metrics([1.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert out["mse"] == pytest.approx(1 / 3) and out["spearman"] == 1.0
    assert Task(type="regression").num_labels == 1
    with pytest.raises(ValueError, match="a regression task has one output"):
        Task(type="regression", labels=["a", "b"])


def test_csv_and_jsonl_targets_load_as_floats_and_bad_ones_are_named(tmp_path):
    rows = [("short text", "1.5"), ("a longer text here", "3.25"), ("x", "-2")] * 10
    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    loaded = load_task_data(DataConfig(source=str(tmp_path / "train.csv")), "regression")
    assert loaded.labels == ["score"]
    assert {e["label"] for e in loaded.splits["train"]} <= {1.5, 3.25, -2.0}
    lines = [json.dumps({"sentence": t, "y": float(v)}) for t, v in rows]
    (tmp_path / "d.jsonl").write_text("\n".join(lines), encoding="utf-8")
    cfg = DataConfig(source=str(tmp_path / "d.jsonl"), text_column="sentence", label_column="y")
    assert len(load_task_data(cfg, "regression", ["y"]).splits["test"]) == 6
    (tmp_path / "bad.csv").write_text("text,label\na,1.0\nb,high\n" * 5, encoding="utf-8")
    with pytest.raises(DataError, match=r"row 1: the target 'high' is not a number"):
        load_task_data(DataConfig(source=str(tmp_path / "bad.csv")), "regression")


def test_standardising_a_trained_head_and_folding_it_back_is_exact():
    torch.manual_seed(0)
    model = load_model("preset:tiny", task="regression").eval()
    ids = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**ids).logits
    # a new head counts as standardised as it is: it starts at the mean of the targets
    with standardised_head(model, [10.0, 20.0, 30.0]):
        assert model.target_scale is not None and model.target_scale.standardised
    with torch.no_grad():
        after_first = model(**ids).logits
    assert torch.allclose(after_first, before * model.target_scale.std + 20.0, atol=1e-5)
    with standardised_head(model, None):  # a trained head: standardised, then folded back
        with torch.no_grad():
            inside = model(**ids).logits
        assert torch.allclose(inside, before, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, after_first, atol=1e-5)
    assert target_scale([2.0, 2.0]).std == 1.0  # a constant column is only centred


def test_a_tiny_model_learns_the_score_and_predicts_in_the_datas_units(trained, data, tmp_path):
    model, record = trained
    losses = [row["loss"] for row in record["train"]["history"]]
    assert losses[-1] < 0.5 * losses[0]  # standardised targets: the loss starts near 1
    test = evaluate_examples(model, data.splits["test"])
    assert test["spearman"] > 0.6, test
    mean = sum(e["label"] for e in data.splits["train"]) / len(data.splits["train"])
    assert output_layer(model).bias.item() == pytest.approx(mean, abs=1.0)
    save(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "effkit.json").read_text())
    assert meta["target"]["mean"] == pytest.approx(model.target_scale.mean)
    back = load(tmp_path / "m")
    assert back.target_scale == model.target_scale
    predictions = back.predict(TEXTS)
    assert set(predictions[0]) == {"score"}
    assert predictions[2]["score"] > predictions[1]["score"] + 1.0  # 4 sports words against 0
    assert evaluate_examples(back, data.splits["test"]) == pytest.approx(test)


def test_multiplexed_pruned_and_distilled_regression_trains_in_the_datas_units(trained, data):
    teacher, _ = trained
    torch.manual_seed(0)
    student = load_model("preset:tiny", task="regression")
    student.max_length = 24
    cfg = TrainConfig(steps=12, batch_size=16, lr=1e-3, eval_every=6)
    mux, record = fit(student, data=data, transforms=[Multiplex(n=2)], train=cfg, progress=False)
    assert math.isfinite(record["validation"]["spearman"])

    def resolve(ref: str):
        assert ref == "teacher"
        return copy.deepcopy(teacher)

    pruned, record = fit(
        mux,
        data=data,
        transforms=[CoFiPrune(sparsity=0.3, hidden=False),
                    Distill(teacher="teacher", layer_map="none", logit_weight=1.0)],
        train=TrainConfig(steps=6, batch_size=16, lr=1e-3),
        resolve_model=resolve,
        progress=False,
    )  # fmt: skip
    last = record["train"]["history"][-1]
    assert math.isfinite(last["distill_logits"]) and last["distill_logits"] >= 0.0
    scores = evaluate_examples(pruned, data.splits["validation"])
    assert math.isfinite(scores["mse"])
    mean = pruned.target_scale.mean
    values = [p["score"] for p in pruned.predict(TEXTS * 2)]
    assert abs(sum(values) / len(values) - mean) < 3 * pruned.target_scale.std


@pytest.mark.parametrize("transform", [Quantize(), Precision(dtype="bf16")], ids=["int8", "bf16"])
def test_int8_and_half_precision_keep_the_units(trained, transform):
    model, _ = trained
    reference = [p["score"] for p in model.predict(TEXTS)]
    small = stack(copy.deepcopy(model), [transform])
    got = [p["score"] for p in small.predict(TEXTS)]
    assert got == pytest.approx(reference, abs=0.25)


def test_onnx_and_the_stock_folder_predict_the_same_numbers(trained, tmp_path):
    from effkit.export import OnnxModel, export_model

    model, _ = trained
    save(model, tmp_path / "m")
    report = export_model(tmp_path / "m", format="onnx", batch_size=3, seq_len=12)
    assert report["check"]["max_abs_diff"] <= report["check"]["tolerance"]
    onnx_scores = [p["score"] for p in OnnxModel(tmp_path / "m").predict(TEXTS)]
    assert onnx_scores == pytest.approx([p["score"] for p in model.predict(TEXTS)], abs=1e-4)
    export_model(tmp_path / "m", tmp_path / "hf", format="hf")
    stock = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    assert stock.config.problem_type == "regression" and stock.config.num_labels == 1
    ids = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.eval()(**ids).logits
        assert torch.allclose(stock(**ids).logits, expected, atol=1e-5)


def test_predict_prints_the_score(trained, tmp_path, capsys):
    model, _ = trained
    save(model, tmp_path / "m")
    (tmp_path / "in.txt").write_text("goal goal team\nthe house\n", encoding="utf-8")
    main(["predict", str(tmp_path / "m"), "--input", str(tmp_path / "in.txt")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(line) for line in lines] == [{"text", "score"}] * 2


RECIPE = textwrap.dedent(
    """\
    name: reg
    model: {source: preset:tiny}
    task: {type: regression}
    data: {source: builtin:synthetic-regression, max_length: 24}
    stages:
      - name: finetune
        train: {steps: 4, batch_size: 8}
    benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1, threads: 1}
    """
)


def test_recipe_fields_are_checked_for_the_task():
    with pytest.raises(RecipeError, match="tag_scheme applies to token-classification"):
        parse_recipe(RECIPE, overrides=["task.tag_scheme=bio"])
    recipe = parse_recipe(RECIPE, overrides=["stages.finetune.objective={name: task, "
                                             "regression_loss: huber}"])  # fmt: skip
    assert recipe.stages[0].build_objective().regression_loss == "huber"


def test_search_aims_at_spearman_and_refuses_mse(tmp_path):
    from effkit.pareto.base import check, goal_metric
    from effkit.pareto.spec import load_spec

    (tmp_path / "base.yaml").write_text(RECIPE, encoding="utf-8")
    spec = textwrap.dedent(
        """\
        name: reg-search
        recipe: base.yaml
        space:
          steps: {field: stages.finetune.train.steps, choices: [2, 4]}
        target: TARGET
        """
    )
    (tmp_path / "spec.yaml").write_text(spec.replace("TARGET", "spearman >= 0.8"))
    base = check(load_spec(tmp_path / "spec.yaml"))
    assert goal_metric(load_spec(tmp_path / "spec.yaml"), base) == "spearman"
    (tmp_path / "spec.yaml").write_text(spec.replace("TARGET", "mse >= 0.1"))
    with pytest.raises(RecipeError, match="'mse' is lower-is-better"):
        check(load_spec(tmp_path / "spec.yaml"))
    (tmp_path / "spec.yaml").write_text(spec.replace("TARGET", "accuracy >= 0.1"))
    with pytest.raises(RecipeError, match="regression reports no metric 'accuracy'"):
        check(load_spec(tmp_path / "spec.yaml"))
