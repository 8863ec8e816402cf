"""Recipes: the YAML schema, loading with ``--set`` overrides, and errors that point at lines.

A recipe names a model, a task, its data and a list of stages. Each stage applies transforms
and trains with one objective. Everything is validated before anything runs, and an error
names the file and line (or the ``--set`` that caused it), the field path, and what would be
right, so that a wrong recipe costs one second rather than an hour.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from effkit import registry
from effkit.bench import BenchConfig
from effkit.data import DataConfig
from effkit.errors import PluginError, RecipeError, did_you_mean
from effkit.models import ModelConfig
from effkit.objectives import Objective
from effkit.task import Task
from effkit.train import TrainConfig
from effkit.transform import Transform
from effkit.yaml_io import Loc, either_text, exists_at, read_yaml

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
INDEX = re.compile(r"^-?[0-9]+$")


class PluginSpecError(ValueError):
    """A transform or objective spec that does not validate; ``loc`` is relative to the stage."""

    def __init__(self, message: str, loc: Loc, hint: str | None = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.hint = hint


def _build_plugin(group: str, spec: Any, loc: Loc) -> Any:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise PluginSpecError(
            "expected a mapping with a 'name' key, e.g. {name: keep-layers, layers: [0, 1]}", loc
        )
    fields = dict(spec)
    name = str(fields.pop("name"))
    try:
        cls = registry.get(group, name)
    except PluginError as exc:
        raise PluginSpecError(exc.message, (*loc, "name"), exc.hint) from exc
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt field shows up as "unknown" and "missing": the unknown one explains both
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        hint = None
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(str(err["loc"][-1]), list(cls.model_fields))
        raise PluginSpecError(f"{name}: {err['msg']}", (*loc, *err["loc"]), hint) from exc


class EvalConfig(BaseModel):
    """Final evaluation of the recipe's last model."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Evaluate the final model.")
    splits: list[Literal["validation", "test"]] = Field(
        ["validation", "test"], description="Splits to score (model selection uses validation)."
    )
    batch_size: int = Field(64, ge=1, description="Inputs per inference batch.")
    inference_seeds: list[int] = Field(
        default_factory=list,
        description="Seeds for stochastic inference (how a multiplexed model groups its inputs); "
        "with several, each metric is reported as the mean with its spread (_std).",
    )


class StageConfig(BaseModel):
    """One stage: transforms applied to the incoming model, then training with one objective."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(
        description="Unique stage name; addressed by --set stages.NAME....; "
        "--set stages.NAME=null removes the stage."
    )
    start: str | None = Field(
        None,
        alias="from",
        description="Start from this earlier stage's model, or 'initial' for the recipe's "
        "model (default: the previous stage's), e.g. to train a teacher beside the stages that "
        "use it.",
    )
    transforms: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="Transforms, each a name or {name: PLUGIN, field: value, ...}; "
        "--set stages.NAME.transforms.PLUGIN=null removes one.",
    )
    objective: str | dict[str, Any] = Field(
        "task", description="Training objective: a name or {name: PLUGIN, field: value}."
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation schedule.")

    _transforms: list[Transform] = PrivateAttr(default_factory=list)
    _objective: Objective | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use letters, digits, '-', '_' and '.' (it names a folder)")
        return value

    @model_validator(mode="after")
    def _resolve_plugins(self) -> StageConfig:
        self._transforms = [
            _build_plugin(registry.TRANSFORMS, spec, ("transforms", i))
            for i, spec in enumerate(self.transforms)
        ]
        self._objective = _build_plugin(registry.OBJECTIVES, self.objective, ("objective",))
        return self

    @model_serializer(mode="wrap")
    def _omit_default_start(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a stage that follows the previous one dumps as it always did (cache keys stay put)
        dumped: dict[str, Any] = handler(self)
        if self.start is None:
            dumped.pop("from", None)
            dumped.pop("start", None)
        return dumped

    def resolved_plugins(self) -> dict[str, Any]:
        """The stage's transforms and objective with every field, defaults included: what a
        stage computes depends on them, however the recipe spelled them."""
        objective = self._objective
        assert objective is not None
        return {
            "transforms": [
                {"name": t.registered_name(), **t.model_dump(mode="json")} for t in self._transforms
            ],
            "objective": {
                "name": registry.name_of(registry.OBJECTIVES, type(objective)),
                **objective.model_dump(mode="json"),
            },
        }

    def build_transforms(self) -> list[Transform]:
        """Fresh transform objects for one run of this stage."""
        return [t.model_copy(deep=True) for t in self._transforms]

    def build_objective(self) -> Objective:
        """A fresh objective object for one run of this stage."""
        assert self._objective is not None
        return self._objective.model_copy(deep=True)


class Recipe(BaseModel):
    """A whole recipe: model, task, data, stages, evaluation and benchmark."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Recipe name; the default run folder is runs/NAME.")
    description: str = Field("", description="Free text shown in the report.")
    measured: str = Field(
        "", description="What the recipe reached when last measured, one line (effkit recipes)."
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seed for data order, initialisation and dropout."
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Starting model.")
    task: Task = Field(default_factory=Task, description="Task type and labels.")
    data: DataConfig | None = Field(None, description="The task's data.")
    stages: list[StageConfig] = Field(default_factory=list, description="Stages, run in order.")
    evaluate: EvalConfig = Field(default_factory=EvalConfig, description="Final evaluation.")
    benchmark: BenchConfig = Field(
        default_factory=BenchConfig, description="Throughput of the final model vs a baseline."
    )

    _origin: tuple[str, dict[Loc, int], dict[Loc, str], Any] | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use letters, digits, '-', '_' and '.' (it names a folder)")
        return value

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"two stages are named '{stage.name}'; stage names are unique")
            if stage.start is not None and stage.start != "initial" and stage.start not in seen:
                later = stage.start in {s.name for s in self.stages}
                raise ValueError(
                    f"stage '{stage.name}' starts from '{stage.start}', "
                    + ("which runs after it" if later else "which is not a stage of this recipe")
                    + "; 'from' names an earlier stage or 'initial'"
                )
            seen.add(stage.name)
        if self.data is None and (self.stages or self.evaluate.enabled):
            raise ValueError("a recipe that trains or evaluates needs a 'data' section")
        return self

    def where(self, loc: Loc) -> str:
        """Where ``loc`` (e.g. ``("stages", 0, "train")``) comes from: ``file:line: path`` (or the
        ``--set`` that set it), for errors found after the recipe validated."""
        dumped = self.model_dump(mode="json", by_alias=True)
        if self._origin is None:
            return format_loc(loc, dumped)
        source, lines, origins, data = self._origin
        return f"{source_location(source, lines, origins, loc)}: {format_loc(loc, data)}"

    def stage(self, name: str) -> StageConfig:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise RecipeError(
            f"no stage named '{name}'", hint=did_you_mean(name, [s.name for s in self.stages])
        )

    def to_yaml(self) -> str:
        """The resolved recipe as YAML, defaults included."""
        dumped = self.model_dump(mode="json", by_alias=True)
        return yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- YAML positions


def format_loc(loc: Loc, data: Any) -> str:
    """``stages[finetune].train.steps`` from a numeric pydantic location."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label: str | int = item
            if isinstance(node, list) and item < len(node):
                entry = node[item]
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str) and NAME.match(name):  # else the index says more
                    label = name
                node = entry
            else:
                node = None
            parts.append(f"[{label}]")
        else:
            node = node.get(item) if isinstance(node, dict) else None
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _step_into(annotation: Any, item: str | int) -> Any:
    """The annotation of ``item`` inside a value annotated ``annotation`` (None: unknown)."""
    model = _model_in(annotation)
    if model is not None and isinstance(item, str) and item in model.model_fields:
        return model.model_fields[item].annotation
    for candidate in [annotation, *typing.get_args(annotation)]:
        origin = typing.get_origin(candidate)
        if origin is dict:
            return typing.get_args(candidate)[1]
        if origin is list:
            return typing.get_args(candidate)[0]
    return None


def _fields_at(loc: Loc, root: type[BaseModel]) -> list[str]:
    """Field names of the model (below ``root``) that owns ``loc``'s last element."""
    annotation: Any = root
    for item in loc[:-1]:
        annotation = _step_into(annotation, item)
        if annotation is None:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


# --------------------------------------------------------------------------- overrides


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(
            f"--set '{item}' is not PATH=VALUE", hint="e.g. stages.finetune.train.steps=300"
        )
    path, raw = item.split("=", 1)
    parts = [p for p in path.strip().split(".") if p]
    if not parts:
        raise RecipeError(f"--set '{item}' has an empty path")
    try:
        value = read_yaml(raw, "value")[0] if raw.strip() else ""
    except RecipeError as exc:  # the value is bounded as a recipe file is
        raise RecipeError(f"--set '{item}': {exc.message}", hint=exc.hint) from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[Loc, str]:
    """Apply ``PATH=VALUE`` overrides in place; list items are addressed by name or index.

    ``PATH=null`` on a list item removes it (``stages.prime=null`` leaves the stage out,
    ``stages.finetune.transforms.multiplex=null`` one transform), so that a variant of a recipe
    that does without a stage is an override too, for ``--set`` and for searches alike.
    Returns the numeric location each override set, so errors can name the ``--set``.
    """
    origins: dict[Loc, str] = {}
    for item in overrides:
        parts, value = _parse_override(item)
        node: Any = data
        loc: list[str | int] = []
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                # a transform may be written as a bare name: it is addressed by that name
                names = [
                    e.get("name") if isinstance(e, dict) else e if isinstance(e, str) else None
                    for e in node
                ]
                if part in names:
                    index = names.index(part)
                elif INDEX.match(part) and -len(node) <= int(part) < len(node):
                    index = int(part) % len(node)
                else:
                    where = ".".join(parts[:depth]) or "(top level)"
                    raise RecipeError(
                        f"--set {item}: '{where}' has no item named '{part}'",
                        hint=did_you_mean(part, [str(n) for n in names if n is not None]),
                    )
                loc.append(index)
                if last and value is None:
                    del node[index]
                    loc.clear()  # nothing is left at that location to blame an error on
                elif last:
                    node[index] = value
                else:
                    if isinstance(node[index], str):  # a bare transform name takes fields too
                        node[index] = {"name": node[index]}
                    node = node[index]
            elif isinstance(node, dict):
                loc.append(part)
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                where = ".".join(parts[:depth])
                raise RecipeError(f"--set {item}: '{where}' is a value, not a section")
        if loc:
            origins[tuple(loc)] = f"--set {item}"
    return origins


# --------------------------------------------------------------------------- loading


def source_location(source: str, lines: dict[Loc, int], origins: dict[Loc, str], loc: Loc) -> str:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in origins:
            return origins[loc[:cut]]
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return f"{source}:{lines[loc[:cut]]}"
    return source


def validation_error(
    exc: ValidationError,
    data: Any,
    source: str,
    lines: dict[Loc, int],
    origins: dict[Loc, str] | None = None,
    root: type[BaseModel] | None = None,
) -> RecipeError:
    """One :class:`RecipeError` for every problem pydantic found in the YAML ``data`` validated
    as ``root`` (a recipe by default): file:line (or the ``--set`` responsible), the field's
    path, the message and the closest field name."""
    origins = origins or {}
    root = root or Recipe
    problems: dict[tuple[str, str], list[str]] = {}  # the branches of a union, at one place
    for err in exc.errors():
        loc: Loc = tuple(err["loc"])
        hint = None
        msg = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, PluginSpecError):
            loc = (*loc, *cause.loc)
            msg, hint = str(cause), cause.hint
        elif err["type"] == "extra_forbidden":
            msg = f"unknown field '{loc[-1]}'"
            hint = did_you_mean(str(loc[-1]), _fields_at(loc, root))
        elif loc[-1:] == ("[key]",) and len(loc) > 1:  # a mapping key YAML read as a number
            msg, hint = f"key {loc[-2]} is not a string", f"quote it: '{loc[-2]}'"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        # union branches and dict-key markers add names the YAML does not have: drop them
        while len(loc) > 1 and not exists_at(data, loc):
            if err["type"] in ("extra_forbidden", "missing") and exists_at(data, loc[:-1]):
                break
            loc = loc[:-1]
        place = (source_location(source, lines, origins, loc), format_loc(loc, data))
        said = problems.setdefault(place, [])
        if (text := msg + (f" ({hint})" if hint else "")) not in said:
            said.append(text)
    messages = [f"{at}: {path}: {either_text(said)}" for (at, path), said in problems.items()]
    if len(messages) == 1:
        return RecipeError(messages[0])
    return RecipeError(f"{len(messages)} problems:\n  " + "\n  ".join(messages))


def parse_recipe(
    text: str,
    *,
    source: str = "<recipe>",
    overrides: list[str] | None = None,
    base: Path | None = None,
) -> Recipe:
    """Validate recipe YAML text with overrides; a :class:`RecipeError` says what and where.

    ``base`` is the folder the text's relative paths are read from (the recipe file's; see
    :mod:`effkit.paths`); values the overrides set stay relative to the working folder."""
    data, lines = read_yaml(text, source)
    if data is None:
        raise RecipeError("the recipe is empty", where=source)
    if not isinstance(data, dict):
        raise RecipeError("a recipe is a mapping of sections (name, model, data, stages...)",
                          where=f"{source}:1")  # fmt: skip
    origins = apply_overrides(data, overrides or [])
    if base is not None:
        from effkit.paths import resolve_recipe_paths

        resolve_recipe_paths(data, base, set(origins))
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, source, lines, origins) from None
    recipe._origin = (source, lines, origins, data)
    return recipe


def read_recipe_text(path: str | Path) -> str:
    """The text of a recipe file; a RecipeError naming the file when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"recipe '{path}' is a folder, not a YAML file")
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe '{path}': {exc}") from exc


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    return parse_recipe(read_recipe_text(path), source=str(path), overrides=overrides,
                        base=Path(path).parent)  # fmt: skip
