"""Benchmark results: each model's timing and spread, the ratios to a baseline, the settings.

One statistic makes every figure of a model: the *reported trial* (the median trial by rate, or
the fastest with ``statistic="best"``; with an even number of trials the median is the mean of
the two middle trials). Samples per second, milliseconds per batch (``batch_size`` over that
rate) and CPU seconds per batch all come from it, so they never disagree. Beside it stand the
spread over all trials (min, median, max) and a noise flag (:data:`NOISE_THRESHOLD`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from effkit.bench.config import WHERE
from effkit.errors import EffkitError, did_you_mean

#: A timing is flagged ``noisy`` when its trials spread by more than this share of their median,
#: ``(max - min) / median > NOISE_THRESHOLD``: then the machine, not the model, moved the figure
#: by more than 10%, and a ratio built on it is uncertain by about as much.
NOISE_THRESHOLD = 0.10


def reported_trials(rates: Sequence[float], statistic: str) -> list[int]:
    """The indices of the trials that make the reported figure.

    ``best``: the fastest trial; ``median``: the middle trial by rate, or the two middle ones
    when the number of trials is even (their mean is then the median).
    """
    if statistic not in ("median", "best"):
        raise EffkitError(f"statistic must be 'median' or 'best', got '{statistic}'", where=WHERE)
    if not rates:
        return []
    order = sorted(range(len(rates)), key=lambda i: rates[i])
    if statistic == "best":
        return [order[-1]]
    low, high = order[(len(order) - 1) // 2], order[len(order) // 2]
    return [low] if low == high else [low, high]


def spread(rates: Sequence[float]) -> float | None:
    """``(max - min) / median`` of the trials' rates; None without a positive median."""
    if not rates:
        return None
    middle = statistics.median(rates)
    return (max(rates) - min(rates)) / middle if middle > 0 else None


def is_noisy(rates: Sequence[float], threshold: float = NOISE_THRESHOLD) -> bool:
    """Whether the trials spread by more than ``threshold`` of their median."""
    value = spread(rates)
    return value is not None and value > threshold


@dataclass
class Timing:
    """Throughput and latency of one model, its spread over trials and its CPU time.

    ``samples_per_s`` is the reported trial's rate and ``latency_ms`` is ``batch_size`` inputs at
    that rate (milliseconds per batch); ``trial_*`` hold every trial (rate, wall seconds, CPU
    seconds of the process, batches run), in trial order.
    """

    name: str
    samples_per_s: float
    trial_samples_per_s: list[float]
    latency_ms: float
    peak_memory_mb: float | None = None
    trial_seconds: list[float] = field(default_factory=list)
    trial_cpu_seconds: list[float] = field(default_factory=list)
    trial_batches: list[float] = field(default_factory=list)
    cpu_s_per_batch: float | None = None
    """Process CPU seconds per batch in the reported trial (all threads together)."""
    cpu_wall_ratio: float | None = None
    """Process CPU time over wall time in the reported trial: about the number of threads on a
    free machine, less when other work holds the cores."""

    @classmethod
    def from_trials(
        cls,
        name: str,
        *,
        inputs: Sequence[float],
        seconds: Sequence[float],
        cpu_seconds: Sequence[float],
        batch_size: int,
        statistic: str = "median",
    ) -> Timing:
        """The timing of trials that ran ``inputs[i]`` inputs in ``seconds[i]`` (wall) and
        ``cpu_seconds[i]`` (process CPU), summed up by ``statistic``."""
        walls = [max(float(s), 1e-12) for s in seconds]
        rates = [float(n) / wall for n, wall in zip(inputs, walls, strict=True)]
        picked = reported_trials(rates, statistic)
        rate = statistics.fmean(rates[i] for i in picked)
        batches = [float(n) / batch_size for n in inputs]
        cpu_per_batch = statistics.fmean(cpu_seconds[i] / batches[i] for i in picked)
        cpu_wall = statistics.fmean(cpu_seconds[i] / walls[i] for i in picked)
        return cls(
            name=name,
            samples_per_s=rate,
            trial_samples_per_s=rates,
            latency_ms=1000.0 * batch_size / rate,
            trial_seconds=[float(s) for s in seconds],
            trial_cpu_seconds=[float(c) for c in cpu_seconds],
            trial_batches=batches,
            cpu_s_per_batch=cpu_per_batch,
            cpu_wall_ratio=cpu_wall,
        )

    @property
    def min_samples_per_s(self) -> float:
        """The slowest trial's rate."""
        return min(self.trial_samples_per_s, default=self.samples_per_s)

    @property
    def median_samples_per_s(self) -> float:
        """The median trial rate."""
        rates = self.trial_samples_per_s
        return float(statistics.median(rates)) if rates else self.samples_per_s

    @property
    def max_samples_per_s(self) -> float:
        """The fastest trial's rate."""
        return max(self.trial_samples_per_s, default=self.samples_per_s)

    @property
    def spread(self) -> float | None:
        """``(max - min) / median`` over the trials."""
        return spread(self.trial_samples_per_s)

    @property
    def noisy(self) -> bool:
        """Whether the spread passes :data:`NOISE_THRESHOLD`."""
        return is_noisy(self.trial_samples_per_s)

    def to_dict(self) -> dict[str, Any]:
        """The fields, the spread and the noise flag as a JSON-ready dict."""
        data = asdict(self)
        data.update(
            min_samples_per_s=self.min_samples_per_s,
            median_samples_per_s=self.median_samples_per_s,
            max_samples_per_s=self.max_samples_per_s,
            spread=self.spread,
            noisy=self.noisy,
            noise_threshold=NOISE_THRESHOLD,
        )
        return data


def same_architecture_note(measured: float, trial_ratios: Sequence[float]) -> str:
    """What a report says of a model measured against an identical architecture."""
    text = (
        f"same architecture: the ratio is 1.0 by construction; the measured {measured:.2f}x "
        "is noise"
    )
    if len(trial_ratios) > 1:
        text += (
            f" (spread {min(trial_ratios):.2f}x to {max(trial_ratios):.2f}x over "
            f"{len(trial_ratios)} paired trials)"
        )
    return text


@dataclass
class BenchResult:
    """Timings of several models, the baseline among them, the settings and the environment.

    ``same_architecture`` says, for each model other than the baseline, whether it has the
    baseline's architecture (see :mod:`effkit.bench.architecture`); such a model's ratio is 1.0
    by construction, and what was measured shows the noise.
    """

    timings: dict[str, Timing]
    baseline: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    same_architecture: dict[str, bool] = field(default_factory=dict)

    def _check(self, name: str) -> None:
        if name not in self.timings:
            raise EffkitError(
                f"no timing named '{name}'",
                where=WHERE,
                hint=did_you_mean(name, list(self.timings)),
            )

    def ratio(self, name: str) -> float | None:
        """Samples per second of ``name`` over the baseline's; None without a baseline."""
        self._check(name)
        if self.baseline is None or self.baseline not in self.timings:
            return None
        base = self.timings[self.baseline].samples_per_s
        if base <= 0:
            return None
        return self.timings[name].samples_per_s / base

    def trial_ratios(self, name: str) -> list[float]:
        """Trial by trial, ``name``'s rate over the baseline's in the same trial (paired)."""
        self._check(name)
        if self.baseline is None or self.baseline not in self.timings:
            return []
        base = self.timings[self.baseline].trial_samples_per_s
        own = self.timings[name].trial_samples_per_s
        return [a / b for a, b in zip(own, base, strict=False) if b > 0]

    def note(self, name: str) -> str | None:
        """The same-architecture note of ``name``, or None."""
        ratio = self.ratio(name)
        if not self.same_architecture.get(name) or ratio is None:
            return None
        return same_architecture_note(ratio, self.trial_ratios(name))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: timings (each with its ratio), baseline, settings, environment."""
        timings: dict[str, Any] = {}
        for name, timing in self.timings.items():
            entry = timing.to_dict()
            entry["ratio"] = self.ratio(name)
            paired = self.trial_ratios(name)
            entry["trial_ratios"] = paired
            entry["paired_ratio"] = float(statistics.median(paired)) if paired else None
            entry["same_architecture"] = (
                None if name == self.baseline else self.same_architecture.get(name)
            )
            entry["note"] = self.note(name)
            timings[name] = entry
        return {
            "timings": timings,
            "baseline": self.baseline,
            "ratios": {name: self.ratio(name) for name in self.timings},
            "settings": _jsonable(self.settings),
            "environment": _jsonable(self.environment),
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per model for reports: name, samples/s and spread, latency, ratio, memory."""
        rows: list[dict[str, Any]] = []
        for name, timing in self.timings.items():
            ratio = self.ratio(name)
            memory = timing.peak_memory_mb
            value = timing.spread
            rows.append(
                {
                    "name": name,
                    "samples/s": round(timing.samples_per_s, 2),
                    "min": round(timing.min_samples_per_s, 2),
                    "max": round(timing.max_samples_per_s, 2),
                    "spread": None if value is None else round(value, 3),
                    "noisy": timing.noisy,
                    "latency ms": round(timing.latency_ms, 2),
                    "ratio": None if ratio is None else round(ratio, 3),
                    "same architecture": self.same_architecture.get(name),
                    "memory": None if memory is None else round(memory, 1),
                }
            )
        return rows


def _jsonable(value: Any) -> Any:
    """``value`` with tuples turned into lists and unknown objects into strings."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
