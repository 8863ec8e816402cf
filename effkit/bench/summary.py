"""How benchmark figures read: the rows, notes and protocol lines that the CLI and report show.

Both ``effkit bench`` (a terminal table) and a run's ``report.md`` (a Markdown table) render a
benchmark's JSON (:meth:`BenchResult.to_dict`, as ``bench.json`` stores it) through these, so a
figure reads the same everywhere: samples/s of the reported trial with the range over trials
and the spread, flagged when noisy; milliseconds and CPU seconds per batch from that same
trial; the ratio, with the same-architecture note where it applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effkit.bench.results import NOISE_THRESHOLD

#: The columns of :func:`rows`, in order.
COLUMNS = ("model", "rate", "range", "spread", "ms/batch", "CPU s/batch", "CPU/wall", "ratio")


def _number(value: Any, digits: int = 1) -> str:
    return "" if not isinstance(value, (int, float)) else f"{value:,.{digits}f}"


def ratio_text(timing: Mapping[str, Any], ratio: float | None) -> str:
    """``1.234x``; a model of the baseline's architecture reads ``0.987x (same architecture)``."""
    if ratio is None:
        return ""
    text = f"{ratio:.3f}x"
    return f"{text} (same architecture)" if timing.get("same_architecture") else text


def spread_text(timing: Mapping[str, Any]) -> str:
    """``4.2%``, or ``14.0% noisy`` past the noise threshold."""
    value = timing.get("spread")
    if not isinstance(value, (int, float)):
        return ""
    return f"{value:.1%}" + (" noisy" if timing.get("noisy") else "")


def rows(bench: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row of formatted cells per model (keys: :data:`COLUMNS`, and ``memory``)."""
    out = []
    ratios = bench.get("ratios") or {}
    for name, timing in (bench.get("timings") or {}).items():
        low, high = timing.get("min_samples_per_s"), timing.get("max_samples_per_s")
        out.append(
            {
                "model": name,
                "rate": _number(timing.get("samples_per_s")),
                "range": "" if low is None or high is None else f"{low:,.1f}-{high:,.1f}",
                "spread": spread_text(timing),
                "ms/batch": _number(timing.get("latency_ms")),
                "CPU s/batch": _number(timing.get("cpu_s_per_batch"), 2),
                "CPU/wall": _number(timing.get("cpu_wall_ratio"), 2),
                "ratio": ratio_text(timing, ratios.get(name, timing.get("ratio"))),
                "memory": _number(timing.get("peak_memory_mb")),
                "vs best": _number(timing.get("ratio_best"), 3) + "x"
                if isinstance(timing.get("ratio_best"), (int, float))
                else "",
            }
        )
    return out


def notes(bench: Mapping[str, Any]) -> list[str]:
    """Sentences under the table: same-architecture notes, and which figures are noisy."""
    lines = []
    for name, timing in (bench.get("timings") or {}).items():
        if timing.get("note"):
            lines.append(f"{name}: {timing['note']}")
    if bench.get("best_runtime"):
        skipped = (bench.get("runtimes") or {}).get("skipped") or {}
        lines.append(
            f"vs best: against the fastest runtime of the baseline, {bench['best_runtime']}"
            + ("; not measured here: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
               if skipped else "")
        )  # fmt: skip
    noisy = [name for name, t in (bench.get("timings") or {}).items() if t.get("noisy")]
    if noisy:
        lines.append(
            f"noisy ({', '.join(noisy)}): the trials spread by more than {NOISE_THRESHOLD:.0%} "
            "of their median ((max - min) / median), so the machine moved these figures; "
            "compare CPU/wall with the thread count, and measure again with more trials or "
            "statistic best"
        )
    return lines


def _how(settings: Mapping[str, Any]) -> str:
    which = "fastest" if settings.get("statistic") == "best" else "median"
    return f"{which} of {settings.get('trials')} trials"


def protocol_line(bench: Mapping[str, Any]) -> str:
    """How the fixed-shape figures were taken, in one sentence."""
    s, env = bench.get("settings") or {}, bench.get("environment") or {}
    device = env.get("cuda_device") or env.get("cpu") or s.get("device")
    minimum = s.get("min_trial_seconds")
    return (
        f"Batch of {s.get('batch_size')} inputs x {s.get('seq_len')} tokens on {s.get('device')} "
        f"({device}), {s.get('threads')} threads; warm-up {s.get('warmup')} batches, "
        f"{_how(s)} of {s.get('batches')} batches"
        + (f" (at least {minimum:g} s each)" if minimum else "")
        + ", models interleaved; ms and CPU s per batch come from the reported trial. "
        f"torch {env.get('torch')}, transformers {env.get('transformers')}, "
        f"load average {env.get('load_before')} -> {env.get('load_after')}."
    )


def lengths_text(lengths: Mapping[str, Any]) -> str:
    """``tokens min 12, median 64, p90 128, max 128, mean 70.3``."""
    if not lengths:
        return "no lengths"
    return "tokens " + ", ".join(f"{key} {lengths[key]:g}" for key in lengths)


def realdata_line(real: Mapping[str, Any]) -> str:
    """What the real-data figures ran on and how, in one sentence."""
    s, env = real.get("settings") or {}, real.get("environment") or {}
    data = s.get("data") or {}
    subset = "" if data.get("texts") == data.get("of_texts") else f" of {data.get('of_texts')}"
    pairs = " (text pairs)" if data.get("pairs") else ""
    return (
        f"End-to-end prediction (tokenisation, length sorting, grouping, padding) of the "
        f"{data.get('split')} split of {data.get('source')}: {data.get('texts')}{subset} "
        f"texts{pairs}, {lengths_text(data.get('lengths') or {})}; batches of "
        f"{s.get('batch_size')}, {s.get('threads')} threads, warm-up {s.get('warmup')} "
        f"batch(es), {_how(s)}, one pass over the texts each, models interleaved; load average "
        f"{env.get('load_before')} -> {env.get('load_after')}."
    )
