"""The run report: ``report.md`` with tables of results, throughput and stages, and a plot."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from effkit.storage import write_text

if TYPE_CHECKING:
    from effkit.runner import RunResult

log = logging.getLogger(__name__)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1 else f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _metrics_section(result: RunResult) -> list[str]:
    if not result.metrics:
        return []
    names: list[str] = []
    for scores in result.metrics.values():
        names += [k for k in scores if k not in names and "/" not in k]
    rows = [[split, *(scores.get(n) for n in names)] for split, scores in result.metrics.items()]
    return ["## Task metrics", "", table(["split", *names], rows), ""]


def _statistic(settings: dict[str, Any]) -> str:
    """How the trials were summed up, in words."""
    return "fastest" if settings.get("statistic") == "best" else "median"


def _bench_section(result: RunResult) -> list[str]:
    bench = result.bench
    if not bench:
        return []
    settings = bench.get("settings", {})
    env = bench.get("environment", {})
    params = bench.get("num_parameters", {})
    rows = []
    for name, timing in bench.get("timings", {}).items():
        ratio = (bench.get("ratios") or {}).get(name)
        rows.append(
            [
                name,
                params.get(name),
                timing["samples_per_s"],
                timing["latency_ms"],
                None if ratio is None else f"{ratio:.3f}x",
                timing.get("peak_memory_mb"),
            ]
        )
    device = env.get("cuda_device") or env.get("cpu") or settings.get("device")
    return [
        "## Throughput",
        "",
        f"Batch of {settings.get('batch_size')} inputs x {settings.get('seq_len')} tokens on "
        f"{settings.get('device')} ({device}), {settings.get('threads')} threads; "
        f"warm-up {settings.get('warmup')} batches, {_statistic(settings)} of "
        f"{settings.get('trials')} trials "
        f"of {settings.get('batches')} batches, models interleaved. "
        f"torch {env.get('torch')}, transformers {env.get('transformers')}, "
        f"load average {env.get('load_before')} -> {env.get('load_after')}.",
        "",
        table(["model", "parameters", "samples/s", "ms/batch", "vs baseline", "peak MiB"], rows),
        "",
    ]


def _stage_section(result: RunResult) -> list[str]:
    if not result.stages:
        return []
    rows = []
    details = []
    for name, record in result.stages.items():
        train = record.get("train", {})
        validation = record.get("validation") or {}
        primary = next(iter(validation.values()), None) if validation else None
        transforms = ", ".join(t["name"] for t in record.get("transforms", [])) or "-"
        rows.append(
            [
                name,
                record.get("objective"),
                transforms,
                train.get("steps"),
                train.get("best_step"),
                record.get("wall_seconds"),
                primary,
                record.get("num_parameters"),
            ]
        )
        for t in record.get("transforms", []):
            facts = {k: v for k, v in t.items() if k != "name"}
            if facts:
                details.append(f"- `{name}` / `{t['name']}`: `{json.dumps(facts)}`")
    out = [
        "## Stages",
        "",
        table(
            [
                "stage",
                "objective",
                "transforms",
                "steps",
                "kept step",
                "seconds",
                "validation",
                "parameters",
            ],
            rows,
        ),
        "",
    ]
    if details:
        out += ["What the transforms did:", "", *details, ""]
    return out


def _plot(result: RunResult) -> str | None:
    curves = {name: rec.get("train", {}).get("history", []) for name, rec in result.stages.items()}
    curves = {k: v for k, v in curves.items() if v}
    bench = result.bench or {}
    timings = bench.get("timings", {})
    if not curves and not timings:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a nicety; the tables carry the figures
        return None
    panels = int(bool(curves)) + int(bool(timings))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.6), squeeze=False)
    ax_iter = iter(axes[0])
    if curves:
        ax = next(ax_iter)
        offset = 0.0
        for name, history in curves.items():
            steps = [offset + row["step"] for row in history]
            ax.plot(steps, [row["loss"] for row in history], label=name)
            offset = steps[-1]
        ax.set_xlabel("step (stages end to end)")
        ax.set_ylabel("training loss")
        ax.set_title("Training")
        ax.legend(fontsize=8)
    if timings:
        ax = next(ax_iter)
        names = list(timings)
        ax.bar(names, [timings[n]["samples_per_s"] for n in names], color="#4c72b0")
        ax.set_ylabel("samples / s")
        ax.set_title("Throughput")
    fig.tight_layout()
    path = result.run_dir / "report.png"
    tmp = path.with_name(".report.png.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path.name


def render(result: RunResult) -> str:
    """The report's Markdown."""
    recipe = result.recipe
    lines = [f"# {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    lines += [
        f"Model `{recipe.model.source}`, task {recipe.task.type}"
        + (f", data `{recipe.data.source}`" if recipe.data else "")
        + f", seed {recipe.seed}.",
        "",
    ]
    lines += _metrics_section(result)
    lines += _bench_section(result)
    lines += _stage_section(result)
    plot = _plot(result)
    if plot:
        lines += [f"![training and throughput]({plot})", ""]
    lines += [
        "## Files",
        "",
        "`recipe.yaml` (resolved recipe), `manifest.json` (completed stages and their keys), "
        "`stages/NAME/model` (each stage's model; load with `effkit.load`), `metrics.json`, "
        "`bench.json`.",
        "",
    ]
    return "\n".join(lines)


def write_report(result: RunResult) -> None:
    """Write ``report.md`` (and ``report.png``) into the run folder."""
    write_text(result.run_dir / "report.md", render(result))
