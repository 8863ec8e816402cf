"""Partial ensembling of a multiplexed model: accuracy and throughput for each k of N slots.

A multiplexed model with ``ensemble: k`` runs each group of N inputs k times, rotating the
inputs through k of the N slots, and averages each input's logits: k forward passes per group,
so throughput falls about k-fold while accuracy may rise (the paper's Table 4 spectrum). For
each k this script scores the run's test split (the recipe's own data, with several grouping
seeds: mean and spread) and times every k interleaved in one run under the paper's protocol,
beside an optional N=1 model.

    python benchmarks/ensembling.py runs/mux2 --baseline runs/quickstart
    python benchmarks/ensembling.py runs/mux5 --slots 1 2 5 --seeds 0 1 2 --json mux5.json

RUN is a run folder (its last stage's model and its recipe's data are used).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import header, protocol, protocol_arguments

from effkit import load
from effkit.bench import compare, resolve_device
from effkit.data import load_task_data
from effkit.inference import evaluate_seeds, set_ensemble
from effkit.models import EffkitModel
from effkit.recipe import load_recipe
from effkit.runtimes import baseline_runtimes


def final_model(run: Path) -> Path:
    """The model folder of a run folder's last stage."""
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    return run / "stages" / list(manifest["stages"])[-1] / "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder of a multiplexed model")
    parser.add_argument("--baseline", type=Path, help="run folder of an N=1 model to time too")
    parser.add_argument("--slots", type=int, nargs="+", help="values of k (default: 1..N)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="grouping seeds of the test score")  # fmt: skip
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--metric", default=None, help="the figure shown (default: the task's)")
    protocol_arguments(parser)
    args = parser.parse_args(argv)

    folder = final_model(args.run)
    recipe = load_recipe(args.run / "recipe.yaml")
    probe = load(folder)
    n = getattr(probe.adapter, "n", None)
    if not isinstance(n, int):
        parser.error(f"{folder} is not multiplexed")
    slots = args.slots or list(range(1, n + 1))
    assert recipe.data is not None
    data = load_task_data(recipe.data, probe.task.type, probe.task.labels)
    examples = data.splits[args.split]
    metric = args.metric or ("accuracy" if probe.task.type == "sequence-classification" else "f1")

    device = resolve_device(args.device)
    models: dict[str, EffkitModel] = {}
    scores: dict[str, dict[str, Any]] = {}
    for k in slots:
        model = load(folder)
        set_ensemble(model, k)
        aggregated, per_seed = evaluate_seeds(model, examples, args.seeds)
        scores[f"k={k}"] = {"metrics": aggregated, "per_seed": per_seed}
        models[f"k={k}"] = model.to(device).eval()
        print(f"k={k}: {args.split} {metric} {aggregated[metric]:.4f} "
              f"± {aggregated.get(metric + '_std', 0.0):.4f}", flush=True)  # fmt: skip
    baseline = "k=1"
    if args.baseline is not None:
        models["N=1"] = load(final_model(args.baseline)).to(device).eval()
        baseline = "N=1"
        saved = json.loads((args.baseline / "metrics.json").read_text(encoding="utf-8"))
        scores["N=1"] = {"metrics": saved["metrics"].get(args.split, {}), "per_seed": {}}
    # N=1 also in every plain runtime (bf16 where the CPU has it, int8, ONNX Runtime), so that
    # each k is measured against the fastest way to run the unmultiplexed model too
    runtimes = baseline_runtimes(models["N=1"], device) if args.baseline is not None else None
    bench = compare(models, protocol(args), baseline=baseline, runtimes=runtimes)
    print(header(bench, f"ensembling k of N={n}"))
    if "best_runtime" in bench:
        print(f"fastest plain runtime of N=1: {bench['best_runtime']}; skipped: "
              f"{bench['runtimes']['skipped'] or 'none'}")  # fmt: skip
    print()
    print(f"| k | {args.split} {metric} (mean ± std over {len(args.seeds)} seeds) | "
          f"inputs/s (trials min-max) | vs {baseline} | vs the fastest N=1 runtime |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name in bench["timings"]:
        timing = bench["timings"][name]
        m = scores.get(name, {}).get("metrics", {})
        score = f"{m[metric]:.4f}" if metric in m else "-"
        if f"{metric}_std" in m:
            score += f" ± {m[metric + '_std']:.4f}"
        trials = timing.get("trial_samples_per_s") or [timing["samples_per_s"]]
        ratio_best = timing.get("ratio_best")
        best = "-" if ratio_best is None else f"{ratio_best:.2f}x"
        print(f"| {name} | {score} | {timing['samples_per_s']:.1f} ({min(trials):.1f}-"
              f"{max(trials):.1f}) | {bench['ratios'][name]:.2f}x | {best} |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"n": n, "metric": metric, "scores": scores, "bench": bench}, handle,
                      indent=2, default=str)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
