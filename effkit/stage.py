"""One stage in code: apply transforms, train with an objective, finalize (:func:`fit`), or
stack transforms on a model without training (:func:`stack`).

The recipe runner runs every stage of a recipe through :func:`fit`; from Python, the same
function runs one stage on a model and data of the caller's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from effkit import registry
from effkit.data import TaskData
from effkit.errors import RunError
from effkit.inference import evaluate_examples
from effkit.models import EffkitModel, load
from effkit.objectives import Objective
from effkit.regression import standardised_head
from effkit.train import TrainConfig, TrainResult, set_seed, train_stage
from effkit.transform import StageContext, Transform


def validator(data: TaskData, batch_size: int) -> Any:
    def validate(model: EffkitModel) -> dict[str, float]:
        return evaluate_examples(model, data.splits["validation"], batch_size=batch_size)

    return validate


def _check_trainable(model: EffkitModel, stage: str) -> None:
    """Refuse to train weights that are no longer float32 (a finished half-precision model)."""
    kinds = {p.dtype for p in model.parameters() if p.requires_grad and p.is_floating_point()}
    if kinds - {torch.float32, torch.float64}:
        names = ", ".join(sorted(str(kind).removeprefix("torch.") for kind in kinds))
        raise RunError(
            f"stage '{stage}' would train weights stored in {names}; training runs in float32",
            hint="put the transform that changes the number format (precision) in the last "
            "stage, after every stage that trains",
        )


def _standardised(
    model: EffkitModel, objective: Objective, data: TaskData | None, cfg: TrainConfig
) -> contextlib.AbstractContextManager[None]:
    """A regression model trained on its task trains with standardised targets (the train
    split's mean and std, or the model's own from an earlier stage): :mod:`effkit.regression`."""
    if not (model.task.is_regression and objective.selects_on_validation and cfg.steps):
        return contextlib.nullcontext()
    targets = None
    if data is not None and data.splits.get("train"):
        targets = [float(e["label"]) for e in data.splits["train"]]
    return standardised_head(model, targets)


def fit(
    model: EffkitModel,
    *,
    data: TaskData | None = None,
    transforms: list[Transform] | None = None,
    objective: Objective | str = "task",
    train: TrainConfig | None = None,
    stage: str = "fit",
    seed: int = 0,
    work_dir: Path | None = None,
    resolve_model: Any = None,
    key: str = "",
    progress: bool = True,
) -> tuple[EffkitModel, dict[str, Any]]:
    """One stage in code: apply ``transforms``, train with ``objective``, finalize.

    Returns the final model and a record (training history, what each transform did,
    validation metrics when the objective trains on the task). With a ``work_dir`` the stage
    checkpoints there and resumes from a checkpoint made under the same ``key``.
    """
    cfg = train or TrainConfig()
    if isinstance(objective, str):
        objective = registry.get(registry.OBJECTIVES, objective)()
    assert isinstance(objective, Objective)
    transforms = list(transforms or [])
    ctx = StageContext(
        stage=stage,
        tokenizer=model.tokenizer,
        data=data,
        seed=cfg.seed if cfg.seed is not None else seed,
        max_length=model.max_length,
        work_dir=work_dir,
        resolve_model=resolve_model or load,
    )
    set_seed(ctx.seed)
    for transform in transforms:
        model = transform.apply(model, ctx)
    model = objective.prepare(model, ctx)
    if cfg.steps:
        _check_trainable(model, stage)
    has_validation = data is not None and bool(data.splits.get("validation"))
    validate = None
    if objective.selects_on_validation and has_validation and cfg.eval_every:
        assert data is not None
        validate = validator(data, 64)
    with _standardised(model, objective, data, cfg):
        result: TrainResult = train_stage(
            model,
            objective,
            transforms,
            ctx,
            cfg,
            checkpoint_dir=work_dir / "checkpoints" if work_dir is not None else None,
            checkpoint_key=key,
            validate=validate,
            metric=model.task.primary_metric(),
            progress=progress,
        )
    model = objective.cleanup(model, ctx)
    for transform in transforms:
        model = transform.finalize(model, ctx)
        if transform.recorded:
            model.transforms.append(transform)
    record: dict[str, Any] = {
        "train": result.to_dict(),
        "transforms": [{"name": t.registered_name(), **t.describe()} for t in transforms],
        "objective": objective.name,
    }
    if result.best_metrics is not None:
        record["validation"] = result.best_metrics  # the kept weights' scores
    elif objective.selects_on_validation and has_validation and cfg.steps:
        assert data is not None
        record["validation"] = evaluate_examples(
            model, data.splits["validation"], bar=f"{stage}: validation" if progress else None
        )
    model.eval()
    return model, record


def stack(model: EffkitModel, transforms: list[Transform], *, finalize: bool = True) -> EffkitModel:
    """Apply transforms to a model in code, without training (and finalize them)."""
    ctx = StageContext(stage="api", tokenizer=model.tokenizer, max_length=model.max_length,
                       resolve_model=load)  # fmt: skip
    for transform in transforms:
        model = transform.apply(model, ctx)
        if finalize:
            model = transform.finalize(model, ctx)
            if transform.recorded:
                model.transforms.append(transform)
    return model
