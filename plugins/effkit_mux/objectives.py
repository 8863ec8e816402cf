"""The training objectives of multiplexed models (MUX-PLMs' three stages).

- ``retrieval``: token-retrieval priming. From the multiplexed encoder output, predict every
  instance's token at every position. By default one instance is sampled per position (as the
  reference implementation does) so the vocabulary projection runs once per position, not N
  times.
- ``mlm``: multiplexed masked language modelling (MUX-BERT); 15% of each instance's tokens are
  selected (80% [MASK], 10% random, 10% kept) and only those positions are demultiplexed and
  projected onto the vocabulary.
- ``electra``: multiplexed replaced-token detection (MUX-ELECTRA) with a uniform-random
  generator: 15% of the tokens are replaced by random vocabulary tokens and a discriminator head
  on every demultiplexed position predicts which.
- ``mux-task``: the task loss plus an optional auxiliary retrieval loss on the same forward pass.

Priming and pre-training read the task's training split (never validation or test) or a text
file given as ``text_file`` (one document per line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from effkit import (
    DataError,
    EffkitModel,
    LocalPath,
    ModelError,
    ModelFacts,
    Objective,
    StageContext,
    TaskObjective,
)

from .adapter import MuxAdapter, adapter_of, plan
from .heads import DiscriminatorHead

if TYPE_CHECKING:
    from .adapter import Layout


def _ids_and_mask(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = batch["input_ids"]
    return ids, batch.get("attention_mask", torch.ones_like(ids))


def _run_raw(
    model: EffkitModel, adapter: MuxAdapter, batch: dict[str, torch.Tensor], ids: torch.Tensor
) -> tuple[Any, Layout]:
    """Run (possibly corrupted) ``ids`` multiplexed, keeping the encoder's multiplexed output."""
    _, mask = _ids_and_mask(batch)
    layout = plan(ids.shape[0], adapter.n, device=ids.device)
    out = adapter.run(model, layout, ids, mask, batch.get("token_type_ids"), raw=True)
    return out, layout


def _special_ids(tokenizer: Any) -> list[int]:
    return sorted({int(i) for i in getattr(tokenizer, "all_special_ids", [])})


def _plain_tokens(ids: torch.Tensor, mask: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """True where a token is real text (not padding, not a special token)."""
    plain = mask.bool()
    for special in _special_ids(tokenizer):
        plain &= ids != special
    return plain


def _check_multiplexed(facts: ModelFacts, objective: str) -> None:
    if facts.forward_by != "multiplex":
        raise ModelError(
            f"objective '{objective}' trains a multiplexed model: apply the multiplex transform "
            "in this stage or an earlier one"
        )


class _TextObjective(Objective):
    """Shared reading of unlabelled text: the task's train split or a text file."""

    text_file: LocalPath | None = Field(
        None, description="Text file (one document per line) instead of the task's train split."
    )

    def check(self, facts: ModelFacts) -> None:
        _check_multiplexed(facts, type(self).name or type(self).__name__)
        if self.text_file is not None:
            from pathlib import Path

            if not Path(self.text_file).expanduser().is_file():
                raise DataError(f"text file '{self.text_file}' does not exist",
                                where="objective.text_file")  # fmt: skip

    def features(self, ctx: StageContext) -> list[dict[str, list[int]]]:
        if self.text_file is None:
            return super().features(ctx)
        from effkit import encode_texts, read_text_file

        texts = read_text_file(self.text_file)
        return encode_texts(texts, ctx.tokenizer, "sequence-classification", ctx.max_length)


def _ensure_vocab_head(model: EffkitModel, adapter: MuxAdapter) -> None:
    if adapter.lm_head is None:
        adapter.lm_head = adapter.new_vocab_head(model).to(next(model.parameters()).device)


def _demultiplex_at(
    adapter: MuxAdapter,
    hidden: torch.Tensor,
    group: torch.Tensor,
    slot: torch.Tensor,
    position: torch.Tensor,
) -> torch.Tensor:
    """Instance ``slot[k]``'s state at ``position[k]`` of row ``group[k]``, for each k: ``[K, H]``.

    Only the chosen positions go through the demultiplexer: each becomes a one-position row
    with its group's prefix (if the demultiplexer has one).
    """
    p = adapter.extra_positions
    rows = torch.cat([hidden[group, :p], hidden[group, p + position][:, None]], dim=1)
    return adapter.demultiplexer(rows, slot[:, None])[:, 0]


def _token_loss(
    adapter: MuxAdapter, hidden: torch.Tensor, chosen: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Cross-entropy and accuracy of predicting ``ids`` ``[G, N, L]`` from the vocabulary head
    where ``chosen`` is true, demultiplexing only those positions; a zero loss that stays in
    the graph when nothing is chosen."""
    assert adapter.lm_head is not None
    group, slot, position = chosen.nonzero(as_tuple=True)
    if group.numel() == 0:
        return hidden.sum() * 0.0, 0.0
    logits = adapter.lm_head(_demultiplex_at(adapter, hidden, group, slot, position))
    gold = ids[group, slot, position]
    loss = F.cross_entropy(logits.float(), gold)
    return loss, float((logits.argmax(-1) == gold).float().mean())


def retrieval_loss(
    adapter: MuxAdapter,
    hidden: torch.Tensor,
    layout: Layout,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    sample: bool = True,
    fraction: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """Cross-entropy of retrieving each instance's tokens from the multiplexed states.

    ``sample`` scores one random instance per position, else all N. ``fraction`` < 1 scores a
    random share of the positions only: the vocabulary projection dominates the cost of a step.
    Only the scored positions are demultiplexed. Returns the loss and the token accuracy.
    """
    n, groups, length = adapter.n, layout.groups, input_ids.shape[1]
    ids = input_ids[layout.order].view(groups, n, length)
    chosen = attention_mask[layout.order].view(groups, n, length).bool()
    if sample:
        pick = torch.randint(0, n, (groups, length), device=hidden.device)
        chosen = chosen & (torch.arange(n, device=hidden.device)[None, :, None] == pick[:, None])
    if fraction < 1.0:
        shape = (groups, n, length) if not sample else (groups, 1, length)
        chosen = chosen & (torch.rand(shape, device=hidden.device) < fraction)
    return _token_loss(adapter, hidden, chosen, ids)


class RetrievalObjective(_TextObjective):
    """Token-retrieval priming: recover every instance's tokens from the multiplexed output."""

    sample_instances: bool = Field(
        True, description="Retrieve one sampled instance per position (the vocabulary "
        "projection runs once per position, not N times); false scores all N, which primes "
        "far more per step at large N for a dearer step.",
    )  # fmt: skip
    position_fraction: float = Field(
        1.0, gt=0, le=1, description="Share of positions scored per step (cheaper steps)."
    )

    def prepare(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        _ensure_vocab_head(model, adapter_of(model, "retrieval"))
        return model

    def loss(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], ctx: StageContext
    ) -> tuple[torch.Tensor, Any, dict[str, float]]:
        adapter = adapter_of(model, "retrieval")
        ids, mask = _ids_and_mask(batch)
        out, layout = _run_raw(model, adapter, batch, ids)
        hidden = out.last_hidden_state
        loss, accuracy = retrieval_loss(adapter, hidden, layout, ids, mask,
                                        sample=self.sample_instances,
                                        fraction=self.position_fraction)  # fmt: skip
        return loss, out, {"retrieval_accuracy": accuracy}


class MaskedLMObjective(_TextObjective):
    """Multiplexed masked language modelling (MUX-BERT)."""

    mask_prob: float = Field(0.15, gt=0, lt=1, description="Share of tokens selected.")

    def prepare(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        _ensure_vocab_head(model, adapter_of(model, "mlm"))
        return model

    def loss(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], ctx: StageContext
    ) -> tuple[torch.Tensor, Any, dict[str, float]]:
        adapter = adapter_of(model, "mlm")
        ids, mask = _ids_and_mask(batch)
        tokenizer = ctx.tokenizer
        chosen = _plain_tokens(ids, mask, tokenizer)
        chosen &= torch.rand(ids.shape, device=ids.device) < self.mask_prob
        corrupted = ids.clone()
        roll = torch.rand(ids.shape, device=ids.device)
        corrupted[chosen & (roll < 0.8)] = int(tokenizer.mask_token_id)
        randomised = chosen & (roll >= 0.8) & (roll < 0.9)
        vocab = int(model.vocab_size)
        corrupted[randomised] = torch.randint(0, vocab, (int(randomised.sum()),), device=ids.device)

        out, layout = _run_raw(model, adapter, batch, corrupted)
        shape = (layout.groups, adapter.n, -1)
        loss, accuracy = _token_loss(adapter, out.last_hidden_state,
                                     chosen[layout.order].view(shape),
                                     ids[layout.order].view(shape))  # fmt: skip
        return loss, out, {"mlm_accuracy": accuracy}


class ElectraObjective(_TextObjective):
    """Multiplexed replaced-token detection with a uniform-random generator (MUX-ELECTRA)."""

    replace_prob: float = Field(0.15, gt=0, lt=1, description="Share of tokens replaced.")

    def prepare(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        adapter = adapter_of(model, "electra")
        if adapter.electra_head is None:
            adapter.electra_head = DiscriminatorHead(model).to(next(model.parameters()).device)
        return model

    def loss(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], ctx: StageContext
    ) -> tuple[torch.Tensor, Any, dict[str, float]]:
        adapter = adapter_of(model, "electra")
        assert adapter.electra_head is not None
        ids, mask = _ids_and_mask(batch)
        plain = _plain_tokens(ids, mask, ctx.tokenizer)
        chosen = plain & (torch.rand(ids.shape, device=ids.device) < self.replace_prob)
        corrupted = ids.clone()
        random_ids = torch.randint(0, int(model.vocab_size), (int(chosen.sum()),),
                                   device=ids.device)  # fmt: skip
        corrupted[chosen] = random_ids
        replaced = corrupted != ids  # a random draw of the same token is not a replacement

        out, layout = _run_raw(model, adapter, batch, corrupted)
        states = adapter.demultiplexer(out.last_hidden_state)  # [G, N, L, H]
        logits = adapter.electra_head(states)  # [G, N, L]
        valid = mask[layout.order].view(logits.shape).bool()
        target = replaced[layout.order].view(logits.shape).float()
        loss = F.binary_cross_entropy_with_logits(logits[valid].float(), target[valid])
        accuracy = float(((logits[valid] > 0).float() == target[valid]).float().mean())
        return loss, out, {"electra_accuracy": accuracy}


class MuxTaskObjective(TaskObjective):
    """Task fine-tuning of a multiplexed model, with an optional auxiliary retrieval loss."""

    selects_on_validation: ClassVar[bool] = True
    retrieval_weight: float = Field(
        0.0, ge=0, description="Weight of the auxiliary token-retrieval loss (0: off)."
    )
    position_fraction: float = Field(
        0.25, gt=0, le=1, description="Share of positions the auxiliary retrieval scores."
    )

    def check(self, facts: ModelFacts) -> None:
        _check_multiplexed(facts, "mux-task")

    def prepare(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        adapter = adapter_of(model, "mux-task")
        if self.retrieval_weight > 0:
            _ensure_vocab_head(model, adapter)
        return model

    def loss(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], ctx: StageContext
    ) -> tuple[torch.Tensor, Any, dict[str, float]]:
        loss, outputs, logs = super().loss(model, batch, ctx)
        if self.retrieval_weight <= 0:
            return loss, outputs, logs
        adapter = adapter_of(model, "mux-task")
        assert adapter.last_hidden is not None and adapter.layout is not None
        ids, mask = _ids_and_mask(batch)
        aux, accuracy = retrieval_loss(adapter, adapter.last_hidden, adapter.layout, ids, mask,
                                       fraction=self.position_fraction)  # fmt: skip
        return loss + self.retrieval_weight * aux, outputs, {
            **logs, "retrieval": float(aux.detach()), "retrieval_accuracy": accuracy,
        }  # fmt: skip
