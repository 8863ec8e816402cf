"""Half precision: the precision transform on every stack, saved, loaded, in recipes, refused."""

from __future__ import annotations

import copy
import logging
import textwrap

import pytest
import torch

from effkit import EffkitModel, ModelError, RunError, load, load_model, save
from effkit.recipe import parse_recipe
from effkit.runner import run, stack
from effkit_distill import Distill
from effkit_layers import KeepLayers
from effkit_mux import Multiplex
from effkit_precision import Precision, native_half
from effkit_quant import Quantize
from effkit_torchprune import OneShotPrune


def tiny(*transforms) -> EffkitModel:
    torch.manual_seed(0)
    return stack(load_model("preset:tiny", num_labels=3), list(transforms)).eval()


def inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 5000, (6, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


STACKS = {
    "plain": [],
    "mux": [Multiplex(n=2)],
    "mux-contextual": [Multiplex(n=3, mux="contextual")],
    "oneshot": [OneShotPrune(ratio=0.5)],
    "layers": [KeepLayers(layers=[1])],
}


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("name", list(STACKS))
def test_precision_casts_every_stack_close_to_float32_and_round_trips(tmp_path, name, dtype):
    model = tiny(*copy.deepcopy(STACKS[name]))
    with torch.inference_mode():
        reference = model(**inputs()).logits
    half = stack(model, [Precision(dtype=dtype)])
    wanted = torch.bfloat16 if dtype == "bf16" else torch.float16
    assert {p.dtype for p in half.parameters()} == {wanted}
    with torch.inference_mode():
        logits = half(**inputs()).logits
    assert logits.dtype == wanted
    assert torch.allclose(logits.float(), reference, atol=0.05)  # random logits near 0

    save(half, tmp_path / "m")
    weights = (tmp_path / "m" / "effkit.safetensors").stat().st_size
    back = load(tmp_path / "m")
    assert [t.registered_name() for t in back.transforms][-1] == "precision"
    with torch.inference_mode():
        assert torch.equal(back(**inputs()).logits, logits)
    save(tiny(*copy.deepcopy(STACKS[name])), tmp_path / "f32")
    assert weights < 0.6 * (tmp_path / "f32" / "effkit.safetensors").stat().st_size


def test_precision_follows_cofi_and_distillation_in_a_recipe(tmp_path):
    recipe = parse_recipe(
        textwrap.dedent(
            """
            name: half
            model: {source: preset:tiny}
            data: {source: builtin:synthetic, max_length: 16}
            stages:
              - name: finetune
                train: {steps: 4, batch_size: 8, lr: 1.0e-3, checkpoint_every: 0}
              - name: prune
                transforms:
                  - {name: cofi, sparsity: 0.3, warmup_ratio: 0.5}
                  - {name: distill, teacher: finetune, logit_weight: 0.5}
                train: {steps: 4, batch_size: 8, lr: 1.0e-3, checkpoint_every: 0}
              - name: half
                transforms: [{name: precision, dtype: bf16}]
                train: {steps: 0}
            evaluate: {splits: [test]}
            benchmark: {batch_size: 4, seq_len: 16, warmup: 0, trials: 1, batches: 1,
                        device: cpu}
            """
        )
    )
    result = run(recipe, tmp_path / "run", progress=False)
    assert [t.registered_name() for t in result.model.transforms] == ["cofi", "precision"]
    assert next(result.model.parameters()).dtype == torch.bfloat16
    assert 0.0 <= result.metrics["test"]["accuracy"] <= 1.0
    assert result.bench is not None and result.bench["timings"]["final"]["samples_per_s"] > 0
    record = result.stages["half"]["transforms"][0]
    assert record["dtype"] == "bf16" and record["parameters_cast"] > 0
    card = (tmp_path / "run" / "stages" / "half" / "model" / "README.md").read_text()
    assert "| test |" in card and "samples/s" in card  # the card has the run's figures


def test_precision_inside_a_training_stage_trains_in_float32_first(tmp_path):
    model = tiny()
    from effkit import fit
    from effkit.data import load_task_data
    from effkit.data.config import DataConfig
    from effkit.train import TrainConfig

    data = load_task_data(DataConfig(source="builtin:synthetic", max_length=16),
                          "sequence-classification", None)  # fmt: skip
    model = load_model("preset:tiny", labels=data.labels)
    trained, _ = fit(model, data=data, transforms=[Precision()], progress=False,
                     train=TrainConfig(steps=2, batch_size=4, checkpoint_every=0))  # fmt: skip
    assert next(trained.parameters()).dtype == torch.bfloat16
    with pytest.raises(RunError, match=r"bfloat16.*training runs in float32"):
        fit(trained, data=data, progress=False,
            train=TrainConfig(steps=2, batch_size=4, checkpoint_every=0))  # fmt: skip


def test_precision_refuses_int8_and_a_second_cast():
    with pytest.raises(ModelError, match="int8 weights"):
        stack(tiny(Quantize()), [Precision()])
    with pytest.raises(ModelError, match="already in bfloat16"):
        stack(tiny(Precision()), [Precision(dtype="fp16")])


def test_emulated_half_precision_says_so_once(monkeypatch, caplog):
    import effkit_precision

    monkeypatch.setattr(effkit_precision, "native_half", lambda dtype, device="cpu": False)
    with caplog.at_level(logging.WARNING, logger="effkit_precision"):
        stack(tiny(), [Precision(dtype="fp16")])
    lines = [r.getMessage() for r in caplog.records if r.name == "effkit_precision"]
    assert len(lines) == 1 and "no native fp16 units" in lines[0] and "slower" in lines[0]


def test_native_half_is_a_yes_no_or_unknown():
    assert native_half("bf16", "cpu") in (True, False, None)
    assert native_half("fp16", "meta") is None


def test_a_half_precision_teacher_distills_a_float32_student(tmp_path):
    from effkit import fit
    from effkit.data import load_task_data
    from effkit.data.config import DataConfig
    from effkit.train import TrainConfig

    data = load_task_data(DataConfig(source="builtin:synthetic", max_length=16),
                          "sequence-classification", None)  # fmt: skip
    torch.manual_seed(0)
    teacher = stack(load_model("preset:tiny", labels=data.labels), [Precision()])
    save(teacher, tmp_path / "teacher")
    student = stack(load_model("preset:tiny", labels=data.labels), [KeepLayers(layers=[0])])
    distill = Distill(teacher=str(tmp_path / "teacher"), logit_weight=1.0, layer_weight=1.0)
    trained, record = fit(student, data=data, transforms=[distill], progress=False,
                          train=TrainConfig(steps=2, batch_size=4, checkpoint_every=0))  # fmt: skip
    assert next(trained.parameters()).dtype == torch.float32
    last = record["train"]["history"][-1]
    assert any("distill" in key for key in last), last
    assert all(torch.isfinite(torch.tensor(float(v))) for v in last.values())


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_exports_to_onnx(tmp_path, dtype):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from effkit.export import export_onnx

    save(tiny(Multiplex(n=2), Precision(dtype=dtype)), tmp_path / "m")
    report = export_onnx(tmp_path / "m", batch_size=4, seq_len=16)
    assert report["group_size"] == 2 and (tmp_path / "m" / "model.onnx").is_file()
    if dtype == "fp16":  # ONNX Runtime's CPU provider runs float16 graphs
        assert report["check"]["ok"] and report["check"]["max_abs_diff"] <= 1e-4
    else:  # ... and has no bfloat16 kernels: said, not a traceback
        assert "bfloat16" in report["check"]["skipped"]
        assert "onnx.checker" in report["check"]["skipped"]
