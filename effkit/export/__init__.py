"""Export: a model's inference pass as a file other runtimes run, checked against PyTorch.

- :mod:`effkit.export.graph`: what is traced, and how transforms supply their own graph;
- :mod:`effkit.export.onnx`: writing the ONNX file;
- :mod:`effkit.export.runtime`: ONNX Runtime, the check against PyTorch and the benchmark.

After export, ONNX Runtime (when installed) runs the graph on random ids with partial padding
at two shapes, the given one and a smaller one (so that the dynamic axes are exercised), and
the largest absolute difference from PyTorch must not exceed :data:`TOLERANCE`. With
``bench=True`` ONNX Runtime and PyTorch are timed interleaved on the same inputs, ONNX Runtime
with as many threads as torch.
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
from effkit.export.runtime import TOLERANCE, bench_onnx, check_onnx, onnx_runner, onnx_session

if TYPE_CHECKING:
    from effkit.models import EffkitModel

__all__ = [
    "FORMATS",
    "TOLERANCE",
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

FORMATS = ("onnx",)


def export_model(
    model_or_dir: EffkitModel | str | Path,
    path: str | Path | None = None,
    *,
    format: str = "onnx",
    **options: Any,
) -> dict[str, Any]:
    """Export in ``format`` (only ``onnx`` for now); see :func:`export_onnx` for the options."""
    if format not in FORMATS:
        raise EffkitError(f"unknown export format '{format}'", where="export",
                          hint=did_you_mean(format, FORMATS))  # fmt: skip
    return export_onnx(model_or_dir, path, **options)


def summary(report: dict[str, Any]) -> list[str]:
    """A few human-readable lines about an export report (the CLI prints them)."""
    lines = [f"wrote {report['path']} ({report['size_mb']} MB, opset {report.get('opset')}, "
             f"{report['export_seconds']} s)"]  # fmt: skip
    for name, dims in report.get("inputs", {}).items():
        lines.append(f"  input  {name}: {dims}")
    for name, dims in report.get("outputs", {}).items():
        lines.append(f"  output {name}: {dims}")
    check = report.get("check", {})
    if "skipped" in check:
        lines.append(f"check skipped: {check['skipped']}")
    else:
        lines.append(f"check: max |onnxruntime - pytorch| = {check['max_abs_diff']:.3g} "
                     f"(tolerance {check['tolerance']:g}) on shapes {check['shapes']}")  # fmt: skip
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
