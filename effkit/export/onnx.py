"""Writing a model's graph as one ONNX file with dynamic batch and sequence axes.

The exporter is torch's own ``torch.onnx.export(..., dynamo=True)`` (torch.export, then
onnxscript's translation and graph optimizer), which needs the ``onnx`` and ``onnxscript``
packages (``pip install 'effkit[onnx]'``). torch's older TorchScript exporter is deprecated and
is not used: it traces through Python, so it would bake in the batch size of any grouping logic
a transform's forward pass has.

A graph whose :attr:`~effkit.ExportGraph.onnx_quantize` is set is written in float32 first,
then quantized by ``onnxruntime.quantization.quantize_dynamic`` into the final file (see
:data:`QUANTIZE_SCHEMES`). Every file carries effkit's facts about the model in its
``metadata_props`` (:data:`METADATA`), which :class:`effkit.export.OnnxModel` reads.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from effkit.bench import BenchConfig
from effkit.errors import EffkitError, ModelError
from effkit.export.graph import WHERE, example_inputs, export_graph, input_names, model_and_output
from effkit.export.runtime import INSTALL_HINT, bench_onnx, check_onnx
from effkit.transform import ExportGraph
from effkit.versions import effkit_version

if TYPE_CHECKING:
    from effkit.models import EffkitModel


def require(module: str, purpose: str) -> Any:
    """Import ``module``; an error naming the extra to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EffkitError(
            f"{purpose} needs the package '{module}', which is not installed",
            where=WHERE,
            hint=INSTALL_HINT,
        ) from exc


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Hide the exporter's progress lines, its optimizer's notes and deprecation warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def write_onnx(model: EffkitModel, graph: ExportGraph, path: Path) -> None:
    """Trace ``graph`` on small example inputs and write ``path`` (one file, no side data)."""
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    names = input_names(model)
    # distinct, small example sizes: equal or size-1 axes could be specialised by the tracer
    example = example_inputs(model, graph, 3 * (graph.group_size or 1), 7, seed=1)
    args = tuple(example[name] for name in names)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8 * 2**30
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_exporter():
            torch.onnx.export(
                graph.module,
                args,
                str(path),
                dynamo=True,
                verbose=False,
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=graph.dynamic_shapes(len(names)),
                external_data=big,  # protobuf caps one file at 2 GiB
            )
    except EffkitError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"torch.onnx could not export the model: {first}",
            where=WHERE,
            hint="run with --debug for the exporter's full message",
        ) from exc


QUANTIZE_SCHEMES = {"dynamic-int8": True, "dynamic-int8-per-tensor": False}
"""Values of :attr:`ExportGraph.onnx_quantize`, each with whether weights get one scale per
output channel. Either way weights are QInt8 (symmetric), activations uint8, quantized per
batch at run time (``DynamicQuantizeLinear`` + ``MatMulInteger``); only MatMuls whose weights
are constants are quantized (``Gemm`` is rewritten as one): embeddings, LayerNorms and the
attention products stay float32."""

METADATA = {
    "effkit.version": "effkit's version at export",
    "effkit.task": "the task, as JSON: type and labels",
    "effkit.max_length": "tokens per input the model was trained with (texts truncate to it)",
    "effkit.group_size": "N for a graph that runs N inputs per row, empty otherwise",
    "effkit.inputs": "the graph's input names, as JSON",
    "effkit.quantized": "the onnx_quantize scheme the file was quantized with, empty otherwise",
    "effkit.model_dir": "the model folder exported (absolute), empty for a model object",
}
"""The ``metadata_props`` keys every exported file carries (string values), and what each says."""


def quantize_onnx(source: Path, path: Path, scheme: str, *, external: bool = False) -> None:
    """Quantize the float graph ``source`` into ``path`` with ONNX Runtime (``scheme``: one of
    :data:`QUANTIZE_SCHEMES`)."""
    if scheme not in QUANTIZE_SCHEMES:
        raise ModelError(f"the export graph asks for ONNX quantization '{scheme}', which effkit "
                         "does not know", where=WHERE,
                         hint=f"known: {', '.join(QUANTIZE_SCHEMES)}")  # fmt: skip
    quantization = require("onnxruntime.quantization", "int8 ONNX export")

    def not_onnxruntime(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname  # its advice to pre-process, on the root

    root = logging.getLogger()
    root.addFilter(not_onnxruntime)
    try:
        with quiet_exporter():
            quantization.quantize_dynamic(
                str(source),
                str(path),
                op_types_to_quantize=["MatMul"],
                per_channel=QUANTIZE_SCHEMES[scheme],
                weight_type=quantization.QuantType.QInt8,
                use_external_data_format=external,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"onnxruntime could not quantize the exported graph: {first}",
            where=WHERE,
            hint="run with --debug for onnxruntime's full message",
        ) from exc
    finally:
        root.removeFilter(not_onnxruntime)


def write_metadata(path: Path, facts: dict[str, str]) -> None:
    """Store ``facts`` (keys of :data:`METADATA`) in the file's ``metadata_props``."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    kept = [p for p in proto.metadata_props if p.key not in facts]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in facts.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def metadata(model: EffkitModel, graph: ExportGraph, model_dir: Path | None) -> dict[str, str]:
    """The :data:`METADATA` facts of ``model`` exported as ``graph``."""
    return {
        "effkit.version": effkit_version(),
        "effkit.task": json.dumps(model.task.model_dump(mode="json")),
        "effkit.max_length": str(model.max_length),
        "effkit.group_size": str(graph.group_size or ""),
        "effkit.inputs": json.dumps(input_names(model)),
        "effkit.quantized": graph.onnx_quantize or "",
        "effkit.model_dir": str(model_dir.resolve()) if model_dir is not None else "",
    }


def write_graph(model: EffkitModel, graph: ExportGraph, path: Path) -> None:
    """Write ``graph`` to ``path``: traced, quantized when the graph asks for it."""
    if graph.onnx_quantize is None:
        write_onnx(model, graph, path)
        return
    source = path.with_name(f"{path.stem}.float{path.suffix}")
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8 * 2**30
    try:
        write_onnx(model, graph, source)
        quantize_onnx(source, path, graph.onnx_quantize, external=big)
    finally:
        for leftover in (source, source.with_name(source.name + ".data")):
            leftover.unlink(missing_ok=True)


def graph_facts(path: Path) -> dict[str, Any]:
    """Opset and declared input/output shapes of the written graph."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def dims(value: Any) -> list[int | str]:
        shape = value.type.tensor_type.shape.dim
        return [d.dim_param or int(d.dim_value) for d in shape]

    return {
        "opset": next((int(o.version) for o in proto.opset_import if o.domain == ""), None),
        "inputs": {v.name: dims(v) for v in proto.graph.input},
        "outputs": {v.name: dims(v) for v in proto.graph.output},
    }


def export_onnx(
    model_or_dir: EffkitModel | str | Path,
    path: str | Path | None = None,
    *,
    batch_size: int = 8,
    seq_len: int = 128,
    check: bool = True,
    bench: bool = False,
    bench_config: BenchConfig | None = None,
) -> dict[str, Any]:
    """Write the model (or saved model folder) as ONNX, check it, optionally benchmark it.

    ``path`` defaults to ``MODEL_DIR/model.onnx`` for a folder. Returns a JSON-ready report:
    the file, its inputs and outputs, ``quantized`` (the int8 scheme of a quantized model's
    file, None for float32), the check (largest difference from PyTorch) and the benchmark
    when asked for. ``bench_config`` sets the timing protocol; its batch size and
    sequence length are ``batch_size`` and ``seq_len``.
    """
    if batch_size < 1 or seq_len < 2:
        raise EffkitError(f"need batch_size >= 1 and seq_len >= 2, got {batch_size} and "
                          f"{seq_len}", where=WHERE)  # fmt: skip
    model, output, model_dir = model_and_output(model_or_dir, path, lambda d: d / "model.onnx")
    path = output
    graph = export_graph(model)
    was_training, device = model.training, model.device
    model.cpu().eval()
    try:
        began = time.perf_counter()
        write_graph(model, graph, path)
        write_metadata(path, metadata(model, graph, model_dir))
        report: dict[str, Any] = {
            "path": str(path),
            "format": "onnx",
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "group_size": graph.group_size,
            "quantized": graph.onnx_quantize,
            "export_seconds": round(time.perf_counter() - began, 2),
            "size_mb": round(path.stat().st_size / 2**20, 2),
            **graph_facts(path),
        }
        report["check"] = (
            check_onnx(model, path, batch_size=batch_size, seq_len=seq_len, graph=graph)
            if check
            else {"skipped": "not asked for (--no-check)"}
        )
        if bench:
            cfg = (bench_config or BenchConfig()).model_copy(
                update={"batch_size": batch_size, "seq_len": seq_len}
            )
            report["bench"] = bench_onnx(model, path, cfg, graph=graph)
    finally:
        model.to(device).train(was_training)
    return report
