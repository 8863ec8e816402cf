"""The space a search varies: its parameters, the values each takes, what a value writes.

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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = bool | int | float | str
Overrides = dict[str, Any]


def normalized(value: Any) -> Any:
    """A value as a search compares it: floats rounded, so 0.6000000000000001 is 0.6."""
    if isinstance(value, float) and not isinstance(value, bool):
        return round(value, 10)
    return value


def value_label(value: Any) -> str:
    """A value as tables, plots and messages show it (floats without trailing digits)."""
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


def takes(param: Param, value: Any) -> bool:
    """Whether ``param`` can take ``value`` (on its grid, or inside its range)."""
    grid = param.grid()
    if grid is not None:
        return normalized(value) in {normalized(v) for v in grid}
    assert param.low is not None and param.high is not None
    return isinstance(value, (int, float)) and param.low <= value <= param.high


def set_item(path: str, value: Any) -> str:
    """A ``--set`` item: JSON is YAML, so the value reads back exactly as given."""
    return f"{path}={json.dumps(value)}"


def params_label(params: dict[str, Any]) -> str:
    """``n=2, size=L4, sparsity=0.4``: how a trial is named in tables and plots."""
    return ", ".join(f"{name}={value_label(value)}" for name, value in params.items())
