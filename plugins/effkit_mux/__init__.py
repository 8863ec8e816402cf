"""Data multiplexing (MUX-PLMs): N inputs share one forward pass of the encoder.

``Multiplex(n=2, mux="gaussian", demux="rsa")`` wraps any BERT-family encoder (BERT, RoBERTa,
ELECTRA, MiniLM) for sequence, sentence-pair and token classification; ``mix_after=K`` mixes
after the first K encoder layers instead of after the embeddings. The plugin also registers
the paper's training objectives: ``retrieval`` (token-retrieval priming), ``mlm`` (MUX-BERT),
``electra`` (MUX-ELECTRA with a uniform-random generator) and ``mux-task`` (fine-tuning with an
optional auxiliary retrieval loss).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from effkit import EffkitModel, ExportGraph, ModelError, ModelFacts, StageContext, Transform

from .adapter import MASKED_EMBEDDINGS, MuxAdapter, adapter_of, plan
from .datamux import architecture_mismatch, drop_pooler
from .export import mux_graph
from .heads import DiscriminatorHead
from .objectives import ElectraObjective, MaskedLMObjective, MuxTaskObjective, RetrievalObjective

__all__ = [
    "ElectraObjective",
    "MaskedLMObjective",
    "Multiplex",
    "MuxAdapter",
    "MuxTaskObjective",
    "RetrievalObjective",
    "adapter_of",
    "plan",
]

log = logging.getLogger(__name__)


class Multiplex(Transform):
    """Serve N inputs with one forward pass: a multiplexer before and a demultiplexer after."""

    n: int = Field(2, ge=1, le=64, description="Inputs per forward pass (N).")
    mux: Literal["gaussian", "binary", "orthogonal", "contextual"] = Field(
        "gaussian", description="Multiplexer: Hadamard keys (gaussian, binary block), random "
        "orthogonal matrices, or the attention-based contextual multiplexer.",
    )  # fmt: skip
    demux: Literal["rsa", "prefix"] = Field(
        "rsa", description="Demultiplexer: learned RSA keys, or T-MUX's prefix tokens."
    )
    demux_depth: int = Field(2, ge=1, le=8, description="Layers of the demultiplexer MLP.")
    key_seed: int = Field(0, description="Seed of the fixed multiplexer keys.")
    key_mean: float = Field(
        0.0, description="Mean of the Gaussian keys' entries (0 in the paper; see "
        "docs/multiplexing.md for keys near 1)."
    )  # fmt: skip
    key_std: float = Field(1.0, gt=0, description="Spread of the Gaussian keys' entries.")
    pooling: Literal["first", "mean"] = Field(
        "first", description="Sequence tasks: demultiplex the first position only (the paper), "
        "or every position and average each instance's own tokens (slower: the demultiplexer "
        "runs on every position).",
    )  # fmt: skip
    mix_after: int = Field(
        0, ge=0, description="Encoder layers each input runs through on its own before the "
        "multiplexer mixes its group (0: mix the embeddings, the paper). Each such layer runs "
        "N times per group, so it costs throughput.",
    )  # fmt: skip
    ensemble: int | bool = Field(
        False, description="At inference, run each input in k of the N slots (true: all N; "
        "false or 1: one) and average its logits: k passes per group for steadier predictions "
        "(the paper's Table 4 spectrum).",
    )  # fmt: skip

    layout: Literal["effkit", "mux-plms"] = Field(
        "effkit", description="Architecture of the multiplexing modules and heads: effkit's own, "
        "or that of the MUX-PLMs checkpoints the paper's authors released (mux gaussian or "
        "contextual, demux rsa; a model read from such a checkpoint has it). docs/released.md.",
    )  # fmt: skip
    official_inputs: bool = Field(
        False, description="mux-plms layout only: feed the encoder as the authors' code does "
        "(padding attended, segment ids dropped), to reproduce the scores of their fine-tuned "
        "checkpoints. docs/released.md.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _ensemble_slots(self) -> Multiplex:
        slots = self.ensemble
        if isinstance(slots, bool):
            self.ensemble = self.n if slots else 1
        elif not 1 <= slots <= self.n:
            raise ValueError(
                f"ensemble: {slots} slots of N={self.n}; give 1 to {self.n} (or true for all N)"
            )
        return self

    @model_validator(mode="after")
    def _released_layout(self) -> Multiplex:
        if self.layout == "effkit":
            if self.official_inputs:
                raise ValueError("official_inputs belongs to layout mux-plms")
            return self
        fixed = {"demux": "rsa", "mix_after": 0, "key_mean": 0.0, "key_std": 1.0}
        wrong = [f"{k} {getattr(self, k)}" for k, v in fixed.items() if getattr(self, k) != v]
        if self.mux not in ("gaussian", "contextual") or self.demux_depth < 2 or wrong:
            raise ValueError(
                "layout mux-plms has mux gaussian or contextual, demux rsa with demux_depth >= 2, "
                f"mix_after 0 and the default keys; got mux {self.mux}, demux_depth "
                f"{self.demux_depth}{''.join(', ' + w for w in wrong)}"
            )
        return self

    @model_validator(mode="after")
    def _keys_are_gaussian(self) -> Multiplex:
        if (self.key_mean, self.key_std) != (0.0, 1.0) and self.mux in ("binary", "orthogonal"):
            raise ValueError(
                f"key_mean and key_std shape Gaussian keys (mux gaussian or contextual), "
                f"not mux {self.mux}"
            )
        return self

    _adapter: MuxAdapter | None = PrivateAttr(None)
    _heads: dict[str, bool] = PrivateAttr(default_factory=dict)

    def check(self, facts: ModelFacts) -> None:
        if facts.forward_by == "multiplex" and facts.forward_config.get("layout") == "mux-plms":
            problem = architecture_mismatch(facts.forward_config, self.model_dump(mode="json"))
            if problem:
                raise ModelError(f"multiplex: {problem}")
            facts.forward_config = self.model_dump(mode="json")
            return  # adopts the multiplexer the model holds (see apply)
        if facts.forward_by is not None:
            raise ModelError(
                f"multiplex: the model's forward pass is already taken over by "
                f"'{facts.forward_by}'; multiplex applies once"
            )
        facts.require_encoder("multiplex")
        if facts.family in MASKED_EMBEDDINGS and self.demux == "prefix":
            raise ModelError(
                f"multiplex: the prefix demultiplexer does not support {facts.family} models: "
                "their embeddings apply the attention mask before the prefix positions exist",
                hint="use demux: rsa",
            )
        if self.mix_after >= facts.layers:
            raise ModelError(
                f"multiplex: mix_after={self.mix_after} leaves no layer to run multiplexed; the "
                f"encoder has {facts.layers} layers (mix_after 0..{facts.layers - 1})"
            )
        extra = self.n if self.demux == "prefix" else 0
        if extra and facts.max_positions and facts.max_length + extra > facts.max_positions:
            raise ModelError(
                f"multiplex: the prefix demultiplexer adds {extra} positions to "
                f"{facts.max_length} tokens; the model reads {facts.max_positions}",
                hint=f"use data.max_length <= {facts.max_positions - extra}",
            )
        if self.mux == "contextual":
            reason = "the contextual multiplexer cannot follow hidden-dimension pruning"
            if facts.hidden_pruned_by:
                raise ModelError(
                    f"multiplex: {reason}, and '{facts.hidden_pruned_by}' in this stage prunes "
                    "hidden dimensions",
                    hint="set hidden: false there, or use mux: gaussian",
                )
            facts.fixed_hidden = reason
        facts.forward_by = "multiplex"
        facts.forward_config = self.model_dump(mode="json")
        facts.group_size = self.n

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        if self._adopts(model):
            return model
        if model.adapter is not None:
            raise ModelError(
                f"the model's forward pass is already taken over by "
                f"{type(model.adapter).__name__}; multiplex applies once"
            )
        if model.task.type == "token-classification" and self.demux == "prefix" and self.n >= 5:
            log.warning("the prefix demultiplexer is known to fail on token tasks at N >= 5")
        adapter = MuxAdapter(
            model, n=self.n, mux=self.mux, demux=self.demux, demux_depth=self.demux_depth,
            key_seed=self.key_seed, pooling=self.pooling, key_mean=self.key_mean,
            key_std=self.key_std, mix_after=self.mix_after, layout=self.layout,
            official_inputs=self.official_inputs,
        )  # fmt: skip
        if self.layout == "mux-plms" and model.task.type != "token-classification":
            drop_pooler(model.base)
        adapter.ensemble = int(self.ensemble)
        adapter.to(next(model.parameters()).device).train(model.training)
        model.adapter = adapter
        self._adapter = adapter
        if self._heads.get("vocab"):
            adapter.lm_head = adapter.new_vocab_head(model)
        if self._heads.get("electra"):
            adapter.electra_head = DiscriminatorHead(model)
        return model

    def _adopts(self, model: EffkitModel) -> bool:
        """Whether the model already holds this multiplexer, read from a released checkpoint:
        then only the inference settings (official_inputs, pooling, ensemble) are taken over."""
        held = next((t for t in reversed(model.transforms) if isinstance(t, Multiplex)), None)
        adapter = model.adapter
        if held is None or held.layout != "mux-plms" or not isinstance(adapter, MuxAdapter):
            return False
        problem = architecture_mismatch(held.model_dump(mode="json"), self.model_dump(mode="json"))
        if problem:
            raise ModelError(f"multiplex: {problem}")
        adapter.official_inputs = self.official_inputs
        adapter.pooling = self.pooling
        adapter.ensemble = int(self.ensemble)
        if hasattr(adapter.multiplexer, "mask_across"):
            adapter.multiplexer.mask_across = self.official_inputs and not adapter.token_task
        self._adapter = adapter
        return True

    def state(self) -> dict[str, Any]:
        adapter = self._adapter
        if adapter is None:
            return dict(self._heads)
        return {"vocab": adapter.lm_head is not None, "electra": adapter.electra_head is not None}

    def load_state(self, state: dict[str, Any]) -> None:
        self._heads = {k: bool(v) for k, v in state.items()}

    def export_graph(self, model: EffkitModel, graph: ExportGraph) -> ExportGraph:
        if not isinstance(model.adapter, MuxAdapter):
            raise ModelError("multiplex: the model's multiplexing adapter is missing")
        return mux_graph(model, model.adapter)

    def describe(self) -> dict[str, Any]:
        added = 0
        if self._adapter is not None:
            added = sum(p.numel() for p in self._adapter.parameters())
        return {
            "n": self.n,
            "mux": self.mux,
            "demux": self.demux,
            "pooling": self.pooling,
            "mix_after": self.mix_after,
            "ensemble": self.ensemble,
            "parameters_added": added,
        }
