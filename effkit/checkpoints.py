"""Checkpoints of a training stage: everything needed to resume it exactly where it stopped.

A checkpoint folder holds the model's weights, the optimizer and scheduler state, the random
state a step starts from, the progress record (steps, history, validation), the best weights
selection kept so far and, with weight averaging, the average. Folders are written atomically;
a stage keeps its last checkpoint (``last``) and the one before (``previous``), so that a
damaged last checkpoint leaves an intact one to resume from (:func:`find` says which).
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from effkit.averaging import WeightAverage
from effkit.checks import weights_problem
from effkit.errors import RunError
from effkit.storage import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

LAST, PREVIOUS = "last", "previous"


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
    with atomic_dir(path, keep=path.with_name(PREVIOUS)) as tmp:
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


def problem(path: Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` (a file missing, cut short or not what
    it should be), or None when every file reads. Reads headers and indexes only."""
    try:
        progress = read_json(path / "progress.json")
    except FileNotFoundError:
        return "progress.json is missing"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"progress.json is not valid JSON ({exc})"
    if not isinstance(progress, dict) or not isinstance(progress.get("step"), int):
        return "progress.json holds no step count"
    for name in ("model.safetensors", "best.safetensors", "average.safetensors"):
        if name == "model.safetensors" or (path / name).exists():
            found = weights_problem(path / name)
            if found:
                return found.replace(f"'{path / name}'", name)
    try:
        with zipfile.ZipFile(path / "state.pt") as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        return f"state.pt cannot be read ({exc})"
    return None


def find(folder: Path, key: str, *, tidy: bool = True) -> Path | None:
    """The checkpoint of ``folder`` to resume from, or None to start the stage afresh.

    The last checkpoint, or the one before it when a process ended while replacing the last.
    A checkpoint of another configuration (``key``) is discarded; a damaged one is a
    :class:`RunError` that says what is wrong and offers the choices: resume from the earlier
    checkpoint when it is intact, or restart the stage. ``tidy``: remove what is discarded
    (only one process of a multi-process run does).
    """
    if tidy:
        for stale in folder.glob(f".{LAST}.*.tmp"):  # a save that was stopped half-way
            shutil.rmtree(stale, ignore_errors=True)
    found = [folder / name for name in (LAST, PREVIOUS) if (folder / name).is_dir()]
    if not found:
        return None
    wrong = problem(found[0])
    if wrong is None:
        if read_json(found[0] / "progress.json").get("key") == key:
            return found[0]
        log.warning("discarding the checkpoints of another configuration in '%s'", folder)
        if tidy:
            shutil.rmtree(folder, ignore_errors=True)
        return None
    intact = next((p for p in found[1:] if problem(p) is None), None)
    restart = f"delete '{folder}' to restart the stage"
    if intact is not None:
        step = read_json(intact / "progress.json")["step"]
        hint = (f"delete '{found[0]}' to resume from the intact checkpoint of step {step}, "
                f"or {restart}")  # fmt: skip
    else:
        hint = restart
    raise RunError(f"checkpoint '{found[0]}' is damaged: {wrong}", hint=hint)


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
