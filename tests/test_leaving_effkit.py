"""Models that leave effkit: transformers Auto classes and pipeline, stock folders, model cards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    pipeline,
)

from effkit import EffkitModel, ModelError, load, load_model, save
from effkit.export.hf import export_hf
from effkit.runner import stack
from effkit.transform import StageContext
from effkit_cofi import CoFiPrune
from effkit_layers import KeepLayers
from effkit_mux import Multiplex
from effkit_precision import Precision
from effkit_quant import Quantize
from effkit_torchprune import OneShotPrune

TEXTS = ["the match ended in a draw", "shares fell sharply", "a new phone", "x", "vote today"]


def tiny(*transforms, task: str = "sequence-classification") -> EffkitModel:
    torch.manual_seed(0)
    model = load_model("preset:tiny", task=task, labels=["neg", "pos", "mid"])
    return stack(model, list(transforms)).eval()


def cofi_pruned() -> EffkitModel:
    """A tiny model CoFi pruned to different head counts and FFN widths per layer."""
    model = tiny()
    transform = CoFiPrune(mha_layers=False, ffn_layers=False, hidden=False)
    ctx = StageContext(stage="test", tokenizer=None)
    model = transform.apply(model, ctx)
    with torch.no_grad():
        for param in model.cofi_masks.log_alphas():
            param.fill_(4.6)
        model.cofi_masks.head_log_alpha["0"][torch.tensor([1, 3])] = -20.0
        model.cofi_masks.ffn_dim_log_alpha["1"][:80] = -20.0
    model = transform.finalize(model.eval(), ctx)
    model.transforms.append(transform)
    return model


STACKS = {
    "plain": lambda: tiny(),
    "cofi": cofi_pruned,
    "oneshot": lambda: tiny(OneShotPrune(ratio=0.5)),
    "layers": lambda: tiny(KeepLayers(layers=[1])),
    "mux": lambda: tiny(Multiplex(n=2)),
    "mux-contextual": lambda: tiny(Multiplex(n=3, mux="contextual")),
    "bf16": lambda: tiny(Precision(dtype="bf16")),
    "mux-bf16": lambda: tiny(Multiplex(n=2), Precision(dtype="bf16")),
    "int8": lambda: tiny(Quantize()),
}


def _inputs(model: EffkitModel) -> dict[str, torch.Tensor]:
    batch = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.mark.parametrize("name", list(STACKS))
def test_auto_class_and_pipeline_give_effkit_load_logits(tmp_path, name):
    save(STACKS[name](), tmp_path / "m")
    reference = load(tmp_path / "m")
    auto = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "m"))
    assert type(auto).__name__ == "EffkitForSequenceClassification"
    inputs = _inputs(reference)
    with torch.inference_mode():
        expected = reference(**inputs).logits.float()
        got = auto(**inputs).logits.float()
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)

    classify = pipeline("text-classification", model=str(tmp_path / "m"), top_k=None,
                        batch_size=len(TEXTS))  # fmt: skip
    labels = reference.task.labels
    probabilities = expected.softmax(-1)  # one batch, in order: the inputs share the same passes
    for row, scores in zip(probabilities, classify(TEXTS), strict=True):
        for entry in scores:
            assert entry["score"] == pytest.approx(
                float(row[labels.index(entry["label"])]), abs=1e-5
            )


def test_token_models_load_through_the_token_auto_class_and_pipeline(tmp_path):
    save(tiny(Multiplex(n=2), task="token-classification"), tmp_path / "m")
    reference = load(tmp_path / "m")
    auto = AutoModelForTokenClassification.from_pretrained(str(tmp_path / "m"))
    inputs = _inputs(reference)
    with torch.inference_mode():
        assert torch.allclose(auto(**inputs).logits, reference(**inputs).logits, atol=1e-5)
    tagger = pipeline("token-classification", model=str(tmp_path / "m"), batch_size=4)
    assert len(tagger(TEXTS)) == len(TEXTS)


def test_plain_transformers_refuses_an_effkit_folder_loudly(tmp_path):
    save(tiny(), tmp_path / "m")
    script = (
        "import sys\n"
        "from transformers import AutoModelForSequenceClassification\n"
        "from transformers import BertForSequenceClassification\n"
        "for cls in (AutoModelForSequenceClassification, BertForSequenceClassification):\n"
        "    try:\n"
        "        cls.from_pretrained(sys.argv[1])\n"
        "    except (ValueError, OSError) as exc:\n"
        "        print(type(exc).__name__, str(exc).splitlines()[0])\n"
        "    else:\n"
        "        print('LOADED')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert "LOADED" not in done.stdout, done.stdout
    assert "model type `effkit`" in lines[0]
    assert "effkit.safetensors" not in lines[1] and "no file named model.safetensors" in lines[1]


def test_save_pretrained_of_the_wrapper_writes_an_effkit_folder(tmp_path):
    save(tiny(KeepLayers(layers=[0])), tmp_path / "m")
    auto = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "m"))
    auto.save_pretrained(tmp_path / "again")
    assert [t.registered_name() for t in load(tmp_path / "again").transforms] == ["keep-layers"]


@pytest.mark.parametrize("name", ["plain", "layers", "bf16"])
def test_stock_export_writes_a_folder_plain_transformers_loads(tmp_path, name):
    model = STACKS[name]()
    save(model, tmp_path / "m")
    report = export_hf(tmp_path / "m")
    folder = Path(report["path"])
    assert report["class"] == "BertForSequenceClassification" and report["check"]["ok"]
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"
    stock = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    assert type(stock).__name__ == "BertForSequenceClassification"
    inputs = _inputs(model)
    with torch.inference_mode():
        assert torch.equal(stock(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("mux", "MuxAdapter"),
        ("cofi", "FFN width differs between layers"),
        ("oneshot", "keeps 2 heads"),
        ("int8", "Int8Linear"),
    ],
)
def test_stock_export_says_why_a_stack_does_not_fit(tmp_path, name, reason):
    save(STACKS[name](), tmp_path / "m")
    with pytest.raises(ModelError, match=reason):
        export_hf(tmp_path / "m")
    assert not (tmp_path / "m-hf").exists()


def test_every_saved_folder_has_a_model_card(tmp_path):
    save(tiny(Multiplex(n=2), Precision()), tmp_path / "m",
         card={"metrics": {"test": {"accuracy": 0.91}}, "name": "mux2-bf16"})  # fmt: skip
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: effkit\npipeline_tag: text-classification")
    assert "# mux2-bf16" in card and "| 1 | `multiplex` |" in card and "dtype=bf16" in card
    assert "| test | 0.9100 |" in card
    assert 'AutoModelForSequenceClassification.from_pretrained("FOLDER")' in card
    assert "batch_size" in card  # a multiplexed model's pipeline needs N inputs per pass
