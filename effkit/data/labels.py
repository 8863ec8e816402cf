"""Labels: from the values a source holds to class ids into one label list, per task type."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from effkit.data.config import SPLITS, RawSplit
from effkit.errors import DataError, did_you_mean

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def _as_label(value: Any) -> Any:
    """A raw label as an int or a string; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return int(value) if float(value).is_integer() else str(value)
    return str(value)


def _is_int_name(name: str) -> bool:
    try:
        int(name)
    except ValueError:
        return False
    return True


def _sorted_names(values: set[Any]) -> list[str]:
    if values and all(isinstance(v, int) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)


def _label_mapper(
    labels: list[str], given: bool, seen_in: str
) -> Callable[[Any, str, int, str], int]:
    """Maps a raw label to its id.

    Labels match by name. Integer labels against a given list of non-integer names (e.g. 0/1
    against ``["negative", "positive"]``) are class ids into that list instead.
    """
    index = {name: i for i, name in enumerate(labels)}
    ints_index = given and not all(_is_int_name(name) for name in labels)

    def to_id(value: Any, split: str, row: int, where: str) -> int:
        if isinstance(value, int) and ints_index:
            if 0 <= value < len(labels):
                return value
        elif str(value) in index:
            return index[str(value)]
        if given:
            raise DataError(
                f"split '{split}', row {row}: label {value!r} is not one of the task's labels",
                where=where,
                hint=did_you_mean(str(value), labels),
            )
        raise DataError(
            f"split '{split}', row {row}: label {value!r} does not occur in the {seen_in}",
            where=where,
            hint=f"labels seen: {', '.join(labels)}; to allow labels that train lacks, list "
            "the full label set in task.labels",
        )

    return to_id


def _unlabelled(values: list[Any], train_values: set[Any]) -> bool:
    if all(v is None for v in values):
        return True
    return all(v == -1 for v in values) and -1 not in train_values


def _sequence_values(split: RawSplit) -> list[Any]:
    values: list[Any] = []
    for row, example in enumerate(split.rows):
        value = _as_label(example["label"])
        if split.names is not None and isinstance(value, int):
            if value == -1:
                value = None
            elif 0 <= value < len(split.names):
                value = split.names[value]
            else:
                raise DataError(
                    f"row {row}: class id {value} is outside the dataset's "
                    f"{len(split.names)} classes",
                    where=split.where,
                )
        values.append(value)
    return values


def _text(value: Any, name: str, split: str, row: int, where: str) -> str:
    if value is None:
        raise DataError(f"split '{split}', row {row}: the {name} is missing", where=where)
    return value if isinstance(value, str) else str(value)


def label_sequence(
    raw: dict[str, RawSplit], labels: list[str] | None
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    values = {name: _sequence_values(split) for name, split in raw.items()}
    train_values = {v for v in values["train"] if v is not None}
    if labels is not None:
        label_list = [str(name) for name in labels]
    elif raw["train"].names is not None:
        label_list = list(raw["train"].names)
    else:
        label_list = _sorted_names(train_values)
    if not label_list:
        raise DataError("the train split has no labels", where=raw["train"].where)
    to_id = _label_mapper(label_list, labels is not None, "train split")
    out: dict[str, list[dict[str, Any]]] = {}
    for name in SPLITS:
        if name not in raw:
            continue
        split = raw[name]
        if name != "train" and _unlabelled(values[name], train_values):
            logger.info("the %s split has no labels; carving one out of train", name)
            continue
        examples: list[dict[str, Any]] = []
        for row, (example, value) in enumerate(zip(split.rows, values[name], strict=True)):
            if value is None:
                raise DataError(f"split '{name}', row {row}: no label", where=split.where)
            pair = example.get("text_pair")
            examples.append(
                {
                    "text": _text(example["text"], "text", name, row, split.where),
                    "text_pair": None if pair is None else str(pair),
                    "label": to_id(value, name, row, split.where),
                }
            )
        out[name] = examples
    return label_list, out


def _words(value: Any, name: str, split: str, row: int, where: str) -> list[Any]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (Sequence, np.ndarray)):
        return list(value)
    raise DataError(
        f"split '{split}', row {row}: {name} must be a list, got {type(value).__name__}",
        where=where,
    )


def label_tokens(
    raw: dict[str, RawSplit], labels: list[str] | None
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    parsed: dict[str, list[tuple[list[str], list[Any]]]] = {}
    for name, split in raw.items():
        items: list[tuple[list[str], list[Any]]] = []
        for row, example in enumerate(split.rows):
            tokens = [str(t) for t in _words(example["tokens"], "tokens", name, row, split.where)]
            tags = [_as_label(t) for t in _words(example["tags"], "tags", name, row, split.where)]
            if len(tokens) != len(tags):
                raise DataError(
                    f"split '{name}', row {row}: {len(tokens)} tokens but {len(tags)} tags",
                    where=split.where,
                )
            if split.names is not None:
                tags = [
                    split.names[t] if isinstance(t, int) and 0 <= t < len(split.names) else t
                    for t in tags
                ]
            items.append((tokens, tags))
        parsed[name] = items

    if labels is not None:
        label_list = [str(name) for name in labels]
    elif raw["train"].names is not None:
        label_list = list(raw["train"].names)
    else:
        seen = {t for _, tags in parsed["train"] for t in tags}
        ints = sorted(t for t in seen if isinstance(t, int))
        if ints:
            raise DataError(
                f"the tags are class ids (e.g. {ints[0]}) but no label list names them",
                where=raw["train"].where,
                hint="list the tag names in the task's labels, in class-id order",
            )
        outside = ["O"] if "O" in seen else []  # entity tags: O first, as is the custom
        label_list = [*outside, *sorted(str(t) for t in seen if t != "O")]
    given = labels is not None or raw["train"].names is not None
    index = {tag: i for i, tag in enumerate(label_list)}
    out: dict[str, list[dict[str, Any]]] = {}
    for name in SPLITS:
        if name not in parsed:
            continue
        where = raw[name].where
        examples: list[dict[str, Any]] = []
        for row, (tokens, tags) in enumerate(parsed[name]):
            ids: list[int] = []
            for tag in tags:
                if isinstance(tag, int) and 0 <= tag < len(label_list):
                    ids.append(tag)
                elif isinstance(tag, str) and tag in index:
                    ids.append(index[tag])
                elif given:
                    raise DataError(
                        f"split '{name}', row {row}: tag {tag!r} is not one of the task's "
                        "labels (task.labels)",
                        where=where,
                        hint=did_you_mean(str(tag), label_list),
                    )
                else:
                    raise DataError(
                        f"split '{name}', row {row}: tag {tag!r} does not occur in the train "
                        "split, so the model has no output for it",
                        where=where,
                        hint=f"tags seen in train: {', '.join(label_list)}; to allow tags that "
                        "train lacks, list the full tag set in task.labels",
                    )
            examples.append({"tokens": tokens, "tags": ids})
        out[name] = examples
    return label_list, out


def _score(value: Any, split: str, row: int, where: str) -> float | None:
    """A regression target as a finite float; None when missing (an unlabelled split)."""
    if value is None or isinstance(value, bool):
        if value is None:
            return None
        raise DataError(f"split '{split}', row {row}: the target {value!r} is not a number",
                        where=where)  # fmt: skip
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"split '{split}', row {row}: the target {value!r} is not a number",
            where=where,
            hint="a regression task's label column holds real numbers (e.g. 3.75)",
        ) from None
    if math.isnan(number):
        return None
    if not math.isfinite(number):
        raise DataError(f"split '{split}', row {row}: the target is {value!r}, not finite",
                        where=where)  # fmt: skip
    return number


def label_regression(
    raw: dict[str, RawSplit], labels: list[str] | None
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Regression examples ``{"text", "text_pair", "label": float}``; the label list is the one
    name of the score (``task.labels`` or ``"score"``). A validation or test split whose targets
    are all missing counts as absent (it is carved out of train)."""
    from effkit.task import REGRESSION_LABEL

    out: dict[str, list[dict[str, Any]]] = {}
    for name in SPLITS:
        if name not in raw:
            continue
        split = raw[name]
        values = [_score(e["label"], name, row, split.where) for row, e in enumerate(split.rows)]
        if name != "train" and all(v is None for v in values):
            logger.info("the %s split has no targets; carving one out of train", name)
            continue
        examples: list[dict[str, Any]] = []
        for row, (example, value) in enumerate(zip(split.rows, values, strict=True)):
            if value is None:
                raise DataError(f"split '{name}', row {row}: no target", where=split.where)
            pair = example.get("text_pair")
            examples.append(
                {
                    "text": _text(example["text"], "text", name, row, split.where),
                    "text_pair": None if pair is None else str(pair),
                    "label": value,
                }
            )
        out[name] = examples
    return list(labels or [REGRESSION_LABEL]), out
