"""The masks at work during training: forward hooks that multiply where CoFi multiplies.

Nothing in the transformers model is replaced while the masks train; hooks do the masking,
and removing them gives back the unmasked model. Per forward pass of the base model the mask
values are drawn once (a pre-hook on the base model) and every hook reads the same draw (a
recomputation after the pass, as activation checkpointing does, would draw again; effkit's
training loop does not checkpoint activations):

==================================  ================================================================
where                               what (CoFi's ``modeling_bert.py``)
==================================  ================================================================
``attention.output.dense`` input    ``head_z``: each head's context vector, before the dense layer
``attention.output.dense`` output   ``mha_z * hidden_z``: before dropout, residual and LayerNorm
``intermediate`` output             ``intermediate_z``: after the activation
``output.dense`` output             ``ffn_z * hidden_z``: before dropout, residual and LayerNorm
every hidden-width LayerNorm        statistics over the kept hidden dimensions only (CoFi's
                                    ``CoFiLayerNorm``), output times ``hidden_z``; the embeddings'
                                    LayerNorm also multiplies its input by ``hidden_z`` first
``encoder`` input, pooler/head      the 0/1 pattern of ``hidden_z`` (see below)
==================================  ================================================================

The embeddings' ``hidden_z`` is applied inside the embeddings module (on its LayerNorm), so
every instance is masked before anything that hooks the embeddings' output sees it: with a
multiplexed model, before the multiplexer mixes the instances, whatever order the hooks were
registered in. Two more hooks multiply by the 0/1 pattern of ``hidden_z``: the encoder's input
and the input of the modules after the encoder (pooler, or the task head). For a plain model both
are no-ops (those states are already zero there); for a multiplexed model they zero what the
multiplexer (a prefix, an orthogonal mix) and the demultiplexer put in dropped dimensions, which
is what the model computes once those dimensions are cut out and ``prune_hidden`` has sliced
the adapter. One combination stays approximate: T-MUX prefix tokens are added after the
embeddings, inside the multiplexing hook, so with the orthogonal multiplexer (which mixes
dimensions) their dropped dimensions still reach kept ones while the masks train; after
``finalize`` they are gone. Every other combination is exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .encoder import (
    attention_removed,
    ffn_removed,
    hidden_consumers,
    layer_norms,
    layers_of,
)
from .hardconcrete import CoFiMasks, Masks


def masked_layer_norm(
    x: torch.Tensor, norm: nn.LayerNorm, z: torch.Tensor, scale_input: bool
) -> torch.Tensor:
    """LayerNorm with statistics over the dimensions where ``z != 0``, then times ``z``."""
    if scale_input:
        x = x * z
    keep = (z != 0).to(x.dtype)
    count = keep.sum().clamp(min=1.0)
    mean = (x * keep).sum(-1, keepdim=True) / count
    centred = (x - mean) * keep
    var = centred.pow(2).sum(-1, keepdim=True) / count
    out = centred * torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        out = out * norm.weight
    if norm.bias is not None:
        out = out + norm.bias
    return out * z


def install(model: nn.Module, base: Any, masks: CoFiMasks) -> list[RemovableHandle]:
    """Register every masking hook on ``model``; returns the handles that remove them."""
    handles: list[RemovableHandle] = []

    def values() -> Masks:
        return masks.values(base.training)

    def begin(_module: nn.Module, _args: Any) -> None:
        masks.current = masks.draw(base.training)

    def end(_module: nn.Module, _args: Any, _output: Any) -> None:
        masks.current = None  # no graph kept between passes (the model stays deep-copyable)

    handles.append(base.register_forward_pre_hook(begin))
    handles.append(base.register_forward_hook(end))

    for index, layer in enumerate(layers_of(base)):
        if not attention_removed(layer):
            dense = layer.attention.output.dense
            head_size = int(layer.attention.self.attention_head_size)
            handles.append(dense.register_forward_pre_hook(_heads_hook(values, index, head_size)))
            handles.append(dense.register_forward_hook(_block_hook(values, index, "mha")))
        if not ffn_removed(layer):
            handles.append(layer.intermediate.register_forward_hook(_ffn_dims_hook(values, index)))
            handles.append(
                layer.output.dense.register_forward_hook(_block_hook(values, index, "ffn"))
            )

    if masks.hidden_log_alpha is None:
        return handles
    for position, (norm, removed) in enumerate(layer_norms(base)):
        bias = getattr(removed, "bias", None)
        handles.append(norm.register_forward_hook(_norm_hook(values, position == 0, bias)))

    def zero_dropped(_module: nn.Module, args: Any) -> Any:
        z = values().hidden
        if z is None or not args or not torch.is_tensor(args[0]):
            return None
        return (args[0] * (z != 0).to(args[0].dtype), *args[1:])

    handles.append(base.encoder.register_forward_pre_hook(zero_dropped))
    for consumer in hidden_consumers(model, base):  # type: ignore[arg-type]
        handles.append(consumer.module.register_forward_pre_hook(zero_dropped))
    return handles


def _heads_hook(values: Any, index: int, head_size: int) -> Any:
    def hook(_module: nn.Module, args: Any) -> Any:
        z = values().heads.get(index)
        if z is None:
            return None
        scale = z.to(args[0].dtype).repeat_interleave(head_size)
        return (args[0] * scale, *args[1:])

    return hook


def _block_hook(values: Any, index: int, kind: str) -> Any:
    def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
        masks: Masks = values()
        block = (masks.mha if kind == "mha" else masks.ffn).get(index)
        if block is not None:
            output = output * block
        if masks.hidden is not None:
            output = output * masks.hidden
        return output

    return hook


def _ffn_dims_hook(values: Any, index: int) -> Any:
    def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
        z = values().ffn_dims.get(index)
        return None if z is None else output * z

    return hook


def _norm_hook(values: Any, scale_input: bool, removed_bias: torch.Tensor | None) -> Any:
    def hook(module: nn.Module, args: Any, _output: torch.Tensor) -> torch.Tensor | None:
        z = values().hidden
        if z is None:
            return None
        x = args[0]
        if removed_bias is not None:  # a removed block adds its bias: mask that as an output
            x = x - removed_bias * (1.0 - z)
        return masked_layer_norm(x, module, z, scale_input)  # type: ignore[arg-type]

    return hook
