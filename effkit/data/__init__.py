"""Dataset sources, splits, tokenisation and collators: from a recipe's data section to batches.

A :class:`DataConfig` names a source (a builtin data set, a local file or folder, or a dataset
on the Hugging Face hub); :func:`load_task_data` turns it into a :class:`TaskData` holding
train/validation/test examples whose labels are class ids into one label list (real numbers
for regression). :func:`encode`
and :func:`encode_texts` tokenise examples or raw text, and :class:`Collator` pads features into
tensors.

Split policy: the splits the source names are used as they are. When the source lacks a
validation and/or a test split, the missing ones are carved out of train with ``split_ratios``
(stratified by label for sequence tasks, a seeded shuffle for token tasks). A validation or test
split whose labels are all missing (``None``, or ``-1`` as on the hub for GLUE test sets) counts
as absent and is carved out of train the same way.

A source that names its splits ``dev``, ``valid`` or ``val`` has them read as validation (see
:func:`~effkit.data.tables.split_names`); which reader takes a local file or folder is decided
in one place, :func:`~effkit.data.sources.local_reader` (the rule: docs/data.md).

The package's modules: :mod:`~effkit.data.config` (the recipe section and :class:`TaskData`),
:mod:`~effkit.data.sources` (dispatch, local files, the hub), :mod:`~effkit.data.native`
(hub-style and save_to_disk folders, read by the datasets library), :mod:`~effkit.data.tables`
(datasets tables to raw rows, split names), :mod:`~effkit.data.builtins`,
:mod:`~effkit.data.readers` (CoNLL and text files), :mod:`~effkit.data.labels`,
:mod:`~effkit.data.splits` and :mod:`~effkit.data.features` (tokenisation and the collator).
"""

from __future__ import annotations

import logging

from effkit.data.builtins import BUILTINS
from effkit.data.config import SPLITS, DataConfig, TaskData
from effkit.data.features import Collator, encode, encode_texts
from effkit.data.labels import label_regression, label_sequence, label_tokens
from effkit.data.readers import read_conll, read_text_file
from effkit.data.sources import load_raw
from effkit.data.splits import carve
from effkit.errors import DataError, did_you_mean
from effkit.task import REGRESSION, SEQUENCE, TASK_TYPES, TaskType

logger = logging.getLogger(__name__)


__all__ = [
    "BUILTINS",
    "SPLITS",
    "Collator",
    "DataConfig",
    "TaskData",
    "encode",
    "encode_texts",
    "load_task_data",
    "read_conll",
    "read_text_file",
]


def load_task_data(cfg: DataConfig, task: TaskType, labels: list[str] | None = None) -> TaskData:
    """Load, label, split and cap the examples ``cfg`` names for ``task``.

    ``labels``, when given, is the task's label list: every label in every split must be in it.
    Without it the label list comes from the dataset's ClassLabel names, else from the labels
    seen in train (sorted; numerically when all are integers). Splits the source lacks are
    carved out of train with ``cfg.split_ratios`` and ``cfg.split_seed``; see the module
    docstring for the policy on unlabelled validation/test splits.
    """
    if task not in TASK_TYPES:
        raise DataError(f"unknown task '{task}'", where="task", hint=did_you_mean(task, TASK_TYPES))
    raw = load_raw(cfg, task)
    if "train" not in raw:
        raise DataError("the source has no train split", where=cfg.source)
    for name, split in raw.items():
        if not split.rows:
            raise DataError(f"the {name} split is empty", where=split.where)

    if task == SEQUENCE:
        label_list, splits = label_sequence(raw, labels)
    elif task == REGRESSION:
        label_list, splits = label_regression(raw, labels)
    else:
        label_list, splits = label_tokens(raw, labels)

    missing = [name for name in SPLITS if name not in splits]
    if missing:
        splits = carve(splits, missing, cfg, task)
    if cfg.limit is not None:
        splits = {name: rows[: cfg.limit] for name, rows in splits.items()}
    for name in SPLITS:
        if not splits.get(name):
            raise DataError(f"the {name} split is empty", where=cfg.source)
    kinds = "real-valued targets" if task == "regression" else f"{len(label_list)} labels"
    logger.info(
        "loaded %s (%s): %s; %s",
        cfg.source,
        task,
        ", ".join(f"{name} {len(splits[name])}" for name in SPLITS),
        kinds,
    )
    ordered = {name: splits[name] for name in SPLITS}
    return TaskData(task=task, labels=label_list, splits=ordered, source=cfg.source)
