"""Deployable speed: stacks against float32 N=1 *and* the fastest plain runtime, with accuracy.

    python benchmarks/deploy_speed.py --n1 runs/quickstart/stages/finetune/model \\
        --stack n2=RUN/stages/finetune/model --stack n2-cofi=RUN/stages/prune/model \\
        --data builtin:bbc-news --json docs/figures/deploy_speed.json

For the N=1 model (``--n1``, the baseline) and every ``--stack NAME=MODEL_DIR``, the script adds
the same model in bf16 (``NAME+bf16``, the ``precision`` transform) where the hardware has bf16
units, then measures in one interleaved run, at the fixed shape (default: the paper's batch of
128 x 128 tokens):

- the baseline in every plain runtime a user would pick (float32, bf16, torch int8, ONNX
  Runtime float32 and int8; :mod:`effkit.bench.runtimes`);
- every stack, each reported against float32 N=1 and against the fastest of those runtimes.

With ``--data`` it also scores each model on the data's test split (accuracy and the task's
primary metric) and times end-to-end prediction on the test texts (tokenization, length
sorting, N-slot grouping, padding) for the models named by ``--realdata``, each truncating at
its own length unless ``--max-length`` sets one for all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import header, protocol, protocol_arguments

from effkit import EffkitModel, load, native_half
from effkit.bench import compare, resolve_device
from effkit.bench.config import RUNTIMES
from effkit.errors import EffkitError
from effkit.runner import stack
from effkit.runtimes import baseline_runtimes


def _pair(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL_DIR, got '{text}'")
    return name, Path(folder)


def models_of(args: argparse.Namespace) -> dict[str, EffkitModel]:
    """The baseline, the stacks, and each in bf16 where the hardware runs bf16 natively."""
    from effkit_precision import Precision

    device = resolve_device(args.device)
    bf16 = native_half("bf16", device) is True and not args.no_bf16
    models: dict[str, EffkitModel] = {}
    for name, folder in [("n1", args.n1), *args.stack]:
        models[name] = load(folder, device=device)
        if not bf16 or any(t.name == "precision" for t in models[name].transforms):
            continue
        try:
            models[f"{name}+bf16"] = stack(load(folder), [Precision(dtype="bf16")]).to(device)
        except EffkitError as exc:  # an int8 stack, for one: one number format per model
            print(f"{name}: no bf16 copy ({exc.message})")
    return models


def accuracy(models: dict[str, EffkitModel], source: str, split: str) -> dict[str, Any]:
    """Each model's metrics on ``split`` of ``source`` (its own labels and max length)."""
    from effkit.data import DataConfig, load_task_data
    from effkit.inference import evaluate_examples

    scores: dict[str, Any] = {}
    for name, model in models.items():
        cfg = DataConfig(source=source, max_length=model.max_length)
        data = load_task_data(cfg, model.task.type, model.task.labels)
        scores[name] = evaluate_examples(model, data.splits[split], batch_size=64, bar=None)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=Path, required=True, help="the N=1 float32 model folder")
    parser.add_argument("--stack", type=_pair, action="append", default=[],
                        metavar="NAME=MODEL_DIR", help="a compressed model to compare")  # fmt: skip
    parser.add_argument("--data", default=None, help="score on this data's test split too")
    parser.add_argument("--realdata", nargs="*", default=None, metavar="NAME",
                        help="time prediction on the test texts for these models (default: "
                        "n1 and every stack in bf16)")  # fmt: skip
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate every model's texts at this many tokens in the real-data "
                        "timing (default: each model's own length)")  # fmt: skip
    parser.add_argument("--no-bf16", action="store_true", help="leave out the bf16 copies")
    parser.add_argument("--runtimes", nargs="*", default=None,
                        help="baseline runtimes (default: every one)")  # fmt: skip
    protocol_arguments(parser, trials=5)
    args = parser.parse_args(argv)
    cfg = protocol(args)

    models = models_of(args)
    names = args.runtimes if args.runtimes is not None else list(RUNTIMES)
    runtimes = baseline_runtimes(models["n1"], resolve_device(args.device), names)
    fixed = compare(models, cfg, baseline="n1", runtimes=runtimes, progress=False)
    out: dict[str, Any] = {"fixed_shape": fixed}
    print(header(fixed, "fixed shape"))
    _table(fixed)

    if args.data:
        out["accuracy"] = accuracy(models, args.data, "test")
        for name, scores in out["accuracy"].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
            print(f"{name}: {shown}")
        from effkit.bench import load_texts
        from effkit.data import DataConfig

        first = models["n1"]
        texts = load_texts(DataConfig(source=args.data, max_length=first.max_length),
                           first.task.type)  # fmt: skip
        chosen = args.realdata or [n for n in models if n == "n1" or n.endswith("+bf16")]
        missing = [name for name in chosen if name not in models]
        if missing:
            print(f"--realdata: no model named {', '.join(missing)}; measured: {', '.join(models)}")
        subset = {name: models[name] for name in chosen if name in models}
        if args.max_length is not None:
            for model in subset.values():
                model.max_length = args.max_length
        lengths = {name: model.max_length for name, model in subset.items()}
        if len(set(lengths.values())) > 1:
            print(f"note: the models truncate at different lengths {lengths}; their real-data "
                  "ratios mix model speed with input length (see --max-length)")  # fmt: skip
        real = compare(subset, cfg, baseline="n1" if "n1" in subset else None, texts=texts,
                       progress=False)  # fmt: skip
        out["real_data"] = real.get("realdata", real)
        print(json.dumps(out["real_data"].get("settings", {}).get("data", {}), indent=1))
        _table(out["real_data"])
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


def _table(data: dict[str, Any]) -> None:
    best = data.get("best_runtime")
    print(f"| model | samples/s (min-max) | vs float32 N=1 | vs best N=1 runtime ({best}) |")
    print("|---|---|---|---|")
    for name, timing in data["timings"].items():
        low, high = timing.get("min_samples_per_s"), timing.get("max_samples_per_s")
        spread = f" ({low:.1f}-{high:.1f})" if low is not None and high is not None else ""
        ratio, best_ratio = timing.get("ratio"), timing.get("ratio_best")
        print(
            f"| {name} | {timing['samples_per_s']:.1f}{spread} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | "
            f"{'' if best_ratio is None else f'{best_ratio:.2f}x'} |"
        )
    skipped = data.get("runtimes", {}).get("skipped")
    if skipped:
        print("runtimes left out: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))


if __name__ == "__main__":
    sys.exit(main())
