"""Paths written in a recipe file are read relative to that file's folder.

A recipe names local files and folders in a few places: ``model.source``, ``data.source``,
``benchmark.baseline`` and ``benchmark.data``, and the plugin fields typed
:data:`~effkit.transform.StageRef` (a teacher) or :data:`~effkit.transform.LocalPath` (a text
file). A relative value in the file is taken relative to the recipe's folder, so a recipe and its
data can move together and run from any working folder; a value given with ``--set`` (or by a
search's space, which writes the same overrides) is a command-line path, relative to the
working folder.

The same strings also name things that are not paths (``builtin:bbc-news``, a hub id such as
``bert-base-uncased`` or ``org/model``, a stage name), so a relative value counts as a path when
it starts with ``./`` or ``../``, when it exists relative to the recipe's folder, or when it
ends in a data or weights file extension. Anything else is left as written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from effkit import registry
from effkit.errors import EffkitError
from effkit.transform import LocalPathMarker, StageReference
from effkit.yaml_io import Loc

log = logging.getLogger(__name__)


FILE_SUFFIXES = frozenset(
    [
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".parquet",
        ".arrow",
        ".conll",
        ".bio",
        ".txt",
        ".iob",
        ".yaml",
        ".yml",
        ".safetensors",
    ]
)
"""Extensions that make a relative value a path even before the file exists (so that the error
names the place it was looked for)."""

CORE_FIELDS: tuple[Loc, ...] = (
    ("model", "source"),
    ("data", "source"),
    ("benchmark", "baseline"),
    ("benchmark", "data"),
)


def resolve_value(value: Any, base: Path) -> Any:
    """``value`` read relative to ``base`` when it is a relative path (see the module
    docstring); strings in lists and mappings (``data_files``) too; anything else as it is."""
    if isinstance(value, list):
        return [resolve_value(v, base) for v in value]
    if isinstance(value, dict):
        return {k: resolve_value(v, base) for k, v in value.items()}
    if not isinstance(value, str) or not value or ":" in value:
        return value  # builtin:..., URLs, Windows drives, empty: not a recipe-relative path
    if value.startswith("~"):
        return os.path.expanduser(value)
    if os.path.isabs(value):
        return value
    candidate = base / value
    explicit = value.startswith(("./", "../", ".\\", "..\\")) or value in (".", "..")
    if explicit or candidate.exists() or Path(value).suffix.lower() in FILE_SUFFIXES:
        return os.path.normpath(os.path.abspath(candidate))
    return value


def _is_path_field(cls: type[BaseModel], name: str) -> bool:
    info = cls.model_fields.get(name)
    if info is None:
        return False
    markers = (StageReference, LocalPathMarker)
    if any(isinstance(m, markers) for m in info.metadata):
        return True
    return _marked(info.annotation, markers)


def _marked(annotation: Any, markers: tuple[type, ...]) -> bool:
    from typing import Annotated as AnnotatedForm
    from typing import get_args, get_origin

    if get_origin(annotation) is AnnotatedForm:
        return any(isinstance(m, markers) for m in get_args(annotation)[1:])
    return any(_marked(arg, markers) for arg in get_args(annotation))


def _plugin_fields(group: str, spec: Any) -> dict[str, Any]:
    """The path fields of one plugin spec ``{name: ..., field: value}`` (its raw mapping)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return {}
    try:
        cls = registry.get(group, spec["name"])
    except EffkitError:
        return {}  # validation names the unknown plugin
    return {k: v for k, v in spec.items() if k != "name" and _is_path_field(cls, k)}


def resolve_recipe_paths(data: dict[str, Any], base: Path, from_overrides: set[Loc]) -> None:
    """Rewrite, in place, the relative paths of a recipe's raw mapping ``data`` (as read from a
    file in ``base``) to absolute ones; locations in ``from_overrides`` (set by ``--set``) and
    stage names are left alone."""
    stage_names = {"initial"}
    raw_stages = data.get("stages")
    stages: list[Any] = raw_stages if isinstance(raw_stages, list) else []
    stage_names |= {str(s.get("name")) for s in stages if isinstance(s, dict)}

    def overridden(loc: Loc) -> bool:
        return any(loc[: len(o)] == o or o[: len(loc)] == loc for o in from_overrides)

    def fix(node: dict[str, Any], key: str, loc: Loc) -> None:
        value = node[key]
        if overridden(loc) or (isinstance(value, str) and value in stage_names):
            return
        node[key] = resolve_value(value, base)
        if (
            node[key] == value
            and isinstance(value, str)
            and value
            and not os.path.isabs(value)
            and not value.startswith(("~", "builtin:"))
            and Path(value).exists()
        ):
            log.warning(
                "'%s' names nothing beside the recipe (%s) but exists in the working "
                "folder, which is used; write it relative to the recipe",
                value,
                base,
            )

    for loc in CORE_FIELDS:
        node = data.get(str(loc[0]))
        if isinstance(node, dict) and loc[1] in node:
            fix(node, str(loc[1]), loc)
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue
        raw = stage.get("transforms")
        transforms: list[Any] = raw if isinstance(raw, list) else []
        for j, spec in enumerate(transforms):
            for key in _plugin_fields(registry.TRANSFORMS, spec):
                fix(spec, key, ("stages", i, "transforms", j, key))
        objective = stage.get("objective")
        if not isinstance(objective, dict):
            continue
        for key in _plugin_fields(registry.OBJECTIVES, objective):
            fix(objective, key, ("stages", i, "objective", key))
