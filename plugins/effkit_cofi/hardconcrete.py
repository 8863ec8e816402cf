"""Hard-concrete (L0) masks as CoFi trains them, and CoFi's expected model size.

A mask entry ``z`` follows the hard-concrete distribution of Louizos et al. (2018): a binary
concrete variable with location ``log_alpha`` and temperature 2/3, stretched to the interval
(-0.1, 1.1) and clipped to [0, 1], so that it is exactly 0 or exactly 1 with non-zero
probability and differentiable in ``log_alpha`` in between.

- Training draws a fresh ``z`` for every forward pass (:func:`sample`).
- Evaluation uses CoFi's deterministic mask (:func:`deterministic`): each mask group keeps as
  many entries as its expected number of non-zeros, rounded; the kept entries take the value
  ``sigmoid(log_alpha / temperature * 0.8)`` and the others are 0. Rounding each group on its
  own can miss the expected model size by far: a feed-forward block kept with probability 0.6
  is counted at 60% of its dimensions but kept whole. When the deterministic masks miss the
  expected size by more than :data:`SIZE_SLACK` of the prunable parameters, feed-forward
  dimensions are dropped (lowest ``log_alpha`` first) or restored (highest first) across the
  live blocks until the sizes agree, so the model that is evaluated, selected and cut has the
  sparsity the Lagrangian steered to.
- Last, each feed-forward width and the hidden width is rounded to the nearest multiple of
  ``round_to`` (ties upwards; a width is never rounded to 0 or past its full size). A matrix
  multiplication whose output width is not a multiple of 8 runs about a third slower on CPUs
  (and misses tensor cores on GPUs), so a width of 438 is slower than one of 440.
- The expected number of remaining encoder parameters is a differentiable function of the
  ``log_alpha`` (:meth:`CoFiMasks.expected_size`), counted as CoFi counts it: attention and
  feed-forward weights of the encoder only (embeddings, pooler and task head are not counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

LIMIT_L, LIMIT_R = -0.1, 1.1
"""The stretch interval of the hard-concrete distribution."""
TEMPERATURE = 2.0 / 3.0
EPSILON = 1e-6
MAGICAL_NUMBER = 0.8
"""CoFi's scale of the deterministic soft mask (after Wang et al. 2020)."""
LOG_ALPHA_MIN, LOG_ALPHA_MAX = math.log(1e-2), math.log(1e2)
"""CoFi clamps every ``log_alpha`` to this range after each optimizer step."""
KEEP_INIT = 10.0
"""CoFi's initial ``log_alpha`` of head, layer and hidden masks (everything kept)."""
SIZE_SLACK = 0.01
"""How far (a share of the prunable parameters) the deterministic masks may miss the expected
size before feed-forward dimensions are dropped or restored to match it."""


def keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """``P(z > 0)`` for each entry: 1 minus the distribution's CDF at 0."""
    x = (0.0 - LIMIT_L) / (LIMIT_R - LIMIT_L)
    logit = math.log(x) - math.log(1.0 - x)
    cdf = torch.sigmoid(logit * TEMPERATURE - log_alpha).clamp(min=EPSILON, max=1.0 - EPSILON)
    return 1.0 - cdf


def sample(log_alpha: torch.Tensor) -> torch.Tensor:
    """A training-time draw of ``z`` (differentiable in ``log_alpha``)."""
    u = torch.empty_like(log_alpha).uniform_(EPSILON, 1.0 - EPSILON)
    s = torch.sigmoid((torch.log(u) - torch.log(1.0 - u) + log_alpha) / TEMPERATURE)
    return (s * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(min=0.0, max=1.0)


def soft_value(log_alpha: torch.Tensor) -> torch.Tensor:
    """The value a kept entry takes in the deterministic mask."""
    return torch.sigmoid(log_alpha / TEMPERATURE * MAGICAL_NUMBER)


def deterministic(log_alpha: torch.Tensor) -> torch.Tensor:
    """CoFi's evaluation mask of one group: the expected number of entries kept, by score."""
    expected_zeros = log_alpha.numel() - float(keep_probability(log_alpha.detach()).sum())
    zeros = round(expected_zeros)
    soft = soft_value(log_alpha)
    if zeros <= 0:
        return soft
    if soft.ndim == 0:
        return torch.zeros_like(soft)
    soft = soft.clone()
    soft[torch.topk(soft, k=zeros, largest=False).indices] = 0.0
    return soft


def nearest_multiple(count: int, step: int, full: int) -> int:
    """``count`` at the nearest multiple of ``step`` or at ``full``, ties upwards; 0 stays 0."""
    if step <= 1 or count == 0 or count >= full:
        return count
    down = count - count % step
    up = min(down + step, full)
    return up if down == 0 or up - count <= count - down else down


def resized(z: torch.Tensor, log_alpha: torch.Tensor, count: int) -> torch.Tensor:
    """``z`` with ``count`` non-zero entries: its lowest-scored kept entries dropped, or its
    highest-scored dropped entries restored at their deterministic value."""
    kept = z != 0
    have = int(kept.sum())
    if count == have:
        return z
    z = z.detach().clone()
    if count < have:
        order = log_alpha.masked_fill(~kept, float("inf")).argsort()[: have - count]
        z[order] = 0.0
    else:
        order = log_alpha.masked_fill(kept, float("-inf")).argsort(descending=True)
        order = order[: count - have]
        z[order] = soft_value(log_alpha[order]).to(z.dtype)
    return z


@dataclass
class Masks:
    """One set of mask values; a kind that is not pruned is absent (it acts as 1)."""

    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per layer: one value per attention head."""
    mha: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per layer: one scalar for the whole attention block."""
    ffn_dims: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per layer: one value per intermediate (feed-forward) dimension."""
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per layer: one scalar for the whole feed-forward block."""
    hidden: torch.Tensor | None = None
    """One value per hidden dimension, shared by the whole model."""


@dataclass
class Sizes:
    """The prunable structure of an encoder when the masks are created."""

    heads: list[int]
    """Attention heads per layer (0: the block was already removed)."""
    head_dims: list[int]
    ffn: list[int]
    """Intermediate width per layer (0: the block was already removed)."""
    hidden: int

    def params_per_head(self, layer: int) -> int:
        # CoFi: (4 H^2 + 4 H) / heads for a full layer, i.e. 4 * head_dim * (H + 1)
        return 4 * self.head_dims[layer] * (self.hidden + 1)

    def params_per_ffn_dim(self, layer: int) -> int:
        # CoFi: (2 H I + H + 4 H) // I
        width = self.ffn[layer]
        return (2 * self.hidden * width + 5 * self.hidden) // width if width else 0

    def prunable(self) -> int:
        """Encoder attention + feed-forward parameters, as CoFi counts them."""
        total = 0
        for layer in range(len(self.heads)):
            total += self.params_per_head(layer) * self.heads[layer]
            if self.ffn[layer]:
                total += 2 * self.hidden * self.ffn[layer] + 5 * self.hidden
        return total

    def remaining(self, heads: list[int], ffn: list[int], hidden: int) -> int:
        """Parameters left by a pruned structure, counted as CoFi counts them (weights only)."""
        per_head = [4 * d * hidden for d in self.head_dims]
        return sum(h * p for h, p in zip(heads, per_head, strict=True)) + 2 * hidden * sum(ffn)


class CoFiMasks(nn.Module):
    """The ``log_alpha`` of every mask and the two Lagrange multipliers.

    Per-layer masks live in parameter dicts keyed by layer index; layers whose block is already
    gone have none. ``current`` holds the mask values of the forward pass in progress.
    """

    def __init__(
        self,
        sizes: Sizes,
        *,
        heads: bool,
        mha_layers: bool,
        ffn_dims: bool,
        ffn_layers: bool,
        hidden: bool,
        droprate_init: float,
        round_to: int = 1,
    ) -> None:
        super().__init__()
        self.sizes = sizes
        self.round_to = round_to
        layers = range(len(sizes.heads))
        live_mha = [i for i in layers if sizes.heads[i]]
        live_ffn = [i for i in layers if sizes.ffn[i]]
        dim_init = math.log(1.0 - droprate_init) - math.log(droprate_init)

        def init(shape: tuple[int, ...], mean: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(shape) * 1e-2 + mean)

        self.head_log_alpha = nn.ParameterDict(
            {str(i): init((sizes.heads[i],), KEEP_INIT) for i in live_mha} if heads else {}
        )
        self.mha_log_alpha = nn.ParameterDict(
            {str(i): init((), KEEP_INIT) for i in live_mha} if mha_layers else {}
        )
        self.ffn_dim_log_alpha = nn.ParameterDict(
            {str(i): init((sizes.ffn[i],), dim_init) for i in live_ffn} if ffn_dims else {}
        )
        self.ffn_log_alpha = nn.ParameterDict(
            {str(i): init((), KEEP_INIT) for i in live_ffn} if ffn_layers else {}
        )
        self.hidden_log_alpha = init((sizes.hidden,), KEEP_INIT) if hidden else None
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))
        self.current: Masks | None = None
        self.last_mha: dict[int, bool] = {}

    # ------------------------------------------------------------------ parameters

    def log_alphas(self) -> list[nn.Parameter]:
        params = [
            *self.head_log_alpha.values(),
            *self.mha_log_alpha.values(),
            *self.ffn_dim_log_alpha.values(),
            *self.ffn_log_alpha.values(),
        ]
        if self.hidden_log_alpha is not None:
            params.append(self.hidden_log_alpha)
        return params

    @torch.no_grad()
    def constrain(self) -> None:
        """Clamp every ``log_alpha`` to CoFi's range (after each optimizer step)."""
        for param in self.log_alphas():
            param.clamp_(min=LOG_ALPHA_MIN, max=LOG_ALPHA_MAX)

    # ------------------------------------------------------------------ mask values

    def draw(self, training: bool) -> Masks:
        """Mask values for one forward pass: sampled in training, deterministic otherwise."""
        pick = sample if training else deterministic

        def each(params: nn.ParameterDict) -> dict[int, torch.Tensor]:
            return {int(k): pick(v) for k, v in params.items()}

        masks = Masks(
            heads=each(self.head_log_alpha),
            mha=each(self.mha_log_alpha),
            ffn_dims=each(self.ffn_dim_log_alpha),
            ffn=each(self.ffn_log_alpha),
            hidden=pick(self.hidden_log_alpha) if self.hidden_log_alpha is not None else None,
        )
        if not training:
            masks = self._round_widths(self._match_expected_size(masks))
        self.last_mha = {i: bool(z.detach() != 0) for i, z in masks.mha.items()}
        return masks

    def kept_counts(self, masks: Masks) -> tuple[list[int], list[int], int]:
        """Heads and FFN dimensions per layer, and hidden dimensions, that ``masks`` keep."""
        sizes = self.sizes
        heads, ffn = [], []
        for layer in range(len(sizes.heads)):
            h = sizes.heads[layer]
            if layer in masks.heads:
                h = int((masks.heads[layer] != 0).sum())
            if layer in masks.mha and float(masks.mha[layer].detach()) == 0.0:
                h = 0
            f = sizes.ffn[layer]
            if layer in masks.ffn_dims:
                f = int((masks.ffn_dims[layer] != 0).sum())
            if layer in masks.ffn and float(masks.ffn[layer].detach()) == 0.0:
                f = 0
            heads.append(h)
            ffn.append(f)
        hidden = int((masks.hidden != 0).sum()) if masks.hidden is not None else sizes.hidden
        return heads, ffn, hidden

    @torch.no_grad()
    def _match_expected_size(self, masks: Masks) -> Masks:
        """Drop or restore FFN dimensions by score until the deterministic masks keep the
        expected number of parameters (see the module docstring)."""
        live = [
            layer
            for layer in masks.ffn_dims
            if not (layer in masks.ffn and float(masks.ffn[layer].detach()) == 0.0)
        ]
        heads, ffn, hidden = self.kept_counts(masks)
        prunable = self.sizes.prunable()
        goal = (1.0 - float(self.expected_sparsity())) * prunable
        surplus = self.sizes.remaining(heads, ffn, hidden) - goal
        if not live or hidden == 0 or abs(surplus) <= SIZE_SLACK * prunable:
            return masks
        count = round(abs(surplus) / (2 * hidden))  # parameters per FFN dimension: 2 * hidden
        dims = {layer: z.detach().clone() for layer, z in masks.ffn_dims.items()}
        scores, owners, positions = [], [], []
        for layer in live:
            score = self.ffn_dim_log_alpha[str(layer)].detach()
            kept = dims[layer] != 0
            if surplus > 0:  # drop kept dimensions, but never a block's best one
                order = score.masked_fill(~kept, float("inf")).argsort()
                order = order[: max(int(kept.sum()) - 1, 0)]
            else:  # restore dropped dimensions
                order = score.masked_fill(kept, float("-inf")).argsort(descending=True)
                order = order[: int((~kept).sum())]
            scores.append(score[order])
            owners.append(torch.full_like(order, layer))
            positions.append(order)
        pool = torch.cat(scores)
        chosen = pool.argsort(descending=surplus < 0)[:count]
        owner, position = torch.cat(owners)[chosen], torch.cat(positions)[chosen]
        for layer in owner.unique().tolist():
            picked = position[owner == layer]
            if surplus > 0:
                dims[layer][picked] = 0.0
            else:
                soft = soft_value(self.ffn_dim_log_alpha[str(layer)].detach()[picked])
                dims[layer][picked] = soft.to(dims[layer].dtype)
        return replace(masks, ffn_dims=dims)

    @torch.no_grad()
    def _round_widths(self, masks: Masks) -> Masks:
        """Each live FFN width and the hidden width at the nearest multiple of ``round_to``."""
        step = self.round_to
        if step <= 1:
            return masks
        dims = dict(masks.ffn_dims)
        for layer, z in masks.ffn_dims.items():
            if layer in masks.ffn and float(masks.ffn[layer].detach()) == 0.0:
                continue
            want = nearest_multiple(int((z != 0).sum()), step, z.numel())
            dims[layer] = resized(z, self.ffn_dim_log_alpha[str(layer)].detach(), want)
        hidden = masks.hidden
        if hidden is not None and self.hidden_log_alpha is not None:
            want = nearest_multiple(int((hidden != 0).sum()), step, hidden.numel())
            hidden = resized(hidden, self.hidden_log_alpha.detach(), want)
        return replace(masks, ffn_dims=dims, hidden=hidden)

    def values(self, training: bool) -> Masks:
        """The mask values of the forward pass in progress (drawn now outside one)."""
        return self.current if self.current is not None else self.draw(training)

    def live_layers(self) -> list[bool] | None:
        """Which layers' attention blocks the last forward pass kept (None: no layer masks)."""
        if not self.last_mha:
            return None
        n = len(self.sizes.heads)
        return [self.last_mha.get(i, self.sizes.heads[i] > 0) for i in range(n)]

    # ------------------------------------------------------------------ expected size

    def expected_size(self) -> torch.Tensor:
        """Expected remaining encoder parameters (CoFi's formula), differentiable."""
        sizes = self.sizes
        device = self.lambda_1.device
        one = torch.ones((), device=device)
        hidden = (
            keep_probability(self.hidden_log_alpha).sum()
            if self.hidden_log_alpha is not None
            else None
        )
        total = torch.zeros((), device=device)
        for layer in range(len(sizes.heads)):
            key = str(layer)
            if sizes.heads[layer]:
                heads = (
                    keep_probability(self.head_log_alpha[key]).sum()
                    if key in self.head_log_alpha
                    else one * sizes.heads[layer]
                )
                if key in self.mha_log_alpha:
                    heads = heads * keep_probability(self.mha_log_alpha[key])
                per_head = sizes.params_per_head(layer)
                total = total + (
                    hidden * heads * per_head / sizes.hidden
                    if hidden is not None
                    else heads * per_head
                )
            if sizes.ffn[layer]:
                dims = (
                    keep_probability(self.ffn_dim_log_alpha[key]).sum()
                    if key in self.ffn_dim_log_alpha
                    else one * sizes.ffn[layer]
                )
                if key in self.ffn_log_alpha:
                    dims = dims * keep_probability(self.ffn_log_alpha[key])
                total = total + (
                    hidden * dims * 2
                    if hidden is not None
                    else dims * sizes.params_per_ffn_dim(layer)
                )
        return total

    def expected_sparsity(self) -> torch.Tensor:
        """1 - expected size / prunable size: the quantity the Lagrangian steers."""
        return 1.0 - self.expected_size() / self.sizes.prunable()
