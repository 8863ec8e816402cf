"""The graph an export traces: a model's inference pass with tensors in and logits out.

A plain or pruned model's graph is its forward pass: ``input_ids`` and ``attention_mask`` (and
``token_type_ids`` when the encoder has segment embeddings), each ``[batch, seq]`` int64, in;
``logits`` ``[batch, labels]`` (``[batch, seq, labels]`` for token tasks) out.

The core knows nothing more. A transform whose model cannot be traced that way supplies its own
graph through :meth:`effkit.Transform.export_graph`, called for every transform in the
model's history, in order, on the graph so far: it may wrap it, replace it, or refuse with a
:class:`~effkit.ModelError` that says why. A model whose forward pass an adapter has taken over
exports only when one of its transforms implements that hook (returning the graph unchanged
says that the adapter's forward pass traces as it is). A graph that takes several inputs per row (a
multiplexed model runs N inputs in one pass) says so with :attr:`ExportGraph.group_size`: its
inputs are then ``[groups, N, seq]`` and its logits ``[groups, N, ...]``, one row per input in
the slots given, and everything else here (example inputs, dynamic axes, the ONNX Runtime
runner) follows from that number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from effkit.bench import low_id_for, make_inputs
from effkit.errors import ModelError
from effkit.transform import ExportGraph, Transform

if TYPE_CHECKING:
    from effkit.models import EffkitModel

WHERE = "export"


class PlainGraph(nn.Module):
    """The model's forward pass with tensors in and logits out."""

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


def export_graph(model: EffkitModel) -> ExportGraph:
    """The model's graph: the plain forward pass, as each of its transforms leaves it."""
    graph = ExportGraph(module=PlainGraph(model))
    declared = False  # whether a transform says how the model exports
    for transform in model.transforms:
        declared |= type(transform).export_graph is not Transform.export_graph
        graph = transform.export_graph(model, graph)
        if not isinstance(graph, ExportGraph):
            raise ModelError(
                f"the '{transform.registered_name()}' transform's export_graph returned "
                f"{type(graph).__name__}, not an ExportGraph",
                where=WHERE,
            )
    if model.adapter is not None and not declared:
        raise ModelError(
            f"the model's forward pass is taken over by {type(model.adapter).__name__}, and "
            "none of its transforms supplies an export graph for it",
            where=WHERE,
            hint="the transform that installs the adapter implements Transform.export_graph",
        )
    return graph


def input_names(model: EffkitModel) -> list[str]:
    """The graph's inputs: segment ids only for encoders that have segment embeddings."""
    names = ["input_ids", "attention_mask"]
    return [*names, "token_type_ids"] if model.type_vocab_size > 0 else names


def example_inputs(
    model: EffkitModel,
    graph: ExportGraph,
    batch: int,
    seq_len: int,
    *,
    seed: int = 0,
    padding: bool = True,
) -> dict[str, torch.Tensor]:
    """Random ids for ``batch`` inputs of ``seq_len`` tokens in the graph's layout (``batch``
    rounded up to whole groups), with padding at the end of most rows."""
    size = graph.group_size or 1
    rows = math.ceil(batch / size) * size
    inputs = make_inputs(rows, seq_len, model.vocab_size, device=torch.device("cpu"), seed=seed,
                         type_vocab_size=model.type_vocab_size,
                         low_id=low_id_for(model.vocab_size))  # fmt: skip
    generator = torch.Generator().manual_seed(seed + 1)
    if padding and seq_len > 1:
        lengths = torch.randint(max(1, seq_len // 2), seq_len + 1, (rows,), generator=generator)
        lengths[0] = seq_len  # one full row, so that padding never covers the whole batch
        inputs["attention_mask"] = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    if "token_type_ids" in inputs and model.type_vocab_size > 1:
        inputs["token_type_ids"] = (
            torch.randint(0, 2, (rows, seq_len), generator=generator).cummax(dim=1).values
        )  # a first segment of 0s, then 1s, as a sentence pair has
    return {name: graph.fold(value) for name, value in inputs.items()}


@torch.inference_mode()
def reference_logits(
    model: EffkitModel, graph: ExportGraph, inputs: dict[str, torch.Tensor]
) -> torch.Tensor:
    """PyTorch's logits for graph-shaped ``inputs``, through ``EffkitModel.forward`` itself
    (with the inputs in the order given: no shuffling by ``inference_seed``)."""
    seed, model.inference_seed = model.inference_seed, None
    try:
        flat = {name: graph.unfold(value) for name, value in inputs.items()}
        logits = model(**flat).logits.float()
    finally:
        model.inference_seed = seed
    return graph.fold(logits)


def model_and_output(
    model_or_dir: EffkitModel | str | Path,
    path: str | Path | None,
    default: Callable[[Path], Path],
) -> tuple[EffkitModel, Path, Path | None]:
    """The model to export, where to write it and its folder (None for a model object).

    A folder is loaded and ``default(folder)`` is the output unless ``path`` is given; a model
    object needs ``path``.
    """
    from effkit.errors import EffkitError
    from effkit.models import EffkitModel, load

    if isinstance(model_or_dir, EffkitModel):
        if path is None:
            raise EffkitError("give the output path when exporting a model object", where=WHERE)
        return model_or_dir, Path(path), None
    folder = Path(model_or_dir)
    return load(folder), Path(path) if path is not None else default(folder), folder
