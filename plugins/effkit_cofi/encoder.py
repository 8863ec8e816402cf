"""Where CoFi's structures live in a BERT-family encoder; the modules that replace removed blocks.

The layout is the one BERT, RoBERTa, ELECTRA and MiniLM share in transformers:
``base = getattr(hf, hf.base_model_prefix)`` with ``base.embeddings`` and
``base.encoder.layer[i]``, each layer holding ``attention.self.{query,key,value}``,
``attention.output.{dense,LayerNorm}``, ``intermediate.dense`` and ``output.{dense,LayerNorm}``.

transformers 5 reshapes the attention projections as ``(..., -1, attention_head_size)``, so a
layer with fewer heads only needs narrower ``query``/``key``/``value`` and ``output.dense``;
``num_attention_heads`` and ``all_head_size`` are updated to match. A block with no head or no
feed-forward dimension left is replaced by a module that computes what the masked block
computed: ``LayerNorm(input + bias)``, where ``bias`` is the (masked) output bias of the removed
dense layer, zero when a whole-block mask removed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from effkit import EffkitModel, ModelError


class SkippedAttention(nn.Module):
    """An attention block with nothing left: ``LayerNorm(hidden_states + bias)``."""

    def __init__(self, layer_norm: nn.LayerNorm, bias: torch.Tensor) -> None:
        super().__init__()
        self.LayerNorm = layer_norm
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return self.LayerNorm(hidden_states + self.bias), None


class PassThrough(nn.Module):
    """Stands in for the intermediate layer of a removed feed-forward block."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states


class SkippedFeedForward(nn.Module):
    """The output of a feed-forward block with nothing left: ``LayerNorm(input_tensor + bias)``."""

    def __init__(self, layer_norm: nn.LayerNorm, bias: torch.Tensor) -> None:
        super().__init__()
        self.LayerNorm = layer_norm
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(input_tensor + self.bias)


def checked_base(model: EffkitModel) -> Any:
    """The transformers base model, checked to have the parts CoFi prunes in every layer."""
    base = model.base
    model.encoder_layers()  # the BERT-family layout, or a clear error
    for index, layer in enumerate(layers_of(base)):
        if not attention_removed(layer) and not hasattr(layer.attention.self, "query"):
            raise ModelError(f"encoder layer {index} has no attention.self.query to prune")
        if not ffn_removed(layer) and not hasattr(layer.intermediate, "dense"):
            raise ModelError(f"encoder layer {index} has no intermediate.dense to prune")
    return base


def layers_of(base: Any) -> list[Any]:
    """The encoder's layers (transformers modules, typed loosely: their parts are read by name)."""
    return list(base.encoder.layer)


def attention_removed(layer: Any) -> bool:
    return isinstance(layer.attention, SkippedAttention)


def ffn_removed(layer: Any) -> bool:
    return isinstance(layer.output, SkippedFeedForward)


def head_count(layer: Any) -> int:
    """Attention heads of a layer right now (0 when its block was removed)."""
    if attention_removed(layer):
        return 0
    attention = layer.attention.self
    return int(attention.query.out_features // attention.attention_head_size)


def head_dim(layer: Any, default: int) -> int:
    if attention_removed(layer):
        return default
    return int(layer.attention.self.attention_head_size)


def ffn_width(layer: Any) -> int:
    """Intermediate width of a layer right now (0 when its block was removed)."""
    return 0 if ffn_removed(layer) else int(layer.intermediate.dense.out_features)


def layer_norms(base: Any) -> list[tuple[nn.LayerNorm, nn.Module | None]]:
    """Every LayerNorm on the hidden width, with the removed block it belongs to (if any).

    The embeddings' LayerNorm comes first.
    """
    out: list[tuple[nn.LayerNorm, nn.Module | None]] = [(base.embeddings.LayerNorm, None)]
    for layer in layers_of(base):
        if attention_removed(layer):
            out.append((layer.attention.LayerNorm, layer.attention))
        else:
            out.append((layer.attention.output.LayerNorm, None))
        if ffn_removed(layer):
            out.append((layer.output.LayerNorm, layer.output))
        else:
            out.append((layer.output.LayerNorm, None))
    return out


@dataclass
class Consumer:
    """A module after the encoder that reads hidden-width states, and its input linear layer."""

    module: nn.Module
    owner: nn.Module
    attribute: str

    @property
    def linear(self) -> nn.Linear:
        linear: nn.Linear = getattr(self.owner, self.attribute)
        return linear


def hidden_consumers(model: EffkitModel, base: Any) -> list[Consumer]:
    """The modules after the encoder that read hidden-width states.

    The pooler when there is one; the task head when it reads the encoder's states itself
    (token classification, or models without a pooler such as RoBERTa and ELECTRA).
    """
    consumers: list[Consumer] = []
    pooler = getattr(base, "pooler", None)
    if pooler is not None:
        consumers.append(_consumer(pooler, base, "pooler"))
    if pooler is None or model.task.type == "token-classification":
        consumers.append(_consumer(getattr(model.hf, "classifier", None), model.hf, "classifier"))
    return consumers


def _consumer(module: Any, parent: nn.Module, name: str) -> Consumer:
    if isinstance(module, nn.Linear):
        return Consumer(module, parent, name)
    if isinstance(getattr(module, "dense", None), nn.Linear):
        return Consumer(module, module, "dense")
    raise ModelError(
        f"cannot find the input layer of {type(parent).__name__}.{name} to follow hidden pruning"
    )
