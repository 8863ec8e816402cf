"""Timing models interleaved: warm-up, rotated trials, wall and CPU time, the reported trial."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from effkit.bench.config import WHERE, BenchConfig
from effkit.bench.environment import environment, load_average, resolve_device, synchronize
from effkit.bench.inputs import low_id_for, make_inputs
from effkit.bench.results import BenchResult, Timing, reported_trials
from effkit.checks import check_max_length
from effkit.errors import EffkitError, did_you_mean
from effkit.progress import Bar

logger = logging.getLogger(__name__)


def _batch_size_of(inputs: Mapping[str, torch.Tensor]) -> int:
    if not inputs:
        raise EffkitError("no inputs to time the models with", where=WHERE)
    tensor = inputs["input_ids"] if "input_ids" in inputs else next(iter(inputs.values()))
    if tensor.dim() == 0:
        raise EffkitError("inputs must have a batch dimension", where=WHERE)
    return int(tensor.shape[0])


def _rotated(names: Sequence[str], trial: int) -> list[str]:
    """The order of models in ``trial``: the list rotated left by ``trial`` places."""
    shift = trial % len(names)
    return [*names[shift:], *names[:shift]]


Call = Callable[[], Any]


def interleave(
    calls: Mapping[str, Call],
    *,
    inputs_per_call: int,
    batch_size: int,
    warmup: int,
    trials: int,
    calls_per_trial: int,
    device: torch.device,
    progress: bool = True,
    min_trial_seconds: float = 0.0,
    statistic: str = "median",
    warmup_calls: Mapping[str, Call] | None = None,
    label: str = "trial",
) -> dict[str, Timing]:
    """Time each named piece of work, interleaved: the order rotates every trial.

    Each ``calls[name]()`` handles ``inputs_per_call`` inputs (a batch, or a pass over a data
    set). Every name first runs ``warmup`` untimed calls (``warmup_calls[name]`` when given);
    then in each of ``trials`` trials every name runs ``calls_per_trial`` timed calls back to
    back, and more until the trial has lasted ``min_trial_seconds``. A trial's wall time
    (``time.perf_counter``) and the process's CPU time (``time.process_time``, every thread)
    are read around it, with the garbage collector paused. Figures per
    :meth:`Timing.from_trials`, with ``batch_size`` inputs to a batch.
    """
    reported_trials([], statistic)  # checks the statistic's name
    if not calls:
        raise EffkitError("no models to measure", where=WHERE)
    if warmup < 0 or trials < 1 or calls_per_trial < 1:
        raise EffkitError(
            f"need warmup >= 0, trials >= 1, batches >= 1; got {warmup}, {trials}, "
            f"{calls_per_trial}",
            where=WHERE,
        )
    names = list(calls)
    warm = warmup_calls or calls
    inputs: dict[str, list[float]] = {name: [] for name in names}
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    ticker = Bar(len(names) * (warmup + trials * calls_per_trial), "bench", enabled=progress)

    with ticker, torch.inference_mode():
        for name in names:
            ticker.describe(f"warm-up {name}")
            for _ in range(warmup):
                warm[name]()
                ticker.advance()
        synchronize(device)

        for trial in range(trials):
            for name in _rotated(names, trial):
                call = calls[name]
                ticker.describe(f"{label} {trial + 1}/{trials} {name}")
                gc.collect()
                synchronize(device)
                collecting = gc.isenabled()
                gc.disable()
                try:
                    cpu_start, start = time.process_time(), time.perf_counter()
                    now, done = start, 0
                    while done < calls_per_trial or now - start < min_trial_seconds:
                        call()
                        synchronize(device)
                        now, done = time.perf_counter(), done + 1
                        ticker.advance()
                    cpu = time.process_time() - cpu_start
                finally:
                    if collecting:
                        gc.enable()
                inputs[name].append(float(inputs_per_call * done))
                walls[name].append(now - start)
                cpus[name].append(cpu)

    timings: dict[str, Timing] = {}
    for name in names:
        timings[name] = Timing.from_trials(
            name,
            inputs=inputs[name],
            seconds=walls[name],
            cpu_seconds=cpus[name],
            batch_size=batch_size,
            statistic=statistic,
        )
        logger.debug(
            "%s: %.2f samples/s (trials %s), %.2f ms per batch, CPU/wall %.2f",
            name,
            timings[name].samples_per_s,
            ", ".join(f"{rate:.2f}" for rate in timings[name].trial_samples_per_s),
            timings[name].latency_ms,
            timings[name].cpu_wall_ratio or 0.0,
        )
    return timings


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
    trial's throughput is inputs times batches over its wall time; the reported trial is the
    median one (``statistic="best"``: the fastest), and its rate gives the samples per second,
    the milliseconds per batch and the CPU seconds per batch alike (see :mod:`.results`).
    """
    reported_trials([], statistic)
    if not models:
        raise EffkitError("no models to measure", where=WHERE)
    batch_size = _batch_size_of(inputs)
    for name, model in models.items():
        if isinstance(model, torch.nn.Module) and model.training:
            logger.warning("model '%s' is in training mode; timing it as it is", name)

    def call(model: Callable[..., Any]) -> Call:
        return lambda: model(**inputs)

    return interleave(
        {name: call(model) for name, model in models.items()},
        inputs_per_call=batch_size,
        batch_size=batch_size,
        warmup=warmup,
        trials=trials,
        calls_per_trial=batches,
        device=device,
        progress=progress,
        min_trial_seconds=min_trial_seconds,
        statistic=statistic,
    )


@contextmanager
def threads(count: int | None) -> Iterator[int]:
    """``torch.set_num_threads(count)`` inside the block (None: unchanged), restored after it;
    yields the thread count in force."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def settings_of(resolved: BenchConfig, device: torch.device) -> dict[str, Any]:
    """The protocol's settings as a result records them (the thread count now in force)."""
    return {
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
    for model in models.values():
        check_max_length(model, cfg.seq_len, "seq_len", error=EffkitError)
    device = resolve_device(cfg.device)
    resolved = cfg.resolved(device)
    assert resolved.warmup is not None
    assert resolved.trials is not None
    assert resolved.batches is not None

    with threads(resolved.threads):
        env = environment(device)
        inputs = make_inputs(
            resolved.batch_size,
            resolved.seq_len,
            vocab_size,
            device=device,
            type_vocab_size=type_vocab_size,
            low_id=low_id_for(vocab_size),
        )
        settings = settings_of(resolved, device)
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

    result = BenchResult(timings=timings, baseline=baseline, settings=settings, environment=env)
    for name, timing in timings.items():
        ratio = result.ratio(name)
        logger.info(
            "%s: %.2f samples/s (trials %.2f to %.2f%s), %.2f ms per batch%s",
            name,
            timing.samples_per_s,
            timing.min_samples_per_s,
            timing.max_samples_per_s,
            ", noisy" if timing.noisy else "",
            timing.latency_ms,
            "" if ratio is None else f", {ratio:.3f}x baseline",
        )
    return result
