"""Comparing models as a run or ``effkit bench`` reports them: timings, memory, parameters."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from effkit.bench.config import BenchConfig
from effkit.bench.environment import resolve_device
from effkit.bench.memory import peak_memory_mb
from effkit.bench.timing import benchmark


def compare(
    models: Mapping[str, Any],
    cfg: BenchConfig,
    *,
    baseline: str | None,
    folders: Mapping[str, Path] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time ``models`` (effkit models on ``cfg.device``) against ``baseline``, interleaved.

    With ``cfg.memory``, each model with a saved folder in ``folders`` also gets its peak memory,
    measured in a subprocess. Returns the JSON-ready figures, parameter counts included.
    """
    first = next(iter(models.values()))
    result = benchmark(models, cfg, vocab_size=first.vocab_size, baseline=baseline,
                       type_vocab_size=first.type_vocab_size, progress=progress)  # fmt: skip
    if cfg.memory:
        device = str(resolve_device(cfg.device))
        for name, folder in (folders or {}).items():
            result.timings[name].peak_memory_mb = peak_memory_mb(
                folder, batch_size=cfg.batch_size, seq_len=cfg.seq_len, device=device
            )
    data = result.to_dict()
    data["num_parameters"] = {name: model.num_parameters() for name, model in models.items()}
    return data
