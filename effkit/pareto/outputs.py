"""What a search leaves in its folder: trials.csv, pareto.csv, pareto.png (.html), report.md.

Everything is computed from the study's storage, so any process can rewrite the outputs of a
search at any time (``effkit search SPEC --trials 0``), including while workers still run.
Duplicates (trials that reused another trial's values) are listed in ``trials.csv`` but never
counted twice on the front.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from effkit.bench.results import NOISE_THRESHOLD
from effkit.pareto.space import normalized, params_label, value_label
from effkit.pareto.spec import SearchSpec
from effkit.report import table
from effkit.storage import write_bytes, write_text

log = logging.getLogger(__name__)

Row = dict[str, Any]


def collect(study: Any, spec: SearchSpec, metric: str) -> list[Row]:
    """One row per trial of the study, in trial order."""
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        attrs = trial.user_attrs
        throughput = attrs.get("throughput") or {}
        values = trial.values if trial.values and len(trial.values) == 2 else [None, None]
        constraint = attrs.get("constraint")
        params = {
            name: normalized(trial.params[name]) for name in spec.space if name in trial.params
        }
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "params": params,
                "label": attrs.get("label") or params_label(params),
                "metric_name": metric,
                "metric": values[0],
                "ratio": values[1],
                "samples_per_s": throughput.get("samples_per_s"),
                "baseline_samples_per_s": throughput.get("baseline_samples_per_s"),
                "measured_ratio": throughput.get("measured_ratio"),
                "same_architecture": throughput.get("same_architecture"),
                "noisy": throughput.get("noisy"),
                "meets_target": None if spec.target is None or constraint is None
                else bool(constraint <= 0),
                "num_parameters": attrs.get("num_parameters"),
                "sparsity_reached": attrs.get("sparsity_reached"),
                "seconds": attrs.get("seconds"),
                "reused_stages": " ".join(attrs.get("reused_stages") or []),
                "duplicate_of": attrs.get("duplicate_of"),
                "retry_of": attrs.get("retry_of"),
                "retry_reason": attrs.get("retry_reason"),
                "run_dir": attrs.get("run_dir"),
                "note": attrs.get("error") or attrs.get("interrupted") or "",
            }
        )  # fmt: skip
    return rows


def retry_notes(rows: list[Row]) -> list[str]:
    """One line per retry: which trial was evaluated again as which, and why.

    e.g. ``trial 3 was retried as trial 5 (COMPLETE): its worker (pid 1234) ended, killed by
    SIGKILL``.
    """
    notes = {r["number"]: r["note"] for r in rows}
    lines = []
    for r in rows:
        if r.get("retry_of") is None:
            continue
        why = r.get("retry_reason") or notes.get(r["retry_of"]) or "it was interrupted"
        lines.append(f"trial {r['retry_of']} was retried as trial {r['number']} "
                     f"({r['state']}): {why}")  # fmt: skip
    return lines


def evaluated(rows: list[Row]) -> list[Row]:
    """Completed trials that ran their own recipe (each stack once)."""
    return [
        r for r in rows
        if r["state"] == "COMPLETE" and r["duplicate_of"] is None
        and r["metric"] is not None and r["ratio"] is not None
    ]  # fmt: skip


def _dominates(a: Row, b: Row) -> bool:
    better_or_equal = a["ratio"] >= b["ratio"] and a["metric"] >= b["metric"]
    return better_or_equal and (a["ratio"] > b["ratio"] or a["metric"] > b["metric"])


def pareto_front(rows: list[Row]) -> list[Row]:
    """Trials no other trial beats on both the metric and throughput, by throughput."""
    points = evaluated(rows)
    front = [r for r in points if not any(_dominates(o, r) for o in points)]
    return sorted(front, key=lambda r: (r["ratio"], r["metric"]))


def choose_best(rows: list[Row]) -> Row | None:
    """The fastest trial that meets the target (the fastest of all without a target)."""
    feasible = [r for r in evaluated(rows) if r["meets_target"] is not False]
    if not feasible:
        return None
    return max(feasible, key=lambda r: (r["ratio"], r["metric"], -r["number"]))


# --------------------------------------------------------------------------- files


def _csv(rows: list[Row], spec: SearchSpec, front: list[Row]) -> str:
    on_front = {r["number"] for r in front}
    metric = rows[0]["metric_name"] if rows else "metric"
    header = ["number", "state", *(f"params_{n}" for n in spec.space), "label", metric,
              "throughput_ratio", "samples_per_s", "baseline_samples_per_s", "measured_ratio",
              "same_architecture", "noisy", "meets_target",
              "on_front", "num_parameters", "sparsity_reached", "seconds", "reused_stages",
              "duplicate_of", "retry_of", "retry_reason", "run_dir", "note"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        writer.writerow(
            [r["number"], r["state"], *(r["params"].get(n) for n in spec.space), r["label"],
             r["metric"], r["ratio"], r["samples_per_s"], r["baseline_samples_per_s"],
             r["measured_ratio"], r["same_architecture"], r["noisy"], r["meets_target"],
             r["number"] in on_front, r["num_parameters"],
             r["sparsity_reached"], r["seconds"], r["reused_stages"], r["duplicate_of"],
             r["retry_of"], r["retry_reason"], r["run_dir"], r["note"]]
        )  # fmt: skip
    return buffer.getvalue()


def _point_label(row: Row) -> str:
    """A point's label; a trial of the baseline's architecture sits at 1.0x by construction."""
    return f"{row['label']} (= baseline)" if row.get("same_architecture") else row["label"]


def ratio_cell(row: Row) -> str:
    """``2.31x``; ``1.00x (same architecture, measured 0.97x)`` for the baseline's architecture."""
    if row["ratio"] is None:
        return ""
    measured = row.get("measured_ratio")
    if row.get("same_architecture") and isinstance(measured, (int, float)):
        return f"{row['ratio']:.2f}x (same architecture, measured {measured:.2f}x)"
    return f"{row['ratio']:.2f}x" + (" (noisy)" if row.get("noisy") else "")


def plot(path: Path, rows: list[Row], front: list[Row], best: Row | None, spec: SearchSpec,
         metric: str) -> bool:  # fmt: skip
    """Throughput vs metric in the style of MUX-PLMs' Figure 4: all trials, the front, target."""
    points = evaluated(rows)
    if not points:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the CSV files carry the figures
        return False
    on_front = {r["number"] for r in front}
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    rest = [r for r in points if r["number"] not in on_front]
    ax.scatter([r["ratio"] for r in rest], [r["metric"] for r in rest], s=30, color="#a8a8a8",
               label="trials", zorder=2)  # fmt: skip
    ax.plot([r["ratio"] for r in front], [r["metric"] for r in front], "-", color="#d62728",
            linewidth=1.5, zorder=3)  # fmt: skip
    for r in front:
        hollow = r["meets_target"] is False
        ax.scatter([r["ratio"]], [r["metric"]], s=46, zorder=4, color="#d62728",
                   facecolors="white" if hollow else "#d62728", linewidths=1.5)  # fmt: skip
        ax.annotate(_point_label(r), (r["ratio"], r["metric"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)  # fmt: skip
    ax.plot([], [], "-o", color="#d62728", label="Pareto front (hollow: below target)")
    if spec.target is not None:
        label = f"target {spec.target.metric or metric} >= {spec.target.min:g}"
        ax.axhline(spec.target.min, linestyle="--", color="#2ca02c", linewidth=1, label=label)
    if best is not None:
        ax.scatter([best["ratio"]], [best["metric"]], marker="*", s=260, color="#ffd21f",
                   edgecolors="black", zorder=5, label=f"best: trial {best['number']}")  # fmt: skip
    ax.axvline(1.0, linestyle=":", color="#606060", linewidth=1)
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel("throughput vs the N=1 unpruned model (x)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{spec.name}: throughput and {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    image = io.BytesIO()
    try:
        fig.savefig(image, dpi=120, format="png")
    finally:
        plt.close(fig)
    write_bytes(path, image.getvalue())
    return True


def plot_html(path: Path, study: Any, metric: str, constraints: Callable[..., Any] | None) -> bool:
    """Optuna's interactive Pareto-front plot, when plotly is installed (it is optional)."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        log.info("pareto.html (the interactive front) needs plotly: pip install 'effkit[plot]'")
        return False
    import optuna.visualization as vis

    try:
        figure = vis.plot_pareto_front(
            study, target_names=[metric, "throughput ratio"], constraints_func=constraints
        )
        # plotly.js inside the page (about 4 MB): it opens without a network
        write_text(path, figure.to_html(include_plotlyjs=True))
    except Exception as exc:  # an optional view; the PNG and the CSV files carry the figures
        log.warning("pareto.html not written: %s", exc)
        return False
    return True


# --------------------------------------------------------------------------- report


def _yes(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def _space_rows(spec: SearchSpec) -> list[list[Any]]:
    rows = []
    for name, param in spec.space.items():
        if param.choices is not None:
            values = ", ".join(value_label(c) for c in param.choices)
        else:
            step = f", step {param.step:g}" if param.step else ""
            values = f"[{param.low:g}, {param.high:g}]{step}" + (" (log)" if param.log else "")
        changes = [", ".join(f"`{f}`" for f in param.fields())]
        if param.bundles():
            changes.append("a bundle of overrides per choice")
        if param.when:
            changes.append("other overrides for " + ", ".join(value_label(v) for v in param.when))
        rows.append([f"`{name}`", values, "; ".join(c for c in changes if c)])
    return rows


def _best_section(best: Row | None, spec: SearchSpec, metric: str) -> list[str]:
    what = f"meeting the target ({spec.target.metric or metric} >= {spec.target.min:g})" \
        if spec.target is not None else "(no target: the fastest)"  # fmt: skip
    lines = [f"## Best stack {what}", ""]
    if best is None:
        return [*lines, "No completed trial meets the target yet.", ""]
    test = best.get("test") or {}
    test_text = f", test {metric} {test[metric]:.4f}" if metric in test else ""
    lines += [
        f"Trial {best['number']}: **{best['label']}**. Validation {metric} {best['metric']:.4f}"
        f"{test_text}; throughput {best['ratio']:.2f}x the N=1 unpruned model "
        f"({best['samples_per_s']:.1f} against {best['baseline_samples_per_s']:.1f} samples/s).",
        "",
        "`best_recipe.yaml` is that trial as a plain recipe: `effkit apply best_recipe.yaml` "
        "runs it again (its stages come from the stage cache) and benchmarks it against the "
        "same baseline.",
        "",
    ]
    if test:
        names = [n for n in test if "/" not in n]
        lines += [table(["split", *names], [
            [split, *(best.get(split, {}).get(n) for n in names)]
            for split in ("validation", "test")
        ]), ""]  # fmt: skip
    return lines


def _reached(sparsity: float | None) -> str:
    return "-" if sparsity is None else f"{sparsity:.2f}"


def _front_section(front: list[Row], spec: SearchSpec, metric: str, has_png: bool) -> list[str]:
    lines = ["## Pareto front", ""]
    if has_png:
        lines += ["![throughput against validation metric](pareto.png)", ""]
    if not front:
        return [*lines, "No completed trial yet.", ""]
    pruned = any(r["sparsity_reached"] is not None for r in front)
    head = ["trial", *spec.space, *(["sparsity reached"] if pruned else []),
            f"validation {metric}", "throughput", "samples/s", "meets target"]  # fmt: skip
    rows = [[r["number"], *(value_label(r["params"].get(n)) for n in spec.space),
             *([_reached(r["sparsity_reached"])] if pruned else []), r["metric"],
             ratio_cell(r), r["samples_per_s"], _yes(r["meets_target"])]
            for r in front]  # fmt: skip
    return [*lines, table(head, rows), ""]


def _trials_section(rows: list[Row], metric: str) -> list[str]:
    counted = evaluated(rows)
    duplicates = [r for r in rows if r["duplicate_of"] is not None]
    failed = [r for r in rows if r["state"] == "FAIL"]
    lines = [
        "## All trials",
        "",
        f"{len(counted)} distinct stacks evaluated, {len(duplicates)} proposals that repeated "
        f"an evaluated recipe (values reused, not run again), {len(failed)} failed or "
        "interrupted (an interrupted trial is evaluated again by its retry).",
        "",
    ]
    table_rows = [[r["number"], r["state"], r["label"], r["metric"],
                   ratio_cell(r), _yes(r["meets_target"]),
                   r["reused_stages"], r["duplicate_of"], r["retry_of"], r["note"][:80]]
                  for r in rows]  # fmt: skip
    head = ["trial", "state", "parameters", f"validation {metric}", "throughput", "meets target",
            "stages from cache", "repeats", "retry of", "note"]  # fmt: skip
    lines += [table(head, table_rows), ""]
    retries = retry_notes(rows)
    if retries:
        lines += ["### Retries", "", *(f"- {line}" for line in retries), ""]
    return lines


def _dashboard(storage: str) -> str:
    if storage.startswith("journal:"):
        return f"optuna-dashboard {storage[len('journal:') :]}"
    return f"optuna-dashboard {storage}"


def render(
    *, spec: SearchSpec, rows: list[Row], front: list[Row], best: Row | None, metric: str,
    protocol: dict[str, Any], storage: str, study_name: str, has_png: bool, has_html: bool,
) -> str:  # fmt: skip
    """The search report's Markdown."""
    lines = [f"# Search: {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Base recipe `{spec.recipe}`; study `{study_name}` in `{storage}`; sampler "
        f"{spec.sampler.name} (seed {spec.sampler.seed}). Objectives, both maximised: "
        f"validation {metric}, and throughput as a ratio to the base recipe's starting model "
        "(N=1, unpruned).",
        "",
    ]
    lines += _best_section(best, spec, metric)
    lines += _front_section(front, spec, metric, has_png)
    lines += ["## Space", "", table(["parameter", "values", "changes"], _space_rows(spec)), ""]
    lines += _trials_section(rows, metric)
    baseline = "beside every trial, interleaved"
    if spec.objectives.baseline == "once":
        baseline = "once per search on each machine (cached in `baseline-HOST.json`)"
    lines += [
        "## How throughput was measured",
        "",
        f"Batch of {protocol.get('batch_size')} inputs x {protocol.get('seq_len')} tokens on "
        f"{protocol.get('device')}, {protocol.get('threads')} threads, warm-up "
        f"{protocol.get('warmup')}, "
        f"{'fastest' if protocol.get('statistic') == 'best' else 'median'} of "
        f"{protocol.get('trials')} trials of "
        f"{protocol.get('batches')} batches (None: the device's defaults). The baseline is the "
        f"base recipe's starting model, measured {baseline}. A measurement holds the search's "
        "exclusive lock: no other process of the search trains or evaluates while it runs. "
        "A trial with the baseline's architecture (same tensors, modules and transforms, as an "
        "unpruned N=1 trial) is 1.00x by construction and is recorded and plotted so; what was "
        "measured for it is shown beside it, as a reading of the noise. A figure whose trials "
        f"spread by more than {NOISE_THRESHOLD:.0%} of their median is marked noisy.",
        "",
        "## Files",
        "",
        "`trials.csv` (every trial), `pareto.csv` (the front), `pareto.png`"
        + (", `pareto.html`" if has_html else "")
        + ", `best_recipe.yaml`, `trials/NNNN/` (each trial's run folder), `spec.yaml` and "
        f"`base_recipe.yaml` (as resolved). Browse the study with `{_dashboard(storage)}`.",
        "",
    ]
    return "\n".join(lines)


def write_all(
    folder: Path, *, spec: SearchSpec, study: Any, rows: list[Row], front: list[Row],
    best: Row | None, metric: str, protocol: dict[str, Any], storage: str, study_name: str,
    constraints: Callable[..., Any] | None = None,
) -> None:  # fmt: skip
    """Write every output file of a search."""
    write_text(folder / "trials.csv", _csv(rows, spec, front))
    write_text(folder / "pareto.csv", _csv(front, spec, front))
    has_png = plot(folder / "pareto.png", rows, front, best, spec, metric)
    has_html = plot_html(folder / "pareto.html", study, metric, constraints)
    write_text(folder / "report.md", render(
        spec=spec, rows=rows, front=front, best=best, metric=metric, protocol=protocol,
        storage=storage, study_name=study_name, has_png=has_png, has_html=has_html,
    ))  # fmt: skip
