"""Running a search: its folder, its study, its workers, and the outputs at the end.

Storage (:mod:`effkit.pareto.storage`): by default ``sqlite:///<search dir>/study.db`` for one
worker and an Optuna journal file (``<search dir>/journal.log``) for ``workers > 1`` on one
machine; any Optuna RDB URL (PostgreSQL, MySQL) serves workers started by hand on several
machines. The first run of a folder records its storage and study in ``search.json``; later runs
resume them. A study made by another spec or base recipe is refused.

The driver holds the folder's lock while it runs (when the storage is the folder's own), fails
and retries the trials that dead processes left running, before and after the workers
(:mod:`effkit.pareto.recovery`), runs the workers (:mod:`effkit.pareto.workers`), each trial
being one :class:`~effkit.pareto.evaluation.TrialEvaluation`, then scores the best trial
(:mod:`effkit.pareto.best`) and writes the outputs (:mod:`effkit.pareto.outputs`).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from effkit.errors import RecipeError, RunError
from effkit.pareto import outputs
from effkit.pareto.base import Base, bench_protocol, check, goal_metric
from effkit.pareto.best import evaluate_best
from effkit.pareto.context import Context, SearchResult
from effkit.pareto.locks import SearchLocks
from effkit.pareto.recovery import recover
from effkit.pareto.samplers import constraints_func, make_sampler
from effkit.pareto.spec import SearchSpec, dump, load_spec
from effkit.pareto.storage import default_storage, make_storage, owned, rdb_url, shown
from effkit.pareto.workers import quiet_optuna, run_workers
from effkit.recipe import NAME
from effkit.storage import read_json, stable_hash, write_json, write_text

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)

GOAL_DIRECTIONS: list[Literal["minimize", "maximize"]] = ["maximize", "maximize"]
"""Both goals, the validation metric and the throughput ratio, are maximised."""


def _spec_key(spec: SearchSpec, base: Base) -> str:
    """What a study's trials depend on: the space, goals, target, protocol and base recipe."""
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
            directions=GOAL_DIRECTIONS,
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
        study.set_metric_names([goal_metric(ctx.spec, base), "throughput_ratio"])
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


def _finish(ctx: Context, base: Base, study: optuna.Study) -> SearchResult:
    metric = goal_metric(ctx.spec, base)
    rows = outputs.collect(study, ctx.spec, metric)
    front = outputs.pareto_front(rows)
    best = outputs.choose_best(rows)
    if best is not None:
        scored = evaluate_best(ctx, base, best)
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
        constraints=constraints_func(ctx.spec),
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
            hint="e.g. postgresql://user:password@host/db, mysql+pymysql://..., sqlite:///path.db",
        )
    folder = Path(search_dir) if search_dir is not None else Path("runs") / spec.name
    url = _resolve_folder(folder, spec, study_name, storage, workers)
    if not url.startswith("journal:"):
        rdb_url(url)  # a missing database driver stops the search here, naming the extra
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
            run_workers(ctx)
        finally:
            recover(optuna_study, owner=ctx.owner)
        return _finish(ctx, base, optuna_study)
