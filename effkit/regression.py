"""Regression targets: standardised while a stage trains, in the data's units everywhere else.

A regression model has one output, a real number. While a stage trains it on the task, the
last linear layer of its head is rescaled so that the network predicts the *standardised*
target ``(y - mean) / std``, with the mean and standard deviation of the train split's targets;
this keeps the loss and its gradients of the same size whatever the units of the data. When
the stage's training ends, the rescaling is folded back into that layer (weight times ``std``,
bias times ``std`` plus ``mean``).

Outside training a model therefore predicts in the data's units with nothing but its own
weights: saving and loading, int8, half precision, ONNX and stock transformers folders need no
extra step. The mean and std are recorded in the saved model (``effkit.json``, ``target``),
and a later stage that trains the same model reuses them.

While the head is standardised, :func:`in_head_units` converts values in the data's units
(targets, a teacher's predictions) into the units the head outputs, and :func:`to_data_units`
converts outputs back (validation during training scores in the data's units).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from effkit.errors import ModelError

if TYPE_CHECKING:
    from effkit.models import EffkitModel

RegressionLoss = Literal["mse", "huber"]
"""The loss on standardised targets: squared error, or Huber (squared within one standard
deviation of the target, absolute beyond it)."""


@dataclass
class TargetScale:
    """The mean and standard deviation the targets of a regression model are standardised with."""

    mean: float
    std: float
    standardised: bool = False
    """True while the head outputs standardised values (inside a training stage)."""

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def read(cls, value: Any, where: str = "effkit.json") -> TargetScale | None:
        """The scale a saved model records (``None``: a model with no target scale)."""
        return None if value is None else cls.from_dict(value, where)

    @classmethod
    def from_dict(cls, value: Any, where: str = "effkit.json") -> TargetScale:
        try:
            mean, std = float(value["mean"]), float(value["std"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"'{where}' holds no readable target mean and std") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ModelError(f"'{where}' holds a target std of {std}; it must be positive")
        return cls(mean, std)


def target_scale(targets: Sequence[float]) -> TargetScale:
    """The mean and (population) standard deviation of ``targets``; a constant column gets a
    std of 1 so that standardising it only centres it."""
    values = [float(v) for v in targets]
    if not values:
        raise ModelError("no regression targets to standardise")
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return TargetScale(mean, std if std > 1e-12 else 1.0)


def output_layer(model: EffkitModel) -> nn.Linear:
    """The head's last linear layer, whose one output is the prediction."""
    prefix = getattr(model.hf, "base_model_prefix", "")
    found = [
        module
        for name, module in model.hf.named_modules()
        if isinstance(module, nn.Linear) and not name.startswith(f"{prefix}.") and name != prefix
    ]
    if not found or found[-1].out_features != 1:
        raise ModelError(
            f"{type(model.hf).__name__} has no linear output layer with one output; a "
            "regression head ends in a Linear(hidden, 1)"
        )
    layer = found[-1]
    if not layer.weight.is_floating_point():
        raise ModelError("the regression head's output layer is not a float layer; train it "
                         "before quantising the model")  # fmt: skip
    return layer


def _rescale(layer: nn.Linear, scale: float, shift: float) -> None:
    with torch.no_grad():
        layer.weight.mul_(scale)
        if layer.bias is not None:
            layer.bias.mul_(scale).add_(shift)


@contextmanager
def standardised_head(model: EffkitModel, targets: Sequence[float] | None) -> Iterator[None]:
    """While inside, ``model``'s head outputs standardised targets; on the way out the scale is
    folded back into it. The scale is the model's own when it has one (its head was trained
    before, in the data's units, and is standardised first), else that of ``targets`` (the
    train split's; a new head's outputs count as standardised as they are, so that it starts
    near the mean), and is kept on the model (``model.target_scale``)."""
    scale: TargetScale | None = getattr(model, "target_scale", None)
    layer = output_layer(model)
    if scale is None:  # a new head: its outputs are taken as standardised from the start
        if targets is None:
            raise ModelError("a regression model without a target scale needs training targets")
        scale = target_scale(targets)
        model.target_scale = scale
    else:  # a head in the data's units (trained before): standardise it
        _rescale(layer, 1.0 / scale.std, -scale.mean / scale.std)
    scale.standardised = True
    try:
        yield
    finally:
        layer = output_layer(model)  # the best weights may have been loaded into a new tensor
        _rescale(layer, scale.std, scale.mean)
        scale.standardised = False


def _active(model: Any) -> TargetScale | None:
    scale = getattr(model, "target_scale", None)
    return scale if isinstance(scale, TargetScale) and scale.standardised else None


def in_head_units(model: EffkitModel, values: torch.Tensor) -> torch.Tensor:
    """Values in the data's units (targets, a teacher's predictions) in the units ``model``'s
    head outputs now: standardised while it trains, unchanged otherwise."""
    scale = _active(model)
    return values if scale is None else (values - scale.mean) / scale.std


def to_data_units(model: EffkitModel, values: torch.Tensor) -> torch.Tensor:
    """``model``'s outputs in the data's units (the inverse of :func:`in_head_units`)."""
    scale = _active(model)
    return values if scale is None else values * scale.std + scale.mean


def regression_loss(
    model: EffkitModel | None,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    kind: RegressionLoss = "mse",
) -> torch.Tensor:
    """The loss of one-output predictions ``[B, 1]`` (or ``[B]``) against targets ``[B]`` in the
    data's units, both taken in the head's current units (standardised while training)."""
    pred = outputs.reshape(outputs.shape[0], -1)[:, 0].float()
    goal = targets.float() if model is None else in_head_units(model, targets.float())
    if kind == "huber":
        return F.huber_loss(pred, goal, delta=1.0)
    return F.mse_loss(pred, goal)
