"""Int8 quantization for CPU inference: ``Quantize(scheme="dynamic-int8")``.

Every ``nn.Linear`` of the model (encoder, pooler, a multiplexing adapter's demultiplexer) gets
int8 weights with float32 scales (:class:`~effkit_quant.linear.Int8Linear`); activations are
quantized per batch at run time by torch's quantized CPU kernels (fbgemm/x86, or QNNPACK on
ARM). Embeddings, LayerNorms and attention arithmetic stay float32. It works on any model
effkit builds, pruned (per-layer head counts and widths are read from the modules) or
multiplexed, because it only looks at ``nn.Linear`` modules wherever they are.

Not quantized, each reported by :meth:`Quantize.describe`:

- modules whose name matches ``skip`` (default: the task head ``hf.classifier``, a few thousand
  weights whose rounding would cost accuracy for no speed);
- a linear layer whose weight is tied to another module (a vocabulary projection sharing the
  word embeddings), or one module reachable under two names: quantizing one copy would untie it;
- linear layers inside torch's ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
  (the contextual multiplexer), which read their sub-layers' weights directly.

The change happens in :meth:`Quantize.finalize`, at the end of its stage: a stage with training
steps fine-tunes in float32 first. A quantized model cannot be trained further, so quantize
belongs in a recipe's last stage (``train: {steps: 0}``). The saved model stores the int8
weights, scales and biases as ordinary tensors in ``effkit.safetensors``; :meth:`Quantize.state`
records which layers were quantized and on which engine, and :meth:`Quantize.rebuild` puts empty
int8 layers in their place before the weights load, so the loaded model computes exactly what
the saved one did.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any, Literal

import torch
from pydantic import Field, PrivateAttr
from torch import nn

from effkit import EffkitModel, ExportGraph, ModelError, ModelFacts, StageContext, Transform

from .linear import Int8Linear, available_engines, quantize_weight, resolve_engine

__all__ = ["Int8Linear", "Quantize", "quantize_weight"]

log = logging.getLogger(__name__)

DEFAULT_SKIP = ("hf.classifier", "hf.classifier.*")
OPAQUE_PARENTS: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)
"""torch modules whose forward reads their linear sub-layers' weights directly."""


def _parent_and_attr(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, attr = _parent_and_attr(model, name)
    setattr(parent, attr, module)


def _weight_bytes(module: nn.Module) -> int:
    if isinstance(module, Int8Linear):
        return module.qweight.numel() + module.scale.numel() * module.scale.element_size()
    weight = getattr(module, "weight", None)
    return int(weight.numel() * weight.element_size()) if weight is not None else 0


def float_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every :class:`Int8Linear` replaced by the float ``nn.Linear`` it
    stands for (:meth:`Int8Linear.to_float`); ``module`` is left as it is.

    The copy shares every other parameter, buffer and non-module attribute (a tokenizer) with
    the original, so it costs only the float weights of the int8 layers.
    """
    memo: dict[int, Any] = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    for sub in module.modules():
        for value in vars(sub).values():
            if not isinstance(value, (nn.Module, dict, list, tuple, torch.Tensor)):
                memo[id(value)] = value  # shared, not copied: the tokenizer, configs
    copy = deepcopy(module, memo)
    for name, sub in list(copy.named_modules()):
        if isinstance(sub, Int8Linear):
            if name:
                _replace(copy, name, sub.to_float())
            else:
                return sub.to_float()
    return copy


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds int8 layers."""
    return any(isinstance(module, Int8Linear) for module in model.modules())


class Quantize(Transform):
    """Int8 weights for the linear layers, dynamic int8 activations: faster CPU inference."""

    scheme: Literal["dynamic-int8"] = Field(
        "dynamic-int8",
        description="dynamic-int8: int8 weights, activations quantized per batch at run time "
        "(torch's quantized CPU kernels).",
    )
    granularity: Literal["per-channel", "per-tensor"] = Field(
        "per-channel", description="One weight scale per output row (more accurate) or per layer."
    )
    engine: Literal["auto", "x86", "fbgemm", "qnnpack", "onednn"] = Field(
        "auto",
        description="Quantized CPU engine the weights are packed for; auto: torch's default here "
        "(x86 on Intel/AMD, qnnpack on ARM).",
    )
    skip: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SKIP),
        description="Glob patterns of module names left in float32 (names as in "
        "model.named_modules(), e.g. hf.classifier, adapter.demultiplexer.*).",
    )

    _layers: list[str] = PrivateAttr(default_factory=list)
    _skipped: dict[str, str] = PrivateAttr(default_factory=dict)
    _engine: str | None = PrivateAttr(None)
    _bytes: dict[str, int] = PrivateAttr(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle

    def export_graph(self, model: EffkitModel, graph: ExportGraph) -> ExportGraph:
        """The graph with float layers holding the dequantized weights, quantized again by ONNX
        Runtime once written (torch's int8 CPU kernels have no ONNX translation)."""
        scheme = "dynamic-int8" if self.granularity == "per-channel" else "dynamic-int8-per-tensor"
        return replace(graph, module=float_copy(graph.module), onnx_quantize=scheme)

    def check(self, facts: ModelFacts) -> None:
        if facts.number_format == "int8":
            raise ModelError("quantize: the model is already quantized; quantize applies once")
        if facts.number_format != "float32":
            raise ModelError(
                f"quantize: the model is stored in {facts.number_format}; int8 and "
                f"{facts.number_format} are two number formats for one model",
                hint="choose one: remove the quantize transform or the precision transform",
            )
        resolve_engine(self.engine)
        facts.number_format = "int8"

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Check early (before the stage trains) that the model and the engine can be used."""
        if is_quantized(model):
            raise ModelError("quantize: the model is already quantized; quantize applies once")
        self._engine = resolve_engine(self.engine)
        return model

    def finalize(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Replace the chosen linear layers by int8 ones (the model moves to the CPU)."""
        engine = self._engine or resolve_engine(self.engine)
        if model.device.type != "cpu":
            log.info("quantize: moving the model to the CPU, where int8 kernels run")
            model.to("cpu")
        chosen, skipped = self._select(model)
        before = after = 0
        for name in chosen:
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            layer = Int8Linear.from_float(
                linear, per_channel=self.granularity == "per-channel", engine=engine
            )
            layer.train(linear.training)
            before += _weight_bytes(linear)
            after += _weight_bytes(layer)
            _replace(model, name, layer)
        if not chosen:
            raise ModelError("quantize: the model has no linear layer left to quantize",
                             hint=f"skipped: {skipped}")  # fmt: skip
        self._engine, self._layers, self._skipped = engine, chosen, skipped
        self._bytes = {"linear_weight_bytes_before": before, "linear_weight_bytes_after": after}
        return model

    def _select(self, model: EffkitModel) -> tuple[list[str], dict[str, str]]:
        """The linear layers to quantize, and why each other linear layer is left alone."""
        paths: dict[int, int] = {}
        for _, module in model.named_modules(remove_duplicate=False):
            paths[id(module)] = paths.get(id(module), 0) + 1
        owners: dict[int, int] = {}
        for module in {id(m): m for m in model.modules()}.values():
            for param in module.parameters(recurse=False):
                owners[id(param)] = owners.get(id(param), 0) + 1
        opaque = [n for n, m in model.named_modules() if isinstance(m, OPAQUE_PARENTS)]
        chosen: list[str] = []
        skipped: dict[str, str] = {}
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            if any(name.startswith(prefix + ".") for prefix in opaque):
                skipped[name] = "inside a torch attention/transformer module"
            elif type(module) is not nn.Linear:
                skipped[name] = f"a {type(module).__name__}, not a plain nn.Linear"
            elif any(fnmatchcase(name, pattern) for pattern in self.skip):
                skipped[name] = "matches skip"
            elif paths[id(module)] > 1:
                skipped[name] = "reachable under several names"
            elif owners[id(module.weight)] > 1:
                skipped[name] = "weight tied to another module"
            else:
                chosen.append(name)
        return chosen, skipped

    # ------------------------------------------------------------------ saved structure

    def describe(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "granularity": self.granularity,
            "engine": self._engine,
            "layers_quantized": len(self._layers),
            "skipped": dict(self._skipped),
            **self._bytes,
        }

    def state(self) -> dict[str, Any]:
        return {
            "engine": self._engine,
            "layers": list(self._layers),
            "skipped": dict(self._skipped),
            "bytes": dict(self._bytes),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        layers = state.get("layers")
        if not isinstance(layers, list) or not layers or not state.get("engine"):
            raise ModelError("quantize: the saved state lacks the quantized layers or the engine")
        self._layers = [str(name) for name in layers]
        self._engine = str(state["engine"])
        self._skipped = {str(k): str(v) for k, v in dict(state.get("skipped", {})).items()}
        self._bytes = {str(k): int(v) for k, v in dict(state.get("bytes", {})).items()}

    def rebuild(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Put empty int8 layers where the saved model has them; the weights load afterwards."""
        if not self._layers or self._engine is None:
            raise ModelError("quantize: nothing recorded to rebuild (load_state first)")
        engine = self._engine
        if engine not in available_engines():
            engine = resolve_engine("auto")
            log.warning(
                "quantize: the model was packed for the '%s' engine, which this torch lacks; "
                "using '%s' (outputs may differ slightly from the saved model's)",
                self._engine, engine,
            )  # fmt: skip
        for name in self._layers:
            try:
                linear = model.get_submodule(name)
            except AttributeError as exc:
                raise ModelError(
                    f"quantize: the saved model quantized '{name}', which the rebuilt model "
                    "lacks; a transform before it changed the structure"
                ) from exc
            if type(linear) is not nn.Linear:
                raise ModelError(
                    f"quantize: '{name}' is a {type(linear).__name__} in the rebuilt model, "
                    "not the nn.Linear the saved model quantized"
                )
            layer = Int8Linear(
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                per_channel=self.granularity == "per-channel",
                engine=engine,
            )
            _replace(model, name, layer)
        return model
