"""The plugin registry: transforms and objectives found through entry points.

Two entry-point groups hold every plugin, the project's own included:

- ``effkit.transforms``: :class:`effkit.transform.Transform` subclasses;
- ``effkit.objectives``: :class:`effkit.objectives.Objective` subclasses.

A third-party package registers a plugin by naming its class in one of these groups in its own
``pyproject.toml``; nothing in effkit lists plugins by hand. :func:`register` adds a class at run
time (tests and notebooks use it); it wins over an entry point of the same name.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from effkit.errors import PluginError, did_you_mean

log = logging.getLogger(__name__)

TRANSFORMS = "effkit.transforms"
OBJECTIVES = "effkit.objectives"
GROUPS = (TRANSFORMS, OBJECTIVES)

_runtime: dict[str, dict[str, type]] = {group: {} for group in GROUPS}
_loaded: dict[str, dict[str, type]] = {group: {} for group in GROUPS}

T = TypeVar("T", bound=type)


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; expected one of {GROUPS}")


def register(group: str, name: str, cls: type) -> type:
    """Register ``cls`` under ``name`` in ``group`` for this process."""
    _check_group(group)
    _runtime[group][name] = cls
    cls.name = name  # type: ignore[attr-defined]
    return cls


def unregister(group: str, name: str) -> None:
    """Remove a class added with :func:`register` (entry points stay)."""
    _check_group(group)
    _runtime[group].pop(name, None)
    _loaded[group].pop(name, None)


def names(group: str) -> list[str]:
    """Every plugin name available in ``group``, sorted."""
    _check_group(group)
    return sorted(set(_entry_points(group)) | set(_runtime[group]))


def get(group: str, name: str, *, where: str | None = None) -> Any:
    """The class registered as ``name`` in ``group``; a :class:`PluginError` names the closest."""
    _check_group(group)
    if name in _runtime[group]:
        return _runtime[group][name]
    if name in _loaded[group]:
        return _loaded[group][name]
    eps = _entry_points(group)
    if name not in eps:
        kind = group.rsplit(".", 1)[-1][:-1]
        raise PluginError(
            f"unknown {kind} '{name}'", where=where, hint=did_you_mean(name, names(group))
        )
    try:
        cls = eps[name].load()
    except Exception as exc:  # a broken third-party package must not take the CLI down
        raise PluginError(
            f"plugin '{name}' ({eps[name].value}) failed to import: {exc}", where=where
        ) from exc
    if not isinstance(cls, type):
        raise PluginError(f"plugin '{name}' ({eps[name].value}) is not a class", where=where)
    cls.name = name  # type: ignore[attr-defined]
    _loaded[group][name] = cls
    return cls


def name_of(group: str, cls: type) -> str:
    """The registered name of ``cls`` in ``group`` (it may have been imported directly)."""
    _check_group(group)
    for name, registered in {**_loaded[group], **_runtime[group]}.items():
        if registered is cls:
            return name
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, ep in _entry_points(group).items():
        if ep.value == target:
            cls.name = name  # type: ignore[attr-defined]
            _loaded[group][name] = cls
            return name
    raise PluginError(
        f"{target} is not registered in {group}",
        hint="add it to the entry points of its package, or call effkit.register()",
    )


def describe(group: str) -> list[dict[str, Any]]:
    """Name, origin, summary and config fields of each plugin in ``group`` (`effkit plugins`)."""
    rows: list[dict[str, Any]] = []
    eps = _entry_points(group)
    for name in names(group):
        origin = "registered at run time" if name in _runtime[group] else eps[name].value
        try:
            cls = get(group, name)
        except PluginError as exc:
            rows.append({"name": name, "origin": origin, "summary": str(exc), "fields": []})
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        fields = []
        for field_name, info in getattr(cls, "model_fields", {}).items():
            plain = isinstance(info.annotation, type)  # list[str] keeps its parameters
            annotation = info.annotation.__name__ if plain else str(info.annotation)
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            fields.append(
                {
                    "name": field_name,
                    "type": annotation.replace("typing.", ""),
                    "default": default,
                    "required": info.is_required(),
                    "description": info.description or "",
                }
            )
        rows.append(
            {"name": name, "origin": origin, "summary": doc[0] if doc else "", "fields": fields}
        )
    return rows
