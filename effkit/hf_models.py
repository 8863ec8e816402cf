"""effkit models as transformers ``PreTrainedModel`` classes (see :mod:`effkit.auto`).

:class:`EffkitForSequenceClassification` and :class:`EffkitForTokenClassification` hold a model
:func:`effkit.load` read (``.effkit``) and call it: the logits are that model's, in its number
format. ``save_pretrained`` writes an effkit folder again. ``pipeline`` batches one input at a
time unless told otherwise; give a multiplexed model ``batch_size`` of at least its N.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from effkit.errors import ModelError
from effkit.hf_config import EffkitConfig


class _EffkitPreTrained(PreTrainedModel):
    """A loaded effkit model (``self.effkit``) as a transformers ``PreTrainedModel``."""

    config_class = EffkitConfig
    base_model_prefix = "effkit"
    main_input_name = "input_ids"
    output_class: type = SequenceClassifierOutput

    def __init__(self, config: EffkitConfig, model: Any = None) -> None:
        super().__init__(config)
        if model is None:
            raise ModelError(
                "an effkit model is loaded from its folder, not built from a config",
                hint="use from_pretrained(folder) or effkit.load(folder)",
            )
        self.effkit = model
        self.post_init()

    def init_weights(self) -> None:
        """Nothing to initialise: the wrapped model arrives with its trained weights."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """The effkit model's forward pass: its logits, one row per input, in input order."""
        outputs = self.effkit(input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids)  # fmt: skip
        if return_dict is False:
            return (outputs.logits,)
        return self.output_class(logits=outputs.logits)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """The folder (or hub repository) read by :func:`effkit.load`, wrapped for transformers.

        ``dtype`` (a torch dtype) casts the loaded model; ``device_map`` (one device) moves it;
        ``revision``, ``token`` and ``cache_dir`` reach the hub download.
        """
        from effkit.models import load

        folder = _local_folder(pretrained_model_name_or_path, kwargs)
        model = load(folder)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, torch.dtype):
            model.to(dtype)
        wrapped = cls(EffkitConfig.from_pretrained(str(folder)), model)
        device = kwargs.get("device_map")
        if isinstance(device, (str, torch.device, int)) and str(device) not in ("auto", ""):
            model.to(device)
        return wrapped.eval()

    @classmethod
    def _from_config(cls, config: Any, **kwargs: Any) -> Any:
        raise ModelError(
            "an effkit model is loaded from its folder, not built from a config",
            hint="use from_pretrained(folder) or effkit.load(folder)",
        )

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        """Save as an effkit folder (what :func:`effkit.save` writes)."""
        from effkit.models import save

        save(self.effkit, save_directory)

    def get_input_embeddings(self) -> Any:
        """The word embeddings of the wrapped encoder."""
        return self.effkit.hf.get_input_embeddings()


class EffkitForSequenceClassification(_EffkitPreTrained):
    """An effkit sequence classifier, as ``AutoModelForSequenceClassification`` loads it."""

    output_class = SequenceClassifierOutput


class EffkitForTokenClassification(_EffkitPreTrained):
    """An effkit token classifier, as ``AutoModelForTokenClassification`` loads it."""

    output_class = TokenClassifierOutput


def _local_folder(ref: Any, kwargs: dict[str, Any]) -> Path:
    """A local folder for ``ref``: itself, or a hub snapshot of it."""
    path = Path(str(ref))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                str(ref), revision=kwargs.get("revision"), token=kwargs.get("token"),
                cache_dir=kwargs.get("cache_dir"),
            )
        )  # fmt: skip
    except Exception as exc:
        raise ModelError(f"could not fetch the effkit model '{ref}': {exc}") from exc
