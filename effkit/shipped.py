"""The recipes that ship with effkit: where they are, what they say of themselves, and how a
command line names one.

An installed effkit carries them as the package data ``effkit/recipes/``; a source checkout
(editable install) reads the top-level ``recipes/`` folder beside ``effkit/``. A command that
takes a recipe file also takes a shipped recipe's name (``effkit apply quickstart``) when no
file of that name exists, and ``effkit recipes copy NAME`` puts one where it can be edited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from effkit.errors import RecipeError, did_you_mean
from effkit.yaml_io import read_yaml


def recipes_dir() -> Path | None:
    """The folder of the shipped recipes, or None when this installation has none."""
    here = Path(__file__).resolve().parent
    for found in (here / "recipes", here.parent / "recipes"):  # installed, then a checkout
        if found.is_dir() and any(found.glob("*.yaml")):
            return found
    return None


@dataclass(frozen=True)
class Shipped:
    """One shipped recipe or search spec, as it describes itself."""

    name: str
    path: Path
    kind: str
    """``recipe`` or ``search`` (a search spec, for ``effkit search``)."""
    description: str
    measured: str


def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())


def _describe(path: Path) -> Shipped:
    data, _ = read_yaml(path.read_text(encoding="utf-8"), str(path))
    data = data if isinstance(data, dict) else {}
    kind = "search" if "space" in data and "recipe" in data else "recipe"
    summary = _one_line(data.get("description"))
    first = re.match(r"(.+?[.!?])(\s|$)", summary)
    return Shipped(path.stem, path, kind, first.group(1) if first else summary,
                   _one_line(data.get("measured")))  # fmt: skip


def shipped() -> list[Shipped]:
    """Every shipped recipe and search spec, by name."""
    folder = recipes_dir()
    if folder is None:
        return []
    return [_describe(path) for path in sorted(folder.glob("*.yaml"))]


def names() -> list[str]:
    folder = recipes_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def find(name: str) -> Path:
    """The file of the shipped recipe ``name`` (``quickstart`` or ``quickstart.yaml``); a
    RecipeError listing the closest names when there is none."""
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    folder = recipes_dir()
    if folder is None:
        raise RecipeError("this installation of effkit has no shipped recipes")
    path = folder / f"{stem}.yaml"
    if not path.is_file() or "/" in stem or "\\" in stem:
        known = names()
        raise RecipeError(
            f"no shipped recipe named '{name}'",
            hint=did_you_mean(stem, known) or f"effkit recipes lists them: {', '.join(known)}",
        )
    return path


def recipe_path(arg: str | Path) -> Path:
    """What a command's RECIPE argument names: the file when it exists, else the shipped recipe
    of that name (``quickstart``, ``quickstart.yaml``). A path that names neither is returned as
    it is, for the reader to say it does not exist."""
    path = Path(arg)
    if path.exists():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    is_bare = path.parent == Path(".") and path.suffix in ("", ".yaml", ".yml")
    if is_bare and stem in names():
        return find(stem)
    if is_bare and not path.suffix:
        raise RecipeError(
            f"no recipe file or shipped recipe named '{arg}'",
            hint=did_you_mean(stem, names()) or "effkit recipes lists the shipped ones",
        )
    return path


def copy(name: str, dest: Path | None = None, *, force: bool = False) -> list[Path]:
    """Copy the shipped recipe ``name`` to ``dest`` (a file, or a folder to put NAME.yaml in;
    default the working folder) and return the files written: a search spec brings its base
    recipe along, so that the copy runs as it is. An existing file is kept unless ``force``."""
    source = find(name)
    target = Path(dest) if dest is not None else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if not target.parent.is_dir():
        raise RecipeError(f"folder '{target.parent}' does not exist")
    pairs = [(source, target)]
    data, _ = read_yaml(source.read_text(encoding="utf-8"), str(source))
    base = data.get("recipe") if isinstance(data, dict) and "space" in data else None
    if isinstance(base, str) and (source.parent / base).is_file():
        pairs.append((source.parent / base, target.parent / base))
    for _, out in pairs:
        if out.exists() and not force:
            raise RecipeError(f"'{out}' already exists", hint="give another DEST, or --force")
    for src, out in pairs:
        out.write_text(_schema_line_to(src, src.read_text(encoding="utf-8")), encoding="utf-8")
    return [out for _, out in pairs]


SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


def _schema_line_to(source: Path, text: str) -> str:
    """A copy's schema line names the shipped schema file wherever the copy goes."""

    def absolute(match: re.Match[str]) -> str:
        target = source.parent / match.group(1)
        return f"# yaml-language-server: $schema={target.resolve().as_uri()}"

    return SCHEMA_LINE.sub(absolute, text, count=1)
