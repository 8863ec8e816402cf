"""The run report: ``report.md`` with tables of results, throughput and stages, and a plot."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING, Any

from effkit.storage import write_bytes, write_text

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


def _figures_table(bench: dict[str, Any], unit: str, params: dict[str, Any]) -> str:
    from effkit.bench.summary import rows

    heads = ["model", "parameters", unit, "min-max", "spread", "ms/batch", "CPU s/batch",
             "CPU/wall", "vs baseline", "peak MiB"]  # fmt: skip
    keys = ["rate", "range", "spread", "ms/batch", "CPU s/batch", "CPU/wall", "ratio", "memory"]
    if bench.get("best_runtime"):
        heads.insert(-1, "vs best runtime")
        keys.insert(-1, "vs best")
    body = [[r["model"], params.get(r["model"]), *(r[k] for k in keys)] for r in rows(bench)]
    return table(heads, body)


def _bench_section(result: RunResult) -> list[str]:
    from effkit.bench.summary import notes, protocol_line, realdata_line

    bench = result.bench
    if not bench:
        return []
    params = bench.get("num_parameters", {})
    lines = ["## Throughput", "", protocol_line(bench), "",
             _figures_table(bench, "samples/s", params), ""]  # fmt: skip
    lines += [f"- {note}" for note in notes(bench)]
    real = bench.get("realdata")
    if real:
        lines += ["", "### Real data", "", realdata_line(real), "",
                  _figures_table(real, "inputs/s", params), ""]  # fmt: skip
        lines += [f"- {note}" for note in notes(real)]
    return [*lines, ""] if lines[-1] else lines


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


def _throughput_panel(ax: Any, bench: dict[str, Any]) -> None:
    """Bars of the reported trial's rate, whiskers from the slowest to the fastest trial."""
    groups = [("fixed shape", bench.get("timings", {}), "#4c72b0")]
    real = bench.get("realdata") or {}
    if real.get("timings"):
        groups.append(("real data", real["timings"], "#dd8452"))
    names = list(groups[0][1])
    width = 0.8 / len(groups)
    for i, (label, timings, colour) in enumerate(groups):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(names))]
        figures = [timings.get(n) or {} for n in names]
        rates = [float(f.get("samples_per_s", 0.0)) for f in figures]
        low = [r - f.get("min_samples_per_s", r) for f, r in zip(figures, rates, strict=True)]
        high = [f.get("max_samples_per_s", r) - r for f, r in zip(figures, rates, strict=True)]
        ax.bar(xs, rates, width, yerr=[low, high], capsize=3, color=colour, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("inputs / s (whiskers: slowest to fastest trial)")
    ax.set_title("Throughput")
    if len(groups) > 1:
        ax.legend(fontsize=8)


def loss_kinds(result: RunResult) -> dict[str, dict[str, list[dict[str, float]]]]:
    """The stages' training curves grouped by what their loss measures: the objective, with
    the transforms that add a loss term (distillation). Losses of different kinds (token
    retrieval, masked LM, the task, task plus distillation) are not on one scale."""
    kinds: dict[str, dict[str, list[dict[str, float]]]] = {}
    stages = {stage.name: stage for stage in result.recipe.stages}
    for name, rec in result.stages.items():
        history = rec.get("train", {}).get("history", [])
        if not history:
            continue
        kind = "loss"
        if name in stages:
            plugins = stages[name].resolved_plugins()
            kind = f"{plugins['objective']['name']} loss"
            added = [t["name"] for t in plugins["transforms"] if t["name"] == "distill"]
            kind += "".join(f" + {a}" for a in added)
        kinds.setdefault(kind, {})[name] = history
    return kinds


def _plot(result: RunResult) -> str | None:
    kinds = loss_kinds(result)
    bench = result.bench or {}
    timings = bench.get("timings", {})
    if not kinds and not timings:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a nicety; the tables carry the figures
        return None
    panels = len(kinds) + int(bool(timings))
    fig, axes = plt.subplots(1, panels, figsize=(4.8 * panels, 3.6), squeeze=False)
    ax_iter = iter(axes[0])
    for kind, curves in kinds.items():
        ax = next(ax_iter)
        for name, history in curves.items():
            ax.plot([row["step"] for row in history], [row["loss"] for row in history],
                    label=name)  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel(kind)
        ax.set_title(f"Training: {kind}")
        ax.legend(fontsize=8)
    if timings:
        _throughput_panel(next(ax_iter), bench)
    fig.tight_layout()
    path = result.run_dir / "report.png"
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    plt.close(fig)
    write_bytes(path, image.getvalue())  # a temporary name of its own, then renamed
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
