"""The training loop: one stage's optimisation on accelerate, with hooks for transforms.

The loop is written out top to bottom rather than hidden in a trainer framework. accelerate
provides the process group, the device and mixed precision, and its standard calls carry the
step: ``prepare`` wraps the stage's model and loss (:class:`~effkit.distributed.StageLoss`) in
DistributedDataParallel over several processes, ``accumulate`` skips the synchronisation of all
but the last micro-batch, ``backward`` and ``clip_grad_norm_`` do the rest. So the same recipe
runs on one CPU, several GPUs or several machines under ``torchrun`` / ``accelerate launch``
and, for sequence tasks, gives the same updates for the same global batch (a token task
averages over each share's own tokens). Logged figures are averaged over the processes.

Batches are drawn from a seeded permutation per epoch, so step ``s`` always sees the same inputs:
a stage that resumes from a checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from effkit import checkpoints
from effkit.averaging import WeightAverage
from effkit.console import quiet_other_ranks
from effkit.distributed import (
    StageLoss,
    check_supported,
    mean_over_processes,
    on_main,
    prepare,
    recomputed,
    set_gradient_checkpointing,
    unused_parameters,
    warn_launch,
)
from effkit.errors import DataError, RecipeError
from effkit.progress import Bar

if TYPE_CHECKING:
    from accelerate import Accelerator

    from effkit.models import EffkitModel
    from effkit.objectives import Objective
    from effkit.transform import StageContext, Transform

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Optimisation schedule of one stage."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(100, ge=0, description="Optimizer steps; 0 applies transforms only.")
    batch_size: int = Field(16, ge=1, description="Inputs per optimizer step, all processes.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases/norms).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate decay after warm-up."
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null: none.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 (or fp16) on a GPU, full precision on a CPU."
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each encoder layer's activations in the backward pass instead "
        "of keeping them: less memory for about a third more compute, the same updates.",
    )
    eval_every: int = Field(
        0, ge=0, description="Validate every k steps and keep the best weights; 0: keep the last."
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "Keep an exponential moving average of the weights with this decay per step "
            "(ramped up over the first steps); validation, the kept weights and the stage's "
            "output use the average. null: off."
        ),
    )
    checkpoint_every: int = Field(
        50, ge=0, description="Save a resumable checkpoint every k steps; 0: never."
    )
    log_every: int = Field(10, ge=1, description="Steps between logged losses.")
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Seed of this stage; defaults to the recipe's."
    )

    @model_validator(mode="after")
    def _divisible(self) -> TrainConfig:
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        return self


@dataclass
class TrainResult:
    """What a stage's training produced besides the model."""

    steps: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    best_metrics: dict[str, float] | None = None
    resumed_from: int | None = None

    @classmethod
    def from_progress(cls, progress: dict[str, Any]) -> TrainResult:
        """The result so far, from a checkpoint's progress record."""
        return cls(
            steps=progress["steps"],
            seconds=progress["seconds"],
            history=progress["history"],
            validation=progress["validation"],
            best_step=progress["best_step"],
            best_score=progress["best_score"],
            best_metrics=progress.get("best_metrics"),
            resumed_from=progress["step"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "best_step": self.best_step,
            "best_score": self.best_score,
            "best_metrics": self.best_metrics,
            "resumed_from": self.resumed_from,
            "history": self.history,
            "validation": self.validation,
        }


# --------------------------------------------------------------------------- process setup

_accelerator: Accelerator | None = None
_launch_checked = False
WAIT_HOURS = 3
"""How long a process of a multi-process run waits for the others at a synchronisation point."""


def accelerator_for(mixed_precision: str = "auto") -> Accelerator:
    """The process's accelerator, created once (accelerate keeps process state global)."""
    global _accelerator, _launch_checked
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import InitProcessGroupKwargs

    precision = mixed_precision
    if precision == "auto":
        if torch.cuda.is_available():
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "no"
    if _accelerator is not None and str(_accelerator.mixed_precision) == precision:
        return _accelerator
    if _accelerator is not None:
        AcceleratorState._reset_state(reset_partial_state=False)
    # the other processes wait while the first validates, evaluates and benchmarks alone
    waits = InitProcessGroupKwargs(timeout=datetime.timedelta(hours=WAIT_HOURS))
    _accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                               kwargs_handlers=[waits])  # fmt: skip
    quiet_other_ranks(_accelerator.process_index)
    if not _launch_checked:
        _launch_checked = True
        warn_launch(_accelerator.num_processes)
    return _accelerator


def set_seed(seed: int) -> None:
    """Seed Python and torch (all devices)."""
    random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- data order


def batch_indices(n: int, seed: int, step: int, size: int) -> list[int]:
    """Indices of step ``step``'s global batch: a stream of seeded per-epoch permutations."""
    out: list[int] = []
    pos = step * size
    while len(out) < size:
        epoch, offset = divmod(pos, n)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        take = min(size - len(out), n - offset)
        out.extend(perm[offset : offset + take].tolist())
        pos += take
    return out


# --------------------------------------------------------------------------- optimizer


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    warmup = int(cfg.warmup_ratio * cfg.steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, cfg.steps - warmup)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


def build_optimizer(
    model: torch.nn.Module, transforms: list[Transform], cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model (no decay on biases and norms) plus the transforms' own groups.

    A transform's group may carry ``"schedule": False`` to keep its learning rate constant.
    """
    extra: list[dict[str, Any]] = []
    for transform in transforms:
        extra.extend(transform.parameter_groups(model))  # type: ignore[arg-type]
    taken = {id(p) for group in extra for p in group["params"]}
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in taken or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay, "clip": True},
        {"params": no_decay, "weight_decay": 0.0, "clip": True},
        *({"weight_decay": 0.0, **group} for group in extra),
    ]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    base = _lr_lambda(cfg)
    lambdas = [base if g.get("schedule", True) else (lambda _s: 1.0) for g in groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


# --------------------------------------------------------------------------- the loop


def _micro_batches(
    indices: list[int], cfg: TrainConfig, rank: int, world: int
) -> Iterator[list[int]]:
    micro = cfg.batch_size // cfg.grad_accum
    for k in range(cfg.grad_accum):
        chunk = indices[k * micro : (k + 1) * micro]
        yield chunk[rank::world]


def train_stage(
    model: EffkitModel,
    objective: Objective,
    transforms: list[Transform],
    ctx: StageContext,
    cfg: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    checkpoint_key: str = "",
    validate: Callable[[EffkitModel], dict[str, float]] | None = None,
    metric: str = "accuracy",
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps and return the history.

    ``validate`` returns validation metrics, of which ``metric`` is maximised; with
    ``cfg.eval_every`` it is called every that many steps (and after the last) and the best
    weights are restored at the end. With a
    ``checkpoint_dir`` the stage saves resumable checkpoints and resumes from the last one whose
    ``checkpoint_key`` matches (a checkpoint of a different configuration is discarded).
    """
    from effkit.data import Collator

    result = TrainResult()
    if cfg.steps == 0:
        return result
    accelerator = accelerator_for(cfg.mixed_precision)
    check_supported(accelerator)
    world, rank = accelerator.num_processes, accelerator.process_index
    if (cfg.batch_size // cfg.grad_accum) % world:
        raise RecipeError(
            f"stage '{ctx.stage}': batch_size {cfg.batch_size} / grad_accum {cfg.grad_accum} "
            f"does not split over {world} processes"
        )
    features = objective.features(ctx)
    if not features:
        raise DataError(f"stage '{ctx.stage}' has no training examples")
    seed = cfg.seed if cfg.seed is not None else ctx.seed
    ctx.total_steps = cfg.steps
    ctx.device = accelerator.device
    model.to(accelerator.device)
    model.train()
    optimizer, scheduler = build_optimizer(model, transforms, cfg)
    pad_id = getattr(ctx.tokenizer, "pad_token_id", 0) or 0
    collate = Collator(pad_token_id=pad_id)

    def micro_batches(step: int) -> Iterator[dict[str, torch.Tensor]]:
        indices = batch_indices(len(features), seed, step, cfg.batch_size)
        for chunk in _micro_batches(indices, cfg, rank, world):
            batch = collate([features[i] for i in chunk])
            yield {k: v.to(accelerator.device) for k, v in batch.items()}

    # the model and its loss as one module; over several processes DDP wraps it (which
    # broadcasts the first process's weights), looking for unused parameters only if some are
    stage_loss = StageLoss(model, objective, transforms, ctx)
    find_unused = False
    if world > 1:
        unused = unused_parameters(stage_loss, next(micro_batches(0)), accelerator.autocast)
        count = torch.tensor([len(unused)], device=accelerator.device)
        find_unused = bool(accelerator.reduce(count, reduction="sum").item())
        if find_unused:
            log.info("stage '%s': %d trainable tensor(s) take no part in the loss (%s); DDP "
                     "looks for unused parameters every step", ctx.stage, len(unused),
                     ", ".join(unused[:3]) or "on another process")  # fmt: skip
    wrapped, optimizer = prepare(accelerator, stage_loss, optimizer, find_unused)
    accelerator.gradient_accumulation_steps = cfg.grad_accum
    accelerator.step = 0  # accumulate() counts micro-batches from here
    clip = [p for group in optimizer.param_groups if group.get("clip") for p in group["params"]]
    trained = accelerator.unwrap_model(wrapped).model  # what checkpoints save: ``model`` itself

    start = 0
    best_state: dict[str, torch.Tensor] | None = None
    ckpt = checkpoint_dir / checkpoints.LAST if checkpoint_dir is not None else None
    resume = None
    if checkpoint_dir is not None:
        folder = checkpoint_dir
        resume = on_main(accelerator, lambda: checkpoints.find(folder, checkpoint_key))
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    if resume is not None:
        saved, best_state = checkpoints.load(resume, model, optimizer, scheduler, average)
        start, result = int(saved["step"]), TrainResult.from_progress(saved)
        log.info("stage '%s': resuming at step %d of %d", ctx.stage, start, cfg.steps)
    else:
        set_seed(seed + rank)

    main = accelerator.is_main_process
    bar = Bar(cfg.steps, ctx.stage, enabled=progress and main, unit="steps", start=start)
    running: dict[str, list[float]] = {}
    began = time.perf_counter() - result.seconds
    step = start
    completed = start  # steps whose update is fully applied

    def save(at: int, rng: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> None:
        assert ckpt is not None
        checkpoints.save(
            ckpt,
            trained,
            optimizer,
            scheduler,
            result.to_dict(),
            best_state,
            at,
            checkpoint_key,
            rng,
            average,
        )

    updating = False
    step_rng = checkpoints.rng_state()  # the random state a step starts from, to restart it
    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(model, True, where=f"stage '{ctx.stage}'")
    try:
        bar.show()
        for step in range(start, cfg.steps):
            ctx.step = step
            for batch in micro_batches(step):
                # gradients are synchronised in the backward pass of the last micro-batch
                with accelerator.accumulate(wrapped):
                    with accelerator.autocast():
                        total, loss, logs, terms = wrapped(batch)
                    checking = cfg.gradient_checkpointing
                    with recomputed(ctx.stage) if checking else contextlib.nullcontext():
                        accelerator.backward(total)  # divided by grad_accum
                scalars = {"loss": float(loss.detach()), **logs}
                scalars.update({key: float(term.detach()) for key, term in terms.items()})
                for key, number in scalars.items():
                    running.setdefault(key, []).append(number)
            updating = True
            if cfg.max_grad_norm is not None:  # fp16: unscales the gradients first
                accelerator.clip_grad_norm_(clip, cfg.max_grad_norm)
            optimizer.step()  # fp16: skipped when the gradients overflowed
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ctx.step = step + 1
            for transform in transforms:
                transform.on_step(model, ctx)
                for key, number in transform.step_figures(model, ctx).items():
                    running.setdefault(key, []).append(number)
            if average is not None:
                average.update(model)
            updating = False
            completed = done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                row = {"step": float(done), "lr": float(scheduler.get_last_lr()[0])}
                row.update(mean_over_processes(running, accelerator))
                result.history.append(row)
                running = {}
                bar.note(f"loss {row['loss']:.4f}")
            if (
                validate is not None
                and cfg.eval_every
                and (done % cfg.eval_every == 0 or done == cfg.steps)
            ):
                with average.applied(model) if average else contextlib.nullcontext():
                    scores = on_main(accelerator, functools.partial(validate, model))
                    score = float(scores[metric])
                    eligible = all(t.selectable(model, ctx) for t in transforms)
                    if eligible and (result.best_score is None or score > result.best_score):
                        result.best_score, result.best_step = score, done
                        result.best_metrics = scores
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                model.train()
                result.validation.append(
                    {"step": float(done), metric: score, "selectable": float(eligible)}
                )
            bar.advance()
            result.steps = done
            result.seconds = time.perf_counter() - began
            if (
                ckpt is not None
                and main
                and cfg.checkpoint_every
                and (done % cfg.checkpoint_every == 0 and done < cfg.steps)
            ):
                save(done)
            step_rng = checkpoints.rng_state()
    except KeyboardInterrupt:
        # Mid-update the state is inconsistent: keep the last regular checkpoint. Otherwise save
        # the completed steps; a step stopped before its update restarts with its own RNG state.
        if ckpt is not None and main and not updating and completed > start:
            result.seconds = time.perf_counter() - began
            rng = step_rng if completed == step else None
            save(completed, rng)
            log.warning("stage '%s' interrupted; checkpoint saved at step %d", ctx.stage, completed)
        raise
    finally:
        bar.close()
        del wrapped, stage_loss  # DDP's hooks go with it, before a next stage wraps the model
        accelerator.free_memory()
        if cfg.gradient_checkpointing:
            set_gradient_checkpointing(model, False)
    if best_state is not None and result.best_step != cfg.steps:
        model.load_state_dict(best_state)
        log.info("stage '%s': keeping step %d (validation %.4f)", ctx.stage, result.best_step,
                 result.best_score)  # fmt: skip
    elif average is not None:
        model.load_state_dict(average.state)
    model.eval()
    return result
