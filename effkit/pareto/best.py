"""The best trial that meets the target: scored on test in ``best/``, kept as a plain recipe.

A completed trial's folder stays as the trial left it (resuming and rerunning a search must not
touch it), so the best trial is scored on test in the search's ``best/`` folder, and written as
``best_recipe.yaml``, a recipe that ``effkit apply`` reproduces on its own.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from effkit.pareto.base import Base, bench_protocol
from effkit.pareto.context import Context
from effkit.pareto.evaluation import trial_runner
from effkit.pareto.locks import SearchLocks
from effkit.recipe import Recipe
from effkit.storage import copy_tree, read_json, write_json, write_text


def _best_dir(ctx: Context, recipe: Recipe, best: dict[str, Any]) -> Path:
    """The folder the best trial is scored on test in: ``best/``, never the trial's own folder.

    ``best/`` starts from the trial's stages (hard links, no training), or from the stage cache
    when the trial ran elsewhere; it is cleared when the best trial changes.
    """
    run_dir = ctx.folder / "best"
    recorded = run_dir / "recipe.yaml"
    if run_dir.exists() and not (
        recorded.is_file() and recorded.read_text(encoding="utf-8") == recipe.to_yaml()
    ):
        shutil.rmtree(run_dir)
    trial_dir = ctx.folder / str(best.get("run_dir") or "")
    manifest = trial_dir / "manifest.json"
    if best.get("run_dir") and manifest.is_file() and not run_dir.exists():
        if (trial_dir / "stages").is_dir():
            copy_tree(trial_dir / "stages", run_dir / "stages")
        write_json(run_dir / "manifest.json", read_json(manifest))
    return run_dir


def evaluate_best(ctx: Context, base: Base, best: dict[str, Any]) -> dict[str, Any]:
    """Score the best trial on test and write it as a plain recipe (``best_recipe.yaml``)."""
    recipe = base.trial_recipe(ctx.spec, best["params"], best=True)
    run_dir = _best_dir(ctx, recipe, best)
    result = trial_runner(recipe, run_dir, SearchLocks(ctx.folder), ctx.progress).run()
    plain = recipe.model_copy(
        update={
            "name": f"{ctx.spec.name}-best",
            "description": f"Trial {best['number']} of search '{ctx.spec.name}': "
            f"{best['label']}. {base.recipe.description}".strip(),
            "benchmark": bench_protocol(ctx.spec, base.recipe),
        }
    )
    header = (
        f"# The best trial ({best['number']}) of search '{ctx.spec.name}' that meets its target: "
        f"{best['label']}.\n# A plain recipe: `effkit apply best_recipe.yaml` reproduces it.\n"
    )
    write_text(ctx.folder / "best_recipe.yaml", header + plain.to_yaml())
    return {"metrics": result.metrics, "run_dir": str(run_dir)}
