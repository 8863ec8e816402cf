"""The ``config.json`` of an effkit folder: model type ``effkit`` (see :mod:`effkit.auto`)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

MODEL_TYPE = "effkit"
WEIGHTS = "effkit.safetensors"
"""The weights file of an effkit folder (format 2 on)."""

SEQUENCE_MODEL = "EffkitForSequenceClassification"
TOKEN_MODEL = "EffkitForTokenClassification"


class EffkitConfig(PretrainedConfig):
    """The ``config.json`` of an effkit folder.

    ``source_config`` is the transformers config (a dict) the model was built from before any
    transform, ``task_type`` its task; labels are the usual ``id2label`` / ``label2id``. What
    the transforms changed is recorded in ``effkit.json`` beside it.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        source_config: dict[str, Any] | None = None,
        task_type: str = "sequence-classification",
        **kwargs: Any,
    ) -> None:
        self.source_config = dict(source_config or {})
        self.task_type = task_type
        super().__init__(**kwargs)


def hf_config(model: Any) -> EffkitConfig:
    """The ``config.json`` :func:`effkit.save` writes for ``model`` (an ``EffkitModel``)."""
    from effkit.task import REGRESSION, TOKEN

    labels = list(model.task.labels or [])
    extra = {"problem_type": "regression"} if model.task.type == REGRESSION else {}
    return EffkitConfig(
        source_config=model.source_config.to_dict(),
        task_type=model.task.type,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        architectures=[TOKEN_MODEL if model.task.type == TOKEN else SEQUENCE_MODEL],
        **extra,
    )


def source_config(config: dict[str, Any]) -> Any:
    """The transformers config object of a saved ``source_config`` dict."""
    from transformers import AutoConfig

    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if not model_type:
        from effkit.errors import ModelError

        raise ModelError("the saved config.json names no model_type in its source_config")
    return AutoConfig.for_model(model_type, **fields)
