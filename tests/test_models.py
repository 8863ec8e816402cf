"""Model sources and effkit's save format: a saved model loads back into the same function."""

from __future__ import annotations

import json

import pytest
import torch

from effkit.errors import ModelError
from effkit.models import PRESETS, load, load_model, save
from effkit.runner import stack
from effkit_layers import KeepLayers


def _inputs(model, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, model.vocab_size, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_presets_have_the_paper_sizes():
    assert PRESETS["small"]["num_hidden_layers"] == 4 and PRESETS["small"]["hidden_size"] == 512
    assert PRESETS["base"]["hidden_size"] == 768 and PRESETS["large"]["num_hidden_layers"] == 24
    model = load_model("preset:tiny", num_labels=3)
    assert model.config.hidden_size == 64 and model.task.labels == ["0", "1", "2"]


def test_builtin_minilm_loads_its_real_weights():
    model = load_model("builtin:minilm-l6", labels=["a", "b"])
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    ids = model.tokenizer("effkit makes encoders faster")["input_ids"]
    assert model.tokenizer.unk_token_id not in ids  # a real vocabulary, not all [UNK]


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=["neg", "pos"]).eval()
    model.max_length = 40
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    inputs = _inputs(model)
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, back(**inputs).logits)
    assert back.task.labels == ["neg", "pos"] and back.max_length == 40
    meta = json.loads((tmp_path / "m" / "effkit.json").read_text())
    assert meta["format_version"] == 2 and meta["task"]["type"] == "sequence-classification"


def test_a_transformed_model_loads_back_at_its_new_size(tmp_path):
    torch.manual_seed(0)
    model = stack(load_model("preset:tiny", num_labels=2).eval(), [KeepLayers(layers=[1])])
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    assert back.config.num_hidden_layers == 1
    assert [t.name for t in back.transforms] == ["keep-layers"]
    inputs = _inputs(model)
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, back(**inputs).logits)


def test_token_classification_head(tmp_path):
    model = load_model("preset:tiny", task="token-classification", labels=["O", "B-x", "I-x"])
    logits = model(**_inputs(model)).logits
    assert logits.shape == (3, 12, 3)


def test_local_transformers_folder_is_a_source(tmp_path):
    model = load_model("preset:tiny", num_labels=2)
    model.hf.save_pretrained(tmp_path / "hf")
    model.tokenizer.save_pretrained(tmp_path / "hf")
    again = load_model(str(tmp_path / "hf"), labels=["x", "y"])
    assert again.config.hidden_size == 64 and again.task.labels == ["x", "y"]


def test_saved_model_as_source_gets_a_new_head_for_new_labels(tmp_path):
    model = load_model("preset:tiny", num_labels=2)
    save(model, tmp_path / "m")
    again = load_model(str(tmp_path / "m"), labels=["a", "b", "c"])
    assert again.task.labels == ["a", "b", "c"]
    assert again.hf.classifier.out_features == 3
    assert torch.equal(
        again.hf.bert.embeddings.word_embeddings.weight,
        model.hf.bert.embeddings.word_embeddings.weight,
    )


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelError, match="not an effkit model folder"):
        load(tmp_path / "plain")
    with pytest.raises(ModelError, match="could not load"):
        load_model(str(tmp_path / "plain"), num_labels=2)
    with pytest.raises(ModelError, match="unknown task"):
        load_model("preset:tiny", task="regresion", num_labels=1)


def test_newer_format_is_refused(tmp_path):
    save(load_model("preset:tiny", num_labels=2), tmp_path / "m")
    meta_path = tmp_path / "m" / "effkit.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="upgrade effkit"):
        load(tmp_path / "m")


def test_weights_that_do_not_fit_are_an_error(tmp_path):
    save(load_model("preset:tiny", num_labels=2), tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config["source_config"]["intermediate_size"] = 96
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not fit"):
        load(tmp_path / "m")


def test_predict_returns_one_result_per_text_in_order():
    model = load_model("preset:tiny", labels=["a", "b", "c"])
    texts = ["one", "two words", "three words here", "four"]
    results = model.predict(texts, batch_size=3)
    assert len(results) == 4
    assert all(r["label"] in {"a", "b", "c"} for r in results)
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in results)
    # order is kept although inference sorts by length
    single = [model.predict([t])[0]["scores"] for t in texts]
    for a, b in zip(single, [r["scores"] for r in results], strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_token_predict_gives_one_tag_per_word():
    model = load_model("preset:tiny", task="token-classification", labels=["O", "B-x", "I-x"])
    (result,) = model.predict(["New York is unbelievably big"])
    assert result["tokens"] == ["New", "York", "is", "unbelievably", "big"]
    assert len(result["tags"]) == 5
