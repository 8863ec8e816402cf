"""Running recipes: stages into a run folder, with a manifest, resume and a stage cache.

A run folder holds the resolved recipe (``recipe.yaml``), a manifest of completed stages with
the hash of everything each depended on (``manifest.json``), each stage's model and record
(``stages/NAME/``), the final metrics (``metrics.json``), the benchmark (``bench.json``) and
``report.md``. Every file is written atomically.

Re-running the same recipe resumes: a stage whose key (the hash of the model source, task, data,
seed, every earlier stage and its own configuration, with its transforms' and objective's
defaults filled in) is already complete is not run again, and
a stage that was interrupted continues from its last checkpoint. Completed stages are also kept
in a cache shared by all runs (``$EFFKIT_CACHE``, default ``~/.cache/effkit``), so that a sweep
over the last stage's settings trains the earlier stages once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from effkit.checks import check_max_length
from effkit.data import TaskData, load_task_data
from effkit.errors import DataError, RunError
from effkit.inference import evaluate_examples
from effkit.metrics import mean_std
from effkit.models import EffkitModel, is_effkit_dir, load, load_model, save
from effkit.recipe import Recipe, StageConfig, load_recipe
from effkit.stage import fit, stack
from effkit.storage import copy_tree, read_json, stable_hash, write_json, write_text
from effkit.train import accelerator_for, set_seed
from effkit.transform import stage_refs
from effkit.versions import effkit_version

__all__ = ["RunResult", "Runner", "cache_root", "fit", "predict", "run", "stack"]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def _folder_fingerprint(source: str) -> str | None:
    """What identifies a local model folder's contents (configs, and weight sizes and times)."""
    folder = Path(source)
    if not folder.is_dir():
        return None
    facts = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            facts.append((path.name, path.read_text(encoding="utf-8", errors="replace")))
        elif path.is_file():
            stat = path.stat()
            facts.append((path.name, f"{stat.st_size}:{stat.st_mtime_ns}"))
    return stable_hash(facts)


def cache_root() -> Path:
    """The stage cache shared by all runs on this machine."""
    return Path(os.environ.get("EFFKIT_CACHE", Path.home() / ".cache" / "effkit"))


@dataclass
class RunResult:
    """What a recipe run produced; ``run_dir`` holds it all on disk."""

    run_dir: Path
    recipe: Recipe
    model: EffkitModel
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    bench: dict[str, Any] | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"


# --------------------------------------------------------------------------- stages


def _aggregate(runs: list[dict[str, float]]) -> dict[str, float]:
    """One run's metrics as they are; several runs' as means with a ``_std`` beside each."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, float] = {}
    for name in runs[0]:
        mean, std = mean_std([run[name] for run in runs])
        out[name], out[f"{name}_std"] = mean, std
    return out


# --------------------------------------------------------------------------- the run


class StageGuard(Protocol):
    """What a run holds while it produces a stage, for runs that share one stage cache.

    ``stage(key)`` is held while the stage with that cache key is produced, so that a second
    run reaching the same stage waits and then takes it from the cache; ``work()`` is held
    while training or evaluating (a search measures throughput only when nothing holds it).
    """

    def stage(self, key: str) -> contextlib.AbstractContextManager[None]: ...

    def work(self) -> contextlib.AbstractContextManager[None]: ...


class NoGuard:
    """A run on its own: nothing to wait for."""

    @contextlib.contextmanager
    def stage(self, key: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def work(self) -> Iterator[None]:
        yield


class Runner:
    """Runs one recipe into one run folder."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path | None = None,
        *,
        progress: bool = True,
        cache: bool = True,
        benchmark: bool = True,
        guard: StageGuard | None = None,
    ) -> None:
        self.recipe = recipe
        self.guard: StageGuard = guard or NoGuard()
        self.run_dir = Path(run_dir) if run_dir is not None else Path("runs") / recipe.name
        self.progress = progress
        self.use_cache = cache
        self.do_benchmark = benchmark
        self.accelerator = accelerator_for("auto")
        self.main = self.accelerator.is_main_process
        self.data: TaskData | None = None
        self.keys: dict[str, str] = {}
        self.needs: dict[str, set[str]] = {}  # the earlier stages each stage reads
        self.manifest: dict[str, Any] = {}

    # ------------------------------------------------------------------ folder and keys

    def _check_folder(self) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunError(
                f"run folder '{self.run_dir}' is a file", hint="choose another --run-dir"
            )
        path = self.run_dir / "manifest.json"
        if not path.exists():
            if self.run_dir.exists() and any(self.run_dir.iterdir()):
                raise RunError(
                    f"run folder '{self.run_dir}' is not empty and holds no effkit manifest",
                    hint="choose another --run-dir",
                )
            return
        manifest = read_json(path)
        if manifest.get("recipe") != self.recipe.name:
            raise RunError(
                f"run folder '{self.run_dir}' belongs to recipe '{manifest.get('recipe')}', "
                f"not '{self.recipe.name}'",
                hint="choose another --run-dir, or delete that folder",
            )
        self.manifest = manifest

    def _stage_keys(self) -> dict[str, str]:
        assert self.data is not None or not self.recipe.stages
        previous = stable_hash(
            {
                "effkit": effkit_version(),
                "model": self.recipe.model.model_dump(mode="json"),
                "task": self.recipe.task.model_dump(mode="json"),
                "data": self.recipe.data.model_dump(mode="json") if self.recipe.data else None,
                "data_fingerprint": self.data.fingerprint() if self.data else None,
                "model_fingerprint": _folder_fingerprint(self.recipe.model.source),
                "seed": self.recipe.seed,
            }
        )
        keys = {"initial": previous}
        # the stages whose output each key already depends on
        ancestry: dict[str, set[str]] = {"initial": set()}
        # how often a stage logs or checkpoints does not change what it computes
        bookkeeping: Any = {"train": {"checkpoint_every", "log_every"}, "start": True}
        last = "initial"
        for stage in self.recipe.stages:
            start = stage.start or last
            dumped = stage.model_dump(mode="json", exclude=bookkeeping)
            # a plugin's defaults count too: a changed default changes what the stage computes
            dumped.update(stage.resolved_plugins())
            hashed: dict[str, Any] = {"previous": keys[start], "stage": dumped}
            # an earlier stage a plugin names in a StageRef field (a teacher)
            plugins = [*stage.build_transforms(), stage.build_objective()]
            named = sorted({ref for p in plugins for ref in stage_refs(p)} & set(ancestry))
            outside = [name for name in named if name != start and name not in ancestry[start]]
            if outside:
                hashed["uses"] = {name: keys[name] for name in outside}
            keys[stage.name] = stable_hash(hashed)
            ancestry[stage.name] = ancestry[start] | {start, *outside}
            self.needs[stage.name] = {start, *named} - {"initial"}
            last = stage.name
        return keys

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / "stages" / name

    def _cached(self, key: str) -> Path:
        return cache_root() / "stages" / key

    def _completed(self, stage: StageConfig) -> bool:
        entry = self.manifest.get("stages", {}).get(stage.name)
        model_dir = self.stage_dir(stage.name) / "model"
        if entry and entry.get("key") == self.keys[stage.name] and is_effkit_dir(model_dir):
            return True
        cached = self._cached(self.keys[stage.name])
        if self.use_cache and is_effkit_dir(cached / "model") and (cached / "stage.json").exists():
            if self.main:
                shutil.rmtree(self.stage_dir(stage.name), ignore_errors=True)
                copy_tree(cached, self.stage_dir(stage.name))
                record = read_json(self.stage_dir(stage.name) / "stage.json")
                self._record_stage(stage, record, cached=True)
            self.accelerator.wait_for_everyone()
            return True
        return False

    def _record_stage(self, stage: StageConfig, record: dict[str, Any], cached: bool) -> None:
        self.manifest.setdefault("stages", {})[stage.name] = {
            "key": self.keys[stage.name],
            "completed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "from_cache": cached,
            "seconds": record.get("train", {}).get("seconds"),
        }
        self._write_manifest()

    def _write_manifest(self) -> None:
        if not self.main:
            return
        self.manifest.update(
            {
                "format_version": MANIFEST_VERSION,
                "recipe": self.recipe.name,
                "effkit_version": effkit_version(),
                "stage_order": [s.name for s in self.recipe.stages],
            }
        )
        write_json(self.run_dir / "manifest.json", self.manifest)

    def resolve_model(self, ref: str) -> EffkitModel:
        """An earlier stage's model by name, or a model folder (for teachers)."""
        names = [s.name for s in self.recipe.stages]
        if ref in names:
            path = self.stage_dir(ref) / "model"
            if not is_effkit_dir(path):
                raise RunError(f"stage '{ref}' has not run yet, so it cannot be used here")
            return load(path)
        if ref == "initial":
            return self.initial_model()
        if Path(ref).is_dir():
            return load(ref) if is_effkit_dir(ref) else self.initial_model(ref)
        raise RunError(f"'{ref}' is neither a stage of this recipe nor a model folder")

    def initial_model(self, source: Any = None) -> EffkitModel:
        """The recipe's starting model (seeded, so its fresh head is the same every run)."""
        set_seed(self.recipe.seed)
        cfg = (
            self.recipe.model
            if source is None
            else self.recipe.model.model_copy(update={"source": str(source)})
        )
        labels = self.data.labels if self.data is not None else self.recipe.task.labels
        model = load_model(cfg, task=self.recipe.task.type, labels=labels)
        if self.recipe.data is not None:
            model.max_length = self.recipe.data.max_length
            check_max_length(model, model.max_length, "data.max_length")
        return model

    # ------------------------------------------------------------------ the run

    def run(self) -> RunResult:
        recipe = self.recipe
        self._check_folder()
        if recipe.data is not None:
            self.data = load_task_data(recipe.data, recipe.task.type, recipe.task.labels)
        self.keys = self._stage_keys()
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "recipe.yaml", recipe.to_yaml())
            self._write_manifest()
        self.accelerator.wait_for_everyone()

        # resume: run only the stages whose output is missing and still needed
        completed = {stage.name for stage in recipe.stages if self._completed(stage)}
        needed = {recipe.stages[-1].name} if recipe.stages else set()
        pending: set[str] = set()
        for stage in reversed(recipe.stages):
            if stage.name in needed and stage.name not in completed:
                pending.add(stage.name)
                needed |= self.needs[stage.name]
        if completed:
            log.info("reusing %d completed stage(s): %s", len(completed),
                     ", ".join(s.name for s in recipe.stages if s.name in completed))  # fmt: skip
        model: EffkitModel | None = None
        previous = "initial"
        for stage in recipe.stages:
            if stage.name in pending:
                start = stage.start or previous
                if model is None or start != previous:
                    model = self.resolve_model(start)
                model = self._run_stage(model, stage)
            else:
                model = None
            previous = stage.name
        if model is None:
            model = self.resolve_model(previous)

        result = RunResult(run_dir=self.run_dir, recipe=recipe, model=model)
        for stage in recipe.stages:
            path = self.stage_dir(stage.name) / "stage.json"
            if path.exists():
                result.stages[stage.name] = read_json(path)
        final_key = self.keys[recipe.stages[-1].name] if recipe.stages else self.keys["initial"]
        if recipe.evaluate.enabled and self.main:
            with self.guard.work():
                result.metrics = self._evaluate(model, final_key)
        if recipe.benchmark.enabled and self.do_benchmark and self.main:
            result.bench = self._benchmark(model, final_key)
        if self.main:
            from effkit.report import write_report

            write_report(result)
            self._write_card(result)
        self.accelerator.wait_for_everyone()
        return result

    def _write_card(self, result: RunResult) -> None:
        """The final model's card, now with the run's metrics and benchmark."""
        if not self.recipe.stages:
            return
        from effkit.card import rewrite_card

        folder = self.stage_dir(self.recipe.stages[-1].name) / "model"
        if folder.is_dir():
            facts = {
                "name": self.recipe.name,
                "metrics": result.metrics,
                "bench": result.bench,
                "data": f"`{self.recipe.data.source}`" if self.recipe.data else None,
                "recipe": self.recipe.to_yaml(),
            }
            rewrite_card(folder, result.model, facts)

    def _run_stage(self, model: EffkitModel, stage: StageConfig) -> EffkitModel:
        with self.guard.stage(self.keys[stage.name]):
            if self._completed(stage):  # another run sharing the cache made it meanwhile
                return load(self.stage_dir(stage.name) / "model")
            with self.guard.work():
                return self._train_stage(model, stage)

    def _train_stage(self, model: EffkitModel, stage: StageConfig) -> EffkitModel:
        stage_dir = self.stage_dir(stage.name)
        log.info("stage '%s': %d steps", stage.name, stage.train.steps)
        began = time.perf_counter()
        model, record = fit(
            model,
            data=self.data,
            transforms=stage.build_transforms(),
            objective=stage.build_objective(),
            train=stage.train,
            stage=stage.name,
            seed=self.recipe.seed,
            work_dir=stage_dir,
            resolve_model=self.resolve_model,
            key=self.keys[stage.name],
            progress=self.progress and self.main,
        )
        record["key"] = self.keys[stage.name]
        record["wall_seconds"] = round(time.perf_counter() - began, 2)
        record["num_parameters"] = model.num_parameters()
        record["processes"] = self.accelerator.num_processes
        if self.main:
            save(model, stage_dir / "model")
            write_json(stage_dir / "stage.json", record)
            shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
            if self.use_cache:
                cached = self._cached(self.keys[stage.name])
                copy_tree(stage_dir, cached)
            self._record_stage(stage, record, cached=False)
        self.accelerator.wait_for_everyone()
        return model

    def _evaluate(self, model: EffkitModel, key: str) -> dict[str, dict[str, float]]:
        cfg = self.recipe.evaluate
        path = self.run_dir / "metrics.json"
        settings = cfg.model_dump(mode="json")
        if path.exists():
            saved = read_json(path)
            if saved.get("key") == key and saved.get("settings") == settings:
                return dict(saved["metrics"])
        assert self.data is not None
        metrics: dict[str, dict[str, float]] = {}
        per_seed: dict[str, dict[str, dict[str, float]]] = {}
        last = self.recipe.stages[-1].name if self.recipe.stages else None
        known = read_json(self.stage_dir(last) / "stage.json") if last else {}
        for split in cfg.splits:
            if split == "validation" and known.get("validation") and not cfg.inference_seeds:
                metrics[split] = known["validation"]  # the last stage scored this very model
                continue
            examples = self.data.splits.get(split) or []
            if not examples:
                raise DataError(f"the data has no '{split}' split to evaluate")
            runs: dict[str, dict[str, float]] = {}
            seeds: list[int | None] = list(cfg.inference_seeds) or [None]
            for seed in seeds:
                model.inference_seed = seed
                runs[str(seed)] = evaluate_examples(
                    model,
                    examples,
                    batch_size=cfg.batch_size,
                    bar=f"evaluate {split}" if self.progress else None,
                )
            model.inference_seed = None
            metrics[split] = _aggregate(list(runs.values()))
            if cfg.inference_seeds:
                per_seed[split] = runs
        write_json(
            path, {"key": key, "settings": settings, "metrics": metrics, "per_seed": per_seed}
        )
        return metrics

    def _benchmark(self, model: EffkitModel, key: str) -> dict[str, Any]:
        from effkit.bench import compare, recipe_texts, resolve_device
        from effkit.runtimes import configured_runtimes

        cfg = self.recipe.benchmark
        path = self.run_dir / "bench.json"
        settings_key = stable_hash({"key": key, "bench": cfg.model_dump(mode="json")})
        if path.exists():
            saved = read_json(path)
            if saved.get("settings_key") == settings_key:
                return dict(saved)
        device = resolve_device(cfg.device)
        models: dict[str, Any] = {"final": model.to(device).eval()}
        dirs: dict[str, Path] = {}
        if self.recipe.stages:
            dirs["final"] = self.stage_dir(self.recipe.stages[-1].name) / "model"
        baseline_name = None
        if cfg.baseline != "none":
            initial = self.initial_model if cfg.baseline in ("initial", "best-runtime") else None
            baseline = initial() if initial else self.resolve_model(cfg.baseline)
            models["baseline"] = baseline.to(device).eval()
            baseline_name = "baseline"
            if cfg.memory:
                dirs["baseline"] = self.run_dir / "baseline-model"
                save(baseline, dirs["baseline"])
        texts = recipe_texts(cfg, self.recipe, self.data)  # benchmark.data: real texts too
        runtimes = configured_runtimes(models.get(baseline_name or ""), device, cfg)
        data = {"settings_key": settings_key,
                **compare(models, cfg, baseline=baseline_name, folders=dirs, progress=self.progress,
                          texts=texts, runtimes=runtimes)}  # fmt: skip
        model.to("cpu")
        write_json(path, data)
        return data


def run(
    recipe: Recipe | str | Path,
    run_dir: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    progress: bool = True,
    cache: bool = True,
    benchmark: bool = True,
) -> RunResult:
    """Run a recipe (object or YAML file) into a run folder and return what it produced."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise RunError("overrides apply to recipe files; change the Recipe object instead")
    return Runner(recipe, run_dir, progress=progress, cache=cache, benchmark=benchmark).run()


def predict(
    model: EffkitModel | str | Path, texts: list[str], **kwargs: Any
) -> list[dict[str, Any]]:
    """Predictions for raw texts from a model or a saved model folder, in input order."""
    if not isinstance(model, EffkitModel):
        model = load(model)
    return model.predict(texts, **kwargs)
