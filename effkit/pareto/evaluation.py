"""Evaluating one trial (Optuna's trial callable): build its recipe, skip duplicates, run it,
score it, time it.

A trial's identity is its resolved recipe. A trial whose recipe a completed trial already ran
reuses that trial's values (``duplicate_of``) instead of running; one whose recipe another
process is running at that moment is pruned. Only distinct evaluations count towards the budget,
so a search's ``trials`` is the number of different stacks measured.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effkit.errors import RunError, did_you_mean
from effkit.pareto.base import Base, goal_metric, target_metric
from effkit.pareto.context import HOST, Context
from effkit.pareto.locks import SearchLocks
from effkit.pareto.samplers import set_constraint
from effkit.pareto.space import params_label
from effkit.pareto.spec import trial_overrides
from effkit.pareto.throughput import Throughput
from effkit.recipe import Recipe
from effkit.runner import Runner
from effkit.storage import stable_hash
from effkit.transform import SPARSITY

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)


def trial_runner(recipe: Recipe, run_dir: Path, locks: SearchLocks, progress: bool) -> Runner:
    """A recipe run inside a search: stages under the search's locks, no benchmark.

    A stage that another process of the search is producing is waited for and then taken from
    the stage cache; training and evaluation hold the work lock, so that no throughput figure is
    taken while they run.
    """
    return Runner(recipe, run_dir, progress=progress, cache=True, benchmark=False, guard=locks)


def recipe_key(recipe: Recipe) -> str:
    """What identifies a trial: its resolved recipe, whatever parameters led there."""
    return stable_hash(recipe.model_dump(mode="json", exclude={"name", "description"}))


class TrialEvaluation:
    """Optuna's trial callable: sample, build and validate the recipe, dedupe, run, score,
    measure; returns the trial's goals (validation metric, throughput ratio)."""

    def __init__(self, ctx: Context, base: Base, locks: SearchLocks) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.base = base
        self.locks = locks
        self.metric = goal_metric(ctx.spec, base)
        self.target_metric = target_metric(ctx.spec, base)
        self.throughput = Throughput(ctx, base, locks)
        self.last_was_duplicate = False

    def __call__(self, trial: optuna.Trial) -> list[float]:
        self.last_was_duplicate = False
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        params = {name: param.suggest(trial, name) for name, param in self.spec.sampling_space()}
        trial.set_user_attr("label", params_label(params))
        try:
            return self._evaluate(trial, params)
        except Exception as exc:
            import optuna

            if not isinstance(exc, optuna.TrialPruned):
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise

    def _claim(self, trial: optuna.Trial, key: str) -> Any:
        """Record the trial's recipe; return a trial that already ran or is running it.

        A trial that failed with an error of its own was evaluated too (it counts), so its
        recipe is not run again; one that was interrupted is evaluated again by its retry.
        """
        from optuna.trial import TrialState

        with self.locks.exclusive("dedupe"):
            trial.set_user_attr("recipe_key", key)
            states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL)
            for other in trial.study.get_trials(deepcopy=False, states=states):
                attrs = other.user_attrs
                if other.number == trial.number or attrs.get("recipe_key") != key:
                    continue
                if other.state == TrialState.RUNNING:
                    return other
                if "duplicate_of" in attrs:
                    continue
                if other.state == TrialState.COMPLETE or "error" in attrs:
                    return other
        return None

    def _reuse(self, trial: optuna.Trial, other: Any) -> list[float]:
        import optuna
        from optuna.trial import TrialState

        self.last_was_duplicate = True
        trial.set_user_attr("duplicate_of", other.number)
        if other.state == TrialState.FAIL:
            raise RunError(
                f"the same recipe as trial {other.number}, which failed: "
                f"{other.user_attrs.get('error')}"
            )
        if other.state != TrialState.COMPLETE:
            raise optuna.TrialPruned(f"trial {other.number} is running the same recipe")
        for name in ("metrics", "throughput", "run_dir", "num_parameters", "sparsity_reached"):
            if name in other.user_attrs:
                trial.set_user_attr(name, other.user_attrs[name])
        if "constraint" in other.user_attrs:
            set_constraint(trial, other.user_attrs["constraint"])
        log.info("trial %d repeats trial %d: its values are reused", trial.number, other.number)
        return list(other.values)

    def _run_dir(self, trial: optuna.Trial) -> Path:
        trials = self.ctx.folder / "trials"
        run_dir = trials / f"{trial.number:04d}"
        retry_of = trial.user_attrs.get("retry_of")
        if isinstance(retry_of, int):
            old = trials / f"{retry_of:04d}"
            if old.is_dir() and not run_dir.exists():
                old.rename(run_dir)  # the retry continues the interrupted stage from its checkpoint
        trial.set_user_attr("run_dir", str(run_dir.relative_to(self.ctx.folder)))
        return run_dir

    def _evaluate(self, trial: optuna.Trial, params: dict[str, Any]) -> list[float]:
        recipe = self.base.trial_recipe(self.spec, params)
        trial.set_user_attr("overrides", trial_overrides(self.spec, params))
        other = self._claim(trial, recipe_key(recipe))
        if other is not None:
            return self._reuse(trial, other)
        began = time.perf_counter()
        runner = trial_runner(recipe, self._run_dir(trial), self.locks,
                              progress=self.ctx.progress and self.ctx.workers == 1)  # fmt: skip
        result = runner.run()
        metrics = result.metrics.get("validation", {})
        value = _metric(metrics, self.metric)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("num_parameters", result.model.num_parameters())
        trial.set_user_attr("reused_stages", [
            name for name, entry in runner.manifest.get("stages", {}).items()
            if entry.get("from_cache")
        ])  # fmt: skip
        sparsity = reached_sparsity(result.stages)
        if sparsity is not None:
            trial.set_user_attr("sparsity_reached", sparsity)
        throughput = self.throughput.measure(result.model, runner)
        trial.set_user_attr("throughput", throughput)
        if self.target_metric is not None and self.spec.target is not None:
            reached = _metric(metrics, self.target_metric)
            set_constraint(trial, self.spec.target.min - reached)
        trial.set_user_attr("seconds", round(time.perf_counter() - began, 1))
        return [value, float(throughput["ratio"])]


def reached_sparsity(stages: dict[str, dict[str, Any]]) -> float | None:
    """The sparsity the last pruning transform of a run reached (its ``SPARSITY`` record).

    A pruning stage may end away from its target (CoFi warns when it does), so the search
    reports what the model has, not what was asked for.
    """
    reached = None
    for record in stages.values():
        for entry in record.get("transforms") or []:
            if isinstance(entry, dict) and isinstance(entry.get(SPARSITY), (int, float)):
                reached = float(entry[SPARSITY])
    return reached


def _metric(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise RunError(
            f"the validation metrics have no '{name}'",
            hint=did_you_mean(name, [k for k in metrics if "/" not in k]),
        )
    return float(metrics[name])
