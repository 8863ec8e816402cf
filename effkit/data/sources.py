"""Where examples come from: dispatch by source, local files and folders, the hub."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effkit.data.builtins import load_builtin
from effkit.data.config import DataConfig, RawSplit
from effkit.data.readers import read_conll, read_text
from effkit.errors import DataError, did_you_mean
from effkit.task import TaskType

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


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


def load_raw(cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
    source = cfg.source.strip()
    if source.startswith("builtin:"):
        return load_builtin(source.removeprefix("builtin:"), cfg, task)
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


def _load_local(path: Path, cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
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
    out: dict[str, RawSplit] = {}
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


def _load_file(path: Path, cfg: DataConfig, task: TaskType) -> RawSplit:
    fmt = _file_format(path, cfg)
    where = str(path)
    if fmt == "conll":
        if task != "token-classification":
            raise DataError(
                f"'{path.name}' is read as a CoNLL token file, which holds a token task",
                where=where,
                hint="sequence tasks read .csv .tsv .json .jsonl or .parquet files",
            )
        return RawSplit(read_conll(path), where)
    if path.stat().st_size == 0 or (fmt != "parquet" and not read_text(path).strip()):
        raise DataError("the file is empty", where=where)
    if fmt == "csv":
        lines = [line for line in read_text(path).splitlines() if line.strip()]
        if len(lines) < 2:
            raise DataError("the file has a header but no rows", where=where)
    if fmt == "json":
        _check_records(path)
    dataset = _datasets_load_file(path, fmt)
    return _rows_from_dataset(dataset, cfg, task, where)


def _check_records(path: Path) -> None:
    """A JSON file holds one object per example (a JSON list of objects, or JSON lines)."""
    import json

    text = read_text(path).lstrip()
    try:
        if text.startswith("["):
            if len(text) > 64 * 2**20:  # a large list: leave it to the reader
                return
            items, kind = json.loads(text), "list"
        else:
            items, kind = [json.loads(text.splitlines()[0])], "first line"
    except ValueError:
        return  # not valid JSON: the reader says where
    if not isinstance(items, list):
        items = [items]
    stray = next((item for item in items if not isinstance(item, dict)), None)
    if stray is not None:
        raise DataError(
            f"the file's {kind} holds {type(stray).__name__} values, not one object per example",
            where=str(path),
            hint='write {"text": ..., "label": ...} objects, one per example',
        )


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
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


def _datasets_load_file(path: Path, fmt: str) -> Any:
    """One local file read by the datasets library into memory: its arrow files go to a
    temporary folder, so that nothing is left in the datasets cache, refused or not."""
    import datasets

    kwargs: dict[str, Any] = {}
    if fmt == "csv":
        kwargs["delimiter"] = "\t" if path.suffix.lower() == ".tsv" else ","
        kwargs["keep_default_na"] = False
    try:
        with tempfile.TemporaryDirectory(prefix="effkit-data-") as tmp, _quiet_datasets():
            return datasets.load_dataset(fmt, data_files={"train": str(path)}, split="train",
                                         cache_dir=tmp, keep_in_memory=True,
                                         **kwargs)  # fmt: skip
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


def _rows_from_dataset(dataset: Any, cfg: DataConfig, task: TaskType, where: str) -> RawSplit:
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
    return RawSplit(rows, where, names)


def _load_hub(source: str, cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
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
    out: dict[str, RawSplit] = {}
    for split, name in (
        ("train", cfg.train_split),
        ("validation", cfg.validation_split),
        ("test", cfg.test_split),
    ):
        if name in loaded:
            out[split] = _rows_from_dataset(loaded[name], cfg, task, f"{label} [{name}]")
    return out
