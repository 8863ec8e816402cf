"""Local folders the datasets library reads itself: hub-style snapshots and save_to_disk folders.

A hub-style folder (shards under ``data/``, split-named files such as
``train-00000-of-00001.parquet``, a README.md whose YAML header lists ``configs:``, or the
files ``data.data_files`` picks) is read with ``datasets.load_dataset``; a folder written by
``save_to_disk`` (a ``DatasetDict`` or a single ``Dataset``) with ``datasets.load_from_disk``.
Both read into memory through a temporary cache, so nothing is written next to the user's
files or left half-written in a cache, refused or not. Dataset loading scripts are never run.
Which local sources come here is decided in :func:`effkit.data.sources.local_reader`.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effkit.data.config import DataConfig, RawSplit
from effkit.data.tables import one_line, pick_splits, quiet_datasets
from effkit.errors import DataError, did_you_mean
from effkit.task import TaskType

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

CARD = "README.md"
CARD_YAML = ".huggingface.yaml"
DICT_MARKER = "dataset_dict.json"
DATASET_MARKERS = ("dataset_info.json", "state.json")


def saved_kind(path: Path) -> str | None:
    """``"DatasetDict"`` or ``"Dataset"`` for a folder ``save_to_disk`` wrote, else None."""
    if (path / DICT_MARKER).is_file():
        return "DatasetDict"
    if all((path / name).is_file() for name in DATASET_MARKERS):
        return "Dataset"
    return None


def scripts(path: Path) -> list[str]:
    """The Python files at the top of a folder: a dataset loading script, which is not run."""
    return sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".py")


def _front_matter(text: str) -> str | None:
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:i])
    return None


def card_configs(path: Path, *, strict: bool = True) -> dict[str, bool]:
    """The configurations a folder's README.md (or .huggingface.yaml) declares in its YAML
    ``configs:`` block, each with whether it is marked ``default``; empty when none. A header
    that cannot be read raises, or with ``strict`` off counts as declaring none."""
    import yaml

    meta: dict[str, Any] = {}
    for name in (CARD, CARD_YAML):
        file = path / name
        if not file.is_file():
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        block = _front_matter(text) if name == CARD else text
        if block is None:
            continue
        try:
            found = yaml.safe_load(block)
        except yaml.YAMLError as exc:
            if not strict:
                return {}
            raise DataError(
                f"the YAML header of {name} cannot be read: {one_line(exc)}",
                where=str(path),
                hint="fix the YAML between the --- lines",
            ) from None
        if isinstance(found, dict):
            meta.update(found)
    configs = meta.get("configs")
    if not configs:
        return {}
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        if not strict:
            return {}
        raise DataError(
            "the configs: block of README.md is not a list of mappings",
            where=str(path),
            hint="each entry holds config_name and data_files",
        )
    return {str(c.get("config_name", "default")): bool(c.get("default")) for c in configs}


def _check_config(path: Path, cfg: DataConfig) -> dict[str, bool]:
    """``data.subset`` against the configurations the folder declares; returns them."""
    where = str(path)
    configs = card_configs(path)
    if cfg.subset is not None:
        if not configs:
            raise DataError(
                f"data.subset is '{cfg.subset}', but the folder's README.md declares no configs",
                where=where,
                hint="remove data.subset, or list the configs: in README.md's YAML header",
            )
        if cfg.subset not in configs:
            raise DataError(
                f"no configuration '{cfg.subset}' (data.subset); the folder's README.md declares: "
                + ", ".join(configs),
                where=where,
                hint=did_you_mean(cfg.subset, list(configs)),
            )
    elif len(configs) > 1 and not any(configs.values()) and cfg.data_files is None:
        raise DataError(
            f"the folder's README.md declares {len(configs)} configurations "
            f"({', '.join(configs)}) and none is the default",
            where=where,
            hint="set data.subset to one of them",
        )
    return configs


def _listing(path: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    return shown or "nothing"


def load_folder(path: Path, cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
    """A hub-style folder read by ``datasets.load_dataset`` (``data.subset`` the configuration,
    ``data.data_files`` the patterns), into memory through a temporary cache."""
    import datasets

    where = str(path)
    if cfg.format != "auto":
        hint = (
            "name the CoNLL files train.conll, validation.conll and test.conll at the top of "
            "the folder"
            if cfg.format == "conll"
            else "remove data.format, or put train/validation/test files at the top of the folder"
        )
        raise DataError(
            f"data.format '{cfg.format}' is for files effkit reads itself; this folder is read "
            "by the datasets library, which goes by file extension",
            where=where,
            hint=hint,
        )
    found = scripts(path)
    if found:
        raise DataError(
            f"the folder holds a dataset loading script ({', '.join(found)}); effkit reads data "
            "files only and runs no dataset code",
            where=where,
            hint="convert the data to parquet, csv or jsonl files (or save_to_disk) and point "
            "data.source at them",
        )
    configs = _check_config(path, cfg)
    kwargs: dict[str, Any] = {}
    if cfg.data_files is not None:
        kwargs["data_files"] = cfg.data_files
    try:
        with tempfile.TemporaryDirectory(prefix="effkit-data-") as tmp, quiet_datasets():
            loaded = datasets.load_dataset(str(path), cfg.subset, cache_dir=tmp,
                                           keep_in_memory=True, **kwargs)  # fmt: skip
    except FileNotFoundError as exc:  # no data files, or patterns that match none
        if cfg.data_files is not None:
            raise DataError(
                f"data.data_files matches no data files in the folder ({one_line(exc)})",
                where=where,
                hint=f"patterns are relative to the folder; it holds: {_listing(path)}",
            ) from None
        if configs:
            raise DataError(
                f"the configs: of README.md name files the folder lacks ({one_line(exc)})",
                where=where,
                hint=f"data_files paths are relative to the folder; it holds: {_listing(path)}",
            ) from None
        raise DataError(
            "the folder has no train file (train.csv, train.jsonl, train.parquet, train.conll…) "
            "and no data files the datasets library reads",
            where=where,
            hint=f"it holds: {_listing(path)}",
        ) from None
    except Exception as exc:
        cause = exc.__cause__ or exc
        empty = _NO_DATA.search(str(cause))
        if empty:  # a split whose files hold no rows
            split = empty.group(1)
            raise DataError(f"the {split} split is empty", where=f"{where} [{split}]") from None
        raise DataError(
            f"the datasets library cannot read the folder: {one_line(cause)}",
            where=where,
            hint="check the files and README.md's configs:, or pick files with data.data_files",
        ) from None
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({cfg.train_split: loaded})
    return pick_splits(loaded, cfg, task, where)


def _empty_saved_split(path: Path) -> str | None:
    """The first split of a save_to_disk folder that holds no data files (datasets cannot load
    one), or None; unreadable bookkeeping is left to ``load_from_disk`` to report."""
    try:
        if (path / DICT_MARKER).is_file():
            names = json.loads((path / DICT_MARKER).read_text(encoding="utf-8"))["splits"]
            folders = [(str(name), path / str(name)) for name in names]
        else:
            folders = [("train", path)]
        for name, folder in folders:
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            if state.get("_data_files") == []:
                return name
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


_NO_DATA = re.compile(r'Instruction "([^"]+)" corresponds to no data')


def load_saved(path: Path, cfg: DataConfig, task: TaskType) -> dict[str, RawSplit]:
    """A folder ``save_to_disk`` wrote, read into memory by ``datasets.load_from_disk``; a
    single Dataset is the train split."""
    import datasets

    where = str(path)
    kind = saved_kind(path)
    for option, value, default in (("subset", cfg.subset, None),
                                   ("data_files", cfg.data_files, None),
                                   ("format", cfg.format, "auto")):  # fmt: skip
        if value != default:
            raise DataError(
                f"data.{option} does not apply to a save_to_disk folder ({kind}), which holds its "
                "splits whole",
                where=where,
                hint=f"remove data.{option}",
            )
    empty = _empty_saved_split(path)
    if empty is not None:
        raise DataError(f"the {empty} split is empty", where=f"{where} [{empty}]")
    try:
        with quiet_datasets():
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    except Exception as exc:
        raise DataError(
            f"the save_to_disk folder ({kind}) cannot be read: {one_line(exc)}",
            where=where,
            hint="it may be incomplete; write it again with save_to_disk",
        ) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({cfg.train_split: loaded})
    return pick_splits(loaded, cfg, task, where)
