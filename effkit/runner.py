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

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from effkit.checks import check_max_length, weights_problem
from effkit.data import TaskData
from effkit.distributed import held_on_main, on_main
from effkit.errors import DataError, RunError
from effkit.hf_config import WEIGHTS
from effkit.inference import evaluate_seeds
from effkit.models import DATA_COLUMNS, EffkitModel, is_effkit_dir, load, load_model, save
from effkit.preflight import Preflight, preflight
from effkit.recipe import Recipe, StageConfig, load_recipe
from effkit.run_folder import (
    NoGuard,
    StageGuard,
    cache_root,
    folder_fingerprint,
    hold,
    read_manifest,
)
from effkit.stage import fit, stack
from effkit.storage import copy_tree, read_json, stable_hash, write_json, write_text
from effkit.train import accelerator_for, set_seed
from effkit.transform import stage_refs
from effkit.versions import effkit_version

__all__ = ["RunResult", "Runner", "cache_root", "fit", "predict", "run", "stack"]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


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


# --------------------------------------------------------------------------- the run


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
        self.checked: Preflight | None = None
        """The recipe's preflight, when the caller already ran it."""
        self.on_write: Callable[[str], None] = lambda point: None
        """Called after each write that makes a stage durable (tests kill the run there)."""

    # ------------------------------------------------------------------ folder and keys

    def _stage_keys(self) -> dict[str, str]:
        assert self.data is not None or not self.recipe.stages
        previous = stable_hash(
            {
                "effkit": effkit_version(),
                "model": self.recipe.model.model_dump(mode="json"),
                "task": self.recipe.task.model_dump(mode="json"),
                "data": self.recipe.data.model_dump(mode="json") if self.recipe.data else None,
                "data_fingerprint": self.data.fingerprint() if self.data else None,
                "model_fingerprint": folder_fingerprint(self.recipe.model.source),
                "seed": self.recipe.seed,
            }
        )
        keys = {"initial": previous}
        # the stages whose output each key already depends on
        ancestry: dict[str, set[str]] = {"initial": set()}
        # how often a stage logs or checkpoints, or whether it recomputes activations, does not
        # change what it computes
        bookkeeping: Any = {
            "train": {"checkpoint_every", "log_every", "gradient_checkpointing"},
            "start": True,
        }
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

    def _finished(self, folder: Path, key: str) -> bool | str:
        """Whether ``folder`` holds a finished stage of ``key``: its record (``stage.json``,
        written first) names the key and its model landed. A string: it did, but the model is
        damaged (what is wrong)."""
        record = folder / "stage.json"
        try:
            recorded = read_json(record).get("key") if record.is_file() else None
        except (OSError, ValueError, AttributeError):
            return False
        if recorded != key or not is_effkit_dir(folder / "model"):
            return False
        names = [n for n in (WEIGHTS, "model.safetensors") if (folder / "model" / n).is_file()]
        return weights_problem(folder / "model" / (names or [WEIGHTS])[0]) or True

    def _completed(self, stage: StageConfig) -> bool:
        """Whether ``stage`` is done (here or in the cache), as the first process finds it."""
        return on_main(self.accelerator, lambda: self._completed_here(stage))

    def _completed_here(self, stage: StageConfig) -> bool:
        key, folder = self.keys[stage.name], self.stage_dir(stage.name)
        here = self._finished(folder, key)
        if here is True:
            if self.manifest.get("stages", {}).get(stage.name, {}).get("key") != key:
                self._record_stage(stage, read_json(folder / "stage.json"), cached=False)
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # a run that ended early
            return True
        cached = self._cached(key)
        if self.use_cache and self._finished(cached, key) is True:
            if here:
                log.warning("stage '%s': %s; taking the cached copy", stage.name, here)
            shutil.rmtree(folder, ignore_errors=True)
            copy_tree(cached, folder)
            self._record_stage(stage, read_json(folder / "stage.json"), cached=True)
            return True
        if here:
            raise RunError(
                f"stage '{stage.name}' finished, but its saved model is damaged: {here}",
                hint=f"delete '{folder}' to train the stage again",
            )
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
        model = load_model(cfg, task=self.recipe.task, labels=labels)
        if self.recipe.data is not None:
            model.max_length = self.recipe.data.max_length
            check_max_length(model, model.max_length, "data.max_length")
            columns = self.recipe.data.model_dump(include=set(DATA_COLUMNS))
            model.data_columns = {k: v for k, v in columns.items() if v is not None}
        return model

    # ------------------------------------------------------------------ the run

    def run(self) -> RunResult:
        """Check everything (:func:`~effkit.preflight.preflight`), then, holding the run
        folder's lock, run what is not done yet."""
        checked = self.checked or preflight(self.recipe)
        self.data = checked.data
        for note in checked.notes:
            log.warning("%s", note)
        # refuse a foreign folder before writing (the first process looks: the others would
        # see its lock)
        on_main(self.accelerator, lambda: read_manifest(self.run_dir, self.recipe.name))
        with held_on_main(self.accelerator, lambda: hold(self.run_dir)):
            return self._run()

    def _run(self) -> RunResult:
        recipe = self.recipe
        self.manifest = on_main(self.accelerator, lambda: read_manifest(self.run_dir, recipe.name))
        self.keys = self._stage_keys()
        if self.main:
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
            self.on_write("metrics.json")
        if recipe.benchmark.enabled and self.do_benchmark and self.main:
            result.bench = self._benchmark(model, final_key)
            self.on_write("bench.json")
        if self.main:
            from effkit.report import write_report

            write_report(result)
            self.on_write("report")
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
        if self.main:  # an earlier configuration's output must not pass for this one's
            (stage_dir / "stage.json").unlink(missing_ok=True)
            shutil.rmtree(stage_dir / "model", ignore_errors=True)
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
            # The record lands first and the checkpoints go last, so that a process killed
            # between any two of these writes leaves either a finished stage (record and model)
            # or a checkpoint to resume from (tests/test_crash.py kills at each point).
            write_json(stage_dir / "stage.json", record)
            self.on_write("stage.json")
            save(model, stage_dir / "model")
            self.on_write("model")
            self._record_stage(stage, record, cached=False)
            self.on_write("manifest")
            if self.use_cache:
                copy_tree(stage_dir, self._cached(self.keys[stage.name]), skip=("checkpoints",))
                self.on_write("cache")
            shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
            self.on_write("checkpoints removed")
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
            metrics[split], runs = evaluate_seeds(
                model,
                examples,
                list(cfg.inference_seeds),
                batch_size=cfg.batch_size,
                bar=f"evaluate {split}" if self.progress else None,
            )
            if runs:
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
