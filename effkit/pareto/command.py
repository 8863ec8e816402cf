"""The ``effkit search`` command; :mod:`effkit.cli` registers it.

Importing this module is cheap (typer only): the command line imports it on every start, and the
search, Optuna and torch load when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def checked(spec: Path, overrides: list[str]) -> str:
    """Validate a search spec, its space and its base recipe; say what was checked."""
    from effkit.pareto.base import check
    from effkit.pareto.spec import grid_size, load_spec

    loaded = load_spec(spec)
    check(loaded, overrides)
    size = grid_size(loaded)
    sets = f"{size} parameter sets" if size is not None else "a continuous space"
    return f"valid ({len(loaded.space)} parameters, {sets})"


def search(
    spec: Annotated[Path, typer.Argument(help="Search spec YAML file, or a shipped one's name.")],
    trials: Annotated[
        int | None,
        typer.Option(help="Distinct evaluations the study should hold (default: the spec's)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna RDB URL, for workers on several machines (PostgreSQL, MySQL)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    study: Annotated[str | None, typer.Option(help="Study name (default: the spec's).")] = None,
    search_dir: Annotated[
        Path | None, typer.Option(help="Search folder (default runs/NAME).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a base-recipe field for every trial."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the spec and its space; run nothing.")
    ] = False,
) -> None:
    """Search a recipe's space for the fastest stack that reaches a target (Pareto front)."""
    from effkit.console import out, switches
    from effkit.shipped import recipe_path

    spec = recipe_path(spec)
    if check:
        out.print(f"{spec}: {checked(spec, set_ or [])}")
        return

    from rich.table import Table

    from effkit.pareto.study import search as run_search

    result = run_search(
        spec,
        trials=trials,
        storage=storage,
        workers=workers,
        study=study,
        search_dir=search_dir,
        overrides=set_ or [],
        progress=not switches.quiet,
    )
    metric = result.trials[0]["metric_name"] if result.trials else "metric"
    front = Table(title="Pareto front")
    for column in ("trial", "parameters", f"validation {metric}", "throughput", "meets target"):
        front.add_column(column, justify="left" if column == "parameters" else "right")
    for row in result.front:
        met = row["meets_target"]
        meets = "" if met is None else ("yes" if met else "no")
        front.add_row(str(row["number"]), row["label"], f"{row['metric']:.4f}",
                      f"{row['ratio']:.2f}x", meets)  # fmt: skip
    out.print(front)
    if result.best is not None:
        test = result.best.get("test", {}).get(metric)
        out.print(
            f"best: trial {result.best['number']} ({result.best['label']}), "
            f"{result.best['ratio']:.2f}x" + ("" if test is None else f", test {metric} {test:.4f}")
        )
    else:
        out.print("best: no completed trial meets the target yet")
    for line in result.retries:
        out.print(line)
    out.print(f"report: {result.report}")
