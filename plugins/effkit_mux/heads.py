"""Pre-training heads of a multiplexed model: a vocabulary head and an ELECTRA discriminator."""

from __future__ import annotations

import torch
from torch import nn

from effkit import EffkitModel


class VocabHead(nn.Module):
    """Dense + GELU + LayerNorm, then a projection onto the vocabulary.

    The projection shares its weight with the input word embeddings when their widths match.
    """

    def __init__(self, model: EffkitModel) -> None:
        super().__init__()
        config = model.hf.config
        hidden = int(config.hidden_size)
        embeddings = model.base.embeddings.word_embeddings
        width = int(embeddings.weight.shape[1])
        self.transform = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.LayerNorm(width))
        self.decoder = nn.Linear(width, int(embeddings.weight.shape[0]))
        self.decoder.weight = embeddings.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(states))


class DiscriminatorHead(nn.Module):
    """ELECTRA's discriminator: one logit per token, "this token was replaced"."""

    def __init__(self, model: EffkitModel) -> None:
        super().__init__()
        hidden = int(model.hf.config.hidden_size)
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states).squeeze(-1)
