"""Training speed under each mixed-precision setting, side by side, at N=1 and multiplexed.

A training step here is what a stage's step does: a forward pass under the trainer's autocast
(``accelerator.autocast()`` of the accelerator ``mixed_precision`` selects), the task's
cross-entropy, backward, gradient clipping and an AdamW update. Inputs are random token ids
and labels, since speed depends on shapes, not on data. Every configuration is timed in turn
within each trial, so they share the machine's state; the ratio is against full precision
(``no``) at the same N, without weight averaging. ``--ema`` adds each configuration again
with ``train.ema_decay``'s update of the weight average after every optimizer step.

    python benchmarks/train_speed.py                          # N=1 and N=5, no and bf16
    python benchmarks/train_speed.py --ns 1 2 --batch-size 32 --seq-len 64 --threads 2
    python benchmarks/train_speed.py --ns 1 2 --precisions no --batch-size 32 --ema

On CPUs with bfloat16 matrix units (AMX), ``mixed_precision: bf16`` in a recipe's ``train``
block uses them; ``auto`` keeps CPUs at full precision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch
from pydantic import ValidationError

from effkit.averaging import WeightAverage
from effkit.bench import environment
from effkit.errors import EffkitError
from effkit.models import EffkitModel, load_model
from effkit.objectives import task_loss
from effkit.runner import stack
from effkit.train import TrainConfig, accelerator_for, build_optimizer
from effkit_mux import Multiplex

PRECISIONS = ("no", "bf16", "fp16")


def build(model: str, n: int, mux: str) -> EffkitModel:
    """The backbone with a fresh 5-class head, multiplexed when ``n`` > 1, in training mode."""
    base = load_model(model, task="sequence-classification", labels=list("abcde"))
    built = base if n == 1 else stack(base, [Multiplex(n=n, mux=mux)])
    return built.train()


def time_steps(model: EffkitModel, precision: str, batch: dict[str, torch.Tensor],
               steps: int, ema: bool = False) -> float:  # fmt: skip
    """Seconds for ``steps`` optimizer steps of ``model`` under ``precision``."""
    accelerator = accelerator_for(precision)
    optimizer, _ = build_optimizer(model, [], TrainConfig(steps=steps, lr=1e-5))
    average = WeightAverage(model, decay=0.99) if ema else None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    began = time.perf_counter()
    for _ in range(steps):
        with accelerator.autocast():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = task_loss(logits.logits, batch["labels"])
        accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if average is not None:
            average.update(model)
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:minilm-l6")
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--mux", default="binary")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["no", "bf16"])
    parser.add_argument("--batch-size", type=int, default=80, help="inputs per step")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per input")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per trial")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--ema", action="store_true",
                        help="also time each configuration with weight averaging")  # fmt: skip
    parser.add_argument("--json", dest="json_out", default=None, help="write every figure here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "no" not in args.precisions:
        args.precisions = ["no", *args.precisions]  # the baseline of every ratio
    torch.manual_seed(0)
    device = accelerator_for("no").device
    try:
        models = {n: build(args.model, n, args.mux).to(device) for n in args.ns}
    except (EffkitError, ValidationError) as err:  # a bad --ns, --mux or --model
        print(f"error: {err}", file=sys.stderr)
        return 2
    vocab = models[args.ns[0]].vocab_size
    batch = {
        "input_ids": torch.randint(1000, vocab, (args.batch_size, args.seq_len)),
        "attention_mask": torch.ones(args.batch_size, args.seq_len, dtype=torch.long),
        "labels": torch.randint(0, 5, (args.batch_size,)),
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    averaging = [False, True] if args.ema else [False]
    configs = [(n, p, e) for n in args.ns for p in args.precisions for e in averaging]
    for n, precision, ema in configs:  # warm-up: one step each
        time_steps(models[n], precision, batch, 1, ema)
    seconds: dict[tuple[int, str, bool], list[float]] = {c: [] for c in configs}
    for _ in range(args.trials):
        for n, precision, ema in configs:
            seconds[(n, precision, ema)].append(
                time_steps(models[n], precision, batch, args.steps, ema)
            )
    rates = {c: args.batch_size * args.steps / statistics.median(s) for c, s in seconds.items()}

    print(f"{args.model}, mux={args.mux}; training steps of {args.batch_size} inputs x "
          f"{args.seq_len} tokens, {torch.get_num_threads()} threads, median of {args.trials} "
          f"trials x {args.steps} steps, torch {torch.__version__}")  # fmt: skip
    print()
    print("| N | mixed_precision | weight averaging | s per step | inputs/s "
          "| vs `no` at the same N |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rows: list[dict[str, Any]] = []
    for config in configs:
        n, precision, ema = config
        ratio = rates[config] / rates[(n, "no", False)]
        step_s = args.batch_size / rates[config]
        print(f"| {n} | {precision} | {'yes' if ema else 'no'} | {step_s:.3f} | "
              f"{rates[config]:.1f} | {ratio:.2f}x |")  # fmt: skip
        rows.append({"n": n, "mixed_precision": precision, "ema": ema,
                     "inputs_per_s": rates[config], "trial_seconds": seconds[config],
                     "ratio": ratio})  # fmt: skip
    if args.json_out:
        data = {"settings": vars(args), "environment": environment(device), "rows": rows}
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
