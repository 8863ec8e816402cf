"""One Markdown table from several run folders: task score, throughput ratio, wall time.

    python benchmarks/collect_runs.py runs/quickstart runs/mux2 runs/mux5 runs/mux10

Each row reads a run folder written by ``effkit apply``: the test metrics (mean and spread over
the inference seeds when the recipe used several), the throughput ratio against the recipe's
baseline from ``bench.json``, and the training time of each stage from the stage records.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _multiplex_n(folder: Path) -> str:
    recipe = (folder / "recipe.yaml").read_text(encoding="utf-8") if folder.exists() else ""
    import yaml

    data = yaml.safe_load(recipe) or {}
    for stage in data.get("stages", []):
        for transform in stage.get("transforms", []):
            if isinstance(transform, dict) and transform.get("name") == "multiplex":
                return str(transform.get("n", 2))
    return "1"


def row(folder: Path, metric: str) -> list[str]:
    metrics = _read(folder / "metrics.json").get("metrics", {}).get("test", {})
    bench = _read(folder / "bench.json")
    score = metrics.get(metric)
    spread = metrics.get(f"{metric}_std")
    shown = "-" if score is None else f"{100 * score:.1f}"
    if spread is not None:
        shown += f" ± {100 * spread:.1f}"
    ratio = (bench.get("ratios") or {}).get("final")
    seconds = 0.0
    for stage_dir in sorted((folder / "stages").glob("*")):
        seconds += float(_read(stage_dir / "stage.json").get("wall_seconds") or 0.0)
    return [
        folder.name,
        _multiplex_n(folder),
        shown,
        "-" if ratio is None else f"{ratio:.2f}x",
        f"{seconds / 60:.1f} min",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--metric", default="accuracy")
    args = parser.parse_args(argv)
    print(f"| run | N | test {args.metric} (%) | throughput vs N=1 | training time |")
    print("|---|---|---|---|---|")
    for folder in args.runs:
        print("| " + " | ".join(row(folder, args.metric)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
