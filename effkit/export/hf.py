"""Writing a model as a vanilla transformers folder: stock classes, no effkit needed to load it.

A stack fits stock classes when its result is an ordinary transformers model with the shapes
one config can describe: the same number of heads and the same FFN width in every layer, the
hidden size split evenly among the heads, and nothing but transformers and torch modules. Layer
dropping, distillation, uniform FFN pruning, and half precision do; per-layer head counts or
widths (CoFi, one-shot head pruning), a multiplexing adapter and int8 layers do not. For those
the export says precisely what does not fit and where; the effkit folder (with ``import
effkit``) and ONNX remain.

The folder is checked before it is returned: loaded back with transformers'
``AutoModelFor...from_pretrained`` and run beside the effkit model on the same inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from effkit.errors import ModelError
from effkit.export.graph import WHERE, example_inputs, model_and_output, reference_logits
from effkit.transform import ExportGraph

if TYPE_CHECKING:
    from effkit.models import EffkitModel

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}
"""Largest absolute logit difference allowed between the stock folder and the effkit model."""


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Without transformers' progress bars (loading and writing weights) for a while."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _refuse(model: EffkitModel, why: str, hint: str) -> ModelError:
    stack = ", ".join(t.registered_name() for t in model.transforms) or "no transform"
    return ModelError(
        f"the model (stack: {stack}) does not fit stock transformers classes: {why}",
        where=WHERE,
        hint=hint,
    )


_KEEP = (
    "use the effkit folder itself (after import effkit, AutoModelFor...from_pretrained and "
    "pipeline read it) or export it with --format onnx"
)


def _foreign_modules(hf: nn.Module) -> list[str]:
    """``name (Class from module)`` for every module that is neither transformers' nor torch's."""
    found = []
    for name, module in hf.named_modules():
        origin = type(module).__module__
        if not origin.startswith(("transformers.", "torch.")):
            found.append(f"{name} ({type(module).__name__} from {origin})")
    return found


def _uniform(values: list[int], what: str) -> int | None:
    if not values:
        return None
    if len(set(values)) > 1:
        raise ValueError(f"{what} differs between layers: {values}")
    return values[0]


def stock_config(model: EffkitModel) -> Any:
    """The live config with the widths the modules really have; ValueError when they differ."""
    config = copy.deepcopy(model.hf.config)
    layers = model.encoder_layers()
    ffn = []
    for layer in layers:
        up = getattr(getattr(layer, "intermediate", None), "dense", None)
        if isinstance(up, nn.Linear):
            ffn.append(int(up.out_features))
    width = _uniform(ffn, "the FFN width")
    if width is not None:
        config.intermediate_size = width
    heads = []
    for layer in layers:
        attention = getattr(getattr(layer, "attention", None), "self", None)
        query = getattr(attention, "query", None)
        size = getattr(attention, "attention_head_size", None)
        if isinstance(query, nn.Linear) and isinstance(size, int) and size > 0:
            heads.append(query.out_features // size)
            if query.out_features != config.hidden_size:
                raise ValueError(
                    f"layer {len(heads) - 1} keeps {heads[-1]} heads of {size} dimensions "
                    f"({query.out_features} wide) in a {config.hidden_size}-wide model; stock "
                    "classes split the hidden size evenly among all heads"
                )
    count = _uniform(heads, "the number of attention heads")
    if count is not None:
        config.num_attention_heads = count
    config.num_hidden_layers = len(layers)
    return config


def _mismatches(stock: nn.Module, trained: nn.Module) -> list[str]:
    ours = trained.state_dict()
    theirs = stock.state_dict()
    problems = [f"{key} is missing" for key in theirs if key not in ours]
    problems += [f"{key} has no place" for key in ours if key not in theirs]
    problems += [
        f"{key} is {list(ours[key].shape)} here, {list(theirs[key].shape)} in the stock model"
        for key in theirs
        if key in ours and ours[key].shape != theirs[key].shape
    ]
    return problems


def stock_model(model: EffkitModel) -> Any:
    """A stock transformers model holding ``model``'s weights; an error saying why it cannot."""
    if model.adapter is not None:
        raise _refuse(
            model,
            f"its forward pass is taken over by a {type(model.adapter).__name__} (it runs "
            "several inputs per row with modules of its own), which stock classes do not have",
            _KEEP,
        )
    foreign = _foreign_modules(model.hf)
    if foreign:
        shown = "; ".join(foreign[:3]) + (
            f"; and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise _refuse(model, f"it holds modules stock classes do not have: {shown}", _KEEP)
    try:
        config = stock_config(model)
    except ValueError as exc:
        raise _refuse(model, str(exc), _KEEP) from None
    dtype = next(model.hf.parameters()).dtype
    stock: Any = type(model.hf)(config).to(dtype)
    problems = _mismatches(stock, model.hf)
    if problems:
        shown = "; ".join(problems[:4]) + (
            f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        )
        raise _refuse(model, shown, _KEEP)
    stock.load_state_dict(model.hf.state_dict(), strict=True)
    stock.config.dtype = dtype
    return stock.eval()


def export_hf(
    model_or_dir: EffkitModel | str | Path,
    path: str | Path | None = None,
    *,
    batch_size: int = 4,
    seq_len: int = 32,
    check: bool = True,
) -> dict[str, Any]:
    """Write ``model`` as a stock transformers folder at ``path`` and check it loads back.

    ``path`` defaults to ``MODEL_DIR-hf`` beside a model folder. Returns a JSON-ready report:
    the folder, the class, and the check (largest logit difference after loading it back).
    """
    model, output, _ = model_and_output(
        model_or_dir, path, lambda folder: folder.with_name(folder.name + "-hf")
    )
    was_training, device = model.training, model.device
    try:
        return _write(model.cpu().eval(), output, batch_size, seq_len, check)
    finally:
        model.to(device).train(was_training)


def _write(
    model: EffkitModel, path: Path, batch_size: int, seq_len: int, check: bool
) -> dict[str, Any]:
    """:func:`export_hf` for a model on the CPU in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from effkit.storage import atomic_dir
    from effkit.task import TOKEN

    stock = stock_model(model)
    with quiet_transformers(), atomic_dir(path) as tmp:
        stock.save_pretrained(tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(_card(model, stock), encoding="utf-8")
    report: dict[str, Any] = {
        "path": str(path),
        "format": "hf",
        "class": type(stock).__name__,
        "dtype": str(stock.config.dtype).removeprefix("torch."),
        "num_parameters": sum(p.numel() for p in stock.parameters()),
    }
    if check:
        auto = (
            AutoModelForTokenClassification
            if model.task.type == TOKEN
            else (AutoModelForSequenceClassification)
        )
        with quiet_transformers():
            back = auto.from_pretrained(str(path)).eval()
        graph = ExportGraph(model)
        inputs = example_inputs(model, graph, batch_size, seq_len, seed=0)
        with torch.inference_mode():
            expected = reference_logits(model, graph, inputs)
            got = back(**inputs).logits.float()
        diff = float((expected - got).abs().max())
        limit = TOLERANCE.get(stock.config.dtype, 1e-5)
        report["check"] = {"class_loaded": type(back).__name__, "max_abs_diff": diff,
                           "tolerance": limit, "ok": diff <= limit}  # fmt: skip
        if diff > limit:
            raise ModelError(
                f"the stock folder's logits differ from the model's by {diff:.3g} (tolerance "
                f"{limit:g})",
                where=WHERE,
            )
    return report


def _card(model: EffkitModel, stock: nn.Module) -> str:
    stack = ", ".join(t.registered_name() for t in model.transforms) or "none"
    return (
        "---\nlibrary_name: transformers\n---\n\n"
        f"# {type(stock).__name__} exported by effkit\n\n"
        f"Starting model `{model.source}`, transforms: {stack}. A stock transformers folder: "
        "load it with `AutoModelFor...from_pretrained(folder)` or `pipeline(task, "
        "model=folder)`; effkit is not needed.\n"
    )
