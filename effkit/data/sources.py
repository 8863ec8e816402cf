"""Where examples come from: the dispatch by source, effkit's own file reader, the hub.

The dispatch, in order (:func:`load_raw`, and :func:`local_reader` for local paths):

1. ``builtin:NAME``: a builtin data set.
2. A path that exists, by :func:`local_reader`:

   a. a file: effkit's file reader (csv, tsv, json, jsonl, parquet, CoNLL); a ``.py`` file is
      refused (no dataset code is run);
   b. a folder ``save_to_disk`` wrote (``dataset_dict.json``, or ``dataset_info.json`` with
      ``state.json``): ``datasets.load_from_disk``;
   c. a folder with split files at its top (``train.csv``, ``dev.jsonl``, ``test.conll``...),
      unless ``data.data_files`` or ``data.subset`` is set or its README.md lists
      ``configs:``: effkit's folder reader, file by file (CoNLL errors name their line);
   d. any other folder: ``datasets.load_dataset`` (hub-style ``data/`` shards, README
      ``configs:``, ``data.data_files`` patterns); a folder with a ``.py`` loading script at its
      top is refused.

3. A path that does not exist but reads as one (``./x``, ``x.csv``, ``data/x`` with ``data/``
   present): an error naming the nearest file.
4. Anything else: a dataset on the Hugging Face hub.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from effkit.data.builtins import load_builtin
from effkit.data.config import DataConfig, RawSplit
from effkit.data.native import card_configs, load_folder, load_saved, saved_kind
from effkit.data.readers import read_conll, read_text
from effkit.data.tables import (
    SPLIT_ALIASES,
    one_line,
    pick_splits,
    quiet_datasets,
    rows_from_dataset,
)
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
Reader = Literal["file", "files", "saved", "datasets"]
"""Who reads a local path: effkit's file reader (one file, or a folder of split files),
``datasets.load_from_disk`` (``saved``), or ``datasets.load_dataset`` (``datasets``)."""


def load_raw(cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
    """The raw splits of the source ``cfg`` names; the dispatch is the module docstring's."""
    source = cfg.source.strip()
    if source.startswith("builtin:"):
        return load_builtin(source.removeprefix("builtin:"), cfg, task)
    path = Path(source).expanduser()
    if path.exists():
        reader = local_reader(path, cfg)
        logger.debug("%s: read by %s", path, reader)
        if reader == "saved":
            return load_saved(path, cfg, task)
        if reader == "datasets":
            return load_folder(path, cfg, task)
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


def local_reader(path: Path, cfg: DataConfig) -> Reader:
    """Which reader takes the local file or folder ``path`` (rule 2 of the module docstring);
    a source it refuses raises :class:`~effkit.errors.DataError`."""
    if path.is_file():
        if path.suffix.lower() == ".py":
            raise DataError(
                "the source is a Python file; effkit reads data files and runs no dataset code",
                where=str(path),
                hint="point data.source at the data files (.csv .jsonl .parquet...) instead",
            )
        for option in ("data_files", "subset"):
            if getattr(cfg, option) is not None:
                raise DataError(
                    f"data.{option} picks part of a folder or hub dataset; the source is one file",
                    where=str(path),
                    hint=f"remove data.{option}, or point data.source at the folder",
                )
        return "file"
    if saved_kind(path) is not None:
        return "saved"
    if cfg.data_files is not None or cfg.subset is not None or card_configs(path, strict=False):
        return "datasets"
    return "files" if _split_files(path, cfg) else "datasets"


def _split_files(path: Path, cfg: DataConfig) -> dict[str, list[Path]]:
    """The files at the top of a folder named after a split (train.csv, dev.jsonl...), per
    split, among those of ``data.format`` (or of any extension effkit reads)."""
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if cfg.format != "auto":
        files = [p for p in files if p.suffix.lower() in _FORMAT_EXTENSIONS[cfg.format]]
    else:
        files = [p for p in files if p.suffix.lower() in _EXTENSIONS]
    names = {
        "train": (cfg.train_split, *SPLIT_ALIASES["train"]),
        "validation": (cfg.validation_split, *SPLIT_ALIASES["validation"]),
        "test": (cfg.test_split, *SPLIT_ALIASES["test"]),
    }
    out: dict[str, list[Path]] = {}
    for split, stems in names.items():
        found = [p for p in files if p.stem.lower() in {s.lower() for s in stems}]
        if found:
            out[split] = found
    return out


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
    out: dict[str, RawSplit] = {}
    for split, found in _split_files(path, cfg).items():
        if len(found) > 1:
            raise DataError(
                f"several files could be the {split} split: {', '.join(p.name for p in found)}",
                where=str(path),
                hint="keep one, or set data.format to pick by extension",
            )
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
    return rows_from_dataset(dataset, cfg, task, where)


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


def _datasets_load_file(path: Path, fmt: str) -> Any:
    """One local file read by the datasets library into memory: its arrow files go to a
    temporary folder, so that nothing is left in the datasets cache, refused or not."""
    import datasets

    kwargs: dict[str, Any] = {}
    if fmt == "csv":
        kwargs["delimiter"] = "\t" if path.suffix.lower() == ".tsv" else ","
        kwargs["keep_default_na"] = False
    try:
        with tempfile.TemporaryDirectory(prefix="effkit-data-") as tmp, quiet_datasets():
            return datasets.load_dataset(fmt, data_files={"train": str(path)}, split="train",
                                         cache_dir=tmp, keep_in_memory=True,
                                         **kwargs)  # fmt: skip
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise DataError(
            f"could not read the file as {fmt}: {one_line(cause)}",
            where=str(path),
            hint="check the file's contents, or set data.format",
        ) from exc


def _load_hub(source: str, cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
    import datasets

    label = f"{source}/{cfg.subset}" if cfg.subset else source
    kwargs: dict[str, Any] = {}
    if cfg.data_files is not None:
        kwargs["data_files"] = cfg.data_files
    try:
        loaded = datasets.load_dataset(source, cfg.subset, **kwargs)
    except ValueError as exc:
        raise DataError(
            f"could not load '{label}' from the Hugging Face hub: {' '.join(str(exc).split())}",
            where=label,
            hint="check data.source, data.subset and data.data_files",
        ) from exc
    except Exception as exc:
        raise DataError(
            f"could not load the dataset '{label}' from the Hugging Face hub "
            f"({one_line(exc)}); the machine may be offline",
            where=label,
            hint="download the data and point data.source at a local file or folder "
            "(.csv .jsonl .parquet .conll, a hub snapshot or a save_to_disk folder)",
        ) from exc
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({cfg.train_split: loaded})
    return pick_splits(loaded, cfg, task, label)
