"""Int8 dynamic quantization against float32, and ONNX Runtime against PyTorch, on CPU.

Builds all-MiniLM-L6-v2 (N=1) in float32 and with ``Quantize()`` (int8 weights of every encoder
linear layer, dynamic int8 activations), plus the same pair for each saved model folder given
on the command line (a multiplexed or pruned model, say), and measures them interleaved
against the float32 MiniLM (batch of 128 inputs x 128 tokens by default). Next to speed it
reports how far the int8 logits move on the benchmark's own random inputs (largest absolute
difference, share of equal argmax), which is only a proxy: score a quantized recipe on its task
for the accuracy cost.

With onnx, onnxscript and onnxruntime installed (``pip install 'effkit[onnx]'``) it also
exports the float32 MiniLM to ONNX and times ONNX Runtime against PyTorch on the same inputs,
and the graph quantized by ``onnxruntime.quantization.quantize_dynamic`` (int8 MatMuls), which
is how a quantized model reaches ONNX.

    python benchmarks/quant_speedup.py --threads 1 --trials 3 --batches 1 [MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import header, protocol, protocol_arguments

from effkit.bench import benchmark, low_id_for, make_inputs, measure
from effkit.models import EffkitModel, load, load_model
from effkit.runner import stack
from effkit_quant import Quantize


def quantized(model: EffkitModel, granularity: str) -> tuple[EffkitModel, dict[str, Any]]:
    """An int8 copy of ``model`` and what the quantization did."""
    transform = Quantize(granularity=granularity)
    return stack(copy.deepcopy(model), [transform]).eval(), transform.describe()


@torch.inference_mode()
def drift(reference: EffkitModel, other: EffkitModel, inputs: dict[str, torch.Tensor]) -> dict:
    """How far ``other``'s logits are from ``reference``'s on the same inputs."""
    expected, got = reference(**inputs).logits.float(), other(**inputs).logits.float()
    return {
        "max_abs_diff": float((got - expected).abs().max()),
        "argmax_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
    }


def onnx_rows(model: EffkitModel, cfg: Any, inputs: dict[str, torch.Tensor]) -> list[dict]:
    """ONNX Runtime (float32 and int8 graphs) against PyTorch float32, interleaved."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from effkit.export import export_onnx, input_names, onnx_runner, onnx_session

    resolved = cfg.resolved(torch.device("cpu"))
    folder = Path(tempfile.mkdtemp(prefix="effkit-onnx-"))
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    report = export_onnx(model, fp32, batch_size=4, seq_len=32)
    logging.disable(logging.WARNING)  # its advice to pre-process the graph first
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    feed = {k: v for k, v in inputs.items() if k in input_names(model)}
    callables = {
        "pytorch fp32": model,
        "onnxruntime fp32": onnx_runner(onnx_session(fp32)),
        "onnxruntime int8": onnx_runner(onnx_session(int8)),
    }
    timings = measure(callables, feed, warmup=resolved.warmup, trials=resolved.trials,
                      batches=resolved.batches, device=torch.device("cpu"))  # fmt: skip
    with torch.inference_mode():
        expected = model(**feed).logits.float()
    rows = []
    for name, timing in timings.items():
        with torch.inference_mode():
            out = callables[name](**feed)
        got = torch.as_tensor(out.logits if hasattr(out, "logits") else out).float()
        rows.append({
            "name": name,
            "samples_per_s": timing.samples_per_s,
            "ratio": timing.samples_per_s / timings["pytorch fp32"].samples_per_s,
            "max_abs_diff": float((got - expected).abs().max()),
            "size_mb": round((fp32 if "fp32" in name else int8).stat().st_size / 2**20, 1)
            if name.startswith("onnx") else None,
        })  # fmt: skip
    rows[0]["check"] = report["check"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    protocol_arguments(parser)
    parser.add_argument("models", nargs="*", help="saved model folders to compare as well")
    parser.add_argument(
        "--granularity", default="per-channel", choices=["per-channel", "per-tensor"]
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime part")
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cpu"):
        parser.error("int8 kernels run on the CPU: use --device cpu")
    args.device = "cpu"

    torch.manual_seed(0)
    base = load_model("builtin:minilm-l6", num_labels=5).eval()
    models: dict[str, EffkitModel] = {"minilm fp32": base}
    facts: dict[str, Any] = {}
    models["minilm int8"], facts["minilm int8"] = quantized(base, args.granularity)
    for folder in args.models:
        name = Path(folder).name
        models[f"{name} fp32"] = load(folder)
        models[f"{name} int8"], facts[f"{name} int8"] = quantized(models[f"{name} fp32"],
                                                                  args.granularity)  # fmt: skip

    cfg = protocol(args)
    result = benchmark(models, cfg, vocab_size=base.vocab_size, baseline="minilm fp32",
                       type_vocab_size=base.type_vocab_size)  # fmt: skip
    data = result.to_dict()
    inputs = make_inputs(cfg.batch_size, cfg.seq_len, base.vocab_size, device=torch.device("cpu"),
                         type_vocab_size=base.type_vocab_size,
                         low_id=low_id_for(base.vocab_size))  # fmt: skip
    for name in models:
        if name.endswith(" int8"):
            facts[name].update(drift(models[name.replace(" int8", " fp32")], models[name], inputs))

    print(header(data, f"all-MiniLM-L6-v2, int8 {args.granularity}"))
    print()
    print("| model | linear weights MB | samples/s | vs minilm fp32 | max abs logit diff "
          "| argmax agreement |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, timing in data["timings"].items():
        fact = facts.get(name, {})
        size = fact.get("linear_weight_bytes_after")
        if size is None:
            size = facts.get(name.replace(" fp32", " int8"), {}).get("linear_weight_bytes_before")
        diff = fact.get("max_abs_diff")
        agree = fact.get("argmax_agreement")
        print(f"| {name} | {size / 2**20:.1f} | {timing['samples_per_s']:.1f} | "
              f"{data['ratios'][name]:.2f}x | {'-' if diff is None else f'{diff:.4f}'} | "
              f"{'-' if agree is None else f'{agree:.3f}'} |")  # fmt: skip

    onnx: list[dict] | str
    ready = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
    if args.no_onnx:
        onnx = "skipped (--no-onnx)"
    elif not ready:
        onnx = "skipped: onnx, onnxscript and onnxruntime are not all installed"
        print(f"\nONNX Runtime: {onnx} (pip install 'effkit[onnx]')")
    else:
        onnx = onnx_rows(base, cfg, inputs)
        print("\n| runtime | samples/s | vs pytorch fp32 | max abs logit diff | file MB |")
        print("|---|---|---|---|---|")
        for row in onnx:
            size = "-" if row["size_mb"] is None else row["size_mb"]
            print(f"| {row['name']} | {row['samples_per_s']:.1f} | {row['ratio']:.2f}x | "
                  f"{row['max_abs_diff']:.2g} | {size} |")  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"bench": data, "quantize": facts, "onnx": onnx}, handle, indent=2,
                      default=str)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
