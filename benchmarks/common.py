"""What the benchmark scripts share: the protocol's options and the header of their tables."""

from __future__ import annotations

import argparse
from typing import Any

from effkit.bench import BenchConfig


def protocol_arguments(parser: argparse.ArgumentParser, *, trials: int = 3) -> None:
    """The benchmark protocol's options (batch of inputs, tokens, warm-up, trials...)."""
    parser.add_argument("--batch-size", type=int, default=128, help="inputs per batch")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per input")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up batches per model")
    parser.add_argument("--trials", type=int, default=trials, help="timed trials")
    parser.add_argument("--statistic", choices=["median", "best"], default="median",
                        help="report the median trial or the fastest one")  # fmt: skip
    parser.add_argument("--batches", type=int, default=None, help="batches per trial")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--json", dest="json_out", default=None, help="write every figure here")


def protocol(args: argparse.Namespace) -> BenchConfig:
    """The benchmark configuration the options describe."""
    return BenchConfig(
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        warmup=args.warmup,
        trials=args.trials,
        statistic=args.statistic,
        batches=args.batches,
        threads=args.threads,
        device=args.device,
    )


def header(data: dict[str, Any], what: str) -> str:
    """One line saying what was measured, where and how."""
    s, env = data["settings"], data["environment"]
    return (
        f"{what}; batch {s['batch_size']} inputs x {s['seq_len']} tokens on {s['device']} "
        f"({env.get('cuda_device') or env.get('cpu')}), {s['threads']} threads, warm-up "
        f"{s['warmup']}, {'fastest' if s.get('statistic') == 'best' else 'median'} of "
        f"{s['trials']} trials x {s['batches']} batches, "
        f"torch {env['torch']}"
    )
