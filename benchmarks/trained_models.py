"""Throughput of trained, saved models side by side, against one baseline, in one run.

    python benchmarks/trained_models.py --baseline n1=runs/quickstart/stages/finetune/model \\
        cofi=runs/cofi/stages/prune/model mux2-cofi=runs/mux2-cofi/stages/prune/model

Each ``NAME=MODEL_DIR`` is a model folder saved by effkit (a stage's ``model`` folder); the
models are measured interleaved with the baseline under one protocol (default: the paper's
batch of 128 inputs x 128 tokens). When a folder lies in a run folder (``RUN/stages/STAGE/model``)
whose last stage it is, the run's test score is shown next to the speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import header, protocol, protocol_arguments

from effkit import load
from effkit.bench import benchmark, resolve_device
from effkit.models import EffkitModel


def _pair(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL_DIR, got '{text}'")
    return name, Path(folder)


def run_test_score(folder: Path, metric: str) -> str:
    """The run's test ``metric`` (mean and spread over grouping seeds) if ``folder`` is its
    final model; '-' otherwise."""
    run = folder.parent.parent.parent
    manifest = run / "manifest.json"
    if folder.name != "model" or not manifest.exists():
        return "-"
    stages = list(json.loads(manifest.read_text(encoding="utf-8")).get("stages", {}))
    if not stages or stages[-1] != folder.parent.name:
        return "-"
    metrics_path = run / "metrics.json"
    if not metrics_path.exists():
        return "-"
    test = json.loads(metrics_path.read_text(encoding="utf-8")).get("metrics", {}).get("test", {})
    if metric not in test:
        return "-"
    spread = test.get(f"{metric}_std")
    return f"{test[metric]:.3f}" + (f" ± {spread:.3f}" if spread is not None else "")


def describe(model: EffkitModel) -> dict[str, Any]:
    """Parameters of the encoder and in all, and the stack of transforms."""
    return {
        "encoder_parameters": sum(p.numel() for p in model.base.encoder.parameters()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "transforms": [t.registered_name() for t in model.transforms],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=_pair, help="NAME=MODEL_DIR")
    parser.add_argument("--baseline", type=_pair, required=True, help="NAME=MODEL_DIR")
    parser.add_argument("--metric", default="accuracy", help="test metric shown per model")
    protocol_arguments(parser)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    pairs = [args.baseline, *args.models]
    models = {name: load(folder).to(device).eval() for name, folder in pairs}
    base = models[args.baseline[0]]
    result = benchmark(models, protocol(args), vocab_size=base.vocab_size,
                       baseline=args.baseline[0], type_vocab_size=base.type_vocab_size)  # fmt: skip
    data = result.to_dict()
    facts = {name: describe(model) for name, model in models.items()}
    print(header(data, "saved models"))
    print()
    print(f"| model | transforms | encoder params | test {args.metric} | samples/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, folder in pairs:
        fact, timing = facts[name], data["timings"][name]
        stack = " + ".join(fact["transforms"]) or "-"
        print(f"| {name} | {stack} | {fact['encoder_parameters']:,} | "
              f"{run_test_score(folder, args.metric)} | {timing['samples_per_s']:.1f} | "
              f"{data['ratios'][name]:.2f}x |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"bench": data, "models": facts}, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
