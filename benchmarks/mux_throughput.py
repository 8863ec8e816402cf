"""Throughput of multiplexed models against the same backbone at N=1 (MUX-PLMs protocol).

For each N, the backbone is wrapped with ``Multiplex(n=N)`` and measured interleaved with the
unmultiplexed backbone in one process: a batch is 128 *inputs* of 128 tokens, so a model with
N=10 runs ceil(128/10) = 13 rows and its ceiling is 128/13 = 9.85x. Throughput depends on the
shapes, not on trained weights, so freshly initialised heads are measured.

    python benchmarks/mux_throughput.py                       # sequence classification
    python benchmarks/mux_throughput.py --task token-classification
    python benchmarks/mux_throughput.py --ns 2 5 --trials 5 --json mux.json
    python benchmarks/mux_throughput.py --task token-classification --mix-after 1

With ``--mix-after K`` the first K encoder layers run on every input on its own before the
group is mixed, so the ceiling drops to ``D * B / (K * N * rows + (D - K) * rows)`` for a
D-layer encoder (the embeddings, heads and demultiplexer left out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch
from common import header, protocol, protocol_arguments
from pydantic import ValidationError

from effkit.bench import benchmark, resolve_device
from effkit.errors import EffkitError
from effkit.models import load_model
from effkit.runner import stack
from effkit_mux import Multiplex


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:minilm-l6")
    parser.add_argument(
        "--task",
        default="sequence-classification",
        choices=["sequence-classification", "token-classification"],
    )
    parser.add_argument("--ns", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--mux", default="gaussian")
    parser.add_argument("--demux", default="rsa")
    parser.add_argument("--mix-after", type=int, default=0, metavar="K",
                        help="encoder layers run per input before mixing (default 0)")  # fmt: skip
    protocol_arguments(parser)
    args = parser.parse_args(argv)  # fmt: skip

    device = resolve_device(args.device)
    labels = ["O", "B-x", "I-x", "B-y", "I-y"]
    torch.manual_seed(0)
    try:
        models = {"N=1": load_model(args.model, task=args.task, labels=labels).to(device).eval()}
        for n in args.ns:
            base = load_model(args.model, task=args.task, labels=labels).eval()
            mux = Multiplex(n=n, mux=args.mux, demux=args.demux, mix_after=args.mix_after)
            models[f"N={n}"] = stack(base, [mux]).to(device).eval()
    except (EffkitError, ValidationError) as err:  # a bad --ns, --mux, --demux or --mix-after
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = protocol(args)
    reference = models["N=1"]
    result = benchmark(models, cfg, vocab_size=reference.vocab_size, baseline="N=1",
                       type_vocab_size=reference.type_vocab_size)  # fmt: skip
    data = result.to_dict()
    s = data["settings"]
    mixed = f", mix_after={args.mix_after}" if args.mix_after else ""
    print(header(data, f"{args.model}, {args.task}, mux={args.mux}, demux={args.demux}{mixed}"))
    depth = len(reference.encoder_layers())
    print()
    print("| N | rows per batch | samples/s | ratio | ceiling | share of ceiling |")
    print("|---|---|---|---|---|---|")
    for name, timing in data["timings"].items():
        n = int(name.split("=")[1])
        rows = math.ceil(s["batch_size"] / n)
        k = args.mix_after if n > 1 else 0
        ceiling = depth * s["batch_size"] / (k * n * rows + (depth - k) * rows)
        ratio = data["ratios"][name]
        print(f"| {n} | {rows} | {timing['samples_per_s']:.1f} | {ratio:.2f}x | "
              f"{ceiling:.2f}x | {ratio / ceiling:.3f} |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
