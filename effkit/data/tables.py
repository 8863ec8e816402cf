"""Tables the datasets library returns, as raw splits: columns, ClassLabel names, split names.

Every reader that goes through the datasets library (a plain file, a hub-style folder, a
save_to_disk folder, a hub dataset) ends here: :func:`rows_from_dataset` takes the recipe's
columns out of one table, and :func:`pick_splits` decides which of a source's splits are
train, validation and test. :func:`quiet_datasets` keeps the library's bars and log lines off
while it reads, since effkit reports problems itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from effkit.data.config import SPLITS, DataConfig, RawSplit
from effkit.errors import DataError, did_you_mean
from effkit.task import TaskType

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
"""The names a source's split may have for each of effkit's splits, in order of preference."""

_OPTIONS = {"train": "train_split", "validation": "validation_split", "test": "test_split"}


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """The datasets library without its progress bars and log lines (effkit reports errors)."""
    import datasets

    bars = datasets.utils.logging.is_progress_bar_enabled()
    level = datasets.utils.logging.get_verbosity()
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        datasets.utils.logging.set_verbosity(level)
        if bars:
            datasets.utils.logging.enable_progress_bar()


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as ``Type: message`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _class_names(feature: Any) -> list[str] | None:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return None


def rows_from_dataset(dataset: Any, cfg: DataConfig, task: TaskType, where: str) -> RawSplit:
    """The examples of one datasets table as raw rows, read from the recipe's columns."""
    columns = list(dataset.column_names)

    def need(column: str, option: str) -> None:
        if column not in columns:
            raise DataError(
                f"no column '{column}' (data.{option}); the columns are: {', '.join(columns)}",
                where=where,
                hint=did_you_mean(column, columns),
            )

    if task != "token-classification":  # one text (or pair) and one label or score per row
        need(cfg.text_column, "text_column")
        if cfg.text_pair_column is not None:
            need(cfg.text_pair_column, "text_pair_column")
        need(cfg.label_column, "label_column")
        texts = list(dataset[cfg.text_column])
        pairs = (
            list(dataset[cfg.text_pair_column])
            if cfg.text_pair_column is not None
            else [None] * len(texts)
        )
        labels = list(dataset[cfg.label_column])
        rows = [
            {"text": t, "text_pair": p, "label": y}
            for t, p, y in zip(texts, pairs, labels, strict=True)
        ]
        names = _class_names(dataset.features[cfg.label_column])
    else:
        need(cfg.tokens_column, "tokens_column")
        need(cfg.tags_column, "tags_column")
        tokens = list(dataset[cfg.tokens_column])
        tags = list(dataset[cfg.tags_column])
        rows = [{"tokens": w, "tags": t} for w, t in zip(tokens, tags, strict=True)]
        names = _class_names(dataset.features[cfg.tags_column])
    return RawSplit(rows, where, names)


def split_names(available: list[str], cfg: DataConfig, where: str) -> dict[str, str]:
    """Which of a source's splits are train, validation and test (effkit split -> source split).

    A split named in the recipe (``data.train_split`` and so on, when not left at the default)
    must exist. A split left at the default name is matched against :data:`SPLIT_ALIASES`
    (case aside): ``dev``, ``valid`` or ``val`` serve as validation. Train must be found;
    validation and test may be absent (they are then carved out of train).
    """
    by_lower: dict[str, str] = {}
    for name in available:
        by_lower.setdefault(name.lower(), name)
    listing = ", ".join(available) or "none"
    chosen: dict[str, str] = {}
    for split in SPLITS:
        option = _OPTIONS[split]
        wanted: str = getattr(cfg, option)
        default = DataConfig.model_fields[option].default
        if wanted in available:
            chosen[split] = wanted
            continue
        candidates = SPLIT_ALIASES[split] if wanted == default else (wanted,)
        found = next((by_lower[c] for c in candidates if c.lower() in by_lower), None)
        if found is not None:
            chosen[split] = found
        elif split == "train" or wanted != default:
            raise DataError(
                f"no split '{wanted}' (data.{option}); the splits are: {listing}",
                where=where,
                hint=did_you_mean(wanted, available)
                + (f"; set data.{option} to the one to use" if split == "train" else ""),
            )
    twice = [s for s in chosen if list(chosen.values()).count(chosen[s]) > 1]
    if twice:
        raise DataError(
            f"the source's split '{chosen[twice[0]]}' would serve as both {' and '.join(twice)}",
            where=where,
            hint="set data.train_split, data.validation_split and data.test_split apart",
        )
    unused = [name for name in available if name not in chosen.values()]
    if unused:
        logger.info("%s: not using the split(s) %s", where, ", ".join(unused))
    return chosen


def pick_splits(
    loaded: Mapping[str, Any], cfg: DataConfig, task: TaskType, label: str
) -> dict[str, RawSplit]:
    """Train, validation and test rows out of a mapping of split name to datasets table.

    ``label`` names the source in messages; each split's rows say ``label [split]``.
    """
    chosen = split_names(list(loaded), cfg, label)
    return {
        split: rows_from_dataset(loaded[name], cfg, task, f"{label} [{name}]")
        for split, name in chosen.items()
    }
