"""Trials left running by a process that ended: noticing them, failing them, and their retries.

A running trial records its host and process id. A trial whose process is gone is found three
ways, and each one marks it FAIL (``interrupted`` says why) and enqueues its retry at once:

- the search's driver waits on its worker processes; when one ends abnormally, it fails the
  running trials of that process (:func:`fail_worker_trials`) the moment the process ends, and
  starts a replacement worker when the budget is not met (:mod:`effkit.pareto.workers`);
- before each trial, a worker fails the running trials of its own machine whose process is no
  longer alive (:func:`check_running`), so workers started by hand notice each other too;
- with an RDB storage, running trials send heartbeats, and a trial whose last heartbeat is
  older than the spec's ``heartbeat_grace_s`` is failed by Optuna when a worker next starts a
  trial (each worker checks before every trial), which covers workers on other machines.

A search that uses its folder's own storage holds ``locks/search.lock`` for its whole run, so a
trial it finds RUNNING at start belonged to a process that died; :func:`recover` fails it.

A failed trial that did not fail by an error of its own (killed, interrupted) is enqueued again
with the same parameters (``retry_of``, ``retry_reason``), and its retry takes over its run
folder so the interrupted stage continues from its checkpoint. A trial that failed with an
error keeps the error and counts as an evaluation.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING, Any

from effkit.pareto.context import HOST

if TYPE_CHECKING:
    import optuna

    from effkit.pareto.locks import SearchLocks


log = logging.getLogger(__name__)

GRACE_S = 120
"""Default seconds without a heartbeat after which a running trial counts as dead (RDB storage);
a search's workers use its spec's ``heartbeat_grace_s``."""
HEARTBEAT_S = 40
"""Default seconds between heartbeats: a third of the grace period (see :func:`heartbeat_s`)."""
MAX_ATTEMPTS = 3
"""A trial killed this many times is not enqueued again."""
INTERRUPTED = "it was interrupted"
"""Why a trial is retried when nothing more is known (Ctrl-C, or an older study)."""


def heartbeat_s(grace_s: int) -> int:
    """Seconds between heartbeats for a grace period: three beats fit in it, so one or two late
    beats (a busy database) do not fail a live trial."""
    return max(1, grace_s // 3)


def use_heartbeat_grace(storage: Any, grace_s: int) -> None:
    """Set an RDB storage's grace period (and heartbeat interval) to ``grace_s`` seconds."""
    import optuna

    if isinstance(storage, optuna.storages.RDBStorage):
        storage.grace_period = grace_s
        storage.heartbeat_interval = heartbeat_s(grace_s)


def _fail(study: optuna.Study, trial: Any, note: str) -> bool:
    """Mark a running trial FAIL with ``note``; False when it had finished meanwhile."""
    from optuna.trial import TrialState

    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "interrupted", note)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except Exception:  # it may have finished meanwhile
        return False
    log.warning("trial %d marked failed: %s", trial.number, note)
    return True


def _enqueue_retry(study: optuna.Study, trial: Any, reason: str | None = None) -> int | None:
    """Evaluate a killed or interrupted trial's parameters again (once per failure).

    Returns the attempt number of the retry, or None when none was enqueued.
    """
    from optuna.trial import TrialState

    if trial.state != TrialState.FAIL or "error" in trial.user_attrs or not trial.params:
        return None
    attempt = int(trial.user_attrs.get("attempt", 1))
    if attempt >= MAX_ATTEMPTS:
        return None
    others = study.get_trials(deepcopy=False)
    if any(o.user_attrs.get("retry_of") == trial.number for o in others):
        return None
    key = trial.user_attrs.get("recipe_key")
    if key and any(o.state == TrialState.COMPLETE and o.user_attrs.get("recipe_key") == key
                   for o in others):  # fmt: skip
        return None
    why = reason or trial.user_attrs.get("interrupted") or INTERRUPTED
    study.enqueue_trial(
        dict(trial.params),
        user_attrs={"retry_of": trial.number, "attempt": attempt + 1, "retry_reason": why},
    )
    log.info("trial %d will be evaluated again (attempt %d): %s", trial.number, attempt + 1, why)
    return attempt + 1


def retry_after_heartbeat(study: optuna.Study, trial: Any) -> None:
    """Optuna's callback for a trial whose heartbeat stopped: evaluate it again."""
    storage = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
    grace = getattr(storage, "grace_period", None)
    within = f" for over {grace} s" if grace else ""
    log.warning("trial %d sent no heartbeat%s: marked failed", trial.number, within)
    _enqueue_retry(study, trial, f"its heartbeat stopped (none{within})")


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


def _fail_and_retry(
    study: optuna.Study, locks: SearchLocks, chosen: Any, note: Any
) -> list[int]:  # fmt: skip
    """Fail the running trials ``chosen(trial)`` picks, with ``note(trial)``, and enqueue their
    retries; under the folder's ``recovery`` lock, so that two processes of this machine never
    enqueue one retry twice. Returns the numbers of the trials failed."""
    from optuna.trial import TrialState

    failed = []
    with locks.exclusive("recovery"):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if chosen(trial) and _fail(study, trial, note(trial)):
                failed.append(trial.number)
        if failed:
            trials = {t.number: t for t in study.get_trials(deepcopy=False)}
            for number in failed:
                _enqueue_retry(study, trials[number])
    return failed


def fail_worker_trials(study: optuna.Study, locks: SearchLocks, pid: int, how: str) -> list[int]:
    """Fail the running trials of worker process ``pid`` of this machine, which ended (``how``),
    and enqueue their retries; the numbers of the trials failed."""
    return _fail_and_retry(
        study,
        locks,
        lambda t: t.user_attrs.get("host") == HOST and t.user_attrs.get("pid") == pid,
        lambda t: f"its worker (pid {pid}) ended, {how}",
    )


def check_running(study: optuna.Study, locks: SearchLocks) -> None:
    """Before a trial: fail (and retry) the running trials of this machine whose process is
    gone, and, with heartbeats, those whose heartbeat stopped on any machine."""
    import optuna

    _fail_and_retry(
        study,
        locks,
        lambda t: t.user_attrs.get("host") == HOST and not _alive(t.user_attrs.get("pid")),
        lambda t: f"its worker (pid {t.user_attrs.get('pid')}) on {HOST} is gone",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # calls retry_after_heartbeat for each


def recover(study: optuna.Study, *, owner: bool) -> None:
    """Fail trials left RUNNING by dead processes, and enqueue interrupted trials again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mine = trial.user_attrs.get("host") == HOST and not _alive(trial.user_attrs.get("pid"))
        if owner or mine:
            _fail(study, trial, "the process running it ended; evaluated again")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        _enqueue_retry(study, trial)
