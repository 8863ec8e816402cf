"""The benchmark protocol's settings: a recipe's ``benchmark`` section and the device defaults."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

WHERE = "bench"

#: Defaults on an accelerator: the paper's protocol.
GPU_DEFAULTS: dict[str, int] = {"warmup": 10, "trials": 3, "batches": 200}
#: Defaults on CPU, where one 128x128 batch of a small encoder already takes seconds.
CPU_DEFAULTS: dict[str, int] = {"warmup": 1, "trials": 3, "batches": 2}


class BenchConfig(BaseModel):
    """How to measure throughput, latency and memory (the ``bench`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Measure the models at all.")
    batch_size: int = Field(
        default=128, ge=1, description="Inputs per mini-batch passed to the model."
    )
    seq_len: int = Field(default=128, ge=2, description="Tokens per input.")
    warmup: int | None = Field(
        default=None,
        ge=0,
        description="Untimed mini-batches per model first; None: device default.",
    )
    trials: int | None = Field(
        default=None,
        ge=1,
        description="Timed trials per model; None: device default.",
    )
    statistic: Literal["median", "best"] = Field(
        default="median",
        description="Which trial is reported: the median, or the fastest ('best', as timeit "
        "does: on a shared machine other work only ever slows a trial down).",
    )
    batches: int | None = Field(
        default=None, ge=1, description="Mini-batches per trial; None: device default."
    )
    min_trial_seconds: float = Field(
        default=0.0,
        ge=0,
        description="A trial goes on past its batches until it has lasted this long (steadier "
        "figures for fast models).",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch.set_num_threads during the measurement; None keeps the current value.",
    )
    memory: bool = Field(
        default=False,
        description="Also measure peak memory per model in a subprocess (needs saved models).",
    )
    device: str = Field(
        default="auto",
        description="'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:N'.",
    )
    baseline: str = Field(
        default="initial",
        description=(
            "What ratios are relative to: 'initial' (the recipe's starting model), 'none', "
            "or a saved model folder."
        ),
    )

    def resolved(self, device: torch.device) -> BenchConfig:
        """A copy with warmup, trials and batches filled with the defaults for ``device``."""
        defaults = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
        update: dict[str, Any] = {
            key: value for key, value in defaults.items() if getattr(self, key) is None
        }
        return self.model_copy(update=update)
