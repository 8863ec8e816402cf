"""Objectives: what a stage trains for. The core defines only the task objective.

An objective turns a batch and the model into a loss. Technique objectives (token retrieval,
multiplexed MLM, ELECTRA) are plugins registered under the ``effkit.objectives`` entry-point
group, exactly like transforms, so the core never names a technique.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from effkit.errors import DataError, RecipeError
from effkit.regression import RegressionLoss, regression_loss

if TYPE_CHECKING:
    from effkit.models import EffkitModel
    from effkit.transform import ModelFacts, StageContext


class Objective(BaseModel):
    """Base class of every objective: a pydantic config with its hooks."""

    model_config = ConfigDict(extra="forbid")

    name: ClassVar[str] = ""
    selects_on_validation: ClassVar[bool] = False
    """True when validation-set task metrics are meaningful after a step of this objective."""

    def check(self, facts: ModelFacts) -> None:
        """Before anything runs: raise an :class:`~effkit.errors.EffkitError` when this
        objective cannot train the model ``facts`` describe (see :meth:`Transform.check`)."""

    def prepare(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Add what the objective needs to the model (a vocabulary head, say) before training."""
        return model

    def features(self, ctx: StageContext) -> list[dict[str, list[int]]]:
        """Encoded training examples. The default encodes the task's train split."""
        from effkit.data import encode

        if ctx.data is None:
            raise DataError(f"stage '{ctx.stage}' trains on the task but the recipe has no data")
        return encode(ctx.data.splits["train"], ctx.tokenizer, ctx.data.task, ctx.max_length)

    def loss(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], ctx: StageContext
    ) -> tuple[torch.Tensor, Any, dict[str, float]]:
        """Return (loss, model outputs, scalars to log)."""
        raise NotImplementedError

    def cleanup(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Remove what :meth:`prepare` added and inference does not need, after training."""
        return model


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    model: EffkitModel | None = None,
    regression: RegressionLoss = "mse",
) -> torch.Tensor:
    """Cross-entropy for sequence ([B, C] logits) or token ([B, L, C] logits) classification;
    for float labels (regression, [B, 1] outputs) the ``regression`` loss, with the targets
    standardised as ``model``'s head is (see :mod:`effkit.regression`)."""
    if labels.is_floating_point():
        return regression_loss(model, logits, labels, regression)
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return F.cross_entropy(logits, labels)


class TaskObjective(Objective):
    """Supervised training on the task's labels (sequence or token classification, regression)."""

    selects_on_validation: ClassVar[bool] = True
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="Label smoothing factor (classification)."
    )
    regression_loss: RegressionLoss = Field(
        "mse",
        description="Regression: the loss on standardised targets, mse or huber (squared "
        "within one standard deviation, absolute beyond).",
    )

    def check(self, facts: ModelFacts) -> None:
        if facts.task == "regression" and self.label_smoothing:
            raise RecipeError(
                "label_smoothing applies to classification; a regression task has no classes",
                hint="remove label_smoothing",
            )

    def loss(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], ctx: StageContext
    ) -> tuple[torch.Tensor, Any, dict[str, float]]:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "word_ids")}
        outputs = model(**inputs)
        logits, labels = outputs.logits, batch["labels"]
        if labels.is_floating_point():
            loss = task_loss(logits, labels, model, self.regression_loss)
        elif self.label_smoothing:
            flat = logits.flatten(0, 1) if logits.dim() == 3 else logits
            loss = F.cross_entropy(
                flat, labels.flatten(), ignore_index=-100, label_smoothing=self.label_smoothing
            )
        else:
            loss = task_loss(logits, labels)
        return loss, outputs, {}
