"""Preflight: every check a recipe can pass or fail before anything is written or trained.

``effkit validate`` runs it, and so does every ``apply`` before it creates its run folder. It
reads, without loading weights or training:

- every model source (the starting model, teachers, a benchmark baseline): its config, and its
  weights file's header, so that a missing, truncated or foreign file is found now;
- the data (all of it: the run uses the same :class:`~effkit.data.TaskData`): columns, labels
  against ``task.labels``, and for token tasks the tags against ``task.tag_scheme`` (which
  decides the metric that ranks the models: entity F1 or token accuracy);
- ``data.max_length`` and ``benchmark.seq_len`` against the model's positions;
- every :data:`~effkit.transform.StageRef` (a teacher) and ``benchmark.baseline``: an earlier
  stage or a model folder;
- the benchmark device;
- each transform and objective against the model as it will be when its stage starts
  (:meth:`~effkit.transform.Transform.check` on :class:`~effkit.transform.ModelFacts`): layer
  indices, a forward pass taken over twice, number formats, pruning a width that cannot change;
- which listed stages the last stage does not need (they are not run; one line says so).

What only training can reveal (a loss that diverges, a sparsity target missed) is all that is
left to fail late. Every error names the recipe line or field it comes from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from effkit import foreign, registry
from effkit.checks import bert_layer_problem, is_effkit_dir, saved_json, weights_problem
from effkit.data import TaskData, load_task_data
from effkit.distributed import family_checkpointing_problem
from effkit.errors import DataError, EffkitError, ModelError, RecipeError
from effkit.models import PRESETS, ModelConfig, minilm_path
from effkit.recipe import Recipe
from effkit.task import TOKEN
from effkit.transform import ModelFacts, stage_refs

__all__ = ["Preflight", "model_facts", "preflight", "unneeded_stages"]

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")  # fmt: skip


@dataclass
class Preflight:
    """What a preflight found: the data the run will use, the model, and notes for the user."""

    recipe: Recipe
    data: TaskData | None
    model: ModelFacts
    stages: dict[str, ModelFacts] = field(default_factory=dict)
    """The facts of each stage's output, as the checks left them."""
    notes: list[str] = field(default_factory=list)
    """One line each: what the run will do that the recipe may not have meant."""
    seconds: float = 0.0

    def summary(self) -> str:
        """One paragraph for ``effkit validate``."""
        m = self.model
        positions = f", {m.max_positions} positions" if m.max_positions else ""
        parts = [f"model {self.recipe.model.source}: {m.family}, {m.layers} layers, "
                 f"{m.hidden_size} wide{positions}"]  # fmt: skip
        if self.data is not None:
            sizes = ", ".join(f"{name} {len(rows)}" for name, rows in self.data.splits.items())
            task = self.recipe.task
            if task.is_regression:
                kind = "real-valued targets"
            elif task.is_token_task:
                scheme = task.entity_scheme(self.data.labels)
                kind = f"{len(self.data.labels)} tags, " + (
                    f"{scheme.upper()} entity tags" if scheme else "plain tags (no entity scheme)"
                )
            else:
                kind = f"{len(self.data.labels)} labels"
            metric = task.primary_metric(self.data.labels)
            parts.append(f"data {self.data.source}: {sizes}; {kind}; ranked by {metric}")
        return "; ".join(parts)


def unneeded_stages(recipe: Recipe) -> dict[str, str]:
    """Listed stages whose output the last stage does not need, each with the reason."""
    if not recipe.stages:
        return {}
    names = [s.name for s in recipe.stages]
    needs: dict[str, set[str]] = {}
    previous = "initial"
    for stage in recipe.stages:
        refs = {r for p in (*stage.build_transforms(), stage.build_objective())
                for r in stage_refs(p)}  # fmt: skip
        needs[stage.name] = ({stage.start or previous} | refs) & set(names)
        previous = stage.name
    last = names[-1]
    needed, todo = {last}, [last]
    while todo:
        for name in needs[todo.pop()] - needed:
            needed.add(name)
            todo.append(name)
    if recipe.benchmark.enabled and recipe.benchmark.baseline in names:
        needed.add(recipe.benchmark.baseline)
    start = recipe.stages[-1].start
    why = f"'{last}' starts from '{start}'" if start else "nothing after it uses its model"
    return {
        name: f"stage '{name}' is listed but not run: the last stage '{last}' does not need it "
        f"({why})"
        for name in names
        if name not in needed
    }


def _meant_as_path(source: str) -> bool:
    """Whether a source that does not exist was meant as a local folder, not a hub id."""
    if source.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        return True
    parts = Path(source).parts
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def _config_of(cfg: ModelConfig, where: str) -> tuple[Any, list[dict[str, Any]]]:
    """The transformers config of a model source and, for an effkit folder, its transforms."""
    from transformers import AutoConfig, BertConfig

    source = cfg.source
    if source.startswith("preset:"):
        return BertConfig(**PRESETS[source.split(":", 1)[1]]), []
    folder = minilm_path() if source == "builtin:minilm-l6" else Path(source).expanduser()
    if is_effkit_dir(folder):
        from effkit.hf_config import source_config

        meta = saved_json(folder / "effkit.json")
        raw = saved_json(folder / "config.json")
        if int(meta.get("format_version", 1)) >= 2:
            config = source_config(raw.get("source_config", {}))
        else:
            config = AutoConfig.for_model(**raw) if "model_type" in raw else None
        weights = next((folder / n for n in ("effkit.safetensors", "model.safetensors")
                        if (folder / n).is_file()), None)  # fmt: skip
        if weights is None:
            raise ModelError(f"model folder '{folder}' has no weights file", where=where)
        problem = weights_problem(weights)
        if problem:
            raise ModelError(problem, where=where, hint="copy or save the model again")
        transforms = meta.get("transforms", [])
        if config is None or not isinstance(transforms, list):
            raise ModelError(f"'{folder}' holds no usable config or transform list", where=where)
        return config, transforms
    if folder.is_file():
        raise ModelError(f"model source '{source}' is a file; expected a folder or a hub id",
                         where=where)  # fmt: skip
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"model folder '{folder}' has no config.json",
                where=where,
                hint="a transformers folder holds config.json and weights",
            )
        found = [folder / n for n in _WEIGHT_FILES if (folder / n).is_file()]
        if not found:
            raise ModelError(f"model folder '{folder}' has no weights "
                             f"({', '.join(_WEIGHT_FILES)})", where=where)  # fmt: skip
        if found[0].suffix == ".safetensors" and (problem := weights_problem(found[0])):
            raise ModelError(problem, where=where, hint="download or copy the model again")
    elif _meant_as_path(source):
        raise ModelError(f"model folder '{source}' does not exist", where=where,
                         hint="check the path; a hub id looks like org/name")  # fmt: skip
    try:
        config = AutoConfig.from_pretrained(str(folder), revision=cfg.revision,
                                            trust_remote_code=False)  # fmt: skip
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"cannot read the config of model '{source}': {' '.join(str(exc).split())}",
            where=where,
            hint="a hub id needs network access (or the hub cache); a local folder needs a "
            "readable config.json",
        ) from None
    try:
        return config, foreign.history(config.to_dict())  # another project's layout, if claimed
    except EffkitError as exc:
        exc.where = exc.where or where
        raise


def model_facts(cfg: ModelConfig, task: str, where: str = "model.source") -> ModelFacts:
    """What a model source is, read from its config and saved history; weights are not loaded."""
    import torch

    from effkit.models import EffkitModel, hf_auto_class
    from effkit.task import Task

    config, transforms = _config_of(cfg, where)
    config.num_labels = 2
    try:
        with torch.device("meta"):
            hf = hf_auto_class(task).from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model '{cfg.source}' ({getattr(config, 'model_type', '?')}) has no "
                         f"{task} model in transformers: {exc}", where=where) from None  # fmt: skip
    shell = EffkitModel(hf, None, Task(type=task))
    facts = ModelFacts(
        family=str(getattr(config, "model_type", "?")),
        task=task,
        layers=int(getattr(config, "num_hidden_layers", 0) or 0),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
        heads=int(getattr(config, "num_attention_heads", 0) or 0),
        max_positions=shell.max_positions,
    )
    try:
        facts.layer_problem = bert_layer_problem(shell.encoder_layers())
        if shell.embedding_width != shell.hidden_width:
            facts.fixed_hidden = (f"the model projects its {shell.embedding_width}-wide embeddings "
                                  f"up to {shell.hidden_width} hidden dimensions")  # fmt: skip
    except ModelError as exc:
        facts.encoder_problem = exc.message
    for entry in transforms:  # a saved model's history, replayed on its facts
        name = entry.get("name") if isinstance(entry, dict) else None
        cls = registry.get(registry.TRANSFORMS, str(name), where=where)
        try:
            transform = cls.model_validate(entry.get("config", {}))
        except ValueError as exc:
            raise ModelError(f"the saved '{name}' transform does not validate: {exc}",
                             where=where) from None  # fmt: skip
        transform.check(facts)
        facts.applied.append(str(name))
    return facts


class _Checker:
    """One preflight: facts per stage, refs resolved once, errors placed in the recipe."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.outputs: dict[str, ModelFacts] = {}
        self.folders: dict[str, ModelFacts] = {}

    def at(self, exc: EffkitError, loc: tuple[str | int, ...]) -> EffkitError:
        """``exc`` placed at ``loc`` of the recipe, unless it already names a place."""
        if exc.where is None or exc.where.startswith(("model.source", "stages")):
            exc.where = self.recipe.where(loc)
            exc.args = (exc.render(),)
        return exc

    def lookup(self, ref: str) -> ModelFacts:
        if ref in self.outputs:
            return replace(self.outputs[ref], applied=list(self.outputs[ref].applied))
        names = [s.name for s in self.recipe.stages]
        if ref in names:
            raise RecipeError(f"'{ref}' is a stage that runs later; name an earlier stage")
        if Path(ref).expanduser().is_dir():
            if ref not in self.folders:
                cfg = self.recipe.model.model_copy(update={"source": ref, "tokenizer": None})
                self.folders[ref] = model_facts(cfg, self.recipe.task.type, where=ref)
            return self.folders[ref]
        raise RecipeError(
            f"'{ref}' is neither an earlier stage of this recipe nor a model folder",
            hint=f"stages before this one: {', '.join(self.outputs) or 'none'}",
        )

    def stages(self, initial: ModelFacts) -> None:
        self.outputs["initial"] = initial
        previous = "initial"
        for i, stage in enumerate(self.recipe.stages):
            facts = replace(self.lookup(stage.start or previous), stage=stage.name,
                            trains=stage.train.steps > 0, hidden_pruned_by=None,
                            lookup=self.lookup)  # fmt: skip
            if facts.trains and facts.number_format in ("bf16", "fp16"):
                raise self.at(RecipeError(
                    f"stage '{stage.name}' would train weights stored in {facts.number_format}; "
                    "training runs in float32",
                    hint="put the precision transform in the last stage, after every stage "
                    "that trains"), ("stages", i, "train", "steps"))  # fmt: skip
            if facts.trains and stage.train.gradient_checkpointing:
                problem = family_checkpointing_problem(facts.family, facts.task)
                if problem:
                    raise self.at(RecipeError(problem, hint="set gradient_checkpointing: false"),
                                  ("stages", i, "train", "gradient_checkpointing"))  # fmt: skip
            for j, transform in enumerate(stage.build_transforms()):
                loc: tuple[str | int, ...] = ("stages", i, "transforms", j)
                try:
                    for ref in stage_refs(transform):
                        self.lookup(ref)
                    transform.check(facts)
                except EffkitError as exc:
                    raise self.at(exc, loc) from None
                facts.applied.append(transform.registered_name())
            objective = stage.build_objective()
            try:
                for ref in stage_refs(objective):
                    self.lookup(ref)
                objective.check(facts)
            except EffkitError as exc:
                raise self.at(exc, ("stages", i, "objective")) from None
            facts.hidden_pruned_by = None
            self.outputs[stage.name] = facts
            previous = stage.name


def _check_tags(recipe: Recipe, data: TaskData) -> None:
    """A token task whose ``tag_scheme`` names an entity scheme: every tag must be one of it
    (``auto`` and ``none`` take any tag set)."""
    from effkit.metrics import scheme_problem

    scheme = recipe.task.tag_scheme
    if scheme in ("auto", "none"):
        return
    for tag in data.labels:
        problem = scheme_problem(tag, scheme)
        if problem:
            raise DataError(
                f"tag {tag!r} is not a {scheme.upper()} entity tag: {problem}",
                where=recipe.where(("task", "tag_scheme")),
                hint="set task.tag_scheme to auto or none to score any tag set by token "
                "accuracy, or convert the tags",
            )


def preflight(recipe: Recipe, *, like: Preflight | None = None) -> Preflight:
    """Check ``recipe`` against its models, data and devices; nothing is written or trained.

    ``like``: the preflight of a recipe with the same model or data (a search's base recipe),
    whose model facts and data are taken over instead of being read again. Raises an
    :class:`~effkit.errors.EffkitError` naming the problem and where it comes from.
    """
    from effkit.bench.environment import resolve_device

    began = time.perf_counter()
    checker = _Checker(recipe)
    same_model = like is not None and (like.recipe.model, like.recipe.task.type) == (
        recipe.model, recipe.task.type)  # fmt: skip
    try:
        if like is not None and same_model:
            facts = replace(like.stages["initial"], applied=list(like.stages["initial"].applied))
        else:
            facts = model_facts(recipe.model, recipe.task.type)
    except EffkitError as exc:
        raise checker.at(exc, ("model", "source")) from None
    tokenizer = recipe.model.tokenizer
    if tokenizer and _meant_as_path(tokenizer) and not Path(tokenizer).expanduser().is_dir():
        raise RecipeError(f"tokenizer folder '{tokenizer}' does not exist",
                          where=recipe.where(("model", "tokenizer")))  # fmt: skip
    data = None
    if like is not None and same_model and like.recipe.data == recipe.data:
        data = like.data
    elif recipe.data is not None:
        data = load_task_data(recipe.data, recipe.task.type, recipe.task.labels)
    if recipe.data is not None and data is not None:
        if recipe.task.type == TOKEN:
            _check_tags(recipe, data)
        facts.max_length = recipe.data.max_length
        _check_length(facts, recipe.data.max_length, recipe.where(("data", "max_length")))
    checker.stages(facts)
    bench = recipe.benchmark
    if bench.enabled:
        try:
            resolve_device(bench.device)
        except EffkitError as exc:
            raise checker.at(exc, ("benchmark", "device")) from None
        _check_length(facts, bench.seq_len, recipe.where(("benchmark", "seq_len")))
        if bench.baseline not in ("initial", "best-runtime", "none"):
            try:
                checker.lookup(bench.baseline)
            except EffkitError as exc:
                raise checker.at(exc, ("benchmark", "baseline")) from None
    notes = list(unneeded_stages(recipe).values())
    return Preflight(recipe, data, facts, stages=checker.outputs, notes=notes,
                     seconds=time.perf_counter() - began)  # fmt: skip


def _check_length(facts: ModelFacts, length: int, where: str) -> None:
    if facts.max_positions is not None and length > facts.max_positions:
        raise RecipeError(
            f"{length} tokens per input is longer than the model can read "
            f"({facts.max_positions} positions)",
            where=where,
            hint=f"use at most {facts.max_positions}",
        )
