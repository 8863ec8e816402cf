"""The Optuna samplers a search spec names, and the target constraint they respect.

The target (``metric >= min``) is an Optuna constraint: a trial records ``min - metric``, which
is <= 0 when it meets the target. Optuna 5 lets a trial carry its constraint itself
(``Trial.set_constraint``); older versions need the samplers' ``constraints_func``, which reads
the value back from the trial's user attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from effkit.pareto.spec import SearchSpec


def constraint_values(trial: Any) -> list[float]:
    """Optuna constraint: target minus the trial's metric (<= 0 meets the target)."""
    value = trial.user_attrs.get("constraint")
    return [float(value)] if value is not None else [1.0]


def trial_constraints() -> bool:
    """Whether trials carry their constraints themselves (Optuna 5's ``Trial.set_constraint``);
    older Optuna needs the samplers' ``constraints_func``."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def set_constraint(trial: Any, value: float) -> None:
    """Record a trial's target constraint (``min - metric``) where every Optuna version reads it."""
    trial.set_user_attr("constraint", value)
    if trial_constraints():
        trial.set_constraint("target", value)


def constraints_func(spec: SearchSpec) -> Callable[[Any], list[float]] | None:
    """The constraint function samplers and plots take: only with a target, and only where
    trials cannot carry their constraints themselves."""
    return constraint_values if spec.target is not None and not trial_constraints() else None


def make_sampler(spec: SearchSpec, seed_offset: int = 0) -> Any:
    """The spec's sampler, seeded per process so that workers do not propose alike."""
    import optuna

    cfg = spec.sampler
    seed = cfg.seed + seed_offset
    constraints = constraints_func(spec)
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=cfg.population_size, seed=seed, constraints_func=constraints
        )
    return optuna.samplers.TPESampler(
        n_startup_trials=cfg.startup_trials, seed=seed, constraints_func=constraints
    )
