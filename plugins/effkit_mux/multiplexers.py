"""Multiplexers: N instances' embeddings mixed into one representation (MUX-PLMs, eq. 1-5).

Every multiplexer maps ``x`` of shape ``[G, N, L, E]`` (G groups of N instances, L positions,
E embedding width) and their attention masks ``[G, N, L]`` to ``[G, L, E]``. The instance keys
are fixed random buffers drawn from a seeded generator, so a model's keys are part of its saved
state and identical after loading.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class HadamardMux(nn.Module):
    """x_mux = 1/N sum_i x_i * v_i with one fixed key vector v_i per instance slot."""

    keys: torch.Tensor

    def __init__(self, keys: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keys", keys)  # [N, E]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keys = self.keys.to(x.dtype)
        return (x * keys[None, :, None, :]).mean(dim=1)

    def prune_hidden(self, kept: torch.Tensor) -> None:
        self.keys = self.keys[:, kept].clone()


def gaussian_keys(
    n: int, width: int, seed: int, mean: float = 0.0, std: float = 1.0
) -> torch.Tensor:
    """N key vectors with entries ~ N(mean, std^2); the paper's keys have mean 0 and std 1.

    With mean 1 every key is close to the identity, so a pretrained backbone sees embeddings it
    knows and only the ``std`` part tells the instances apart.
    """
    return mean + std * torch.randn(n, width, generator=_generator(seed))


def gaussian_mux(n: int, width: int, seed: int, mean: float = 0.0, std: float = 1.0) -> HadamardMux:
    """T-MUX: keys v_i ~ N(0, I) (eq. 1-2), or N(mean, std^2 I)."""
    return HadamardMux(gaussian_keys(n, width, seed, mean, std))


def binary_mux(n: int, width: int, seed: int) -> HadamardMux:
    """Binary block keys: slot i owns a contiguous block of about E/N dimensions.

    The key is N on its block and 0 elsewhere, so after averaging each block holds exactly one
    instance's values (a fixed partition of the width, no superposition).
    """
    keys = torch.zeros(n, width)
    bounds = [round(i * width / n) for i in range(n + 1)]
    order = torch.randperm(n, generator=_generator(seed))
    for slot, block in enumerate(order.tolist()):
        keys[slot, bounds[block] : bounds[block + 1]] = float(n)
    return HadamardMux(keys)


class OrthogonalMux(nn.Module):
    """x_mux = 1/N sum_i x_i Q_i with a fixed random orthogonal matrix Q_i per slot."""

    keys: torch.Tensor

    def __init__(self, n: int, width: int, seed: int) -> None:
        super().__init__()
        gen = _generator(seed)
        mats = []
        for _ in range(n):
            q, r = torch.linalg.qr(torch.randn(width, width, generator=gen))
            mats.append(q * torch.sign(torch.diagonal(r))[None, :])  # Haar-distributed
        self.register_buffer("keys", torch.stack(mats))  # [N, E, E]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("gnle,nef->glf", x, self.keys.to(x.dtype)) / x.shape[1]

    def prune_hidden(self, kept: torch.Tensor) -> None:
        self.keys = self.keys[:, kept][:, :, kept].clone()


class ContextualMux(nn.Module):
    """The attention-based multiplexer (Figure 3, eq. 4-5).

    A transformer layer contextualises each instance on its own (with its own padding mask),
    the result is multiplied by the instance's Gaussian key, a second transformer layer attends
    across the N instances at each position, and the instances are averaged.
    """

    keys: torch.Tensor

    def __init__(
        self, n: int, width: int, heads: int, seed: int, dropout: float = 0.1,
        mean: float = 0.0, std: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("keys", gaussian_keys(n, width, seed, mean, std))
        heads = math.gcd(width, heads) or 1

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(
                d_model=width, nhead=heads, dim_feedforward=4 * width, dropout=dropout,
                activation="gelu", batch_first=True,
            )  # fmt: skip

        self.within = layer()
        self.across = layer()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g, n, length, width = x.shape
        flat = x.reshape(g * n, length, width)
        pad = mask.reshape(g * n, length) == 0
        pad = pad & ~pad.all(dim=1, keepdim=True)  # an all-padding row must attend somewhere
        ctx = self.within(flat, src_key_padding_mask=pad).reshape(g, n, length, width)
        ctx = ctx * self.keys.to(x.dtype)[None, :, None, :]
        across = ctx.permute(0, 2, 1, 3).reshape(g * length, n, width)
        mixed = self.across(across).reshape(g, length, n, width)
        return mixed.mean(dim=2)


def build_multiplexer(
    kind: str, n: int, width: int, heads: int, seed: int, mean: float = 0.0, std: float = 1.0
) -> nn.Module:
    """The multiplexer called ``kind`` for ``n`` slots of ``width`` dimensions.

    ``mean`` and ``std`` shape the Gaussian keys (``gaussian`` and ``contextual``).
    """
    if kind == "gaussian":
        return gaussian_mux(n, width, seed, mean, std)
    if kind == "binary":
        return binary_mux(n, width, seed)
    if kind == "orthogonal":
        return OrthogonalMux(n, width, seed)
    if kind == "contextual":
        return ContextualMux(n, width, heads, seed, mean=mean, std=std)
    raise ValueError(f"unknown multiplexer '{kind}'")
