"""Search specs: the YAML that names a base recipe, a space over its fields and a target.

Everything is checked before a search starts, with errors in the style of recipes (file:line,
field path, did-you-mean): the spec's own fields, the base recipe, every value of every
parameter applied to the base recipe, and, when the space is small enough, every combination,
so that a typo in a field path costs one second rather than a failed trial an hour in.

The space itself (parameters and what their values write) is :mod:`effkit.pareto.space`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from effkit.bench import BenchConfig
from effkit.errors import RecipeError
from effkit.pareto.space import Param, Scalar, set_item
from effkit.recipe import NAME, source_location, validation_error
from effkit.yaml_io import Loc, read_yaml

#: Combinations of a discrete space up to this many are each validated before the search starts.
MAX_CHECKED_COMBINATIONS = 512
#: Overrides every trial gets: the metric goal is scored on validation only.
TRIAL_OVERRIDES = ["evaluate.enabled=true", "evaluate.splits=[validation]"]
#: Overrides of the best trial's recipe: the test split is scored once, for the chosen stack.
BEST_OVERRIDES = ["evaluate.enabled=true", "evaluate.splits=[validation, test]"]
#: The shortest heartbeat grace period a spec may set: a trial beats every third of it.
MIN_HEARTBEAT_GRACE_S = 5
_TARGET = re.compile(r"^\s*([A-Za-z_][\w/]*)\s*>=\s*([-+0-9.eE]+)\s*$")


class Objectives(BaseModel):
    """The spec's ``objectives`` section: the two goals, both maximised, a validation metric and
    the throughput ratio (named for its YAML key, which validation messages show)."""

    model_config = ConfigDict(extra="forbid")

    metric: str | None = Field(
        None, description="Task metric on the validation split; default the task's primary one."
    )
    baseline: Literal["once", "each-trial"] = Field(
        "once",
        description="Throughput baseline (the base recipe's starting model): measured once per "
        "search and machine, or beside every trial in the same process.",
    )


class Target(BaseModel):
    """What a stack must reach to count: ``metric >= min``, an Optuna constraint."""

    model_config = ConfigDict(extra="forbid")

    metric: str | None = Field(None, description="Validation metric; default objectives.metric.")
    min: float = Field(description="Lowest acceptable value.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"min": value}
        if isinstance(value, str):
            match = _TARGET.match(value)
            if not match:
                raise ValueError(f"'{value}' is not 'METRIC >= VALUE', e.g. 'accuracy >= 0.9'")
            return {"metric": match.group(1), "min": float(match.group(2))}
        return value


class SamplerConfig(BaseModel):
    """The Optuna sampler; both handle the target as a constraint."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["tpe", "nsga2", "random"] = Field(
        "tpe", description="tpe (good for small budgets), nsga2, or random."
    )
    seed: int = Field(0, description="Seed of the sampler.")
    startup_trials: int = Field(8, ge=0, description="TPE: random trials before modelling.")
    population_size: int = Field(8, ge=2, description="NSGA-II: trials per generation.")


class SearchSpec(BaseModel):
    """A search: base recipe, space, goals, target, budget, sampler, benchmark protocol."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Search name; the default folder is runs/NAME.")
    description: str = Field("", description="Free text shown in the report.")
    measured: str = Field(
        "", description="What the search found when last run, one line (effkit recipes)."
    )
    recipe: str = Field(description="The base recipe, relative to this file.")
    space: dict[str, Param] = Field(min_length=1, description="Parameters by name.")
    objectives: Objectives = Field(default_factory=Objectives, description="What is maximised.")
    target: Target | None = Field(None, description="e.g. 'accuracy >= 0.9'.")
    trials: int = Field(20, ge=0, description="Distinct evaluations the study should hold.")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="Optuna sampler.")
    start_with: list[dict[str, Scalar]] = Field(
        default_factory=list,
        description="Parameter sets evaluated first (enqueued when the study is new).",
    )
    benchmark: BenchConfig | None = Field(
        None,
        description="Throughput protocol (threads fixed); default the base recipe's benchmark.",
    )
    heartbeat_grace_s: int = Field(
        120,
        ge=MIN_HEARTBEAT_GRACE_S,
        description="With an RDB storage: seconds without a heartbeat after which a running "
        "trial counts as dead; it is failed and evaluated again.",
    )

    _source: str = PrivateAttr("<search spec>")
    _root: Path = PrivateAttr(default_factory=Path)
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use letters, digits, '-', '_' and '.' (it names a folder)")
        return value

    @field_validator("space")
    @classmethod
    def _valid_params(cls, value: dict[str, Param]) -> dict[str, Param]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", name):
                raise ValueError(f"parameter name '{name}': use letters, digits, '_', '-', '.'")
        return value

    @field_validator("benchmark")
    @classmethod
    def _protocol_only(cls, value: BenchConfig | None) -> BenchConfig | None:
        if value is None:
            return value
        if not value.enabled:
            raise ValueError("a search measures throughput: benchmark.enabled cannot be false")
        if value.baseline != "initial":
            raise ValueError(
                "the throughput baseline of a search is the base recipe's starting model "
                "(baseline: initial)"
            )
        return value

    @property
    def source(self) -> str:
        """Where the spec came from, for messages."""
        return self._source

    def recipe_path(self) -> Path:
        """The base recipe's path (relative paths are relative to the spec file)."""
        path = Path(self.recipe)
        return path if path.is_absolute() else self._root / path

    def where(self, loc: Loc) -> str:
        """``file:line`` of a location in the spec, as near as is known."""
        return source_location(self._source, self._lines, {}, loc)

    def sampling_space(self) -> Iterator[tuple[str, Param]]:
        """Parameters in the order they are sampled and applied."""
        yield from self.space.items()


# --------------------------------------------------------------------------- overrides


def trial_overrides(spec: SearchSpec, params: dict[str, Any]) -> list[str]:
    """The ``--set`` items of a parameter set: every write first, then every removal.

    Removals come last so that a parameter may tune a stage that another one removes (N=1
    drops the priming stage whatever the other parameters say about it).
    """
    writes: list[str] = []
    removals: dict[str, None] = {}
    for name, param in spec.sampling_space():
        for path, value in param.overrides(params[name]).items():
            if value is None:
                removals[path] = None
            else:
                writes.append(set_item(path, value))
    return writes + [f"{path}=null" for path in removals]


# --------------------------------------------------------------------------- loading


def parse_spec(text: str, *, source: str = "<search spec>", root: Path | None = None) -> SearchSpec:
    """Validate search-spec YAML; ``root`` is the folder the base recipe path is relative to."""
    data, lines = read_yaml(text, source)
    if not isinstance(data, dict):
        raise RecipeError(
            "a search spec is a mapping (name, recipe, space, objectives, target...)",
            where=f"{source}:1",
        )
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, source, lines, root=SearchSpec) from None
    spec._source = source
    spec._root = root if root is not None else Path(".")
    spec._lines = lines
    return spec


def load_spec(path: str | Path) -> SearchSpec:
    """Read and validate a search spec file (the base recipe is checked by :func:`check`)."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"search spec '{path}' is a folder, not a YAML file")
    if not path.is_file():
        raise RecipeError(f"search spec '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read search spec '{path}': {exc}") from exc
    return parse_spec(text, source=str(path), root=path.parent)


def is_search_spec(path: str | Path) -> bool:
    """Whether a YAML file is a search spec rather than a recipe (it has a ``space``)."""
    try:
        data, _ = read_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, RecipeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "space" in data and "recipe" in data


def grid_size(spec: SearchSpec) -> int | None:
    """How many parameter sets the space has, or None when a range is continuous."""
    sizes = []
    for _, param in spec.sampling_space():
        grid = param.grid()
        if grid is None:
            return None
        sizes.append(len(grid))
    return math.prod(sizes)


def dump(spec: SearchSpec) -> str:
    """The spec as YAML (defaults included), for the search folder."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
