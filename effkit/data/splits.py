"""Splits a source lacks, carved out of train (stratified by label for sequence tasks)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from effkit.data.config import SPLITS, DataConfig
from effkit.errors import DataError
from effkit.task import TaskType

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def _split_order(
    examples: list[dict[str, Any]], task: TaskType, rng: np.random.Generator
) -> list[int]:
    """A seeded order of ``examples``; for sequence tasks every prefix is stratified by label.

    Each class is shuffled and its members get evenly spaced, jittered positions in [0, 1);
    sorting by position interleaves the classes, so any cut keeps each class's share.
    """
    if task != "sequence-classification":
        return [int(i) for i in rng.permutation(len(examples))]
    by_label: dict[int, list[int]] = {}
    for i, example in enumerate(examples):
        by_label.setdefault(int(example["label"]), []).append(i)
    keyed: list[tuple[float, int]] = []
    for label in sorted(by_label):
        members = by_label[label]
        perm = rng.permutation(len(members))
        jitter = rng.random(len(members))
        for rank, j in enumerate(perm):
            keyed.append(((rank + float(jitter[rank])) / len(members), members[int(j)]))
    keyed.sort()
    return [i for _, i in keyed]


def carve(
    splits: dict[str, list[dict[str, Any]]], missing: list[str], cfg: DataConfig, task: TaskType
) -> dict[str, list[dict[str, Any]]]:
    ratio = dict(zip(SPLITS, cfg.split_ratios, strict=True))
    parts = ["train", *missing]
    total = sum(ratio[p] for p in parts)
    train = splits["train"]
    n = len(train)
    counts = {p: max(1, math.floor(n * ratio[p] / total + 0.5)) for p in missing}
    counts["train"] = n - sum(counts.values())
    if counts["train"] < 1:
        raise DataError(
            f"the train split has {n} examples, too few to carve out {' and '.join(missing)}",
            where=cfg.source,
            hint="add data, or provide validation and test files",
        )
    order = _split_order(train, task, np.random.default_rng(cfg.split_seed))
    out = {name: rows for name, rows in splits.items() if name != "train"}
    start = 0
    for part in parts:
        out[part] = [train[i] for i in order[start : start + counts[part]]]
        start += counts[part]
    logger.info(
        "carved %s out of train (%d examples, ratios %s, seed %d)",
        " and ".join(missing),
        n,
        list(cfg.split_ratios),
        cfg.split_seed,
    )
    return out
