"""Export: a model's inference pass as a file other runtimes run, checked against PyTorch.

- :mod:`effkit.export.graph`: what is traced, and how transforms supply their own graph;
- :mod:`effkit.export.onnx`: writing the ONNX file;
- :mod:`effkit.export.runtime`: ONNX Runtime, the check against PyTorch and the benchmark;
- :mod:`effkit.export.predictor`: :class:`OnnxModel`, predictions from the file for lists of
  texts.

After export, ONNX Runtime (when installed) runs the graph on random ids with partial padding
at two shapes, the given one and a smaller one (so that the dynamic axes are exercised), and
the largest absolute difference from PyTorch must not exceed :data:`TOLERANCE` (for a graph
that ONNX Runtime quantized to int8, :data:`INT8_TOLERANCE` times the PyTorch int8 model's own
rounding error). With ``bench=True`` ONNX Runtime and PyTorch are timed interleaved on the same
inputs, ONNX Runtime with as many threads as torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from effkit.errors import EffkitError, did_you_mean
from effkit.export.graph import (
    PlainGraph,
    example_inputs,
    export_graph,
    input_names,
    reference_logits,
)
from effkit.export.onnx import export_onnx
from effkit.export.predictor import OnnxModel
from effkit.export.runtime import (
    INT8_TOLERANCE,
    TOLERANCE,
    bench_onnx,
    check_onnx,
    onnx_runner,
    onnx_session,
)

if TYPE_CHECKING:
    from effkit.models import EffkitModel

__all__ = [
    "FORMATS",
    "INT8_TOLERANCE",
    "TOLERANCE",
    "OnnxModel",
    "PlainGraph",
    "bench_onnx",
    "check_onnx",
    "example_inputs",
    "export_graph",
    "export_model",
    "export_onnx",
    "input_names",
    "onnx_runner",
    "onnx_session",
    "reference_logits",
    "summary",
]

FORMATS = ("onnx", "hf")


def export_model(
    model_or_dir: EffkitModel | str | Path,
    path: str | Path | None = None,
    *,
    format: str = "onnx",
    **options: Any,
) -> dict[str, Any]:
    """Export in ``format``: ``onnx`` (see :func:`export_onnx` for the options) or ``hf``, a
    stock transformers folder (:func:`effkit.export.hf.export_hf`: ``batch_size``, ``seq_len``
    and ``check`` apply; a benchmark does not)."""
    if format not in FORMATS:
        raise EffkitError(f"unknown export format '{format}'", where="export",
                          hint=did_you_mean(format, FORMATS))  # fmt: skip
    if format == "hf":
        from effkit.export.hf import export_hf

        if options.get("bench"):
            raise EffkitError("--bench times ONNX Runtime; it applies to --format onnx",
                              where="export")  # fmt: skip
        kept = {key: options[key] for key in ("batch_size", "seq_len", "check") if key in options}
        return export_hf(model_or_dir, path, **kept)
    return export_onnx(model_or_dir, path, **options)


def summary(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines about an export report (the CLI prints them)."""
    if report.get("format") == "hf":
        check = report.get("check") or {}
        size = f"{report['num_parameters']:,} parameters"
        lines = [f"wrote {report['path']} ({report['class']}, {report['dtype']}, {size}): "
                 "stock transformers classes"]  # fmt: skip
        if check:
            diff = f"max |stock - effkit| = {check['max_abs_diff']:.3g}"
            lines.append(f"check: loaded back as {check['class_loaded']}, {diff} "
                         f"(tolerance {check['tolerance']:g})")  # fmt: skip
        return lines
    kind = f"int8 ({report['quantized']}), " if report.get("quantized") else ""
    lines = [f"wrote {report['path']} ({kind}{report['size_mb']} MB, opset "
             f"{report.get('opset')}, {report['export_seconds']} s)"]  # fmt: skip
    for name, dims in report.get("inputs", {}).items():
        lines.append(f"  input  {name}: {dims}")
    for name, dims in report.get("outputs", {}).items():
        lines.append(f"  output {name}: {dims}")
    check = report.get("check", {})
    if "skipped" in check:
        lines.append(f"check skipped: {check['skipped']}")
    else:
        diff, tolerance = check["max_abs_diff"], check["tolerance"]
        lines.append(f"check: max |onnxruntime - pytorch| = {diff:.3g} "
                     f"(tolerance {tolerance:.3g}) on shapes {check['shapes']}")  # fmt: skip
        if "argmax_agreement" in check:
            lines.append(f"  int8 against the PyTorch int8 model, whose own int8 error is "
                         f"{check['int8_error']:.3g}: predictions agree on "
                         f"{check['argmax_agreement']:.1%} of rows")  # fmt: skip
    bench = report.get("bench")
    if bench and "skipped" in bench:
        lines.append(f"bench skipped: {bench['skipped']}")
    elif bench:
        s = bench["settings"]
        lines.append(f"bench: batch {s['batch_size']} x {s['seq_len']} tokens, "
                     f"{s['threads']} threads, median of {s['trials']} trials")  # fmt: skip
        for name, timing in bench["timings"].items():
            rate, latency = timing["samples_per_s"], timing["latency_ms"]
            lines.append(
                f"  {name}: {rate:.1f} samples/s, {latency:.1f} ms/batch, {timing['ratio']:.3f}x"
            )
    return lines
