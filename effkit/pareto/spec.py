"""Search specs: the YAML that names a base recipe, a space over its fields and a target.

Everything is checked before a search starts, with errors in the style of recipes (file:line,
field path, did-you-mean): the spec's own fields, the base recipe, every value of every
parameter applied to the base recipe, and, when the space is small enough, every combination,
so that a typo in a field path costs one second rather than a failed trial an hour in.

A parameter either writes its value to one or more recipe fields (``field``), or picks a bundle
of overrides by label (``choices`` as a mapping), which is how structural choices are written:
N=1 is not ``n: 1`` on the multiplex transform but the absence of the priming stage, and a
student is a whole distillation stage. A value of ``null`` for a stage or a transform removes it
(see :func:`effkit.recipe.apply_overrides`); ``when`` replaces the plain write for chosen values
(sparsity 0: no pruning stage at all).
"""

from __future__ import annotations

import json
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
from effkit.recipe import (
    NAME,
    Loc,
    read_yaml,
    source_location,
    validation_error,
)

Scalar = bool | int | float | str
Overrides = dict[str, Any]

#: Combinations of a discrete space up to this many are each validated before the search starts.
MAX_CHECKED_COMBINATIONS = 512
#: Overrides every trial gets: the objective is scored on validation only.
TRIAL_OVERRIDES = ["evaluate.enabled=true", "evaluate.splits=[validation]"]
#: Overrides of the best trial's recipe: the test split is scored once, for the chosen stack.
BEST_OVERRIDES = ["evaluate.enabled=true", "evaluate.splits=[validation, test]"]
_TARGET = re.compile(r"^\s*([A-Za-z_][\w/]*)\s*>=\s*([-+0-9.eE]+)\s*$")


def normalized(value: Any) -> Any:
    """A value as a search compares it: floats rounded, so 0.6000000000000001 is 0.6."""
    if isinstance(value, float) and not isinstance(value, bool):
        return round(value, 10)
    return value


def value_label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Param(BaseModel):
    """One dimension of the space: choices, or an integer or float range."""

    model_config = ConfigDict(extra="forbid")

    field: str | list[str] | None = Field(
        None, description="Recipe field(s) the value is written to, addressed as in --set."
    )
    choices: list[Scalar] | dict[Scalar, Overrides] | None = Field(
        None,
        description="Values to choose from (written to `field`), or labels each naming a "
        "bundle of overrides {PATH: VALUE}; VALUE null on a stage or transform removes it.",
    )
    low: int | float | None = Field(None, description="Lowest value of a range.")
    high: int | float | None = Field(None, description="Highest value of a range.")
    step: int | float | None = Field(None, gt=0, description="Grid step of a range.")
    log: bool = Field(False, description="Sample the range on a log scale.")
    type: Literal["int", "float"] | None = Field(
        None, description="Range type; by default int when low, high and step are integers."
    )
    when: dict[Scalar, Overrides] = Field(
        default_factory=dict,
        description="Values whose overrides replace the plain write to `field`, e.g. "
        "{0.0: {stages.prune: null}}.",
    )

    @model_validator(mode="after")
    def _check(self) -> Param:
        ranged = self.low is not None or self.high is not None
        if self.choices is None and not ranged:
            raise ValueError("give either choices or a range (low and high)")
        if self.choices is not None and (ranged or self.step is not None or self.log):
            raise ValueError("choices and a range (low, high, step, log) exclude each other")
        if self.choices is not None:
            self._check_choices()
        else:
            self._check_range()
        for bundle in [*self.when.values(), *self.bundles().values()]:
            _check_bundle(bundle)
        return self

    def _check_choices(self) -> None:
        assert self.choices is not None
        if not self.choices:
            raise ValueError("choices are empty")
        if isinstance(self.choices, dict):
            if self.field is not None or self.when:
                raise ValueError(
                    "choices given as bundles of overrides take no 'field' and no 'when'"
                )
            return
        if len({normalized(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices repeat a value")
        missing = [c for c in self.choices if self.override_for(c) is None and self.field is None]
        if missing:
            raise ValueError(
                f"no 'field' to write {value_label(missing[0])} to (give field, or a 'when' entry)"
            )
        self._check_when_keys(
            lambda v: normalized(v) in {normalized(c) for c in self.choices or []}
        )

    def _check_range(self) -> None:
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high")
        if self.field is None and not self.when:
            raise ValueError("a range needs a 'field' to write its value to")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError("a log range needs low > 0 and no step")
        if self.type == "int" and not all(
            isinstance(v, int) for v in (self.low, self.high, self.step or 1)
        ):
            raise ValueError("an int range needs integer low, high and step")
        low, high, grid = self.low, self.high, self.grid()
        if grid is not None:
            self._check_when_keys(lambda v: normalized(v) in {normalized(g) for g in grid})
        else:
            self._check_when_keys(lambda v: isinstance(v, (int, float)) and low <= v <= high)
        if self.field is None and grid is None:
            raise ValueError("a continuous range needs a 'field' to write its value to")
        if self.field is None and grid is not None:
            unset = [v for v in grid if self.override_for(v) is None]
            if unset:
                raise ValueError(f"no 'field' to write {value_label(unset[0])} to")

    def _check_when_keys(self, allowed: Any) -> None:
        for key in self.when:
            if not allowed(key):
                raise ValueError(
                    f"'when' names {value_label(key)}, which the parameter never takes"
                )

    @property
    def is_int(self) -> bool:
        """Whether a range samples integers."""
        if self.type is not None:
            return self.type == "int"
        return all(
            isinstance(v, int) and not isinstance(v, bool)
            for v in (self.low, self.high, self.step or 1)
        )

    def fields(self) -> list[str]:
        """The recipe fields a plain value is written to."""
        if self.field is None:
            return []
        return [self.field] if isinstance(self.field, str) else list(self.field)

    def bundles(self) -> dict[Scalar, Overrides]:
        """Choices that are bundles of overrides, by label."""
        return dict(self.choices) if isinstance(self.choices, dict) else {}

    def override_for(self, value: Any) -> Overrides | None:
        """The bundle or ``when`` entry that replaces the plain write of ``value``, if any."""
        for table in (self.bundles(), self.when):
            for key, bundle in table.items():
                if normalized(key) == normalized(value):
                    return bundle
        return None

    def overrides(self, value: Any) -> Overrides:
        """What ``value`` changes in the recipe, as {PATH: VALUE}."""
        bundle = self.override_for(value)
        if bundle is not None:
            return dict(bundle)
        return {path: normalized(value) for path in self.fields()}

    def grid(self) -> list[Any] | None:
        """Every value the parameter can take, or None for a continuous range."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.is_int:
            step = int(self.step or 1)
            if self.log:
                return (
                    None
                    if self.high - self.low > 10_000
                    else list(range(int(self.low), int(self.high) + 1))
                )
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [normalized(self.low + i * self.step) for i in range(count)]

    def checked_values(self) -> list[Any]:
        """The values validated before a search: the whole grid, or a range's ends and cases."""
        grid = self.grid()
        if grid is not None:
            return grid
        return [self.low, self.high, *self.when]

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask an Optuna trial for this parameter's value."""
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.is_int:
            step = int(self.step or 1)
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)
        value = trial.suggest_float(
            name, float(self.low), float(self.high), step=self.step, log=self.log
        )
        return normalized(value)


def _check_bundle(bundle: Overrides) -> None:
    for path in bundle:
        if not isinstance(path, str) or not path.strip() or "=" in path:
            raise ValueError(f"'{path}' is not a recipe field path such as stages.NAME.train.steps")


class Objectives(BaseModel):
    """The two objectives, both maximised: a validation metric and the throughput ratio."""

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

    metric: str | None = Field(None, description="Validation metric; default the objective's.")
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
    """A search: base recipe, space, objectives, target, budget, sampler, benchmark protocol."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Search name; the default folder is runs/NAME.")
    description: str = Field("", description="Free text shown in the report.")
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


def takes(param: Param, value: Any) -> bool:
    grid = param.grid()
    if grid is not None:
        return normalized(value) in {normalized(v) for v in grid}
    assert param.low is not None and param.high is not None
    return isinstance(value, (int, float)) and param.low <= value <= param.high


# --------------------------------------------------------------------------- overrides


def set_item(path: str, value: Any) -> str:
    """A ``--set`` item: JSON is YAML, so the value reads back exactly as given."""
    return f"{path}={json.dumps(value)}"


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


def params_label(params: dict[str, Any]) -> str:
    """``n=2, size=L4, sparsity=0.4``: how a trial is named in tables and plots."""
    return ", ".join(f"{name}={value_label(value)}" for name, value in params.items())


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
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
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
