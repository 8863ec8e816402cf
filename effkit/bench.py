"""Throughput, latency and peak-memory measurement of models against a baseline.

The protocol follows the MUX-PLMs evaluation: samples per second at a batch of 128 inputs of
sequence length 128, the median over several trials of many mini-batches, each model measured in
the same process as its baseline with the order of models rotated from trial to trial, after a
warm-up, under ``torch.inference_mode()``.  Every figure is stored together with the environment
it was taken in.  Peak memory is measured per model in a fresh subprocess, because on CPU the
resident-set high-water mark of one process only grows.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from effkit.errors import EffkitError, ModelError, did_you_mean

logger = logging.getLogger(__name__)

#: Defaults on an accelerator: the paper's protocol.
GPU_DEFAULTS: dict[str, int] = {"warmup": 10, "trials": 3, "batches": 200}
#: Defaults on CPU, where one 128x128 batch of a small encoder already takes seconds.
CPU_DEFAULTS: dict[str, int] = {"warmup": 1, "trials": 3, "batches": 2}
#: Token ids below this are avoided in synthetic inputs (special and unused tokens live there).
DEFAULT_LOW_ID = 1000

_WHERE = "bench"


class BenchConfig(BaseModel):
    """How to measure throughput, latency and memory (the ``bench`` section of a recipe)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Measure the models at all.")
    batch_size: int = Field(
        default=128, ge=1, description="Inputs per mini-batch passed to the model."
    )
    seq_len: int = Field(default=128, ge=2, description="Tokens per input.")
    warmup: int | None = Field(
        default=None,
        ge=0,
        description="Untimed mini-batches per model first; None: device default.",
    )
    trials: int | None = Field(
        default=None,
        ge=1,
        description="Timed trials per model; None: device default.",
    )
    statistic: Literal["median", "best"] = Field(
        default="median",
        description="Which trial is reported: the median, or the fastest ('best', as timeit "
        "does: on a shared machine other work only ever slows a trial down).",
    )
    batches: int | None = Field(
        default=None, ge=1, description="Mini-batches per trial; None: device default."
    )
    min_trial_seconds: float = Field(
        default=0.0,
        ge=0,
        description="A trial goes on past its batches until it has lasted this long (steadier "
        "figures for fast models).",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch.set_num_threads during the measurement; None keeps the current value.",
    )
    memory: bool = Field(
        default=False,
        description="Also measure peak memory per model in a subprocess (needs saved models).",
    )
    device: str = Field(
        default="auto",
        description="'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:N'.",
    )
    baseline: str = Field(
        default="initial",
        description=(
            "What ratios are relative to: 'initial' (the recipe's starting model), 'none', "
            "or a saved model folder."
        ),
    )

    def resolved(self, device: torch.device) -> BenchConfig:
        """A copy with warmup, trials and batches filled with the defaults for ``device``."""
        defaults = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
        update: dict[str, Any] = {
            key: value for key, value in defaults.items() if getattr(self, key) is None
        }
        return self.model_copy(update=update)


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
                where=_WHERE,
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


def resolve_device(spec: str) -> torch.device:
    """The device ``spec`` names: 'auto' is cuda when available, else cpu."""
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise EffkitError(
            f"unknown device '{spec}'", where=_WHERE, hint="use auto, cpu, cuda or cuda:N"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EffkitError(
                f"device '{spec}' asked for but CUDA is not available",
                where=_WHERE,
                hint="use device: auto or cpu",
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise EffkitError(
                f"device '{spec}' asked for but only {count} CUDA device(s) exist", where=_WHERE
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise EffkitError(f"device '{spec}' is not available", where=_WHERE)
    return device


def make_inputs(
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    *,
    device: torch.device,
    seed: int = 0,
    type_vocab_size: int = 0,
    low_id: int = DEFAULT_LOW_ID,
) -> dict[str, torch.Tensor]:
    """Synthetic encoder inputs: ids uniform in [low_id, vocab_size), full mask, deterministic."""
    if batch_size < 1 or seq_len < 1:
        raise EffkitError(
            f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}", where=_WHERE
        )
    if not 0 <= low_id < vocab_size:
        raise EffkitError(
            f"low_id {low_id} must lie in [0, vocab_size={vocab_size})",
            where=_WHERE,
            hint="pass a smaller low_id for a small vocabulary",
        )
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(
        low_id, vocab_size, (batch_size, seq_len), generator=generator, dtype=torch.long
    )
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
    }
    if type_vocab_size > 0:
        inputs["token_type_ids"] = torch.zeros(batch_size, seq_len, dtype=torch.long)
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def _low_id_for(vocab_size: int) -> int:
    """The lowest synthetic token id: DEFAULT_LOW_ID, or half the vocabulary when that is small."""
    return min(DEFAULT_LOW_ID, vocab_size // 2)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _loadavg() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Where a figure was taken: hardware, threads, library versions, load and time (UTC).

    ``load_before`` is the load average now; ``load_after`` is left None for the caller to fill
    once the measurement is over (``benchmark`` does).
    """
    cuda_device: str | None = None
    if device.type == "cuda" and torch.cuda.is_available():
        cuda_device = torch.cuda.get_device_name(device)
    return {
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda_device": cuda_device,
        "cuda_version": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "effkit": _version("effkit"),
        "platform": platform.platform(),
        "load_before": _loadavg(),
        "load_after": None,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` so that a clock read sees it finished."""
    if device.type == "cpu":
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return
    backend = getattr(torch, device.type, None)
    sync = getattr(backend, "synchronize", None)
    if callable(sync):
        sync()


def _batch_size_of(inputs: Mapping[str, torch.Tensor]) -> int:
    if not inputs:
        raise EffkitError("no inputs to time the models with", where=_WHERE)
    tensor = inputs["input_ids"] if "input_ids" in inputs else next(iter(inputs.values()))
    if tensor.dim() == 0:
        raise EffkitError("inputs must have a batch dimension", where=_WHERE)
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
        raise EffkitError(f"statistic must be 'median' or 'best', got '{statistic}'", where=_WHERE)
    if not models:
        raise EffkitError("no models to measure", where=_WHERE)
    if warmup < 0 or trials < 1 or batches < 1:
        raise EffkitError(
            f"need warmup >= 0, trials >= 1, batches >= 1; got {warmup}, {trials}, {batches}",
            where=_WHERE,
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
        _synchronize(device)

        for trial in range(trials):
            gc.collect()
            for name in _rotated(names, trial):
                model = models[name]
                ticker.describe(f"trial {trial + 1}/{trials} {name}")
                _synchronize(device)
                start = time.perf_counter()
                previous, done = start, 0
                while done < batches or previous - start < min_trial_seconds:
                    model(**inputs)
                    _synchronize(device)
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
            where=_WHERE,
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
            low_id=_low_id_for(vocab_size),
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
        env["load_after"] = _loadavg()
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


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _child_env() -> dict[str, str]:
    """The environment for the child: this package importable even when not installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    current = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not current else os.pathsep.join([root, current])
    return env


def peak_memory_mb(
    model_dir: str | Path, *, batch_size: int, seq_len: int, device: str = "cpu"
) -> float:
    """Peak memory (MiB) of loading the saved model and running it, measured in a subprocess.

    On CPU this is the child's maximum resident set size (the interpreter and torch included);
    on CUDA it is ``torch.cuda.max_memory_allocated``.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelError(
            "model folder not found, cannot measure its peak memory",
            where=str(path),
            hint="memory is measured from a saved model folder",
        )
    command = [
        sys.executable,
        "-m",
        "effkit.bench",
        "memory",
        str(path),
        "--batch-size",
        str(batch_size),
        "--seq-len",
        str(seq_len),
        "--device",
        device,
    ]
    logger.debug("measuring peak memory: %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env(), check=False)
    if done.returncode != 0:
        raise ModelError(
            f"peak-memory subprocess failed with exit code {done.returncode}:\n"
            f"{_tail(done.stderr) or _tail(done.stdout) or '(no output)'}",
            where=str(path),
        )
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "peak_memory_mb" in record:
            return float(record["peak_memory_mb"])
    raise ModelError(
        "peak-memory subprocess printed no {'peak_memory_mb': ...} line; its output ends:\n"
        f"{_tail(done.stdout) or '(no output)'}\n{_tail(done.stderr)}",
        where=str(path),
    )


def _measure_memory(model_dir: str, batch_size: int, seq_len: int, device_spec: str) -> float:
    """Load the model, run two forward passes and return the peak memory in MiB (child side)."""
    from effkit.models import load

    device = resolve_device(device_spec)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = load(model_dir)
    model.to(device)
    model.eval()
    vocab_size = int(model.vocab_size)
    inputs = make_inputs(
        batch_size,
        seq_len,
        vocab_size,
        device=device,
        type_vocab_size=int(getattr(model, "type_vocab_size", 0) or 0),
        low_id=_low_id_for(vocab_size),
    )
    with torch.inference_mode():
        for _ in range(2):
            model(**inputs)
    _synchronize(device)
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    try:
        import resource
    except ImportError as exc:  # pragma: no cover - not on Linux or macOS
        raise EffkitError("peak memory on CPU needs the resource module", where=_WHERE) from exc
    rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    # Linux reports KiB, macOS bytes.
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m effkit.bench memory MODEL_DIR ...`` prints one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m effkit.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    memory = commands.add_parser("memory", help="peak memory of one saved model, as JSON")
    memory.add_argument("model_dir", help="a saved model folder")
    memory.add_argument("--batch-size", type=int, default=128)
    memory.add_argument("--seq-len", type=int, default=128)
    memory.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        peak = _measure_memory(args.model_dir, args.batch_size, args.seq_len, args.device)
    except EffkitError as exc:
        sys.stderr.write(f"{exc.kind}: {exc}\n")
        return 2
    sys.stdout.write(json.dumps({"peak_memory_mb": round(peak, 3)}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
