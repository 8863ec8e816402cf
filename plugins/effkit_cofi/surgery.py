"""Physical pruning: cut out what the deterministic masks dropped, fold in what they scaled.

Every function here takes the indices to keep and, when pruning after training, the mask values
to fold into the remaining weights, so that the smaller model computes what the masked model
computed. :meth:`CoFiPrune.rebuild` calls the same functions with the saved indices and no values,
which recreates the shapes on a freshly built model before the saved weights are loaded.

Folding, per mask (``z`` values of the kept entries):

- ``head_z``: scales the rows (weights and bias) of ``value`` that belong to the head; the
  attention probabilities of a row sum to 1, so the head's context vector is scaled by ``z``;
- ``mha_z``, ``ffn_z`` and ``hidden_z`` on a block's output: scale the output dense layer's rows;
- ``intermediate_z``: scales the columns of the output dense layer (it multiplies activations);
- ``hidden_z`` on LayerNorm outputs: scales the LayerNorm's weight and bias; on the embeddings'
  LayerNorm input: scales the columns of the word, position and token-type tables.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from effkit import EffkitModel, FollowsHiddenPruning, ModelError

from .encoder import (
    PassThrough,
    SkippedAttention,
    SkippedFeedForward,
    attention_removed,
    ffn_removed,
    hidden_consumers,
    layer_norms,
    layers_of,
)


def sliced_linear(
    linear: nn.Linear,
    *,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    row_scale: torch.Tensor | None = None,
    col_scale: torch.Tensor | None = None,
) -> nn.Linear:
    """A new Linear holding ``linear``'s kept rows/columns, optionally scaled."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if col_scale is not None:
        weight = weight * col_scale.to(weight)[None, :]
    if row_scale is not None:
        weight = weight * row_scale.to(weight)[:, None]
        bias = bias * row_scale.to(bias) if bias is not None else None
    if rows is not None:
        weight = weight[rows.to(weight.device)]
        bias = bias[rows.to(bias.device)] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols.to(weight.device)]
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)  # fmt: skip
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    out.train(linear.training)
    return out


def sliced_layer_norm(norm: nn.LayerNorm, kept: torch.Tensor) -> nn.LayerNorm:
    weight = norm.weight.detach() if norm.weight is not None else None
    bias = norm.bias.detach() if norm.bias is not None else None
    like = weight if weight is not None else bias
    out = nn.LayerNorm(len(kept), eps=norm.eps, elementwise_affine=weight is not None,
                       bias=bias is not None, device=like.device if like is not None else None,
                       dtype=like.dtype if like is not None else None)  # fmt: skip
    with torch.no_grad():
        if weight is not None:
            out.weight.copy_(weight[kept.to(weight.device)])
        if bias is not None:
            out.bias.copy_(bias[kept.to(bias.device)])
    return out


@torch.no_grad()
def scale_layer_norm(norm: nn.LayerNorm, scale: torch.Tensor) -> None:
    if norm.weight is not None:
        norm.weight.mul_(scale.to(norm.weight))
    if norm.bias is not None:
        norm.bias.mul_(scale.to(norm.bias))


def block_output_scale(
    block: torch.Tensor | None, hidden: torch.Tensor | None
) -> torch.Tensor | None:
    """The factor on a block's output: its whole-block mask times the hidden mask."""
    if block is None:
        return hidden
    return block * hidden if hidden is not None else block.reshape(1)


def prune_attention(
    layer: Any,
    kept: torch.Tensor,
    *,
    head_scale: torch.Tensor | None = None,
    out_scale: torch.Tensor | None = None,
) -> None:
    """Keep the heads ``kept`` of a layer's attention block (none left: remove the block)."""
    attention = layer.attention
    dense = attention.output.dense
    if len(kept) == 0:
        bias = dense.bias.detach() if dense.bias is not None else torch.zeros(dense.out_features)
        if out_scale is not None:
            bias = bias * out_scale.to(bias)
        layer.attention = SkippedAttention(attention.output.LayerNorm, bias.to(dense.weight))
        layer.attention.train(attention.training)
        return
    self_attention = attention.self
    size = int(self_attention.attention_head_size)
    kept = kept.to(dense.weight.device)
    index = (kept[:, None] * size + torch.arange(size, device=kept.device)).reshape(-1)
    value_scale = None
    if head_scale is not None:
        value_scale = torch.zeros(dense.in_features, device=dense.weight.device)
        value_scale[index] = head_scale.to(value_scale)[kept].repeat_interleave(size)
    self_attention.query = sliced_linear(self_attention.query, rows=index)
    self_attention.key = sliced_linear(self_attention.key, rows=index)
    self_attention.value = sliced_linear(self_attention.value, rows=index, row_scale=value_scale)
    attention.output.dense = sliced_linear(dense, cols=index, row_scale=out_scale)
    self_attention.num_attention_heads = len(kept)
    self_attention.all_head_size = len(kept) * size


def prune_ffn(
    layer: Any,
    kept: torch.Tensor,
    *,
    dim_scale: torch.Tensor | None = None,
    out_scale: torch.Tensor | None = None,
) -> None:
    """Keep the intermediate dimensions ``kept`` of a layer (none left: remove the block)."""
    dense = layer.output.dense
    if len(kept) == 0:
        bias = dense.bias.detach() if dense.bias is not None else torch.zeros(dense.out_features)
        if out_scale is not None:
            bias = bias * out_scale.to(bias)
        training = layer.output.training
        layer.intermediate = PassThrough()
        layer.output = SkippedFeedForward(layer.output.LayerNorm, bias.to(dense.weight))
        layer.output.train(training)
        return
    kept = kept.to(dense.weight.device)
    layer.intermediate.dense = sliced_linear(layer.intermediate.dense, rows=kept)
    layer.output.dense = sliced_linear(dense, cols=kept, row_scale=out_scale,
                                       col_scale=dim_scale)  # fmt: skip


def _outermost_pruners(model: nn.Module) -> list[FollowsHiddenPruning]:
    """Submodules that follow hidden pruning, not counting those inside another such one."""
    found: list[tuple[str, FollowsHiddenPruning]] = []
    for name, module in model.named_modules():
        if module is model or not isinstance(module, FollowsHiddenPruning):
            continue
        if any(name.startswith(prefix + ".") for prefix, _ in found):
            continue
        found.append((name, module))
    return [module for _, module in found]


@torch.no_grad()
def scale_hidden(base: Any, z: torch.Tensor) -> None:
    """Fold ``hidden_z`` into the embeddings' tables and every hidden-width LayerNorm."""
    embeddings = base.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table = getattr(embeddings, name, None)
        if table is not None:
            table.weight.mul_(z.to(table.weight)[None, :])
    for norm, removed in layer_norms(base):
        scale_layer_norm(norm, z)
        if removed is not None:
            bias: torch.Tensor = removed.bias  # type: ignore[assignment]
            bias.mul_(z.to(bias))


def prune_hidden_followers(model: EffkitModel, kept: torch.Tensor) -> None:
    """Tell the sub-modules that keep hidden-width tensors of their own (``prune_hidden``)."""
    for module in _outermost_pruners(model):
        module.prune_hidden(kept)


def prune_hidden(model: EffkitModel, base: Any, kept: torch.Tensor) -> None:
    """Keep the hidden dimensions ``kept`` in every encoder tensor of the hidden width, and in
    the pooler or task head that reads the encoder's states (not in :func:`prune_hidden_followers`).
    """
    if len(kept) == 0:
        raise ModelError("every hidden dimension was pruned; lower the sparsity")
    embeddings = base.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table = getattr(embeddings, name, None)
        if table is None:
            continue
        weight = table.weight.detach()[:, kept.to(table.weight.device)].clone()
        table.weight = nn.Parameter(weight)
        table.embedding_dim = len(kept)
    embeddings.LayerNorm = sliced_layer_norm(embeddings.LayerNorm, kept)
    for layer in layers_of(base):
        if attention_removed(layer):
            block = layer.attention
            block.bias = nn.Parameter(block.bias.detach()[kept.to(block.bias.device)].clone())
            block.LayerNorm = sliced_layer_norm(block.LayerNorm, kept)
        else:
            attention = layer.attention
            for name in ("query", "key", "value"):
                setattr(attention.self, name,
                        sliced_linear(getattr(attention.self, name), cols=kept))  # fmt: skip
            attention.output.dense = sliced_linear(attention.output.dense, rows=kept)
            attention.output.LayerNorm = sliced_layer_norm(attention.output.LayerNorm, kept)
        if ffn_removed(layer):
            block = layer.output
            block.bias = nn.Parameter(block.bias.detach()[kept.to(block.bias.device)].clone())
            block.LayerNorm = sliced_layer_norm(block.LayerNorm, kept)
        else:
            layer.intermediate.dense = sliced_linear(layer.intermediate.dense, cols=kept)
            layer.output.dense = sliced_linear(layer.output.dense, rows=kept)
            layer.output.LayerNorm = sliced_layer_norm(layer.output.LayerNorm, kept)
    for consumer in hidden_consumers(model, base):
        setattr(consumer.owner, consumer.attribute, sliced_linear(consumer.linear, cols=kept))
