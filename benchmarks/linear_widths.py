"""Speed of one linear layer by input and output width: why CoFi rounds widths (``round_to``).

    python benchmarks/linear_widths.py --threads 1

Each ``IN->OUT`` shape is timed interleaved with the others (best of ``--repeats``) on
``--tokens`` rows, the rows a batch of 32 inputs x 128 tokens feeds each linear layer.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SHAPES = ["384->384", "384->380", "384->440", "384->438", "380->256", "256->384", "256->380"]


def _shape(text: str) -> tuple[int, int]:
    left, sep, right = text.partition("->")
    if not sep or not left.isdigit() or not right.isdigit():
        raise argparse.ArgumentTypeError(f"expected IN->OUT, got '{text}'")
    return int(left), int(right)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", type=_shape, default=[_shape(s) for s in SHAPES],
                        help="IN->OUT widths (default: %(default)s)")  # fmt: skip
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    layers = {
        shape: (torch.randn(args.tokens, shape[0], generator=gen),
                torch.nn.Linear(*shape).eval())
        for shape in args.shapes
    }  # fmt: skip
    best = dict.fromkeys(args.shapes, float("inf"))
    with torch.inference_mode():
        for x, layer in layers.values():
            layer(x)
        for _ in range(args.repeats):
            for shape, (x, layer) in layers.items():
                start = time.perf_counter()
                layer(x)
                best[shape] = min(best[shape], time.perf_counter() - start)
    # four significant digits: a tiny layer on a loaded machine is well under 0.1 GFLOP/s
    rows = [
        {"in": i, "out": o, "ms": float(f"{best[(i, o)] * 1e3:.4g}"),
         "gflops": float(f"{2 * args.tokens * i * o / best[(i, o)] / 1e9:.4g}")}
        for i, o in args.shapes
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "tokens": args.tokens,
                          "rows": rows}, indent=2))  # fmt: skip
        return 0
    print(f"{args.tokens} tokens, {torch.get_num_threads()} thread(s), best of {args.repeats}")
    print("| in | out | ms | GFLOP/s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['in']} | {row['out']} | {row['ms']:.2f} | {row['gflops']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
