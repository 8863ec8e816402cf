"""Half precision for inference: ``Precision(dtype="bf16")`` (or ``"fp16"``).

At the end of its stage the transform casts every floating-point weight and buffer of the model
(encoder, task head, a multiplexing adapter) to bfloat16 or float16, so that the matrix
products run in the CPU's or GPU's half-precision units and the saved file is half the size.
Integer buffers (position ids) stay as they are. A stage with training steps fine-tunes in
float32 first, as ``quantize`` does; put it in the last stage of a recipe
(``train: {steps: 0}``) or after the last one that trains.

Where it pays:

- on a GPU, fp16 and bf16 are the first thing anyone does (tensor cores);
- on an x86 CPU, bf16 runs on AVX512-BF16 / AMX units (Intel Cooper Lake, Sapphire Rapids and
  later, AMD Zen 4 and later) through oneDNN; fp16 needs AVX512-FP16 / AMX-FP16. On a CPU
  without the units the model still runs, emulated and slower than float32: the transform says
  so in one log line, and ``effkit bench`` shows it.

Stacks with everything that leaves floating-point weights (multiplexing, CoFi, one-shot
pruning, keep-layers, distillation), in the order a recipe gives; int8 weights (``quantize``)
are a different number format and are refused. The logits come out in the half type; effkit's
inference, metrics and export read them as float32.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import Field, PrivateAttr

from effkit import EffkitModel, ModelError, ModelFacts, StageContext, Transform, native_half

__all__ = ["DTYPES", "Precision"]

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The recipe's names of the half types."""


def _integer_weights(model: EffkitModel) -> list[str]:
    """Names of int8/uint8 tensors: weights a quantization already packed."""
    small_ints = (torch.int8, torch.uint8, torch.qint8, torch.quint8)
    return [name for name, tensor in model.state_dict().items() if tensor.dtype in small_ints]


class Precision(Transform):
    """Cast the model's floating-point weights to bf16 or fp16 for faster inference."""

    dtype: Literal["bf16", "fp16"] = Field(
        "bf16",
        description="bf16 (CPUs with AVX512-BF16/AMX, Ampere and later GPUs) or fp16 (any CUDA "
        "GPU; CPUs with AVX512-FP16).",
    )

    _cast: int = PrivateAttr(0)
    _native: bool | None = PrivateAttr(None)
    _device: str = PrivateAttr("cpu")

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of :attr:`dtype`."""
        return DTYPES[self.dtype]

    def check(self, facts: ModelFacts) -> None:
        if facts.number_format == "int8":
            raise ModelError(
                f"precision: the model holds int8 weights; int8 and {self.dtype} are two number "
                "formats for one model",
                hint="choose one: remove the quantize transform or the precision transform",
            )
        if facts.number_format != "float32":
            raise ModelError(
                f"precision: the model is already in {facts.number_format}; precision applies "
                "once, to a float32 model"
            )
        facts.number_format = self.dtype

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Check before the stage trains that the model can be cast."""
        packed = _integer_weights(model)
        if packed:
            raise ModelError(
                f"precision: the model holds int8 weights ({packed[0]}, ...); int8 and "
                f"{self.dtype} are two number formats for one model",
                hint="choose one: remove the quantize transform or the precision transform",
            )
        current = {p.dtype for p in model.parameters() if p.is_floating_point()}
        if current - {torch.float32}:
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in current))
            raise ModelError(
                f"precision: the model is already in {names}; precision applies once, to a "
                "float32 model"
            )
        return model

    def finalize(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Cast every floating-point parameter and buffer; say once if it will be slow here."""
        self._cast = sum(p.numel() for p in model.parameters() if p.is_floating_point())
        model.to(self.torch_dtype)
        self._device = str(model.device)
        self._native = native_half(self.dtype, model.device)
        if not ctx.rebuilding:
            self.warn_if_emulated(model.device)
        return model

    def warn_if_emulated(self, device: torch.device | str) -> None:
        """One log line when ``device`` has no native units for :attr:`dtype`."""
        if native_half(self.dtype, device) is False:
            log.warning(
                "precision: this %s has no native %s units; the model runs %s emulated, "
                "slower than float32 here (it pays on hardware that has them)",
                torch.device(device).type.upper(),
                self.dtype,
                self.dtype,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "parameters_cast": self._cast,
            "native_on": {self._device: self._native},
        }
