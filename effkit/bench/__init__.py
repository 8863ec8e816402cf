"""Throughput, latency and peak-memory measurement of models against a baseline.

The protocol follows the MUX-PLMs evaluation: samples per second at a batch of 128 inputs of
sequence length 128, the median over several trials of many mini-batches, each model measured in
the same process as its baseline with the order of models rotated from trial to trial, after a
warm-up, under ``torch.inference_mode()``.  Every figure is stored together with the environment
it was taken in.  Peak memory is measured per model in a fresh subprocess, because on CPU the
resident-set high-water mark of one process only grows.

Modules: :mod:`~effkit.bench.config` (the settings), :mod:`~effkit.bench.inputs`,
:mod:`~effkit.bench.timing` (the interleaved measurement), :mod:`~effkit.bench.results`,
:mod:`~effkit.bench.environment`, :mod:`~effkit.bench.memory` (the subprocess) and
:mod:`~effkit.bench.compare` (what a run and ``effkit bench`` report).
"""

from effkit.bench.compare import compare
from effkit.bench.config import CPU_DEFAULTS, GPU_DEFAULTS, BenchConfig
from effkit.bench.environment import environment, load_average, resolve_device, synchronize
from effkit.bench.inputs import DEFAULT_LOW_ID, low_id_for, make_inputs
from effkit.bench.memory import main, peak_memory_mb
from effkit.bench.results import BenchResult, Timing
from effkit.bench.timing import benchmark, measure

__all__ = [
    "CPU_DEFAULTS",
    "DEFAULT_LOW_ID",
    "GPU_DEFAULTS",
    "BenchConfig",
    "BenchResult",
    "Timing",
    "benchmark",
    "compare",
    "environment",
    "load_average",
    "low_id_for",
    "main",
    "make_inputs",
    "measure",
    "peak_memory_mb",
    "resolve_device",
    "synchronize",
]
