"""Pareto search: the fastest stack that still reaches a target accuracy, on the user's own task.

A search spec (YAML) names a base recipe, a space over its fields (addressed as in ``--set``),
a task metric and a target. Optuna samples the space; each trial is a recipe run into
``<search dir>/trials/NNNN`` that shares the stage cache, so trials that agree on their first
stages train them once. A trial's goals are its validation metric and its throughput as a
ratio to the base recipe's starting model (N=1, unpruned), both maximised, with the target as a
constraint. The search folder ends with every trial (``trials.csv``), the Pareto front
(``pareto.csv``, ``pareto.png``), the best trial that meets the target as a plain recipe
(``best_recipe.yaml``) and ``report.md``. See docs/search.md.

Modules: :mod:`~effkit.pareto.spec` (the search spec) and :mod:`~effkit.pareto.space` (its
parameters), :mod:`~effkit.pareto.base` (the base recipe and the checks a spec passes before any
trial), :mod:`~effkit.pareto.study` (the driver: folder, study, outputs),
:mod:`~effkit.pareto.workers` (worker processes and the budget), :mod:`~effkit.pareto.evaluation`
(one trial, Optuna's trial callable), :mod:`~effkit.pareto.throughput` (measuring a trial's
model), :mod:`~effkit.pareto.samplers` (samplers and the target constraint),
:mod:`~effkit.pareto.recovery` (heartbeats, trials left running, retries),
:mod:`~effkit.pareto.storage`, :mod:`~effkit.pareto.best` (the best trial, on test),
:mod:`~effkit.pareto.context`, :mod:`~effkit.pareto.locks` and :mod:`~effkit.pareto.outputs`.

This package stays light to import (the command line imports it on every start); the search
itself, Optuna included, loads on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Param", "SearchResult", "SearchSpec", "load_spec", "search"]


def __getattr__(name: str) -> Any:
    if name == "Param":
        from effkit.pareto import space

        return space.Param
    if name in ("SearchSpec", "load_spec"):
        from effkit.pareto import spec

        return getattr(spec, name)
    if name == "SearchResult":
        from effkit.pareto import context

        return context.SearchResult
    if name == "search":
        from effkit.pareto import study

        return study.search
    raise AttributeError(f"module 'effkit.pareto' has no attribute {name!r}")
