"""Tests of the throughput / latency / memory protocol: structure, not speed."""

from __future__ import annotations

import functools
import json
import statistics
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from effkit import bench
from effkit.bench import (
    BenchConfig,
    BenchResult,
    Timing,
    benchmark,
    environment,
    make_inputs,
    measure,
    peak_memory_mb,
    resolve_device,
)
from effkit.errors import EffkitError

CPU = torch.device("cpu")


class TinyEncoder(nn.Module):
    """An embedding and a linear head taking the usual encoder keyword arguments."""

    def __init__(self, vocab_size: int = 64, hidden: int = 8) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.type_vocab_size = 0
        self.embed = nn.Embedding(vocab_size, hidden)
        self.head = nn.Linear(hidden, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any
    ) -> torch.Tensor:
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.head(hidden.mean(dim=1))


class Recorder(TinyEncoder):
    """A TinyEncoder that appends its name (and the thread count) to a shared log on each call."""

    def __init__(self, name: str, log: list[str], threads: list[int] | None = None) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.threads = threads

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        self.log.append(self.name)
        if self.threads is not None:
            self.threads.append(torch.get_num_threads())
        return super().forward(input_ids, attention_mask, **kwargs)


def _inputs(batch_size: int = 4, seq_len: int = 6) -> dict[str, torch.Tensor]:
    return make_inputs(batch_size, seq_len, 64, device=CPU, low_id=8)


def _tiny_cfg(**changes: Any) -> BenchConfig:
    values: dict[str, Any] = {
        "batch_size": 4,
        "seq_len": 6,
        "warmup": 1,
        "trials": 2,
        "batches": 2,
        "device": "cpu",
    }
    values.update(changes)
    return BenchConfig(**values)


def test_interleaving_rotates_and_counts_calls() -> None:
    log: list[str] = []
    models = {name: Recorder(name, log).eval() for name in ("a", "b")}
    timings = measure(models, _inputs(), warmup=0, trials=3, batches=2, device=CPU, progress=False)
    assert log == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    assert set(timings) == {"a", "b"}
    for name, timing in timings.items():
        assert timing.name == name
        assert len(timing.trial_samples_per_s) == 3
        assert timing.samples_per_s > 0
        assert timing.latency_ms > 0


def test_three_models_rotate_through_every_position() -> None:
    log: list[str] = []
    models = {name: Recorder(name, log).eval() for name in ("a", "b", "c")}
    measure(models, _inputs(), warmup=0, trials=3, batches=1, device=CPU, progress=False)
    assert log == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


@pytest.mark.parametrize("progress", [False, True])
def test_calls_are_warmup_plus_trials_times_batches(progress: bool) -> None:
    log: list[str] = []
    models = {name: Recorder(name, log).eval() for name in ("a", "b")}
    measure(models, _inputs(), warmup=2, trials=3, batches=4, device=CPU, progress=progress)
    assert log[:4] == ["a", "a", "b", "b"]
    assert log.count("a") == 2 + 3 * 4
    assert log.count("b") == 2 + 3 * 4


def test_a_trial_goes_on_until_its_minimum_time() -> None:
    import time as clock

    class Slow(torch.nn.Module):
        calls = 0

        def forward(self, **_: torch.Tensor) -> None:
            Slow.calls += 1
            clock.sleep(0.01)

    timings = measure({"slow": Slow().eval()}, _inputs(), warmup=0, trials=2, batches=1,
                      device=CPU, progress=False, min_trial_seconds=0.05)  # fmt: skip
    assert Slow.calls >= 2 * 5  # each trial ran about 0.05 s of 0.01 s batches
    rate = timings["slow"].samples_per_s
    assert 0.5 * 100 * 4 < rate <= 100 * 4  # 4 inputs a batch, at most one batch per 0.01 s


@pytest.mark.parametrize("statistic", ["median", "best"])
def test_the_reported_trial_is_the_median_or_the_fastest(statistic: str) -> None:
    import time as clock

    pauses = iter([0.03, 0.01, 0.05])  # one batch per trial: the second trial is the fastest

    def model(**_: torch.Tensor) -> None:
        clock.sleep(next(pauses))

    timing = measure({"m": model}, _inputs(), warmup=0, trials=3, batches=1, device=CPU,
                     progress=False, statistic=statistic)["m"]  # fmt: skip
    rates = timing.trial_samples_per_s
    assert rates.index(max(rates)) == 1 and rates.index(min(rates)) == 2
    expected = max(rates) if statistic == "best" else sorted(rates)[1]
    assert timing.samples_per_s == pytest.approx(expected)
    assert timing.latency_ms == pytest.approx(4 / expected * 1000, rel=0.05)
    with pytest.raises(EffkitError, match="statistic must be 'median' or 'best'"):
        measure({"m": model}, _inputs(), warmup=0, trials=1, batches=1, device=CPU,
                statistic="mean")  # fmt: skip


def test_measure_runs_under_inference_mode() -> None:
    seen: list[bool] = []

    def model(**inputs: torch.Tensor) -> None:
        seen.append(torch.is_inference_mode_enabled())

    measure({"m": model}, _inputs(), warmup=1, trials=1, batches=1, device=CPU, progress=False)
    assert seen == [True, True]


def test_measure_rejects_bad_arguments() -> None:
    with pytest.raises(EffkitError, match="no models"):
        measure({}, _inputs(), warmup=0, trials=1, batches=1, device=CPU, progress=False)
    with pytest.raises(EffkitError, match="trials >= 1"):
        measure({"m": TinyEncoder()}, _inputs(), warmup=0, trials=0, batches=1, device=CPU)


def test_baseline_ratio_to_itself_is_one() -> None:
    models = {"base": TinyEncoder().eval(), "other": TinyEncoder().eval()}
    result = benchmark(models, _tiny_cfg(), vocab_size=64, baseline="base", progress=False)
    assert result.baseline == "base"
    assert result.ratio("base") == 1.0
    other = result.ratio("other")
    assert other is not None and other > 0
    assert result.settings == {
        "batch_size": 4,
        "seq_len": 6,
        "warmup": 1,
        "trials": 2,
        "batches": 2,
        "min_trial_seconds": 0.0,
        "statistic": "median",
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
    assert result.environment["load_after"] is None or len(result.environment["load_after"]) == 3


def test_ratio_math_with_fake_timings() -> None:
    timings = {
        "base": Timing("base", 100.0, [90.0, 100.0, 110.0], 40.0),
        "fast": Timing("fast", 250.0, [250.0, 240.0, 260.0], 16.0, peak_memory_mb=321.04),
    }
    result = BenchResult(timings=timings, baseline="base", settings={}, environment={})
    assert result.ratio("fast") == pytest.approx(2.5)
    assert result.ratio("base") == 1.0
    rows = result.table_rows()
    assert [row["name"] for row in rows] == ["base", "fast"]
    assert set(rows[0]) == {"name", "samples/s", "min", "max", "spread", "noisy", "latency ms",
                            "ratio", "same architecture", "memory"}  # fmt: skip
    assert (rows[0]["min"], rows[0]["max"], rows[0]["spread"]) == (90.0, 110.0, 0.2)
    assert rows[1]["ratio"] == 2.5
    assert rows[1]["memory"] == 321.0
    assert rows[0]["memory"] is None
    with pytest.raises(EffkitError, match="fats"):
        result.ratio("fats")

    no_baseline = BenchResult(timings=timings, baseline=None, settings={}, environment={})
    assert no_baseline.ratio("fast") is None
    assert no_baseline.to_dict()["ratios"] == {"base": None, "fast": None}


def test_benchmark_rejects_unknown_baseline() -> None:
    with pytest.raises(EffkitError, match="did you mean 'base'"):
        benchmark({"base": TinyEncoder()}, _tiny_cfg(), vocab_size=64, baseline="bse")


def test_to_dict_is_json_serialisable() -> None:
    models = {"base": TinyEncoder().eval(), "other": TinyEncoder().eval()}
    result = benchmark(models, _tiny_cfg(), vocab_size=64, baseline="base", progress=False)
    result.timings["other"].peak_memory_mb = 12.5
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert set(data) == {"timings", "baseline", "ratios", "settings", "environment"}
    assert data["ratios"]["base"] == 1.0
    assert data["timings"]["other"]["peak_memory_mb"] == 12.5
    assert data["timings"]["base"]["ratio"] == 1.0
    assert len(data["timings"]["base"]["trial_samples_per_s"]) == 2


def test_threads_are_set_and_restored() -> None:
    original = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        log: list[str] = []
        threads: list[int] = []
        models = {"m": Recorder("m", log, threads).eval()}
        result = benchmark(models, _tiny_cfg(threads=1), vocab_size=64, progress=False)
        assert threads and set(threads) == {1}
        assert result.settings["threads"] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)


def test_threads_restored_when_a_model_fails() -> None:
    original = torch.get_num_threads()

    def broken(**inputs: torch.Tensor) -> None:
        raise RuntimeError("boom")

    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError, match="boom"):
            benchmark({"m": broken}, _tiny_cfg(threads=1), vocab_size=64, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)


def test_make_inputs_is_deterministic_and_in_range() -> None:
    first = make_inputs(8, 16, 500, device=CPU, seed=3, low_id=100)
    second = make_inputs(8, 16, 500, device=CPU, seed=3, low_id=100)
    other = make_inputs(8, 16, 500, device=CPU, seed=4, low_id=100)
    assert set(first) == {"input_ids", "attention_mask"}
    assert torch.equal(first["input_ids"], second["input_ids"])
    assert not torch.equal(first["input_ids"], other["input_ids"])
    ids = first["input_ids"]
    assert ids.shape == (8, 16) and ids.dtype == torch.long
    assert int(ids.min()) >= 100 and int(ids.max()) < 500
    assert torch.equal(first["attention_mask"], torch.ones(8, 16, dtype=torch.long))


def test_make_inputs_default_low_id_and_token_types() -> None:
    inputs = make_inputs(4, 32, 30522, device=CPU, type_vocab_size=2)
    assert int(inputs["input_ids"].min()) >= 1000
    assert torch.equal(inputs["token_type_ids"], torch.zeros(4, 32, dtype=torch.long))
    with pytest.raises(EffkitError, match="low_id"):
        make_inputs(4, 32, 100, device=CPU)


def test_resolved_defaults_differ_by_device() -> None:
    cfg = BenchConfig()
    cpu = cfg.resolved(torch.device("cpu"))
    gpu = cfg.resolved(torch.device("cuda"))
    assert (cpu.warmup, cpu.trials, cpu.batches) == (1, 7, 1)  # benchmarks/self_check.py
    assert (gpu.warmup, gpu.trials, gpu.batches) == (10, 3, 200)
    assert cfg.warmup is None  # the original is left alone
    explicit = BenchConfig(warmup=0, batches=7).resolved(torch.device("cuda"))
    assert (explicit.warmup, explicit.trials, explicit.batches) == (0, 3, 7)


def test_config_validates() -> None:
    with pytest.raises(ValueError):
        BenchConfig(seq_len=1)
    with pytest.raises(ValueError):
        BenchConfig(batch_size=0)
    with pytest.raises(ValueError):
        BenchConfig(unknown=1)  # type: ignore[call-arg]
    for name, info in BenchConfig.model_fields.items():
        assert info.description, name


def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(EffkitError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(EffkitError, match="CUDA is not available"):
            resolve_device("cuda")


def test_environment_has_the_keys() -> None:
    env = environment(CPU)
    for key in (
        "cpu",
        "cuda_device",
        "torch_threads",
        "interop_threads",
        "torch",
        "transformers",
        "python",
        "effkit",
        "platform",
        "load_before",
        "load_after",
        "timestamp_utc",
    ):
        assert key in env, key
    assert env["cuda_device"] is None
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["torch"] == torch.__version__
    assert env["timestamp_utc"].endswith("+00:00")
    json.dumps(env)


def test_peak_memory_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(EffkitError, match="model folder not found") as caught:
        peak_memory_mb(missing, batch_size=2, seq_len=4)
    assert str(missing) in str(caught.value)


def test_peak_memory_child_failure_reports_stderr(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(EffkitError, match="subprocess failed") as caught:
        peak_memory_mb(empty, batch_size=2, seq_len=4)
    assert str(empty) in str(caught.value)
    assert "exit code" in str(caught.value)


def test_memory_entry_prints_one_json_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = types.ModuleType("effkit.models")
    loaded: list[str] = []

    def load(path: str | Path) -> nn.Module:
        loaded.append(str(path))
        return TinyEncoder(vocab_size=64)

    fake.load = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "effkit.models", fake)
    code = bench.main(["memory", str(tmp_path), "--batch-size", "2", "--seq-len", "4"])
    assert code == 0
    assert loaded == [str(tmp_path)]
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["peak_memory_mb"] > 0


# --------------------------------------------------------------------------- one statistic, spread


def _sleeper(pauses: list[float]) -> Any:
    """A model that sleeps the next pause on each call (one call per trial)."""
    import time as clock

    queue = iter(pauses)

    def model(**_: torch.Tensor) -> None:
        clock.sleep(next(queue))

    return model


@pytest.mark.parametrize(
    ("statistic", "pauses"),
    [("median", [0.03, 0.01, 0.05]), ("best", [0.03, 0.01, 0.05]),
     ("median", [0.03, 0.01, 0.05, 0.02])],  # even: the mean of the two middle trials
)  # fmt: skip
def test_every_figure_comes_from_the_reported_trial(statistic: str, pauses: list[float]) -> None:
    # samples/s, ms/batch and CPU s/batch come from one statistic: ms/batch is batch/rate of
    # the reported trial, never the median single batch beside the median trial
    timing = measure({"m": _sleeper(pauses)}, _inputs(batch_size=4), warmup=0,
                     trials=len(pauses), batches=1, device=CPU, progress=False,
                     statistic=statistic)["m"]  # fmt: skip
    rates = timing.trial_samples_per_s
    order = sorted(range(len(rates)), key=lambda i: rates[i])
    middle = sorted({order[(len(rates) - 1) // 2], order[len(rates) // 2]})
    reported = [order[-1]] if statistic == "best" else middle
    expected = max(rates) if statistic == "best" else statistics.median(rates)
    assert timing.samples_per_s == pytest.approx(expected)
    assert timing.latency_ms == pytest.approx(1000.0 * 4 / timing.samples_per_s)
    cpu = [timing.trial_cpu_seconds[i] / timing.trial_batches[i] for i in reported]
    assert timing.cpu_s_per_batch == pytest.approx(sum(cpu) / len(cpu))
    assert timing.trial_batches == [1.0] * len(pauses)


def test_from_trials_with_fake_timings_gives_spread_and_one_statistic() -> None:
    timing = Timing.from_trials("m", inputs=[128, 128, 256], seconds=[2.0, 1.0, 2.0],
                                cpu_seconds=[4.0, 2.0, 2.0], batch_size=128)  # fmt: skip
    assert timing.trial_samples_per_s == [64.0, 128.0, 128.0]
    assert timing.samples_per_s == 128.0  # the median trial
    assert timing.latency_ms == 1000.0  # 128 inputs at 128 inputs/s
    assert timing.trial_batches == [1.0, 1.0, 2.0]
    data = timing.to_dict()
    assert (data["min_samples_per_s"], data["median_samples_per_s"], data["max_samples_per_s"]) == (
        64.0,
        128.0,
        128.0,
    )
    assert data["spread"] == pytest.approx(0.5) and data["noisy"] is True
    assert data["noise_threshold"] == bench.NOISE_THRESHOLD
    # trials 1 and 2 tie at the median rate; the first of them is reported: 2 CPU s per batch
    assert (data["cpu_s_per_batch"], data["cpu_wall_ratio"]) == (2.0, 2.0)
    best = Timing.from_trials("m", inputs=[128, 128], seconds=[2.0, 1.0],
                              cpu_seconds=[1.0, 1.5], batch_size=128, statistic="best")  # fmt: skip
    assert (best.samples_per_s, best.latency_ms) == (128.0, 1000.0)
    assert (best.cpu_s_per_batch, best.cpu_wall_ratio) == (1.5, 1.5)


@pytest.mark.parametrize(
    ("rates", "noisy"),
    [
        ([100.0, 104.0, 109.0], False),  # 9% of the median
        ([95.0, 100.0, 105.0], False),  # exactly 10%: not past the threshold
        ([100.0, 105.0, 111.0], True),  # 10.5%
        ([50.0, 100.0, 100.0], True),
        ([100.0], False),  # one trial has no spread
    ],
)
def test_noise_flag_is_the_spread_past_the_threshold(rates: list[float], noisy: bool) -> None:
    timing = Timing("m", rates[len(rates) // 2], rates, 10.0)
    assert timing.noisy is noisy
    assert timing.spread == pytest.approx((max(rates) - min(rates)) / statistics.median(rates))
    assert bench.results.is_noisy(rates, threshold=1.0) is False


def test_process_cpu_time_is_recorded_per_trial() -> None:
    import time as clock

    def busy(**_: torch.Tensor) -> None:
        total = 0
        for i in range(20_000):
            total += i * i

    def idle(**_: torch.Tensor) -> None:
        clock.sleep(0.02)

    timings = measure({"busy": busy, "idle": idle}, _inputs(), warmup=0, trials=3, batches=2,
                      device=CPU, progress=False)  # fmt: skip
    for timing in timings.values():
        assert len(timing.trial_cpu_seconds) == len(timing.trial_seconds) == 3
        assert timing.cpu_s_per_batch is not None and timing.cpu_wall_ratio is not None
    assert timings["busy"].cpu_s_per_batch > 0
    # sleeping takes wall time but no CPU time: process time, not wall time, is recorded
    assert timings["idle"].cpu_wall_ratio < 0.5


def test_bench_json_keeps_the_old_keys_and_adds_the_new() -> None:
    models = {"base": TinyEncoder().eval(), "other": TinyEncoder().eval()}
    data = benchmark(models, _tiny_cfg(), vocab_size=64, baseline="base", progress=False).to_dict()
    entry = data["timings"]["other"]
    old = ["samples_per_s", "latency_ms", "ratio", "trial_samples_per_s", "peak_memory_mb"]
    new = ["min_samples_per_s", "median_samples_per_s", "max_samples_per_s", "spread", "noisy",
           "cpu_s_per_batch", "cpu_wall_ratio", "trial_cpu_seconds", "trial_seconds",
           "trial_ratios", "paired_ratio", "same_architecture", "note"]  # fmt: skip
    for key in [*old, *new]:
        assert key in entry, key
    assert entry["latency_ms"] == pytest.approx(1000.0 * 4 / entry["samples_per_s"])
    assert len(entry["trial_ratios"]) == 2
    assert data["timings"]["base"]["trial_ratios"] == [1.0, 1.0]


# --------------------------------------------------------------------------- same architecture


@functools.cache
def _loaded(labels: tuple[str, ...]) -> Any:
    from effkit.models import load_model

    return load_model("preset:tiny", labels=list(labels)).eval()


def _tiny_model(labels: tuple[str, ...] = ("a", "b")) -> Any:
    """A fresh tiny effkit model (a copy of one loaded once: loading builds a tokenizer)."""
    import copy

    return copy.deepcopy(_loaded(labels))


def _fine_tuned(model: Any) -> Any:
    import copy

    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for param in tuned.parameters():
            param.add_(0.01 * torch.randn_like(param))
    return tuned


def test_same_architecture_is_structure_not_weights(tmp_path: Path) -> None:
    from effkit.bench import same_architecture
    from effkit.models import load
    from effkit.runner import stack
    from effkit_layers import KeepLayers

    model = _tiny_model()
    tuned = _fine_tuned(model)
    assert same_architecture(model, tuned)  # other weights, the same computation
    assert same_architecture(model, load(model.save(tmp_path / "saved")))
    pruned = stack(_tiny_model(), [KeepLayers(layers=[1])])
    assert not same_architecture(model, pruned)  # one layer fewer
    assert not same_architecture(model, _tiny_model(("a", "b", "c")))  # a wider head
    assert not same_architecture(model, tuned.to(torch.bfloat16))  # other dtypes
    assert not same_architecture(model, lambda **_: None)  # not a module: never the same


def test_compare_reports_a_model_of_the_baselines_architecture() -> None:
    from effkit.bench import compare
    from effkit.runner import stack
    from effkit_layers import KeepLayers

    base = _tiny_model()
    models = {"baseline": base, "tuned": _fine_tuned(base),
              "pruned": stack(_tiny_model(), [KeepLayers(layers=[1])]).eval()}  # fmt: skip
    data = compare(models, _tiny_cfg(seq_len=8), baseline="baseline", progress=False)
    timings = data["timings"]
    assert timings["baseline"]["same_architecture"] is None
    assert data["ratios"]["baseline"] == 1.0
    assert timings["tuned"]["same_architecture"] is True
    measured = data["ratios"]["tuned"]
    assert timings["tuned"]["ratio"] == measured  # what was measured stays the measurement
    note = timings["tuned"]["note"]
    assert note.startswith(
        f"same architecture: the ratio is 1.0 by construction; the measured {measured:.2f}x "
        "is noise (spread "
    )
    assert "over 2 paired trials" in note
    assert timings["pruned"]["same_architecture"] is False and timings["pruned"]["note"] is None
    assert data["num_parameters"]["pruned"] < data["num_parameters"]["baseline"]


def test_tables_show_spread_noise_and_the_same_architecture_note() -> None:
    from effkit.bench.summary import notes, rows

    timings = {
        "base": Timing("base", 100.0, [90.0, 100.0, 110.0], 1280.0),
        "copy": Timing("copy", 97.0, [96.0, 97.0, 98.0], 1319.6),
    }
    result = BenchResult(timings, "base", same_architecture={"copy": True})
    data = result.to_dict()
    shown = {row["model"]: row for row in rows(data)}
    assert shown["base"]["spread"] == "20.0% noisy" and shown["base"]["range"] == "90.0-110.0"
    assert shown["copy"]["spread"] == "2.1%"
    assert shown["copy"]["ratio"] == "0.970x (same architecture)"
    lines = notes(data)
    assert lines[0] == (
        "copy: same architecture: the ratio is 1.0 by construction; the measured 0.97x is "
        "noise (spread 0.89x to 1.07x over 3 paired trials)"
    )
    assert lines[1].startswith("noisy (base): the trials spread by more than 10%")


@pytest.mark.slow
def test_search_records_the_baselines_architecture_at_one(tmp_path: Path) -> None:
    import contextlib
    from types import SimpleNamespace

    from effkit.pareto.outputs import ratio_cell
    from effkit.pareto.throughput import Throughput
    from effkit.runner import stack
    from effkit_layers import KeepLayers

    for mode in ("each-trial", "once"):
        meter = object.__new__(Throughput)
        spec = SimpleNamespace(objectives=SimpleNamespace(baseline=mode))
        meter.ctx = SimpleNamespace(spec=spec, progress=False, workers=1)
        meter.protocol = _tiny_cfg(seq_len=8)
        meter.locks = SimpleNamespace(measuring=contextlib.nullcontext)
        meter.baseline_path = tmp_path / f"baseline-{mode}.json"
        meter.baseline_key = "key"
        runner = SimpleNamespace(initial_model=_tiny_model)
        same = meter.measure(_fine_tuned(_tiny_model()), runner)
        assert same["same_architecture"] is True and same["ratio"] == 1.0, mode
        assert same["measured_ratio"] > 0 and same["note"].startswith("same architecture")
        other = meter.measure(stack(_tiny_model(), [KeepLayers(layers=[1])]), runner)
        assert other["same_architecture"] is False and other["ratio"] == other["measured_ratio"]
        assert other["spread"] is not None and other["cpu_wall_ratio"] is not None
    row = {"ratio": 1.0, "measured_ratio": 0.97, "same_architecture": True}
    assert ratio_cell(row) == "1.00x (same architecture, measured 0.97x)"
    assert ratio_cell({"ratio": 2.5, "noisy": True}) == "2.50x (noisy)"


# --------------------------------------------------------------------------- real data


def _data_folder(root: Path, test_rows: int = 10) -> Path:
    """A small CSV data set: train, validation and test files of short and long texts."""
    folder = root / "data"
    folder.mkdir()
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    for split, count in (("train", 12), ("validation", 4), ("test", test_rows)):
        lines = ["text,label"]
        for i in range(count):
            text = " ".join(words[j % len(words)] for j in range(1 + 3 * i))
            lines.append(f"{text},{'ab'[i % 2]}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_length_stats_and_evenly_spaced_limits() -> None:
    from effkit.bench.realdata import TextSet, length_stats

    stats = length_stats(list(range(10, 0, -1)))
    assert stats == {"min": 1, "median": 5.5, "p90": 9, "max": 10, "mean": 5.5}
    texts = TextSet([str(i) for i in range(10)], None, "src", "test")
    assert texts.limited(5).texts == ["0", "2", "4", "6", "8"]
    assert texts.limited(None) is texts and texts.limited(50) is texts


def test_real_data_bench_times_prediction_on_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from effkit import inference
    from effkit.bench import compare, load_texts
    from effkit.data import DataConfig

    texts = load_texts(DataConfig(source=str(_data_folder(tmp_path)), max_length=16),
                       "sequence-classification")  # fmt: skip
    assert len(texts.texts) == 10 and texts.split == "test"
    calls: list[int] = []
    original = inference.predict_texts

    def spy(model: Any, batch: list[str], **kwargs: Any) -> Any:
        calls.append(len(batch))
        return original(model, batch, **kwargs)

    monkeypatch.setattr(inference, "predict_texts", spy)  # the real-data timing predicts
    base = _tiny_model()
    base.max_length = 16
    models = {"baseline": base, "tuned": _fine_tuned(base)}
    data = compare(models, _tiny_cfg(seq_len=8), baseline="baseline", progress=False, texts=texts)
    real = data["realdata"]
    # one warm-up batch of 4 texts per model, then 2 trials of one pass over the 10 texts
    assert sorted(calls) == [4, 4, 10, 10, 10, 10]
    info = real["settings"]["data"]
    assert (info["texts"], info["of_texts"], info["split"]) == (10, 10, "test")
    lengths = info["lengths"]
    assert set(lengths) == {"min", "median", "p90", "max", "mean"}
    assert 3 <= lengths["min"] <= lengths["median"] <= lengths["p90"] <= lengths["max"] == 16
    assert info["max_length"] == {"baseline": 16, "tuned": 16}
    tuned = real["timings"]["tuned"]
    assert tuned["samples_per_s"] > 0 and len(tuned["trial_samples_per_s"]) == 2
    assert tuned["latency_ms"] == pytest.approx(1000.0 * 4 / tuned["samples_per_s"])
    assert tuned["cpu_s_per_batch"] > 0 and tuned["spread"] is not None
    assert tuned["trial_batches"] == [2.5, 2.5]  # 10 texts in batches of 4
    assert tuned["same_architecture"] is True and tuned["note"].startswith("same architecture")
    assert real["ratios"]["baseline"] == 1.0
    assert "seq_len" not in real["settings"]  # the texts' own lengths, reported above


def test_real_data_bench_limits_the_texts_and_refuses_a_model_without_tokenizer(
    tmp_path: Path,
) -> None:
    from effkit.bench import load_texts, measure_texts
    from effkit.data import DataConfig

    texts = load_texts(DataConfig(source=str(_data_folder(tmp_path)), max_length=16),
                       "sequence-classification")  # fmt: skip
    result = measure_texts({"m": _tiny_model()}, texts, _tiny_cfg(data_limit=5), progress=False)
    assert result.settings["data"]["texts"] == 5 and result.settings["data"]["of_texts"] == 10
    with pytest.raises(EffkitError, match="has no tokenizer"):
        measure_texts({"m": TinyEncoder()}, texts, _tiny_cfg(), progress=False)
    with pytest.raises(EffkitError, match="unknown split 'tset'"):
        load_texts(DataConfig(source=str(tmp_path / "data")), "sequence-classification", "tset")


def test_recipe_benchmark_data_times_the_recipes_own_test_split(tmp_path: Path) -> None:
    from effkit.recipe import parse_recipe
    from effkit.runner import run

    folder = _data_folder(tmp_path)
    recipe = parse_recipe(
        "name: realdata\nmodel: {source: preset:tiny}\n"
        f"data: {{source: '{folder}', max_length: 16}}\n"
        "evaluate: {enabled: false}\n"
        "benchmark: {batch_size: 4, seq_len: 8, warmup: 0, trials: 2, batches: 1, data: true}\n"
    )
    result = run(recipe, tmp_path / "run", progress=False)
    assert result.bench is not None
    real = result.bench["realdata"]
    assert real["settings"]["data"]["texts"] == 10
    assert set(real["timings"]) == {"final", "baseline"}
    # with no stages the final model is the starting model: the same architecture
    assert result.bench["timings"]["final"]["same_architecture"] is True
    saved = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert saved["realdata"]["settings"]["data"]["lengths"] == real["settings"]["data"]["lengths"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "### Real data" in report and "inputs/s" in report
    assert "same architecture: the ratio is 1.0 by construction" in report
    assert "CPU/wall" in report and "min-max" in report


def test_recipe_benchmark_data_needs_data() -> None:
    from effkit.bench import recipe_texts
    from effkit.errors import RecipeError
    from effkit.recipe import parse_recipe

    recipe = parse_recipe(
        "name: nodata\nmodel: {source: preset:tiny}\nevaluate: {enabled: false}\n"
    )
    assert recipe_texts(recipe.benchmark, recipe, None) is None
    with pytest.raises(RecipeError, match="the recipe has no data section"):
        recipe_texts(BenchConfig(data=True), recipe, None)


@pytest.mark.slow
def test_cli_bench_with_data(tmp_path: Path) -> None:
    import subprocess

    folder = _tiny_model().save(tmp_path / "model")
    data = _data_folder(tmp_path)
    out = tmp_path / "bench.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "effkit.cli", "bench", str(folder), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)

    done = cli("--baseline", str(folder), "--batch-size", "4", "--seq-len", "8", "--warmup",
               "0", "--trials", "2", "--batches", "1", "--data", str(data),
               "--json", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Real data" in done.stdout and "same architecture" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["timings"]["model"]["same_architecture"] is True
    assert figures["realdata"]["settings"]["data"]["split"] == "test"
    assert figures["realdata"]["timings"]["model"]["samples_per_s"] > 0
    done = cli("--data", str(data), "--split", "tset")
    assert done.returncode == 2 and "unknown split 'tset'" in done.stderr
    assert "Traceback" not in done.stderr
    done = cli("--set", "limit=3")
    assert done.returncode == 2 and "needs --data" in done.stderr
