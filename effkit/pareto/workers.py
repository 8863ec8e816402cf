"""The worker processes of a search: each samples and evaluates trials until the budget is met.

The budget is a number of distinct evaluations: a completed trial, or one that failed by an
error of its own, counts once; a trial that reused another's values (``duplicate_of``) does not.
A worker stops when the study holds the budget (trials still running included), when every
parameter set of a discrete space has been evaluated, or when the sampler keeps proposing
recipes that were already evaluated. One worker runs in this process; more are spawned, each
with its own logging and its share of the cores.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import warnings
from typing import TYPE_CHECKING

from effkit.pareto.base import Base
from effkit.pareto.context import Context
from effkit.pareto.evaluation import TrialEvaluation
from effkit.pareto.locks import SearchLocks
from effkit.pareto.samplers import make_sampler
from effkit.pareto.space import normalized
from effkit.pareto.spec import SearchSpec, grid_size
from effkit.pareto.storage import make_storage

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)

MAX_DUPLICATES = 30
"""Consecutive proposals of already-evaluated recipes after which a worker stops sampling."""


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


def run_worker(ctx: Context, index: int = 0) -> None:
    """Sample and run trials until the study holds ``ctx.trials`` distinct evaluations."""
    import optuna

    quiet_optuna(ctx.progress)
    storage = make_storage(ctx.storage)
    base = Base(ctx.spec, ctx.overrides)
    locks = SearchLocks(ctx.folder)
    probe = optuna.load_study(study_name=ctx.study_name, storage=storage)
    offset = 7919 * index + len(probe.get_trials(deepcopy=False))
    study = optuna.load_study(
        study_name=ctx.study_name, storage=storage, sampler=make_sampler(ctx.spec, offset)
    )
    evaluation = TrialEvaluation(ctx, base, locks)
    repeats = 0
    while True:
        evaluated, running = counts(study)
        if evaluated + running >= ctx.trials:
            break
        if exhausted(ctx.spec, study):
            log.info("every parameter set of the space has been evaluated")
            break
        study.optimize(evaluation, n_trials=1, catch=(Exception,))
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


def run_workers(ctx: Context) -> None:
    """Run ``ctx.workers`` workers to the end: in this process for one, spawned for more."""
    if ctx.workers == 1:
        run_worker(ctx, 0)
        return
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_worker_main, args=(ctx, i), name=f"effkit-search-{i}")
        for i in range(ctx.workers)
    ]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:  # they received the same Ctrl-C and fail their trials themselves
            proc.join(timeout=60)
        raise
    failed = [p.name for p in procs if p.exitcode]
    if failed:
        log.warning("worker(s) %s ended with an error; see their output", ", ".join(failed))
