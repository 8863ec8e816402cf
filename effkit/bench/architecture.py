"""Whether two models share one architecture, so that one runs exactly the other's work.

Two models have the same architecture when they have the same parameters and buffers (names,
shapes, dtypes), the same modules (names and types), the same attention implementation and the
same transform history (each transform's name and configuration). A fine-tuned model and the
model it started from are the usual case: the same computation on other weights, so their
throughput ratio is 1.0 by construction and a measured ratio away from 1.0 is the machine's
noise. Anything that is not a ``torch.nn.Module`` (an ONNX Runtime session, say) has no
architecture this module can read, and is never the same as anything.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from effkit.storage import stable_hash


def _kind(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _transforms(model: nn.Module) -> list[Any]:
    history = []
    for transform in getattr(model, "transforms", None) or []:
        name = getattr(transform, "registered_name", None)
        dump = getattr(transform, "model_dump", None)
        history.append(
            [
                name() if callable(name) else _kind(transform),
                dump(mode="json") if callable(dump) else repr(transform),
            ]
        )
    return history


def architecture(model: Any) -> dict[str, Any] | None:
    """What makes ``model``'s computation: tensors, modules, attention, transforms; None when
    ``model`` is not a module."""
    if not isinstance(model, nn.Module):
        return None
    tensors = [
        [name, list(tensor.shape), str(tensor.dtype)]
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    ]
    modules = [[name, _kind(module)] for name, module in model.named_modules()]
    config = getattr(getattr(model, "hf", model), "config", None)
    return {
        "tensors": tensors,
        "modules": modules,
        "attention": getattr(config, "_attn_implementation", None),
        "transforms": _transforms(model),
    }


def architecture_key(model: Any) -> str | None:
    """A hash of :func:`architecture` (stored beside a figure); None when it has none."""
    facts = architecture(model)
    return None if facts is None else stable_hash(facts)


def same_architecture(first: Any, second: Any) -> bool:
    """Whether ``first`` and ``second`` have the same architecture (see the module docstring)."""
    key = architecture_key(first)
    return key is not None and key == architecture_key(second)
