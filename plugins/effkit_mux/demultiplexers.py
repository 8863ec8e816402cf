"""Demultiplexers: one multiplexed hidden state back into N instance states.

Both demultiplexers compute ``h_i = MLP([h, key_i])`` (Linear 2H -> H, GELU, LayerNorm, then
H -> H layers). The first linear layer is split into its ``h`` and ``key`` halves, so its
``h`` half is computed once per position and shared by the N instances; only the small key
term differs per instance. The result is the same function at a fraction of the cost.

- :class:`RSADemux` (MUX-PLMs, Figure 2): N learned private keys ``k_i ~ N(0, I)``.
- :class:`PrefixDemux` (T-MUX): each instance is prefixed with N special tokens (its own token at
  slot ``i``, padding tokens elsewhere); the output at prefix position ``i`` is instance
  ``i``'s key. It costs N extra positions per row.

Shapes: ``h`` is ``[G, P + L, H]`` where P is :attr:`extra_positions`. ``forward(h)`` returns
``[G, N, L, H]``; ``forward(h, instance)`` with an index ``[G, L]`` returns the state of that one
instance at each position, ``[G, L, H]`` (the cheap path the retrieval objective uses).
"""

from __future__ import annotations

import torch
from torch import nn


def _input_columns(linear: nn.Linear, kept: torch.Tensor) -> nn.Linear:
    """A copy of ``linear`` that reads only the ``kept`` input features."""
    weight = linear.weight.data[:, kept]
    out = nn.Linear(len(kept), weight.shape[0], bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)  # fmt: skip
    out.weight.data.copy_(weight)
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.data)
    return out


class _KeyedMLP(nn.Module):
    output_index: torch.Tensor | None

    def __init__(self, hidden: int, depth: int) -> None:
        super().__init__()
        self.from_hidden = nn.Linear(hidden, hidden)
        self.from_key = nn.Linear(hidden, hidden, bias=False)
        blocks: list[nn.Module] = [nn.GELU(), nn.LayerNorm(hidden)]
        for _ in range(depth - 1):
            blocks += [nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden)]
        self.rest = nn.Sequential(*blocks)
        self.register_buffer("output_index", None)  # set by hidden-dimension pruning

    def forward(self, h: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``h`` and ``keys`` broadcast against each other; the result has their joint shape."""
        out = self.rest(self.from_hidden(h) + self.from_key(keys))
        return out if self.output_index is None else out[..., self.output_index]

    def prune_hidden(self, kept: torch.Tensor, keys_too: bool = False) -> None:
        """Read only the kept hidden dimensions and emit only those; the MLP's own width stays.

        ``keys_too``: the keys are hidden states as well (prefix keys) and lose the same columns.
        """
        self.from_hidden = _input_columns(self.from_hidden, kept)
        if keys_too:
            self.from_key = _input_columns(self.from_key, kept)
        self.output_index = kept.clone().to(self.from_hidden.weight.device)


class RSADemux(nn.Module):
    """RSA-style demultiplexer: learned private keys, one per instance slot."""

    extra_positions = 0

    def __init__(self, n: int, hidden: int, depth: int = 2) -> None:
        super().__init__()
        self.n = n
        self.keys = nn.Parameter(torch.randn(n, hidden))
        self.mlp = _KeyedMLP(hidden, depth)

    def prefix(self, slots: torch.Tensor) -> torch.Tensor | None:
        return None

    def prune_hidden(self, kept: torch.Tensor) -> None:
        self.mlp.prune_hidden(kept)

    def forward(self, h: torch.Tensor, instance: torch.Tensor | None = None) -> torch.Tensor:
        keys = self.keys.to(h.dtype)
        if instance is None:
            return self.mlp(h[:, None], keys[None, :, None, :])
        return self.mlp(h, keys[instance])


class PrefixDemux(nn.Module):
    """T-MUX's prefix demultiplexer: instance keys read from N prefix positions."""

    def __init__(self, n: int, hidden: int, embedding: int, depth: int = 2) -> None:
        super().__init__()
        self.n = n
        self.extra_positions = n
        # rows 0..N-1: the instance tokens; row N: the prefix padding token
        self.tokens = nn.Parameter(torch.randn(n + 1, embedding) * 0.02)
        self.mlp = _KeyedMLP(hidden, depth)

    def prefix(self, slots: torch.Tensor) -> torch.Tensor:
        """Prefix embeddings ``[R, N, E]`` for rows whose instance slots are ``slots`` ``[R]``."""
        n = self.n
        ids = torch.full((slots.shape[0], n), n, dtype=torch.long, device=slots.device)
        ids.scatter_(1, slots[:, None], slots[:, None])
        return self.tokens[ids]

    def prune_hidden(self, kept: torch.Tensor) -> None:
        self.tokens = nn.Parameter(self.tokens.data[:, kept].clone())
        self.mlp.prune_hidden(kept, keys_too=True)

    def forward(self, h: torch.Tensor, instance: torch.Tensor | None = None) -> torch.Tensor:
        keys, body = h[:, : self.n], h[:, self.n :]
        if instance is None:
            return self.mlp(body[:, None], keys[:, :, None, :])
        chosen = keys.gather(1, instance[..., None].expand(-1, -1, keys.shape[-1]))
        return self.mlp(body, chosen)


def build_demultiplexer(kind: str, n: int, hidden: int, embedding: int, depth: int) -> nn.Module:
    """The demultiplexer called ``kind``."""
    if kind == "rsa":
        return RSADemux(n, hidden, depth)
    if kind == "prefix":
        return PrefixDemux(n, hidden, embedding, depth)
    raise ValueError(f"unknown demultiplexer '{kind}'")
