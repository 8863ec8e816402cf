"""Comparing models as a run or ``effkit bench`` reports them: timings, memory, parameters."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from effkit.bench.architecture import same_architecture
from effkit.bench.config import BenchConfig
from effkit.bench.environment import resolve_device
from effkit.bench.memory import peak_memory_mb
from effkit.bench.realdata import TextSet, measure_texts
from effkit.bench.timing import benchmark


def compare(
    models: Mapping[str, Any],
    cfg: BenchConfig,
    *,
    baseline: str | None,
    folders: Mapping[str, Path] | None = None,
    progress: bool = True,
    texts: TextSet | None = None,
    runtimes: tuple[Mapping[str, Any], Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Time ``models`` (effkit models on ``cfg.device``, by name) against ``baseline``,
    interleaved.

    Each model other than the baseline is checked for the baseline's architecture
    (:mod:`effkit.bench.architecture`): when it has it, its entry says ``same_architecture:
    true`` and carries a note that the measured ratio is noise. With ``cfg.memory``, each model
    with a saved folder in ``folders`` also gets its peak memory, measured in a subprocess. With
    ``texts``, end-to-end prediction on them is timed too (:mod:`effkit.bench.realdata`), under
    ``"realdata"``. ``runtimes`` is the baseline in other runtimes and the ones skipped, as
    :func:`effkit.runtimes.baseline_runtimes` gives them: each is timed as ``BASELINE@NAME``,
    and every timing gets ``ratio_best``, against the fastest of them (``best_runtime``).
    Returns the JSON-ready figures, parameter counts included.
    """
    first = next(iter(models.values()))
    timed: dict[str, Any] = dict(models)
    variants: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if runtimes is not None and baseline is not None:
        variants = {name: run for name, run in runtimes[0].items() if name != "fp32"}
        skipped = dict(runtimes[1])
        timed.update({f"{baseline}@{name}": run for name, run in variants.items()})
    result = benchmark(timed, cfg, vocab_size=first.vocab_size, baseline=baseline,
                       type_vocab_size=first.type_vocab_size, progress=progress)  # fmt: skip
    if baseline is not None:
        result.same_architecture = {
            name: same_architecture(model, models[baseline])
            for name, model in models.items()
            if name != baseline
        }
    if cfg.memory:
        device = str(resolve_device(cfg.device))
        for name, folder in (folders or {}).items():
            result.timings[name].peak_memory_mb = peak_memory_mb(
                folder, batch_size=cfg.batch_size, seq_len=cfg.seq_len, device=device
            )
    data = result.to_dict()
    if runtimes is not None and baseline is not None:
        _best_runtime(data, baseline, [f"{baseline}@{name}" for name in variants], skipped)
    data["num_parameters"] = {name: model.num_parameters() for name, model in models.items()}
    if texts is not None:
        real = measure_texts(models, texts, cfg, baseline=baseline, progress=progress)
        data["realdata"] = real.to_dict()
    return data


def _best_runtime(data: dict[str, Any], baseline: str, variants: list[str],
                  skipped: dict[str, str]) -> None:  # fmt: skip
    """Mark the fastest of the baseline's runtimes and every timing's ratio against it."""
    timings = data["timings"]
    best = max([baseline, *variants], key=lambda name: timings[name]["samples_per_s"])
    rate = timings[best]["samples_per_s"]
    for timing in timings.values():
        timing["ratio_best"] = timing["samples_per_s"] / rate if rate > 0 else None
    data["best_runtime"] = best
    data["runtimes"] = {
        "measured": [baseline, *variants],
        "skipped": {f"{baseline}@{name}": why for name, why in skipped.items()},
    }
