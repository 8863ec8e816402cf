"""The benchmark protocol's settings: a recipe's ``benchmark`` section and the device defaults."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

WHERE = "bench"

RUNTIMES = ("fp32", "bf16", "fp16", "int8", "ort-fp32", "ort-int8")
"""Names of the plain runtimes a baseline can be timed in (see :mod:`effkit.runtimes`)."""

#: Defaults on an accelerator: the paper's protocol.
GPU_DEFAULTS: dict[str, int] = {"warmup": 10, "trials": 3, "batches": 200}
#: Defaults on CPU, where one 128x128 batch of a small encoder already takes seconds: many short
#: trials, so that the median trial is one that other work on a shared machine left alone.
#: Chosen with ``benchmarks/self_check.py`` (all-MiniLM-L6-v2 against a copy of itself, batch
#: 128 x 128, 2 threads on a 2-core VM at load average 4 to 6): the median of 7 trials of 1
#: batch read 0.967x to 1.025x over two runs, where 3 trials strayed to 0.887x and 1.177x and
#: the fastest trial to 1.053x (docs/benchmarks.md, "Protocol").
CPU_DEFAULTS: dict[str, int] = {"warmup": 1, "trials": 7, "batches": 1}


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
            "What ratios are relative to: 'initial' (the recipe's starting model), "
            "'best-runtime' (the starting model in every plain runtime: float32, bf16/fp16 "
            "where the hardware has the units, torch int8, ONNX Runtime float32 and int8; "
            "ratios against float32 and against the fastest), 'none', or a saved model folder."
        ),
    )
    runtimes: list[str] | None = Field(
        default=None,
        description="The baseline's runtimes to measure beside it (fp32, bf16, fp16, int8, "
        "ort-fp32, ort-int8); None: all of them with baseline 'best-runtime', none otherwise.",
    )
    data: bool | str = Field(
        default=False,
        description=(
            "Also time end-to-end prediction on real texts (tokenisation, length sorting, "
            "grouping, padding), in inputs per second: true for the recipe's own data, or a "
            "data source as in data.source; false: the fixed-shape figure only."
        ),
    )
    data_split: Literal["train", "validation", "test"] = Field(
        default="test", description="The split whose texts 'data' times."
    )
    data_limit: int | None = Field(
        default=None,
        ge=1,
        description="Time at most this many texts of the split (evenly spaced); None: all.",
    )

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, value: list[str] | None) -> list[str] | None:
        unknown = [name for name in value or [] if name not in RUNTIMES]
        if unknown:
            raise ValueError(f"unknown runtime(s) {unknown}; known: {', '.join(RUNTIMES)}")
        return value

    def baseline_runtimes(self) -> list[str] | None:
        """The runtimes to measure the baseline in (None: the baseline as it is only)."""
        if self.runtimes is not None:
            return self.runtimes
        if self.baseline == "best-runtime":
            return list(RUNTIMES)
        return None

    def resolved(self, device: torch.device) -> BenchConfig:
        """A copy with warmup, trials and batches filled with the defaults for ``device``."""
        defaults = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
        update: dict[str, Any] = {
            key: value for key, value in defaults.items() if getattr(self, key) is None
        }
        return self.model_copy(update=update)
