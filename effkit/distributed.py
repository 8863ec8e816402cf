"""Several processes: how effkit was launched, gradients through accelerate, one voice per run.

A stage trains data-parallel. Its model and loss become one module (:class:`StageLoss`) that
``accelerator.prepare`` wraps (DistributedDataParallel when there are several processes), so
that every parameter a step's loss touches is synchronised by DDP during the backward pass,
overlapped with the computation: the objective's, and those that transforms add (masks, layer
maps, multiplexing heads). Frozen modules a transform keeps to itself (a distillation teacher)
are not part of the module and are neither wrapped nor trained.

DDP must be told when some trainable parameter takes no part in the loss (the task head under a
pre-training objective): :func:`unused_parameters` finds them from one forward pass before the
model is wrapped, and :func:`prepare` turns on DDP's search for them only then.

Only the first process writes files and talks; the others log errors only
(:func:`effkit.console.quiet_other_ranks`) and follow its decisions (:func:`on_main`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from effkit.errors import EffkitError, RecipeError, RunError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from effkit.models import EffkitModel
    from effkit.objectives import Objective
    from effkit.transform import StageContext, Transform

log = logging.getLogger(__name__)

T = TypeVar("T")

_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


# --------------------------------------------------------------------------- the launch


def launch_problem(processes: int, env: Mapping[str, str] | None = None) -> str | None:
    """Why this run has fewer (or more) processes than its launch asked for, or None.

    ``processes`` is the number the process group has. A launcher that starts processes says
    how many in ``WORLD_SIZE`` (torchrun, ``accelerate launch --multi_gpu``) or an MPI variable;
    ``accelerate launch``'s plain launcher starts one process whatever ``--num_processes`` says
    and sets no count, but it sets ``MASTER_ADDR`` and ``MASTER_PORT`` only when more than one
    process (or machine) was asked for.
    """
    env = os.environ if env is None else env
    for name in _SIZE_VARIABLES:
        value = env.get(name, "")
        if value.isdigit():
            if int(value) != processes:
                return f"{name}={value} but {processes} process(es) run (docs/distributed.md)"
            return None
    launched_by_accelerate = "ACCELERATE_MIXED_PRECISION" in env
    if processes == 1 and launched_by_accelerate and "MASTER_ADDR" in env and "MASTER_PORT" in env:
        return "only 1 process started; without GPUs use accelerate launch --multi_gpu"
    return None


def warn_launch(processes: int) -> None:
    """Warn in one short line (docs/distributed.md says more) when the launch gave another
    number of processes than it asked for."""
    problem = launch_problem(processes)
    if problem is not None:
        log.warning("%s", problem)


def check_supported(accelerator: Accelerator) -> None:
    """Refuse the accelerate configurations whose weights are not whole on every process.

    Between steps effkit reads and changes the whole model on every process: transforms
    constrain masks, validation selects the best weights, checkpoints hold the weights and
    optimizer state for an exact resume. FSDP and DeepSpeed shard those.
    """
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise RunError(
            f"accelerate is configured for {kind}, which shards the weights or the optimizer "
            "state; effkit's transforms, validation and checkpoints need them whole on every "
            "process, so stages train data-parallel (DDP)",
            hint="choose multi-GPU (or multi-CPU) in `accelerate config`, or launch with "
            "torchrun; gradient_checkpointing: true in a stage's train section saves memory",
        )


# --------------------------------------------------------------------------- the first process


def on_main(accelerator: Accelerator, decide: Callable[[], T]) -> T:
    """``decide()`` run by the first process only; every process returns its result.

    An :class:`EffkitError` it raises is raised by every process, so that none waits for the
    others at a later barrier.
    """
    if accelerator.num_processes == 1:
        return decide()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    failure: BaseException | None = None
    if accelerator.is_main_process:
        try:
            box = [("value", decide())]
        except EffkitError as exc:
            failure, box = exc, [("error", exc)]
        except Exception as exc:
            failure = exc
            box = [("error", RunError(f"the first process failed: {type(exc).__name__}: {exc}"))]
    broadcast_object_list(box, from_process=0)
    if failure is not None:
        raise failure
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


@contextlib.contextmanager
def held_on_main(
    accelerator: Accelerator, enter: Callable[[], contextlib.AbstractContextManager[Any]]
) -> Iterator[None]:
    """Hold ``enter()`` (a lock) in the first process while the block runs in all of them;
    when the first process cannot take it, every process raises its error."""
    with contextlib.ExitStack() as stack:
        on_main(accelerator, lambda: stack.enter_context(enter()) and None)
        yield


# --------------------------------------------------------------------------- the step


class StageLoss(nn.Module):
    """A stage's model and loss as one module: ``forward(batch)`` is the step's loss.

    Returns ``(total, objective loss, objective scalars, transform terms)``. DDP wraps this
    module, so that whatever the objective and the transforms call inside the model (its
    forward pass, a head, a layer map) is part of the synchronised computation.
    """

    def __init__(
        self,
        model: EffkitModel,
        objective: Objective,
        transforms: list[Transform],
        ctx: StageContext,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.transforms = transforms
        self.ctx = ctx

    def forward(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        loss, outputs, logs = self.objective.loss(self.model, batch, self.ctx)
        terms: dict[str, torch.Tensor] = {}
        for transform in self.transforms:
            terms.update(transform.loss_terms(self.model, batch, outputs, self.ctx))
        total = loss + sum(terms.values()) if terms else loss
        return total, loss, logs, terms


def _reached(root: torch.Tensor) -> set[int]:
    """Ids of the leaf tensors that the autograd graph of ``root`` accumulates gradients into."""
    found: set[int] = set()
    seen: set[Any] = set()
    todo = [root.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            found.add(id(variable))
        todo.extend(child for child, _ in node.next_functions)
    return found


def unused_parameters(
    module: StageLoss, batch: dict[str, torch.Tensor], autocast: Any = contextlib.nullcontext
) -> list[str]:
    """Names of the trainable parameters that the loss of ``batch`` does not depend on.

    One forward pass (no backward); the random state is restored afterwards, so that the
    training that follows draws what it would have drawn without this look.
    """
    state = random.getstate()
    devices = [batch["input_ids"].device] if batch["input_ids"].is_cuda else []
    with torch.random.fork_rng(devices=devices), autocast():
        total = module(batch)[0]
    random.setstate(state)
    reached = _reached(total) if total.requires_grad else set()
    del total
    return [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in reached]


def prepare(
    accelerator: Accelerator,
    module: StageLoss,
    optimizer: torch.optim.Optimizer,
    find_unused: bool,
) -> tuple[nn.Module, Any]:
    """``accelerator.prepare`` of the stage's module and optimizer: DDP over several processes,
    looking for unused parameters every step only when ``find_unused``."""
    from accelerate.utils import DistributedDataParallelKwargs

    if accelerator.num_processes > 1:
        trained = {id(p) for p in module.parameters()}
        outside = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in trained]
        if outside:
            raise RunError(
                f"{len(outside)} trained parameter(s) are not part of the model, so several "
                "processes cannot synchronise them",
                hint="a transform's parameters must be attributes (modules) of the model",
            )
    accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=find_unused)
    wrapped, prepared = accelerator.prepare(module, optimizer)
    return wrapped, prepared


def mean_over_processes(
    running: dict[str, list[float]], accelerator: Accelerator
) -> dict[str, float]:
    """The mean of each logged scalar over its values in every process."""
    if accelerator.num_processes == 1:
        return {k: sum(v) / len(v) for k, v in running.items()}
    from accelerate.utils import gather_object

    names = sorted({name for names in gather_object([sorted(running)]) for name in names})
    sums = torch.tensor([[sum(running.get(n, [])), len(running.get(n, []))] for n in names],
                        dtype=torch.float64, device=accelerator.device)  # fmt: skip
    total = accelerator.reduce(sums, reduction="sum")
    return {n: float(s / c) for n, (s, c) in zip(names, total.tolist(), strict=True) if c}


# --------------------------------------------------------------------------- memory


def checkpointing_problem(model: EffkitModel) -> str | None:
    """Why the model's backbone cannot recompute its layers in the backward pass, or None."""
    hf = model.hf
    if not getattr(hf, "supports_gradient_checkpointing", False):
        return f"{type(hf).__name__} does not support gradient checkpointing"
    return None


def family_checkpointing_problem(family: str, task: str) -> str | None:
    """:func:`checkpointing_problem` from a transformers ``model_type`` alone (the preflight's
    facts), or None when it supports it or is not known to transformers' Auto classes."""
    from transformers import AutoConfig

    from effkit.models import hf_auto_class

    try:
        config_class = type(AutoConfig.for_model(family))
        model_class = hf_auto_class(task)._model_mapping[config_class]
    except (KeyError, ValueError):
        return None
    if not getattr(model_class, "supports_gradient_checkpointing", False):
        return f"{model_class.__name__} does not support gradient checkpointing"
    return None


def set_gradient_checkpointing(model: EffkitModel, on: bool, where: str = "") -> None:
    """Turn transformers' gradient (activation) checkpointing of the encoder layers on or off.

    Non-reentrant checkpointing, which DDP and unused parameters allow; the random state is
    replayed, so the recomputed layers draw the same dropout.
    """
    hf = model.hf
    if on:
        problem = checkpointing_problem(model)
        if problem is not None:
            raise RecipeError(problem, where=where or None,
                              hint="set gradient_checkpointing: false")  # fmt: skip
        kwargs = {"use_reentrant": False}
        if hasattr(hf, "activation_checkpointing_enable"):
            hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # transformers before activation_checkpointing_enable
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return
    if hasattr(hf, "activation_checkpointing_disable"):
        hf.activation_checkpointing_disable()
    else:
        hf.gradient_checkpointing_disable()
    if hasattr(hf, "disable_input_require_grads"):
        with contextlib.suppress(AttributeError):  # the hook is only there when it was enabled
            hf.disable_input_require_grads()


@contextlib.contextmanager
def recomputed(stage: str) -> Iterator[None]:
    """A backward pass with gradient checkpointing: a layer whose recomputation differs from
    its forward pass (a transform that draws values once per pass) is a clear error."""
    from torch.utils.checkpoint import CheckpointError

    try:
        yield
    except CheckpointError as exc:
        raise RecipeError(
            f"stage '{stage}': with gradient checkpointing the recomputed layers differ from "
            "the forward pass (a transform of the stage computes something once per pass that "
            "the recomputation does not see)",
            hint="set gradient_checkpointing: false for this stage",
        ) from exc
