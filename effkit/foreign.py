"""Checkpoints in other projects' layouts: readers that plugins provide, found by entry point.

A checkpoint folder (or hub repository) whose ``config.json`` a plain transformers class cannot
read as it is (a research project's model class around a transformers encoder, with its own
extra modules) may still be a model effkit can run. A plugin provides a *reader* for such a
layout under the ``effkit.checkpoints`` entry-point group: a class (or object) with

- ``claims(config: dict) -> bool``: whether the raw ``config.json`` is in its layout;
- ``history(config: dict) -> list[dict]``: the transforms the loaded model will hold, as
  ``effkit.json`` lists them (``{"name": ..., "config": {...}}``), so that the preflight knows
  the model without loading weights; raises :class:`~effkit.errors.ModelError` for a variant it
  cannot read;
- ``load(folder, config, *, task, tokenizer, source, overrides) -> EffkitModel``: the model,
  weights included; ``overrides`` are transformers config fields to set (dropout).

:func:`effkit.models.load_model` and the preflight ask the readers before they fall back to
transformers' Auto classes. No remote code is run: the reader is installed Python code.
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effkit.errors import ModelError, PluginError

if TYPE_CHECKING:
    from effkit.models import EffkitModel, ModelConfig
    from effkit.task import Task

log = logging.getLogger(__name__)

GROUP = "effkit.checkpoints"


def readers() -> dict[str, Any]:
    """Every installed reader, by entry-point name."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken third-party package must not take loading down
            raise PluginError(f"checkpoint reader '{ep.name}' ({ep.value}) failed to import: "
                              f"{exc}") from exc  # fmt: skip
    return found


def reader_for(config: dict[str, Any]) -> Any | None:
    """The reader that claims a raw ``config.json``, or None (a plain transformers model)."""
    for reader in readers().values():
        if reader.claims(config):
            return reader
    return None


def history(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The transforms a model with this config arrives with (none for plain models)."""
    reader = reader_for(config)
    return [] if reader is None else list(reader.history(config))


def raw_config(ref: str | Path, revision: str | None = None) -> dict[str, Any] | None:
    """The ``config.json`` of a local folder or a hub repository, or None when unreadable."""
    path = Path(ref).expanduser()
    if path.is_dir():
        file = path / "config.json"
    else:
        try:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(str(ref), "config.json", revision=revision))
        except Exception as exc:  # offline, unknown repository: the caller reports it
            log.debug("no config.json for %s: %s", ref, exc)
            return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def local_folder(ref: str | Path, revision: str | None = None) -> Path:
    """``ref`` itself when it is a folder, else a hub snapshot of its configs, weights and
    tokenizer files."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model.bin"]
        return Path(snapshot_download(str(ref), revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise ModelError(f"could not download model '{ref}': {exc}",
                         hint="a hub id needs network access") from None  # fmt: skip


def load(cfg: ModelConfig, task: Task, labels: dict[str, Any]) -> EffkitModel | None:
    """The model ``cfg.source`` names when a reader claims its config; None otherwise.

    ``labels``: the transformers config fields of the task's labels (``num_labels``...).
    """
    if cfg.source.startswith(("builtin:", "preset:")):
        return None
    raw = raw_config(cfg.source, cfg.revision)
    reader = None if raw is None else reader_for(raw)
    if reader is None or raw is None:
        return None
    folder = local_folder(cfg.source, cfg.revision)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer or folder))
    except Exception as exc:
        raise ModelError(f"could not load a tokenizer from '{cfg.tokenizer or folder}': {exc}",
                         hint="set model.tokenizer to the tokenizer the checkpoint was trained "
                         "with") from None  # fmt: skip
    overrides = dict(labels)
    if cfg.dropout is not None:
        overrides |= dict.fromkeys(("hidden_dropout_prob", "attention_probs_dropout_prob"),
                                   cfg.dropout)  # fmt: skip
    model: EffkitModel = reader.load(folder, raw, task=task, tokenizer=tokenizer,
                                     source=cfg.source, overrides=overrides)  # fmt: skip
    return model
