"""Layer selection: keep a subset of an encoder's layers (a smaller, faster student).

``KeepLayers(layers=[0, 2, 4])`` keeps those encoder layers, in that order, and drops the rest
for real. On load the selection is replayed on the full-size model built from the saved source
config, so transforms before or after it (pruning, multiplexing) compose in any order. It is
the smallest complete transform in effkit and is registered through an entry point exactly as
a third-party package would register one.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, field_validator

from effkit import EffkitModel, ModelError, ModelFacts, StageContext, Transform


class KeepLayers(Transform):
    """Keep only the listed encoder layers (0-based, in order); the rest are removed."""

    layers: list[int] = Field(min_length=1, description="Indices of the layers to keep.")
    _before: int | None = PrivateAttr(None)

    @field_validator("layers")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if any(i < 0 for i in value):
            raise ValueError("layer indices are 0-based and non-negative")
        if len(set(value)) != len(value):
            raise ValueError("layer indices must be distinct")
        return value

    def check(self, facts: ModelFacts) -> None:
        facts.require_encoder("keep-layers")
        if max(self.layers) >= facts.layers:
            raise ModelError(
                f"keep-layers: layer {max(self.layers)} does not exist; the model has "
                f"{facts.layers} layers (0..{facts.layers - 1})"
            )
        facts.layers = len(self.layers)

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        layers = model.encoder_layers()
        if max(self.layers) >= len(layers):
            raise ModelError(
                f"keep-layers: layer {max(self.layers)} does not exist; the model has "
                f"{len(layers)} layers (0..{len(layers) - 1})"
            )
        model.set_encoder_layers([layers[i] for i in self.layers])
        self._before = len(layers)
        return model

    def describe(self) -> dict[str, Any]:
        return {"kept_layers": self.layers, "layers_before": self._before}
