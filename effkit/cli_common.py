"""Tables the ``effkit`` commands print: task metrics and throughput."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Table


def metrics_table(metrics: dict[str, dict[str, float]], title: str) -> Table:
    names: list[str] = []
    for scores in metrics.values():
        names += [k for k in scores if k not in names and "/" not in k]
    table = Table(title=title)
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, scores in metrics.items():
        table.add_row(split, *(f"{scores[n]:.4f}" if n in scores else "" for n in names))
    return table


def bench_table(bench: dict[str, Any]) -> RenderableType:
    """The throughput tables: fixed shape, then real data when measured, with their notes."""
    from rich.console import Group

    from effkit.bench.summary import COLUMNS, lengths_text, notes, rows

    def one(figures: dict[str, Any], title: str, unit: str) -> Table:
        table = Table(title=title, caption="\n".join(notes(figures)) or None)
        heads = {"rate": unit, "range": "min-max", "ratio": "vs baseline"}
        columns = [*COLUMNS, "vs best"] if figures.get("best_runtime") else list(COLUMNS)
        for col in columns:
            table.add_column(heads.get(col, col), justify="left" if col == "model" else "right")
        for row in rows(figures):
            table.add_row(*(row[col] for col in columns))
        return table

    parts: list[RenderableType] = [one(bench, "Throughput (fixed shape)", "samples/s")]
    real = bench.get("realdata")
    if real:
        data = real.get("settings", {}).get("data", {})
        title = (f"Real data: {data.get('source')} {data.get('split')}, {data.get('texts')} "
                 f"texts, {lengths_text(data.get('lengths') or {})}")  # fmt: skip
        parts.append(one(real, title, "inputs/s"))
    return Group(*parts)
