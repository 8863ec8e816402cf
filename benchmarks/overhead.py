"""effkit's own overhead: the same encoder called through effkit and called directly.

Loads the packaged all-MiniLM-L6-v2 twice, once as an effkit model (``load_model``) and once as
a plain transformers ``AutoModelForSequenceClassification``, and measures both with the
benchmark protocol (interleaved, same process, same inputs). Prints a Markdown table and, with
``--json``, writes every figure with its environment.

    python benchmarks/overhead.py                      # CPU defaults
    python benchmarks/overhead.py --trials 5 --batches 4 --json overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys

from common import header, protocol, protocol_arguments
from transformers import AutoModelForSequenceClassification

from effkit.bench import benchmark, resolve_device
from effkit.models import load_model, minilm_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    protocol_arguments(parser, trials=5)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    effkit_model = load_model("builtin:minilm-l6", num_labels=5).to(device).eval()
    direct = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=5)
    direct = direct.to(device).eval()
    direct.load_state_dict(effkit_model.hf.state_dict())  # identical weights, identical work
    cfg = protocol(args)
    result = benchmark(
        {"transformers": direct, "effkit": effkit_model},
        cfg,
        vocab_size=effkit_model.vocab_size,
        baseline="transformers",
        type_vocab_size=effkit_model.type_vocab_size,
    )
    data = result.to_dict()
    print(header(data, "all-MiniLM-L6-v2"))
    print()
    print("| called as | samples/s | ms/batch | ratio |")
    print("|---|---|---|---|")
    for name, timing in data["timings"].items():
        print(f"| {name} | {timing['samples_per_s']:.1f} | {timing['latency_ms']:.1f} | "
              f"{data['ratios'][name]:.3f} |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    overhead = 1 - data["ratios"]["effkit"]
    print(f"\neffkit overhead: {overhead:+.2%} of throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
