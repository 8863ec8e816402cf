"""Synthetic benchmark inputs: deterministic token ids of a fixed shape."""

from __future__ import annotations

import torch

from effkit.bench.config import WHERE
from effkit.errors import EffkitError

#: Token ids below this are avoided in synthetic inputs (special and unused tokens live there).
DEFAULT_LOW_ID = 1000


def make_inputs(
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    *,
    device: torch.device,
    seed: int = 0,
    type_vocab_size: int = 0,
    low_id: int = DEFAULT_LOW_ID,
) -> dict[str, torch.Tensor]:
    """Synthetic encoder inputs: ids uniform in [low_id, vocab_size), full mask, deterministic."""
    if batch_size < 1 or seq_len < 1:
        raise EffkitError(
            f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}", where=WHERE
        )
    if not 0 <= low_id < vocab_size:
        raise EffkitError(
            f"low_id {low_id} must lie in [0, vocab_size={vocab_size})",
            where=WHERE,
            hint="pass a smaller low_id for a small vocabulary",
        )
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(
        low_id, vocab_size, (batch_size, seq_len), generator=generator, dtype=torch.long
    )
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
    }
    if type_vocab_size > 0:
        inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def low_id_for(vocab_size: int) -> int:
    """The lowest synthetic token id: DEFAULT_LOW_ID, or half the vocabulary when that is small."""
    return min(DEFAULT_LOW_ID, vocab_size // 2)
