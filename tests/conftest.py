"""Shared fixtures: a private stage cache, tiny recipes, a test transform exercising every hook."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from pydantic import PrivateAttr

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from effkit import registry
from effkit.transform import StageContext, Transform

HERE = Path(__file__).parent
TINY_RECIPE = HERE / "recipes" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own stage cache, so no test sees another's stages."""
    monkeypatch.setenv("EFFKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_recipe() -> Path:
    return TINY_RECIPE


class Probe(Transform):
    """A transform that records every lifecycle event and uses every hook."""

    weight: float = 0.5
    extra_lr: float = 0.01
    interrupt_at: ClassVar[int | None] = None
    """Raise KeyboardInterrupt during this step's forward pass (a Ctrl-C mid-stage)."""

    _events: list[str] = PrivateAttr(default_factory=list)
    _scale: torch.nn.Parameter | None = PrivateAttr(None)

    def apply(self, model, ctx: StageContext):
        self._events.append("apply")
        # an extra parameter trained through its own optimizer group
        model.probe_scale = torch.nn.Parameter(torch.ones(1))
        self._scale = model.probe_scale
        return model

    def parameter_groups(self, model) -> list[dict[str, Any]]:
        self._events.append("parameter_groups")
        return [{"params": [model.probe_scale], "lr": self.extra_lr, "schedule": False}]

    def loss_terms(self, model, batch, outputs, ctx) -> dict[str, torch.Tensor]:
        if ctx.step == Probe.interrupt_at:
            raise KeyboardInterrupt
        if "loss_terms" not in self._events:
            self._events.append("loss_terms")
        return {"probe": self.weight * (model.probe_scale - 2.0).pow(2).sum()}

    def on_step(self, model, ctx: StageContext) -> None:
        self._events.append(f"step{ctx.step}")

    def step_figures(self, model, ctx: StageContext) -> dict[str, float]:
        return {"probe_scale": float(model.probe_scale.detach())}

    def finalize(self, model, ctx: StageContext):
        self._events.append("finalize")
        del model.probe_scale
        return model

    def describe(self) -> dict[str, Any]:
        scale = float(self._scale.detach()) if self._scale is not None else None
        return {"events": len(self._events), "scale": scale}

    def rebuild(self, model, ctx: StageContext):
        return model


@pytest.fixture
def probe() -> type[Probe]:
    registry.register(registry.TRANSFORMS, "probe", Probe)
    yield Probe
    Probe.interrupt_at = None
    registry.unregister(registry.TRANSFORMS, "probe")
