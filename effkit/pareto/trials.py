"""A trial's life in the study: sampling, constraints, heartbeats, retries and the budget."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from typing import TYPE_CHECKING, Any

from effkit.pareto.spec import SearchSpec, grid_size, normalized

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)

HOST = socket.gethostname()
HEARTBEAT_S = 60
GRACE_S = 180
MAX_ATTEMPTS = 3
"""A trial killed this many times is not enqueued again."""
MAX_DUPLICATES = 30
"""Consecutive proposals of already-evaluated recipes after which a worker stops sampling."""


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
    trial.set_user_attr("constraint", value)
    if trial_constraints():
        trial.set_constraint("target", value)


def make_sampler(spec: SearchSpec, seed_offset: int = 0) -> Any:
    """The spec's sampler, seeded per process so that workers do not propose alike."""
    import optuna

    cfg = spec.sampler
    seed = cfg.seed + seed_offset
    constraints = constraint_values if spec.target is not None and not trial_constraints() else None
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=cfg.population_size, seed=seed, constraints_func=constraints
        )
    return optuna.samplers.TPESampler(
        n_startup_trials=cfg.startup_trials, seed=seed, constraints_func=constraints
    )


def quiet_optuna(progress: bool) -> None:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.INFO if progress else optuna.logging.WARNING)


def _fail(study: optuna.Study, trial: Any, note: str) -> None:
    from optuna.trial import TrialState

    storage = study._storage
    with contextlib.suppress(Exception):  # it may have finished meanwhile
        storage.set_trial_user_attr(trial._trial_id, "interrupted", note)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        log.warning("trial %d was running when its process ended: marked failed", trial.number)


def _enqueue_retry(study: optuna.Study, trial: Any) -> None:
    """Evaluate a killed or interrupted trial's parameters again (once per failure)."""
    from optuna.trial import TrialState

    if trial.state != TrialState.FAIL or "error" in trial.user_attrs or not trial.params:
        return
    attempt = int(trial.user_attrs.get("attempt", 1))
    if attempt >= MAX_ATTEMPTS:
        return
    others = study.get_trials(deepcopy=False)
    if any(o.user_attrs.get("retry_of") == trial.number for o in others):
        return
    key = trial.user_attrs.get("recipe_key")
    if key and any(o.state == TrialState.COMPLETE and o.user_attrs.get("recipe_key") == key
                   for o in others):  # fmt: skip
        return
    study.enqueue_trial(
        dict(trial.params), user_attrs={"retry_of": trial.number, "attempt": attempt + 1}
    )
    log.info("trial %d will be evaluated again (attempt %d)", trial.number, attempt + 1)


def retry_after_heartbeat(study: optuna.Study, trial: Any) -> None:
    _enqueue_retry(study, trial)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study: optuna.Study, *, owner: bool) -> None:
    """Fail trials left RUNNING by dead processes, and enqueue interrupted trials again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mine = trial.user_attrs.get("host") == HOST and not _alive(trial.user_attrs.get("pid"))
        if owner or mine:
            _fail(study, trial, "the process running it ended; evaluated again")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        _enqueue_retry(study, trial)


def counts(study: optuna.Study) -> tuple[int, int]:
    """Distinct evaluations so far (completed, or failed by an error) and trials running."""
    from optuna.trial import TrialState

    evaluated = running = 0
    for trial in study.get_trials(deepcopy=False):
        own = "duplicate_of" not in trial.user_attrs
        ran = trial.state == TrialState.COMPLETE and own
        if ran or (trial.state == TrialState.FAIL and "error" in trial.user_attrs and own):
            evaluated += 1
        elif trial.state == TrialState.RUNNING:
            running += 1
    return evaluated, running


def exhausted(spec: SearchSpec, study: optuna.Study) -> bool:
    """Whether every parameter set of a discrete space has been evaluated."""
    from optuna.trial import TrialState

    total = grid_size(spec)
    if total is None:
        return False
    seen = {
        tuple(normalized(t.params.get(name)) for name in spec.space)
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE or "error" in t.user_attrs
    }
    return len(seen) >= total
