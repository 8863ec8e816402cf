"""Measuring a trial's throughput: its model against the base recipe's starting model.

The baseline is the base recipe's starting model (N=1, unpruned). With ``objectives.baseline:
once`` it is measured once per search and machine and kept in ``baseline-HOST.json``; with
``each-trial`` it is measured beside every trial, interleaved. A measurement holds the search's
exclusive lock, so no other process of the search trains or evaluates while it runs.

A trial model with the baseline's architecture (same tensors, modules and transforms: an
unpruned N=1 trial) has the ratio 1.0 by construction, so that is the ratio the search records
and plots; the measured one is kept beside it, as a reading of the noise.
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

    def _baseline(self, runner: Runner) -> tuple[float, str | None]:
        """The baseline's samples/s and architecture key, once per search and machine (the
        caller holds the lock)."""
        from effkit.bench import architecture_key

        if self.baseline_path.exists():
            saved = read_json(self.baseline_path)
            if saved.get("key") == self.baseline_key and "architecture" in saved:
                return float(saved["samples_per_s"]), saved["architecture"]
        initial = runner.initial_model()
        result = self._bench({"baseline": initial}, None)
        rate = result.timings["baseline"].samples_per_s
        architecture = architecture_key(initial)
        write_json(self.baseline_path, {"key": self.baseline_key, "samples_per_s": rate,
                                        "architecture": architecture, "host": HOST,
                                        **result.to_dict()})  # fmt: skip
        return float(rate), architecture

    def measure(self, model: EffkitModel, runner: Runner) -> dict[str, Any]:
        """Samples/s of ``model`` and its ratio to the baseline, with nothing else running.

        A model with the baseline's architecture (an unpruned N=1 trial: fine-tuning changes
        only the weights) has the ratio 1.0 by construction: that is its ``ratio``, the value the
        search optimises and plots; what was measured stays in ``measured_ratio``, as noise.
        """
        from effkit.bench import architecture_key, same_architecture_note

        with self.locks.measuring():
            if self.ctx.spec.objectives.baseline == "each-trial":
                initial = runner.initial_model()
                result = self._bench({"final": model, "baseline": initial}, "baseline")
                base_rate = result.timings["baseline"].samples_per_s
                base_key = architecture_key(initial)
            else:
                base_rate, base_key = self._baseline(runner)
                result = self._bench({"final": model}, None)
        timing = result.timings["final"]
        env = result.environment
        measured = timing.samples_per_s / base_rate if base_rate > 0 else 0.0
        same = base_key is not None and architecture_key(model) == base_key
        paired = result.trial_ratios("final") if "baseline" in result.timings else []
        return {
            "samples_per_s": timing.samples_per_s,
            "baseline_samples_per_s": base_rate,
            "ratio": 1.0 if same else measured,
            "measured_ratio": measured,
            "same_architecture": same,
            "note": same_architecture_note(measured, paired) if same else None,
            "latency_ms": timing.latency_ms,
            "trial_samples_per_s": timing.trial_samples_per_s,
            "spread": timing.spread,
            "noisy": timing.noisy,
            "cpu_s_per_batch": timing.cpu_s_per_batch,
            "cpu_wall_ratio": timing.cpu_wall_ratio,
            "threads": result.settings.get("threads"),
            "load": [env.get("load_before"), env.get("load_after")],
            "host": HOST,
        }
