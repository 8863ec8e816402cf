"""CoFi structured pruning: learned L0 masks, a Lagrangian sparsity target, then real removal.

``CoFiPrune(sparsity=0.6)`` follows CoFi (Xia et al., 2022, princeton-nlp/CoFiPruning) on any
BERT-family encoder, plain or multiplexed:

1. ``apply`` adds hard-concrete masks (:mod:`effkit_cofi.hardconcrete`) on attention heads,
   whole attention blocks, feed-forward dimensions, whole feed-forward blocks and hidden
   dimensions (each kind can be switched off), applied through forward hooks
   (:mod:`effkit_cofi.masking`); the masks' ``log_alpha`` and the two Lagrange multipliers are
   attached to the model as ``model.cofi_masks`` so that checkpoints hold them;
2. during training, the loss gets ``lambda1 * (s - t) + lambda2 * (s - t)^2`` where ``s`` is the
   expected sparsity of the encoder's attention and feed-forward parameters and ``t`` the target,
   warmed up linearly from 0 over ``warmup_ratio`` of the stage; the masks descend and the
   multipliers ascend (``maximize``), each group at its own constant learning rate;
3. ``finalize`` takes CoFi's deterministic masks and removes for real what they dropped
   (:mod:`effkit_cofi.surgery`), folding the kept mask values into the remaining weights, so the
   smaller model computes what the masked model computed in evaluation mode.

Hidden dimensions: CoFi's masked LayerNorm normalises over the kept dimensions only, and so does
effkit's; with the mask values folded into the LayerNorm and embedding weights, removing hidden
dimensions also leaves the function unchanged. Sub-modules of the model that keep their own
hidden-width tensors (a multiplexing adapter) follow: they implement
:class:`effkit.transform.FollowsHiddenPruning`.

A block that loses every head (or every feed-forward dimension), or whose whole-block mask is 0,
becomes ``LayerNorm(input + bias)``: what the masked model computed (its output dense layer
multiplied by 0 gives 0, or only its bias when the heads alone were masked). CoFi's reference
code instead skips the LayerNorm of such a block (``hidden_states.sum() == 0`` there), which makes
the mask discontinuous at 0; effkit keeps the LayerNorm so that the function is continuous in the
mask and finalize changes nothing.

The saved ``config.json`` stays the unpruned transformers config: per-layer head counts and
widths cannot be written there, so :meth:`CoFiPrune.state` records the kept indices and
:meth:`CoFiPrune.rebuild` slices a freshly built full-size model with them before the weights
load. ``config.hidden_size``, ``num_attention_heads`` and ``intermediate_size`` therefore describe
the model before pruning; read widths from the modules.

Training dynamics: the multipliers ascend while the expected sparsity lags the target, so the
masks overshoot before the quadratic term pulls them back; the masks move about ``mask_lr`` per
step (Adam). CoFi trains for thousands of steps at ``mask_lr=0.01``; a short stage needs a higher
``mask_lr`` and a long warm-up (the tiny model of the tests settles within 0.05 of 0.6 in 100
steps with ``mask_lr=0.3, warmup_ratio=0.6``). ``describe()`` reports both the expected
sparsity at the end and the sparsity reached by the removal, counted as CoFi counts it.

While the masks train, ``ctx.live_layers`` returns, for the last forward pass, whether each
layer's attention block was kept (``None`` without layer masks), which distillation uses to
match teacher layers only to live student layers, as CoFi does.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from pydantic import Field, PrivateAttr, model_validator
from torch.utils.hooks import RemovableHandle

from effkit import SPARSITY, EffkitModel, ModelError, ModelFacts, StageContext, Transform

from . import masking, surgery
from .encoder import (
    SkippedAttention,
    SkippedFeedForward,
    checked_base,
    ffn_width,
    head_count,
    head_dim,
    layers_of,
)
from .hardconcrete import CoFiMasks, Masks, Sizes

__all__ = ["CoFiMasks", "CoFiPrune", "SkippedAttention", "SkippedFeedForward"]

MASKS_ATTRIBUTE = "cofi_masks"
log = logging.getLogger(__name__)

SELECTION_TOLERANCE = 0.02
"""How far from the target the expected sparsity of a selectable (best-so-far) model may be."""


def _kept(unit_z: torch.Tensor | None, block_z: torch.Tensor | None, size: int) -> torch.Tensor:
    """Indices of the units (heads or FFN dims) a block keeps: none when its block mask is 0."""
    alive = unit_z if unit_z is not None else torch.ones(size)
    kept = (alive != 0).nonzero().flatten()
    if block_z is not None and float(block_z) == 0.0:
        return kept[:0]
    return kept


def _count(module: torch.nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def _model_parameters(model: EffkitModel) -> int:
    """Parameters of the transformers model and of an adapter, if any."""
    return _count(model.hf) + _count(model.adapter)


class CoFiPrune(Transform):
    """CoFi: L0 masks on heads, FFN dims, layers and hidden dims, trained to a target, then cut."""

    sparsity: float = Field(
        0.6, ge=0.0, lt=1.0,
        description="Target share of the encoder's attention and feed-forward parameters removed.",
    )  # fmt: skip
    heads: bool = Field(True, description="Mask attention heads (per layer, per head).")
    mha_layers: bool = Field(True, description="Mask whole attention blocks.")
    ffn_dims: bool = Field(True, description="Mask feed-forward intermediate dimensions.")
    ffn_layers: bool = Field(True, description="Mask whole feed-forward blocks.")
    hidden: bool = Field(True, description="Mask hidden dimensions (shared by all layers).")
    droprate_init: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="Initial drop rate of feed-forward dimension masks (log_alpha = "
        "log(1-p) - log(p)); head, layer and hidden masks start fully kept, as in CoFi.",
    )  # fmt: skip
    mask_lr: float = Field(
        0.01, gt=0.0, description="Learning rate of the masks (CoFi's reg_learning_rate)."
    )
    lagrangian_lr: float | None = Field(
        None, gt=0.0, description="Learning rate of the Lagrange multipliers; default mask_lr."
    )
    warmup_ratio: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Share of the stage's steps over which the target rises linearly from the "
        "initial masks' expected sparsity.",
    )  # fmt: skip
    round_to: int = Field(
        8, ge=1,
        description="Keep feed-forward and hidden widths at multiples of this (1: any width); "
        "matrix multiplications with output widths off a multiple of 8 run slower.",
    )  # fmt: skip

    _hooks: list[RemovableHandle] = PrivateAttr(default_factory=list)
    _before: dict[str, int] = PrivateAttr(default_factory=dict)
    _start: float = PrivateAttr(0.0)
    _result: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _something_to_prune(self) -> CoFiPrune:
        if not (self.heads or self.mha_layers or self.ffn_dims or self.ffn_layers or self.hidden):
            raise ValueError("every mask kind is switched off; nothing would be pruned")
        return self

    # ------------------------------------------------------------------ lifecycle

    def check(self, facts: ModelFacts) -> None:
        facts.require_encoder("cofi", bert_layers=True)
        if self.hidden and facts.fixed_hidden:
            raise ModelError(
                f"cofi: hidden-dimension pruning cannot work here: {facts.fixed_hidden}",
                hint="set hidden: false (heads, FFN dimensions and layers are still pruned)",
            )
        if self.hidden:
            facts.hidden_pruned_by = "cofi"

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        if ctx.rebuilding:
            return model
        if hasattr(model, MASKS_ATTRIBUTE):
            raise ModelError("cofi: the model already carries CoFi masks; apply it once a stage")
        base = checked_base(model)
        layers = layers_of(base)
        width = model.embedding_width
        if self.hidden:
            self._check_hidden_layout(base)
        default_dim = int(getattr(model.config, "hidden_size", width)) // max(
            1, int(getattr(model.config, "num_attention_heads", 1))
        )
        sizes = Sizes(
            heads=[head_count(layer) for layer in layers],
            head_dims=[head_dim(layer, default_dim) for layer in layers],
            ffn=[ffn_width(layer) for layer in layers],
            hidden=width,
        )
        if sizes.prunable() == 0:
            raise ModelError("cofi: the encoder has no attention or feed-forward block left")
        masks = CoFiMasks(
            sizes,
            heads=self.heads,
            mha_layers=self.mha_layers,
            ffn_dims=self.ffn_dims,
            ffn_layers=self.ffn_layers,
            hidden=self.hidden,
            droprate_init=self.droprate_init,
            round_to=self.round_to,
        ).to(next(model.parameters()).device)
        setattr(model, MASKS_ATTRIBUTE, masks)
        self._hooks = masking.install(model, base, masks)
        self._before = {
            "encoder": _count(base.encoder),
            "total": _model_parameters(model),
        }
        ctx.live_layers = masks.live_layers
        with torch.no_grad():
            # the warm-up starts where the initial masks are, so that the multipliers do not
            # first learn to push the sparsity down towards a target of 0
            self._start = min(float(masks.expected_sparsity()), self.sparsity)
        return model

    def parameter_groups(self, model: EffkitModel) -> list[dict[str, Any]]:
        masks = self._masks(model)
        return [
            {"params": masks.log_alphas(), "lr": self.mask_lr, "schedule": False,
             "weight_decay": 0.0},
            {"params": [masks.lambda_1, masks.lambda_2], "lr": self.lagrangian_lr or self.mask_lr,
             "schedule": False, "maximize": True, "weight_decay": 0.0},
        ]  # fmt: skip

    def target_at(self, step: int, total_steps: int) -> float:
        """The target sparsity after ``step`` of ``total_steps`` steps: a linear warm-up from the
        initial masks' expected sparsity (CoFi's FFN masks start at ``droprate_init``)."""
        warmup = self.warmup_ratio * total_steps
        if warmup <= 0:
            return self.sparsity
        return self._start + (self.sparsity - self._start) * min(1.0, step / warmup)

    def loss_terms(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], outputs: Any, ctx: StageContext
    ) -> dict[str, torch.Tensor]:
        masks = self._masks(model)
        gap = masks.expected_sparsity() - self.target_at(ctx.step, ctx.total_steps)
        return {"lagrangian": masks.lambda_1 * gap + masks.lambda_2 * gap * gap}

    def on_step(self, model: EffkitModel, ctx: StageContext) -> None:
        self._masks(model).constrain()

    def selectable(self, model: EffkitModel, ctx: StageContext) -> bool:
        """Only once the warm-up is over and the expected sparsity is within
        :data:`SELECTION_TOLERANCE` of the target (an overshoot is not the model asked for)."""
        if ctx.step < self.warmup_ratio * ctx.total_steps:
            return False
        with torch.no_grad():
            expected = float(self._masks(model).expected_sparsity())
        return abs(expected - self.sparsity) <= SELECTION_TOLERANCE

    def step_figures(self, model: EffkitModel, ctx: StageContext) -> dict[str, float]:
        masks = self._masks(model)
        with torch.no_grad():
            expected = float(masks.expected_sparsity())
        return {
            "expected_sparsity": expected,
            "target_sparsity": self.target_at(ctx.step, ctx.total_steps),
            "lambda_1": float(masks.lambda_1.detach()),
        }

    def finalize(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        masks = self._masks(model)
        with torch.no_grad():
            values = masks.draw(training=False)
            expected = float(masks.expected_sparsity())
        if values.hidden is not None:
            # first, so that a sub-module that cannot follow (a ModelError) changes nothing
            kept_hidden = (values.hidden != 0).nonzero().flatten()
            if len(kept_hidden) == 0:
                raise ModelError("cofi: every hidden dimension was pruned; lower the sparsity")
            surgery.prune_hidden_followers(model, kept_hidden)
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        delattr(model, MASKS_ATTRIBUTE)
        if ctx.live_layers == masks.live_layers:
            ctx.live_layers = None
        structure = self._prune(model, values, masks.sizes)
        base = checked_base(model)
        layers = layers_of(base)
        heads = [head_count(layer) for layer in layers]
        widths = [ffn_width(layer) for layer in layers]
        width = model.embedding_width
        remaining = masks.sizes.remaining(heads, widths, width)
        reached = 1.0 - remaining / masks.sizes.prunable()
        if abs(reached - self.sparsity) > SELECTION_TOLERANCE:
            log.warning(
                "cofi (stage '%s'): reached sparsity %.3f, target %.3f; the masks did not settle "
                "on the target within the stage: give it more steps after the warm-up, or "
                "raise mask_lr / lagrangian_lr (docs/pruning.md)",
                ctx.stage, reached, self.sparsity,
            )  # fmt: skip
        self._result = {
            **structure,
            "report": {
                "target_sparsity": self.sparsity,
                "expected_sparsity": round(expected, 4),
                SPARSITY: round(reached, 4),
                "heads_per_layer": heads,
                "ffn_widths": widths,
                "hidden_width": width,
                "encoder_parameters_before": self._before.get("encoder"),
                "encoder_parameters_after": _count(base.encoder),
                "parameters_before": self._before.get("total"),
                "parameters_after": _model_parameters(model),
            },
        }
        return model

    def describe(self) -> dict[str, Any]:
        report = dict(self._result.get("report", {}))
        report.setdefault("target_sparsity", self.sparsity)
        report["mha_layers_removed"] = self._result.get("mha_removed")
        report["ffn_layers_removed"] = self._result.get("ffn_removed")
        return report

    def state(self) -> dict[str, Any]:
        return dict(self._result)

    def load_state(self, state: dict[str, Any]) -> None:
        self._result = dict(state)

    def rebuild(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Slice a freshly built model with the saved indices (weights are loaded afterwards)."""
        if not self._result:
            raise ModelError("cofi: the saved model has no CoFi state to rebuild from")
        base = checked_base(model)
        layers = layers_of(base)
        if len(layers) != len(self._result["heads"]):
            raise ModelError(
                f"cofi: the saved state describes {len(self._result['heads'])} layers but the "
                f"rebuilt model has {len(layers)}; a transform before it changed the layer count"
            )
        saved = zip(layers, self._result["heads"], self._result["ffn"], strict=True)
        for layer, heads, ffn in saved:
            if heads is not None:
                surgery.prune_attention(layer, torch.tensor(heads, dtype=torch.long))
            if ffn is not None:
                surgery.prune_ffn(layer, torch.tensor(ffn, dtype=torch.long))
        if self._result.get("hidden") is not None:
            kept = torch.tensor(self._result["hidden"], dtype=torch.long)
            surgery.prune_hidden(model, base, kept)
            surgery.prune_hidden_followers(model, kept)
        return model

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _masks(model: EffkitModel) -> CoFiMasks:
        masks = getattr(model, MASKS_ATTRIBUTE, None)
        if not isinstance(masks, CoFiMasks):
            raise ModelError("cofi: the model carries no CoFi masks (apply the transform first)")
        return masks

    @staticmethod
    def _check_hidden_layout(base: Any) -> None:
        if getattr(base, "embeddings_project", None) is not None:
            raise ModelError(
                "cofi: hidden-dimension pruning needs embeddings as wide as the hidden states; "
                "this model projects its embeddings (set hidden: false)"
            )

    def _prune(self, model: EffkitModel, values: Masks, sizes: Sizes) -> dict[str, Any]:
        """Remove what the deterministic masks dropped; return the indices kept."""
        base = checked_base(model)
        hidden = values.hidden
        if hidden is not None:
            surgery.scale_hidden(base, hidden)
        heads_kept: list[list[int] | None] = []
        ffn_kept: list[list[int] | None] = []
        mha_removed: list[bool] = []
        ffn_removed: list[bool] = []
        for index, layer in enumerate(layers_of(base)):
            if sizes.heads[index]:
                head_z = values.heads.get(index)
                block_z = values.mha.get(index)
                kept = _kept(head_z, block_z, sizes.heads[index])
                scale = surgery.block_output_scale(block_z, hidden)
                surgery.prune_attention(layer, kept, head_scale=head_z, out_scale=scale)
                heads_kept.append(kept.tolist())
                mha_removed.append(len(kept) == 0)
            else:
                heads_kept.append(None)
                mha_removed.append(False)
            if sizes.ffn[index]:
                dim_z = values.ffn_dims.get(index)
                block_z = values.ffn.get(index)
                kept = _kept(dim_z, block_z, sizes.ffn[index])
                scale = surgery.block_output_scale(block_z, hidden)
                surgery.prune_ffn(layer, kept, dim_scale=dim_z, out_scale=scale)
                ffn_kept.append(kept.tolist())
                ffn_removed.append(len(kept) == 0)
            else:
                ffn_kept.append(None)
                ffn_removed.append(False)
        hidden_kept: list[int] | None = None
        if hidden is not None:
            kept = (hidden != 0).nonzero().flatten()
            surgery.prune_hidden(model, base, kept)
            hidden_kept = kept.tolist()
        return {
            "heads": heads_kept,
            "ffn": ffn_kept,
            "mha_removed": mha_removed,
            "ffn_removed": ffn_removed,
            "hidden": hidden_kept,
        }
