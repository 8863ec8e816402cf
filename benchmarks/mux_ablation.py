"""Ablations of a multiplexed recipe, in the shape of the MUX-PLMs paper's Table 5.

    python benchmarks/mux_ablation.py recipes/mux2.yaml --out runs/ablation-bbc
    python benchmarks/mux_ablation.py recipes/mux2_wnut.yaml --out runs/ablation-wnut \
        --variants contextual prefix
    python benchmarks/mux_ablation.py recipes/mux2.yaml --out runs/ablation-bbc \
        --set stages.prime.train.steps=300          # every variant on a smaller budget
    python benchmarks/mux_ablation.py recipes/mux2_wnut.yaml --out runs/ablation-wnut-mlm \
        --pretrain-steps 100 --variants base electra compute-no-mlm

Each variant is the recipe with a few fields changed (listed in the table), run into its own
folder under ``--out`` with ``effkit apply``'s runner and its stage cache: variants that share
their first stages (MLM against ELECTRA shares priming) train them once, and a stopped ablation
resumes where it was. ``compute`` variants move the budget of priming and pre-training to
fine-tuning, to show what those stages buy at equal total steps. The multiplexer,
demultiplexer and pre-training rows try each choice the recipe does not make: against a
recipe with binary keys the Gaussian keys of the paper are a row. A recipe without a
pre-training stage has no MLM or ELECTRA row; ``--pretrain-steps`` gives it an MLM stage before
fine-tuning (the base row) so that it has them. The table (``ablation.md``) and every figure
(``ablation.json``) are written to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from effkit.errors import EffkitError
from effkit.recipe import Recipe, parse_recipe, read_recipe_text
from effkit.runner import run
from effkit.storage import write_json, write_text

MUX = "stages.prime.transforms.multiplex"
MUXES = ("gaussian", "contextual", "binary", "orthogonal")
DEMUXES = ("rsa", "prefix")


def _multiplex(recipe: Recipe) -> dict[str, Any]:
    """The resolved fields of the first stage's ``multiplex`` transform."""
    for transform in recipe.stages[0].resolved_plugins()["transforms"]:
        if transform["name"] == "multiplex":
            return dict(transform)
    raise EffkitError(f"stage '{recipe.stages[0].name}' has no multiplex transform to ablate")


def variants(recipe: Recipe) -> dict[str, list[str]]:
    """Each variant's overrides of ``recipe`` (one change against the first row each).

    The multiplexer, demultiplexer and pre-training rows are the choices the recipe does not
    make itself: a recipe with binary keys gets a ``gaussian`` row, one with Gaussian keys a
    ``binary`` row.
    """
    steps = {stage.name: stage.train.steps for stage in recipe.stages}
    pretrain = steps.get("mlm", 0)
    mux = _multiplex(recipe)
    table: dict[str, list[str]] = {"base": []}
    table.update({kind: [f"{MUX}.mux={kind}"] for kind in MUXES if kind != mux["mux"]})
    table.update({kind: [f"{MUX}.demux={kind}"] for kind in DEMUXES if kind != mux["demux"]})
    if "mlm" in steps:
        pretraining = next(stage for stage in recipe.stages if stage.name == "mlm")
        objective = pretraining.resolved_plugins()["objective"]["name"]
        other = "mlm" if objective == "electra" else "electra"
        table[other] = [f"stages.mlm.objective={other}"]
        # equal compute: the same total optimizer steps, spent on fine-tuning instead
        table["compute-no-mlm"] = [
            "stages.mlm=null",
            f"stages.finetune.train.steps={steps.get('finetune', 0) + pretrain}",
        ]
    table["compute-finetune-only"] = [
        *(["stages.mlm=null"] if "mlm" in steps else []),
        "stages.prime.train.steps=0",  # the multiplexer and demultiplexer, untrained
        f"stages.finetune.train.steps={sum(steps.values())}",
    ]
    return table


def with_pretraining(text: str, steps: int, source: str) -> str:
    """``text`` with an MLM stage of ``steps`` steps before its ``finetune`` stage.

    The stage trains at the priming stage's batch size with ``mux2.yaml``'s MLM settings. A
    recipe that already has an ``mlm`` stage, or no ``finetune`` stage, is refused.
    """
    recipe = parse_recipe(text, source=source)  # a malformed recipe is reported as written
    data = yaml.safe_load(text)
    stages = data["stages"]
    names = [stage.get("name") for stage in stages]
    if "mlm" in names:
        raise EffkitError(f"{source} already has an 'mlm' stage; leave out --pretrain-steps")
    if "finetune" not in names:
        raise EffkitError(f"{source} has no 'finetune' stage to pre-train before")
    batch = recipe.stages[0].train.batch_size
    train = {"steps": steps, "batch_size": batch, "lr": 5.0e-5, "warmup_ratio": 0.05}
    stages.insert(names.index("finetune"), {"name": "mlm", "objective": "mlm", "train": train})
    return str(yaml.safe_dump(data, sort_keys=False))


def _metric(result: Any, split: str, metric: str) -> tuple[float | None, float | None]:
    scores = result.metrics.get(split, {})
    return scores.get(metric), scores.get(f"{metric}_std")


def _shown(mean: float | None, spread: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + ("" if spread is None else f" ± {100 * spread:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="a multiplexed recipe (prime, mlm, finetune)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the variants' runs")
    parser.add_argument("--variants", nargs="*", default=None, help="run only these")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="PATH=VALUE", help="change every variant's recipe")  # fmt: skip
    parser.add_argument("--metric", default=None, help="default: the task's primary metric")
    parser.add_argument("--pretrain-steps", type=int, default=None, metavar="STEPS",
                        help="add an MLM stage of STEPS steps before fine-tuning (for a recipe "
                        "without one)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        # every variant from the text read once, validated before the first one runs: an edit
        # of the file during a long ablation cannot mix two versions of the recipe in one table
        text = read_recipe_text(args.recipe)
        if args.pretrain_steps is not None:
            if args.pretrain_steps < 1:
                raise EffkitError(f"--pretrain-steps must be at least 1, not {args.pretrain_steps}")
            text = with_pretraining(text, args.pretrain_steps, str(args.recipe))
        table = variants(parse_recipe(text, source=str(args.recipe), overrides=args.overrides))
        unknown = sorted(set(args.variants or []) - set(table))
        if unknown:
            raise EffkitError(f"unknown variant(s) {unknown}; known: {', '.join(table)}")
        chosen = {k: v for k, v in table.items() if args.variants is None or k in args.variants}
        recipes = {
            name: parse_recipe(text, source=str(args.recipe), overrides=[*args.overrides, *changes])
            for name, changes in chosen.items()
        }
        rows: list[dict[str, Any]] = []
        for name, changes in chosen.items():
            recipe = recipes[name]
            began = time.perf_counter()
            result = run(recipe, args.out / name, progress=False, benchmark=False)
            metric = args.metric or result.model.task.primary_metric()
            row = {
                "variant": name,
                "changes": changes,
                "metric": metric,
                "test": _metric(result, "test", metric),
                "validation": _metric(result, "validation", metric),
                "train_minutes": round(sum(
                    float(s.get("wall_seconds") or 0.0) for s in result.stages.values()
                ) / 60, 1),
                "seconds_this_call": round(time.perf_counter() - began, 1),
            }  # fmt: skip
            rows.append(row)
            print(f"{name}: test {_shown(*row['test'])}, validation {_shown(*row['validation'])}")
    except EffkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = [
        f"Ablations of `{args.recipe}`"
        + (f" with {', '.join(f'`{o}`' for o in args.overrides)}" if args.overrides else ""),
        "",
        f"| variant | changes | test {rows[0]['metric'] if rows else ''} (%) "
        "| validation (%) | training time |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        changes = "<br>".join(f"`{c}`" for c in row["changes"]) or "(the recipe)"
        lines.append(
            f"| {row['variant']} | {changes} | {_shown(*row['test'])} "
            f"| {_shown(*row['validation'])} | {row['train_minutes']} min |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "ablation.md", "\n".join(lines) + "\n")
    write_json(args.out / "ablation.json", {"recipe": str(args.recipe), "rows": rows})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
