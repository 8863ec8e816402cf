"""Timing models interleaved: warm-up, rotated trials, the median or best trial, the ratio."""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from effkit.bench.config import WHERE, BenchConfig
from effkit.bench.environment import environment, load_average, resolve_device, synchronize
from effkit.bench.inputs import low_id_for, make_inputs
from effkit.bench.results import BenchResult, Timing
from effkit.errors import EffkitError, did_you_mean

logger = logging.getLogger(__name__)


def _batch_size_of(inputs: Mapping[str, torch.Tensor]) -> int:
    if not inputs:
        raise EffkitError("no inputs to time the models with", where=WHERE)
    tensor = inputs["input_ids"] if "input_ids" in inputs else next(iter(inputs.values()))
    if tensor.dim() == 0:
        raise EffkitError("inputs must have a batch dimension", where=WHERE)
    return int(tensor.shape[0])


class _Ticker:
    """A transient progress bar, or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._progress: Any = None
        self._task: Any = None
        if enabled and total > 0:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
            )
            self._task = self._progress.add_task("bench", total=total)

    @contextmanager
    def running(self) -> Iterator[_Ticker]:
        if self._progress is None:
            yield self
            return
        with self._progress:
            yield self

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


def _rotated(names: Sequence[str], trial: int) -> list[str]:
    """The order of models in ``trial``: the list rotated left by ``trial`` places."""
    shift = trial % len(names)
    return [*names[shift:], *names[:shift]]


def measure(
    models: Mapping[str, Callable[..., Any]],
    inputs: Mapping[str, torch.Tensor],
    *,
    warmup: int,
    trials: int,
    batches: int,
    device: torch.device,
    progress: bool = True,
    min_trial_seconds: float = 0.0,
    statistic: str = "median",
) -> dict[str, Timing]:
    """Time each model on ``inputs``, interleaved: the order of models rotates every trial.

    The models must already be on ``device`` and in eval mode.  Each model first runs ``warmup``
    untimed mini-batches; then in each of ``trials`` trials every model runs ``batches`` timed
    mini-batches back to back, and more until the trial has lasted ``min_trial_seconds``.  A
    trial's throughput is inputs times batches over its wall time; the reported figure is the
    median over trials (``statistic="best"``: the fastest trial), the latency the median
    (fastest) time of one mini-batch.
    """
    if statistic not in ("median", "best"):
        raise EffkitError(f"statistic must be 'median' or 'best', got '{statistic}'", where=WHERE)
    if not models:
        raise EffkitError("no models to measure", where=WHERE)
    if warmup < 0 or trials < 1 or batches < 1:
        raise EffkitError(
            f"need warmup >= 0, trials >= 1, batches >= 1; got {warmup}, {trials}, {batches}",
            where=WHERE,
        )
    batch_size = _batch_size_of(inputs)
    names = list(models)
    for name, model in models.items():
        if isinstance(model, torch.nn.Module) and model.training:
            logger.warning("model '%s' is in training mode; timing it as it is", name)

    trial_rates: dict[str, list[float]] = {name: [] for name in names}
    batch_times: dict[str, list[float]] = {name: [] for name in names}
    ticker = _Ticker(len(names) * (warmup + trials * batches), progress)

    with ticker.running(), torch.inference_mode():
        for name in names:
            ticker.describe(f"warm-up {name}")
            for _ in range(warmup):
                models[name](**inputs)
                ticker.advance()
        synchronize(device)

        for trial in range(trials):
            gc.collect()
            for name in _rotated(names, trial):
                model = models[name]
                ticker.describe(f"trial {trial + 1}/{trials} {name}")
                synchronize(device)
                start = time.perf_counter()
                previous, done = start, 0
                while done < batches or previous - start < min_trial_seconds:
                    model(**inputs)
                    synchronize(device)
                    now = time.perf_counter()
                    batch_times[name].append(now - previous)
                    previous, done = now, done + 1
                    ticker.advance()
                elapsed = max(previous - start, 1e-12)
                trial_rates[name].append(batch_size * done / elapsed)

    timings: dict[str, Timing] = {}
    for name in names:
        rate, latency = (
            (max(trial_rates[name]), min(batch_times[name]))
            if statistic == "best"
            else (statistics.median(trial_rates[name]), statistics.median(batch_times[name]))
        )
        timings[name] = Timing(
            name=name,
            samples_per_s=float(rate),
            trial_samples_per_s=[float(rate) for rate in trial_rates[name]],
            latency_ms=float(latency * 1000.0),
        )
        logger.debug(
            "%s: %.2f samples/s (trials %s), %.2f ms per batch",
            name,
            timings[name].samples_per_s,
            ", ".join(f"{rate:.2f}" for rate in trial_rates[name]),
            timings[name].latency_ms,
        )
    return timings


def benchmark(
    models: Mapping[str, Callable[..., Any]],
    cfg: BenchConfig,
    *,
    vocab_size: int,
    baseline: str | None = None,
    type_vocab_size: int = 0,
    progress: bool = True,
) -> BenchResult:
    """Measure ``models`` (already placed on the configured device) with the settings of ``cfg``.

    ``baseline`` names the model among ``models`` that ratios are relative to.  ``cfg.enabled``,
    ``cfg.memory`` and ``cfg.baseline`` are for the caller to act on; ``peak_memory_mb`` fills the
    memory figures from saved model folders.
    """
    if baseline is not None and baseline not in models:
        raise EffkitError(
            f"baseline '{baseline}' is not among the measured models",
            where=WHERE,
            hint=did_you_mean(baseline, list(models)),
        )
    device = resolve_device(cfg.device)
    resolved = cfg.resolved(device)
    assert resolved.warmup is not None
    assert resolved.trials is not None
    assert resolved.batches is not None

    previous_threads = torch.get_num_threads()
    if resolved.threads is not None:
        torch.set_num_threads(resolved.threads)
    try:
        env = environment(device)
        inputs = make_inputs(
            resolved.batch_size,
            resolved.seq_len,
            vocab_size,
            device=device,
            type_vocab_size=type_vocab_size,
            low_id=low_id_for(vocab_size),
        )
        settings: dict[str, Any] = {
            "batch_size": resolved.batch_size,
            "seq_len": resolved.seq_len,
            "warmup": resolved.warmup,
            "trials": resolved.trials,
            "batches": resolved.batches,
            "min_trial_seconds": resolved.min_trial_seconds,
            "statistic": resolved.statistic,
            "threads": torch.get_num_threads(),
            "device": str(device),
        }
        logger.info(
            "benchmarking %s on %s: batch %d x %d tokens, warm-up %d, %d trials of %d batches",
            ", ".join(models),
            device,
            resolved.batch_size,
            resolved.seq_len,
            resolved.warmup,
            resolved.trials,
            resolved.batches,
        )
        timings = measure(
            models,
            inputs,
            warmup=resolved.warmup,
            trials=resolved.trials,
            batches=resolved.batches,
            device=device,
            progress=progress,
            min_trial_seconds=resolved.min_trial_seconds,
            statistic=resolved.statistic,
        )
        env["load_after"] = load_average()
    finally:
        torch.set_num_threads(previous_threads)

    result = BenchResult(timings=timings, baseline=baseline, settings=settings, environment=env)
    for name, timing in timings.items():
        ratio = result.ratio(name)
        logger.info(
            "%s: %.2f samples/s, %.2f ms per batch%s",
            name,
            timing.samples_per_s,
            timing.latency_ms,
            "" if ratio is None else f", {ratio:.3f}x baseline",
        )
    return result
