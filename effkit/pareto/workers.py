"""The worker processes of a search: each samples and evaluates trials until the budget is met.

The budget is a number of distinct evaluations: a completed trial, or one that failed by an
error of its own, counts once; a trial that reused another's values (``duplicate_of``) does not.
A worker stops when the study holds the budget (trials still running included), when every
parameter set of a discrete space has been evaluated, or when the sampler keeps proposing
recipes that were already evaluated. One worker runs in this process; more are spawned, each
with its own logging and its share of the cores.

The driver waits on its spawned workers together: when one ends abnormally (killed, crashed),
the trials it was running are failed and enqueued again at once, and a replacement worker is
started while the budget is not met (at most ``workers * MAX_ATTEMPTS`` replacements in one
run). Before each trial a worker also fails the trials of dead processes it can see
(:func:`effkit.pareto.recovery.check_running`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import warnings
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from effkit.pareto.base import Base
from effkit.pareto.context import HOST, Context
from effkit.pareto.evaluation import TrialEvaluation
from effkit.pareto.locks import SearchLocks
from effkit.pareto.recovery import (
    MAX_ATTEMPTS,
    check_running,
    fail_worker_trials,
    use_heartbeat_grace,
)
from effkit.pareto.samplers import make_sampler
from effkit.pareto.space import normalized
from effkit.pareto.spec import SearchSpec, grid_size
from effkit.pareto.storage import make_storage

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)

MAX_DUPLICATES = 30
"""Consecutive proposals of already-evaluated recipes after which a worker stops sampling."""

KILL_TRIAL_ENV = "EFFKIT_TEST_KILL_TRIAL"
"""For tests only: a worker that starts the trial of this number kills itself (SIGKILL) once the
trial holds its host, process id and parameters, as a crash in the middle of a trial would."""


def quiet_optuna(progress: bool) -> None:
    """Optuna's logging at the search's verbosity, without its experimental-feature warnings."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.INFO if progress else optuna.logging.WARNING)


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


def budget_left(ctx: Context, study: optuna.Study) -> bool:
    """Whether the study still lacks evaluations, counting the trials running."""
    evaluated, running = counts(study)
    return evaluated + running < ctx.trials and not exhausted(ctx.spec, study)


def _objective(evaluation: TrialEvaluation) -> Any:
    """The trial callable, with the test-only kill of :data:`KILL_TRIAL_ENV`."""
    kill = os.environ.get(KILL_TRIAL_ENV)
    if kill is None:
        return evaluation

    def objective(trial: optuna.Trial) -> list[float]:
        if str(trial.number) == kill:
            trial.set_user_attr("host", HOST)
            trial.set_user_attr("pid", os.getpid())
            for name, param in evaluation.spec.sampling_space():
                param.suggest(trial, name)
            os.kill(os.getpid(), signal.SIGKILL)
        return evaluation(trial)

    return objective


def run_worker(ctx: Context, index: int = 0) -> None:
    """Sample and run trials until the study holds ``ctx.trials`` distinct evaluations."""
    import optuna

    quiet_optuna(ctx.progress)
    storage = make_storage(ctx.storage)
    use_heartbeat_grace(storage, ctx.spec.heartbeat_grace_s)
    base = Base(ctx.spec, ctx.overrides)
    locks = SearchLocks(ctx.folder)
    probe = optuna.load_study(study_name=ctx.study_name, storage=storage)
    offset = 7919 * index + len(probe.get_trials(deepcopy=False))
    study = optuna.load_study(
        study_name=ctx.study_name, storage=storage, sampler=make_sampler(ctx.spec, offset)
    )
    evaluation = TrialEvaluation(ctx, base, locks)
    objective = _objective(evaluation)
    repeats = 0
    while True:
        check_running(study, locks)  # trials of dead processes no longer hold the budget
        evaluated, running = counts(study)
        if evaluated + running >= ctx.trials:
            break
        if exhausted(ctx.spec, study):
            log.info("every parameter set of the space has been evaluated")
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
        repeats = repeats + 1 if evaluation.last_was_duplicate else 0
        if repeats >= MAX_DUPLICATES:
            log.warning("the sampler keeps proposing evaluated recipes; stopping this worker")
            break


def _worker_main(ctx: Context, index: int) -> None:
    """Entry point of a spawned worker: its own logging and its share of the cores."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=logging.INFO if ctx.progress else logging.WARNING,
        format=f"[worker {index}] %(message)s",
        force=True,
    )
    with contextlib.suppress(ImportError):
        import transformers

        transformers.logging.set_verbosity_error()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.workers))
    try:
        run_worker(ctx, index)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _ended(exitcode: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that ended it)."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}"
    return f"exit code {exitcode}"


def _exitcode(proc: multiprocessing.process.BaseProcess) -> int | None:
    """The exit code of a process that ended, read without reaping it where the system allows.

    An unreaped process still answers ``os.kill(pid, 0)``, so no other worker takes it for dead
    (and fails its trials with less to say) before this process has failed them.
    """
    waitid = getattr(os, "waitid", None)
    if waitid is None or proc.pid is None:
        proc.join()
        return proc.exitcode
    try:
        info = waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # reaped already
        proc.join()
        return proc.exitcode
    if info is None:
        return None
    killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
    return -info.si_status if killed else info.si_status


class _Workers:
    """The spawned workers of one run, and their replacements."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.spawn = multiprocessing.get_context("spawn")
        self.running: dict[Any, multiprocessing.process.BaseProcess] = {}  # by sentinel
        self.started = 0
        self.replacements = 0
        self.limit = ctx.workers * MAX_ATTEMPTS
        self.failed: list[str] = []

    def start(self) -> None:
        proc = self.spawn.Process(target=_worker_main, args=(self.ctx, self.started),
                                  name=f"effkit-search-{self.started}")  # fmt: skip
        proc.start()
        self.running[proc.sentinel] = proc
        self.started += 1

    def ended(
        self, proc: multiprocessing.process.BaseProcess, code: int, study: optuna.Study
    ) -> None:
        """A worker ended abnormally: fail and retry its trials, replace it if work is left
        (not one stopped by Ctrl-C, exit code 130: the whole search is being stopped)."""
        how = _ended(code)
        self.failed.append(proc.name)
        trials = fail_worker_trials(study, SearchLocks(self.ctx.folder), proc.pid or -1, how)
        lost = ", ".join(map(str, trials)) or "none"
        if code == 130 or not budget_left(self.ctx, study):
            log.warning("worker %s (pid %s) ended, %s (trials failed and enqueued again: %s)",
                        proc.name, proc.pid, how, lost)  # fmt: skip
        elif self.replacements >= self.limit:
            log.warning("worker %s (pid %s) ended, %s (trials failed: %s); not replaced: %d "
                        "workers were replaced already", proc.name, proc.pid, how, lost,
                        self.replacements)  # fmt: skip
        else:
            self.replacements += 1
            log.warning("worker %s (pid %s) ended, %s (trials failed and enqueued again: %s); "
                        "starting worker %d in its place (replacement %d of at most %d)",
                        proc.name, proc.pid, how, lost, self.started, self.replacements,
                        self.limit)  # fmt: skip
            self.start()

    def join(self, study: optuna.Study) -> None:
        """Wait until every worker has ended, replacing those that end abnormally."""
        while self.running:
            for sentinel in wait(list(self.running)):
                proc = self.running.pop(sentinel)
                code = _exitcode(proc)
                if code:
                    self.ended(proc, code, study)
                proc.join()


def run_workers(ctx: Context) -> None:
    """Run ``ctx.workers`` workers to the end: in this process for one, spawned for more.

    A spawned worker that ends abnormally is noticed as soon as its process ends: its running
    trials are failed and enqueued again, and another worker takes its place.
    """
    if ctx.workers == 1:
        run_worker(ctx, 0)
        return
    import optuna

    study = optuna.load_study(study_name=ctx.study_name, storage=make_storage(ctx.storage))
    workers = _Workers(ctx)
    for _ in range(ctx.workers):
        workers.start()
    try:
        workers.join(study)
    except KeyboardInterrupt:
        for proc in workers.running.values():  # they received the same Ctrl-C and fail their
            proc.join(timeout=60)  # trials themselves
        raise
    if workers.failed:
        log.warning("worker(s) %s ended abnormally; see their output",
                    ", ".join(workers.failed))  # fmt: skip
