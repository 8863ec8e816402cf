"""Running a search: the Optuna study, its storage, trials, throughput, recovery and workers.

Storage: by default ``sqlite:///<search dir>/study.db`` for one worker and an Optuna journal file
(``<search dir>/journal.log``) for ``workers > 1`` on one machine; any Optuna RDB URL
(PostgreSQL, MySQL) serves workers started by hand on several machines. The first run of a
folder records its storage and study in ``search.json``; later runs resume them.

Recovery: a search that uses its folder's own storage holds ``locks/search.lock`` for its whole
run, so a trial it finds RUNNING at start belonged to a process that died; it is marked FAIL.
With a shared RDB storage, trials send heartbeats and Optuna fails those whose heartbeat
stopped; a RUNNING trial of this machine whose process is gone is failed at once. A failed trial
that did not fail by an error of its own (killed, interrupted) is enqueued again with the same
parameters, and its retry takes over its run folder so the interrupted stage continues from its
checkpoint. A trial that failed with an error keeps the error and counts as an evaluation.

Deduplication: a trial's identity is its resolved recipe. A trial whose recipe a completed
trial already ran reuses that trial's values (``duplicate_of``) instead of running; one whose
recipe another process is running at that moment is pruned. Only distinct evaluations count
towards the budget, so ``trials`` is the number of different stacks measured.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from effkit.errors import RecipeError, RunError, did_you_mean
from effkit.models import EffkitModel
from effkit.pareto import outputs
from effkit.pareto.locks import SearchLocks
from effkit.pareto.spec import (
    Base,
    SearchSpec,
    _norm,
    bench_protocol,
    check,
    dump,
    grid_size,
    load_spec,
    objective_metric,
    params_label,
    target_metric,
    trial_overrides,
)
from effkit.recipe import NAME, Recipe
from effkit.runner import Runner
from effkit.storage import copy_tree, read_json, stable_hash, write_json, write_text

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
DIRECTIONS: list[Literal["minimize", "maximize"]] = ["maximize", "maximize"]


@dataclass
class Context:
    """Everything a worker needs, picklable so that spawned workers receive it whole."""

    spec: SearchSpec
    overrides: list[str]
    folder: Path
    study_name: str
    storage: str
    trials: int
    workers: int = 1
    progress: bool = True
    owner: bool = True


@dataclass
class SearchResult:
    """What a search produced; ``search_dir`` holds it all on disk."""

    search_dir: Path
    study_name: str
    storage: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    @property
    def report(self) -> Path:
        return self.search_dir / "report.md"

    @property
    def best_recipe(self) -> Path | None:
        path = self.search_dir / "best_recipe.yaml"
        return path if path.is_file() else None


# --------------------------------------------------------------------------- storage


def make_storage(url: str) -> Any:
    """An Optuna storage: ``journal:PATH`` for a journal file, otherwise an RDB URL."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:") :]))
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 120}}  # several local workers wait, not fail
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine,
        heartbeat_interval=HEARTBEAT_S,
        grace_period=GRACE_S,
        heartbeat_stale_trial_callback=_retry_after_heartbeat,
    )


def _default_storage(folder: Path, workers: int) -> str:
    if workers == 1:
        return f"sqlite:///{(folder / 'study.db').resolve()}"
    return f"journal:{(folder / 'journal.log').resolve()}"


def _shown(url: str) -> str:
    """A storage URL for messages, without its password."""
    if url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..." if "://" in url else url


def _owned(folder: Path, url: str) -> bool:
    """Whether ``url`` is one of the folder's own storages (so the search owns it)."""
    return url in (_default_storage(folder, 1), _default_storage(folder, 2))


def _constraints(trial: Any) -> list[float]:
    """Optuna constraint: target minus the trial's metric (<= 0 meets the target)."""
    value = trial.user_attrs.get("constraint")
    return [float(value)] if value is not None else [1.0]


def _trial_constraints() -> bool:
    """Whether trials carry their constraints themselves (Optuna 5's ``Trial.set_constraint``);
    older Optuna needs the samplers' ``constraints_func``."""
    import optuna

    return hasattr(optuna.trial.Trial, "set_constraint")


def _set_constraint(trial: Any, value: float) -> None:
    trial.set_user_attr("constraint", value)
    if _trial_constraints():
        trial.set_constraint("target", value)


def make_sampler(spec: SearchSpec, seed_offset: int = 0) -> Any:
    """The spec's sampler, seeded per process so that workers do not propose alike."""
    import optuna

    cfg = spec.sampler
    seed = cfg.seed + seed_offset
    constraints = _constraints if spec.target is not None and not _trial_constraints() else None
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=cfg.population_size, seed=seed, constraints_func=constraints
        )
    return optuna.samplers.TPESampler(
        n_startup_trials=cfg.startup_trials, seed=seed, constraints_func=constraints
    )


def _quiet_optuna(progress: bool) -> None:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.INFO if progress else optuna.logging.WARNING)


# --------------------------------------------------------------------------- recovery


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


def _retry_after_heartbeat(study: optuna.Study, trial: Any) -> None:
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


# --------------------------------------------------------------------------- budget


def _counts(study: optuna.Study) -> tuple[int, int]:
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


def _exhausted(spec: SearchSpec, study: optuna.Study) -> bool:
    """Whether every parameter set of a discrete space has been evaluated."""
    from optuna.trial import TrialState

    total = grid_size(spec)
    if total is None:
        return False
    seen = {
        tuple(_norm(t.params.get(name)) for name in spec.space)
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE or "error" in t.user_attrs
    }
    return len(seen) >= total


# --------------------------------------------------------------------------- a trial


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


class Throughput:
    """Measures trial models against the base recipe's starting model, one process at a time."""

    def __init__(self, ctx: Context, base: Base, locks: SearchLocks) -> None:
        self.ctx = ctx
        self.protocol = bench_protocol(ctx.spec, base.recipe)
        self.locks = locks
        self.baseline_path = ctx.folder / f"baseline-{HOST}.json"
        self.baseline_key = stable_hash(
            {"protocol": self.protocol.model_dump(mode="json"),
             "model": base.recipe.model.model_dump(mode="json")}
        )  # fmt: skip

    def _bench(self, models: dict[str, EffkitModel], baseline: str | None) -> Any:
        from effkit.bench import benchmark, resolve_device

        device = resolve_device(self.protocol.device)
        placed = {name: m.to(device).eval() for name, m in models.items()}
        first = next(iter(placed.values()))
        try:
            return benchmark(
                placed,
                self.protocol,
                vocab_size=first.vocab_size,
                baseline=baseline,
                type_vocab_size=first.type_vocab_size,
                progress=self.ctx.progress and self.ctx.workers == 1,
            )
        finally:
            for m in placed.values():
                m.to("cpu")

    def _baseline(self, runner: Runner) -> float:
        """The baseline's samples/s, once per search and machine (the caller holds the lock)."""
        if self.baseline_path.exists():
            saved = read_json(self.baseline_path)
            if saved.get("key") == self.baseline_key:
                return float(saved["samples_per_s"])
        result = self._bench({"baseline": runner.initial_model()}, None)
        rate = result.timings["baseline"].samples_per_s
        write_json(self.baseline_path, {"key": self.baseline_key, "samples_per_s": rate,
                                        "host": HOST, **result.to_dict()})  # fmt: skip
        return float(rate)

    def measure(self, model: EffkitModel, runner: Runner) -> dict[str, Any]:
        """Samples/s of ``model`` and its ratio to the baseline, with nothing else running."""
        with self.locks.measuring():
            if self.ctx.spec.objectives.baseline == "each-trial":
                result = self._bench({"final": model, "baseline": runner.initial_model()},
                                     "baseline")  # fmt: skip
                base_rate = result.timings["baseline"].samples_per_s
            else:
                base_rate = self._baseline(runner)
                result = self._bench({"final": model}, None)
        timing = result.timings["final"]
        env = result.environment
        return {
            "samples_per_s": timing.samples_per_s,
            "baseline_samples_per_s": base_rate,
            "ratio": timing.samples_per_s / base_rate if base_rate > 0 else 0.0,
            "latency_ms": timing.latency_ms,
            "threads": result.settings.get("threads"),
            "load": [env.get("load_before"), env.get("load_after")],
            "host": HOST,
        }


class Objective:
    """One trial: sample, build and validate the recipe, dedupe, run, score, measure."""

    def __init__(self, ctx: Context, base: Base, locks: SearchLocks) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.base = base
        self.locks = locks
        self.metric = objective_metric(ctx.spec, base.recipe)
        self.target_metric = target_metric(ctx.spec, base.recipe)
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
            _set_constraint(trial, other.user_attrs["constraint"])
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
            _set_constraint(trial, self.spec.target.min - reached)
        trial.set_user_attr("seconds", round(time.perf_counter() - began, 1))
        return [value, float(throughput["ratio"])]


def reached_sparsity(stages: dict[str, dict[str, Any]]) -> float | None:
    """The sparsity the last pruning transform of a run reached (its ``sparsity`` record).

    A pruning stage may end away from its target (CoFi warns when it does), so the search
    reports what the model has, not what was asked for.
    """
    reached = None
    for record in stages.values():
        for entry in record.get("transforms") or []:
            if isinstance(entry, dict) and isinstance(entry.get("sparsity"), (int, float)):
                reached = float(entry["sparsity"])
    return reached


def _metric(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise RunError(
            f"the validation metrics have no '{name}'",
            hint=did_you_mean(name, [k for k in metrics if "/" not in k]),
        )
    return float(metrics[name])


# --------------------------------------------------------------------------- workers


def run_worker(ctx: Context, index: int = 0) -> None:
    """Sample and run trials until the study holds ``ctx.trials`` distinct evaluations."""
    import optuna

    _quiet_optuna(ctx.progress)
    storage = make_storage(ctx.storage)
    base = Base(ctx.spec, ctx.overrides)
    locks = SearchLocks(ctx.folder)
    probe = optuna.load_study(study_name=ctx.study_name, storage=storage)
    offset = 7919 * index + len(probe.get_trials(deepcopy=False))
    study = optuna.load_study(
        study_name=ctx.study_name, storage=storage, sampler=make_sampler(ctx.spec, offset)
    )
    objective = Objective(ctx, base, locks)
    repeats = 0
    while True:
        evaluated, running = _counts(study)
        if evaluated + running >= ctx.trials:
            break
        if _exhausted(ctx.spec, study):
            log.info("every parameter set of the space has been evaluated")
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
        repeats = repeats + 1 if objective.last_was_duplicate else 0
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


# --------------------------------------------------------------------------- the search


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
        return storage or _default_storage(folder, workers)
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
            f"cannot open the study storage {_shown(ctx.storage)}: {type(exc).__name__}: {exc}",
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
        storage=_shown(ctx.storage),
        study_name=ctx.study_name,
        constraints=_constraints
        if ctx.spec.target is not None and not _trial_constraints()
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
                  owner=_owned(folder, url))  # fmt: skip
    _quiet_optuna(progress)
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
