"""ONNX Runtime: run an exported graph like the model, check it against PyTorch, time it."""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from effkit.bench import (
    BenchConfig,
    BenchResult,
    environment,
    load_average,
    low_id_for,
    make_inputs,
    measure,
)
from effkit.errors import ModelError
from effkit.export.graph import example_inputs, export_graph, input_names, reference_logits
from effkit.transform import ExportGraph
from effkit.versions import package_version

if TYPE_CHECKING:
    from effkit.models import EffkitModel

TOLERANCE = 1e-4
"""Largest absolute difference allowed between ONNX Runtime's and PyTorch's float32 logits."""
INT8_TOLERANCE = 3.0
"""For a quantized graph (:attr:`ExportGraph.onnx_quantize`): how many times the PyTorch int8
model's own rounding error (its largest absolute difference, on the same inputs, from the float
model its graph holds, the dequantized weights) ONNX Runtime's int8 logits may differ from the
PyTorch int8 model's, plus :data:`TOLERANCE`. Both quantize the same int8 weights but their
activations differently (torch's x86 kernels use 7 bits, ONNX Runtime 8; ONNX Runtime also
quantizes the float task head), so each is an int8 approximation of the float model and they
differ by about their errors' sum: measured 1.0 to 2.0 times the PyTorch model's error on the
tiny test model and on MiniLM (max 9e-4 and 0.15 absolute; docs/quantization.md). A broken
graph (wrong weights, a wrong axis) is off by the logits' own size."""
INSTALL_HINT = "pip install 'effkit[onnx]'"


def missing() -> dict[str, str] | None:
    """A report entry saying that ONNX Runtime is not installed; None when it is."""
    if importlib.util.find_spec("onnxruntime") is None:
        return {"skipped": f"onnxruntime is not installed ({INSTALL_HINT})"}
    return None


class NoKernels(ModelError):
    """ONNX Runtime's CPU provider cannot run the graph (a bfloat16 graph, say): the file is
    fine, the runtime here lacks kernels for it."""


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with as many intra-op threads as torch uses (or ``threads``);
    :class:`NoKernels` when the CPU provider has no implementation for some node."""
    ort = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if "NOT_IMPLEMENTED" not in str(exc):
            raise
        reason = str(exc).split(":")[-1].strip()
        raise NoKernels(
            f"ONNX Runtime's CPU provider cannot run '{path}' ({reason}); bfloat16 graphs need "
            "a provider with bfloat16 kernels (CUDA)",
            where=str(path),
        ) from None


def onnx_runner(session: Any, group_size: int | None = None) -> Callable[..., Any]:
    """Call the session like the model: keyword tensors in (``[batch, seq]``), logits out.

    For a graph that runs ``group_size`` inputs per row, the ``[groups * N, seq]`` batch is
    viewed as ``[groups, N, seq]``, so both take the same inputs in a benchmark.
    """
    wanted = [i.name for i in session.get_inputs()]

    def run(**inputs: torch.Tensor) -> Any:
        feed = {}
        for name in wanted:
            value = inputs[name]
            if group_size is not None and value.dim() == 2:
                value = value.view(-1, group_size, value.shape[-1])
            feed[name] = value.cpu().numpy()
        return session.run(["logits"], feed)[0]

    return run


def check_onnx(
    model: EffkitModel,
    path: str | Path,
    *,
    batch_size: int = 8,
    seq_len: int = 128,
    graph: ExportGraph | None = None,
) -> dict[str, Any]:
    """Run the graph with ONNX Runtime and PyTorch on the same random ids; compare the logits.

    Two shapes are checked: ``batch_size x seq_len`` and a smaller one. Returns the largest
    absolute difference over both, or says that ONNX Runtime is not installed. ``graph`` is the
    model's export graph when the caller has it already. A float graph must be within
    :data:`TOLERANCE`. A quantized one (ONNX Runtime's int8 graph against the PyTorch int8
    model) must be within :data:`INT8_TOLERANCE` times the PyTorch model's own int8 error
    (``int8_error``: its difference from the float model the graph holds) plus
    :data:`TOLERANCE`; its report also gives the share of predictions (argmax) that agree.
    """
    skipped = missing()
    if skipped is not None:
        return skipped
    graph = graph or export_graph(model)
    try:
        run = onnx_runner(onnx_session(Path(path)), graph.group_size)
    except NoKernels as exc:
        import onnx

        onnx.checker.check_model(str(path))  # the file itself must be a valid graph
        return {"skipped": f"{exc.message}; the graph passed onnx.checker"}
    sizes = [(batch_size, seq_len), (max(1, batch_size // 2 - 1), max(2, seq_len // 2 + 1))]
    worst = error = 0.0
    agree = total = 0
    shapes: list[list[int]] = []
    for seed, (batch, length) in enumerate(sizes):
        inputs = example_inputs(model, graph, batch, length, seed=10 + seed)
        shapes.append(list(inputs["input_ids"].shape))
        expected = reference_logits(model, graph, inputs)
        got = torch.from_numpy(run(**inputs))
        if got.shape != expected.shape:
            raise ModelError(
                f"the exported graph returned logits of shape {list(got.shape)} for inputs of "
                f"shape {list(inputs['input_ids'].shape)}; PyTorch returns {list(expected.shape)}",
                where=str(path),
            )
        worst = max(worst, float((got - expected).abs().max()))
        if graph.onnx_quantize is not None:
            with torch.inference_mode():
                traced = graph.module(*(inputs[name] for name in input_names(model))).float()
            error = max(error, float((traced - expected).abs().max()))
        same = got.argmax(-1) == expected.argmax(-1)
        agree, total = agree + int(same.sum()), total + same.numel()
    quantized = graph.onnx_quantize is not None
    tolerance = INT8_TOLERANCE * error + TOLERANCE if quantized else TOLERANCE
    if worst > tolerance:
        raise ModelError(
            f"ONNX Runtime's logits differ from PyTorch's by up to {worst:.3g}, more than "
            f"{tolerance:.3g}",
            where=str(path),
            hint="the file was written; report this model's transforms as a bug",
        )
    report: dict[str, Any] = {
        "onnxruntime": package_version("onnxruntime"),
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "shapes": shapes,
        "ok": True,
    }
    if quantized:
        report.update(quantized=graph.onnx_quantize, int8_error=error,
                      argmax_agreement=round(agree / total, 4))  # fmt: skip
    return report


def bench_onnx(
    model: EffkitModel,
    path: str | Path,
    cfg: BenchConfig | None = None,
    *,
    graph: ExportGraph | None = None,
) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on the same inputs, interleaved (CPU, torch's threads).

    A graph that runs N inputs per row gets a batch rounded up to whole groups of N. A quantized
    model's file is its int8 graph, timed against the PyTorch int8 model.
    """
    skipped = missing()
    if skipped is not None:
        return skipped
    try:
        session = onnx_session(Path(path))
    except NoKernels as exc:
        return {"skipped": exc.message}
    cfg = (cfg or BenchConfig()).model_copy(update={"device": "cpu"})
    device = torch.device("cpu")
    resolved = cfg.resolved(device)
    size = (graph or export_graph(model)).group_size
    rows = resolved.batch_size if size is None else math.ceil(resolved.batch_size / size) * size
    previous = torch.get_num_threads()
    if resolved.threads is not None:
        torch.set_num_threads(resolved.threads)
    try:
        env = environment(device)
        env["onnxruntime"] = package_version("onnxruntime")
        inputs = make_inputs(rows, resolved.seq_len, model.vocab_size, device=device,
                             type_vocab_size=model.type_vocab_size,
                             low_id=low_id_for(model.vocab_size))  # fmt: skip
        inputs = {k: v for k, v in inputs.items() if k in input_names(model)}
        models: dict[str, Callable[..., Any]] = {
            "pytorch": model.cpu().eval(),
            "onnxruntime": onnx_runner(session, size),
        }
        assert resolved.warmup is not None and resolved.trials is not None
        assert resolved.batches is not None
        timings = measure(models, inputs, warmup=resolved.warmup, trials=resolved.trials,
                          batches=resolved.batches, device=device, progress=False,
                          min_trial_seconds=resolved.min_trial_seconds)  # fmt: skip
        env["load_after"] = load_average()
        settings = {"batch_size": rows, "seq_len": resolved.seq_len, "warmup": resolved.warmup,
                    "trials": resolved.trials, "batches": resolved.batches,
                    "min_trial_seconds": resolved.min_trial_seconds,
                    "threads": torch.get_num_threads(), "device": "cpu"}  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    result = BenchResult(timings=timings, baseline="pytorch", settings=settings, environment=env)
    return result.to_dict()
