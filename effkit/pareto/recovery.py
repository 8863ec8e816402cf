"""Trials left running by a process that ended: heartbeats, failing them, and their retries.

A search that uses its folder's own storage holds ``locks/search.lock`` for its whole run, so a
trial it finds RUNNING at start belonged to a process that died; it is marked FAIL. With a shared
RDB storage, trials send heartbeats and Optuna fails those whose heartbeat stopped; a RUNNING
trial of this machine whose process is gone is failed at once. A failed trial that did not fail
by an error of its own (killed, interrupted) is enqueued again with the same parameters, and its
retry takes over its run folder so the interrupted stage continues from its checkpoint. A trial
that failed with an error keeps the error and counts as an evaluation.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from effkit.pareto.context import HOST

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)

HEARTBEAT_S = 60
GRACE_S = 180
MAX_ATTEMPTS = 3
"""A trial killed this many times is not enqueued again."""


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
    """Optuna's callback for a trial whose heartbeat stopped: evaluate it again."""
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
