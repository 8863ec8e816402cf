"""Tests of the throughput / latency / memory protocol: structure, not speed."""

from __future__ import annotations

import json
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
    assert set(rows[0]) == {"name", "samples/s", "latency ms", "ratio", "memory"}
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
    assert (cpu.warmup, cpu.trials, cpu.batches) == (1, 3, 2)
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
