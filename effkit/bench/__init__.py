"""Throughput, latency and peak-memory measurement of models against a baseline.

The protocol follows the MUX-PLMs evaluation: samples per second at a batch of 128 inputs of
sequence length 128, the median over several trials of many mini-batches, each model measured in
the same process as its baseline with the order of models rotated from trial to trial, after a
warm-up, under ``torch.inference_mode()``.  Samples/s, ms per batch and CPU seconds per batch
all come from one reported trial, beside the spread over trials and a noise flag; a model with
the baseline's architecture is reported as such (its ratio is 1.0 by construction).  Every
figure is stored together with the environment it was taken in.  Peak memory is measured per
model in a fresh subprocess, because on CPU the resident-set high-water mark of one process only
grows.  Real-data throughput times end-to-end prediction on a split's texts.

Modules: :mod:`~effkit.bench.config` (the settings), :mod:`~effkit.bench.inputs`,
:mod:`~effkit.bench.timing` (the interleaved measurement), :mod:`~effkit.bench.results`,
:mod:`~effkit.bench.architecture` (same architecture or not), :mod:`~effkit.bench.realdata`
(prediction on real texts), :mod:`~effkit.bench.environment`, :mod:`~effkit.bench.memory`
(the subprocess), :mod:`~effkit.bench.compare` (what a run and ``effkit bench`` report) and
:mod:`~effkit.bench.summary` (how they show it).
"""

from effkit.bench.architecture import architecture, architecture_key, same_architecture
from effkit.bench.compare import compare
from effkit.bench.config import CPU_DEFAULTS, GPU_DEFAULTS, BenchConfig
from effkit.bench.environment import environment, load_average, resolve_device, synchronize
from effkit.bench.inputs import DEFAULT_LOW_ID, low_id_for, make_inputs
from effkit.bench.memory import main, peak_memory_mb
from effkit.bench.realdata import TextSet, load_texts, measure_texts, recipe_texts, texts_of
from effkit.bench.results import NOISE_THRESHOLD, BenchResult, Timing, same_architecture_note
from effkit.bench.timing import benchmark, interleave, measure

__all__ = [
    "CPU_DEFAULTS",
    "DEFAULT_LOW_ID",
    "GPU_DEFAULTS",
    "NOISE_THRESHOLD",
    "BenchConfig",
    "BenchResult",
    "TextSet",
    "Timing",
    "architecture",
    "architecture_key",
    "benchmark",
    "compare",
    "environment",
    "interleave",
    "load_average",
    "load_texts",
    "low_id_for",
    "main",
    "make_inputs",
    "measure",
    "measure_texts",
    "peak_memory_mb",
    "recipe_texts",
    "resolve_device",
    "same_architecture",
    "same_architecture_note",
    "synchronize",
    "texts_of",
]
