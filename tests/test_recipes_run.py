"""Every shipped recipe runs end to end (on a tiny model, a few examples and two steps a stage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from effkit.pareto.spec import is_search_spec
from effkit.recipe import load_recipe
from effkit.runner import run

# search specs (recipes/pareto_search.yaml) run in test_search.py
RECIPES = sorted(
    p for p in (Path(__file__).parents[1] / "recipes").glob("*.yaml") if not is_search_spec(p)
)


def shrunk(path: Path) -> list[str]:
    recipe = load_recipe(path)
    overrides = [
        "model.source=preset:tiny",
        "data.limit=24",
        "data.max_length=32",
        "benchmark.batch_size=4",
        "benchmark.seq_len=16",
        "benchmark.warmup=0",
        "benchmark.trials=1",
        "benchmark.batches=1",
    ]
    for stage in recipe.stages:
        overrides += [
            f"stages.{stage.name}.train.steps=2",
            f"stages.{stage.name}.train.batch_size=8",
        ]
        if stage.train.eval_every:
            overrides.append(f"stages.{stage.name}.train.eval_every=1")
        for spec in stage.transforms:
            if isinstance(spec, dict) and spec.get("name") == "keep-layers":
                # the tiny model has two layers
                overrides.append(f"stages.{stage.name}.transforms.keep-layers.layers=[0]")
            if isinstance(spec, dict) and spec.get("name") == "multiplex" and spec.get("mix_after"):
                # one layer per input, one multiplexed
                overrides.append(f"stages.{stage.name}.transforms.multiplex.mix_after=1")
    return overrides


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs(tmp_path, path):
    data = load_recipe(path).data
    source = data.source if data is not None else "builtin:"
    if not source.startswith("builtin:") and not (path.parent / source).exists():
        pytest.skip(f"its data ({source}) is on the Hugging Face hub")
    result = run(load_recipe(path, shrunk(path)), tmp_path / "run", progress=False)
    assert result.report.is_file()
    assert set(result.metrics) == set(result.recipe.evaluate.splits)
    assert result.bench is not None and "final" in result.bench["timings"]
