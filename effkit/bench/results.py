"""Benchmark results: each model's timing, the ratios to a baseline, settings and environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from effkit.bench.config import WHERE
from effkit.errors import EffkitError, did_you_mean


@dataclass
class Timing:
    """Throughput and latency of one model."""

    name: str
    samples_per_s: float
    trial_samples_per_s: list[float]
    latency_ms: float
    peak_memory_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass
class BenchResult:
    """Timings of several models, the baseline among them, the settings and the environment."""

    timings: dict[str, Timing]
    baseline: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def ratio(self, name: str) -> float | None:
        """Samples per second of ``name`` over the baseline's; None without a baseline."""
        if name not in self.timings:
            raise EffkitError(
                f"no timing named '{name}'",
                where=WHERE,
                hint=did_you_mean(name, list(self.timings)),
            )
        if self.baseline is None or self.baseline not in self.timings:
            return None
        base = self.timings[self.baseline].samples_per_s
        if base <= 0:
            return None
        return self.timings[name].samples_per_s / base

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: timings (each with its ratio), baseline, settings, environment."""
        timings: dict[str, Any] = {}
        for name, timing in self.timings.items():
            entry = timing.to_dict()
            entry["ratio"] = self.ratio(name)
            timings[name] = entry
        return {
            "timings": timings,
            "baseline": self.baseline,
            "ratios": {name: self.ratio(name) for name in self.timings},
            "settings": _jsonable(self.settings),
            "environment": _jsonable(self.environment),
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per model for reports: name, samples/s, latency ms, ratio, memory (MB)."""
        rows: list[dict[str, Any]] = []
        for name, timing in self.timings.items():
            ratio = self.ratio(name)
            memory = timing.peak_memory_mb
            rows.append(
                {
                    "name": name,
                    "samples/s": round(timing.samples_per_s, 2),
                    "latency ms": round(timing.latency_ms, 2),
                    "ratio": None if ratio is None else round(ratio, 3),
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
