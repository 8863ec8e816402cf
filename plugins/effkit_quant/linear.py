"""An int8 linear layer whose state is plain tensors, run by torch's dynamic-quantization kernels.

torch's own ``torch.ao.nn.quantized.dynamic.Linear`` keeps its weights in an opaque packed
object that ``state_dict`` exposes as a Python tuple of quantized tensors: safetensors cannot
store it, and ``torch.ao.quantization`` is deprecated. :class:`Int8Linear` keeps what defines the
layer as ordinary tensors instead:

- ``qweight``: the int8 weights, ``[out, in]`` (a frozen parameter, so parameter counts agree
  with the float model);
- ``scale``: float32 scales, one per output row (per-channel) or one for the tensor;
- ``bias``: the float32 bias (frozen), or None.

Quantization is symmetric (zero point 0) over [-127, 127], which every engine accepts (QNNPACK
rejects -128). The kernels want a packed form of the weights; it is built from these tensors
on first use and dropped whenever they change (a state-dict load, ``.to()``), so a saved and
loaded layer packs the very same integers and scales and computes exactly the same outputs.
Activations are quantized per batch at run time (dynamic quantization), on the engine the
layer was packed for; x86/fbgemm use a 7-bit activation range (``reduce_range``), as torch's own
dynamic modules do, to avoid saturating 16-bit accumulation on CPUs without VNNI.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from effkit import ModelError

__all__ = ["Int8Linear", "available_engines", "quantize_weight", "resolve_engine"]

QMAX = 127
"""Largest magnitude of a quantized weight: a symmetric range that every engine accepts."""
REDUCED_RANGE_ENGINES = ("x86", "fbgemm")


def available_engines() -> list[str]:
    """Quantized engines this torch build has (``none`` excluded)."""
    return [e for e in torch.backends.quantized.supported_engines if e != "none"]


def resolve_engine(engine: str) -> str:
    """The engine ``engine`` names: ``auto`` is torch's current default on this machine."""
    engines = available_engines()
    if engine == "auto":
        current = str(torch.backends.quantized.engine)
        if current in engines:
            return current
        if not engines:
            raise ModelError("this torch build has no quantized CPU engine (fbgemm, qnnpack...)")
        return engines[0]
    if engine not in engines:
        raise ModelError(
            f"quantized engine '{engine}' is not available in this torch build",
            hint=f"available: {', '.join(engines) or 'none'}; or use engine: auto",
        )
    return engine


@contextmanager
def _engine(name: str) -> Iterator[None]:
    """Pack on ``name``: torch reads the engine from a process-wide setting when packing."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


@torch.no_grad()
def quantize_weight(weight: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weights and float32 scales (``[out]`` per channel, ``[1]`` per tensor)."""
    weight = weight.detach().float().cpu()
    peak = weight.abs().amax(dim=1) if per_channel else weight.abs().amax().reshape(1)
    scale = (peak / QMAX).clamp(min=torch.finfo(torch.float32).eps)
    divisor = scale[:, None] if per_channel else scale
    qweight = torch.round(weight / divisor).clamp(-QMAX, QMAX).to(torch.int8)
    return qweight, scale


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with int8 ``W`` (see the module docstring); runs on CPU, no training."""

    scale: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        per_channel: bool = True,
        engine: str = "auto",
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.per_channel = per_channel
        self.engine = resolve_engine(engine)
        self.qweight = nn.Parameter(
            torch.zeros(out_features, in_features, dtype=torch.int8), requires_grad=False
        )
        self.register_buffer("scale", torch.ones(out_features if per_channel else 1))
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._packed: Any = None

    @classmethod
    def from_float(cls, linear: nn.Linear, *, per_channel: bool, engine: str) -> Int8Linear:
        """The quantized counterpart of ``linear`` (its weights are read, not changed)."""
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            per_channel=per_channel,
            engine=engine,
        )
        qweight, scale = quantize_weight(linear.weight, per_channel)
        with torch.no_grad():
            layer.qweight.copy_(qweight)
            layer.scale.copy_(scale)
            if layer.bias is not None and linear.bias is not None:
                layer.bias.copy_(linear.bias.detach().float().cpu())
        return layer

    @property
    def reduce_range(self) -> bool:
        return self.engine in REDUCED_RANGE_ENGINES

    def dequantized_weight(self) -> torch.Tensor:
        """The float weights the int8 ones stand for (for comparisons and error measures)."""
        scale = self.scale[:, None] if self.per_channel else self.scale
        return self.qweight.float() * scale

    @torch.no_grad()
    def to_float(self) -> nn.Linear:
        """A float32 ``nn.Linear`` holding the weights these int8 ones stand for, and the bias
        (what an ONNX export traces, for ONNX Runtime to quantize again)."""
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None, device="meta"
        )
        linear.weight = nn.Parameter(self.dequantized_weight().cpu(), requires_grad=False)
        if self.bias is not None:
            bias = self.bias.detach().float().cpu().clone()
            linear.bias = nn.Parameter(bias, requires_grad=False)
        return linear.train(self.training)

    def _pack(self) -> Any:
        qweight = self.qweight.detach().cpu()
        scale = self.scale.detach().cpu()
        bias = None if self.bias is None else self.bias.detach().float().cpu().contiguous()
        with warnings.catch_warnings():
            # torch deprecates creating quantized tensors in favour of torchao; the kernels
            # themselves are what runs here, and they need one as input to packing.
            warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
            warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
            if self.per_channel:
                zeros = torch.zeros(self.out_features, dtype=torch.long)
                quantized = torch._make_per_channel_quantized_tensor(
                    qweight, scale.double(), zeros, 0
                )
            else:
                quantized = torch._make_per_tensor_quantized_tensor(qweight, float(scale[0]), 0)
            with _engine(self.engine):
                return torch.ops.quantized.linear_prepack(quantized, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ModelError(
                "int8-quantized layers run on CPU only",
                hint="benchmark and serve a quantized model with device cpu",
            )
        if torch.is_grad_enabled() and x.requires_grad:
            raise ModelError(
                "int8-quantized layers cannot be trained through",
                hint="put the quantize transform in the recipe's last stage",
            )
        if self._packed is None:
            self._packed = self._pack()
        out = torch.ops.quantized.linear_dynamic(x.float(), self._packed, self.reduce_range)
        return out.to(x.dtype)

    # ------------------------------------------------------------------ keep the pack current

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._packed = None

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        self._packed = None
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed"] = None  # rebuilt on first use; the packed object is engine-specific
        return state

    def extra_repr(self) -> str:
        granularity = "per-channel" if self.per_channel else "per-tensor"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, int8 {granularity}, engine={self.engine}"
        )
