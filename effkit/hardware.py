"""What the hardware computes natively: half-precision units on the CPU or the GPU.

A benchmark records it beside its figures, and transforms that change the number format read it
to say when a model will run emulated (slower than float32) where it is.
"""

from __future__ import annotations

import functools

import torch

_CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_half(dtype: str, device: torch.device | str = "cpu") -> bool | None:
    """Whether ``device`` computes ``dtype`` ("bf16", "fp16") natively; None: cannot tell.

    A CUDA GPU runs fp16 always and bf16 from compute capability 8.0 (Ampere) on. On a CPU,
    oneDNN's own check is asked first, then the CPU's flags (Linux).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True if dtype == "fp16" else bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return None
    check = {
        "bf16": "_is_mkldnn_bf16_supported",
        "fp16": "_is_mkldnn_fp16_supported",
    }[dtype]
    probe = getattr(torch.ops.mkldnn, check, None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    flags = _cpu_flags()
    if not flags:
        return None
    return any(flag in flags for flag in _CPU_FLAGS[dtype])


def cpu_features() -> list[str]:
    """The CPU's flags that matter for inference speed (vector width, bf16/fp16/int8 units)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
              "amx_bf16", "amx_int8", "amx_fp16", "asimd", "sve", "bf16")  # fmt: skip
    flags = _cpu_flags()
    return [flag for flag in wanted if flag in flags]
