"""Where a figure is taken: the device, the hardware, library versions and the machine's load."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any

import torch

from effkit.bench.config import WHERE
from effkit.errors import EffkitError
from effkit.versions import effkit_version, package_version


def resolve_device(spec: str) -> torch.device:
    """The device ``spec`` names: 'auto' is cuda when available, else cpu."""
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise EffkitError(
            f"unknown device '{spec}'", where=WHERE, hint="use auto, cpu, cuda or cuda:N"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EffkitError(
                f"device '{spec}' asked for but CUDA is not available",
                where=WHERE,
                hint="use device: auto or cpu",
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise EffkitError(
                f"device '{spec}' asked for but only {count} CUDA device(s) exist", where=WHERE
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise EffkitError(f"device '{spec}' is not available", where=WHERE)
    return device


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Where a figure was taken: hardware, threads, library versions, load and time (UTC).

    ``load_before`` is the load average now; ``load_after`` is left None for the caller to fill
    once the measurement is over (``benchmark`` does).
    """
    cuda_device: str | None = None
    if device.type == "cuda" and torch.cuda.is_available():
        cuda_device = torch.cuda.get_device_name(device)
    return {
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda_device": cuda_device,
        "cuda_version": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "transformers": package_version("transformers") or "unknown",
        "python": platform.python_version(),
        "effkit": effkit_version(),
        "platform": platform.platform(),
        "load_before": load_average(),
        "load_after": None,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` so that a clock read sees it finished."""
    if device.type == "cpu":
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return
    backend = getattr(torch, device.type, None)
    sync = getattr(backend, "synchronize", None)
    if callable(sync):
        sync()
