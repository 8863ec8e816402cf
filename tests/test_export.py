"""ONNX export: plain, pruned and multiplexed graphs match PyTorch; bad input is one clear error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from effkit import EffkitError, EffkitModel, load_model, save
from effkit.export import TOLERANCE, check_onnx, export_onnx
from effkit.runner import stack
from effkit_mux import Multiplex
from effkit_quant import Quantize
from effkit_torchprune import OneShotPrune

pytest.importorskip("onnxscript", reason="ONNX export needs effkit[onnx]")
ort = pytest.importorskip("onnxruntime", reason="the check needs effkit[onnx]")


def tiny(*transforms) -> EffkitModel:
    torch.manual_seed(0)
    return stack(load_model("preset:tiny", num_labels=3), list(transforms)).eval()


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
        (str(tmp_path / "int8"),): "'quantize' transform cannot be exported to ONNX",
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


def test_check_says_when_onnxruntime_is_missing(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name)
    )
    report = check_onnx(tiny(), tmp_path / "never-written.onnx")
    assert "onnxruntime is not installed" in report["skipped"]
