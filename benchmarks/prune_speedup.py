"""Physical speedup of pruned models against the unpruned one, with multiplexing on top.

Builds all-MiniLM-L6-v2 and, from it:

- ``cofi-0.6``: CoFi masks set to keep the same share of heads and FFN dimensions in every layer
  (5 of 12 heads, 40% of the FFN) and finalized, which removes the rest for real: 0.6 sparsity
  over the encoder's attention and FFN parameters, counted as CoFi counts;
- ``oneshot-0.5``: ``OneShotPrune(ratio=0.5)`` (half the heads and FFN channels, by magnitude);
- ``mux2`` and ``mux2+cofi-0.6``: the same with ``Multiplex(n=2)`` underneath;

and measures them interleaved with the unpruned N=1 model (batch of 128 inputs x 128 tokens).
Speed depends on shapes, not on trained values, so the masks are set rather than trained.

    python benchmarks/prune_speedup.py --threads 1 --trials 3 --batches 1
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from common import header, protocol, protocol_arguments

from effkit import StageContext
from effkit.bench import benchmark, resolve_device
from effkit.models import EffkitModel, load_model
from effkit.runner import stack
from effkit_cofi import CoFiPrune
from effkit_mux import Multiplex
from effkit_torchprune import OneShotPrune

KEEP, DROP = 4.0, -10.0


def cofi(model: EffkitModel, heads_kept: int, ffn_share: float) -> tuple[EffkitModel, dict]:
    """Finalize CoFi with masks that keep ``heads_kept`` heads and ``ffn_share`` of the FFN."""
    transform = CoFiPrune(sparsity=0.6, mha_layers=False, ffn_layers=False, hidden=False)
    ctx = StageContext(stage="bench", tokenizer=model.tokenizer)
    model = transform.apply(model, ctx)
    masks = model.cofi_masks
    with torch.no_grad():
        for param in masks.head_log_alpha.values():
            param.fill_(DROP)
            param[:heads_kept] = KEEP
        for param in masks.ffn_dim_log_alpha.values():
            param.fill_(DROP)
            param[: int(ffn_share * param.numel())] = KEEP
    model = transform.finalize(model.eval(), ctx)
    return model, transform.describe()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    protocol_arguments(parser)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    torch.manual_seed(0)

    def fresh() -> EffkitModel:
        return load_model("builtin:minilm-l6", num_labels=5).eval()

    facts: dict[str, dict] = {}
    models: dict[str, EffkitModel] = {"unpruned": fresh()}
    models["cofi-0.6"], facts["cofi-0.6"] = cofi(fresh(), heads_kept=5, ffn_share=0.4)
    oneshot = OneShotPrune(ratio=0.5)
    models["oneshot-0.5"] = stack(fresh(), [oneshot])
    facts["oneshot-0.5"] = oneshot.describe()
    models["mux2"] = stack(fresh(), [Multiplex(n=2)]).eval()
    mux_cofi, facts["mux2+cofi-0.6"] = cofi(stack(fresh(), [Multiplex(n=2)]), 5, 0.4)
    models["mux2+cofi-0.6"] = mux_cofi
    for model in models.values():
        model.to(device).eval()

    cfg = protocol(args)
    base = models["unpruned"]
    result = benchmark(models, cfg, vocab_size=base.vocab_size, baseline="unpruned",
                       type_vocab_size=base.type_vocab_size)  # fmt: skip
    data = result.to_dict()
    print(header(data, "all-MiniLM-L6-v2"))
    print()
    print("| model | sparsity (CoFi count) | encoder params | samples/s | vs unpruned N=1 |")
    print("|---|---|---|---|---|")
    for name, timing in data["timings"].items():
        fact = facts.get(name, {})
        sparsity = fact.get("sparsity")
        encoder = fact.get("encoder_parameters_after") or fact.get("encoder_parameters", {})
        if isinstance(encoder, dict):
            encoder = encoder.get("after", "")
        encoder = encoder or sum(p.numel() for p in models[name].base.encoder.parameters())
        shown = "-" if sparsity is None else f"{sparsity:.3f}"
        print(f"| {name} | {shown} | {encoder:,} | {timing['samples_per_s']:.1f} | "
              f"{data['ratios'][name]:.2f}x |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"bench": data, "transforms": facts}, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
