"""effkit folders in transformers: ``AutoModelFor...from_pretrained(folder)`` and ``pipeline``.

A folder effkit saves carries a ``config.json`` of model type ``effkit``
(:class:`EffkitConfig`: the labels, the task and the transformers config of the model before
its transforms). ``import effkit`` registers that type with transformers' Auto classes, so that

.. code-block:: python

    import effkit
    from transformers import AutoModelForSequenceClassification, pipeline

    model = AutoModelForSequenceClassification.from_pretrained("runs/mux2/final")
    classify = pipeline("text-classification", model="runs/mux2/final")

give the model :func:`effkit.load` gives, wrapped as a ``PreTrainedModel``
(:mod:`effkit.hf_models`): the same structure, weights and logits, whatever the stack (pruned,
layer-dropped, multiplexed, half precision, int8). Loading goes through :func:`effkit.load`: no
remote code, no ``trust_remote_code``; a saved transform is rebuilt only by a registered plugin.

Without ``import effkit``, transformers refuses such a folder (model type ``effkit`` is not one
it knows) instead of reading it as random weights, and the weights file is named
``effkit.safetensors`` so that no stock class picks it up either. ``effkit export --format hf``
writes a folder of stock transformers classes for the stacks whose shapes fit them.

The registration is light: the Auto classes get small stand-ins whose ``from_pretrained``
imports the ``PreTrainedModel`` wrappers only when a folder is actually loaded.
"""

from __future__ import annotations

import functools
from typing import Any

from effkit.hf_config import MODEL_TYPE, SEQUENCE_MODEL, TOKEN_MODEL, EffkitConfig


def _stand_in(name: str) -> type:
    """A class the Auto mapping can hold that loads :mod:`effkit.hf_models`' ``name`` lazily."""

    def from_pretrained(cls: type, path: Any, *args: Any, **kwargs: Any) -> Any:
        from effkit import hf_models

        return getattr(hf_models, name).from_pretrained(path, *args, **kwargs)

    def from_config(cls: type, config: Any, **kwargs: Any) -> Any:
        from effkit import hf_models

        return getattr(hf_models, name)._from_config(config, **kwargs)

    return type(
        name,
        (),
        {
            "__doc__": f"Loads :class:`effkit.hf_models.{name}` when first used.",
            "__module__": __name__,
            "config_class": EffkitConfig,
            "from_pretrained": classmethod(from_pretrained),
            "_from_config": classmethod(from_config),
        },
    )


@functools.cache
def register() -> None:
    """Register the ``effkit`` model type with transformers' Auto classes (once)."""
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    AutoConfig.register(MODEL_TYPE, EffkitConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(
        EffkitConfig, _stand_in(SEQUENCE_MODEL), exist_ok=True
    )
    AutoModelForTokenClassification.register(EffkitConfig, _stand_in(TOKEN_MODEL), exist_ok=True)
