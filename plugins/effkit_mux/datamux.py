"""The multiplexing architecture of the released MUX-PLMs checkpoints (``layout="mux-plms"``).

The checkpoints released with the paper (docs/released.md) were trained with modules that differ
from effkit's own in small but weight-relevant ways. This module has those modules, so that a
released checkpoint's weights compute what they were trained to compute:

- the Gaussian Hadamard multiplexer is effkit's :class:`~effkit_mux.multiplexers.HadamardMux`;
  its keys are unit-norm Gaussian rows (:func:`unit_keys`);
- :class:`AttentionV2Mux`, the contextual multiplexer ("gaussian_attention_v2"): a BERT layer
  over each instance with a residual around it, the Hadamard keys, a BERT layer across the N
  instances at each position with a residual around it, then the mean;
- :class:`IndexPosDemux`, the RSA demultiplexer ("index_pos"), whose task path and retrieval path
  share their first layer but differ after it;
- :class:`MuxPlmsVocabHead`, the retrieval / MLM head;
- :class:`FirstToken`, which stands for BERT's pooler: the released sequence classifiers read
  the demultiplexed first position directly.

After mixing, these models pass the mixed embeddings through the embeddings' position and
segment-0 embeddings and LayerNorm a second time (:func:`embed_again`): the authors' code hands
them to the encoder as ``inputs_embeds``, and their weights expect it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NEG = -10000.0
"""Additive attention mask of a padding position, as the checkpoints were trained with."""


def unit_keys(n: int, width: int, seed: int) -> torch.Tensor:
    """N Gaussian key vectors scaled to unit length (how the authors draw instance keys)."""
    keys = torch.randn(n, width, generator=torch.Generator().manual_seed(seed))
    return keys / keys.norm(dim=1, keepdim=True)


def embed_again(embeddings: Any, x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[G, L, E]`` plus position and segment-0 embeddings, then LayerNorm and dropout."""
    positions = torch.arange(x.shape[1], device=x.device)
    out = x + embeddings.position_embeddings(positions)[None]
    out = out + embeddings.token_type_embeddings.weight[0].to(x.dtype)
    return embeddings.dropout(embeddings.LayerNorm(out))


class BertStyleLayer(nn.Module):
    """One post-LayerNorm transformer layer as BERT builds it (attention, then a GELU FFN)."""

    def __init__(self, width: int, heads: int, intermediate: int, eps: float,
                 dropout: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attention_out = nn.Linear(width, width)
        self.attention_norm = nn.LayerNorm(width, eps=eps)
        self.ffn_in = nn.Linear(width, intermediate)
        self.ffn_out = nn.Linear(intermediate, width)
        self.ffn_norm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[R, L, W]``; ``mask`` ``[R, L]`` (1 keep, 0 padding) or None (attend to all)."""
        rows, length, width = x.shape
        size = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(rows, length, self.heads, size).transpose(1, 2)

        scores = split(self.query(x)) @ split(self.key(x)).transpose(-1, -2) / math.sqrt(size)
        if mask is not None:
            scores = scores + (1.0 - mask.to(scores.dtype))[:, None, None, :] * NEG
        weights = self.dropout(scores.softmax(dim=-1))
        context = (weights @ split(self.value(x))).transpose(1, 2).reshape(rows, length, width)
        x = self.attention_norm(self.dropout(self.attention_out(context)) + x)
        hidden = self.dropout(self.ffn_out(F.gelu(self.ffn_in(x))))
        return self.ffn_norm(hidden + x)


class AttentionV2Mux(nn.Module):
    """The contextual multiplexer of the released checkpoints ("gaussian_attention_v2").

    ``mask_across``: the layer across instances ignores instances that are padding at that
    position (the authors' sequence classifiers do this; their pre-training and token models do
    not).
    """

    keys: torch.Tensor

    def __init__(self, n: int, width: int, heads: int, intermediate: int, eps: float,
                 seed: int, mask_across: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("keys", unit_keys(n, width, seed))
        self.within = BertStyleLayer(width, heads, intermediate, eps)
        self.across = BertStyleLayer(width, heads, intermediate, eps)
        self.mask_across = mask_across

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g, n, length, width = x.shape
        flat = x.reshape(g * n, length, width)
        ctx = self.within(flat, mask.reshape(g * n, length)) + flat
        keyed = ctx.view(g, n, length, width) * self.keys.to(x.dtype)[None, :, None, :]
        across_in = keyed.permute(0, 2, 1, 3).reshape(g * length, n, width)
        across_mask = mask.permute(0, 2, 1).reshape(g * length, n) if self.mask_across else None
        across = self.across(across_in, across_mask).view(g, length, n, width)
        return (across.permute(0, 2, 1, 3) + keyed).mean(dim=1)


class IndexPosDemux(nn.Module):
    """The released RSA demultiplexer ("index_pos"): N learned keys and a keyed MLP.

    Layer k (1-based) is ``dense[k-1]`` and ``norms[k-1]``; the first reads ``[key_i, h]``.

    - Task path (``forward(h)``, what the task heads and the ELECTRA discriminator read):
      ``x = gelu(dense1([k, h]))``, then ``x = gelu(dense_k(x)) + x`` for the middle layers
      (the last one is not used, nor are the LayerNorms), then
      ``x = LayerNorm(gelu(task_out(x))) + x``.
    - Retrieval path (``forward(h, instance)``, what the retrieval / MLM head reads): ``bert``
      style: ``LayerNorm1(gelu(dense1([k, h])))`` then ``LayerNorm2(gelu(dense2(.)))``; ``electra``
      style: every layer with its LayerNorm, with a residual from the second on.
    """

    extra_positions = 0

    def __init__(
        self, n: int, hidden: int, depth: int, eps: float, retrieval: str = "bert"
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("the released demultiplexer has at least 2 layers")
        self.n = n
        self.retrieval = retrieval
        self.keys = nn.Parameter(torch.randn(n, hidden))
        self.dense = nn.ModuleList(
            [nn.Linear(2 * hidden, hidden)] + [nn.Linear(hidden, hidden) for _ in range(depth - 1)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(hidden, eps=eps) for _ in range(depth)])
        self.task_out = nn.Linear(hidden, hidden)
        self.task_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(0.1)

    def prefix(self, slots: torch.Tensor) -> torch.Tensor | None:
        return None

    def _first(self, h: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``dense1([key, h])`` with the key half computed apart (``h`` and ``keys`` broadcast)."""
        first: Any = self.dense[0]
        width = h.shape[-1]
        return F.linear(h, first.weight[:, width:], first.bias) + F.linear(
            keys, first.weight[:, :width]
        )

    def forward(self, h: torch.Tensor, instance: torch.Tensor | None = None) -> torch.Tensor:
        keys = self.keys.to(h.dtype)
        if instance is None:
            x = self.dropout(F.gelu(self._first(h[:, None], keys[None, :, None, :])))
            for dense in list(self.dense)[1:-1]:
                x = self.dropout(F.gelu(dense(x))) + x
            return self.task_norm(F.gelu(self.task_out(x))) + x
        x = self.norms[0](F.gelu(self._first(h, keys[instance])))
        if self.retrieval == "bert":
            return self.norms[1](F.gelu(self.dense[1](x)))
        for dense, norm in zip(list(self.dense)[1:], list(self.norms)[1:], strict=True):
            x = norm(F.gelu(dense(x))) + x
        return x


class MuxPlmsVocabHead(nn.Module):
    """The retrieval / MLM head: ``decoder(LayerNorm(gelu(dense(x))) [+ x])``.

    MUX-BERT's decoder shares its weight with the word embeddings and has no residual;
    MUX-ELECTRA's has its own decoder weight and a residual.
    """

    def __init__(self, embeddings: nn.Embedding, hidden: int, eps: float, *,
                 residual: bool, tied: bool) -> None:  # fmt: skip
        super().__init__()
        vocab, width = embeddings.weight.shape
        self.dense = nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.decoder = nn.Linear(width, vocab)
        self.residual = residual and hidden == width
        if tied:
            self.decoder.weight = embeddings.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.norm(F.gelu(self.dense(states)))
        return self.decoder(x + states if self.residual else x)


class FirstToken(nn.Module):
    """Stands for BERT's pooler: the first position's state, unchanged."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


def build_mux_plms(
    config: object, family: str, *, n: int, mux: str, width: int, hidden: int, depth: int,
    seed: int, mask_across: bool,
) -> tuple[nn.Module, nn.Module]:  # fmt: skip
    """The multiplexer and demultiplexer of the released layout for a BERT or ELECTRA config."""
    from .multiplexers import HadamardMux

    eps = float(getattr(config, "layer_norm_eps", 1e-12))
    multiplexer: nn.Module
    if mux == "gaussian":
        multiplexer = HadamardMux(unit_keys(n, width, seed))
    elif mux == "contextual":
        heads = int(getattr(config, "num_attention_heads", 1))
        intermediate = int(getattr(config, "intermediate_size", 4 * width))
        multiplexer = AttentionV2Mux(n, width, heads, intermediate, eps, seed, mask_across)
    else:
        raise ValueError(f"the mux-plms layout has no '{mux}' multiplexer")
    retrieval = "electra" if family == "electra" else "bert"
    return multiplexer, IndexPosDemux(n, hidden, depth, eps, retrieval)


def vocab_head(config: object, family: str, embeddings: nn.Embedding, hidden: int) -> nn.Module:
    """A fresh retrieval / MLM head of the released layout."""
    eps = float(getattr(config, "layer_norm_eps", 1e-12))
    electra = family == "electra"
    return MuxPlmsVocabHead(embeddings, hidden, eps, residual=electra, tied=not electra)


ARCHITECTURE = ("n", "mux", "demux", "demux_depth", "layout")
"""The multiplex fields that fix a model's multiplexing modules and weights."""


def describe_architecture(config: dict[str, object]) -> str:
    """``N=5, mux gaussian, demux rsa (3 layers), layout mux-plms``."""
    return (f"N={config.get('n')}, mux {config.get('mux')}, demux {config.get('demux')} "
            f"({config.get('demux_depth')} layers), layout {config.get('layout')}")  # fmt: skip


def architecture_mismatch(held: dict[str, object], wanted: dict[str, object]) -> str | None:
    """Why a multiplex transform ``wanted`` cannot adopt the multiplexer a model ``held``."""
    differ = [f for f in ARCHITECTURE if held.get(f) != wanted.get(f)]
    if not differ:
        return None
    fields = ", ".join(f"{f}: {held.get(f)}" for f in differ)
    return (f"the model already holds a multiplexer with {describe_architecture(held)} (read "
            f"from its checkpoint); the multiplex transform asks for "
            f"{describe_architecture(wanted)}. Set {fields} to use these weights, or remove the "
            "multiplex transform (the model is multiplexed already)")  # fmt: skip


def drop_pooler(base: nn.Module) -> None:
    """BERT's pooler replaced by :class:`FirstToken` (the released classifiers have none)."""
    if isinstance(getattr(base, "pooler", None), nn.Module):
        base.pooler = FirstToken()
