"""The base recipe a search varies: the recipe a parameter set gives, and the checks a spec
passes against it before any trial runs (metrics, values, combinations, start points)."""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

from effkit.bench import BenchConfig
from effkit.errors import EffkitError, RecipeError, did_you_mean
from effkit.pareto.space import params_label, set_item, takes, value_label
from effkit.pareto.spec import (
    BEST_OVERRIDES,
    MAX_CHECKED_COMBINATIONS,
    TRIAL_OVERRIDES,
    SearchSpec,
    trial_overrides,
)
from effkit.preflight import Preflight, preflight
from effkit.recipe import (
    Loc,
    Recipe,
    format_loc,
    parse_recipe,
)
from effkit.task import LOWER_IS_BETTER, Task


class Base:
    """The base recipe a search varies: its text, source and the overrides of every trial."""

    def __init__(self, spec: SearchSpec, overrides: list[str] | None = None) -> None:
        self.path = spec.recipe_path()
        self.overrides = list(overrides or [])
        if not self.path.is_file():
            raise RecipeError(
                f"base recipe '{self.path}' does not exist",
                where=spec.where(("recipe",)),
                hint="the path is relative to the spec file",
            )
        try:
            self.text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"cannot read base recipe '{self.path}': {exc}") from exc
        self.recipe = parse_recipe(
            self.text, source=str(self.path), base=self.path.parent, overrides=self.overrides
        )
        self.task: Task = self.recipe.task
        """The base recipe's task, with the labels its data holds once :func:`check` read it
        (a token task's metrics depend on its tag set)."""

    def build(self, extra: list[str]) -> Recipe:
        """The base recipe with the search's overrides and then ``extra`` applied, validated."""
        writes = [item for item in extra if not item.endswith("=null")]
        removals = [item for item in extra if item.endswith("=null")]
        return parse_recipe(
            self.text,
            source=str(self.path),
            base=self.path.parent,
            overrides=self.overrides + writes + removals,
        )

    def trial_recipe(
        self, spec: SearchSpec, params: dict[str, Any], *, best: bool = False
    ) -> Recipe:
        """The recipe a trial with ``params`` runs (scored on validation; the best on test too)."""
        return self.build(
            trial_overrides(spec, params) + (BEST_OVERRIDES if best else TRIAL_OVERRIDES)
        )


def _task(source: Base | Recipe) -> Task:
    return source.task


def goal_metric(spec: SearchSpec, source: Base | Recipe) -> str:
    """The validation metric the search maximises (its goal beside throughput): the spec's, or
    the primary metric of the base recipe's task."""
    return spec.objectives.metric or _task(source).primary_metric()


def target_metric(spec: SearchSpec, source: Base | Recipe) -> str | None:
    """The metric the target constrains (None without a target)."""
    if spec.target is None:
        return None
    return spec.target.metric or goal_metric(spec, source)


def _check_metrics(spec: SearchSpec, task: Task) -> None:
    """The goal and the target name metrics the task reports, and ones that grow with quality
    (the search maximises its goal and needs ``metric >= min`` of its target)."""
    known = task.metric_names()
    checks: list[tuple[str | None, Loc]] = [(spec.objectives.metric, ("objectives", "metric"))]
    if spec.target is not None:
        checks.append((spec.target.metric, ("target",)))
    kind = task.type if task.entity_scheme() is not None or not task.is_token_task else (
        f"{task.type} (plain tags, no entity scheme)")  # fmt: skip
    for name, loc in checks:
        if name is not None and name not in known:
            raise RecipeError(
                f"{format_loc(loc, {})}: {kind} reports no metric '{name}'",
                where=spec.where(loc),
                hint=did_you_mean(name, known),
            )
        if name in LOWER_IS_BETTER:
            better = [m for m in known if m not in LOWER_IS_BETTER]
            raise RecipeError(
                f"{format_loc(loc, {})}: '{name}' is lower-is-better, and a search maximises "
                "its goal and needs its target's metric at least a minimum",
                where=spec.where(loc),
                hint=f"use one of: {', '.join(better)}",
            )


def _check_values(spec: SearchSpec, base: Base) -> None:
    """Every value of every parameter, applied alone to the base recipe, gives a valid recipe."""
    for name, param in spec.sampling_space():
        for value in param.checked_values():
            items = [set_item(p, v) if v is not None else f"{p}=null"
                     for p, v in param.overrides(value).items()]  # fmt: skip
            try:
                base.build(items)
            except RecipeError as exc:
                loc: Loc = ("space", name, "choices" if param.choices is not None else "field")
                if param.override_for(value) is not None:
                    loc = ("space", name, "choices" if param.bundles() else "when", str(value))
                raise RecipeError(
                    f"space.{name}: the value {value_label(value)} gives an invalid recipe: "
                    f"{exc.render()}",
                    where=spec.where(loc),
                ) from None


def _check_combinations(spec: SearchSpec, base: Base, first: Preflight) -> int:
    """Every combination of a small discrete space gives a recipe that passes the preflight
    (models, data, transforms together); returns how many."""
    grids = {name: param.checked_values() for name, param in spec.sampling_space()}
    total = math.prod(len(values) for values in grids.values())
    if total > MAX_CHECKED_COMBINATIONS:
        return 0
    for values in itertools.product(*grids.values()):
        params = dict(zip(grids, values, strict=True))
        try:
            preflight(base.trial_recipe(spec, params), like=first)
        except EffkitError as exc:
            raise RecipeError(
                f"space: the combination {params_label(params)} gives an invalid recipe: "
                f"{exc.render()}",
                where=spec.where(("space",)),
            ) from None
    return total


def _check_start(spec: SearchSpec, index: int, params: dict[str, Any]) -> None:
    where = spec.where(("start_with", index))
    for name, value in params.items():
        if name not in spec.space:
            raise RecipeError(f"start_with[{index}]: no parameter '{name}'", where=where,
                              hint=did_you_mean(name, list(spec.space)))  # fmt: skip
        if not takes(spec.space[name], value):
            raise RecipeError(
                f"start_with[{index}]: parameter '{name}' never takes {value_label(value)}",
                where=where,
            )
    missing = [name for name in spec.space if name not in params]
    if missing:
        raise RecipeError(
            f"start_with[{index}]: give every parameter (missing: {', '.join(missing)})",
            where=where,
        )


def check(spec: SearchSpec, overrides: list[str] | None = None) -> Base:
    """Validate a spec against its base recipe; returns the base, ready to build trials."""
    base = Base(spec, overrides)
    if base.recipe.data is None:
        raise RecipeError(
            "the base recipe has no data section: a search trains and scores on validation",
            where=str(base.path),
        )
    if not base.recipe.stages:
        raise RecipeError("the base recipe has no stages to search over", where=str(base.path))
    _check_values(spec, base)
    try:
        first = preflight(base.recipe)
    except EffkitError as exc:
        raise RecipeError(f"the base recipe: {exc.render()}", where=str(base.path)) from None
    if first.data is not None:
        base.task = base.recipe.task.model_copy(update={"labels": list(first.data.labels)})
    _check_metrics(spec, base.task)
    _check_combinations(spec, base, first)
    for i, params in enumerate(spec.start_with):
        _check_start(spec, i, params)
        try:
            preflight(base.trial_recipe(spec, params), like=first)
        except EffkitError as exc:
            raise RecipeError(
                f"start_with[{i}] gives an invalid recipe: {exc.render()}",
                where=spec.where(("start_with", i)),
            ) from None
    return base


def bench_protocol(spec: SearchSpec, recipe: Recipe) -> BenchConfig:
    """The throughput protocol of the search, with the thread count fixed.

    Threads default to the machine's cores, so that the figure is the one a server with the
    machine to itself would see; the same number is written into the best recipe.
    """
    cfg = spec.benchmark or recipe.benchmark
    threads = cfg.threads or os.cpu_count() or 1
    return cfg.model_copy(
        update={"enabled": True, "baseline": "initial", "memory": False, "threads": threads}
    )
