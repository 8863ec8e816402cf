"""Checkpoints of a training stage: everything needed to resume it exactly where it stopped.

A checkpoint folder holds the model's weights, the optimizer and scheduler state, the random
state a step starts from, the progress record (steps, history, validation), the best weights
selection kept so far and, with weight averaging, the average. Folders are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effkit.averaging import WeightAverage
from effkit.errors import RunError
from effkit.storage import atomic_dir, read_json, write_json


def save(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None,
    step: int,
    key: str,
    rng: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
    average: WeightAverage | None = None,
) -> None:
    """Save a resumable checkpoint; ``rng`` is the random state at the start of ``step``."""
    from safetensors.torch import save_file, save_model

    extra: dict[str, Any] = {}
    with atomic_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        if best_state is not None:
            save_file({k: v.contiguous() for k, v in best_state.items()},
                      str(tmp / "best.safetensors"))  # fmt: skip
        if average is not None:
            save_file({k: v.contiguous() for k, v in average.state.items()},
                      str(tmp / "average.safetensors"))  # fmt: skip
            extra["average_updates"] = average.updates
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": (rng or rng_state())[0],
                "cuda_rng": (rng or rng_state())[1],
            },
            tmp / "state.pt",
        )
        write_json(tmp / "progress.json", {"step": step, "key": key, **extra, **progress})


def rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The random state now: the CPU generator's and every CUDA device's."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), list(cuda)


def load(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    average: WeightAverage | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore a checkpoint into the model, optimizer, scheduler (and ``average``); return its
    progress record and the best weights it kept."""
    from safetensors.torch import load_file, load_model

    try:
        load_model(model, str(path / "model.safetensors"), strict=True)
        state = torch.load(path / "state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        raise RunError(
            f"checkpoint '{path}' does not fit this stage: {exc}",
            hint="delete the checkpoint folder to restart the stage",
        ) from exc
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    progress = read_json(path / "progress.json")
    if average is not None:
        stored = path / "average.safetensors"
        if not stored.exists():
            raise RunError(
                f"checkpoint '{path}' has no weight average",
                hint="delete the checkpoint folder to restart the stage",
            )
        average.state = load_file(str(stored))
        average.updates = int(progress["average_updates"])
    best = (
        load_file(str(path / "best.safetensors")) if (path / "best.safetensors").exists() else None
    )
    return progress, best
