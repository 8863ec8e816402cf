"""Measuring a trial's throughput: its model against the base recipe's starting model.

The baseline is the base recipe's starting model (N=1, unpruned). With ``objectives.baseline:
once`` it is measured once per search and machine and kept in ``baseline-HOST.json``; with
``each-trial`` it is measured beside every trial, interleaved. A measurement holds the search's
exclusive lock, so no other process of the search trains or evaluates while it runs.
"""

from __future__ import annotations

from typing import Any

from effkit.models import EffkitModel
from effkit.pareto.base import Base, bench_protocol
from effkit.pareto.context import HOST, Context
from effkit.pareto.locks import SearchLocks
from effkit.runner import Runner
from effkit.storage import read_json, stable_hash, write_json


class Throughput:
    """Measures trial models against the base recipe's starting model, one process at a time."""

    def __init__(self, ctx: Context, base: Base, locks: SearchLocks) -> None:
        self.ctx = ctx
        self.protocol = bench_protocol(ctx.spec, base.recipe)
        self.locks = locks
        self.baseline_path = ctx.folder / f"baseline-{HOST}.json"
        self.baseline_key = stable_hash(
            {"protocol": self.protocol.model_dump(mode="json"),
             "model": base.recipe.model.model_dump(mode="json")}
        )  # fmt: skip

    def _bench(self, models: dict[str, EffkitModel], baseline: str | None) -> Any:
        from effkit.bench import benchmark, resolve_device

        device = resolve_device(self.protocol.device)
        placed = {name: m.to(device).eval() for name, m in models.items()}
        first = next(iter(placed.values()))
        try:
            return benchmark(
                placed,
                self.protocol,
                vocab_size=first.vocab_size,
                baseline=baseline,
                type_vocab_size=first.type_vocab_size,
                progress=self.ctx.progress and self.ctx.workers == 1,
            )
        finally:
            for m in placed.values():
                m.to("cpu")

    def _baseline(self, runner: Runner) -> float:
        """The baseline's samples/s, once per search and machine (the caller holds the lock)."""
        if self.baseline_path.exists():
            saved = read_json(self.baseline_path)
            if saved.get("key") == self.baseline_key:
                return float(saved["samples_per_s"])
        result = self._bench({"baseline": runner.initial_model()}, None)
        rate = result.timings["baseline"].samples_per_s
        write_json(self.baseline_path, {"key": self.baseline_key, "samples_per_s": rate,
                                        "host": HOST, **result.to_dict()})  # fmt: skip
        return float(rate)

    def measure(self, model: EffkitModel, runner: Runner) -> dict[str, Any]:
        """Samples/s of ``model`` and its ratio to the baseline, with nothing else running."""
        with self.locks.measuring():
            if self.ctx.spec.objectives.baseline == "each-trial":
                result = self._bench({"final": model, "baseline": runner.initial_model()},
                                     "baseline")  # fmt: skip
                base_rate = result.timings["baseline"].samples_per_s
            else:
                base_rate = self._baseline(runner)
                result = self._bench({"final": model}, None)
        timing = result.timings["final"]
        env = result.environment
        return {
            "samples_per_s": timing.samples_per_s,
            "baseline_samples_per_s": base_rate,
            "ratio": timing.samples_per_s / base_rate if base_rate > 0 else 0.0,
            "latency_ms": timing.latency_ms,
            "threads": result.settings.get("threads"),
            "load": [env.get("load_before"), env.get("load_after")],
            "host": HOST,
        }
