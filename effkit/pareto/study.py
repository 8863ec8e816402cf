"""Running a search: the study, its workers, the best trial and the outputs at the end.

Storage (:mod:`effkit.pareto.storage`): by default ``sqlite:///<search dir>/study.db`` for one
worker and an Optuna journal file (``<search dir>/journal.log``) for ``workers > 1`` on one
machine; any Optuna RDB URL (PostgreSQL, MySQL) serves workers started by hand on several
machines. The first run of a folder records its storage and study in ``search.json``; later runs
resume them.

Recovery (:mod:`effkit.pareto.trials`): a search that uses its folder's own storage holds
``locks/search.lock`` for its whole run, so a trial it finds RUNNING at start belonged to a
process that died; it is marked FAIL. With a shared RDB storage, trials send heartbeats and
Optuna fails those whose heartbeat stopped; a RUNNING trial of this machine whose process is
gone is failed at once. A failed trial that did not fail by an error of its own (killed,
interrupted) is enqueued again with the same parameters, and its retry takes over its run folder
so the interrupted stage continues from its checkpoint. A trial that failed with an error keeps
the error and counts as an evaluation.

Deduplication (:mod:`effkit.pareto.evaluation`): a trial's identity is its resolved recipe. A
trial whose recipe a completed trial already ran reuses that trial's values (``duplicate_of``)
instead of running; one whose recipe another process is running at that moment is pruned. Only
distinct evaluations count towards the budget, so ``trials`` is the number of different stacks
measured.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from effkit.errors import RecipeError, RunError
from effkit.pareto import outputs
from effkit.pareto.base import Base, bench_protocol, check, objective_metric
from effkit.pareto.context import Context, SearchResult
from effkit.pareto.evaluation import TrialEvaluation, trial_runner
from effkit.pareto.locks import SearchLocks
from effkit.pareto.spec import SearchSpec, dump, load_spec
from effkit.pareto.storage import default_storage, make_storage, owned, shown
from effkit.pareto.trials import (
    MAX_DUPLICATES,
    constraint_values,
    counts,
    exhausted,
    make_sampler,
    quiet_optuna,
    recover,
    trial_constraints,
)
from effkit.recipe import NAME, Recipe
from effkit.storage import copy_tree, read_json, stable_hash, write_json, write_text

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)

DIRECTIONS: list[Literal["minimize", "maximize"]] = ["maximize", "maximize"]


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


def _run_workers(ctx: Context) -> None:
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


def _spec_key(spec: SearchSpec, base: Base) -> str:
    """What a study's trials depend on: the space, objectives, target, protocol, base recipe."""
    data = spec.model_dump(mode="json", include={"space", "objectives", "target", "benchmark"})
    return stable_hash({**data, "base": base.recipe.model_dump(mode="json")})


def _resolve_folder(
    folder: Path, spec: SearchSpec, study_name: str, storage: str | None, workers: int
) -> str:
    """Check the folder belongs to this search; the storage URL its study lives in."""
    if folder.exists() and not folder.is_dir():
        raise RunError(f"search folder '{folder}' is a file", hint="choose another --search-dir")
    record_path = folder / "search.json"
    if not record_path.exists():
        if folder.exists() and any(folder.iterdir()):
            raise RunError(
                f"search folder '{folder}' is not empty and holds no effkit search",
                hint="choose another --search-dir",
            )
        return storage or default_storage(folder, workers)
    try:
        record = read_json(record_path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(
            f"cannot read '{record_path}': {exc}",
            hint="restore it, or choose another --search-dir",
        ) from None
    if not isinstance(record, dict):
        raise RunError(
            f"'{record_path}' is not a search record (a JSON object with name, study, storage)",
            hint="restore it, or choose another --search-dir",
        )
    if record.get("name") != spec.name or record.get("study") != study_name:
        raise RunError(
            f"search folder '{folder}' holds study '{record.get('study')}' of search "
            f"'{record.get('name')}', not '{study_name}' of '{spec.name}'",
            hint="choose another --search-dir",
        )
    recorded = str(record.get("storage"))
    if storage is not None and storage != recorded:
        raise RunError(
            f"the study of '{folder}' lives in {recorded}, not {storage}",
            hint="leave --storage out to resume it, or choose another --search-dir",
        )
    return recorded


def _open_study(ctx: Context, base: Base) -> optuna.Study:
    import optuna

    try:
        storage = make_storage(ctx.storage)
        study = optuna.create_study(
            study_name=ctx.study_name,
            storage=storage,
            directions=DIRECTIONS,
            load_if_exists=True,
            sampler=make_sampler(ctx.spec),
        )
    except Exception as exc:  # a URL that names no database, a missing driver, no server
        raise RunError(
            f"cannot open the study storage {shown(ctx.storage)}: {type(exc).__name__}: {exc}",
            hint="check the --storage URL, its database driver and server",
        ) from exc
    key = _spec_key(ctx.spec, base)
    known = study.user_attrs.get("spec_key")
    if known is not None and known != key:
        raise RunError(
            f"study '{ctx.study_name}' was made by a different spec or base recipe (space, "
            "objectives, target, benchmark or recipe changed)",
            hint="use --study NAME and another --search-dir for a new study",
        )
    if known is None:
        study.set_user_attr("spec_key", key)
        study.set_user_attr("search", ctx.spec.name)
        study.set_metric_names([objective_metric(ctx.spec, base.recipe), "throughput_ratio"])
        for params in ctx.spec.start_with:
            study.enqueue_trial(dict(params))
    return study


def _claim_folder(ctx: Context) -> None:
    """Create the folder with ``search.json``, which makes it this search's from now on."""
    record_path = ctx.folder / "search.json"
    if not record_path.exists():
        ctx.folder.mkdir(parents=True, exist_ok=True)
        write_json(record_path, {
            "name": ctx.spec.name, "study": ctx.study_name, "storage": ctx.storage,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })  # fmt: skip


def _best_dir(ctx: Context, recipe: Recipe, best: dict[str, Any]) -> Path:
    """The folder the best trial is scored on test in: ``best/``, never the trial's own folder.

    A completed trial's folder stays as the trial left it (resuming and rerunning a search must
    not touch it). ``best/`` starts from the trial's stages (hard links, no training), or from
    the stage cache when the trial ran elsewhere; it is cleared when the best trial changes.
    """
    run_dir = ctx.folder / "best"
    recorded = run_dir / "recipe.yaml"
    if run_dir.exists() and not (
        recorded.is_file() and recorded.read_text(encoding="utf-8") == recipe.to_yaml()
    ):
        shutil.rmtree(run_dir)
    trial_dir = ctx.folder / str(best.get("run_dir") or "")
    manifest = trial_dir / "manifest.json"
    if best.get("run_dir") and manifest.is_file() and not run_dir.exists():
        if (trial_dir / "stages").is_dir():
            copy_tree(trial_dir / "stages", run_dir / "stages")
        write_json(run_dir / "manifest.json", read_json(manifest))
    return run_dir


def _evaluate_best(ctx: Context, base: Base, best: dict[str, Any]) -> dict[str, Any]:
    """Score the best trial on test and write it as a plain recipe (``best_recipe.yaml``)."""
    recipe = base.trial_recipe(ctx.spec, best["params"], best=True)
    run_dir = _best_dir(ctx, recipe, best)
    result = trial_runner(recipe, run_dir, SearchLocks(ctx.folder), ctx.progress).run()
    plain = recipe.model_copy(
        update={
            "name": f"{ctx.spec.name}-best",
            "description": f"Trial {best['number']} of search '{ctx.spec.name}': "
            f"{best['label']}. {base.recipe.description}".strip(),
            "benchmark": bench_protocol(ctx.spec, base.recipe),
        }
    )
    header = (
        f"# The best trial ({best['number']}) of search '{ctx.spec.name}' that meets its target: "
        f"{best['label']}.\n# A plain recipe: `effkit apply best_recipe.yaml` reproduces it.\n"
    )
    write_text(ctx.folder / "best_recipe.yaml", header + plain.to_yaml())
    return {"metrics": result.metrics, "run_dir": str(run_dir)}


def _finish(ctx: Context, base: Base, study: optuna.Study) -> SearchResult:
    metric = objective_metric(ctx.spec, base.recipe)
    rows = outputs.collect(study, ctx.spec, metric)
    front = outputs.pareto_front(rows)
    best = outputs.choose_best(rows)
    if best is not None:
        scored = _evaluate_best(ctx, base, best)
        best = {**best, "test": scored["metrics"].get("test", {}),
                "validation": scored["metrics"].get("validation", {})}  # fmt: skip
        with contextlib.suppress(Exception):
            study.set_user_attr("best", {"trial": best["number"], "test": best["test"]})
    else:
        (ctx.folder / "best_recipe.yaml").unlink(missing_ok=True)
    outputs.write_all(
        ctx.folder,
        spec=ctx.spec,
        study=study,
        rows=rows,
        front=front,
        best=best,
        metric=metric,
        protocol=bench_protocol(ctx.spec, base.recipe).model_dump(mode="json"),
        storage=shown(ctx.storage),
        study_name=ctx.study_name,
        constraints=constraint_values
        if ctx.spec.target is not None and not trial_constraints()
        else None,
    )
    return SearchResult(ctx.folder, ctx.study_name, ctx.storage, rows, front, best)


def search(
    spec: SearchSpec | str | Path,
    *,
    trials: int | None = None,
    storage: str | None = None,
    workers: int = 1,
    study: str | None = None,
    search_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> SearchResult:
    """Run (or resume) a search and write its outputs; see docs/search.md.

    ``overrides`` change the base recipe for every trial, as ``--set`` does for ``apply``.
    ``trials`` is the number of distinct evaluations the study should hold (default the spec's);
    with ``trials=0`` the outputs are written from what the study already holds.
    """
    if not isinstance(spec, SearchSpec):
        spec = load_spec(spec)
    base = check(spec, overrides)
    budget = spec.trials if trials is None else trials
    if budget < 0 or workers < 1:
        raise RecipeError("trials must be >= 0 and workers >= 1")
    study_name = study or spec.name
    if not NAME.match(study_name):
        raise RecipeError(f"study name '{study_name}': use letters, digits, '-', '_' and '.'")
    if storage is not None and "://" not in storage and not storage.startswith("journal:"):
        raise RecipeError(
            f"storage '{storage}' is not an Optuna storage URL",
            hint="e.g. postgresql://user:password@host/db, mysql://..., sqlite:///path.db",
        )
    folder = Path(search_dir) if search_dir is not None else Path("runs") / spec.name
    url = _resolve_folder(folder, spec, study_name, storage, workers)
    ctx = Context(spec=spec, overrides=list(overrides or []), folder=folder, study_name=study_name,
                  storage=url, trials=budget, workers=workers, progress=progress,
                  owner=owned(folder, url))  # fmt: skip
    quiet_optuna(progress)
    if ctx.owner:
        _claim_folder(ctx)  # the folder's own storage lives in it
    locks = SearchLocks(folder)
    with locks.owner() if ctx.owner else contextlib.nullcontext():
        optuna_study = _open_study(ctx, base)  # refuses a study of another spec
        _claim_folder(ctx)  # a shared storage is recorded once it opened
        write_text(folder / "spec.yaml", dump(spec))
        write_text(folder / "base_recipe.yaml", base.recipe.to_yaml())
        recover(optuna_study, owner=ctx.owner)
        try:
            _run_workers(ctx)
        finally:
            recover(optuna_study, owner=ctx.owner)
        return _finish(ctx, base, optuna_study)
