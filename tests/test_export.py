"""ONNX export: plain, pruned, multiplexed and int8 graphs match PyTorch; OnnxModel predicts
on lists of texts as the PyTorch model does; bad input is one clear error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from effkit import EffkitError, EffkitModel, ModelError, load, load_model, save
from effkit.data import encode_texts
from effkit.export import INT8_TOLERANCE, TOLERANCE, OnnxModel, check_onnx, export_onnx
from effkit.inference import batched_logits
from effkit.runner import stack
from effkit_mux import Multiplex
from effkit_quant import Int8Linear, Quantize
from effkit_torchprune import OneShotPrune

pytest.importorskip("onnxscript", reason="ONNX export needs effkit[onnx]")
ort = pytest.importorskip("onnxruntime", reason="the check needs effkit[onnx]")


TEXTS = [
    "Shares rose after the merger",
    "a much longer sentence about markets, shares and the price of oil rising again",
    "hi",
    "The striker scored twice in the second half",
    "one",
    "two words",
    "New phones were shown at the fair in Berlin this week",
]  # 7 texts of different lengths: not a multiple of 2 or 3


def tiny(*transforms, task: str = "sequence-classification") -> EffkitModel:
    torch.manual_seed(0)
    return stack(load_model("preset:tiny", task=task, num_labels=3), list(transforms)).eval()


@pytest.fixture
def cli(capsys):
    """Run ``effkit ARGS`` in this process (no interpreter start-up); returns (code, out, err).

    The CLI configures logging for itself; the root logger is put back afterwards.
    """
    from effkit.cli import main

    handlers, level = logging.root.handlers[:], logging.root.level

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield invoke
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def test_plain_model_exports_with_dynamic_axes_and_matches_pytorch(tmp_path):
    model = tiny()
    report = export_onnx(model, tmp_path / "plain.onnx", batch_size=5, seq_len=12)
    assert report["inputs"] == {
        name: ["batch", "seq"] for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    assert report["outputs"] == {"logits": ["batch", 3]}
    check = report["check"]
    assert check["ok"] and check["max_abs_diff"] <= TOLERANCE
    assert check["shapes"] == [[5, 12], [1, 7]]  # two shapes: the axes really are dynamic

    # the file runs on its own: one row of an ONNX Runtime batch is PyTorch's row
    session = ort.InferenceSession(str(tmp_path / "plain.onnx"))
    ids = torch.randint(1000, 5000, (3, 9))
    feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids)}  # fmt: skip
    (got,) = session.run(None, {k: v.numpy() for k, v in feed.items()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(**feed).logits, atol=TOLERANCE)


@pytest.mark.parametrize("mix_after", [0, 1])
def test_multiplexed_model_takes_n_inputs_and_returns_n_outputs(tmp_path, mix_after):
    model = tiny(Multiplex(n=2, mux="gaussian", demux="rsa", mix_after=mix_after))
    report = export_onnx(model, tmp_path / "mux.onnx", batch_size=6, seq_len=10)
    assert report["group_size"] == 2
    assert report["inputs"]["input_ids"] == ["groups", 2, "seq"]
    assert report["outputs"] == {"logits": ["groups", 2, 3]}
    assert report["check"]["ok"] and report["check"]["shapes"] == [[3, 2, 10], [1, 2, 6]]


def test_pruned_model_exports_through_the_cli_with_a_benchmark(cli, tmp_path):
    save(tiny(OneShotPrune(ratio=0.5)), tmp_path / "pruned")
    code, out, err = cli("export", str(tmp_path / "pruned"), "--format", "onnx", "--batch-size",
                         "4", "--seq-len", "16", "--bench", "--trials", "1", "--batches", "1",
                         "--json", str(tmp_path / "report.json"))  # fmt: skip
    assert code == 0, err
    assert "check: max |onnxruntime - pytorch|" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert Path(report["path"]) == tmp_path / "pruned" / "model.onnx"
    assert report["check"]["max_abs_diff"] <= TOLERANCE
    timings = report["bench"]["timings"]
    assert timings["onnxruntime"]["samples_per_s"] > 0 and timings["pytorch"]["ratio"] == 1.0
    assert report["bench"]["environment"]["onnxruntime"] == ort.__version__


def test_bad_input_is_one_clear_error_with_exit_code_2(cli, tmp_path):
    save(tiny(Quantize()), tmp_path / "int8")
    cases = {
        (str(tmp_path / "int8"), "--format", "tflite"): "unknown export format 'tflite'",
        (str(tmp_path / "missing"),): "does not exist",
    }
    for args, message in cases.items():
        code, _, err = cli("export", *args)
        assert code == 2 and message in " ".join(err.split()), err
        assert "Traceback" not in err
    assert not (tmp_path / "int8" / "model.onnx").exists()
    with pytest.raises(EffkitError, match="give the output path"):
        export_onnx(tiny())
    with pytest.raises(ModelError, match="does not exist"):
        OnnxModel(tmp_path / "int8")  # a model folder without model.onnx


def test_check_says_when_onnxruntime_is_missing(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    report = check_onnx(tiny(), tmp_path / "never-written.onnx")
    assert "onnxruntime is not installed" in report["skipped"]


@pytest.mark.parametrize("granularity", ["per-channel", "per-tensor"])
def test_int8_model_exports_as_an_int8_graph_close_to_the_pytorch_int8_model(
    cli, tmp_path, granularity
):
    save(tiny(Quantize(granularity=granularity)), tmp_path / "int8")
    code, out, err = cli("export", str(tmp_path / "int8"), "--batch-size", "4", "--seq-len",
                         "12", "--json", str(tmp_path / "report.json"))  # fmt: skip
    assert code == 0, err
    scheme = "dynamic-int8" if granularity == "per-channel" else "dynamic-int8-per-tensor"
    assert f"int8 ({scheme})" in out and "predictions agree" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quantized"] == scheme and report["check"]["quantized"] == scheme
    check = report["check"]
    # the tolerance is int8's (a multiple of torch's own int8 error), not float32's 1e-4
    assert check["ok"] and 0 < check["int8_error"] < 0.01  # int8 does round: about 1e-3 here
    assert check["tolerance"] == pytest.approx(INT8_TOLERANCE * check["int8_error"] + TOLERANCE)
    assert check["max_abs_diff"] <= check["tolerance"] and check["max_abs_diff"] < 0.01
    assert check["argmax_agreement"] >= 0.9

    # the file runs int8 MatMuls; embeddings stay float32, as in the PyTorch int8 model
    import onnx

    proto = onnx.load(report["path"])
    ops = {node.op_type for node in proto.graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops and "DequantizeLinear" not in ops
    assert not (tmp_path / "int8" / "model.float.onnx").exists()  # the float graph is gone
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    assert meta["effkit.quantized"] == scheme and meta["effkit.group_size"] == ""

    # ONNX Runtime on its own against effkit.load of the folder: int8 against int8
    model = load(tmp_path / "int8")
    session = ort.InferenceSession(report["path"])
    ids = torch.randint(1000, 5000, (3, 9))
    feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids)}  # fmt: skip
    (got,) = session.run(None, {k: v.numpy() for k, v in feed.items()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(**feed).logits, atol=0.01)


def test_int8_export_leaves_the_model_int8(tmp_path):
    model = tiny(Quantize())
    report = export_onnx(model, tmp_path / "int8.onnx", batch_size=2, seq_len=8, check=False)
    assert report["quantized"] == "dynamic-int8"
    assert any(isinstance(m, Int8Linear) for m in model.modules())  # export traced a copy


def pytorch_logits(folder: Path, texts: list[str], batch_size: int) -> list[torch.Tensor]:
    """What ``effkit.load(folder).predict(texts)`` computes its predictions from."""
    model = load(folder)
    features = encode_texts(texts, model.tokenizer, model.task.type, model.max_length)
    return batched_logits(model, features, batch_size=batch_size)


@pytest.mark.parametrize("task", ["sequence-classification", "token-classification"])
def test_onnx_model_predicts_a_list_of_texts_as_the_pytorch_model(tmp_path, task):
    save(tiny(task=task), tmp_path / "plain")
    export_onnx(tmp_path / "plain", batch_size=4, seq_len=12)
    onnx_model = OnnxModel(tmp_path / "plain")  # the folder's model.onnx and tokenizer
    assert onnx_model.group_size is None and onnx_model.task.type == task
    got = onnx_model.logits(TEXTS, batch_size=3)
    for mine, theirs in zip(got, pytorch_logits(tmp_path / "plain", TEXTS, 3), strict=True):
        assert mine.shape == theirs.shape and torch.allclose(mine, theirs, atol=TOLERANCE)
    predictions, expected = onnx_model.predict(TEXTS), load(tmp_path / "plain").predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    if task == "token-classification":
        assert predictions == expected
    else:
        assert [p["label"] for p in predictions] == [p["label"] for p in expected]
        for prediction, reference in zip(predictions, expected, strict=True):
            assert prediction["scores"] == pytest.approx(reference["scores"], abs=TOLERANCE)


def test_onnx_model_groups_a_multiplexed_graphs_inputs_in_order(tmp_path):
    save(tiny(Multiplex(n=3, mux="gaussian", demux="rsa")), tmp_path / "mux")
    export_onnx(tmp_path / "mux", tmp_path / "elsewhere" / "mux.onnx", batch_size=3, seq_len=8)
    # a file outside the folder finds the tokenizer through the folder the export recorded
    onnx_model = OnnxModel(tmp_path / "elsewhere" / "mux.onnx")
    assert onnx_model.group_size == 3
    reference = load(tmp_path / "mux")
    # 7 inputs in one batch, or in batches of 4: each batch's last group is filled with copies
    # of its members, as PyTorch fills it, and their outputs are dropped
    for batch_size in (32, 4):
        got = onnx_model.logits(TEXTS, batch_size=batch_size)
        expected = pytorch_logits(tmp_path / "mux", TEXTS, batch_size)
        assert len(got) == len(TEXTS)
        for mine, theirs in zip(got, expected, strict=True):
            assert torch.allclose(mine, theirs, atol=TOLERANCE)
        predictions = onnx_model.predict(TEXTS, batch_size=batch_size)
        labels = [p["label"] for p in reference.predict(TEXTS, batch_size=batch_size)]
        assert [p["label"] for p in predictions] == labels
