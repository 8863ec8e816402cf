"""The export graph of a multiplexed model: N inputs per row, the adapter's own pass, in order.

``MuxAdapter.forward`` plans the grouping with Python loops over the batch, which an exported
graph cannot keep for every batch size. With the groups given as an axis (inputs
``[groups, N, seq]``) the plan is the identity, rotated per slot in ensembling mode as the
adapter rotates it, expressed with tensor operations; the adapter's :meth:`~MuxAdapter.run`
does the rest exactly as at inference.
"""

from __future__ import annotations

import torch
from torch import nn

from effkit import EffkitModel, ExportGraph

from .adapter import Layout, MuxAdapter


class MuxGraph(nn.Module):
    """A multiplexed model on ``[groups, N, seq]`` inputs, returning ``[groups, N, ...]``."""

    def __init__(self, model: EffkitModel, adapter: MuxAdapter) -> None:
        super().__init__()
        self.model = model
        self.adapter = adapter

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        adapter = self.adapter
        groups, n, length = input_ids.shape
        base = torch.arange(groups * n, device=input_ids.device).view(groups, n)
        flat = [t.reshape(groups * n, length) for t in (input_ids, attention_mask)]
        types = None if token_type_ids is None else token_type_ids.reshape(groups * n, length)
        shifts = range(1 if adapter.training else adapter.ensemble)
        total: torch.Tensor | None = None
        for shift in shifts:
            layout = Layout(
                order=torch.roll(base, shift, 1).reshape(-1),
                first=torch.roll(base, -shift, 1).reshape(-1),
                groups=groups,
            )
            logits = adapter.run(self.model, layout, flat[0], flat[1], types).logits[layout.first]
            total = logits if total is None else total + logits
        assert total is not None
        total = total / len(shifts)
        return total.reshape(groups, n, *total.shape[1:])


def mux_graph(model: EffkitModel, adapter: MuxAdapter) -> ExportGraph:
    """The graph of a model whose forward pass ``adapter`` has taken over."""
    return ExportGraph(module=MuxGraph(model, adapter), group_size=adapter.n)
