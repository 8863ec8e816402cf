"""Export a model to ONNX, check the graph against PyTorch, and time it with ONNX Runtime.

:func:`export_onnx` writes the model's inference path (what ``EffkitModel.forward`` and
``predict`` run) as one ONNX graph with dynamic batch and sequence axes:

- a plain or pruned model takes ``input_ids`` and ``attention_mask`` (and ``token_type_ids``
  when the encoder has segment embeddings), each ``[batch, seq]`` int64, and returns
  ``logits`` ``[batch, labels]`` (``[batch, seq, labels]`` for token tasks);
- a multiplexed model takes its N inputs per forward pass explicitly: each input is
  ``[groups, N, seq]`` and ``logits`` is ``[groups, N, labels]`` (``[groups, N, seq, labels]``),
  one row per input, in the slots given. This is the PyTorch model on ``groups * N`` inputs in
  their given order (no shuffling by ``inference_seed``); a caller with fewer inputs fills the
  last group itself, e.g. by repeating an input, and discards the extra outputs.

The exporter is torch's own ``torch.onnx.export(..., dynamo=True)`` (torch.export, then
onnxscript's translation and graph optimizer), which needs the ``onnx`` and ``onnxscript``
packages (``pip install 'effkit[onnx]'``). torch's older TorchScript exporter is deprecated and
is not used: it traces through Python, so it would bake in the batch size of the multiplexed
grouping logic.

After export, ONNX Runtime (when installed) runs the graph on random ids with partial padding
at two shapes, the given one and a smaller one (so that the dynamic axes are exercised), and
the largest absolute difference from PyTorch must not exceed :data:`TOLERANCE`. With
``bench=True`` ONNX Runtime and PyTorch are timed interleaved on the same inputs
(:func:`effkit.bench.measure`), ONNX Runtime with as many threads as torch.

Models with int8 layers from the ``quantize`` transform cannot be exported: torch's quantized
CPU kernels have no ONNX translation. Export the float model (the stage before ``quantize``)
and quantize the ONNX graph with ``onnxruntime.quantization.quantize_dynamic`` instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from effkit.errors import EffkitError, ModelError, did_you_mean

if TYPE_CHECKING:
    from effkit.bench import BenchConfig
    from effkit.models import EffkitModel

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
TOLERANCE = 1e-4
"""Largest absolute difference allowed between ONNX Runtime's and PyTorch's float32 logits."""
INSTALL_HINT = "pip install 'effkit[onnx]'"
_WHERE = "export"


# --------------------------------------------------------------------------- the graph


class _PlainGraph(nn.Module):
    """The model's forward pass with tensors in and logits out (what the exporter traces)."""

    def __init__(self, model: EffkitModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


class _MuxGraph(nn.Module):
    """A multiplexed model on ``[groups, N, seq]`` inputs: the adapter's own pass, in order.

    ``MuxAdapter.forward`` plans the grouping with Python loops over the batch, which an
    exported graph cannot keep for every batch size; with the groups given as an axis the plan
    is the identity (rotated per slot in ensembling mode, as the adapter rotates it), expressed
    with tensor operations, and the adapter's :meth:`run` does the rest exactly as at inference.
    """

    def __init__(self, model: EffkitModel, layout: type) -> None:
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        adapter: Any = self.model.adapter
        groups, n, length = input_ids.shape
        base = torch.arange(groups * n, device=input_ids.device).view(groups, n)
        flat = [t.reshape(groups * n, length) for t in (input_ids, attention_mask)]
        types = None if token_type_ids is None else token_type_ids.reshape(groups * n, length)
        shifts = range(n) if adapter.ensemble and not adapter.training else range(1)
        total: torch.Tensor | None = None
        for shift in shifts:
            layout = self.layout(
                order=torch.roll(base, shift, 1).reshape(-1),
                first=torch.roll(base, -shift, 1).reshape(-1),
                groups=groups,
            )
            logits = adapter.run(self.model, layout, flat[0], flat[1], types).logits[layout.first]
            total = logits if total is None else total + logits
        assert total is not None
        total = total / len(shifts)
        return total.reshape(groups, n, *total.shape[1:])


def _mux_slots(model: EffkitModel) -> int | None:
    """N for a multiplexed model, None for a plain one; an error for adapters export lacks."""
    if model.adapter is None:
        return None
    try:
        from effkit_mux import MuxAdapter
    except ImportError:  # pragma: no cover - the adapter's own plugin made it
        MuxAdapter = None  # type: ignore[assignment,misc]
    if MuxAdapter is None or not isinstance(model.adapter, MuxAdapter):
        raise ModelError(
            f"export supports plain models and the multiplex adapter, not "
            f"{type(model.adapter).__name__}",
            where=_WHERE,
        )
    return int(model.adapter.n)


def _graph(model: EffkitModel, slots: int | None) -> nn.Module:
    if slots is None:
        return _PlainGraph(model)
    from effkit_mux.adapter import Layout

    return _MuxGraph(model, Layout)


def input_names(model: EffkitModel) -> list[str]:
    """The graph's inputs: segment ids only for encoders that have segment embeddings."""
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if model.type_vocab_size > 0 else names


def _check_exportable(model: EffkitModel) -> None:
    for transform in model.transforms:
        if getattr(transform, "onnx_exportable", True) is False:
            raise ModelError(
                f"the model's '{transform.registered_name()}' transform cannot be exported to "
                "ONNX: torch's int8 CPU kernels have no ONNX translation",
                where=_WHERE,
                hint="export the model from the stage before it, then quantize the ONNX file "
                "with onnxruntime.quantization.quantize_dynamic",
            )


# --------------------------------------------------------------------------- inputs


def example_inputs(
    model: EffkitModel, batch: int, seq_len: int, *, seed: int = 0, padding: bool = True
) -> dict[str, torch.Tensor]:
    """Random ids for ``batch`` inputs of ``seq_len`` tokens (``[groups, N, seq]`` when
    multiplexed, ``batch`` rounded up to whole groups), with padding at the end of most rows."""
    from effkit.bench import _low_id_for, make_inputs

    slots = _mux_slots(model)
    rows = batch if slots is None else math.ceil(batch / slots) * slots
    inputs = make_inputs(rows, seq_len, model.vocab_size, device=torch.device("cpu"), seed=seed,
                         type_vocab_size=model.type_vocab_size,
                         low_id=_low_id_for(model.vocab_size))  # fmt: skip
    generator = torch.Generator().manual_seed(seed + 1)
    if padding and seq_len > 1:
        lengths = torch.randint(max(1, seq_len // 2), seq_len + 1, (rows,), generator=generator)
        lengths[0] = seq_len  # one full row, so that padding never covers the whole batch
        inputs["attention_mask"] = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    if "token_type_ids" in inputs and model.type_vocab_size > 1:
        inputs["token_type_ids"] = (
            torch.randint(0, 2, (rows, seq_len), generator=generator).cummax(dim=1).values
        )  # a first segment of 0s, then 1s, as a sentence pair has
    if slots is not None:
        inputs = {k: v.view(rows // slots, slots, seq_len) for k, v in inputs.items()}
    return inputs


def _flat(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``[groups, N, seq]`` inputs as the ``[groups * N, seq]`` batch the model takes."""
    return {k: v.reshape(-1, v.shape[-1]) for k, v in inputs.items()}


@torch.inference_mode()
def reference_logits(model: EffkitModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """PyTorch's logits for graph-shaped ``inputs``, through ``EffkitModel.forward`` itself."""
    seed, model.inference_seed = model.inference_seed, None
    try:
        logits = model(**_flat(inputs)).logits.float()
    finally:
        model.inference_seed = seed
    ids = inputs["input_ids"]
    return logits.reshape(*ids.shape[:-1], *logits.shape[1:]) if ids.dim() == 3 else logits


# --------------------------------------------------------------------------- export


def _require(module: str, purpose: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EffkitError(
            f"{purpose} needs the package '{module}', which is not installed",
            where=_WHERE,
            hint=INSTALL_HINT,
        ) from exc


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@contextmanager
def _quiet_exporter() -> Iterator[None]:
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


def _dynamic_shapes(names: list[str], slots: int | None) -> tuple[dict[int, Any], ...]:
    batch = torch.export.Dim("groups" if slots else "batch")
    seq = torch.export.Dim("seq")
    axes = {0: batch, 2: seq} if slots else {0: batch, 1: seq}
    return tuple(dict(axes) for _ in names)


def _write_onnx(model: EffkitModel, slots: int | None, path: Path) -> None:
    """Trace the graph on small example inputs and write ``path`` (one file, no side data)."""
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export")
    names = input_names(model)
    # distinct, small example sizes: equal or size-1 axes could be specialised by the tracer
    example = example_inputs(model, 3 * (slots or 1), 7, seed=1)
    args = tuple(example[name] for name in names)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8 * 2**30
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_exporter():
            torch.onnx.export(
                _graph(model, slots),
                args,
                str(path),
                dynamo=True,
                verbose=False,
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=_dynamic_shapes(names, slots),
                external_data=big,  # protobuf caps one file at 2 GiB
            )
    except EffkitError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"torch.onnx could not export the model: {first}",
            where=_WHERE,
            hint="run with --debug for the exporter's full message",
        ) from exc


def _graph_facts(path: Path) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- ONNX Runtime


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with as many intra-op threads as torch uses (or ``threads``)."""
    ort = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(session: Any, slots: int | None = None) -> Callable[..., Any]:
    """Call the session like the model: keyword tensors in (``[batch, seq]``), logits out.

    For a multiplexed graph (``slots`` = N) the ``[groups * N, seq]`` batch is viewed as
    ``[groups, N, seq]``, so both take the same inputs in a benchmark.
    """
    wanted = [i.name for i in session.get_inputs()]

    def run(**inputs: torch.Tensor) -> Any:
        feed = {}
        for name in wanted:
            value = inputs[name]
            if slots is not None and value.dim() == 2:
                value = value.view(-1, slots, value.shape[-1])
            feed[name] = value.cpu().numpy()
        return session.run(["logits"], feed)[0]

    return run


def check_onnx(
    model: EffkitModel, path: str | Path, *, batch_size: int = 8, seq_len: int = 128
) -> dict[str, Any]:
    """Run the graph with ONNX Runtime and PyTorch on the same random ids; compare the logits.

    Two shapes are checked: ``batch_size x seq_len`` and a smaller one. Returns the largest
    absolute difference over both, or says that ONNX Runtime is not installed.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return {"skipped": f"onnxruntime is not installed ({INSTALL_HINT})"}
    slots = _mux_slots(model)
    run = onnx_runner(onnx_session(Path(path)), slots)
    sizes = [(batch_size, seq_len), (max(1, batch_size // 2 - 1), max(2, seq_len // 2 + 1))]
    worst = 0.0
    shapes: list[list[int]] = []
    for seed, (batch, length) in enumerate(sizes):
        inputs = example_inputs(model, batch, length, seed=10 + seed)
        shapes.append(list(inputs["input_ids"].shape))
        expected = reference_logits(model, inputs)
        got = torch.from_numpy(run(**inputs))
        if got.shape != expected.shape:
            raise ModelError(
                f"the exported graph returned logits of shape {list(got.shape)} for inputs of "
                f"shape {list(inputs['input_ids'].shape)}; PyTorch returns {list(expected.shape)}",
                where=str(path),
            )
        worst = max(worst, float((got - expected).abs().max()))
    report = {
        "onnxruntime": _version("onnxruntime"),
        "max_abs_diff": worst,
        "tolerance": TOLERANCE,
        "shapes": shapes,
        "ok": worst <= TOLERANCE,
    }
    if worst > TOLERANCE:
        raise ModelError(
            f"ONNX Runtime's logits differ from PyTorch's by up to {worst:.3g}, more than "
            f"{TOLERANCE:g}",
            where=str(path),
            hint="the file was written; report this model's transforms as a bug",
        )
    return report


def bench_onnx(
    model: EffkitModel, path: str | Path, cfg: BenchConfig | None = None
) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on the same inputs, interleaved (CPU, torch's threads).

    A multiplexed model's batch is rounded up to whole groups of N.
    """
    from effkit.bench import (
        BenchConfig,
        BenchResult,
        _loadavg,
        _low_id_for,
        environment,
        make_inputs,
        measure,
    )

    if importlib.util.find_spec("onnxruntime") is None:
        return {"skipped": f"onnxruntime is not installed ({INSTALL_HINT})"}
    cfg = (cfg or BenchConfig()).model_copy(update={"device": "cpu"})
    device = torch.device("cpu")
    resolved = cfg.resolved(device)
    slots = _mux_slots(model)
    rows = resolved.batch_size if slots is None else math.ceil(resolved.batch_size / slots) * slots
    previous = torch.get_num_threads()
    if resolved.threads is not None:
        torch.set_num_threads(resolved.threads)
    try:
        env = environment(device)
        env["onnxruntime"] = _version("onnxruntime")
        inputs = make_inputs(rows, resolved.seq_len, model.vocab_size, device=device,
                             type_vocab_size=model.type_vocab_size,
                             low_id=_low_id_for(model.vocab_size))  # fmt: skip
        inputs = {k: v for k, v in inputs.items() if k in input_names(model)}
        models: dict[str, Callable[..., Any]] = {
            "pytorch": model.cpu().eval(),
            "onnxruntime": onnx_runner(onnx_session(Path(path)), slots),
        }
        assert resolved.warmup is not None and resolved.trials is not None
        assert resolved.batches is not None
        timings = measure(models, inputs, warmup=resolved.warmup, trials=resolved.trials,
                          batches=resolved.batches, device=device, progress=False,
                          min_trial_seconds=resolved.min_trial_seconds)  # fmt: skip
        env["load_after"] = _loadavg()
        settings = {"batch_size": rows, "seq_len": resolved.seq_len, "warmup": resolved.warmup,
                    "trials": resolved.trials, "batches": resolved.batches,
                    "min_trial_seconds": resolved.min_trial_seconds,
                    "threads": torch.get_num_threads(), "device": "cpu"}  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    result = BenchResult(timings=timings, baseline="pytorch", settings=settings, environment=env)
    return result.to_dict()


# --------------------------------------------------------------------------- entry points


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
    the file, its inputs and outputs, the check (largest difference from PyTorch) and the
    benchmark when asked for. ``bench_config`` sets the timing protocol; its batch size and
    sequence length are ``batch_size`` and ``seq_len``.
    """
    from effkit.bench import BenchConfig
    from effkit.models import EffkitModel, load

    if batch_size < 1 or seq_len < 2:
        raise EffkitError(f"need batch_size >= 1 and seq_len >= 2, got {batch_size} and "
                          f"{seq_len}", where=_WHERE)  # fmt: skip
    if isinstance(model_or_dir, EffkitModel):
        if path is None:
            raise EffkitError("give the output path when exporting a model object", where=_WHERE)
        model = model_or_dir
    else:
        model = load(model_or_dir)
        path = Path(model_or_dir) / "model.onnx" if path is None else path
    path = Path(path)
    _check_exportable(model)
    slots = _mux_slots(model)
    was_training, device = model.training, model.device
    model.cpu().eval()
    try:
        began = time.perf_counter()
        _write_onnx(model, slots, path)
        report: dict[str, Any] = {
            "path": str(path),
            "format": "onnx",
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "multiplexed": slots,
            "export_seconds": round(time.perf_counter() - began, 2),
            "size_mb": round(path.stat().st_size / 2**20, 2),
            **_graph_facts(path),
        }
        report["check"] = (
            check_onnx(model, path, batch_size=batch_size, seq_len=seq_len)
            if check
            else {"skipped": "not asked for (--no-check)"}
        )
        if bench:
            cfg = (bench_config or BenchConfig()).model_copy(
                update={"batch_size": batch_size, "seq_len": seq_len}
            )
            report["bench"] = bench_onnx(model, path, cfg)
    finally:
        model.to(device).train(was_training)
    return report


def export_model(
    model_or_dir: EffkitModel | str | Path,
    path: str | Path | None = None,
    *,
    format: str = "onnx",
    **options: Any,
) -> dict[str, Any]:
    """Export in ``format`` (only ``onnx`` for now); see :func:`export_onnx` for the options."""
    if format not in FORMATS:
        raise EffkitError(f"unknown export format '{format}'", where=_WHERE,
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
