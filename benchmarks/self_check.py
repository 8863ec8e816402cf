"""A model against a deep copy of itself: how far this machine moves the benchmark's ratio.

Loads MODEL (default the packaged all-MiniLM-L6-v2), deep-copies it, and measures the two
interleaved with the benchmark protocol through ``effkit.bench.compare`` (the device defaults,
unless options say otherwise). The copy has the same architecture, so its ratio is 1.0 by
construction: how far the measured ratio strays from 1.0, and how far each model's trials spread,
is the noise of this machine under this protocol. Prints the figures, the ratio under each way
of summing up the same trials (median trial, fastest trial, median of the paired per-trial
ratios) and a verdict against ``--tolerance``; ``--json`` writes every figure.

    python benchmarks/self_check.py                       # the CPU defaults, batch 128 x 128
    python benchmarks/self_check.py --trials 9 --batches 1 --json self_check.json
    python benchmarks/self_check.py --data builtin:bbc-news --data-limit 256   # real texts too
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from typing import Any

from common import header, protocol, protocol_arguments

from effkit.bench import compare, resolve_device
from effkit.bench.realdata import load_texts
from effkit.data import DataConfig
from effkit.errors import EffkitError
from effkit.models import load_model


def ratios(bench: dict[str, Any], model: str, base: str) -> dict[str, float]:
    """The copy's ratio to the model under each way of summing up the same trials."""
    own = bench["timings"][model]["trial_samples_per_s"]
    ref = bench["timings"][base]["trial_samples_per_s"]
    return {
        "reported": bench["ratios"][model],
        "median": statistics.median(own) / statistics.median(ref),
        "best": max(own) / max(ref),
        "paired": statistics.median(a / b for a, b in zip(own, ref, strict=True)),
    }


def check(bench: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """The ratios, the spread of each model's trials and whether the ratio is within bounds."""
    found = ratios(bench, "copy", "model")
    return {
        "ratios": found,
        "spread": {name: t["spread"] for name, t in bench["timings"].items()},
        "noisy": {name: t["noisy"] for name, t in bench["timings"].items()},
        "cpu_wall_ratio": {name: t["cpu_wall_ratio"] for name, t in bench["timings"].items()},
        "same_architecture": bench["timings"]["copy"]["same_architecture"],
        "tolerance": tolerance,
        "within": abs(found["reported"] - 1.0) <= tolerance,
    }


def _table(bench: dict[str, Any], found: dict[str, Any], what: str) -> list[str]:
    lines = [
        f"{what}:",
        "",
        "| model | samples/s | min-max | spread | ms/batch | CPU s/batch | CPU/wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in bench["timings"].items():
        lines.append(
            f"| {name} | {t['samples_per_s']:.1f} | {t['min_samples_per_s']:.1f}-"
            f"{t['max_samples_per_s']:.1f} | {t['spread']:.1%}{' noisy' if t['noisy'] else ''} "
            f"| {t['latency_ms']:.1f} | {t['cpu_s_per_batch']:.2f} | {t['cpu_wall_ratio']:.2f} |"
        )
    r = found["ratios"]
    lines += [
        "",
        f"copy / model: {r['reported']:.3f}x reported ({bench['settings']['statistic']}); "
        f"median trials {r['median']:.3f}x, fastest trials {r['best']:.3f}x, paired "
        f"{r['paired']:.3f}x; within ±{found['tolerance']:.0%}: "
        f"{'yes' if found['within'] else 'NO'}",
    ]
    note = bench["timings"]["copy"].get("note")
    return [*lines, *([note] if note else []), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:minilm-l6", help="model source")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed |ratio - 1|")
    parser.add_argument("--min-trial-seconds", type=float, default=0.0, help="per trial")
    parser.add_argument("--data", default=None, help="also time prediction on this source")
    parser.add_argument("--split", default="test", help="the split of --data")
    parser.add_argument("--data-limit", type=int, default=None, help="at most this many texts")
    protocol_arguments(parser)
    parser.set_defaults(trials=None)  # the device's default, which is what this checks
    args = parser.parse_args(argv)

    try:
        cfg = protocol(args).model_copy(
            update={"min_trial_seconds": args.min_trial_seconds, "data_limit": args.data_limit}
        )
        device = resolve_device(args.device)
        model = load_model(args.model, labels=["a", "b"]).to(device).eval()
        models = {"model": model, "copy": copy.deepcopy(model)}
        texts = None
        if args.data:
            source = DataConfig(source=args.data, max_length=model.max_length)
            texts = load_texts(source, model.task.type, args.split)
        bench = compare(models, cfg, baseline="model", texts=texts)
    except EffkitError as exc:
        print(f"{exc.kind}: {exc.render()}", file=sys.stderr)
        return 2
    found = check(bench, args.tolerance)
    print(header(bench, f"{args.model} against a deep copy of itself"))
    print()
    print("\n".join(_table(bench, found, "Fixed shape")))
    record: dict[str, Any] = {"model": args.model, "bench": bench, "check": found}
    if "realdata" in bench:
        real = bench["realdata"]
        record["realdata_check"] = check(real, args.tolerance)
        data = real["settings"]["data"]
        print("\n".join(_table(real, record["realdata_check"],
                               f"Real data ({data['source']} {data['split']}, {data['texts']} "
                               f"texts, tokens {data['lengths']})")))  # fmt: skip
    env = bench["environment"]
    print(f"load average {env['load_before']} -> {env['load_after']}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
