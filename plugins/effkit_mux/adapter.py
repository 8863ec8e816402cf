"""The multiplexed forward pass around any BERT-family encoder.

:class:`MuxAdapter` takes over :class:`effkit.EffkitModel`'s forward pass. For a batch of B
inputs it

1. arranges them into G = ceil(B / N) groups of N slots (in input order, or shuffled with the
   model's ``inference_seed``); a last group that is not full is filled with copies of its own
   members, whose outputs are discarded;
2. runs the transformers model on the G * N instances, with two forward hooks: after the
   embeddings, the multiplexer mixes each group into one row (``[G, L, E]``); after the encoder,
   the demultiplexer splits each row back into N instance states. With ``mix_after=K`` the
   embeddings stay per instance and the first K encoder layers run on every instance with its
   own attention mask; a pre-hook on layer K mixes the groups there, and pre-hooks on the
   later layers give them the groups' combined mask (the hooks are placed on the layers at each
   pass, so a layer selection made afterwards is followed);
3. gives every input exactly one row of logits, in input order.

The attention masks of a group are combined (their union), so the encoder never attends to a
position that is padding in every instance; segment ids go through the embeddings per
instance, so sentence pairs keep them. Sequence tasks demultiplex only the first position (the
one the classification head reads), or with ``pooling="mean"`` every position of the instance,
averaged into the position the head reads; token tasks demultiplex every position.

In ensembling mode every input is run N times, in each of the N slots of its group (the slots
are rotated), and the N logits are averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from effkit import EffkitModel, ModelError

from .datamux import build_mux_plms, embed_again, vocab_head
from .demultiplexers import build_demultiplexer
from .heads import VocabHead
from .multiplexers import build_multiplexer


@dataclass
class Layout:
    """How B inputs sit in G groups of N slots."""

    order: torch.Tensor
    """``[G * N]`` input index held by each slot."""
    first: torch.Tensor
    """``[B]`` the slot whose output is input b's prediction."""
    groups: int


def plan(
    batch: int, n: int, *, seed: int | None = None, shift: int = 0, device: Any = None
) -> Layout:
    """Arrange ``batch`` inputs into groups of ``n`` slots (see the module docstring)."""
    groups = math.ceil(batch / n)
    if seed is None:
        perm = torch.arange(batch)
    else:
        perm = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    slots = torch.empty(groups * n, dtype=torch.long)
    for g in range(groups):
        members = perm[g * n : (g + 1) * n]
        fill = members.repeat(math.ceil(n / len(members)))[:n]
        slots[g * n : (g + 1) * n] = torch.roll(fill, shifts=shift)
    first = torch.full((batch,), -1, dtype=torch.long)
    for position in range(groups * n - 1, -1, -1):  # keep each input's lowest slot
        first[slots[position]] = position
    return Layout(order=slots.to(device), first=first.to(device), groups=groups)


class MuxAdapter(nn.Module):
    """Multiplexer + demultiplexer + the grouping logic; see the module docstring."""

    def __init__(
        self,
        model: EffkitModel,
        *,
        n: int,
        mux: str,
        demux: str,
        demux_depth: int,
        key_seed: int,
        pooling: str = "first",
        key_mean: float = 0.0,
        key_std: float = 1.0,
        mix_after: int = 0,
        layout: str = "effkit",
        official_inputs: bool = False,
    ) -> None:
        super().__init__()
        config = model.hf.config
        self.released = layout == "mux-plms"
        """Whether the modules are those of the released MUX-PLMs checkpoints (datamux.py)."""
        self.official_inputs = official_inputs
        self.n = n
        self.pooling = pooling
        self.mix_after = mix_after
        self.token_task = model.task.type == "token-classification"
        base = model.base
        self._check_mix_after(model)
        width, hidden = model.embedding_width, model.hidden_width
        heads = int(getattr(config, "num_attention_heads", 1))
        self.multiplexer: Any
        self.demultiplexer: Any
        if layout == "mux-plms":  # the released checkpoints' modules (datamux.py)
            self.multiplexer, self.demultiplexer = build_mux_plms(
                config, str(getattr(config, "model_type", "")), n=n, mux=mux, width=width,
                hidden=hidden, depth=demux_depth, seed=key_seed,
                mask_across=official_inputs and not self.token_task,
            )  # fmt: skip
        else:
            self.multiplexer = build_multiplexer(
                mux, n, hidden if mix_after else width, heads, key_seed, mean=key_mean, std=key_std
            )
            self.demultiplexer = build_demultiplexer(demux, n, hidden, width, demux_depth)
        self.ensemble = 1
        """Slots each input runs in at inference; its logits are averaged over them."""
        self.lm_head: nn.Module | None = None
        self.electra_head: nn.Module | None = None
        self._layout: Layout | None = None
        self.layout: Layout | None = None
        """The arrangement of the last full forward pass."""
        self._mask: torch.Tensor | None = None
        self._raw = False
        self.last_hidden: torch.Tensor | None = None
        """The multiplexed encoder output of the last forward pass, ``[G, P + L, H]``."""
        self.last_states: torch.Tensor | None = None
        """The demultiplexed states the task head read in the last full forward pass, one row per
        slot ``[G * N, L', H]`` (``L' = 1`` for sequence tasks); None after a raw pass."""
        self._hooks = [
            base.embeddings.register_forward_hook(self._after_embeddings),
            base.encoder.register_forward_hook(self._after_encoder),
        ]

    def new_vocab_head(self, model: EffkitModel) -> nn.Module:
        """A fresh vocabulary (retrieval / MLM) head of this adapter's layout."""
        if self.released:
            config = model.hf.config
            family = str(getattr(config, "model_type", ""))
            embeddings = model.base.embeddings.word_embeddings
            return vocab_head(config, family, embeddings, model.hidden_width)
        return VocabHead(model)

    def _check_mix_after(self, model: EffkitModel) -> list[nn.Module]:
        layers = list(model.encoder_layers())
        if self.mix_after >= len(layers):
            raise ModelError(
                f"multiplex: mix_after={self.mix_after} leaves no layer to run multiplexed; the "
                f"encoder has {len(layers)} layers (mix_after 0..{len(layers) - 1})"
            )
        return layers

    @property
    def extra_positions(self) -> int:
        return int(getattr(self.demultiplexer, "extra_positions", 0))

    def prune_hidden(self, kept: torch.Tensor) -> None:
        """Follow hidden-dimension pruning: keep only the ``kept`` embedding/hidden dimensions.

        The multiplexer keys and the demultiplexer's input and output are sliced so that the
        model computes what it computed with those dimensions masked to zero. The pre-training
        heads (vocabulary, discriminator) are dropped: inference does not use them.
        """
        for part in (self.multiplexer, self.demultiplexer):
            if not hasattr(part, "prune_hidden"):
                raise ModelError(
                    f"hidden-dimension pruning does not support the {type(part).__name__} "
                    "of a multiplexed model; prune heads and FFN dimensions only"
                )
        self.multiplexer.prune_hidden(kept)
        self.demultiplexer.prune_hidden(kept)
        self.lm_head = None
        self.electra_head = None

    # ------------------------------------------------------------------ hooks

    def instance_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Each slot's own attention mask ``[G * N, P + L]``, the prefix positions included."""
        if not self.extra_positions:
            return mask
        ones = torch.ones(mask.shape[0], self.extra_positions, dtype=mask.dtype,
                          device=mask.device)  # fmt: skip
        return torch.cat([ones, mask], dim=1)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        """Mix the slots' states ``[G * N, P + L, W]`` into ``[G, P + L, W]``."""
        assert self._mask is not None
        rows, length, width = x.shape
        mask = self.instance_mask(self._mask).view(rows // self.n, self.n, length)
        return self.multiplexer(x.view(rows // self.n, self.n, length, width), mask)

    def _after_embeddings(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if self._layout is None or self._mask is None:
            return output  # not called through the adapter (e.g. a teacher sharing modules)
        slots = torch.arange(output.shape[0], device=output.device) % self.n
        prefix = self.demultiplexer.prefix(slots)
        x = output if prefix is None else torch.cat([prefix.to(output.dtype), output], dim=1)
        if self.mix_after:
            return x
        mixed = self._mix(x)
        return embed_again(module, mixed) if self.released else mixed

    def _union(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The encoder's per-slot attention mask (any format) merged over each group's slots."""
        if mask is None:
            return None
        grouped = mask.view(mask.shape[0] // self.n, self.n, *mask.shape[1:])
        return grouped.any(dim=1) if mask.dtype == torch.bool else grouped.amax(dim=1)

    def _mix_before(self, module: nn.Module, args: Any) -> Any:
        """Before layer ``mix_after``: mix the slots, and give the layer the groups' mask."""
        if self._layout is None:
            return None
        return (self._mix(args[0]), self._union(args[1] if len(args) > 1 else None), *args[2:])

    def _union_before(self, module: nn.Module, args: Any) -> Any:
        """Before each later layer: the groups' mask instead of the slots' one."""
        if self._layout is None or len(args) < 2:
            return None
        return (args[0], self._union(args[1]), *args[2:])

    def _after_encoder(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self._layout is None:
            return output
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.last_hidden = hidden
        if self._raw:
            return output
        p = self.extra_positions
        if not self.token_task and self.pooling == "first":
            hidden = hidden[:, : p + 1]  # the classification head reads the first position
        states = self.demultiplexer(hidden)  # [G, N, L', H]
        states = states.reshape(-1, states.shape[2], states.shape[3])
        if not self.token_task and self.pooling == "mean":
            assert self._mask is not None
            weights = self._mask.to(states.dtype)[..., None]  # each instance's own tokens
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            states = pooled[:, None]  # the head reads position 0: put the mean there
        self.last_states = states
        if hasattr(output, "last_hidden_state"):
            output.last_hidden_state = states
            if output.get("hidden_states"):  # DeBERTa's model reads the last of these
                output.hidden_states = (*output.hidden_states[:-1], states)
            return output
        return (states, *output[1:])

    def head_states(self) -> torch.Tensor | None:
        """Per input, in input order, the states the task head read in the last full forward
        pass ``[B, L', H]`` (the last arrangement's in ensembling mode); None after a raw pass."""
        if self.last_states is None or self.layout is None:
            return None
        return self.last_states[self.layout.first]

    # ------------------------------------------------------------------ forward

    def combined_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The union of each group's attention masks, with the prefix positions when present."""
        union = self._union(self.instance_mask(mask))
        assert union is not None
        return union

    def run(
        self,
        model: EffkitModel,
        layout: Layout,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        raw: bool = False,
    ) -> Any:
        """Run the transformers model on one arrangement; outputs are per slot ``[G * N, ...]``."""
        ids, mask = input_ids[layout.order], attention_mask[layout.order]
        kwargs: dict[str, Any] = {}
        if token_type_ids is not None and not self.official_inputs:
            kwargs["token_type_ids"] = token_type_ids[layout.order]
        self._layout, self._mask, self._raw = layout, mask, raw
        self.last_states = None
        hooks = []
        # embeddings that apply the attention mask themselves (DeBERTa) take each slot's own;
        # the encoder then gets the groups' mask
        own_masks = bool(self.mix_after) or masks_embeddings(model)
        if own_masks and not self.mix_after:
            hooks.append(model.base.encoder.register_forward_pre_hook(self._union_before))
        if self.mix_after:  # on the layers as they are now (layer selection may have changed them)
            layers = self._check_mix_after(model)
            hooks.append(layers[self.mix_after].register_forward_pre_hook(self._mix_before))
            hooks += [layer.register_forward_pre_hook(self._union_before)
                      for layer in layers[self.mix_after + 1 :]]  # fmt: skip
        try:
            target = model.base if raw else model.hf
            given = self.instance_mask(mask) if own_masks else self.combined_mask(mask)
            if self.official_inputs:  # as the released models were trained: padding attended
                given = torch.ones_like(given)
            return target(input_ids=ids, attention_mask=given, **kwargs)
        finally:
            self._layout, self._mask, self._raw = None, None, False
            for hook in hooks:
                hook.remove()

    def forward(
        self,
        model: EffkitModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch = input_ids.shape[0]
        shifts = range(1 if self.training else self.ensemble)
        total: torch.Tensor | None = None
        outputs: Any = None
        for shift in shifts:
            layout = plan(batch, self.n, seed=model.inference_seed, shift=shift,
                          device=input_ids.device)  # fmt: skip
            self.layout = layout
            outputs = self.run(model, layout, input_ids, attention_mask, token_type_ids)
            logits = outputs.logits[layout.first]
            total = logits if total is None else total + logits
        assert total is not None
        outputs.logits = total / len(shifts)
        return outputs


MASKED_EMBEDDINGS = frozenset({"deberta", "deberta-v2"})
"""transformers families whose embeddings multiply each input by its attention mask."""


def masks_embeddings(model: EffkitModel) -> bool:
    """Whether the model's embeddings apply the attention mask (so they need each slot's own)."""
    return getattr(model.hf.config, "model_type", "") in MASKED_EMBEDDINGS


def adapter_of(model: EffkitModel, objective: str) -> MuxAdapter:
    """The model's multiplexing adapter; an error naming the objective when there is none."""
    if not isinstance(model.adapter, MuxAdapter):
        raise ModelError(
            f"objective '{objective}' trains a multiplexed model: apply the multiplex transform "
            "in this stage or an earlier one"
        )
    return model.adapter
