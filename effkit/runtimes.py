"""The starting model in the runtimes a user would pick for it anyway: the baselines that count.

A compressed model is worth deploying when it beats what its user would run without effkit,
not only float32 eager PyTorch. :func:`runtimes` gives the baseline model as each of these,
ready to be timed beside the compressed one, interleaved, on the same inputs:

==============  ================================================================================
name            what runs
==============  ================================================================================
``fp32``        the model as it is (float32 eager PyTorch)
``bf16``        a copy cast to bfloat16 (where the CPU has AVX512-BF16/AMX or the GPU is Ampere+)
``fp16``        a copy cast to float16 (on a GPU, or a CPU with AVX512-FP16/AMX-FP16)
``int8``        torch's own dynamic int8 quantization of every ``nn.Linear`` (CPU)
``ort-fp32``    the model exported to ONNX and run by ONNX Runtime (when installed)
``ort-int8``    that graph quantized by ONNX Runtime's ``quantize_dynamic`` (when installed)
==============  ================================================================================

A runtime that does not apply here (bf16 on a CPU without the units, int8 on a GPU, ONNX
Runtime not installed, a model that cannot be exported) is skipped, with the reason recorded,
so that the comparison says what it left out. :func:`effkit.bench.compare` times them beside the
other models (``baseline: best-runtime`` in a recipe) and reports every model against the
fastest of them as well as against float32.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from effkit.bench.config import RUNTIMES, BenchConfig
from effkit.errors import EffkitError
from effkit.hardware import native_half

if TYPE_CHECKING:
    from effkit.models import EffkitModel

log = logging.getLogger(__name__)

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _half(model: EffkitModel, name: str, device: torch.device) -> Callable[..., Any] | str:
    if native_half(name, device) is not True:
        return f"this {device.type} has no native {name} units (it would run emulated)"
    if any(not p.is_floating_point() for p in model.parameters()):
        return "the model holds integer weights"
    return copy.deepcopy(model).to(HALF[name]).eval()


def _torch_int8(model: EffkitModel, device: torch.device) -> Callable[..., Any] | str:
    if device.type != "cpu":
        return "torch's int8 kernels run on the CPU only"
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch deprecates its quantized tensors, not yet removed
        warnings.simplefilter("ignore")
        quantized: nn.Module = quantize_dynamic(
            copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8
        )
    return quantized


def _ort(
    model: EffkitModel, name: str, folder: Path, device: torch.device
) -> Callable[..., Any] | str:
    if device.type != "cpu":
        return "timed on the CPU only (ONNX Runtime's CPU provider)"
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnxruntime is not installed (pip install 'effkit[onnx]')"
    from effkit.export.graph import export_graph
    from effkit.export.onnx import quantize_onnx, write_onnx
    from effkit.export.runtime import onnx_runner, onnx_session

    graph = export_graph(model)
    plain = folder / "baseline.onnx"
    try:
        if not plain.exists():
            write_onnx(model, graph, plain)
        path = plain
        if name == "ort-int8":
            path = folder / "baseline.int8.onnx"
            quantize_onnx(plain, path, "dynamic-int8")
        return onnx_runner(onnx_session(path), graph.group_size)
    except EffkitError as exc:  # an export the model refuses, or a runtime without the kernels
        return exc.message


def baseline_runtimes(
    model: EffkitModel,
    device: torch.device,
    names: Iterable[str] = RUNTIMES,
    *,
    work_dir: Path | None = None,
) -> tuple[dict[str, Callable[..., Any]], dict[str, str]]:
    """The model as each runtime of ``names`` (see the module docstring), and why any was skipped.

    Returns ``(callables, skipped)``: callables take the model's keyword inputs; ``skipped``
    maps a runtime's name to the reason it is not among them. ONNX files go to ``work_dir``
    (by default a temporary folder, removed once ONNX Runtime has read them).
    """
    unknown = [name for name in names if name not in RUNTIMES]
    if unknown:
        raise EffkitError(f"unknown runtime(s) {unknown}; known: {', '.join(RUNTIMES)}",
                          where="bench")  # fmt: skip
    folder = work_dir or Path(tempfile.mkdtemp(prefix="effkit-runtimes-"))
    model = model.eval()
    made: dict[str, Callable[..., Any] | str] = {}
    try:
        for name in names:
            if name == "fp32":
                made[name] = model
            elif name in HALF:
                made[name] = _half(model, name, device)
            elif name == "int8":
                made[name] = _torch_int8(model, device)
            else:  # a session holds its graph in memory once made
                made[name] = _ort(model, name, folder, device)
    finally:
        if work_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    ready = {name: value for name, value in made.items() if not isinstance(value, str)}
    skipped = {name: value for name, value in made.items() if isinstance(value, str)}
    for name, why in skipped.items():
        log.info("baseline runtime %s skipped: %s", name, why)
    return ready, skipped


def configured_runtimes(
    baseline: EffkitModel | None, device: torch.device, cfg: BenchConfig
) -> tuple[dict[str, Callable[..., Any]], dict[str, str]] | None:
    """:func:`baseline_runtimes` for the runtimes ``cfg`` asks for; None when it asks for none."""
    names = cfg.baseline_runtimes()
    if baseline is None or names is None:
        return None
    return baseline_runtimes(baseline, device, names)
